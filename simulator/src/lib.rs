//! The simulator: a synthetic cluster so that everything runs, is tested and
//! is benchmarked on one machine.
//!
//! # Layout
//! - [`Config`]: flags and environment.
//! - [`api`]: the Kubernetes API server.
//! - [`cluster`]: controllers, scheduler and kubelets that make it behave.
//! - [`metrics`]: traffic, per-pod metrics and a Prometheus-compatible API.
//! - [`serve`]: the `sluice.v1.Simulator` control API.

pub mod api;
pub mod cluster;
pub mod metrics;

use clap::Parser;
use sluice_proto::v1::{
    self as pb,
    simulator_server::{Simulator, SimulatorServer},
};
use sluice_runtime::{
    Error, cli::ServiceConfig, config::ServerArgs, server::GrpcServer, shutdown::Signal,
};
use tonic::{Request, Response, Status};

/// Flags and `SLUICE_*` variables of `sluice-sim`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "sluice-sim",
    version,
    about = "Sluice simulator: a synthetic cluster with traffic and metrics"
)]
pub struct Config {
    /// Options every Sluice server takes.
    #[command(flatten)]
    pub server: ServerArgs,

    /// Address of the simulated cluster's Kubernetes API; port 0 picks a free port.
    #[arg(long, env = "SLUICE_KUBE_ADDR", default_value = "127.0.0.1:0")]
    pub kube_addr: std::net::SocketAddr,

    /// Where to write a kubeconfig for the simulated cluster once it serves.
    #[arg(long, env = "SLUICE_KUBECONFIG")]
    pub kubeconfig: Option<std::path::PathBuf>,
}

impl ServiceConfig for Config {
    fn server(&self) -> &ServerArgs {
        &self.server
    }
}

/// Serves the simulator's control API until `shutdown` completes.
///
/// # Errors
/// See [`sluice_runtime::server::BoundServer::serve`].
pub async fn serve(config: Config, shutdown: Signal) -> Result<(), Error> {
    let api = api::ApiServer::new(api::Options::default());
    api.install_upstream_crds().map_err(|e| Error::Io {
        context: "installing the upstream CRDs",
        source: std::io::Error::other(e.message),
    })?;
    let tls = sluice_runtime::http::tls_acceptor(&config.server.tls)?;
    let listener = tokio::net::TcpListener::bind(config.kube_addr)
        .await
        .map_err(|source| Error::Bind {
            flag: "--kube-addr",
            addr: config.kube_addr,
            source,
        })?;
    let kube_addr = listener.local_addr().map_err(|source| Error::Io {
        context: "reading bound address",
        source,
    })?;
    let server = GrpcServer::new("simulator", config.server.clone());
    let stop = server.shutdown_token();
    tokio::spawn(sluice_runtime::http::serve(
        listener,
        tls,
        api.router(),
        stop,
    ));
    if let Some(path) = &config.kubeconfig {
        let text = kubeconfig(kube_addr, &config.server.tls);
        std::fs::write(path, text).map_err(|source| Error::Io {
            context: "writing --kubeconfig",
            source,
        })?;
    }
    tracing::info!(%kube_addr, kubeconfig = ?config.kubeconfig, "Kubernetes API listening");
    server
        .add_service(SimulatorServer::new(SimulatorService))
        .bind()
        .await?
        .serve(shutdown)
        .await
}

/// A kubeconfig pointing at the simulated cluster.
pub fn kubeconfig(addr: std::net::SocketAddr, tls: &sluice_runtime::config::TlsArgs) -> String {
    let (scheme, ca) = match (&tls.tls_cert, &tls.tls_ca) {
        (Some(_), Some(ca)) => (
            "https",
            format!("\n    certificate-authority: {}", ca.display()),
        ),
        (Some(_), None) => ("https", "\n    insecure-skip-tls-verify: true".to_owned()),
        _ => ("http", String::new()),
    };
    let user = match (&tls.tls_cert, &tls.tls_key) {
        (Some(cert), Some(key)) if tls.tls_client_ca.is_some() => {
            format!(
                "\n    client-certificate: {}\n    client-key: {}",
                cert.display(),
                key.display()
            )
        }
        // Over https without a client certificate kubectl would prompt for a
        // password; the simulator accepts any bearer token.
        (Some(_), _) => "\n    token: sluice-simulator".to_owned(),
        _ => " {}".to_owned(),
    };
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: sluice-sim\n  cluster:\n    server: {scheme}://{addr}{ca}\ncontexts:\n- name: sluice-sim\n  context:\n    cluster: sluice-sim\n    user: sluice-sim\n    namespace: default\ncurrent-context: sluice-sim\nusers:\n- name: sluice-sim\n  user:{user}\n"
    )
}

/// The simulator's control service.
#[derive(Debug, Clone, Default)]
pub struct SimulatorService;

const NOT_YET: &str = "the simulated cluster is not implemented yet (issues 5 and 6)";

#[tonic::async_trait]
impl Simulator for SimulatorService {
    async fn load_scenario(
        &self,
        _request: Request<pb::LoadScenarioRequest>,
    ) -> Result<Response<pb::LoadScenarioResponse>, Status> {
        Err(Status::unimplemented(NOT_YET))
    }

    async fn get_state(
        &self,
        _request: Request<pb::GetStateRequest>,
    ) -> Result<Response<pb::ClusterState>, Status> {
        Err(Status::unimplemented(NOT_YET))
    }

    async fn inject_fault(
        &self,
        _request: Request<pb::InjectFaultRequest>,
    ) -> Result<Response<pb::InjectFaultResponse>, Status> {
        Err(Status::unimplemented(NOT_YET))
    }

    async fn clear_faults(
        &self,
        _request: Request<pb::ClearFaultsRequest>,
    ) -> Result<Response<pb::ClearFaultsResponse>, Status> {
        Err(Status::unimplemented(NOT_YET))
    }
}
