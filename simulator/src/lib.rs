//! The simulator: a synthetic cluster so that everything runs, is tested and
//! is benchmarked on one machine.
//!
//! # Layout
//! - [`Config`]: flags and environment.
//! - [`serve`]: the `sluice.v1.Simulator` control API.

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
    GrpcServer::new("simulator", config.server)
        .add_service(SimulatorServer::new(SimulatorService))
        .bind()
        .await?
        .serve(shutdown)
        .await
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
