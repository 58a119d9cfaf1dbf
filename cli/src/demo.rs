//! `sluice demo`: the whole system in one process, releasing a scenario's
//! new version from start to finish.
//!
//! The simulator (its Kubernetes API, controllers, traffic and metrics),
//! the planner, the gate and the executor each serve on a loopback port, as
//! they would as separate processes, started by `sluice_executor::stack`
//! with the executor's production wiring (health, the controller under the
//! Lease, drain on exit); the demo then acts as a deploy
//! platform: it asks the executor's public Rollouts API for the release and
//! follows it with WatchRollout until it ends.
//!
//! With `--trigger apply` it acts as a team shipping with kubectl instead:
//! the executor's admission webhook is served (with a certificate made for
//! the run) and registered on the simulated API server from
//! `deploy/base/webhook.yaml`, a Rollout with the same strategy and no version
//! is bound to the workload, and the release starts from
//! `kubectl set image` (the same patch, made in process).

use std::{
    io::IsTerminal as _,
    net::SocketAddr,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use serde_json::json;
use sluice_executor::Cluster;
use sluice_proto::v1::{self as pb, rollouts_client::RolloutsClient};
use sluice_sim::scenario::{Scenario, Simulation};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

use crate::live::phase_name;

/// Arguments of `sluice demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// A built-in scenario (healthy, bad-canary, slow-canary, crashloop,
    /// prometheus-outage) or a scenario file.
    #[arg(long, default_value = "healthy")]
    scenario: String,
    /// Simulated seconds per real second.
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Use this Prometheus (scraping the simulator's metrics) instead of the
    /// simulator's own query endpoint.
    #[arg(long)]
    prometheus: Option<String>,
    /// Output: plain lines, or a JSON summary as the last line.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// What starts the release: a platform's StartRollout call (`api`), or
    /// a change of the workload itself held by the admission webhook
    /// (`apply`: `kubectl set image` on a workload a Rollout is bound to).
    #[arg(long, value_enum, default_value_t = Trigger::Api)]
    trigger: Trigger,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Trigger {
    Api,
    Apply,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

async fn listen() -> anyhow::Result<(tokio::net::TcpListener, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

async fn channel(addr: SocketAddr) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?)
}

/// The release the demo asks for: two analysed steps, then everything.
fn release(scenario: &Scenario) -> anyhow::Result<pb::StartRolloutRequest> {
    let Some(release) = &scenario.release else {
        bail!("scenario {} names no release", scenario.name)
    };
    let metric = |name: &str,
                  template: &str,
                  success: pb::Condition,
                  failure: Option<pb::Condition>| pb::Metric {
        name: name.into(),
        template: template.into(),
        success_condition: Some(success),
        failure_condition: failure,
        interval: Some(prost_types::Duration {
            seconds: 2,
            nanos: 0,
        }),
        initial_delay: Some(prost_types::Duration {
            seconds: 6,
            nanos: 0,
        }),
        count: 3,
        inconclusive_limit: 1,
        ..Default::default()
    };
    let threshold = |min: Option<f64>, max: Option<f64>| pb::Condition {
        kind: Some(pb::condition::Kind::Threshold(pb::Threshold { min, max })),
    };
    let step = |replicas: &str, pause: Option<i64>| pb::CanaryStep {
        replicas: replicas.into(),
        analyses: vec!["health".into()],
        pause: pause.map(|s| pb::Pause {
            duration: Some(prost_types::Duration {
                seconds: s,
                nanos: 0,
            }),
        }),
        ..Default::default()
    };
    let container = scenario
        .manifests
        .iter()
        .find(|m| m["metadata"]["name"] == release.name.as_str())
        .and_then(|m| m["spec"]["template"]["spec"]["containers"][0]["name"].as_str())
        .unwrap_or("app")
        .to_owned();
    Ok(pb::StartRolloutRequest {
        namespace: release.namespace.clone(),
        name: release.name.clone(),
        spec: Some(pb::RolloutSpec {
            workload: Some(pb::WorkloadRef {
                kind: pb::WorkloadKind::Deployment as i32,
                name: release.name.clone(),
            }),
            images: vec![pb::ImageUpdate {
                container,
                image: release.image.clone(),
            }],
            strategy: Some(pb::Strategy {
                canary: Some(pb::CanaryStrategy {
                    steps: vec![step("20%", Some(2)), step("50%", None)],
                    progress_deadline: Some(prost_types::Duration {
                        seconds: 60,
                        nanos: 0,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            analyses: vec![pb::Analysis {
                name: "health".into(),
                metrics: vec![
                    metric(
                        "success-rate",
                        "request-success-rate",
                        threshold(Some(0.99), None),
                        Some(threshold(None, Some(0.95))),
                    ),
                    metric(
                        "latency-p99",
                        "request-latency-p99",
                        threshold(None, Some(0.25)),
                        Some(threshold(Some(0.3), None)),
                    ),
                ],
                args: Default::default(),
            }],
            on_analysis_error: pb::ErrorPolicy::Pause as i32,
            ..Default::default()
        }),
    })
}

fn verdict_name(v: i32) -> String {
    pb::Verdict::try_from(v).map_or("-".into(), |v| match v {
        pb::Verdict::Unspecified => "-".into(),
        other => other
            .as_str_name()
            .trim_start_matches("VERDICT_")
            .to_lowercase(),
    })
}

pub(crate) fn run(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(demo(args))
}

async fn demo(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut scenario =
        Scenario::load(&args.scenario).map_err(|e| anyhow::anyhow!("--scenario: {e}"))?;
    if !(args.speed > 0.0 && args.speed.is_finite()) {
        bail!("--speed: must be above 0, got {}", args.speed);
    }
    scenario.speed = args.speed;
    let request = release(&scenario)?;
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let started = Instant::now();

    // The simulated cluster, with its API and metrics on loopback.
    let sim = Simulation::start(scenario.clone())
        .map_err(|e| anyhow::anyhow!("starting the scenario: {}", e.message))?;
    let (kube, kube_addr) = listen().await?;
    tokio::spawn(
        axum::serve(kube, sim.api.router())
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .into_future(),
    );
    let (metrics, metrics_addr) = listen().await?;
    tokio::spawn(
        axum::serve(
            metrics,
            sluice_sim::metrics::http::router(sim.metrics.clone()),
        )
        .with_graceful_shutdown(stop.clone().cancelled_owned())
        .into_future(),
    );
    let kubeconfig =
        std::env::temp_dir().join(format!("sluice-demo-{}.kubeconfig", std::process::id()));
    std::fs::write(
        &kubeconfig,
        sluice_sim::kubeconfig(kube_addr, &Default::default()),
    )
    .context("writing the kubeconfig")?;

    // Planner, gate and executor, each on its own port, wired as in
    // production: health, the controller under the Lease, drain on exit.
    let prometheus_url = args
        .prometheus
        .clone()
        .unwrap_or_else(|| format!("http://{metrics_addr}"));
    let prometheus =
        sluice_gate::prometheus::Prometheus::new(sluice_gate::prometheus::ClientOptions::new(
            prometheus_url.parse().context("--prometheus")?,
        ))
        .map_err(|e| anyhow::anyhow!("--prometheus: {e}"))?;
    let router = sim.api.router();
    let stack = sluice_executor::stack::start(
        sluice_planner::service::PlannerService,
        sluice_gate::service::GateService::new(prometheus, stop.clone()),
        Cluster::Given(Box::new(move |metrics| {
            sluice_executor::client_over(router, "default", metrics)
        })),
        "sluice-demo",
        stop.clone(),
    )
    .await?;
    let executor_addr = stack.executor;

    let text = args.output == Output::Text;
    if text {
        println!(
            "scenario   {} (seed {}, speed {}x)",
            scenario.name, scenario.seed, scenario.speed
        );
        println!(
            "cluster    KUBECONFIG={} kubectl get rollouts,deploy,pods -w",
            kubeconfig.display()
        );
        println!(
            "metrics    http://{metrics_addr}/metrics  (PromQL: {prometheus_url}/api/v1/query)"
        );
        println!("rollouts   gRPC {executor_addr} (sluice.v1.Rollouts)");
    }
    wait_until_ready(&sim, &scenario).await;
    if text {
        println!(
            "{:>6.1}s  workload ready; releasing {}",
            started.elapsed().as_secs_f64(),
            scenario.release.as_ref().map_or("", |r| r.image.as_str())
        );
    }
    let mut rollouts = RolloutsClient::new(channel(executor_addr).await?);
    match args.trigger {
        Trigger::Api => {
            rollouts
                .start_rollout(request.clone())
                .await
                .map_err(|s| anyhow::anyhow!("StartRollout: {}", s.message()))?;
        }
        Trigger::Apply => {
            let client =
                sluice_executor::client_over(sim.api.router(), "default", &Default::default());
            apply_release(&client, &request, &mut rollouts, &stop, text).await?;
        }
    }
    let watch = pb::WatchRolloutRequest {
        namespace: request.namespace.clone(),
        name: request.name.clone(),
        since_revision: String::new(),
    };
    let mut stream = rollouts
        .watch_rollout(watch)
        .await
        .map_err(|s| anyhow::anyhow!("WatchRollout: {}", s.message()))?
        .into_inner();
    let mut view = crate::live::Live::new(text && std::io::stdout().is_terminal());
    let mut final_state = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    while let Ok(Some(Ok(event))) = tokio::time::timeout_at(deadline, stream.message())
        .await
        .map(|r| r.transpose())
    {
        let Some(rollout) = event.rollout else {
            continue;
        };
        let status = rollout.status.clone().unwrap_or_default();
        if text {
            view.show(&rollout);
        }
        let phase = pb::RolloutPhase::try_from(status.phase).unwrap_or_default();
        if phase == pb::RolloutPhase::Paused && status.message.contains("waits for promotion") {
            let _ = rollouts
                .promote(pb::PromoteRequest {
                    namespace: request.namespace.clone(),
                    name: request.name.clone(),
                    full: false,
                })
                .await;
        }
        if matches!(
            phase,
            pb::RolloutPhase::Succeeded | pb::RolloutPhase::RolledBack | pb::RolloutPhase::Failed
        ) {
            final_state = Some(rollout);
            break;
        }
    }
    let Some(rollout) = final_state else {
        bail!("the release did not end within ten minutes")
    };
    let status = rollout.status.unwrap_or_default();
    let seconds = started.elapsed().as_secs_f64();
    let steps: Vec<serde_json::Value> = status
        .steps
        .iter()
        .map(|s| {
            let duration = match (s.started, s.finished) {
                (Some(a), Some(b)) => (b.seconds - a.seconds) as f64,
                _ => 0.0,
            };
            let failed: Vec<serde_json::Value> = s
                .evidence
                .iter()
                .filter(|m| m.outcome == pb::Outcome::Failed as i32)
                .map(|m| {
                    let e = m.evidence.clone().unwrap_or_default();
                    json!({"metric": m.metric, "value": e.values.first().map(|v| v.value), "condition": e.decided_by, "message": e.message})
                })
                .collect();
            json!({"step": s.index + 1, "replicas": s.canary_replicas, "traffic": s.traffic, "verdict": verdict_name(s.verdict), "durationSeconds": duration, "failed": failed})
        })
        .collect();
    let phase = phase_name(status.phase);
    if text {
        println!();
        println!("{phase} in {seconds:.1}s: {}", status.message);
        for s in &steps {
            println!(
                "  step {}  {:>2} new pods  traffic {:>3}%  verdict {:<12} {:>4.0}s",
                s["step"],
                s["replicas"],
                s["traffic"],
                s["verdict"].as_str().unwrap_or("-"),
                s["durationSeconds"].as_f64().unwrap_or(0.0)
            );
            for f in s["failed"].as_array().into_iter().flatten() {
                println!(
                    "          {} = {} breached {} ({})",
                    f["metric"].as_str().unwrap_or(""),
                    f["value"],
                    f["condition"].as_str().unwrap_or(""),
                    f["message"].as_str().unwrap_or("")
                );
            }
        }
    } else {
        println!(
            "{}",
            json!({"phase": phase, "message": status.message, "steps": steps, "durationSeconds": seconds, "scenario": scenario.name})
        );
    }
    let _ = std::fs::remove_file(&kubeconfig);
    Ok(if phase == "Succeeded" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Serves the executor's admission webhook with a certificate made for
/// this run, registers it on the cluster from `deploy/base/webhook.yaml`, binds
/// a Rollout with `request`'s strategy (and no version) to the workload,
/// and changes the workload's image as `kubectl set image` does; returns
/// once the release of that change has begun.
async fn apply_release(
    client: &kube::Client,
    request: &pb::StartRolloutRequest,
    rollouts: &mut RolloutsClient<Channel>,
    stop: &CancellationToken,
    text: bool,
) -> anyhow::Result<()> {
    use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
    let dir = tempfile::tempdir().context("a directory for the webhook's certificate")?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate()?;
    let cert =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])?.signed_by(&key, &issuer)?;
    let (cert_file, key_file) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_file, cert.pem())?;
    std::fs::write(&key_file, key.serialize_pem())?;
    let bound =
        sluice_executor::admission::Bound::bind("127.0.0.1:0".parse()?, &cert_file, &key_file)
            .await?;
    let webhook_addr = bound.addr();
    let bindings = sluice_executor::admission::Bindings::start(client.clone(), stop.clone());
    tokio::spawn(bound.serve(bindings.clone(), std::sync::Arc::default(), stop.clone()));

    for manifest in sluice_executor::admission::registration(webhook_addr, ca_cert.pem().as_bytes())
    {
        let kind = manifest["kind"].as_str().unwrap_or_default().to_owned();
        let resource = ApiResource {
            group: "admissionregistration.k8s.io".into(),
            version: "v1".into(),
            api_version: "admissionregistration.k8s.io/v1".into(),
            plural: format!("{}s", kind.to_lowercase()),
            kind,
        };
        let object: DynamicObject = serde_json::from_value(manifest)?;
        Api::<DynamicObject>::all_with(client.clone(), &resource)
            .create(&PostParams::default(), &object)
            .await
            .context("registering the webhook")?;
    }

    let spec = request.spec.clone().unwrap_or_default();
    let (container, image) = spec
        .images
        .first()
        .map(|u| (u.container.clone(), u.image.clone()))
        .unwrap_or_default();
    let mut binding_spec = sluice_executor::convert::spec_from_proto(&spec);
    binding_spec.images.clear();
    let mut binding = sluice_executor::crd::Rollout::new(&request.name, binding_spec);
    binding.metadata.namespace = Some(request.namespace.clone());
    let api: Api<sluice_executor::crd::Rollout> =
        Api::namespaced(client.clone(), &request.namespace);
    api.create(&PostParams::default(), &binding)
        .await
        .context("binding the Rollout")?;
    bindings.wait_for(&request.namespace, &request.name).await;
    // The binding reads the workload once (idle) before the change.
    let get = pb::GetRolloutRequest {
        namespace: request.namespace.clone(),
        name: request.name.clone(),
    };
    let idle = loop {
        let r = rollouts.get_rollout(get.clone()).await?.into_inner();
        let status = r.status.unwrap_or_default();
        if status.phase == pb::RolloutPhase::Succeeded as i32 {
            break (status.canary_revision, status.message);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    if text {
        println!(
            "bound      Rollout {}/{} (no version); now: kubectl set image deployment/{} {container}={image}",
            request.namespace, request.name, request.name
        );
    }
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), &request.namespace);
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": container, "image": image}]}}}});
    let params = PatchParams {
        field_manager: Some("kubectl-set".into()),
        ..Default::default()
    };
    let held = deployments
        .patch(&request.name, &params, &Patch::Strategic(patch))
        .await
        .context("kubectl set image")?;
    if text {
        println!(
            "held       in the same request: spec.paused={}, strategy {}",
            held.spec.as_ref().and_then(|s| s.paused).unwrap_or(false),
            held.spec
                .as_ref()
                .and_then(|s| s.strategy.as_ref())
                .and_then(|s| s.type_.clone())
                .unwrap_or_default()
        );
    }
    // Wait for the binding's new release to begin, so the watch does not
    // end on the idle state.
    loop {
        let r = rollouts.get_rollout(get.clone()).await?.into_inner();
        let status = r.status.unwrap_or_default();
        if status.phase != pb::RolloutPhase::Succeeded as i32
            || (status.canary_revision, status.message) != idle
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_until_ready(sim: &Simulation, scenario: &Scenario) {
    let Some(release) = &scenario.release else {
        return;
    };
    let Some(res) = sim.api.store().registry().get("apps", "deployments") else {
        return;
    };
    for _ in 0..600 {
        if let Ok(d) = sim
            .api
            .store()
            .get_value(&res, &release.namespace, &release.name)
        {
            let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
            if d["status"]["readyReplicas"].as_i64() == Some(replicas) {
                // A little history of the stable version for the gate to compare.
                tokio::time::sleep(Duration::from_secs(3)).await;
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
