//! The metrics gate: judges each batch of a release from Prometheus data.
//!
//! # Layout
//! - [`config`]: flags and environment.
//! - [`service`]: the `sluice.v1.MetricsGate` gRPC service and [`serve`].

pub mod config;
pub mod service;

pub use config::Config;
pub use service::serve;
