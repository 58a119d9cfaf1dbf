//! The whole system in one process: the planner, the gate and the executor,
//! each a server on its own loopback port as it would be in its own process,
//! wired as in production. The executor is the one [`bind`](crate::bind)
//! makes for [`serve`](crate::serve): the Rollouts API with health on the
//! planner, the gate and the Kubernetes API, the rollout controller under
//! the Lease, and every server draining on shutdown.
//!
//! The executor knows no planner or gate implementation: the caller hands
//! in any `sluice.v1.Planner` and `sluice.v1.MetricsGate`, and the cluster
//! (an in-process simulator through [`client_over`](crate::client_over)).

use std::{net::SocketAddr, time::Duration};

use sluice_proto::v1::{
    metrics_gate_server::{MetricsGate, MetricsGateServer},
    planner_server::{Planner, PlannerServer},
};
use sluice_runtime::{
    Error,
    config::{LogFormat, ServerArgs, TlsArgs},
    server::{BoundServer, GrpcServer, Service},
};
use tokio_util::sync::CancellationToken;

use crate::{Cluster, Config, controller};

/// The addresses of a started stack.
#[derive(Debug, Clone, Copy)]
pub struct Stack {
    /// The planner's gRPC address.
    pub planner: SocketAddr,
    /// The gate's gRPC address.
    pub gate: SocketAddr,
    /// The executor's gRPC address: the Rollouts API and health.
    pub executor: SocketAddr,
    /// The executor's admin address: `/metrics`, `/healthz`, `/readyz`.
    pub executor_admin: SocketAddr,
}

/// Server options for one process's servers: any free loopback port,
/// plaintext, the production grace period.
pub fn loopback() -> ServerArgs {
    ServerArgs {
        grpc_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        admin_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        shutdown_grace: Duration::from_secs(3),
        log_format: LogFormat::Pretty,
        log: "info".into(),
        tls: TlsArgs::default(),
    }
}

/// The planner and the gate, each served on its own loopback port as its
/// own process serves it (health, metrics, drain on shutdown).
#[derive(Debug, Clone, Copy)]
pub struct Services {
    /// The planner's gRPC address.
    pub planner: SocketAddr,
    /// The gate's gRPC address.
    pub gate: SocketAddr,
}

/// Serves `planner` (a `sluice.v1.Planner` server, interceptors allowed)
/// and `gate` (a `sluice.v1.MetricsGate` server) until `shutdown` is
/// cancelled; each then drains for its grace period.
///
/// # Errors
/// [`Error::Bind`] when a listener cannot be bound.
pub async fn services(
    planner: impl Service,
    gate: impl Service,
    shutdown: CancellationToken,
) -> Result<Services, Error> {
    let planner = GrpcServer::new("planner", loopback())
        .add_service(planner)
        .bind()
        .await?;
    let gate = GrpcServer::new("gate", loopback())
        .add_service(gate)
        .bind()
        .await?;
    let services = Services {
        planner: planner.grpc_addr(),
        gate: gate.grpc_addr(),
    };
    spawn_serving(planner, shutdown.clone());
    spawn_serving(gate, shutdown);
    Ok(services)
}

fn spawn_serving(server: BoundServer, shutdown: CancellationToken) {
    tokio::spawn(async move {
        if let Err(e) = server.serve(shutdown.cancelled_owned()).await {
            tracing::warn!(error = %e, "an in-process server stopped");
        }
    });
}

/// The executor's configuration for an in-process stack: `services`'
/// addresses, loopback listeners, the Lease `default/sluice-executor` held
/// as `identity`, production defaults otherwise.
pub fn config(services: Services, identity: &str) -> Config {
    Config {
        server: loopback(),
        planner_addr: services.planner.to_string(),
        gate_addr: services.gate.to_string(),
        kubeconfig: None,
        service_account_dir: std::path::PathBuf::new(),
        kubernetes_service_host: None,
        kubernetes_service_port: 443,
        namespace: Vec::new(),
        token_file: None,
        token_secret: None,
        lease_namespace: "default".into(),
        lease_name: "sluice-executor".into(),
        lease_seconds: 15,
        shards: 1,
        max_concurrent_reconciles: controller::DEFAULT_CONCURRENCY,
        keep_all_workloads: false,
        identity: Some(identity.to_owned()),
        webhook_addr: None,
        webhook_cert: None,
        webhook_key: None,
        webhook_secret: None,
        webhook_host: Vec::new(),
        webhook_configuration: Vec::new(),
    }
}

/// Starts the executor [`serve`](crate::serve) would run with `config` on
/// `cluster`, and serves it until `shutdown` is cancelled; it then drains
/// and gives up the Lease. Returns its gRPC and admin addresses.
///
/// # Errors
/// As [`bind`](crate::bind).
pub async fn executor(
    config: Config,
    cluster: Cluster,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, SocketAddr), Error> {
    let executor = crate::bind(config, cluster).await?;
    let addrs = (executor.grpc_addr(), executor.admin_addr());
    spawn_serving(executor, shutdown);
    Ok(addrs)
}

/// Starts `planner`, `gate` and the executor on `cluster`, each on its own
/// loopback port, and serves them until `shutdown` is cancelled; each then
/// drains for its grace period. The executor leads the Lease
/// `default/sluice-executor` as `identity`.
///
/// # Errors
/// [`Error::Bind`] when a listener cannot be bound.
pub async fn start<P: Planner, G: MetricsGate>(
    planner: P,
    gate: G,
    cluster: Cluster,
    identity: &str,
    shutdown: CancellationToken,
) -> Result<Stack, Error> {
    let services = services(
        PlannerServer::new(planner),
        MetricsGateServer::new(gate),
        shutdown.clone(),
    )
    .await?;
    let (executor, executor_admin) =
        executor(config(services, identity), cluster, shutdown).await?;
    Ok(Stack {
        planner: services.planner,
        gate: services.gate,
        executor,
        executor_admin,
    })
}
