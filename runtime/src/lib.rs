//! How every Sluice server starts, secures, observes and stops.
//!
//! The four services (planner, gate, simulator, executor) differ in what they
//! do, not in how they run. This crate owns the part they share: the transport
//! edge. It knows nothing of rollouts.
//!
//! # Layout
//! - [`config`]: the flags and `SLUICE_*` variables every server takes.
//! - [`tls`]: certificate files to tonic TLS settings, server and client side.
//! - [`auth`]: bearer tokens mapped to the namespaces a caller may act on.
//! - [`telemetry`]: tracing set-up (pretty or JSON, env filter).
//! - [`metrics`]: per-RPC counters and latencies, as a tower layer.
//! - [`health`]: gRPC health driven by dependency probes.
//! - [`admin`]: the admin HTTP server (`/metrics`, `/healthz`, `/readyz`).
//! - [`http`]: plain HTTP servers with the same TLS as the gRPC ones.
//! - [`server`]: binds, serves, drains: [`server::GrpcServer`].
//! - [`shutdown`]: SIGTERM / SIGINT as a future.
//! - [`cli`]: the tiny `main` every service binary shares.

pub mod admin;
pub mod auth;
pub mod cli;
pub mod config;
pub mod health;
pub mod http;
pub mod metrics;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod tls;

mod error;

pub use error::Error;

/// An error and its causes on one line: `outer: inner: root`.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}
