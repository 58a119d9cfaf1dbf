//! The executor: the rollout controller and the public `sluice.v1.Rollouts`
//! API that deploy platforms call.
//!
//! # Layout
//! - [`config`]: flags and environment.
//! - [`crd`]: the Rollout custom resource.
//! - [`controller`]: the rollout controller.
//! - [`keys`]: annotation and label keys.
//! - [`api`]: the Rollouts gRPC service (authentication, request checks).
//! - [`serve`]: wiring: the API, its dependencies (planner, gate), health.

pub mod api;
pub mod config;
pub mod controller;
pub mod crd;
pub mod keys;

pub use config::Config;

use sluice_proto::{services, v1::rollouts_server::RolloutsServer};
use sluice_runtime::{
    Error, auth::Authenticator, health::Dependency, server::GrpcServer, shutdown::Signal,
    tls::channel,
};

/// Serves the executor until `shutdown` completes. It reports SERVING once
/// the planner and the gate report SERVING.
///
/// # Errors
/// [`Error::Config`] for a bad token file or address; otherwise see
/// [`sluice_runtime::server::BoundServer::serve`].
pub async fn serve(config: Config, shutdown: Signal) -> Result<(), Error> {
    let auth = match &config.token_file {
        Some(path) => Authenticator::from_file("--token-file", path)?,
        None => Authenticator::open(),
    };
    let tls = &config.server.tls;
    let planner = channel("--planner-addr", &config.planner_addr, tls)?;
    let gate = channel("--gate-addr", &config.gate_addr, tls)?;
    let server = GrpcServer::new("executor", config.server.clone());
    let api = api::RolloutsApi::new(server.shutdown_token());
    server
        .add_service(RolloutsServer::with_interceptor(api, auth.interceptor()))
        .depends_on(Dependency::grpc(
            format!("planner at {}", config.planner_addr),
            planner,
            services::PLANNER,
        ))
        .depends_on(Dependency::grpc(
            format!("gate at {}", config.gate_addr),
            gate,
            services::METRICS_GATE,
        ))
        .bind()
        .await?
        .serve(shutdown)
        .await
}
