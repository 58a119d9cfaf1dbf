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
    server::GrpcServer,
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
    let planner = GrpcServer::new("planner", loopback())
        .add_service(PlannerServer::new(planner))
        .bind()
        .await?;
    let gate = GrpcServer::new("gate", loopback())
        .add_service(MetricsGateServer::new(gate))
        .bind()
        .await?;
    let config = Config {
        server: loopback(),
        planner_addr: planner.grpc_addr().to_string(),
        gate_addr: gate.grpc_addr().to_string(),
        kubeconfig: None,
        token_file: None,
        lease_namespace: "default".into(),
        lease_name: "sluice-executor".into(),
        lease_seconds: 15,
        max_concurrent_reconciles: controller::DEFAULT_CONCURRENCY,
        identity: Some(identity.to_owned()),
        webhook_addr: None,
        webhook_cert: None,
        webhook_key: None,
        webhook_secret: None,
        webhook_host: Vec::new(),
        webhook_configuration: Vec::new(),
    };
    let executor = crate::bind(config, cluster).await?;
    let stack = Stack {
        planner: planner.grpc_addr(),
        gate: gate.grpc_addr(),
        executor: executor.grpc_addr(),
        executor_admin: executor.admin_addr(),
    };
    for server in [planner, gate, executor] {
        let stop = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = server.serve(stop.cancelled_owned()).await {
                tracing::warn!(error = %e, "an in-process server stopped");
            }
        });
    }
    Ok(stack)
}
