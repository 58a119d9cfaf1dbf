//! The planner's configuration.

use clap::Parser;
use sluice_runtime::{cli::ServiceConfig, config::ServerArgs};

/// Flags and `SLUICE_*` variables of `sluice-planner`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "sluice-planner",
    version,
    about = "Sluice planner: strategies into plans of batches"
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
