//! The gate's configuration.

use std::{path::PathBuf, time::Duration};

use clap::Parser;
use sluice_runtime::{
    Error,
    cli::ServiceConfig,
    config::{ServerArgs, parse_duration},
};
use url::Url;

use crate::prometheus::ClientOptions;

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

    /// How long one Prometheus query attempt may take.
    #[arg(long, env = "SLUICE_PROMETHEUS_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub prometheus_timeout: Duration,

    /// Attempts after the first for unreachable, timed-out or 5xx queries.
    #[arg(long, env = "SLUICE_PROMETHEUS_RETRIES", default_value_t = 2)]
    pub prometheus_retries: u32,

    /// File holding a bearer token for Prometheus.
    #[arg(long, env = "SLUICE_PROMETHEUS_BEARER_TOKEN_FILE")]
    pub prometheus_bearer_token_file: Option<PathBuf>,

    /// File holding `user:password` for basic authentication to Prometheus.
    #[arg(
        long,
        env = "SLUICE_PROMETHEUS_BASIC_AUTH_FILE",
        conflicts_with = "prometheus_bearer_token_file"
    )]
    pub prometheus_basic_auth_file: Option<PathBuf>,

    /// Extra header for Prometheus, `Name: value`; repeatable.
    #[arg(
        long = "prometheus-header",
        env = "SLUICE_PROMETHEUS_HEADERS",
        value_delimiter = ';'
    )]
    pub prometheus_headers: Vec<String>,

    /// PEM CA bundle that an https Prometheus's certificate must chain to.
    #[arg(long, env = "SLUICE_PROMETHEUS_CA")]
    pub prometheus_ca: Option<PathBuf>,

    /// PEM file with a client certificate and key for Prometheus (mutual TLS).
    #[arg(long, env = "SLUICE_PROMETHEUS_CLIENT_IDENTITY")]
    pub prometheus_client_identity: Option<PathBuf>,
}

fn read(flag: &'static str, path: &PathBuf) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::ReadFile {
        flag,
        path: path.clone(),
        source,
    })
}

fn text(flag: &'static str, path: &PathBuf) -> Result<String, Error> {
    String::from_utf8(read(flag, path)?).map_err(|_| Error::Config {
        flag,
        message: format!("{} is not UTF-8", path.display()),
    })
}

impl Config {
    /// The Prometheus client options these flags describe.
    ///
    /// # Errors
    /// [`Error::Config`] or [`Error::ReadFile`] naming the flag.
    pub fn prometheus(&self) -> Result<ClientOptions, Error> {
        let mut options = ClientOptions::new(self.prometheus_url.clone());
        options.timeout = self.prometheus_timeout;
        options.retries = self.prometheus_retries;
        if let Some(path) = &self.prometheus_bearer_token_file {
            let flag = "--prometheus-bearer-token-file";
            options = options
                .bearer(&text(flag, path)?)
                .map_err(|message| Error::Config { flag, message })?;
        }
        if let Some(path) = &self.prometheus_basic_auth_file {
            let flag = "--prometheus-basic-auth-file";
            let content = text(flag, path)?;
            let (user, password) =
                content
                    .trim_end_matches('\n')
                    .split_once(':')
                    .ok_or_else(|| Error::Config {
                        flag,
                        message: format!("{} must hold user:password", path.display()),
                    })?;
            options = options
                .basic(user, password)
                .map_err(|message| Error::Config { flag, message })?;
        }
        for header in &self.prometheus_headers {
            options = options.header(header).map_err(|message| Error::Config {
                flag: "--prometheus-header",
                message,
            })?;
        }
        if let Some(path) = &self.prometheus_ca {
            options.ca_pem = Some(read("--prometheus-ca", path)?);
        }
        if let Some(path) = &self.prometheus_client_identity {
            options.identity_pem = Some(read("--prometheus-client-identity", path)?);
        }
        Ok(options)
    }
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
        self.prometheus().map(|_| ())
    }
}
