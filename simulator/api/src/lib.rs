//! The simulator's Kubernetes API server: HTTP/JSON on loopback, or
//! in-process as a tower service so `kube::Client::new(service, ns)` needs
//! no socket.
//!
//! # Layout
//! - [`store`]: objects, resourceVersions, watches, deletion semantics.
//! - [`resources`]: built-in kinds and those CRDs add.
//! - [`http`]: routing requests to verbs; lists, watches, subresources.
//! - [`discovery`], [`openapi`], [`table`]: what kubectl asks for besides objects.
//! - [`patch`]: merge, JSON, strategic merge and apply patches.
//! - [`selector`]: label and field selectors.
//! - [`splice`]: status writes that copy the rest of an object's JSON as it is.
//! - [`status`]: errors as `metav1.Status`.
//! - [`faults`]: injected errors, latency and dropped watches.
//! - [`admission`]: mutating and validating admission webhooks, called
//!   over HTTPS as kube-apiserver calls them.

mod admission;
mod defaults;
pub mod discovery;
mod events;
pub mod faults;
mod http;
mod limits;
mod managed;
mod names;
mod openapi;
mod patch;
mod protobuf;
pub mod quota;
pub mod resources;
mod schema;
pub mod selector;
mod serviceaccounts;
pub mod splice;
pub mod status;
pub mod store;
mod table;
pub mod time;
mod validation;

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

pub use http::ApiServer;

/// The CRDs installed at start: the upstream ones the project integrates
/// with (see `crds/README.md`) and Sluice's own Rollout.
pub const UPSTREAM_CRDS: [(&str, &str); 8] = [
    (
        "rollouts",
        include_str!("../../../deploy/crds/rollouts.yaml"),
    ),
    (
        "gatewayclasses",
        include_str!("../../crds/gateway-api-v1.6.1/gatewayclasses.yaml"),
    ),
    (
        "gateways",
        include_str!("../../crds/gateway-api-v1.6.1/gateways.yaml"),
    ),
    (
        "grpcroutes",
        include_str!("../../crds/gateway-api-v1.6.1/grpcroutes.yaml"),
    ),
    (
        "httproutes",
        include_str!("../../crds/gateway-api-v1.6.1/httproutes.yaml"),
    ),
    (
        "referencegrants",
        include_str!("../../crds/gateway-api-v1.6.1/referencegrants.yaml"),
    ),
    (
        "virtualservices",
        include_str!("../../crds/istio-1.30.3/virtualservices.yaml"),
    ),
    (
        "destinationrules",
        include_str!("../../crds/istio-1.30.3/destinationrules.yaml"),
    ),
];

/// How the API server behaves.
#[derive(Clone)]
pub struct Options {
    /// Time between watch bookmarks.
    pub bookmark_interval: Duration,
    /// Seed for fault draws.
    pub seed: u64,
    /// Events kept per resource for watches that resume.
    pub history: usize,
    /// The cluster's clock (timestamps, ages).
    pub clock: Arc<dyn Fn() -> SystemTime + Send + Sync>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("bookmark_interval", &self.bookmark_interval)
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

impl Options {
    /// Options whose clock follows tokio's (virtual in paused-time tests and
    /// scenarios) `speed` times as fast, starting at the current wall-clock
    /// time.
    pub fn tokio_clock(speed: f64) -> Self {
        let (wall, start) = (SystemTime::now(), tokio::time::Instant::now());
        Self {
            clock: Arc::new(move || wall + start.elapsed().mul_f64(speed)),
            ..Self::default()
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            bookmark_interval: Duration::from_secs(60),
            seed: 1,
            history: store::HISTORY,
            clock: Arc::new(SystemTime::now),
        }
    }
}
