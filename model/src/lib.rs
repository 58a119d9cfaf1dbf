//! Sluice's model: what a release is, with no I/O. No Kubernetes client, no
//! gRPC transport, no async runtime and no clock: every function here is a
//! pure function of its arguments, so the planner, the executor and the CLI
//! share one copy of it and it is tested without a runtime.
//!
//! # Layout
//! - The strategy and its plan:
//!   - [`spec`]: the strategy as users write it (YAML, Rollout, proto), with
//!     examples.
//!   - [`load`]: a strategy from YAML or JSON text, type errors named by
//!     field path, line and column.
//!   - [`quantity`]: counts, percents and the rounding rules.
//!   - [`validate`]: every problem with its field path; warnings.
//!   - [`plan`](mod@plan): batches, surge cost, re-planning.
//!   - [`convert`]: strategies and plans to and from the `sluice.v1`
//!     messages.
//! - The Rollout and its release:
//!   - [`crd`]: the Rollout custom resource (and its CRD manifest).
//!   - [`rollout_convert`]: the Rollout to and from the `sluice.v1`
//!     messages.
//!   - [`keys`]: annotation and label keys; [`digest`]: short digests of
//!     specs and pod templates.
//!   - [`machine`]: the release state machine and the conditions.
//! - [`duration`]: durations as text (`5m`, `1h30m`).

pub mod convert;
pub mod crd;
pub mod digest;
pub mod duration;
pub mod keys;
pub mod load;
pub mod machine;
pub mod plan;
pub mod quantity;
pub mod rollout_convert;
pub mod spec;
pub mod validate;
