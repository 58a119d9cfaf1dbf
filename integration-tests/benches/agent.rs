//! How fast the simulator's agent brings pods to Ready through a real
//! control plane: one Deployment of N replicas (default 2,000; the first
//! argument overrides), created on kube-apiserver and
//! kube-controller-manager with the agent as the node fleet. Reports the
//! seconds from the Deployment's creation until every pod is Running and
//! until the Deployment counts every replica ready, and pods per second.
//!
//! Anchor: KWOK brings 10,000 pods to Running in about 60 s on a CI runner.
//!
//! `cargo bench -p sluice-integration-tests --bench agent -- 2000`

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark stops at the first failure

use std::time::{Duration, Instant};

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
use kube::{
    Api,
    api::{ListParams, PostParams},
};
use sluice_integration_tests::controlplane::ControlPlane;
use sluice_sim::{
    agent::{self, AgentOptions},
    cluster::profile::{Profile, Profiles},
};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() {
    let n: u32 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2_000);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let started = Instant::now();
    let plane = ControlPlane::start().await;
    let up = started.elapsed();
    let client = plane.client().await;
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let options = AgentOptions {
        nodes: n.div_ceil(100).max(1),
        capacity: 110,
        profiles: Profiles {
            by_image: Default::default(),
            default: Profile {
                start_min_seconds: 0.2,
                start_max_seconds: 0.5,
                ready_after_seconds: 0.2,
                ..Profile::default()
            },
        },
        seed: 1,
    };
    let (agent_stop, agent_client) = (stop.clone(), client.clone());
    tokio::spawn(async move { agent::run(agent_client, options, agent_stop).await });
    tokio::time::sleep(Duration::from_secs(2)).await;

    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let web: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "many"},
        "spec": {"replicas": n, "selector": {"matchLabels": {"app": "many"}},
            "template": {"metadata": {"labels": {"app": "many"}}, "spec": {"containers": [{"name": "app", "image": "registry.example/app:1.0"}]}}}
    }))
    .unwrap();
    let created = Instant::now();
    deployments
        .create(&PostParams::default(), &web)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let mut running_at = None;
    let deadline = Instant::now() + Duration::from_secs(900);
    let ready_at = loop {
        if running_at.is_none() {
            let list = pods
                .list(&ListParams::default().labels("app=many"))
                .await
                .unwrap();
            let running = list
                .items
                .iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .count();
            if running as u32 >= n {
                running_at = Some(created.elapsed());
            }
        }
        let d = deployments.get("many").await.unwrap();
        if d.status.and_then(|s| s.ready_replicas) == Some(n as i32) {
            break created.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "not every pod became ready in 900 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let running_at = running_at.unwrap_or(ready_at);
    println!(
        "control plane up in {:.1} s; {n} pods Running in {:.1} s ({:.0} pods/s), Deployment ready in {:.1} s ({:.0} pods/s)",
        up.as_secs_f64(),
        running_at.as_secs_f64(),
        f64::from(n) / running_at.as_secs_f64(),
        ready_at.as_secs_f64(),
        f64::from(n) / ready_at.as_secs_f64()
    );
}
