//! TLS, mutual TLS and bearer tokens, from the outside.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests stop at the first failed step

use sluice_integration_tests::{
    fake,
    pki::{Authority, Pair},
    process::Service,
};
use sluice_proto::v1::{GetRolloutRequest, ListRolloutsRequest, rollouts_client::RolloutsClient};
use tonic::{
    Code, Request,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

struct Pki {
    _dir: tempfile::TempDir,
    ca: Authority,
    other_ca: Authority,
    server: Pair,
    client: Pair,
    stranger: Pair,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new(dir.path(), "sluice-ca");
    let other_ca = Authority::new(dir.path(), "other-ca");
    let server = ca.issue("server");
    let client = ca.issue("client");
    let stranger = other_ca.issue("stranger");
    Pki {
        _dir: dir,
        ca,
        other_ca,
        server,
        client,
        stranger,
    }
}

fn tls(ca: &Authority, identity: Option<&Pair>) -> ClientTlsConfig {
    let mut config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(&ca.cert).unwrap()))
        .domain_name("localhost");
    if let Some(pair) = identity {
        config = config.identity(Identity::from_pem(
            std::fs::read(&pair.cert).unwrap(),
            std::fs::read(&pair.key).unwrap(),
        ));
    }
    config
}

/// Health-checks over `tls` (or plaintext); `Err` carries why it failed.
async fn check(service: &Service, tls: Option<ClientTlsConfig>) -> Result<(), String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{}", service.grpc_addr)).unwrap();
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).unwrap();
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|_| ())
        .map_err(|s| format!("{s:?}"))
}

fn server_args(pki: &Pki, mutual: bool) -> Vec<String> {
    let mut args = vec![
        "--tls-cert".to_owned(),
        pki.server.cert.display().to_string(),
        "--tls-key".to_owned(),
        pki.server.key.display().to_string(),
    ];
    if mutual {
        args.extend([
            "--tls-client-ca".to_owned(),
            pki.ca.cert.display().to_string(),
        ]);
    }
    args
}

fn start(binary: &str, args: &[String]) -> Service {
    Service::start(binary, &args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[tokio::test]
async fn a_tls_server_serves_clients_that_trust_its_ca_and_no_one_else() {
    let pki = pki();
    let planner = start("sluice-planner", &server_args(&pki, false));
    check(&planner, Some(tls(&pki.ca, None)))
        .await
        .expect("a client trusting the CA is served");
    assert!(
        check(&planner, None).await.is_err(),
        "a plaintext client must not be served"
    );
    let wrong = check(&planner, Some(tls(&pki.other_ca, None))).await;
    assert!(
        wrong.is_err(),
        "a client trusting another CA must refuse the server's certificate"
    );
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate_from_the_client_ca() {
    let pki = pki();
    let planner = start("sluice-planner", &server_args(&pki, true));
    check(&planner, Some(tls(&pki.ca, Some(&pki.client))))
        .await
        .expect("a client with a good certificate");
    let none = check(&planner, Some(tls(&pki.ca, None))).await;
    assert!(none.is_err(), "no client certificate must be refused");
    let stranger = check(&planner, Some(tls(&pki.ca, Some(&pki.stranger)))).await;
    assert!(
        stranger.is_err(),
        "a certificate from another CA must be refused"
    );
    assert!(
        check(&planner, None).await.is_err(),
        "plaintext must be refused"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_executor_reaches_planner_and_gate_over_mutual_tls() {
    let pki = pki();
    let (prometheus, _task) = fake::prometheus_ready().await;
    let planner = start("sluice-planner", &server_args(&pki, true));
    let mut gate_args = server_args(&pki, true);
    gate_args.extend([
        "--prometheus-url".to_owned(),
        format!("http://{prometheus}"),
    ]);
    let gate = start("sluice-gate", &gate_args);

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let _sim = Service::start(
        "sluice-sim",
        &["--kubeconfig", kubeconfig.to_str().unwrap()],
    );
    let mut args = server_args(&pki, true);
    args.extend([
        "--kubeconfig".to_owned(),
        kubeconfig.display().to_string(),
        "--tls-ca".to_owned(),
        pki.ca.cert.display().to_string(),
        "--planner-addr".to_owned(),
        planner.grpc_addr.to_string(),
        "--gate-addr".to_owned(),
        gate.grpc_addr.to_string(),
    ]);
    let executor = start("sluice-executor", &args);
    executor.wait_for_log(|l| l["message"] == "every dependency is reachable; SERVING");
    check(&executor, Some(tls(&pki.ca, Some(&pki.client))))
        .await
        .unwrap();
}

const TOKENS: &str = "tokens:
  - name: payments-deployer
    token: payments-0123456789abcdef
    namespaces: [payments]
  - name: platform
    token: platform-0123456789abcdef
    namespaces: ['*']
";

async fn rollouts(executor: &Service) -> RolloutsClient<Channel> {
    RolloutsClient::new(
        Endpoint::from_shared(executor.uri())
            .unwrap()
            .connect()
            .await
            .unwrap(),
    )
}

fn get(namespace: &str, token: Option<&str>) -> Request<GetRolloutRequest> {
    let mut request = Request::new(GetRolloutRequest {
        namespace: namespace.into(),
        name: "web".into(),
    });
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

#[tokio::test]
async fn tokens_limit_callers_to_their_namespaces() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.yaml");
    std::fs::write(&file, TOKENS).unwrap();
    let executor = Service::start("sluice-executor", &["--token-file", file.to_str().unwrap()]);
    let mut client = rollouts(&executor).await;

    let missing = client.get_rollout(get("payments", None)).await.unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated, "{missing:?}");
    let unknown = client
        .get_rollout(get("payments", Some("nobody-0123456789abcdef")))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::Unauthenticated, "{unknown:?}");

    let elsewhere = client
        .get_rollout(get("checkout", Some("payments-0123456789abcdef")))
        .await
        .unwrap_err();
    assert_eq!(elsewhere.code(), Code::PermissionDenied, "{elsewhere:?}");
    assert!(
        elsewhere.message().contains("checkout"),
        "{}",
        elsewhere.message()
    );

    // Allowed callers get past authentication and authorization.
    for (namespace, token) in [
        ("payments", "payments-0123456789abcdef"),
        ("checkout", "platform-0123456789abcdef"),
    ] {
        let reply = client.get_rollout(get(namespace, Some(token))).await;
        if let Err(status) = reply {
            assert!(
                !matches!(
                    status.code(),
                    Code::Unauthenticated | Code::PermissionDenied
                ),
                "{namespace}: {status:?}"
            );
        }
    }

    let mut list = Request::new(ListRolloutsRequest {
        namespace: "checkout".into(),
        ..Default::default()
    });
    list.metadata_mut().insert(
        "authorization",
        "Bearer payments-0123456789abcdef".parse().unwrap(),
    );
    assert_eq!(
        client.list_rollouts(list).await.unwrap_err().code(),
        Code::PermissionDenied
    );
}

#[tokio::test]
async fn a_bad_rollout_name_is_an_invalid_argument_with_field_violations() {
    use tonic_types::StatusExt;
    let executor = Service::start("sluice-executor", &[]);
    let mut client = rollouts(&executor).await;
    let status = client
        .get_rollout(get("Not_A_Namespace", None))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let details = status.get_error_details();
    let violations = &details
        .bad_request()
        .expect("a google.rpc.BadRequest")
        .field_violations;
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].field, "namespace");
    assert!(
        violations[0].description.contains("\"Not_A_Namespace\""),
        "{}",
        violations[0].description
    );
}

#[tokio::test]
async fn the_admin_port_speaks_the_same_tls_as_the_grpc_port() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pki = pki();
    let planner = start("sluice-planner", &server_args(&pki, true));
    let url = format!("https://localhost:{}/metrics", planner.admin_addr.port());
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&pki.ca.cert).unwrap()).unwrap();
    let identity = |pair: &Pair| {
        let mut pem = std::fs::read(&pair.cert).unwrap();
        pem.extend(std::fs::read(&pair.key).unwrap());
        reqwest::Identity::from_pem(&pem).unwrap()
    };
    let client = |who: Option<&Pair>| {
        let mut builder = reqwest::Client::builder().tls_certs_only([ca.clone()]);
        if let Some(pair) = who {
            builder = builder.identity(identity(pair));
        }
        builder.build().unwrap()
    };
    let ok = client(Some(&pki.client))
        .get(&url)
        .send()
        .await
        .expect("a client with a good certificate");
    assert!(ok.status().is_success());
    assert!(
        ok.text().await.unwrap().ends_with("# EOF\n"),
        "an OpenMetrics body"
    );
    assert!(
        client(None).get(&url).send().await.is_err(),
        "no client certificate must be refused"
    );
    assert!(
        client(Some(&pki.stranger)).get(&url).send().await.is_err(),
        "a stranger's certificate must be refused"
    );
    let plain = format!("http://127.0.0.1:{}/metrics", planner.admin_addr.port());
    let plain_reply = reqwest::get(&plain).await;
    assert!(
        plain_reply.is_err() || !plain_reply.unwrap().status().is_success(),
        "plaintext must not be served"
    );
}
