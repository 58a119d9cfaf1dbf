//! The metrics gate: judges each batch of a release from Prometheus data,
//! and is never fooled by missing data: an empty result or NaN is
//! inconclusive, a query that fails is an error, and neither is a pass.
//!
//! # Layout
//! - [`spec`]: an analysis, validated from its `sluice.v1` message.
//! - [`template`]: query placeholders and the built-in SLI queries.
//! - [`judge`]: the semantics (conditions, limits, verdicts), pure; the
//!   module doc states every rule exactly.
//! - [`prometheus`]: the Prometheus HTTP API client.
//! - [`measure`]: one measurement with its evidence.
//! - [`runner`]: an analysis over time, on tokio's clock.
//! - [`service`]: the `sluice.v1.MetricsGate` gRPC service and [`serve`].

pub mod config;
pub mod judge;
pub mod measure;
pub mod prometheus;
pub mod runner;
pub mod service;
pub mod spec;
pub mod template;

pub use config::Config;
pub use service::serve;
