//! The simulator as a process: its metrics against a real Prometheus
//! scraping it, the gate reading either, and its control API.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests stop at the first failed step

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use serde_json::Value;
use sluice_integration_tests::{process::Service, prometheus::Prometheus};
use sluice_proto::v1::{self as pb, simulator_client::SimulatorClient};
use tonic::transport::Endpoint;

fn metrics_addr(sim: &Service) -> SocketAddr {
    let line = sim.wait_for_log(|l| l["message"] == "simulated cluster serving");
    line["metrics_addr"].as_str().unwrap().parse().unwrap()
}

async fn instant_query(base: &str, query: &str) -> Value {
    let mut url = url::Url::parse(&format!("{base}/api/v1/query")).unwrap();
    url.query_pairs_mut().append_pair("query", query);
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

fn single(answer: &Value) -> Option<f64> {
    let result = answer["data"]["result"].as_array()?;
    if result.len() != 1 {
        return None;
    }
    result[0]["value"][1].as_str()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_prometheus_scraping_the_simulator_gets_the_same_answers() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = Service::start("sluice-sim", &["--scenario", "healthy"]);
    let metrics = metrics_addr(&sim);
    let prometheus = Prometheus::start(&[metrics]).await;
    let sim_url = format!("http://{metrics}");

    let queries = [
        r#"sum(rate(http_requests_total{workload="web",code!~"5.."}[20s])) / sum(rate(http_requests_total{workload="web"}[20s]))"#,
        r#"histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{workload="web"}[20s])))"#,
        r#"sum(rate(http_requests_total{workload="web"}[20s]))"#,
    ];
    // Wait until Prometheus has scraped enough for every query.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut ready = true;
        for q in queries {
            ready &= single(&instant_query(&prometheus.url, q).await).is_some_and(f64::is_finite);
        }
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "Prometheus never had data");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Past the first window, both sides see steady traffic.
    tokio::time::sleep(Duration::from_secs(21)).await;
    for q in queries {
        let real = single(&instant_query(&prometheus.url, q).await).unwrap();
        let simulated = single(&instant_query(&sim_url, q).await).unwrap();
        let relative = (real - simulated).abs() / real.abs().max(1e-9);
        assert!(
            relative < 0.05,
            "{q}: Prometheus {real} vs simulator {simulated}"
        );
    }
    let rate = single(&instant_query(&sim_url, queries[2]).await).unwrap();
    assert!(
        (rate - 200.0).abs() < 10.0,
        "the scenario's 200 rps reach the pods: {rate}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gate_passes_a_healthy_workload_from_the_simulators_endpoint() {
    let sim = Service::start("sluice-sim", &["--scenario", "healthy"]);
    let metrics = metrics_addr(&sim);
    let gate = Service::start(
        "sluice-gate",
        &["--prometheus-url", &format!("http://{metrics}")],
    );
    gate.wait_for_log(|l| l["message"] == "every dependency is reachable; SERVING");
    let revision = {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let answer = instant_query(
                &format!("http://{metrics}"),
                "count by (revision) (http_requests_total)",
            )
            .await;
            if let Some(r) = answer["data"]["result"][0]["metric"]["revision"].as_str() {
                break r.to_owned();
            }
            assert!(Instant::now() < deadline, "no traffic in the simulator");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut client = pb::metrics_gate_client::MetricsGateClient::new(
        Endpoint::from_shared(gate.uri())
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let request = pb::EvaluateRequest {
        analysis: Some(pb::Analysis {
            name: "health".into(),
            metrics: vec![pb::Metric {
                name: "success-rate".into(),
                template: "request-success-rate".into(),
                success_condition: Some(pb::Condition {
                    kind: Some(pb::condition::Kind::Threshold(pb::Threshold {
                        min: Some(0.99),
                        max: None,
                    })),
                }),
                ..Default::default()
            }],
            args: Default::default(),
        }),
        context: Some(pb::AnalysisContext {
            namespace: "default".into(),
            workload: "web".into(),
            canary_revision: revision,
            window: Some(prost_types::Duration {
                seconds: 10,
                nanos: 0,
            }),
            ..Default::default()
        }),
    };
    let reply = client.evaluate(request).await.unwrap().into_inner();
    assert_eq!(reply.verdict, pb::Verdict::Pass as i32, "{reply:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_control_api_loads_scenarios_and_injects_faults() {
    let sim = Service::start("sluice-sim", &["--scenario", "healthy"]);
    let metrics = metrics_addr(&sim);
    let mut client = SimulatorClient::new(
        Endpoint::from_shared(sim.uri())
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let state = client
            .get_state(pb::GetStateRequest::default())
            .await
            .unwrap()
            .into_inner();
        let web = state.workloads.iter().find(|w| w.name == "web");
        if web.is_some_and(|w| {
            w.versions
                .iter()
                .any(|v| v.version == "1.0" && v.ready == 10)
        }) {
            assert_eq!(state.scenario, "healthy");
            assert_eq!(state.nodes.len(), 3);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "web never became ready: {state:#?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let outage = pb::Fault {
        id: "prom-down".into(),
        kind: Some(pb::fault::Kind::PrometheusUnavailable(
            pb::PrometheusUnavailable {},
        )),
        duration: None,
    };
    client
        .inject_fault(pb::InjectFaultRequest {
            fault: Some(outage),
        })
        .await
        .unwrap();
    let down = reqwest::get(format!("http://{metrics}/api/v1/query?query=up"))
        .await
        .unwrap();
    assert_eq!(down.status(), 503);
    let cleared = client
        .clear_faults(pb::ClearFaultsRequest { ids: vec![] })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cleared.cleared, ["prom-down"]);
    assert_eq!(
        reqwest::get(format!("http://{metrics}/api/v1/query?query=up"))
            .await
            .unwrap()
            .status(),
        200
    );

    let bad = pb::Fault {
        id: "x".into(),
        kind: Some(pb::fault::Kind::ApiErrors(pb::ApiErrors {
            rate: 2.0,
            code: 500,
            ..Default::default()
        })),
        duration: None,
    };
    let refused = client
        .inject_fault(pb::InjectFaultRequest { fault: Some(bad) })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("fault.apiErrors.rate"),
        "{}",
        refused.message()
    );

    let loaded = client
        .load_scenario(pb::LoadScenarioRequest {
            source: Some(pb::load_scenario_request::Source::Name("bad-canary".into())),
            seed: 42,
            speed: 0.0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((loaded.scenario.as_str(), loaded.seed), ("bad-canary", 42));
    let state = client
        .get_state(pb::GetStateRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state.scenario, "bad-canary");
    let unknown = client
        .load_scenario(pb::LoadScenarioRequest {
            source: Some(pb::load_scenario_request::Source::Name("no-such".into())),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::InvalidArgument);
}

#[test]
fn agent_mode_registers_its_nodes_on_another_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let _cluster = Service::start(
        "sluice-sim",
        &["--kubeconfig", kubeconfig.to_str().unwrap()],
    );
    let agent = Service::start(
        "sluice-sim",
        &[
            "--agent-kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--agent-nodes",
            "2",
        ],
    );
    let serving = agent.wait_for_log(|l| l["message"] == "agent serving the cluster's pods");
    agent.wait_for_log(|l| l["message"] == "every dependency is reachable; SERVING");
    let kubectl = |args: &[&str]| {
        let out = std::process::Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &kubeconfig)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let nodes = kubectl(&["get", "nodes", "-o", "name"]);
        // Each node's heartbeat: a Lease renewed in kube-node-lease.
        let leases = kubectl(&[
            "get",
            "leases",
            "-n",
            "kube-node-lease",
            "-o",
            "jsonpath={.items[*].spec.holderIdentity}",
        ]);
        if nodes.contains("node/sluice-node-0")
            && nodes.contains("node/sluice-node-1")
            && leases.contains("sluice-node-0")
            && leases.contains("sluice-node-1")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "agent nodes and leases never appeared: {nodes} {leases}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Its traffic metrics and query API answer on --metrics-addr.
    let metrics = serving["metrics_addr"].as_str().unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let url = format!("http://{metrics}/api/v1/query?query=http_requests_total");
    let body = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async { reqwest::get(url).await.unwrap().text().await.unwrap() });
    assert!(body.contains("\"status\":\"success\""), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_heavy_query_stops_at_its_timeout_and_holds_up_nothing_else() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = Service::start("sluice-sim", &["--scenario", "healthy"]);
    let line = sim.wait_for_log(|l| l["message"] == "simulated cluster serving");
    let metrics: SocketAddr = line["metrics_addr"].as_str().unwrap().parse().unwrap();
    let kube: SocketAddr = line["kube_addr"].as_str().unwrap().parse().unwrap();
    let query = |params: &[(&str, &str)]| {
        let mut url = url::Url::parse(&format!("http://{metrics}/api/v1/query")).unwrap();
        for (k, v) in params {
            url.query_pairs_mut().append_pair(k, v);
        }
        url
    };
    // A subquery of millions of steps: it would run for minutes.
    let heavy = "count(count_over_time(http_requests_total[10000d:1m]))";
    let answer = reqwest::get(query(&[("query", heavy), ("timeout", "200ms")]))
        .await
        .unwrap();
    assert_eq!(answer.status(), 503);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["errorType"], "timeout", "{body}");
    let answer = reqwest::get(query(&[("query", "up"), ("timeout", "bogus")]))
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["errorType"], "bad_data", "{body}");

    // While one runs, the Kubernetes API beside it answers, and so do
    // other queries and the scrape of /metrics.
    let running = tokio::spawn(reqwest::get(query(&[("query", heavy), ("timeout", "60s")])));
    for _ in 0..20 {
        let namespaces = reqwest::get(format!("http://{kube}/api/v1/namespaces"))
            .await
            .unwrap();
        assert_eq!(namespaces.status(), 200);
    }
    let light = reqwest::get(query(&[("query", "sum(http_requests_total)")]))
        .await
        .unwrap();
    assert_eq!(light.status(), 200);
    let scraped = reqwest::get(format!("http://{metrics}/metrics"))
        .await
        .unwrap();
    assert_eq!(scraped.status(), 200);
    assert!(
        !running.is_finished(),
        "the heavy query was still running while the others answered"
    );
    running.abort();
}
