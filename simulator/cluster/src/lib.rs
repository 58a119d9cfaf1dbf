//! The simulated cluster's behaviour: the controllers a control plane runs
//! (Deployment, ReplicaSet, StatefulSet, DaemonSet, EndpointSlice), a
//! scheduler, and a kubelet per simulated node, all driving the in-memory
//! API server with Kubernetes' own semantics.
//!
//! # Layout
//! - [`engine`]: the work queue, timers and watch routing.
//! - [`deployment`]: the Deployment controller.
//! - [`workloads`]: ReplicaSets, and what the workload controllers share.
//! - [`views`]: what the Deployment and ReplicaSet controllers read of
//!   their objects, decoded as the store writes them.
//! - [`statefulset`]: StatefulSets and DaemonSets.
//! - [`kubelet`]: nodes, scheduling and the pod lifecycle.
//! - [`pod`]: what the engines know of a pod, decoded by its writer.
//! - [`placement`]: which nodes a pod may run on (selectors, affinity,
//!   taints).
//! - [`endpoints`]: the EndpointSlice controller.
//! - [`profile`]: how each version behaves, and seeded randomness.

mod deployment;
mod endpoints;
pub mod engine;
pub mod kubelet;
pub mod namespaces;
pub mod placement;
mod pod;
pub mod profile;
mod quotas;
mod statefulset;
mod views;
mod workloads;

use std::sync::{Arc, RwLock};

use tokio_util::sync::CancellationToken;

use engine::{Ctx, Role, Share, Work};
use profile::Profiles;
use sluice_sim_api::ApiServer;

/// Kubelet engines by default: with the control plane's, one per core of
/// a two-core machine, so that the pod lifecycles, the bulk of the work,
/// keep both busy once the control plane has made the pods.
pub const DEFAULT_KUBELET_SHARES: u32 = 2;

/// How the cluster is made.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Seed for every random draw.
    pub seed: u64,
    /// Simulated nodes to register.
    pub nodes: u32,
    /// Pods each node takes.
    pub node_capacity: u32,
    /// How much faster than real time the cluster's clock runs: the
    /// controllers' own waits (progress deadlines, crash-loop back-off)
    /// are divided by it, as the version profiles' delays are.
    pub speed: f64,
    /// Version behaviour.
    pub profiles: Profiles,
    /// Engines the nodes' kubelets are split over (the first also runs
    /// the scheduler): one per core the simulator may use.
    pub kubelet_shares: u32,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            seed: 1,
            nodes: 3,
            node_capacity: kubelet::DEFAULT_CAPACITY,
            speed: 1.0,
            profiles: Profiles::default(),
            kubelet_shares: DEFAULT_KUBELET_SHARES,
        }
    }
}

fn reconcile(ctx: &mut Ctx, work: &Work) {
    match work {
        Work::Deployment(ns, name) => deployment::reconcile_deployment(ctx, ns, name),
        Work::ReplicaSet(ns, name) => workloads::reconcile_replicaset(ctx, ns, name),
        Work::StatefulSet(ns, name) => statefulset::reconcile_statefulset(ctx, ns, name),
        Work::DaemonSet(ns, name) => statefulset::reconcile_daemonset(ctx, ns, name),
        Work::Pod(ns, name) => kubelet::reconcile_pod(ctx, ns, name),
        Work::Endpoints(ns, name) => endpoints::reconcile_endpoints(ctx, ns, name),
        Work::Schedule => kubelet::schedule_pending(ctx),
        Work::ExpireEvents => expire_events(ctx),
        Work::Namespace(name) => namespaces::reconcile_namespace(ctx, name),
        Work::Aggregate => namespaces::aggregate_cluster_roles(ctx),
        Work::Quotas(ns) => quotas::reconcile_quotas(ctx, ns),
        Work::QuotaResync(ns) => quotas::resync(ctx, ns),
    }
}

/// Removes the Events last written more than [`engine::EVENT_TTL`] ago,
/// as kube-apiserver lets them expire (its lease on each write), and
/// looks again after [`engine::EVENT_SWEEP`]. Each sweep notes the
/// store's resource version; an Event whose version is at or below one
/// noted an hour ago was last written before then. Until the cluster is
/// an hour old no Event is read at all.
fn expire_events(ctx: &mut Ctx) {
    // Repeats after a sweep start a new Event, so the table of recorded
    // ones never outgrows an hour of distinct Events.
    ctx.recorded.clear();
    let now = ctx.now();
    ctx.event_marks
        .push_back((now, ctx.store.resource_version()));
    let cutoff = now
        .checked_sub(engine::EVENT_TTL)
        .unwrap_or(std::time::UNIX_EPOCH);
    // The newest mark at or before the cutoff; older ones are not needed.
    while ctx
        .event_marks
        .get(1)
        .is_some_and(|(taken, _)| *taken <= cutoff)
    {
        ctx.event_marks.pop_front();
    }
    let expired_below = ctx
        .event_marks
        .front()
        .filter(|(taken, _)| *taken <= cutoff)
        .map(|(_, version)| *version);
    if let Some(version) = expired_below {
        expire_written_before(ctx, version);
    }
    let sweep = ctx.real(engine::EVENT_SWEEP);
    ctx.after(sweep, Work::ExpireEvents);
}

/// Deletes the Events whose resource version is at most `version`.
fn expire_written_before(ctx: &mut Ctx, version: u64) {
    let res = ctx.kinds.events.clone();
    let Ok(page) = ctx.store.list(
        &res,
        None,
        &Default::default(),
        &Default::default(),
        None,
        None,
    ) else {
        return;
    };
    // Only the metadata is read; the rest of each Event is skipped.
    #[derive(serde::Deserialize)]
    struct Meta {
        #[serde(default)]
        namespace: String,
        name: String,
        #[serde(rename = "resourceVersion")]
        resource_version: String,
    }
    #[derive(serde::Deserialize)]
    struct Event {
        metadata: Meta,
    }
    for bytes in page.items {
        let Ok(Event { metadata: meta }) = serde_json::from_slice::<Event>(&bytes) else {
            continue;
        };
        if meta.resource_version.parse::<u64>().unwrap_or(0) <= version {
            let _ = ctx
                .store
                .delete(&res, &meta.namespace, &meta.name, &Default::default());
        }
    }
}

/// A running simulated cluster.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// The API server the controllers drive.
    pub api: ApiServer,
    /// Version behaviour, changeable while running.
    pub profiles: Arc<RwLock<Profiles>>,
}

impl Cluster {
    /// Registers the nodes and starts the controllers on the current tokio
    /// runtime; they stop when `stop` is cancelled.
    ///
    /// # Errors
    /// A node that cannot be created.
    pub fn start(
        api: ApiServer,
        options: ClusterOptions,
        stop: CancellationToken,
    ) -> Result<Self, sluice_sim_api::status::ApiError> {
        let nodes = api
            .store()
            .resource("", "nodes")
            .ok_or_else(|| sluice_sim_api::status::ApiError::internal("no nodes resource"))?;
        for i in 0..options.nodes {
            let name = format!("sim-node-{i}");
            match api
                .store()
                .create(&nodes, "", kubelet::node(&name, options.node_capacity))
            {
                Ok(_) => {}
                Err(e) if e.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
        // The engines read every pod event, and the workload controllers
        // their objects again and again: the writer decodes each once.
        let store = api.store();
        store.decode_with("", "pods", Arc::new(pod::PodDecoder));
        let deployments = views::ViewDecoder::<views::DeploymentView>::default();
        let replicasets = views::ViewDecoder::<views::ReplicaSetView>::default();
        store.decode_with("apps", "deployments", Arc::new(deployments));
        store.decode_with("apps", "replicasets", Arc::new(replicasets));
        let profiles = Arc::new(RwLock::new(options.profiles));
        let shares = options.kubelet_shares.max(1);
        let kubelets = (0..shares).map(|index| {
            let share = Share { index, of: shares };
            (
                Role::Nodes(share),
                tracing::info_span!("kubelets", share = index),
            )
        });
        let engines = std::iter::once((Role::ControlPlane, tracing::info_span!("controllers")))
            .chain(kubelets);
        for (role, span) in engines {
            let task = engine::run(
                api.clone(),
                profiles.clone(),
                options.seed,
                options.speed,
                role,
                reconcile,
                stop.clone(),
            );
            tokio::spawn(tracing::Instrument::instrument(task, span));
        }
        Ok(Self { api, profiles })
    }
}
