//! The executor's configuration.

use std::path::PathBuf;

use clap::Parser;
use sluice_runtime::{cli::ServiceConfig, config::ServerArgs};

/// Flags and `SLUICE_*` variables of `sluice-executor`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "sluice-executor",
    version,
    about = "Sluice executor: the rollout controller and the Rollouts API"
)]
pub struct Config {
    /// Options every Sluice server takes.
    #[command(flatten)]
    pub server: ServerArgs,

    /// Address of the planner (`host:port` or a URI).
    #[arg(long, env = "SLUICE_PLANNER_ADDR", default_value = "127.0.0.1:7101")]
    pub planner_addr: String,

    /// Address of the metrics gate (`host:port` or a URI).
    #[arg(long, env = "SLUICE_GATE_ADDR", default_value = "127.0.0.1:7102")]
    pub gate_addr: String,

    /// Kubeconfig of the cluster to release on; without it, `KUBECONFIG` or
    /// the in-cluster service account. Without any, the API answers
    /// UNAVAILABLE and health stays NOT_SERVING.
    #[arg(long, env = "SLUICE_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// YAML file mapping bearer tokens to the namespaces they may act on.
    /// Without it the Rollouts API accepts every caller.
    #[arg(long, env = "SLUICE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

impl ServiceConfig for Config {
    fn server(&self) -> &ServerArgs {
        &self.server
    }
}
