//! Requests split over pods as each router would split them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests stop at the first failed step

use std::{collections::BTreeMap, time::Duration};

use serde_json::{Value, json};
use sluice_sim::{
    metrics::traffic::{LoadProfile, RequestClass, Target, split},
    scenario::{Scenario, Simulation, apply_manifests},
};

fn app(name: &str, replicas: u32) -> Vec<Value> {
    vec![
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": format!("{name}:1")}]}}}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"}, "spec": {"selector": {"app": name}, "ports": [{"port": 80}]}}),
    ]
}

async fn cluster(extra: Vec<Value>) -> Simulation {
    let sim = Simulation::start(Scenario::parse("t", "name: t").unwrap()).unwrap();
    let mut manifests = app("stable", 4);
    manifests.extend(app("canary", 1));
    manifests.extend(extra);
    apply_manifests(&sim.api, &manifests).unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    sim
}

/// Requests per second reaching each Service's pods.
fn by_service(
    sim: &Simulation,
    target: Target,
    classes: Vec<RequestClass>,
) -> BTreeMap<String, f64> {
    let load = LoadProfile {
        namespace: "default".into(),
        target,
        rps: 100.0,
        schedule: vec![],
        classes,
    };
    let mut out = BTreeMap::new();
    for ((_, pod), rps) in split(sim.api.store(), &[load], 0.0) {
        let service = if pod.starts_with("canary") {
            "canary"
        } else {
            "stable"
        };
        *out.entry(service.to_owned()).or_default() += rps;
    }
    out
}

fn target() -> Target {
    Target {
        service: None,
        ingress_host: None,
        http_route: None,
        virtual_service: None,
    }
}

fn class(share: f64, header: Option<(&str, &str)>, cookie: Option<(&str, &str)>) -> RequestClass {
    RequestClass {
        share,
        headers: header
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into_iter()
            .collect(),
        cookies: cookie
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into_iter()
            .collect(),
    }
}

fn ingress(name: &str, service: &str, annotations: Value) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": name, "namespace": "default", "annotations": annotations},
        "spec": {"ingressClassName": "nginx", "rules": [{"host": "shop.example", "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {"service": {"name": service, "port": {"number": 80}}}}]}}]}})
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

#[tokio::test(start_paused = true)]
async fn a_service_spreads_requests_evenly_over_ready_pods() {
    let sim = cluster(vec![]).await;
    let t = Target {
        service: Some("stable".into()),
        ..target()
    };
    let load = LoadProfile {
        namespace: "default".into(),
        target: t,
        rps: 100.0,
        schedule: vec![],
        classes: vec![],
    };
    let per_pod = split(sim.api.store(), &[load], 0.0);
    assert_eq!(per_pod.len(), 4);
    assert!(per_pod.values().all(|rps| close(*rps, 25.0)), "{per_pod:?}");
}

#[tokio::test(start_paused = true)]
async fn nginx_canary_annotations_decide_by_header_then_cookie_then_weight() {
    let canary = ingress(
        "shop-canary",
        "canary",
        json!({
            "nginx.ingress.kubernetes.io/canary": "true",
            "nginx.ingress.kubernetes.io/canary-by-header": "x-canary",
            "nginx.ingress.kubernetes.io/canary-by-header-value": "yes",
            "nginx.ingress.kubernetes.io/canary-by-cookie": "beta",
            "nginx.ingress.kubernetes.io/canary-weight": "20",
        }),
    );
    let sim = cluster(vec![ingress("shop", "stable", json!({})), canary]).await;
    let host = Target {
        ingress_host: Some("shop.example".into()),
        ..target()
    };
    // 10% carry the header value, 10% the cookie "never", the rest is weighted.
    let shares = by_service(
        &sim,
        host.clone(),
        vec![
            class(0.1, Some(("x-canary", "yes")), None),
            class(0.1, None, Some(("beta", "never"))),
        ],
    );
    assert!(close(shares["canary"], 10.0 + 80.0 * 0.2), "{shares:?}");
    assert!(close(shares["stable"], 10.0 + 80.0 * 0.8), "{shares:?}");
    // A header with another value falls through to the cookie and weight.
    let shares = by_service(
        &sim,
        host,
        vec![class(
            1.0,
            Some(("x-canary", "no")),
            Some(("beta", "always")),
        )],
    );
    assert!(close(shares["canary"], 100.0), "{shares:?}");
}

#[tokio::test(start_paused = true)]
async fn an_httproute_matches_headers_first_then_splits_by_weight() {
    let route = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "shop", "namespace": "default"},
    "spec": {"parentRefs": [{"name": "gw"}], "rules": [
        {"matches": [{"headers": [{"name": "x-canary", "value": "yes"}]}], "backendRefs": [{"name": "canary", "port": 80}]},
        {"backendRefs": [{"name": "stable", "port": 80, "weight": 90}, {"name": "canary", "port": 80, "weight": 10}]}
    ]}});
    let sim = cluster(vec![route]).await;
    let t = Target {
        http_route: Some("shop".into()),
        ..target()
    };
    let shares = by_service(&sim, t, vec![class(0.5, Some(("X-Canary", "yes")), None)]);
    assert!(close(shares["canary"], 50.0 + 5.0), "{shares:?}");
    assert!(close(shares["stable"], 45.0), "{shares:?}");
}

#[tokio::test(start_paused = true)]
async fn a_virtual_service_takes_the_first_matching_route() {
    let vs = json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "shop", "namespace": "default"},
    "spec": {"hosts": ["shop"], "http": [
        {"name": "canary-users", "match": [{"headers": {"x-user": {"prefix": "beta-"}}}], "route": [{"destination": {"host": "canary"}}]},
        {"name": "primary", "route": [{"destination": {"host": "stable.default.svc.cluster.local"}, "weight": 70}, {"destination": {"host": "canary"}, "weight": 30}]}
    ]}});
    let sim = cluster(vec![vs]).await;
    let t = Target {
        virtual_service: Some("shop".into()),
        ..target()
    };
    let shares = by_service(&sim, t, vec![class(0.2, Some(("x-user", "beta-42")), None)]);
    assert!(close(shares["canary"], 20.0 + 80.0 * 0.3), "{shares:?}");
    assert!(close(shares["stable"], 80.0 * 0.7), "{shares:?}");
}
