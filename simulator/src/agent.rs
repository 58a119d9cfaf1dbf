//! Agent mode: the simulator as the node fleet of a real cluster, as KWOK
//! does. Against any API server it registers simulated nodes, binds pods
//! no scheduler has placed, and drives each pod's status through the same
//! lifecycle as in the in-memory cluster (start-up delay from the version's
//! profile, then Running, then Ready).
//!
//! Pods being deleted are removed at once, as a kubelet does once their
//! containers stop. Each node's Lease in `kube-node-lease` is renewed every
//! [`LEASE_RENEW`], as a kubelet's heartbeat is. A node's `not-ready`
//! taint is taken off once it reports Ready, as the node lifecycle
//! controller does, and pods are bound only to nodes their node selector,
//! required node affinity and tolerations allow (see
//! [`crate::cluster::placement`]), so a DaemonSet's pods land on the node
//! its controller made them for.
//!
//! [`traffic`] adds the in-memory cluster's traffic and metrics: the
//! cluster's routing objects and pods are mirrored into a local store (see
//! [`crate::mirror`]) and the same engine splits the load over its pods.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, reflector, watcher},
};
use serde_json::json;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::{
    api::time::rfc3339,
    cluster::{
        kubelet::node,
        placement::{NodeFacts, Placement},
        profile::{Profiles, Rng},
    },
};

/// How the agent behaves.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Nodes to register.
    pub nodes: u32,
    /// Pods each takes.
    pub capacity: u32,
    /// Version behaviour, by image.
    pub profiles: Profiles,
    /// Seed of the start-up delays.
    pub seed: u64,
}

/// Registers the nodes and serves their pods until `stop`.
///
/// # Errors
/// A node that cannot be registered.
pub async fn run(
    client: Client,
    options: AgentOptions,
    stop: CancellationToken,
) -> Result<(), kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let names: Vec<String> = (0..options.nodes)
        .map(|i| format!("sluice-node-{i}"))
        .collect();
    for name in &names {
        let object: Node = serde_json::from_value(node(name, options.capacity))
            .map_err(kube::Error::SerdeError)?;
        match nodes.create(&PostParams::default(), &object).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e),
        }
        // Status is written through its own subresource.
        let status = node(name, options.capacity)["status"].clone();
        nodes
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await?;
    }
    for name in &names {
        ready_untainted(&nodes, name).await?;
    }
    // The nodes' labels and taints, for placing pods as kube-scheduler
    // would.
    let (facts, writer) = reflector::store();
    let node_watch = reflector::reflector(
        writer,
        watcher(
            nodes.clone(),
            watcher::Config::default().labels("type=sluice-simulated"),
        ),
    )
    .applied_objects();
    let watching = stop.clone();
    tokio::spawn(async move {
        futures::pin_mut!(node_watch);
        loop {
            tokio::select! {
                () = watching.cancelled() => return,
                next = node_watch.try_next() => if let Ok(None) = next { return },
            }
        }
    });
    tokio::spawn(keep_leases(client.clone(), names.clone(), stop.clone()));
    let pods: Api<Pod> = Api::all(client.clone());
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let rng = Arc::new(Mutex::new(Rng::new(options.seed)));
    let load = Arc::new(Mutex::new(Load {
        per_node: vec![0u32; names.len()],
        placed: HashMap::new(),
    }));
    let events = watcher(pods, watcher::Config::default());
    futures::pin_mut!(events);
    loop {
        let event = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            next = events.try_next() => match next {
                Ok(Some(event)) => event,
                Ok(None) => return Ok(()),
                Err(error) => {
                    tracing::warn!(%error, "agent watch failed; it restarts");
                    continue;
                }
            },
        };
        let pod = match event {
            watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => pod,
            watcher::Event::Delete(pod) => {
                // Its room on the node is free again, as a scheduler sees
                // it once the pod is gone.
                let uid = pod.uid().unwrap_or_default();
                load.lock().await.free(&uid);
                seen.lock().await.remove(&uid);
                continue;
            }
            watcher::Event::Init | watcher::Event::InitDone => continue,
        };
        if pod.metadata.deletion_timestamp.is_some() {
            // As a kubelet would once its containers stopped: the pod goes.
            let on_ours = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_ref())
                .is_some_and(|n| names.contains(n));
            if on_ours {
                let api: Api<Pod> =
                    Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
                let name = pod.name_any();
                tokio::spawn(async move {
                    let now = DeleteParams {
                        grace_period_seconds: Some(0),
                        ..DeleteParams::default()
                    };
                    if let Err(error) = api.delete(&name, &now).await {
                        tracing::debug!(%error, pod = %name, "finishing a pod's deletion failed");
                    }
                });
            }
            continue;
        }
        // By uid: a StatefulSet's replacement pod has its predecessor's name.
        let key = pod.uid().unwrap_or_default();
        if !seen.lock().await.insert(key) {
            continue;
        }
        let (client, names, options, rng, load, facts) = (
            client.clone(),
            names.clone(),
            options.clone(),
            rng.clone(),
            load.clone(),
            facts.clone(),
        );
        tokio::spawn(async move {
            // A failed write (a conflict, a restarting API server) is tried
            // again; a pod is never left half-started.
            for attempt in 1..=5u32 {
                match serve_pod(
                    client.clone(),
                    pod.clone(),
                    (&names, &facts),
                    &options,
                    rng.clone(),
                    load.clone(),
                )
                .await
                {
                    Ok(()) => return,
                    Err(error) => {
                        tracing::warn!(%error, attempt, pod = %pod.name_any(), "agent could not serve a pod; retrying");
                        tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                    }
                }
            }
        });
    }
}

/// Takes the `node.kubernetes.io/not-ready` taint off node `name` once it
/// reports Ready, as the node lifecycle controller does (the taint
/// admission puts it on every new node; a control plane without that
/// controller would leave it, and DaemonSets and most pods would never be
/// placed there).
async fn ready_untainted(nodes: &Api<Node>, name: &str) -> Result<(), kube::Error> {
    let node = nodes.get(name).await?;
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    if !taints.iter().any(|t| t.key == NOT_READY_TAINT) {
        return Ok(());
    }
    let kept: Vec<_> = taints
        .into_iter()
        .filter(|t| t.key != NOT_READY_TAINT)
        .collect();
    // Conditional on the version read, so a taint added meanwhile is kept.
    let patch =
        json!({"metadata": {"resourceVersion": node.resource_version()}, "spec": {"taints": kept}});
    nodes
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    Ok(())
}

/// How many pods the agent placed on each of its nodes, and where, so a
/// pod's room is given back when it goes.
struct Load {
    per_node: Vec<u32>,
    /// Pod uid to node index.
    placed: HashMap<String, usize>,
}

impl Load {
    fn place(&mut self, uid: String, node: usize) {
        if let Some(before) = self.placed.insert(uid, node) {
            self.per_node[before] = self.per_node[before].saturating_sub(1);
        }
        self.per_node[node] += 1;
    }

    fn free(&mut self, uid: &str) {
        if let Some(node) = self.placed.remove(uid) {
            self.per_node[node] = self.per_node[node].saturating_sub(1);
        }
    }
}

/// The taint new nodes carry until their controller sees them Ready.
const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";

/// The first of `candidates` (node indexes, best first) a pod with
/// `placement` may run on, by the nodes' labels and taints in `facts`.
fn placeable(
    candidates: impl Iterator<Item = usize>,
    names: &[String],
    facts: &reflector::Store<Node>,
    placement: &Placement,
) -> Option<usize> {
    candidates.into_iter().find(|i| {
        facts
            .get(&reflector::ObjectRef::new(&names[*i]))
            .is_none_or(|node| {
                serde_json::to_value(&*node)
                    .is_ok_and(|v| placement.fits(&names[*i], &NodeFacts::of(&v)))
            })
    })
}

async fn serve_pod(
    client: Client,
    pod: Pod,
    (names, facts): (&[String], &reflector::Store<Node>),
    options: &AgentOptions,
    rng: Arc<Mutex<Rng>>,
    load: Arc<Mutex<Load>>,
) -> Result<(), kube::Error> {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let api: Api<Pod> = Api::namespaced(client, &ns);
    // Read it again: an earlier attempt may have bound it already.
    let pod = api.get(&name).await?;
    let spec = pod.spec.clone().unwrap_or_default();
    let node_name = match &spec.node_name {
        Some(n) if names.contains(n) => n.clone(),
        Some(_) => return Ok(()),
        None => {
            let placement = Placement::of_spec(
                &serde_json::to_value(&spec.node_selector).unwrap_or_default(),
                &serde_json::to_value(&spec.affinity).unwrap_or_default(),
                &serde_json::to_value(&spec.tolerations).unwrap_or_default(),
            );
            let chosen = {
                let mut load = load.lock().await;
                let per_node = &load.per_node;
                let mut by_load: Vec<usize> = (0..per_node.len())
                    .filter(|i| per_node[*i] < options.capacity)
                    .collect();
                by_load.sort_by_key(|i| (per_node[*i], *i));
                let Some(i) = placeable(by_load.into_iter(), names, facts, &placement) else {
                    tracing::info!(pod = %name, namespace = %ns, "no simulated node fits the pod (room, selector, affinity, taints); it stays Pending");
                    return Ok(());
                };
                load.place(pod.uid().unwrap_or_default(), i);
                names[i].clone()
            };
            let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name}, "target": {"apiVersion": "v1", "kind": "Node", "name": chosen}});
            api.create_subresource::<serde_json::Value, serde_json::Value>(
                "binding",
                &name,
                &PostParams::default(),
                &binding,
            )
            .await?;
            chosen
        }
    };
    let image = spec
        .containers
        .first()
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    let profile = options.profiles.of(&image).clone();
    let delay = profile.start_delay(&mut *rng.lock().await);
    tokio::time::sleep(delay).await;
    let now = rfc3339(std::time::SystemTime::now());
    let statuses = |ready: bool| -> Vec<serde_json::Value> {
        spec.containers
            .iter()
            .map(|c| json!({"name": c.name, "image": c.image, "imageID": format!("sluice://{}", c.image.clone().unwrap_or_default()), "ready": ready, "started": true, "restartCount": 0, "state": {"running": {"startedAt": now}}}))
            .collect()
    };
    let conditions = |ready: &str| {
        json!([
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": ready, "lastTransitionTime": now},
            {"type": "Ready", "status": ready, "lastTransitionTime": now},
        ])
    };
    let ip = format!(
        "10.244.{}.{}",
        name.len() % 250,
        name.bytes().map(u32::from).sum::<u32>() % 250 + 1
    );
    let running = json!({"status": {"phase": "Running", "hostIP": "10.0.0.1", "podIP": ip, "podIPs": [{"ip": ip}], "startTime": now, "conditions": conditions("False"), "containerStatuses": statuses(false)}});
    api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(running))
        .await?;
    if profile.crash_loop || profile.never_ready {
        return Ok(());
    }
    tokio::time::sleep(profile.ready_delay()).await;
    let ready =
        json!({"status": {"conditions": conditions("True"), "containerStatuses": statuses(true)}});
    api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(ready))
        .await?;
    tracing::debug!(pod = %name, node = %node_name, "pod ready");
    Ok(())
}

/// How often a node's Lease is renewed (a kubelet's default).
pub const LEASE_RENEW: Duration = Duration::from_secs(10);
/// How long a node's claim lasts without renewal (a kubelet's default).
const LEASE_SECONDS: i32 = 40;

/// Renews each node's Lease until `stop`, as a kubelet's heartbeat does, so
/// the node lifecycle controller sees the nodes alive.
async fn keep_leases(client: Client, nodes: Vec<String>, stop: CancellationToken) {
    use k8s_openapi::api::coordination::v1::Lease;
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    loop {
        let now = crate::api::time::rfc3339_micro(std::time::SystemTime::now());
        for node in &nodes {
            let lease = json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": node, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": node, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": now},
            });
            let params = PatchParams::apply("sluice-sim-agent").force();
            if let Err(error) = leases.patch(node, &params, &Patch::Apply(lease)).await {
                tracing::debug!(%error, %node, "renewing a node lease failed; the next beat retries");
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(LEASE_RENEW) => {}
        }
    }
}

/// Traffic and metrics for the cluster `client` reaches: its pods and
/// routing objects mirrored into a local store, `loads` split over them as
/// its routers would, each pod's counters driven by its version's profile.
/// Serve the result with [`crate::metrics::http::router`].
///
/// # Errors
/// The local store refusing the routers' CRDs (a build defect).
pub async fn traffic(
    client: Client,
    profiles: Profiles,
    loads: Vec<crate::metrics::traffic::LoadProfile>,
    stop: CancellationToken,
) -> Result<crate::metrics::Metrics, crate::api::status::ApiError> {
    let api = crate::api::ApiServer::new(crate::api::Options::default());
    api.install_upstream_crds()?;
    crate::mirror::start(client, api.store().clone(), stop.clone()).await;
    let metrics = crate::metrics::Metrics::new(
        api.store().clone(),
        Arc::new(std::sync::RwLock::new(profiles)),
        api.clock(),
    );
    metrics.set_loads(loads);
    tokio::spawn(crate::metrics::run(
        metrics.clone(),
        Duration::from_secs(1),
        stop,
    ));
    Ok(metrics)
}
