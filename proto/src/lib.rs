//! The `sluice.v1` gRPC contracts and their generated code.
//!
//! # Layout
//! - `proto/sluice/v1/*.proto`: the contracts, one file per service
//!   (`rollouts`, `planner`, `metrics_gate`, `simulator`) plus the shared
//!   messages (`strategy`, `analysis`, `rollout`).
//! - [`v1`]: the generated messages, and with the `grpc` feature the
//!   clients (`*_client`) and servers (`*_server`). Without it the crate
//!   needs no tonic, so code with no I/O (`sluice-model`) can use the
//!   messages.
//! - [`FILE_DESCRIPTOR_SET`]: the compiled descriptors, for server reflection.
//! - [`METRIC_TEMPLATES`]: the values `Metric.template` may take.
//!
//! This crate has no behaviour: it knows what the services say, not what they
//! do.

/// The `sluice.v1` package.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/sluice.v1.rs"));
}

/// The encoded `FileDescriptorSet` of every `sluice.v1` file and its imports.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/sluice_descriptor.bin"));

/// The built-in query templates a `Metric.template` may name. They are part
/// of the contract, so they live here: the executor refuses other names at
/// StartRollout without depending on the gate, and the gate's tests check
/// that it has a query for each.
pub const METRIC_TEMPLATES: [&str; 3] = [
    "request-success-rate",
    "request-error-rate",
    "request-latency-p99",
];

/// Fully qualified names of the services, as reflection and health report them.
pub mod services {
    /// The public rollouts API.
    pub const ROLLOUTS: &str = "sluice.v1.Rollouts";
    /// The planner.
    pub const PLANNER: &str = "sluice.v1.Planner";
    /// The metrics gate.
    pub const METRICS_GATE: &str = "sluice.v1.MetricsGate";
    /// The simulator's control API.
    pub const SIMULATOR: &str = "sluice.v1.Simulator";
}
