//! What the rollout tests share: a simulated cluster served with the
//! planner, the gate and the rollout controller, in one process.

#![allow(dead_code)] // each test file uses its own part

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind},
};
use serde_json::Value;
use sluice_executor::{
    Cluster,
    api::RolloutsApi,
    crd::{Phase, Rollout},
    metrics::Metrics,
    stack::{self, Services},
};
use sluice_proto::v1::{
    metrics_gate_server::MetricsGateServer, planner_client::PlannerClient,
    planner_server::PlannerServer, rollouts_client::RolloutsClient,
    rollouts_server::RolloutsServer,
};
use sluice_runtime::auth::Authenticator;
use sluice_sim::scenario::{Scenario, Simulation};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Server};

pub(crate) struct World {
    /// The cluster; its controllers stop when it drops.
    pub(crate) sim: Simulation,
    /// The tests' own client (retrying like the controller's).
    pub(crate) client: Client,
    services: Services,
    executor: std::sync::Mutex<(CancellationToken, Arc<Metrics>)>,
    restarts: std::sync::atomic::AtomicUsize,
    _stop: tokio_util::sync::DropGuard,
}

impl World {
    /// Stops the running executor and starts a new one with nothing
    /// carried over, as a replaced executor would: the new one leads once
    /// the old one has given the Lease up.
    pub(crate) async fn restart_controller(&self) {
        let n = 1 + self
            .restarts
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let next = start_executor(&self.sim, self.services, &format!("executor-{n}")).await;
        let old = std::mem::replace(&mut *self.executor.lock().unwrap(), next);
        old.0.cancel();
    }

    /// What the running executor counted.
    pub(crate) fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.executor.lock().unwrap().1)
    }
}

/// The executor as production runs it (API, Lease, controller, drain),
/// through the one in-process path the demo uses, on `sim`'s API server.
async fn start_executor(
    sim: &Simulation,
    services: Services,
    identity: &str,
) -> (CancellationToken, Arc<Metrics>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let router = sim.api.router();
    let cluster = Cluster::Given(Box::new(move |metrics: &Arc<Metrics>| {
        let _ = tx.send(Arc::clone(metrics));
        sluice_executor::client_over(router, "default", metrics)
    }));
    let stop = CancellationToken::new();
    stack::executor(stack::config(services, identity), cluster, stop.clone())
        .await
        .unwrap();
    (stop, rx.recv().unwrap())
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

/// A scenario with fast pods, served with planner, gate and executor.
pub(crate) async fn world(scenario: &str) -> World {
    world_with(Scenario::load(scenario).unwrap()).await
}

/// A given scenario with fast pods, served with planner, gate and
/// executor.
pub(crate) async fn world_with(mut scenario: Scenario) -> World {
    let _ = rustls::crypto::ring::default_provider().install_default();
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
    let services = stack::services(
        PlannerServer::new(sluice_planner::service::PlannerService),
        MetricsGateServer::new(sluice_gate::service::GateService::new(
            prometheus,
            stop.clone(),
        )),
        stop.clone(),
    )
    .await
    .unwrap();
    let client = sluice_executor::client_over(sim.api.router(), "default", &Arc::default());
    let executor = std::sync::Mutex::new(start_executor(&sim, services, "executor-0").await);
    World {
        sim,
        client,
        services,
        executor,
        restarts: std::sync::atomic::AtomicUsize::new(0),
        _stop: stop.drop_guard(),
    }
}

/// A simulated cluster and the Rollouts API over it on loopback, with the
/// planner it validates strategies with; no controller, so a test writes
/// the statuses it needs.
pub(crate) struct ApiWorld {
    /// The cluster; its controllers stop when it drops.
    pub(crate) sim: Simulation,
    /// The tests' own Kubernetes client.
    pub(crate) client: Client,
    /// A client of the Rollouts API.
    pub(crate) api: RolloutsClient<Channel>,
    /// The API's view of the Rollouts.
    pub(crate) bindings: sluice_executor::admission::Bindings,
    _stop: tokio_util::sync::DropGuard,
}

/// The Rollouts API over `scenario`'s cluster.
pub(crate) async fn api_world(scenario: &str) -> ApiWorld {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = Simulation::start(Scenario::load(scenario).unwrap()).unwrap();
    let stop = CancellationToken::new();
    let planner_addr = serve_grpc(
        Server::builder().add_service(PlannerServer::new(sluice_planner::service::PlannerService)),
    )
    .await;
    let client = sluice_executor::client_over(sim.api.router(), "default", &Arc::default());
    let api = RolloutsApi::new(
        Some(client.clone()),
        PlannerClient::new(channel(planner_addr).await),
        stop.clone(),
    );
    let bindings = api.bindings().unwrap();
    let api_addr = serve_grpc(
        Server::builder().add_service(RolloutsServer::with_interceptor(
            api,
            Authenticator::open().interceptor(),
        )),
    )
    .await;
    let api = RolloutsClient::new(channel(api_addr).await)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    ApiWorld {
        sim,
        client,
        api,
        bindings,
        _stop: stop.drop_guard(),
    }
}

pub(crate) fn rollout(image: &str) -> Rollout {
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

/// Creates the Rollout [`rollout`] describes for `image`.
pub(crate) async fn release(world: &World, image: &str) -> Api<Rollout> {
    let rollouts: Api<Rollout> = Api::default_namespaced(world.client.clone());
    rollouts
        .create(&kube::api::PostParams::default(), &rollout(image))
        .await
        .unwrap();
    rollouts
}

/// Whether a rollout has ended, one way or another.
pub(crate) fn finished(p: Phase) -> bool {
    matches!(p, Phase::Succeeded | Phase::RolledBack | Phase::Failed)
}

pub(crate) async fn wait_phase(rollouts: &Api<Rollout>, done: impl Fn(Phase) -> bool) -> Rollout {
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

pub(crate) async fn ready_workload(world: &World) {
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

pub(crate) fn route_api(
    world: &World,
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
) -> Api<DynamicObject> {
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    Api::default_namespaced_with(world.client.clone(), &resource)
}

pub(crate) fn http_routes(world: &World) -> Api<DynamicObject> {
    route_api(
        world,
        "gateway.networking.k8s.io",
        "v1",
        "HTTPRoute",
        "httproutes",
    )
}

pub(crate) fn virtual_services(world: &World) -> Api<DynamicObject> {
    route_api(
        world,
        "networking.istio.io",
        "v1",
        "VirtualService",
        "virtualservices",
    )
}

/// A scenario with the web Deployment and Service, every router in front
/// of it, and load through the one named.
pub(crate) fn with_routers(name: &str, entry: Value) -> Scenario {
    let mut s = Scenario::load(name).unwrap();
    let routers: Value = serde_yaml::from_str(
        r#"
- apiVersion: networking.k8s.io/v1
  kind: Ingress
  metadata: {name: web, namespace: default}
  spec:
    ingressClassName: nginx
    rules:
      - host: web.example
        http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}
- apiVersion: gateway.networking.k8s.io/v1
  kind: HTTPRoute
  metadata: {name: web, namespace: default}
  spec:
    parentRefs: [{name: gateway}]
    rules: [{backendRefs: [{name: web, port: 80}]}]
- apiVersion: networking.istio.io/v1
  kind: VirtualService
  metadata: {name: web, namespace: default}
  spec:
    hosts: [web.example]
    http: [{name: primary, route: [{destination: {host: web.default.svc.cluster.local}}]}]
"#,
    )
    .unwrap();
    s.manifests
        .extend(routers.as_array().unwrap().iter().cloned());
    s.load[0].target = serde_json::from_value(entry).unwrap();
    s
}
