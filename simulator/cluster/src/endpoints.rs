//! EndpointSlices for Services, from the pods their selectors match.

use serde_json::{Value, json};

use crate::{
    engine::Ctx,
    workloads::{is_ready, owner_ref},
};
use sluice_sim_api::{selector::LabelSelector, store::Part};

/// Label naming a slice's Service.
pub(crate) const SERVICE_NAME: &str = "kubernetes.io/service-name";

/// Reconciles the EndpointSlice of one Service.
pub(crate) fn reconcile_endpoints(ctx: &mut Ctx, ns: &str, service: &str) {
    let services = ctx.kinds.services.clone();
    let Some(svc) = ctx.get(&services, ns, service) else {
        return;
    };
    let Some(selector) = svc["spec"]["selector"]
        .as_object()
        .filter(|s| !s.is_empty())
    else {
        return;
    };
    let selector = LabelSelector::from_object(&json!({"matchLabels": selector}));
    let pods = ctx.kinds.pods.clone();
    let Ok(page) = ctx
        .store
        .list(&pods, Some(ns), &selector, &Default::default(), None, None)
    else {
        return;
    };
    let pods: Vec<Value> = page
        .items
        .iter()
        .filter_map(|bytes| serde_json::from_slice::<Value>(bytes).ok())
        .collect();
    let mut endpoints = Vec::new();
    for pod in &pods {
        let Some(ip) = pod["status"]["podIP"].as_str() else {
            continue;
        };
        let ready = is_ready(pod);
        let terminating = pod["metadata"]["deletionTimestamp"].is_string();
        endpoints.push(json!({
            "addresses": [ip],
            "conditions": {"ready": ready && !terminating, "serving": ready, "terminating": terminating},
            "nodeName": pod["spec"]["nodeName"],
            "targetRef": {"kind": "Pod", "namespace": ns, "name": pod["metadata"]["name"], "uid": pod["metadata"]["uid"]},
        }));
    }
    // The port the pods listen on: a number, or a name looked up in the
    // pods' container ports (a name no pod declares gives no port).
    let target = |p: &Value| match &p["targetPort"] {
        Value::String(name) => pods.iter().find_map(|pod| {
            pod["spec"]["containers"]
                .as_array()?
                .iter()
                .flat_map(|c| c["ports"].as_array().into_iter().flatten())
                .find(|cp| cp["name"] == name.as_str())
                .and_then(|cp| cp["containerPort"].as_i64())
        }),
        other => other.as_i64().or(p["port"].as_i64()),
    };
    let ports: Vec<Value> = svc["spec"]["ports"]
        .as_array()
        .map(|ports| {
            ports
                .iter()
                .filter_map(|p| {
                    let port = target(p)?;
                    Some(json!({"name": p["name"].as_str().unwrap_or_default(), "port": port, "protocol": p["protocol"].as_str().unwrap_or("TCP")}))
                })
                .collect()
        })
        .unwrap_or_default();
    let slices = ctx.kinds.slices.clone();
    let name = format!("{service}-sim");
    if ctx.get(&slices, ns, &name).is_some() {
        ctx.modify(&slices, ns, &name, Part::Main, |s| {
            s["endpoints"] = json!(endpoints);
            s["ports"] = json!(ports);
        });
    } else {
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": ns, "labels": {SERVICE_NAME: service, "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}, "ownerReferences": [owner_ref("v1", "Service", &svc)]},
            "addressType": "IPv4", "endpoints": endpoints, "ports": ports,
        });
        let _ = ctx.store.create(&slices, ns, slice);
    }
}
