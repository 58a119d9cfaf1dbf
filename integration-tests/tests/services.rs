//! Every service binary as a user runs it: ports, health, reflection,
//! metrics, shutdown and flag errors.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests stop at the first failed step

use std::time::Duration;

use sluice_integration_tests::{
    fake,
    process::{Service, run_to_exit},
    python,
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

const SERVICES: [(&str, &str); 4] = [
    ("sluice-planner", "sluice.v1.Planner"),
    ("sluice-gate", "sluice.v1.MetricsGate"),
    ("sluice-sim", "sluice.v1.Simulator"),
    ("sluice-executor", "sluice.v1.Rollouts"),
];

async fn channel(service: &Service) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(service.uri())
        .unwrap()
        .connect()
        .await
        .expect("connect")
}

async fn health(service: &Service, name: &str) -> ServingStatus {
    let mut client = HealthClient::new(channel(service).await);
    let request = HealthCheckRequest {
        service: name.into(),
    };
    client
        .check(request)
        .await
        .expect("health check")
        .into_inner()
        .status()
}

#[tokio::test]
async fn planner_and_simulator_serve_as_soon_as_they_start() {
    for (binary, service_name) in [SERVICES[0], SERVICES[2]] {
        let service = Service::start(binary, &[]);
        service.wait_for_log(|l| l["message"] == "every dependency is reachable; SERVING");
        assert_eq!(
            health(&service, service_name).await,
            ServingStatus::Serving,
            "{binary}"
        );
        assert_eq!(
            health(&service, "").await,
            ServingStatus::Serving,
            "{binary}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gate_is_not_serving_until_prometheus_answers() {
    let (prometheus, _task) = fake::prometheus_ready().await;
    // A port nothing listens on: bind one, then free it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gate = Service::start(
        "sluice-gate",
        &["--prometheus-url", &format!("http://{closed}")],
    );
    let line = gate.wait_for_log(|l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.contains("NOT_SERVING"))
    });
    assert!(
        line["missing"].as_str().unwrap().contains("prometheus at"),
        "{line}"
    );
    assert_eq!(
        health(&gate, "sluice.v1.MetricsGate").await,
        ServingStatus::NotServing
    );

    let gate = Service::start(
        "sluice-gate",
        &["--prometheus-url", &format!("http://{prometheus}")],
    );
    gate.wait_for_log(|l| l["message"] == "every dependency is reachable; SERVING");
    assert_eq!(
        health(&gate, "sluice.v1.MetricsGate").await,
        ServingStatus::Serving
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_executor_serves_once_planner_and_gate_serve_and_gives_its_lease_up_when_stopped() {
    let (prometheus, _task) = fake::prometheus_ready().await;
    let planner = Service::start("sluice-planner", &[]);
    let gate = Service::start(
        "sluice-gate",
        &["--prometheus-url", &format!("http://{prometheus}")],
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();

    let alone = Service::start(
        "sluice-executor",
        &["--planner-addr", &closed, "--gate-addr", &closed],
    );
    let line = alone.wait_for_log(|l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.contains("NOT_SERVING"))
    });
    let missing = line["missing"].as_str().unwrap();
    assert!(
        missing.contains("planner at") && missing.contains("gate at"),
        "{line}"
    );
    assert_eq!(
        health(&alone, "sluice.v1.Rollouts").await,
        ServingStatus::NotServing
    );

    assert!(missing.contains("the Kubernetes API"), "{line}");

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let _sim = Service::start(
        "sluice-sim",
        &["--kubeconfig", kubeconfig.to_str().unwrap()],
    );
    let (planner_addr, gate_addr) = (planner.grpc_addr.to_string(), gate.grpc_addr.to_string());
    let mut executor = Service::start(
        "sluice-executor",
        &[
            "--planner-addr",
            &planner_addr,
            "--gate-addr",
            &gate_addr,
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ],
    );
    executor.wait_for_log(|l| l["message"] == "every dependency is reachable; SERVING");
    assert_eq!(
        health(&executor, "sluice.v1.Rollouts").await,
        ServingStatus::Serving
    );

    // It leads, and gives its Lease up when terminated, so a successor
    // (or itself, restarted) leads at once rather than after the Lease
    // expires.
    executor.wait_for_log(|l| l["message"] == "leading");
    executor.terminate();
    let status = executor.wait_exit(Duration::from_secs(5));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{}",
        executor.log().join("\n")
    );
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&kubeconfig).unwrap(),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(kube::Client::try_from(config).unwrap(), "default");
    let lease = leases.get("sluice-executor").await.unwrap();
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity),
        None,
        "the Lease is still held after a clean shutdown"
    );
    let members: Vec<String> = leases
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|l| l.metadata.name)
        .filter(|n| n.starts_with("sluice-executor-member-"))
        .collect();
    assert!(
        members.is_empty(),
        "its membership outlived it: {members:?}"
    );
}

#[test]
fn every_service_lists_its_services_through_reflection_to_a_python_client() {
    for (binary, service_name) in SERVICES {
        let service = Service::start(binary, &[]);
        let listing = python::run("reflect.py", &[&service.grpc_addr.to_string()]);
        for expected in [
            service_name,
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        ] {
            assert!(
                listing.lines().any(|l| l == expected),
                "{binary} lacks {expected}:\n{listing}"
            );
        }
        assert!(
            listing.contains(&format!("health {service_name} ")),
            "{listing}"
        );
    }
}

#[tokio::test]
async fn each_service_serves_its_rpc_metrics_on_the_admin_port() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    for (binary, service_name) in SERVICES {
        let service = Service::start(binary, &[]);
        let _ = health(&service, service_name).await;
        let body = reqwest::get(format!("http://{}/metrics", service.admin_addr))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body");
        let line = body
            .lines()
            .find(|l| {
                l.starts_with("sluice_grpc_requests_total{")
                    && l.contains("/grpc.health.v1.Health/Check")
            })
            .unwrap_or_else(|| panic!("{binary}: no health-check counter in\n{body}"));
        assert!(line.contains("code=\"Ok\""), "{line}");
        assert!(
            body.contains("sluice_grpc_request_duration_seconds_bucket"),
            "{binary}"
        );
        let healthz = reqwest::get(format!("http://{}/healthz", service.admin_addr))
            .await
            .unwrap();
        assert!(healthz.status().is_success());
    }
}

#[tokio::test]
async fn sigterm_stops_every_service_within_five_seconds_even_with_an_open_stream() {
    for (binary, service_name) in SERVICES {
        let mut service = Service::start(binary, &[]);
        let mut client = HealthClient::new(channel(&service).await);
        let mut stream = client
            .watch(HealthCheckRequest {
                service: service_name.into(),
            })
            .await
            .expect("watch")
            .into_inner();
        let first = stream.message().await.expect("first status");
        assert!(first.is_some(), "{binary}: the watch stream sent nothing");

        service.terminate();
        let status = service.wait_exit(Duration::from_secs(5));
        let status = status.unwrap_or_else(|| panic!("{binary} still running 5 s after SIGTERM"));
        assert_eq!(
            status.code(),
            Some(0),
            "{binary}: {:?}\n{}",
            status,
            service.log().join("\n")
        );
    }
}

#[test]
fn a_wrong_flag_or_value_names_it_and_exits_2() {
    for (binary, _) in SERVICES {
        let (code, stderr) = run_to_exit(binary, &["--no-such-flag"]);
        assert_eq!(code, Some(2), "{binary}: {stderr}");
        assert!(stderr.contains("--no-such-flag"), "{stderr}");

        let (code, stderr) = run_to_exit(binary, &["--grpc-addr", "localhost:http"]);
        assert_eq!(code, Some(2), "{binary}: {stderr}");
        assert!(
            stderr.contains("localhost:http") && stderr.contains("--grpc-addr"),
            "{stderr}"
        );

        let (code, stderr) = run_to_exit(binary, &["--shutdown-grace", "soon"]);
        assert_eq!(code, Some(2), "{binary}: {stderr}");
        assert!(stderr.contains("`soon` is not a duration"), "{stderr}");

        let (code, stderr) = run_to_exit(
            binary,
            &[
                "--tls-cert",
                "/nonexistent.crt",
                "--tls-key",
                "/nonexistent.key",
            ],
        );
        assert_eq!(code, Some(2), "{binary}: {stderr}");
        assert!(
            stderr.contains("--tls-cert: no such file: /nonexistent.crt"),
            "{stderr}"
        );

        let (code, stderr) = run_to_exit(binary, &["--log", "info,[[["]);
        assert_eq!(code, Some(2), "{binary}: {stderr}");
        assert!(stderr.contains("--log"), "{stderr}");
    }
    // The election's flags: a bad one would leave every replica serving
    // and none driving.
    for (args, named) in [
        (&["--shards", "-1"][..], "--shards"),
        (&["--shards", "0"][..], "--shards"),
        (&["--lease-seconds", "-5"][..], "--lease-seconds"),
        (&["--lease-name", "Bad_Name"][..], "--lease-name"),
        (&["--lease-namespace", "Bad_NS"][..], "--lease-namespace"),
        (&["--identity", " "][..], "--identity"),
    ] {
        let (code, stderr) = run_to_exit("sluice-executor", args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(named), "{args:?}: {stderr}");
    }
    let (code, stderr) = run_to_exit("sluice-gate", &["--prometheus-url", "ftp://example"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--prometheus-url: must be an http or https URL, got ftp://example"),
        "{stderr}"
    );
    let (code, stderr) = run_to_exit("sluice-executor", &["--token-file", "/nonexistent.yaml"]);
    assert_eq!(
        code,
        Some(2),
        "a token file that cannot be read is a bad value: {stderr}"
    );
    assert!(stderr.contains("--token-file"), "{stderr}");
    // A cluster that is named but cannot be read is a bad value too, not
    // an executor that runs on unready (in a pod: never restarted).
    let (code, stderr) = run_to_exit(
        "sluice-executor",
        &["--kubeconfig", "/nonexistent.kubeconfig"],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--kubeconfig"), "{stderr}");
    assert_eq!(
        stderr.matches("/nonexistent.kubeconfig").count(),
        1,
        "the path once: {stderr}"
    );
    // So is a KUBECONFIG naming a file that is not there (only a missing
    // ~/.kube/config means "look elsewhere").
    let out =
        std::process::Command::new(sluice_integration_tests::process::binary("sluice-executor"))
            .env("KUBECONFIG", "/nonexistent/config")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("KUBECONFIG") && stderr.contains("/nonexistent/config"),
        "{stderr}"
    );
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = run_to_exit(
        "sluice-executor",
        &[
            "--kubernetes-service-host",
            "10.96.0.1",
            "--service-account-dir",
            dir.path().to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(2), "a pod's folder without its files: {stderr}");
    assert!(
        stderr.contains("--service-account-dir") && stderr.contains("ca.crt"),
        "{stderr}"
    );
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, "not a certificate").unwrap();
    let (code, stderr) = run_to_exit("sluice-executor", &["--tls-ca", ca.to_str().unwrap()]);
    assert_eq!(code, Some(2), "a CA that is not PEM: {stderr}");
    assert!(stderr.contains("--tls-ca"), "{stderr}");
    let (code, stderr) = run_to_exit("sluice-planner", &["--tls-ca", ca.to_str().unwrap()]);
    assert_eq!(code, Some(2), "every service checks its CA file: {stderr}");
    assert!(stderr.contains("--tls-ca"), "{stderr}");
    let (code, stderr) = run_to_exit("sluice-executor", &["--token-secret", "sluice-system/"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("must be namespace/name"), "{stderr}");
    for namespaces in ["Shop_Bad", "shop,Shop_Bad", "shop,,cafe"] {
        let (code, stderr) = run_to_exit("sluice-executor", &["--namespace", namespaces]);
        assert_eq!(code, Some(2), "{namespaces}: {stderr}");
        let bad = namespaces
            .split(',')
            .find(|ns| ns.is_empty() || ns.contains('_'));
        assert!(
            stderr.contains("--namespace") && stderr.contains(&format!("{:?}", bad.unwrap())),
            "{namespaces}: {stderr}"
        );
    }
}
