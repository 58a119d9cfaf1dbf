//! Memory for 100,000 stored pods (target: under 1 GiB), measured as the
//! growth of the process's resident set against the empty store, in the
//! same run. `cargo bench -p sluice-sim --bench memory [-- PODS]`

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use serde_json::json;
use sluice_sim::api::{ApiServer, Options};

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn main() {
    let pods: u64 = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let api = ApiServer::new(Options::default());
    let res = api.store().registry().get("", "pods").unwrap();
    let before = resident_bytes();
    let start = std::time::Instant::now();
    for i in 0..pods {
        let workload = i / 10;
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": format!("w{workload}-{i}"),
                "labels": {"app": format!("w{workload}"), "pod-template-hash": "5d4c8b7f9"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("w{workload}-5d4c8b7f9"), "uid": format!("uid-{workload}"), "controller": true, "blockOwnerDeletion": true}]
            },
            "spec": {"nodeName": format!("node-{}", i % 500), "containers": [{"name": "app", "image": "registry.example/app:1.0", "ports": [{"containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1", "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0, "image": "registry.example/app:1.0", "state": {"running": {"startedAt": "2026-11-26T00:00:00Z"}}}]}
        });
        api.store().create(&res, "default", pod).unwrap();
    }
    let elapsed = start.elapsed();
    let grown = resident_bytes().saturating_sub(before);
    println!(
        "{pods} pods stored: resident set grew by {:.1} MiB ({:.0} bytes per pod); created at {:.0} pods/s",
        grown as f64 / (1024.0 * 1024.0),
        grown as f64 / pods as f64,
        pods as f64 / elapsed.as_secs_f64()
    );
    println!(
        "{{\"pods\":{pods},\"rss_growth_bytes\":{grown},\"bytes_per_pod\":{:.0}}}",
        grown as f64 / pods as f64
    );
}
