//! The flags and `SLUICE_*` environment variables every server takes.
//!
//! Each service flattens [`ServerArgs`] into its own clap struct, so the
//! shared options are spelled the same everywhere.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, ValueEnum};

pub use sluice_model::duration::{format_duration, parse_duration};

use crate::Error;

/// Options shared by every Sluice server.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Address of the gRPC server; port 0 picks a free port.
    #[arg(long, env = "SLUICE_GRPC_ADDR", default_value = "127.0.0.1:0")]
    pub grpc_addr: SocketAddr,

    /// Address of the admin HTTP server (/metrics, /healthz, /readyz).
    #[arg(long, env = "SLUICE_ADMIN_ADDR", default_value = "127.0.0.1:0")]
    pub admin_addr: SocketAddr,

    /// How long open streams and requests may run after a shutdown signal.
    #[arg(long, env = "SLUICE_SHUTDOWN_GRACE", default_value = "3s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// Log format.
    #[arg(long, env = "SLUICE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,

    /// Log filter, in tracing's env-filter syntax (e.g. `info,sluice_executor=debug`).
    #[arg(long, env = "SLUICE_LOG", default_value = "info")]
    pub log: String,

    /// TLS options.
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Certificate files for the servers and for the clients a service uses.
///
/// Plaintext is the default; giving `--tls-cert` and `--tls-key` turns TLS on
/// for the gRPC and admin servers, and `--tls-client-ca` requires clients to
/// present a certificate signed by that CA (mutual TLS).
#[derive(Debug, Clone, Default, Args)]
pub struct TlsArgs {
    /// PEM certificate chain this process presents, as a server and as a client.
    #[arg(long, env = "SLUICE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "SLUICE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA bundle that client certificates must chain to (turns on mutual TLS).
    #[arg(long, env = "SLUICE_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// PEM CA bundle used to verify the servers this process calls.
    #[arg(long, env = "SLUICE_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
}

impl ServerArgs {
    /// Checks what clap cannot: files exist, addresses differ.
    ///
    /// # Errors
    /// [`Error::Config`] naming the flag and the value.
    pub fn validate(&self) -> Result<(), Error> {
        if self.grpc_addr == self.admin_addr && self.grpc_addr.port() != 0 {
            return Err(Error::config(
                "--admin-addr",
                format!("must differ from --grpc-addr, both are {}", self.admin_addr),
            ));
        }
        for (flag, path) in [
            ("--tls-cert", &self.tls.tls_cert),
            ("--tls-key", &self.tls.tls_key),
            ("--tls-client-ca", &self.tls.tls_client_ca),
            ("--tls-ca", &self.tls.tls_ca),
        ] {
            if let Some(path) = path
                && !path.is_file()
            {
                return Err(Error::config(
                    flag,
                    format!("no such file: {}", path.display()),
                ));
            }
        }
        // Certificate files hold certificates, found now rather than at
        // the first handshake.
        for (flag, path) in [
            ("--tls-cert", &self.tls.tls_cert),
            ("--tls-client-ca", &self.tls.tls_client_ca),
            ("--tls-ca", &self.tls.tls_ca),
        ] {
            if let Some(path) = path {
                crate::tls::read_certificates(flag, path)?;
            }
        }
        Ok(())
    }
}
