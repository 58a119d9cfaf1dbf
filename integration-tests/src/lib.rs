//! Helpers for black-box tests: spawn Sluice's binaries as a user would,
//! learn the addresses they bound from their logs, and make certificates.
//!
//! # Layout
//! - [`process`]: a running service binary, its log and its exit.
//! - [`controlplane`]: a real Kubernetes control plane on loopback.
//! - [`fake`]: stand-ins for edges not under test.
//! - [`helm`]: the pinned Helm, for the chart's tests.
//! - [`pki`]: a throwaway CA and certificates for TLS tests.
//! - [`prometheus`]: a real Prometheus and an exporter a test controls.
//! - [`python`]: independent clients written in Python (grpcio).

// Test support: a failed set-up step should stop the test with its message.
#![allow(clippy::expect_used, clippy::unwrap_used)]

pub mod controlplane;
pub mod fake;
pub mod helm;
pub mod pki;
pub mod process;
pub mod prometheus;
pub mod python;
