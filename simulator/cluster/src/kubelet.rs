//! Nodes, scheduling and the pod lifecycle: what the scheduler and each
//! node's kubelet would do.
//!
//! A pod is bound to the ready node with the fewest pods that has room;
//! then it becomes Running after a start-up delay drawn from its version's
//! profile, and Ready after the profile's readiness delay. A crash-looping
//! version exits two seconds after each start and is restarted with the
//! kubelet's back-off (10 s doubling to 5 min), counting restarts; a
//! never-ready version runs without passing its readiness probe. Pods of a
//! node that disappears are deleted (their controllers replace them).
//! These waits are on the cluster's clock: at a scenario speed of 10 a
//! 10 s back-off takes one second of real time.
//!
//! The kubelet records the Events a real one does about each container:
//! `Pulled`, `Created` and `Started` at every start, `BackOff` (Warning)
//! when a crashed container waits to restart, `Killing` when a pod is
//! asked to stop.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::Duration,
};

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::{
    engine::{Ctx, Involved, Role, Work},
    placement::{Demand, NodeFacts, Placement},
    profile::Profile,
};
use sluice_sim_api::{
    store::{DeleteOptions, Pair},
    time::rfc3339,
};

/// Pods a node takes when it does not say.
pub const DEFAULT_CAPACITY: u32 = 110;
/// The `source.component` of the kubelet's Events.
const KUBELET: &str = "kubelet";

/// Time a crash-looping container runs before it exits.
const CRASH_AFTER: Duration = Duration::from_secs(2);

/// What the kubelet knows of one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// Waiting to start until the instant.
    Starting(Instant),
    /// Running, ready at the instant (or never).
    Running(Option<Instant>),
    /// Ready.
    Ready,
    /// Crashed; restarts at the instant.
    BackOff(Instant),
    /// Asked to stop; its containers have exited at the instant.
    Stopping(Instant),
}

/// The node and pod bookkeeping.
#[derive(Debug, Default)]
pub struct Kubelet {
    /// Node name -> (ready, capacity, pods bound).
    pub nodes: BTreeMap<String, (bool, u32, u32)>,
    /// Node name -> its labels and the taints that keep pods off.
    pub facts: HashMap<String, NodeFacts>,
    /// Nodes with such taints: while none has, a pod that selects no
    /// labels goes to the first free node without a look at its facts.
    tainted: usize,
    /// Pod key -> node.
    pub bound: HashMap<(String, String), String>,
    /// Pod key -> lifecycle stage.
    pub stages: HashMap<(String, String), Stage>,
    /// Ready nodes with room, by (pods bound, name): the scheduler takes
    /// the first, so choosing a node costs a lookup, not a scan.
    free: BTreeSet<(u32, String)>,
    /// Pods no node had room for, in the order they were found so: the
    /// scheduler tries the first again when a pod leaves a node.
    waiting: BTreeMap<u64, (String, String)>,
    /// Where each waiting pod is in `waiting`.
    waiting_at: HashMap<(String, String), u64>,
    /// The next place in `waiting`.
    waiting_seq: u64,
    /// What the pods bound to each node request (only nodes with pods
    /// that request something).
    used: HashMap<String, Demand>,
    /// What each bound pod that requests something requests.
    demands: HashMap<(String, String), Demand>,
}

impl Kubelet {
    fn unindex(&mut self, name: &str) {
        if let Some((_, _, pods)) = self.nodes.get(name) {
            self.free.remove(&(*pods, name.to_owned()));
        }
    }

    fn index(&mut self, name: &str) {
        if let Some((ready, capacity, pods)) = self.nodes.get(name)
            && *ready
            && pods < capacity
        {
            self.free.insert((*pods, name.to_owned()));
        }
    }

    /// Changes the pods bound to `name` by `delta`.
    fn count(&mut self, name: &str, delta: i32) {
        self.unindex(name);
        if let Some(n) = self.nodes.get_mut(name) {
            n.2 = n.2.saturating_add_signed(delta);
        }
        self.index(name);
    }

    /// The ready node with room and the fewest pods (ties by name).
    pub fn best_node(&self) -> Option<String> {
        self.free.first().map(|(_, name)| name.clone())
    }

    /// The ready node with room and the fewest pods among those a pod
    /// with `placement` may run on.
    pub fn node_for(&self, placement: &Placement) -> Option<String> {
        let demand = placement.demand;
        if self.tainted == 0 && !placement.selects() && demand.is_zero() {
            return self.best_node();
        }
        self.free
            .iter()
            .find(|(_, name)| {
                self.facts.get(name).is_none_or(|facts| {
                    placement.fits(name, facts) && self.short_of(name, facts, demand).is_none()
                })
            })
            .map(|(_, name)| name.clone())
    }

    /// What node `name` lacks to take a pod requesting `demand`: `cpu`,
    /// `memory`, or nothing (NodeResourcesFit).
    fn short_of(&self, name: &str, facts: &NodeFacts, demand: Demand) -> Option<&'static str> {
        if demand.is_zero() {
            return None;
        }
        let left = facts
            .allocatable
            .minus(self.used.get(name).copied().unwrap_or_default());
        if demand.cpu_milli > left.cpu_milli {
            Some("cpu")
        } else if demand.memory > left.memory {
            Some("memory")
        } else {
            None
        }
    }

    /// Why no ready node takes a pod that requests `demand`, as the
    /// scheduler counts it (`3 Insufficient cpu`), if that is why.
    pub fn insufficient(&self, placement: &Placement) -> Option<String> {
        let mut short: BTreeMap<&str, usize> = BTreeMap::new();
        for (name, (ready, _, _)) in &self.nodes {
            let facts = self.facts.get(name);
            if !*ready || facts.is_some_and(|f| !placement.fits(name, f)) {
                continue;
            }
            if let Some(what) = facts.and_then(|f| self.short_of(name, f, placement.demand)) {
                *short.entry(what).or_default() += 1;
            }
        }
        (!short.is_empty()).then(|| {
            short
                .iter()
                .map(|(what, n)| format!("{n} Insufficient {what}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
    }

    /// The ready nodes a pod with `placement` may run on, room or not (a
    /// DaemonSet's).
    pub fn eligible(&self, placement: &Placement) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(name, (ready, _, _))| {
                *ready
                    && self
                        .facts
                        .get(*name)
                        .is_none_or(|facts| placement.fits(name, facts))
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    fn set_facts(&mut self, name: &str, facts: Option<NodeFacts>) {
        let old = match facts {
            Some(f) => {
                self.tainted += usize::from(!f.taints.is_empty());
                self.facts.insert(name.to_owned(), f)
            }
            None => self.facts.remove(name),
        };
        if old.is_some_and(|f| !f.taints.is_empty()) {
            self.tainted -= 1;
        }
    }

    /// Notes a pod no node had room for; true when it was not waiting yet.
    fn wait(&mut self, key: (String, String)) -> bool {
        if self.waiting_at.contains_key(&key) {
            return false;
        }
        self.waiting_seq += 1;
        self.waiting.insert(self.waiting_seq, key.clone());
        self.waiting_at.insert(key, self.waiting_seq);
        true
    }

    /// Forgets a waiting pod (bound or gone).
    fn unwait(&mut self, key: (&str, &str)) {
        if let Some(at) = self.waiting_at.remove(&key as &dyn Pair) {
            self.waiting.remove(&at);
        }
    }

    /// The pod that has waited longest for a node, taken off the list.
    pub fn next_waiting(&mut self) -> Option<(String, String)> {
        let (_, key) = self.waiting.pop_first()?;
        self.waiting_at.remove(&key);
        Some(key)
    }
}

/// A Node object with `capacity` pods.
pub fn node(name: &str, capacity: u32) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "type": "sluice-simulated"}},
        "spec": {},
        "status": {
            "capacity": {"pods": capacity.to_string(), "cpu": "16", "memory": "64Gi"},
            "allocatable": {"pods": capacity.to_string(), "cpu": "16", "memory": "64Gi"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "simulated kubelet is posting ready status"}],
            "nodeInfo": {"kubeletVersion": sluice_sim_api::discovery::git_version(), "containerRuntimeVersion": "sluice://1", "architecture": "amd64", "operatingSystem": "linux"}
        }
    })
}

/// Records a node's state from its object (or its removal).
pub fn observe_node(kubelet: &mut Kubelet, name: &str, object: Option<&Value>) {
    match object {
        Some(o) => {
            let ready = o["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|x| x["type"] == "Ready" && x["status"] == "True")
            });
            let capacity = o["status"]["allocatable"]["pods"]
                .as_str()
                .and_then(|p| p.parse().ok())
                .unwrap_or(DEFAULT_CAPACITY);
            kubelet.unindex(name);
            kubelet.set_facts(name, Some(NodeFacts::of(o)));
            let entry = kubelet
                .nodes
                .entry(name.to_owned())
                .or_insert((ready, capacity, 0));
            entry.0 = ready;
            entry.1 = capacity;
            kubelet.index(name);
        }
        None => {
            kubelet.unindex(name);
            kubelet.set_facts(name, None);
            kubelet.nodes.remove(name);
        }
    }
}

/// Records which node a pod is on, from a watch event; true when a pod
/// left a node, so a place came free on it.
pub fn observe_pod(
    kubelet: &mut Kubelet,
    key: (&str, &str),
    node: Option<&str>,
    deleted: bool,
    demand: Demand,
) -> bool {
    if deleted {
        kubelet.stages.remove(&key as &dyn Pair);
        kubelet.unwait(key);
        let Some(node) = kubelet.bound.remove(&key as &dyn Pair) else {
            return false;
        };
        if let Some(gone) = kubelet.demands.remove(&key as &dyn Pair)
            && let Some(used) = kubelet.used.get_mut(&node)
        {
            *used = used.minus(gone);
        }
        kubelet.count(&node, -1);
        return true;
    }
    if let Some(node) = node.filter(|n| !n.is_empty())
        && !kubelet.bound.contains_key(&key as &dyn Pair)
    {
        let key = (key.0.to_owned(), key.1.to_owned());
        if !demand.is_zero() {
            kubelet.demands.insert(key.clone(), demand);
            let used = kubelet.used.entry(node.to_owned()).or_default();
            *used = used.plus(demand);
        }
        kubelet.bound.insert(key, node.to_owned());
        kubelet.count(node, 1);
    }
    false
}

fn container_statuses(
    containers: &[(String, String)],
    ready: bool,
    state: &Value,
    restarts: i64,
) -> Value {
    Value::Array(
        containers
            .iter()
            .map(|(name, image)| {
                json!({
                    "name": name, "image": image, "imageID": format!("sluice://{image}"),
                    "ready": ready, "started": state.get("running").is_some(), "restartCount": restarts, "state": state,
                })
            })
            .collect(),
    )
}

fn conditions(now: &str, scheduled: bool, ready: bool) -> Value {
    let flag = |b: bool| if b { "True" } else { "False" };
    json!([
        {"type": "PodScheduled", "status": flag(scheduled), "lastTransitionTime": now},
        {"type": "Initialized", "status": "True", "lastTransitionTime": now},
        {"type": "ContainersReady", "status": flag(ready), "lastTransitionTime": now},
        {"type": "Ready", "status": flag(ready), "lastTransitionTime": now},
    ])
}

/// The scheduler's name on its Events.
const SCHEDULER: &str = "default-scheduler";

/// Binds one pending pod, if a node has room; the node it was bound to.
fn schedule(ctx: &mut Ctx, ns: &str, pod: &crate::pod::PodSummary) -> Option<String> {
    let (name, placement) = (pod.name.as_str(), &pod.placement);
    let choice = ctx.kubelet.node_for(placement);
    let pods = ctx.kinds.pods.clone();
    let now = rfc3339(ctx.now());
    let about = involved(ns, pod);
    let Some(node) = choice else {
        let first = ctx.kubelet.wait((ns.to_owned(), name.to_owned()));
        let why = if let Some(short) = ctx.kubelet.insufficient(placement) {
            format!("{short}.")
        } else if ctx.kubelet.tainted == 0 && !placement.selects() {
            "no node has room for another pod".to_owned()
        } else {
            placement.refusal().to_owned()
        };
        let message = format!("0/{} nodes are available: {why}", ctx.kubelet.nodes.len());
        if first {
            ctx.event(about, true, ("FailedScheduling", &message), SCHEDULER);
        }
        let unschedulable = json!([{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message, "lastTransitionTime": now}]);
        ctx.modify_status_entries(&pods, ns, name, |s| {
            s.set("phase", &"Pending")?;
            s.set("conditions", &unschedulable)
        });
        return None;
    };
    let bound = match ctx.store.bind(&pods, ns, name, &node) {
        Ok(written) => {
            ctx.wrote(written);
            true
        }
        Err(e) => {
            if e.code != 404 {
                tracing::warn!(namespace = ns, pod = name, node = %node, error = %e.message, "binding failed");
            }
            false
        }
    };
    if bound {
        let message = format!("Successfully assigned {ns}/{name} to {node}");
        ctx.event(about, false, ("Scheduled", &message), SCHEDULER);
        ctx.kubelet.unwait((ns, name));
        observe_pod(
            &mut ctx.kubelet,
            (ns, name),
            Some(&node),
            false,
            placement.demand,
        );
        ctx.transitions += 1;
    }
    bound.then_some(node)
}

/// Moves one pod along its lifecycle.
///
/// It reads the pod from the engine's cache, which its own writes reach
/// before its next piece of work, so a transition costs one write.
pub fn reconcile_pod(ctx: &mut Ctx, ns: &str, name: &str) {
    let pods = ctx.kinds.pods.clone();
    let Some(pod) = ctx.pod(ns, name) else {
        return;
    };
    let key = (ns.to_owned(), name.to_owned());
    if pod.deleting {
        if !matches!(ctx.kubelet.stages.get(&key), Some(Stage::Stopping(_))) && !pod.node.is_empty()
        {
            for (container, _) in &pod.containers {
                let message = format!("Stopping container {container}");
                ctx.event(involved(ns, &pod), false, ("Killing", &message), KUBELET);
            }
        }
        stop(ctx, key, pod.image(), pod.grace_seconds);
        return;
    }
    let node = &pod.node;
    if node.is_empty() {
        if let Some(node) = schedule(ctx, ns, &pod)
            && let Role::Nodes(share) = ctx.role()
            && share.has_node(&node)
        {
            // Bound to a node of this share: its kubelet takes the pod at
            // once. (Another share's kubelet takes it on the binding's
            // event.)
            start(ctx, key, pod.image());
        }
        return;
    }
    if !ctx.kubelet.nodes.contains_key(node) {
        // The node is gone: the pod is evicted at once (nothing is left to
        // stop) and its controller replaces it.
        remove(ctx, ns, name);
        return;
    }
    let now = Instant::now();
    let stage = ctx.kubelet.stages.get(&key).cloned();
    // A pod the kubelet waits on (most reconciles are of such pods) costs
    // no more than this; the profile and the clock are read to act.
    let due = match stage {
        None => true,
        Some(Stage::Starting(at) | Stage::BackOff(at) | Stage::Running(Some(at))) => now >= at,
        _ => false,
    };
    if !due {
        return;
    }
    let profile = profile_of(ctx, pod.image());
    let stamp = rfc3339(ctx.now());
    let restarts = pod.restarts;
    match stage {
        None => start(ctx, key, pod.image()),
        // Due, as checked above, from here on.
        Some(Stage::Starting(_) | Stage::BackOff(_)) => {
            let running = json!({"running": {"startedAt": stamp}});
            let pod_ip = format!(
                "10.244.{}.{}",
                (restarts + name.len() as i64) % 250,
                name.bytes().map(u32::from).sum::<u32>() % 250 + 1
            );
            let conditions = conditions(&stamp, true, false);
            let statuses = container_statuses(&pod.containers, false, &running, restarts);
            for (container, image) in &pod.containers {
                let about = involved(ns, &pod);
                let pulled = format!("Container image {image:?} already present on machine");
                ctx.event(about, false, ("Pulled", &pulled), KUBELET);
                let created = format!("Created container: {container}");
                ctx.event(about, false, ("Created", &created), KUBELET);
                let started = format!("Started container {container}");
                ctx.event(about, false, ("Started", &started), KUBELET);
            }
            ctx.modify_status_entries(&pods, ns, name, |s| {
                s.set("phase", &"Running")?;
                s.set("hostIP", &"10.0.0.1")?;
                s.set("podIP", &pod_ip)?;
                // The first start's time stays through restarts.
                if s.get("startTime").is_none_or(|t| t.get() == "null") {
                    s.set("startTime", &stamp)?;
                }
                s.set("conditions", &conditions)?;
                s.set("containerStatuses", &statuses)
            });
            ctx.transitions += 1;
            let next = if profile.crash_loop {
                let crash = ctx.real(CRASH_AFTER);
                ctx.after(crash, Work::Pod(key.0.clone(), key.1.clone()));
                Stage::Running(Some(now + crash))
            } else if profile.never_ready {
                Stage::Running(None)
            } else {
                ctx.after(
                    profile.ready_delay(),
                    Work::Pod(key.0.clone(), key.1.clone()),
                );
                Stage::Running(Some(now + profile.ready_delay()))
            };
            ctx.kubelet.stages.insert(key, next);
        }
        Some(Stage::Running(Some(_))) if profile.crash_loop => {
            let restarts = restarts + 1;
            let backoff = Duration::from_secs((10u64 << (restarts - 1).clamp(0, 5)).min(300));
            let waiting = json!({"waiting": {"reason": "CrashLoopBackOff", "message": format!("back-off {}s restarting failed container", backoff.as_secs())}});
            let conditions = conditions(&stamp, true, false);
            let mut statuses = container_statuses(&pod.containers, false, &waiting, restarts);
            if let Some(first) = statuses.get_mut(0) {
                first["lastState"] =
                    json!({"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": stamp}});
            }
            ctx.modify_status_entries(&pods, ns, name, |s| {
                s.set("conditions", &conditions)?;
                s.set("containerStatuses", &statuses)
            });
            if let Some((container, _)) = pod.containers.first() {
                let message = format!(
                    "Back-off restarting failed container {container} in pod {name}_{ns}({})",
                    pod.uid
                );
                ctx.event(involved(ns, &pod), true, ("BackOff", &message), KUBELET);
            }
            ctx.transitions += 1;
            let wait = ctx.real(backoff);
            ctx.kubelet
                .stages
                .insert(key.clone(), Stage::BackOff(now + wait));
            ctx.after(wait, Work::Pod(key.0, key.1));
        }
        Some(Stage::Running(Some(_))) => {
            let running = pod
                .started_at
                .as_ref()
                .map_or_else(|| json!({}), |at| json!({"running": {"startedAt": at}}));
            let conditions = conditions(&stamp, true, true);
            let statuses = container_statuses(&pod.containers, true, &running, restarts);
            ctx.modify_status_entries(&pods, ns, name, |s| {
                s.set("conditions", &conditions)?;
                s.set("containerStatuses", &statuses)
            });
            ctx.transitions += 1;
            ctx.kubelet.stages.insert(key, Stage::Ready);
        }
        _ => {}
    }
}

/// The pod, as an Event's subject.
fn involved<'a>(ns: &'a str, pod: &'a crate::pod::PodSummary) -> Involved<'a> {
    Involved {
        kind: "Pod",
        api_version: "v1",
        namespace: ns,
        name: &pod.name,
        uid: &pod.uid,
    }
}

/// A pod just bound (or found bound with nothing started): its container
/// starts after the delay its version's profile draws.
fn start(ctx: &mut Ctx, key: (String, String), image: &str) {
    let profile = profile_of(ctx, image);
    // Drawn from the pod's own stream: the same seed gives each pod the
    // same delay whatever order the kubelets see pods in.
    let mut rng = ctx.rng.fork(&[&key.0, &key.1]);
    let delay = profile.start_delay(&mut rng);
    ctx.kubelet
        .stages
        .insert(key.clone(), Stage::Starting(Instant::now() + delay));
    ctx.after(delay, Work::Pod(key.0, key.1));
}

/// How the version running `image` behaves.
fn profile_of(ctx: &Ctx, image: &str) -> Profile {
    ctx.profiles
        .read()
        .map(|p| p.of(image).clone())
        .unwrap_or_default()
}

/// Removes a pod for good, as a kubelet does once its containers are gone.
fn remove(ctx: &mut Ctx, ns: &str, name: &str) {
    let pods = ctx.kinds.pods.clone();
    let now = DeleteOptions {
        grace_period_seconds: Some(0),
        ..DeleteOptions::default()
    };
    let _ = ctx.store.delete(&pods, ns, name, &now);
}

/// A pod marked for deletion: its containers get the stop signal and exit
/// after the version's stop time (within the grace period), then the pod is
/// removed. Until then it runs as it did; its endpoint shows it terminating.
fn stop(ctx: &mut Ctx, key: (String, String), image: &str, grace_seconds: i64) {
    let now = Instant::now();
    match ctx.kubelet.stages.get(&key) {
        Some(Stage::Stopping(at)) if now >= *at => remove(ctx, &key.0, &key.1),
        Some(Stage::Stopping(_)) => {}
        _ => {
            let profile = profile_of(ctx, image);
            // However long a grace period was asked for, the time it ends
            // stays representable.
            let grace =
                Duration::from_secs(grace_seconds.clamp(0, i64::from(i32::MAX)).unsigned_abs());
            let wait = ctx.real(profile.stop_delay(grace));
            ctx.kubelet
                .stages
                .insert(key.clone(), Stage::Stopping(now + wait));
            ctx.after(wait, Work::Pod(key.0, key.1));
        }
    }
}

/// Binds every pending pod that fits (in the scheduler's share), and
/// looks again at the pods of this share's nodes that are gone.
pub fn schedule_pending(ctx: &mut Ctx) {
    let Role::Nodes(share) = ctx.role() else {
        return;
    };
    let kubelet = &ctx.kubelet;
    let lost: Vec<(String, String)> = kubelet
        .bound
        .iter()
        .filter(|(_, n)| share.has_node(n) && !kubelet.nodes.contains_key(*n))
        .map(|(k, _)| k.clone())
        .collect();
    for (ns, name) in lost {
        ctx.enqueue(Work::Pod(ns, name));
    }
    if !share.schedules() {
        return;
    }
    let pods = ctx.kinds.pods.clone();
    let fields =
        sluice_sim_api::selector::FieldSelector::parse("spec.nodeName=").unwrap_or_default();
    let Ok(page) = ctx
        .store
        .list(&pods, None, &Default::default(), &fields, None, None)
    else {
        return;
    };
    for bytes in page.items {
        let Ok(p) = serde_json::from_slice::<Value>(&bytes) else {
            continue;
        };
        let (ns, name) = (
            p["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            p["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
        ctx.enqueue(Work::Pod(ns, name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> (&str, &str) {
        ("default", name)
    }

    #[test]
    fn the_scheduler_picks_the_ready_node_with_room_and_the_fewest_pods() {
        let mut k = Kubelet::default();
        observe_node(&mut k, "a", Some(&node("a", 2)));
        observe_node(&mut k, "b", Some(&node("b", 2)));
        let mut not_ready = node("c", 2);
        not_ready["status"]["conditions"][0]["status"] = json!("False");
        observe_node(&mut k, "c", Some(&not_ready));
        assert_eq!(k.best_node().as_deref(), Some("a"), "ties go by name");
        observe_pod(&mut k, key("p1"), Some("a"), false, Demand::default());
        assert_eq!(k.best_node().as_deref(), Some("b"));
        observe_pod(&mut k, key("p2"), Some("b"), false, Demand::default());
        observe_pod(&mut k, key("p3"), Some("a"), false, Demand::default());
        observe_pod(&mut k, key("p4"), Some("b"), false, Demand::default());
        assert_eq!(k.best_node(), None, "a and b are full, c is not ready");
        assert!(
            observe_pod(&mut k, key("p3"), None, true, Demand::default()),
            "a place came free"
        );
        assert!(
            !observe_pod(&mut k, key("never-bound"), None, true, Demand::default()),
            "an unbound pod frees nothing"
        );
        assert_eq!(k.best_node().as_deref(), Some("a"), "a pod left a");
        observe_node(&mut k, "a", None);
        assert_eq!(k.best_node(), None, "a is gone");
    }
}
