//! Scenarios on paused time: what the gate would see, and repeatability.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests stop at the first failed step

use std::time::Duration;

use serde_json::json;
use sluice_sim::{
    api::store::Part,
    metrics::promql::{self, Value},
    scenario::{Scenario, Simulation},
};

fn query(sim: &Simulation, q: &str) -> Vec<(String, f64)> {
    let at = sim.metrics.now_ms();
    let state = sim.metrics.state.lock().unwrap();
    match promql::query(&state.tsdb, q, at).unwrap() {
        Value::Vector(v) => v
            .into_iter()
            .map(|s| {
                (
                    s.labels.get("version").cloned().unwrap_or_default(),
                    s.value,
                )
            })
            .collect(),
        other => panic!("vector expected: {other:?}"),
    }
}

async fn ready_pods(sim: &Simulation) -> usize {
    let pods = sim.api.store().registry().get("", "pods").unwrap();
    let page = sim
        .api
        .store()
        .list(
            &pods,
            None,
            &Default::default(),
            &Default::default(),
            None,
            None,
        )
        .unwrap();
    page.items
        .iter()
        .filter(|b| {
            let p: serde_json::Value = serde_json::from_slice(b).unwrap();
            p["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|x| x["type"] == "Ready" && x["status"] == "True")
            })
        })
        .count()
}

#[tokio::test(start_paused = true)]
async fn a_bad_canary_shows_its_errors_and_the_stable_version_does_not() {
    let sim = Simulation::start(Scenario::load("bad-canary").unwrap()).unwrap();
    while ready_pods(&sim).await < 10 {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let deployments = sim
        .api
        .store()
        .registry()
        .get("apps", "deployments")
        .unwrap();
    sim.api
        .store()
        .modify(&deployments, "default", "web", Part::Main, |d| {
            d["spec"]["template"]["spec"]["containers"][0]["image"] =
                json!("registry.example/web:2.0");
        })
        .unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let mid = query(
        &sim,
        r#"sum by (version) (rate(http_requests_total{code="500"}[20s])) / sum by (version) (rate(http_requests_total[20s]))"#,
    );
    let ratio = |v: &str| {
        mid.iter()
            .find(|(version, _)| version == v)
            .map(|(_, r)| *r)
    };
    // Mid-rollout or done, version 2.0 serves and errs at its profile's 8%.
    let new = ratio("2.0").expect("version 2.0 serves traffic");
    assert!((new - 0.08).abs() < 0.005, "2.0 error ratio {new}");
    if let Some(old) = ratio("1.0") {
        assert!(old < 0.005, "1.0 error ratio {old}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_same_seed_gives_the_same_run() {
    async fn run() -> (Vec<String>, String) {
        let sim = Simulation::start(Scenario::load("healthy").unwrap()).unwrap();
        tokio::time::sleep(Duration::from_secs(20)).await;
        let pods = sim.api.store().registry().get("", "pods").unwrap();
        let page = sim
            .api
            .store()
            .list(
                &pods,
                None,
                &Default::default(),
                &Default::default(),
                None,
                None,
            )
            .unwrap();
        let placements = page
            .items
            .iter()
            .map(|b| {
                let p: serde_json::Value = serde_json::from_slice(b).unwrap();
                format!(
                    "{} {} {}",
                    p["metadata"]["name"],
                    p["spec"]["nodeName"],
                    p["status"]["startTime"].is_string()
                )
            })
            .collect();
        let exposition = sim.metrics.exposition();
        sim.stop();
        (placements, exposition)
    }
    let first = run().await;
    let second = run().await;
    assert_eq!(first.0, second.0, "same pods on the same nodes");
    assert_eq!(first.1, second.1, "same metrics");
    assert!(first.1.contains("http_requests_total{"), "traffic flowed");
}

#[tokio::test(start_paused = true)]
async fn a_pod_that_went_away_is_stale_at_once_not_five_minutes_later() {
    let sim = Simulation::start(Scenario::load("healthy").unwrap()).unwrap();
    while ready_pods(&sim).await < 10 {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tokio::time::sleep(Duration::from_secs(20)).await;
    let count = |sim: &Simulation| {
        query(sim, r#"count(http_requests_total{code="200"})"#)
            .first()
            .map_or(0.0, |(_, v)| *v)
    };
    assert_eq!(count(&sim), 10.0, "a series per ready pod");
    let deployments = sim
        .api
        .store()
        .registry()
        .get("apps", "deployments")
        .unwrap();
    sim.api
        .store()
        .modify(&deployments, "default", "web", Part::Main, |d| {
            d["spec"]["replicas"] = json!(4);
        })
        .unwrap();
    // Past the pods' grace period and a few ticks: well inside the
    // five-minute lookback, so only staleness explains the drop.
    tokio::time::sleep(Duration::from_secs(45)).await;
    assert_eq!(
        count(&sim),
        4.0,
        "the six pods removed answer no instant query"
    );
    // Their samples before the end still count in a range.
    let rates = query(&sim, r#"count(rate(http_requests_total{code="200"}[2m]))"#);
    assert_eq!(rates.first().map(|(_, v)| *v), Some(10.0), "{rates:?}");
}
