//! The simulated cluster at scale, on one machine:
//! - `WORKLOADS` Deployments of `REPLICAS` pods brought from nothing to all
//!   Ready: wall time, pod state transitions per second, and the growth of
//!   resident memory (targets: 100,000 pods over 10,000 workloads in under
//!   1 GiB; at least 50,000 transitions per second);
//! - Prometheus exposition of the metrics of `EXPOSED` pods with traffic.
//!
//! `cargo bench -p sluice-sim --bench cluster [-- WORKLOADS REPLICAS EXPOSED]`

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use serde_json::json;
use sluice_sim::{
    metrics::traffic::{LoadProfile, Target},
    scenario::{Scenario, Simulation},
};

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    statm
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 4096
}

/// Waits until the Deployments report `pods` ready replicas in all.
///
/// It follows the Deployments' watch rather than listing them again and
/// again: a list of 10,000 Deployments every quarter second costed a fifth
/// of the machine's CPU, which the figure would have charged to the
/// simulator.
async fn all_ready(sim: &Simulation, pods: usize) {
    let store = sim.api.store();
    let deployments = store.registry().get("apps", "deployments").unwrap();
    #[derive(serde::Deserialize, Default)]
    #[serde(default)]
    struct Ready {
        status: ReadyStatus,
    }
    #[derive(serde::Deserialize, Default)]
    #[serde(default, rename_all = "camelCase")]
    struct ReadyStatus {
        ready_replicas: usize,
    }
    let ready_of = |bytes: &[u8]| {
        serde_json::from_slice::<Ready>(bytes)
            .unwrap()
            .status
            .ready_replicas
    };
    let start = store.watch(&deployments, None, None).unwrap();
    let mut ready: HashMap<(String, String), usize> = start
        .initial
        .iter()
        .map(|e| ((e.namespace.clone(), e.name.clone()), ready_of(&e.object)))
        .collect();
    let mut live = start.live;
    let mut total: usize = ready.values().sum();
    while total < pods {
        match live.recv().await {
            Ok(e) => {
                let now = ready_of(&e.object);
                let before = ready
                    .insert((e.namespace.clone(), e.name.clone()), now)
                    .unwrap_or(0);
                total = total + now - before;
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                // Fell behind: read the whole state once and follow on.
                let page = store
                    .list(
                        &deployments,
                        None,
                        &Default::default(),
                        &Default::default(),
                        None,
                        None,
                    )
                    .unwrap();
                ready = page
                    .items
                    .iter()
                    .map(|b| {
                        let v: serde_json::Value = serde_json::from_slice(b).unwrap();
                        let key = (
                            v["metadata"]["namespace"].as_str().unwrap().to_owned(),
                            v["metadata"]["name"].as_str().unwrap().to_owned(),
                        );
                        (key, ready_of(b))
                    })
                    .collect();
                total = ready.values().sum();
            }
            Err(e) => panic!("deployment watch closed: {e}"),
        }
    }
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let workloads = args.first().copied().unwrap_or(10_000);
    let replicas = args.get(1).copied().unwrap_or(10);
    let exposed = args.get(2).copied().unwrap_or(10_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let before = resident_bytes();
        let start = Instant::now();
        let mut scenario = Scenario::big_cluster(workloads, replicas);
        // Fast start-up, so the figure is the simulator's cost, not sleeping.
        scenario.speed = 100.0;
        let sim = Simulation::start(scenario).unwrap();
        let pods = workloads * replicas;
        // On a worker, as a client task would be: the thread that runs
        // `block_on` would have to be woken for every Deployment event.
        let watcher = sim.clone();
        tokio::spawn(async move { all_ready(&watcher, pods).await })
            .await
            .unwrap();
        let elapsed = start.elapsed();
        let grown = resident_bytes().saturating_sub(before);
        // Each pod goes through three transitions: bound, Running, Ready.
        let transitions = pods * 3;
        println!(
            "{pods} pods over {workloads} workloads Ready in {:.1} s: {:.0} pod transitions/s; resident memory grew {:.0} MiB ({:.0} bytes/pod)",
            elapsed.as_secs_f64(),
            transitions as f64 / elapsed.as_secs_f64(),
            grown as f64 / 1048576.0,
            grown as f64 / pods as f64
        );
        sim.stop();

        // Exposition: a service per workload, traffic to each.
        let apps = exposed / 10;
        let mut scenario = Scenario::big_cluster(apps, 10);
        scenario.speed = 100.0;
        for i in 0..apps {
            scenario.manifests.push(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("app-{i}"), "namespace": format!("team-{}", i % 20)}, "spec": {"selector": {"app": format!("app-{i}")}, "ports": [{"port": 80}]}}));
            scenario.load.push(LoadProfile { namespace: format!("team-{}", i % 20), target: Target { service: Some(format!("app-{i}")), ingress_host: None, http_route: None, virtual_service: None }, rps: 10.0, schedule: vec![], classes: vec![] });
        }
        let sim = Simulation::start(scenario).unwrap();
        all_ready(&sim, apps * 10).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        sim.metrics.tick(Duration::from_secs(1));
        let rounds = 5;
        let start = Instant::now();
        let mut bytes = 0;
        for _ in 0..rounds {
            bytes = sim.metrics.exposition().len();
        }
        let each = start.elapsed() / rounds;
        println!("exposition of {} pods: {:.1} ms, {:.1} MiB", apps * 10, each.as_secs_f64() * 1e3, bytes as f64 / 1048576.0);
        println!(
            "{{\"pods\":{pods},\"workloads\":{workloads},\"ready_seconds\":{:.2},\"transitions_per_second\":{:.0},\"rss_growth_bytes\":{grown},\"exposition_pods\":{},\"exposition_ms\":{:.2}}}",
            elapsed.as_secs_f64(),
            transitions as f64 / elapsed.as_secs_f64(),
            apps * 10,
            each.as_secs_f64() * 1e3
        );
        sim.stop();
    });
}

/// As the `sluice-sim` binary runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
