//! The gate's configuration.

use std::time::Duration;

use clap::Parser;
use sluice_runtime::{
    Error,
    cli::ServiceConfig,
    config::{ServerArgs, parse_duration},
};
use url::Url;

/// Flags and `SLUICE_*` variables of `sluice-gate`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "sluice-gate",
    version,
    about = "Sluice metrics gate: Prometheus analysis for each batch"
)]
pub struct Config {
    /// Options every Sluice server takes.
    #[command(flatten)]
    pub server: ServerArgs,

    /// Base URL of the Prometheus HTTP API (a real Prometheus or the simulator's).
    #[arg(
        long,
        env = "SLUICE_PROMETHEUS_URL",
        default_value = "http://127.0.0.1:9090"
    )]
    pub prometheus_url: Url,

    /// How long one Prometheus query may take.
    #[arg(long, env = "SLUICE_PROMETHEUS_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub prometheus_timeout: Duration,
}

impl ServiceConfig for Config {
    fn server(&self) -> &ServerArgs {
        &self.server
    }

    fn validate(&self) -> Result<(), Error> {
        self.server.validate()?;
        if !matches!(self.prometheus_url.scheme(), "http" | "https") {
            return Err(Error::Config {
                flag: "--prometheus-url",
                message: format!("must be an http or https URL, got {}", self.prometheus_url),
            });
        }
        if self.prometheus_timeout.is_zero() {
            return Err(Error::Config {
                flag: "--prometheus-timeout",
                message: "must be longer than 0s, got 0s".into(),
            });
        }
        Ok(())
    }
}
