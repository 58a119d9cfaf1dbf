//! The public Rollouts API end to end, every part a real process: the
//! simulator (cluster, traffic, metrics), the planner, the gate reading the
//! simulator's metrics, and the executor.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests stop at the first failed step

use std::time::{Duration, Instant};

use sluice_integration_tests::process::{self, Service};
use sluice_proto::v1::{self as pb, rollouts_client::RolloutsClient};
use tonic::{Code, transport::Endpoint};

struct Platform {
    _sim: Service,
    _planner: Service,
    _gate: Service,
    executor: Service,
    _dir: tempfile::TempDir,
}

fn platform() -> Platform {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig").display().to_string();
    let (sim, metrics) = process::simulator("healthy", &kubeconfig);
    let planner = Service::start("sluice-planner", &[]);
    let gate = Service::start(
        "sluice-gate",
        &["--prometheus-url", &format!("http://{metrics}")],
    );
    let executor = Service::start(
        "sluice-executor",
        &[
            "--planner-addr",
            &planner.grpc_addr.to_string(),
            "--gate-addr",
            &gate.grpc_addr.to_string(),
            "--kubeconfig",
            &kubeconfig,
        ],
    );
    executor.wait_for_log(|l| l["message"] == "every dependency is reachable; SERVING");
    Platform {
        _sim: sim,
        _planner: planner,
        _gate: gate,
        executor,
        _dir: dir,
    }
}

fn threshold(min: f64) -> Option<pb::Condition> {
    Some(pb::Condition {
        kind: Some(pb::condition::Kind::Threshold(pb::Threshold {
            min: Some(min),
            max: None,
        })),
    })
}

fn seconds(s: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: s,
        nanos: 0,
    })
}

fn request(traffic_of_first_step: Option<u32>) -> pb::StartRolloutRequest {
    pb::StartRolloutRequest {
        namespace: "default".into(),
        name: "web".into(),
        spec: Some(pb::RolloutSpec {
            workload: Some(pb::WorkloadRef {
                kind: pb::WorkloadKind::Deployment as i32,
                name: "web".into(),
            }),
            images: vec![pb::ImageUpdate {
                container: "web".into(),
                image: "registry.example/web:2.0".into(),
            }],
            strategy: Some(pb::Strategy {
                canary: Some(pb::CanaryStrategy {
                    steps: vec![pb::CanaryStep {
                        replicas: "30%".into(),
                        traffic: traffic_of_first_step,
                        analyses: vec!["health".into()],
                        pause: Some(pb::Pause { duration: None }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            analyses: vec![pb::Analysis {
                name: "health".into(),
                metrics: vec![pb::Metric {
                    name: "success-rate".into(),
                    template: "request-success-rate".into(),
                    success_condition: threshold(0.99),
                    interval: seconds(1),
                    initial_delay: seconds(4),
                    count: 2,
                    inconclusive_limit: 1,
                    ..Default::default()
                }],
                args: Default::default(),
            }],
            ..Default::default()
        }),
    }
}

async fn wait_for(
    client: &mut RolloutsClient<tonic::transport::Channel>,
    phase: pb::RolloutPhase,
) -> pb::Rollout {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = client
            .get_rollout(pb::GetRolloutRequest {
                namespace: "default".into(),
                name: "web".into(),
            })
            .await
            .unwrap()
            .into_inner();
        let status = r.status.clone().unwrap_or_default();
        if status.phase == phase as i32 {
            return r;
        }
        assert!(Instant::now() < deadline, "never {phase:?}: {status:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_release_through_the_public_api_pauses_for_approval_and_succeeds() {
    let p = platform();
    let mut client = RolloutsClient::new(
        Endpoint::from_shared(p.executor.uri())
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );

    let missing = client
        .get_rollout(pb::GetRolloutRequest {
            namespace: "default".into(),
            name: "web".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    let bad = client.start_rollout(request(Some(120))).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    use tonic_types::StatusExt;
    let fields: Vec<String> = bad
        .get_error_details()
        .bad_request()
        .unwrap()
        .field_violations
        .iter()
        .map(|v| v.field.clone())
        .collect();
    assert_eq!(fields, ["spec.strategy.canary.steps[0].traffic"]);

    // Let the stable version serve for a while first.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let started = client
        .start_rollout(request(None))
        .await
        .unwrap()
        .into_inner();
    let again = client
        .start_rollout(request(None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        started.uid, again.uid,
        "starting twice with the same spec is one rollout"
    );
    let early = client
        .promote(pb::PromoteRequest {
            namespace: "default".into(),
            name: "web".into(),
            full: false,
        })
        .await;
    if let Err(status) = early {
        assert_eq!(status.code(), Code::FailedPrecondition);
    }

    let paused = wait_for(&mut client, pb::RolloutPhase::Paused).await;
    let status = paused.status.unwrap();
    assert_eq!(status.current_step, 0);
    assert_eq!(status.canary_replicas, 3, "30% of 10 pods");
    assert!(
        status.message.contains("waits for promotion"),
        "{}",
        status.message
    );

    client
        .promote(pb::PromoteRequest {
            namespace: "default".into(),
            name: "web".into(),
            full: false,
        })
        .await
        .unwrap();
    let done = wait_for(&mut client, pb::RolloutPhase::Succeeded).await;
    let status = done.status.unwrap();
    assert_eq!(status.traffic, 100);
    assert_eq!(
        status.steps[0].verdict,
        pb::Verdict::Pass as i32,
        "{:#?}",
        status.steps
    );

    let finished = client
        .abort(pb::AbortRequest {
            namespace: "default".into(),
            name: "web".into(),
            reason: "late".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(finished.code(), Code::FailedPrecondition);
    let listed = client
        .list_rollouts(pb::ListRolloutsRequest {
            namespace: "default".into(),
            phases: vec![pb::RolloutPhase::Succeeded as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.rollouts.len(), 1);

    // The executor's own metrics tell the same story.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let text = reqwest::get(format!("http://{}/metrics", p.executor.admin_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // (metric, a label it carries, its value when it matters)
    for (metric, label, value) in [
        ("sluice_executor_leader", "", Some("1")),
        (
            "sluice_executor_rollouts",
            r#"phase="Succeeded""#,
            Some("1"),
        ),
        (
            "sluice_executor_decisions_total",
            r#"decision="start""#,
            Some("1"),
        ),
        (
            "sluice_executor_decisions_total",
            r#"decision="pause""#,
            Some("1"),
        ),
        (
            "sluice_executor_decisions_total",
            r#"decision="succeed""#,
            Some("1"),
        ),
        ("sluice_executor_verdicts_total", r#"verdict="pass""#, None),
        (
            "sluice_executor_kube_requests_total",
            r#"verb="patch",resource="rollouts/status",code="200""#,
            None,
        ),
        ("sluice_executor_step_duration_seconds_count", "", None),
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{metric}{{"))
                && l.contains(label)
                && value.is_none_or(|v| l.ends_with(&format!(" {v}")))),
            "no {metric} with {label} {value:?} in\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_starts_follows_and_reports_a_rollout() {
    use std::process::Command;
    let p = platform();
    let dir = tempfile::tempdir().unwrap();
    let strategy = dir.path().join("strategy.yaml");
    std::fs::write(
        &strategy,
        "canary:\n  steps:\n    - {replicas: 50%, pause: {duration: 1s}}\n",
    )
    .unwrap();
    let executor = p.executor.grpc_addr.to_string();
    let sluice = |args: &[&str]| {
        let out = Command::new(sluice_integration_tests::process::binary("sluice"))
            .args(args)
            .args(["--executor", &executor])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (code, out, err) = sluice(&[
        "rollout",
        "start",
        "web",
        "--image",
        "web=registry.example/web:2.0",
        "-f",
        strategy.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("NAMESPACE") && out.contains("web"), "{out}");
    let (code, out, err) = sluice(&["rollout", "watch", "web"]);
    assert_eq!(code, Some(0), "watch ends with the release: {out}{err}");
    assert!(out.lines().last().unwrap().contains("Succeeded"), "{out}");
    let (code, out, _) = sluice(&["rollout", "get", "web", "-o", "json"]);
    assert_eq!(code, Some(0));
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (json["phase"].as_str(), json["traffic"].as_u64()),
        (Some("Succeeded"), Some(100))
    );
    let (code, _, err) = sluice(&["rollout", "promote", "web"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("FailedPrecondition"), "{err}");
    let (code, _, err) = sluice(&["rollout", "get", "nothing"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("NotFound"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_executor_replica_is_replaced_by_the_other_at_the_same_step() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig").display().to_string();
    let (_sim, _) = process::simulator("healthy", &kubeconfig);
    let planner = Service::start("sluice-planner", &[]);
    let gate = Service::start("sluice-gate", &["--prometheus-url", "http://127.0.0.1:9"]);
    let replica = |name: &str| {
        process::executor(
            &planner,
            &gate,
            &kubeconfig,
            &["--identity", name, "--lease-seconds", "3"],
        )
    };
    let mut replicas = [replica("a"), replica("b")];
    let leading = |s: &Service| s.log().iter().any(|l| l.contains("\"leading\""));
    let deadline = Instant::now() + Duration::from_secs(30);
    let leader = loop {
        if let Some(i) = replicas.iter().position(leading) {
            break i;
        }
        assert!(Instant::now() < deadline, "no replica leads");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let other = 1 - leader;
    let mut client = RolloutsClient::new(
        Endpoint::from_shared(replicas[other].uri())
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let mut request = request(None);
    let spec = request.spec.as_mut().unwrap();
    spec.analyses.clear();
    let pause = |s: i64| {
        Some(pb::Pause {
            duration: seconds(s),
        })
    };
    spec.strategy
        .as_mut()
        .unwrap()
        .canary
        .as_mut()
        .unwrap()
        .steps = vec![
        pb::CanaryStep {
            replicas: "20%".into(),
            pause: pause(2),
            ..Default::default()
        },
        pb::CanaryStep {
            replicas: "50%".into(),
            pause: pause(2),
            ..Default::default()
        },
    ];
    client.start_rollout(request).await.unwrap();
    // The release waits for the workload's own rollout to finish first;
    // the kill is timed from its start.
    let get = pb::GetRolloutRequest {
        namespace: "default".into(),
        name: "web".into(),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let phase = client
            .get_rollout(get.clone())
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap_or_default()
            .phase;
        if phase != pb::RolloutPhase::Pending as i32 {
            break;
        }
        assert!(Instant::now() < deadline, "the release never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    tokio::time::sleep(process::seeded_delay(
        7,
        0,
        Duration::from_secs(1),
        Duration::from_secs(4),
    ))
    .await;
    let before = client
        .get_rollout(pb::GetRolloutRequest {
            namespace: "default".into(),
            name: "web".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap_or_default();
    assert!(
        [
            pb::RolloutPhase::Progressing as i32,
            pb::RolloutPhase::Paused as i32
        ]
        .contains(&before.phase),
        "the kill lands mid-release: {before:#?}"
    );
    replicas[leader].kill();

    let done = wait_for(&mut client, pb::RolloutPhase::Succeeded).await;
    assert!(
        leading(&replicas[other]),
        "the survivor took the lease over"
    );
    let status = done.status.unwrap();
    let indexes: Vec<u32> = status.steps.iter().map(|s| s.index).collect();
    assert_eq!(
        indexes,
        [0, 1, 2],
        "every step once, in order: {:#?}",
        status.steps
    );
    for old in before.steps.iter().filter(|s| s.started.is_some()) {
        let now = &status.steps[old.index as usize];
        assert_eq!(
            now.started,
            old.started,
            "step {} was not started again",
            old.index + 1
        );
    }
    assert_eq!(status.traffic, 100);
}
