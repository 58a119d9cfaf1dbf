//! The simulated API server's hot paths.
//!
//! - `store/create-pod`: one small pod created in process (target: at least
//!   20,000 per second, i.e. at most 50 µs each).
//! - `http/create-pod`: the same through the HTTP layer, in process.
//! - `watch/fan-out-100`: one write until all of 100 watchers have it.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use axum::body::Body;
use criterion::{Criterion, criterion_group, criterion_main};
use futures::StreamExt;
use http::Request;
use serde_json::json;
use sluice_sim::api::{ApiServer, Options};
use tower::ServiceExt;

fn pod(n: u64) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("web-{n}"), "labels": {"app": "web", "pod-template-hash": "5d4c8"}},
        "spec": {"containers": [{"name": "web", "image": "registry.example/web:1.0", "ports": [{"containerPort": 8080}]}]}
    })
}

fn create(c: &mut Criterion) {
    let api = ApiServer::new(Options::default());
    let pods = api.store().registry().get("", "pods").unwrap();
    let n = AtomicU64::new(0);
    c.bench_function("store/create-pod", |b| {
        b.iter(|| {
            api.store()
                .create(&pods, "default", pod(n.fetch_add(1, Ordering::Relaxed)))
                .unwrap()
        });
    });

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let http_api = ApiServer::new(Options::default());
    let router = http_api.router();
    c.bench_function("http/create-pod", |b| {
        b.iter(|| {
            let body = serde_json::to_vec(&pod(n.fetch_add(1, Ordering::Relaxed))).unwrap();
            let request = Request::post("/api/v1/namespaces/default/pods")
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap();
            let response = runtime.block_on(router.clone().oneshot(request)).unwrap();
            assert_eq!(response.status(), 201);
        });
    });
}

fn fan_out(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let api = ApiServer::new(Options::default());
    let router = api.router();
    let maps = api.store().registry().get("", "configmaps").unwrap();
    let watchers = runtime.block_on(async {
        let mut streams = Vec::new();
        for _ in 0..100 {
            let request = Request::get("/api/v1/namespaces/default/configmaps?watch=true")
                .body(Body::empty())
                .unwrap();
            let response = router.clone().oneshot(request).await.unwrap();
            streams.push(response.into_body().into_data_stream());
        }
        Arc::new(tokio::sync::Mutex::new(streams))
    });
    let n = AtomicU64::new(0);
    c.bench_function("watch/fan-out-100", |b| {
        b.iter(|| {
            let i = n.fetch_add(1, Ordering::Relaxed);
            let object = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("m{i}")}});
            api.store().create(&maps, "default", object).unwrap();
            runtime.block_on(async {
                let mut streams = watchers.lock().await;
                for s in streams.iter_mut() {
                    s.next().await.unwrap().unwrap();
                }
            });
        });
    });
}

criterion_group!(benches, create, fan_out);
criterion_main!(benches);
