//! Rollouts end to end on the simulated cluster, in one process: the
//! simulator (API server, controllers, traffic, metrics), the planner and
//! the gate on loopback, and the rollout controller.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests stop at the first failed step

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::{
    Api, Client,
    api::{ListParams, PostParams},
};
use sluice_executor::{
    controller::{self, Analyses, Ctx},
    crd::{Phase, Rollout},
};
use sluice_proto::v1::{
    metrics_gate_client::MetricsGateClient, metrics_gate_server::MetricsGateServer,
    planner_client::PlannerClient, planner_server::PlannerServer,
};
use sluice_sim::scenario::{Scenario, Simulation};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Server};

struct World {
    sim: Simulation,
    client: Client,
    _stop: tokio_util::sync::DropGuard,
}

async fn serve_grpc(router: tonic::transport::server::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        router.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}

async fn channel(addr: std::net::SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A scenario with fast pods, served with planner, gate and controller.
async fn world(scenario: &str) -> World {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut scenario = Scenario::load(scenario).unwrap();
    for v in &mut scenario.versions {
        v.profile.start_min_seconds = 0.2;
        v.profile.start_max_seconds = 0.4;
        v.profile.ready_after_seconds = 0.2;
    }
    let sim = Simulation::start(scenario).unwrap();
    let stop = CancellationToken::new();

    let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_addr = metrics_listener.local_addr().unwrap();
    tokio::spawn(
        axum::serve(
            metrics_listener,
            sluice_sim::metrics::http::router(sim.metrics.clone()),
        )
        .into_future(),
    );
    let prometheus =
        sluice_gate::prometheus::Prometheus::new(sluice_gate::prometheus::ClientOptions::new(
            format!("http://{metrics_addr}").parse().unwrap(),
        ))
        .unwrap();
    let gate = sluice_gate::service::GateService::new(prometheus, stop.clone());
    let gate_addr = serve_grpc(Server::builder().add_service(MetricsGateServer::new(gate))).await;
    let planner_addr = serve_grpc(
        Server::builder().add_service(PlannerServer::new(sluice_planner::service::PlannerService)),
    )
    .await;

    let client = Client::new(sim.api.router(), "default");
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        planner: PlannerClient::new(channel(planner_addr).await),
        gate: MetricsGateClient::new(channel(gate_addr).await),
        analyses: Analyses::default(),
    });
    let shutdown = stop.clone();
    tokio::spawn(controller::run(
        ctx,
        async move { shutdown.cancelled().await },
    ));
    World {
        sim,
        client,
        _stop: stop.drop_guard(),
    }
}

fn rollout(image: &str) -> Rollout {
    serde_yaml::from_str(&format!(
        r#"
apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata: {{name: web}}
spec:
  workload: {{kind: Deployment, name: web}}
  images: [{{container: web, image: "{image}"}}]
  strategy:
    canary:
      progressDeadline: 60s
      steps:
        - {{replicas: "20%", analyses: [health], pause: {{duration: 1s}}}}
        - {{replicas: "50%", analyses: [health]}}
  analyses:
    - name: health
      metrics:
        - name: success-rate
          template: request-success-rate
          successCondition: {{threshold: {{min: 0.99}}}}
          failureCondition: {{threshold: {{max: 0.95}}}}
          initialDelay: 3s
          interval: 1s
          count: 3
          inconclusiveLimit: 1
"#
    ))
    .unwrap()
}

async fn wait_phase(rollouts: &Api<Rollout>, done: impl Fn(Phase) -> bool) -> Rollout {
    for _ in 0..1200 {
        let r = rollouts.get("web").await.unwrap();
        if r.status.as_ref().is_some_and(|s| done(s.phase)) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = rollouts.get("web").await.unwrap();
    panic!(
        "rollout did not finish: {:#?}",
        r.status
            .map(|s| (s.phase, s.step_state, s.message, s.analysis))
    );
}

async fn ready_workload(world: &World) {
    let deployments: Api<Deployment> = Api::default_namespaced(world.client.clone());
    for _ in 0..600 {
        let d = deployments.get("web").await.unwrap();
        if d.status.and_then(|s| s.ready_replicas) == Some(10) {
            // Let the stable version build a traffic history.
            tokio::time::sleep(Duration::from_secs(2)).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("web never became ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_release_reaches_every_pod_and_leaves_no_trace() {
    let world = world("healthy").await;
    ready_workload(&world).await;
    let rollouts: Api<Rollout> = Api::default_namespaced(world.client.clone());
    rollouts
        .create(&PostParams::default(), &rollout("registry.example/web:2.0"))
        .await
        .unwrap();
    let done = wait_phase(&rollouts, |p| {
        matches!(p, Phase::Succeeded | Phase::RolledBack | Phase::Failed)
    })
    .await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, Phase::Succeeded, "{status:#?}");
    assert_eq!(
        status.steps.len(),
        3,
        "two steps and the final batch: {:#?}",
        status.steps
    );
    assert!(
        status.steps[0].verdict.is_some() && !status.steps[0].evidence.is_empty(),
        "{:#?}",
        status.steps[0]
    );

    let d: Deployment = Api::default_namespaced(world.client.clone())
        .get("web")
        .await
        .unwrap();
    let spec = d.spec.unwrap();
    assert_eq!(
        spec.template.spec.unwrap().containers[0].image.as_deref(),
        Some("registry.example/web:2.0")
    );
    assert_ne!(spec.paused, Some(true), "the Deployment is handed back");
    assert!(
        d.metadata
            .annotations
            .unwrap_or_default()
            .keys()
            .all(|k| !k.starts_with("sluice.dev/")),
        "no trace left"
    );
    let sets: Vec<ReplicaSet> = Api::default_namespaced(world.client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let running: Vec<(String, i32)> = sets
        .iter()
        .map(|rs| {
            (
                rs.spec
                    .as_ref()
                    .unwrap()
                    .template
                    .as_ref()
                    .unwrap()
                    .spec
                    .as_ref()
                    .unwrap()
                    .containers[0]
                    .image
                    .clone()
                    .unwrap(),
                rs.spec.as_ref().unwrap().replicas.unwrap(),
            )
        })
        .collect();
    assert!(
        running.contains(&("registry.example/web:2.0".into(), 10))
            && running.contains(&("registry.example/web:1.0".into(), 0)),
        "{running:?}"
    );
    let _ = &world.sim;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_canary_rolls_back_on_its_first_analysis() {
    let world = world("bad-canary").await;
    ready_workload(&world).await;
    let rollouts: Api<Rollout> = Api::default_namespaced(world.client.clone());
    rollouts
        .create(&PostParams::default(), &rollout("registry.example/web:2.0"))
        .await
        .unwrap();
    let done = wait_phase(&rollouts, |p| {
        matches!(p, Phase::Succeeded | Phase::RolledBack | Phase::Failed)
    })
    .await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, Phase::RolledBack, "{status:#?}");
    assert!(
        status.message.contains("analysis failed"),
        "{}",
        status.message
    );
    let evidence = &status.steps[0].evidence;
    assert!(
        evidence
            .iter()
            .any(|e| e.outcome == "FAILED" && e.value.is_some_and(|v| v < 0.95)),
        "{evidence:#?}"
    );

    let d: Deployment = Api::default_namespaced(world.client.clone())
        .get("web")
        .await
        .unwrap();
    assert_eq!(
        d.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .image
            .as_deref(),
        Some("registry.example/web:1.0"),
        "the stable template is back"
    );
    assert_ne!(d.spec.unwrap().paused, Some(true));
    assert!(
        d.metadata
            .annotations
            .unwrap_or_default()
            .keys()
            .all(|k| !k.starts_with("sluice.dev/"))
    );
}
