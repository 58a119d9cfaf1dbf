//! EndpointSlices for Services, from the pods their selectors match.

use serde_json::{Value, json};

use crate::{
    api::{selector::LabelSelector, store::Part},
    cluster::{
        engine::Ctx,
        workloads::{is_ready, owner_ref},
    },
};

/// Label naming a slice's Service.
pub const SERVICE_NAME: &str = "kubernetes.io/service-name";

/// Reconciles the EndpointSlice of one Service.
pub fn reconcile_endpoints(ctx: &mut Ctx, ns: &str, service: &str) {
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
    let mut endpoints = Vec::new();
    for bytes in page.items {
        let Ok(pod) = serde_json::from_slice::<Value>(&bytes) else {
            continue;
        };
        let Some(ip) = pod["status"]["podIP"].as_str() else {
            continue;
        };
        let ready = is_ready(&pod);
        let terminating = pod["metadata"]["deletionTimestamp"].is_string();
        endpoints.push(json!({
            "addresses": [ip],
            "conditions": {"ready": ready && !terminating, "serving": ready, "terminating": terminating},
            "nodeName": pod["spec"]["nodeName"],
            "targetRef": {"kind": "Pod", "namespace": ns, "name": pod["metadata"]["name"], "uid": pod["metadata"]["uid"]},
        }));
    }
    let ports: Vec<Value> = svc["spec"]["ports"]
        .as_array()
        .map(|ports| {
            ports
                .iter()
                .map(|p| json!({"name": p["name"].as_str().unwrap_or_default(), "port": p["targetPort"].as_i64().or(p["port"].as_i64()), "protocol": p["protocol"].as_str().unwrap_or("TCP")}))
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
