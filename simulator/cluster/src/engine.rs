//! The controllers' engine: one task, a work queue without duplicates,
//! timers on tokio's clock, and the store's watches as the only trigger.
//!
//! Controllers are functions `(ctx, key) -> ()`: they read the store, write
//! what differs, and ask for a timer when time must pass. They never sleep
//! or loop. Their own writes come back as watch events and requeue them;
//! since a write that changes nothing is not written, that settles.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap, HashSet, VecDeque},
    sync::Arc,
    time::{Duration, SystemTime},
};

use serde_json::Value;
use tokio::{sync::broadcast, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::{
    pod::{PodSummary, pod_summary},
    profile::{Profiles, Rng},
    views::{ReplicaSetView, view},
};
use sluice_sim_api::{
    ApiServer,
    resources::Resource,
    selector::LabelSelector,
    splice::Entries,
    status::ApiError,
    store::{Decoded, EventType, Pair, Part, Store, WatchEvent},
};

/// What a controller is asked to look at.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Work {
    /// A Deployment.
    Deployment(String, String),
    /// A ReplicaSet.
    ReplicaSet(String, String),
    /// A StatefulSet.
    StatefulSet(String, String),
    /// A DaemonSet.
    DaemonSet(String, String),
    /// A pod's lifecycle (scheduling and the kubelet's part).
    Pod(String, String),
    /// A Service's EndpointSlice.
    Endpoints(String, String),
    /// Pods waiting for a node.
    Schedule,
    /// Events past their time to live are removed.
    ExpireEvents,
    /// A namespace's `default` ServiceAccount and `kube-root-ca.crt`.
    Namespace(String),
    /// The rules of the ClusterRoles that aggregate others.
    Aggregate,
    /// The status of a namespace's ResourceQuotas.
    Quotas(String),
    /// The same, at the quota controller's periodic resync.
    QuotaResync(String),
}

/// The object an Event is about.
#[derive(Debug, Clone, Copy)]
pub struct Involved<'a> {
    /// Its kind.
    pub kind: &'a str,
    /// Its apiVersion.
    pub api_version: &'a str,
    /// Its namespace.
    pub namespace: &'a str,
    /// Its name.
    pub name: &'a str,
    /// Its uid.
    pub uid: &'a str,
}

/// How long an Event is kept (kube-apiserver's `--event-ttl` default).
pub const EVENT_TTL: Duration = Duration::from_secs(3600);

/// How often Events past [`EVENT_TTL`] are looked for.
pub const EVENT_SWEEP: Duration = Duration::from_secs(60);

/// Which part of the cluster an engine runs. The control plane's
/// controllers and the nodes' kubelets (with the scheduler) run as
/// separate engines, each on its own task with its own watches and caches,
/// as they are separate processes in a real cluster; the kubelets are
/// split into shares of the nodes, so that pod lifecycles, the bulk of the
/// work, use every core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Deployment, ReplicaSet, StatefulSet, DaemonSet and EndpointSlice
    /// controllers.
    ControlPlane,
    /// The kubelets of a share of the nodes ([`Work::Pod`] of the pods
    /// bound to them); the first share also runs the scheduler
    /// ([`Work::Pod`] of pending pods, [`Work::Schedule`]).
    Nodes(Share),
}

/// One of `of` shares of the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    /// Which share, from 0.
    pub index: u32,
    /// How many there are.
    pub of: u32,
}

impl Share {
    /// Every node in one share.
    pub const ALL: Self = Self { index: 0, of: 1 };

    /// Whether the node `name` is in this share (by a stable hash of its
    /// name, so that every engine agrees).
    ///
    /// The scheduler's share takes a third of the nodes another share
    /// takes: it binds every pod, and a binding costs about half the two
    /// status writes of a pod's lifecycle, so that each share has about
    /// as much to do.
    pub fn has_node(self, name: &str) -> bool {
        if self.of <= 1 {
            return true;
        }
        let hash = name.bytes().fold(0x811c_9dc5_u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        // One bucket for the scheduler's share, three for each other.
        let bucket = hash % (3 * self.of - 2);
        let share = if bucket == 0 { 0 } else { (bucket - 1) / 3 + 1 };
        share == self.index
    }

    /// Whether this share runs the scheduler.
    pub fn schedules(self) -> bool {
        self.index == 0
    }
}

/// The resources controllers touch, resolved once.
#[derive(Debug, Clone)]
pub struct Kinds {
    /// Deployments.
    pub deployments: Arc<Resource>,
    /// ReplicaSets.
    pub replicasets: Arc<Resource>,
    /// StatefulSets.
    pub statefulsets: Arc<Resource>,
    /// DaemonSets.
    pub daemonsets: Arc<Resource>,
    /// ControllerRevisions.
    pub revisions: Arc<Resource>,
    /// Pods.
    pub pods: Arc<Resource>,
    /// Services.
    pub services: Arc<Resource>,
    /// EndpointSlices.
    pub slices: Arc<Resource>,
    /// Nodes.
    pub nodes: Arc<Resource>,
    /// Events.
    pub events: Arc<Resource>,
    /// Namespaces.
    pub namespaces: Arc<Resource>,
    /// ServiceAccounts.
    pub accounts: Arc<Resource>,
    /// ConfigMaps.
    pub config_maps: Arc<Resource>,
    /// ClusterRoles.
    pub cluster_roles: Arc<Resource>,
    /// ResourceQuotas.
    pub quotas: Arc<Resource>,
    /// Secrets (counted by quotas).
    pub secrets: Arc<Resource>,
    /// PersistentVolumeClaims (counted by quotas).
    pub claims: Arc<Resource>,
}

impl Kinds {
    fn resolve(store: &Store) -> Option<Self> {
        let r = store.registry();
        Some(Self {
            deployments: r.get("apps", "deployments")?,
            replicasets: r.get("apps", "replicasets")?,
            statefulsets: r.get("apps", "statefulsets")?,
            daemonsets: r.get("apps", "daemonsets")?,
            revisions: r.get("apps", "controllerrevisions")?,
            pods: r.get("", "pods")?,
            services: r.get("", "services")?,
            slices: r.get("discovery.k8s.io", "endpointslices")?,
            nodes: r.get("", "nodes")?,
            events: r.get("", "events")?,
            namespaces: r.get("", "namespaces")?,
            accounts: r.get("", "serviceaccounts")?,
            config_maps: r.get("", "configmaps")?,
            cluster_roles: r.get("rbac.authorization.k8s.io", "clusterroles")?,
            quotas: r.get("", "resourcequotas")?,
            secrets: r.get("", "secrets")?,
            claims: r.get("", "persistentvolumeclaims")?,
        })
    }
}

/// What controllers use: the store, time, randomness, and the queue.
pub struct Ctx {
    /// The object store.
    pub store: Arc<Store>,
    /// Resolved resources.
    pub kinds: Kinds,
    /// Version behaviour.
    pub profiles: Arc<std::sync::RwLock<Profiles>>,
    /// Seeded randomness.
    pub rng: Rng,
    clock: Arc<dyn Fn() -> SystemTime + Send + Sync>,
    /// The clock's speed over real time.
    speed: f64,
    /// The half of the cluster this engine runs.
    role: Role,
    timers: BinaryHeap<Reverse<(Instant, u64, Work)>>,
    timer_seq: u64,
    queue: VecDeque<Work>,
    queued: HashSet<Work>,
    /// Services by namespace, with their selectors, for endpoint updates.
    pub services: HashMap<String, Vec<(String, LabelSelector)>>,
    /// Pod state transitions written (for benchmarks).
    pub transitions: u64,
    /// Nodes, bindings and pod lifecycles.
    pub kubelet: crate::kubelet::Kubelet,
    /// Each Deployment's new ReplicaSet, as last found.
    pub new_replicasets: crate::deployment::NewReplicaSets,
    /// Every pod as the pod watch last showed it, as an informer's cache:
    /// owners read their pods from here instead of parsing each again.
    pods: HashMap<(String, String), Arc<PodSummary>>,
    /// Pod keys by the uid of their controller.
    pods_of: HashMap<String, HashSet<(String, String)>>,
    /// The resourceVersions of this engine's own status and binding
    /// writes whose events have not come back yet: the event of such a
    /// write does not wake the controller that made it (see [`route`]).
    echoes: HashSet<u64>,
    /// Events recorded, for their names.
    events: u64,
    /// Failed creates in a row, by the workload that made them: how long
    /// it waits before it tries again.
    failures: HashMap<Work, u32>,
    /// The warning Event recorded for each (namespace, object uid, type,
    /// reason, message, component): a repeat raises its count, as
    /// client-go's recorder aggregates repeats. Cleared at each sweep of
    /// old Events.
    pub(crate) recorded: HashMap<[String; 6], String>,
    /// The namespaces with ResourceQuotas.
    pub(crate) quota_namespaces: HashSet<String>,
    /// The store's resource version at each sweep of old Events, with
    /// the cluster time it was taken at, oldest first.
    pub(crate) event_marks: VecDeque<(std::time::SystemTime, u64)>,
}

impl Ctx {
    /// A context for one half of the cluster, with nothing queued; `None`
    /// when the store lacks a built-in resource.
    pub fn new(
        api: &ApiServer,
        profiles: Arc<std::sync::RwLock<Profiles>>,
        seed: u64,
        speed: f64,
        role: Role,
    ) -> Option<Self> {
        let store = api.store().clone();
        Some(Self {
            kinds: Kinds::resolve(&store)?,
            store,
            profiles,
            rng: Rng::new(seed),
            clock: api.clock(),
            speed: if speed > 0.0 { speed } else { 1.0 },
            role,
            timers: BinaryHeap::new(),
            timer_seq: 0,
            queue: VecDeque::new(),
            queued: HashSet::new(),
            services: HashMap::new(),
            transitions: 0,
            kubelet: Default::default(),
            new_replicasets: Default::default(),
            pods: HashMap::new(),
            pods_of: HashMap::new(),
            echoes: HashSet::new(),
            events: 0,
            failures: HashMap::new(),
            recorded: HashMap::new(),
            quota_namespaces: HashSet::new(),
            event_marks: VecDeque::new(),
        })
    }

    /// Records an Event about `about`, as a controller's event recorder
    /// does (`component` is its `source.component`): `Normal`, or
    /// `Warning` when `warning`.
    pub fn event(
        &mut self,
        about: Involved<'_>,
        warning: bool,
        (reason, message): (&str, &str),
        component: &str,
    ) {
        let kind = if warning { "Warning" } else { "Normal" };
        let key = [
            about.namespace.to_owned(),
            about.uid.to_owned(),
            kind.to_owned(),
            reason.to_owned(),
            message.to_owned(),
            component.to_owned(),
        ];
        let events = self.kinds.events.clone();
        // Only warnings repeat word for word about one object (a normal
        // Event names the pod or the count it is about), so only they are
        // remembered: the table stays small at any scale.
        if let Some(name) = self.recorded.get(&key).cloned().filter(|_| warning) {
            let stamp = sluice_sim_api::time::rfc3339(self.now());
            let raised = self
                .store
                .modify(&events, about.namespace, &name, Part::Main, |e| {
                    e["count"] = serde_json::json!(e["count"].as_i64().unwrap_or(1) + 1);
                    e["lastTimestamp"] = serde_json::json!(stamp);
                });
            if raised.is_ok() {
                return;
            }
        }
        self.events += 1;
        let now = self.now();
        let nanos = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let stamp = sluice_sim_api::time::rfc3339(now);
        let event = serde_json::json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": format!("{}.{:x}", about.name, nanos.wrapping_add(self.events)), "namespace": about.namespace},
            "involvedObject": {"kind": about.kind, "apiVersion": about.api_version, "namespace": about.namespace, "name": about.name, "uid": about.uid},
            "reason": reason, "message": message, "type": if warning { "Warning" } else { "Normal" },
            "source": {"component": component}, "reportingComponent": component, "reportingInstance": "",
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
        });
        match self.store.create(&events, about.namespace, event) {
            Ok(made) if warning => {
                let name = made["metadata"]["name"].as_str().unwrap_or_default();
                self.recorded.insert(key, name.to_owned());
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(reason, error = %e.message, "recording an event failed"),
        }
    }

    /// The part of the cluster this engine runs.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The cluster's wall-clock time.
    pub fn now(&self) -> SystemTime {
        (self.clock)()
    }

    /// Asks for `work` to be done.
    pub fn enqueue(&mut self, work: Work) {
        if self.queued.insert(work.clone()) {
            self.queue.push_back(work);
        }
    }

    /// A wait of `cluster_time` on the cluster's clock, in real time.
    pub fn real(&self, cluster_time: Duration) -> Duration {
        cluster_time.div_f64(self.speed)
    }

    /// Notes that `work` failed, and asks for it again after a back-off
    /// that doubles with each failure in a row, from one second to 256
    /// (cluster time), as a controller's rate-limited queue retries.
    pub fn retry(&mut self, work: Work) {
        let failures = self.failures.entry(work.clone()).or_insert(0);
        let delay = Duration::from_secs(1 << (*failures).min(8));
        *failures += 1;
        let delay = self.real(delay);
        self.after(delay, work);
    }

    /// Notes that the work `work` names succeeded: its next failure waits
    /// the shortest again. (Named lazily: nothing is built on the common
    /// path, where nothing failed.)
    pub fn succeeded(&mut self, work: impl FnOnce() -> Work) {
        if !self.failures.is_empty() {
            self.failures.remove(&work());
        }
    }

    /// Asks for `work` after `delay`.
    pub fn after(&mut self, delay: Duration, work: Work) {
        self.timer_seq += 1;
        self.timers
            .push(Reverse((Instant::now() + delay, self.timer_seq, work)));
    }

    /// An object, parsed, or `None`.
    pub fn get(&self, res: &Resource, namespace: &str, name: &str) -> Option<Value> {
        self.store.get_value(res, namespace, name).ok()
    }

    /// The objects of `res` owned by `uid`.
    pub fn owned(&self, uid: &str, res: &Resource) -> Vec<Value> {
        self.store
            .dependents(uid)
            .into_iter()
            .filter(|d| d.resource.0 == res.group && d.resource.1 == res.plural)
            .filter_map(|d| serde_json::from_slice(&d.json).ok())
            .collect()
    }

    /// The pods controlled by the object with `uid`, from the cache.
    pub fn pods_of(&self, uid: &str) -> Vec<Arc<PodSummary>> {
        self.pods_of
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|key| self.pods.get(key).cloned())
            .collect()
    }

    /// One pod, from the cache.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<Arc<PodSummary>> {
        self.pods.get(&(namespace, name) as &dyn Pair).cloned()
    }

    /// Forgets every pod it knows of that `listed` lacks, as a DELETED
    /// event would: the kubelet's and the scheduler's records of it go,
    /// and its owner (on the control plane) is queued.
    fn forget_missing_pods(&mut self, listed: &HashSet<(String, String)>) {
        let known: HashSet<(String, String)> = self
            .pods
            .keys()
            .chain(self.kubelet.bound.keys())
            .chain(self.kubelet.stages.keys())
            .filter(|key| !listed.contains(*key))
            .cloned()
            .collect();
        let mut freed = false;
        for (ns, name) in known {
            if self.role == Role::ControlPlane
                && let Some(pod) = self.pods.get(&(ns.as_str(), name.as_str()) as &dyn Pair)
            {
                for (kind, owner) in pod.owners.clone() {
                    match kind.as_str() {
                        "ReplicaSet" => self.enqueue(Work::ReplicaSet(ns.clone(), owner)),
                        "StatefulSet" => self.enqueue(Work::StatefulSet(ns.clone(), owner)),
                        "DaemonSet" => self.enqueue(Work::DaemonSet(ns.clone(), owner)),
                        _ => {}
                    }
                }
            }
            freed |= crate::kubelet::observe_pod(
                &mut self.kubelet,
                (&ns, &name),
                None,
                true,
                Default::default(),
            );
        }
        if freed
            && let Role::Nodes(share) = self.role
            && share.schedules()
        {
            self.enqueue(Work::Schedule);
        }
    }

    fn forget_pod(&mut self, namespace: &str, name: &str) {
        let key = (namespace, name);
        if let Some(old) = self.pods.remove(&key as &dyn Pair)
            && let Some(set) = self.pods_of.get_mut(&old.owner_uid)
        {
            set.remove(&key as &dyn Pair);
            if set.is_empty() {
                self.pods_of.remove(&old.owner_uid);
            }
        }
    }

    fn remember_pod(&mut self, namespace: &str, name: &str, pod: Arc<PodSummary>) {
        if let Some(known) = self.pods.get_mut(&(namespace, name) as &dyn Pair)
            && known.owner_uid == pod.owner_uid
        {
            // The same controller: the owner index already says so.
            *known = pod;
            return;
        }
        self.forget_pod(namespace, name);
        let key = (namespace.to_owned(), name.to_owned());
        self.pods_of
            .entry(pod.owner_uid.clone())
            .or_default()
            .insert(key.clone());
        self.pods.insert(key, pod);
    }

    /// Edits an object's status alone (`change` gets the status), logging
    /// failures; whether anything was written.
    pub fn modify_status(
        &mut self,
        res: &Resource,
        namespace: &str,
        name: &str,
        change: impl FnMut(&mut Value),
    ) -> bool {
        let result = self.store.modify_status(res, namespace, name, change);
        self.status_written(res, namespace, name, result)
    }

    /// Replaces an object's status, logging failures; whether anything was
    /// written.
    pub fn set_status(
        &mut self,
        res: &Resource,
        namespace: &str,
        name: &str,
        status: &Value,
    ) -> bool {
        let result = self.store.set_status(res, namespace, name, status);
        self.status_written(res, namespace, name, result)
    }

    /// Sets some top-level entries of an object's status (see
    /// [`Store::modify_status_entries`]), logging failures; whether
    /// anything was written.
    pub fn modify_status_entries(
        &mut self,
        res: &Resource,
        namespace: &str,
        name: &str,
        mut change: impl FnMut(&mut Entries) -> serde_json::Result<()>,
    ) -> bool {
        let result = self
            .store
            .modify_status_entries(res, namespace, name, |status| {
                change(status).map_err(|e| ApiError::internal(e.to_string()))
            });
        self.status_written(res, namespace, name, result)
    }

    fn status_written(
        &mut self,
        res: &Resource,
        namespace: &str,
        name: &str,
        result: Result<Option<u64>, ApiError>,
    ) -> bool {
        match result {
            Ok(written) => {
                self.wrote(written);
                written.is_some()
            }
            Err(e) if e.code == 404 => false,
            Err(e) => {
                tracing::warn!(kind = %res.kind, namespace, name, error = %e.message, "controller status write failed");
                false
            }
        }
    }

    /// Notes a status or binding write of this engine (its version, if it
    /// wrote), so that its event does not wake the writer again.
    pub fn wrote(&mut self, version: Option<u64>) {
        if let Some(rv) = version {
            self.echoes.insert(rv);
        }
    }

    /// Edits an object's status (or the object), logging failures.
    pub fn modify(
        &mut self,
        res: &Resource,
        namespace: &str,
        name: &str,
        part: Part,
        change: impl FnMut(&mut Value),
    ) -> Option<Value> {
        match self.store.modify(res, namespace, name, part, change) {
            Ok(v) => Some(v),
            Err(e) if e.code == 404 => None,
            Err(e) => {
                tracing::warn!(kind = %res.kind, namespace, name, error = %e.message, "controller write failed");
                None
            }
        }
    }
}

fn text<'a>(v: &'a Value, a: &str, b: &str) -> &'a str {
    v[a][b].as_str().unwrap_or_default()
}

/// Controllers, by the work they do.
pub type Reconcile = fn(&mut Ctx, &Work);

/// Runs the controllers until `stop`.
pub async fn run(
    api: ApiServer,
    profiles: Arc<std::sync::RwLock<Profiles>>,
    seed: u64,
    speed: f64,
    role: Role,
    reconcile: Reconcile,
    stop: CancellationToken,
) {
    let Some(mut ctx) = Ctx::new(&api, profiles, seed, speed, role) else {
        tracing::error!("built-in resources missing; controllers not started");
        return;
    };
    if role == Role::ControlPlane {
        let sweep = ctx.real(EVENT_SWEEP);
        ctx.after(sweep, Work::ExpireEvents);
    }
    let store = ctx.store.clone();
    let kinds = &ctx.kinds;
    let watched = match role {
        Role::ControlPlane => vec![
            kinds.deployments.clone(),
            kinds.replicasets.clone(),
            kinds.statefulsets.clone(),
            kinds.daemonsets.clone(),
            kinds.pods.clone(),
            kinds.services.clone(),
            kinds.nodes.clone(),
            kinds.namespaces.clone(),
            kinds.accounts.clone(),
            kinds.config_maps.clone(),
            kinds.cluster_roles.clone(),
            kinds.quotas.clone(),
            kinds.secrets.clone(),
            kinds.claims.clone(),
        ],
        Role::Nodes(_) => vec![kinds.pods.clone(), kinds.nodes.clone()],
    };
    // The engine reads the store's watches itself, without forwarding
    // tasks: the events of its own writes are visible at once, so work for
    // the same object queued meanwhile is done once, not once per event.
    let mut feeds = Vec::new();
    for res in &watched {
        let Ok(start) = store.watch(res, None, None) else {
            continue;
        };
        let mut feed = Feed::new(res.clone(), start.live);
        for event in &start.initial {
            feed.route(&mut ctx, event);
        }
        feeds.push(feed);
    }
    loop {
        // Everything that has happened, then everything that is due.
        for feed in &mut feeds {
            loop {
                match feed.live.try_recv() {
                    Ok(event) => feed.route(&mut ctx, &event),
                    Err(broadcast::error::TryRecvError::Lagged(n)) => {
                        feed.catch_up(&mut ctx, &store, n);
                    }
                    Err(_) => break,
                }
            }
        }
        let now = Instant::now();
        while ctx
            .timers
            .peek()
            .is_some_and(|Reverse((at, _, _))| *at <= now)
        {
            if let Some(Reverse((_, _, work))) = ctx.timers.pop() {
                ctx.enqueue(work);
            }
        }
        if let Some(work) = ctx.queue.pop_front() {
            ctx.queued.remove(&work);
            reconcile(&mut ctx, &work);
            // Give the worker thread back now and then: a busy engine that
            // never awaited would also hold the other engine, woken by its
            // writes into this thread's un-stealable next-task slot.
            tokio::task::consume_budget().await;
            continue;
        }
        let next_timer = ctx.timers.peek().map(|Reverse((at, _, _))| *at);
        let woken = {
            let waits = feeds
                .iter_mut()
                .enumerate()
                .map(|(i, feed)| Box::pin(async move { (i, feed.live.recv().await) }));
            tokio::select! {
                () = stop.cancelled() => return,
                ((i, event), _, _) = futures::future::select_all(waits) => Some((i, event)),
                () = async { match next_timer { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => None,
            }
        };
        match woken {
            Some((i, Ok(event))) => feeds[i].route(&mut ctx, &event),
            Some((i, Err(broadcast::error::RecvError::Lagged(n)))) => {
                feeds[i].catch_up(&mut ctx, &store, n);
            }
            Some((_, Err(broadcast::error::RecvError::Closed))) => return,
            None => {}
        }
    }
}

/// One watch an engine reads.
struct Feed {
    res: Arc<Resource>,
    live: broadcast::Receiver<Arc<WatchEvent>>,
    /// The resourceVersion of the last event routed.
    seen: u64,
}

impl Feed {
    /// A feed of `res` from `live`, nothing routed yet.
    fn new(res: Arc<Resource>, live: broadcast::Receiver<Arc<WatchEvent>>) -> Self {
        Self { res, live, seen: 0 }
    }

    fn route(&mut self, ctx: &mut Ctx, event: &WatchEvent) {
        self.seen = self.seen.max(event.rv);
        route(ctx, &self.res.plural, event);
    }

    /// The watch fell behind by `missed` events: as an informer does, it
    /// watches again from the last event it saw, which the store's history
    /// replays; only when the history no longer reaches back that far does
    /// it start afresh from a list of everything.
    fn catch_up(&mut self, ctx: &mut Ctx, store: &Store, missed: u64) {
        let start = match store.watch(&self.res, None, Some(self.seen)) {
            Ok(start) => {
                tracing::debug!(resource = %self.res.plural, missed, "controller watch lagged; replaying");
                start
            }
            Err(_) => {
                tracing::warn!(resource = %self.res.plural, missed, "controller watch lagged past the history; listing");
                // Events were missed, the echoes among them: everything is
                // looked at again, and the pod caches are rebuilt.
                ctx.echoes.clear();
                let Ok(start) = store.watch(&self.res, None, None) else {
                    return;
                };
                if self.res.plural == "pods" {
                    // As an informer's relist: a pod missing from the list
                    // was deleted meanwhile, its DELETED among the events
                    // missed. Its node's place is given back and its owner
                    // looks again.
                    let listed: HashSet<(String, String)> = start
                        .initial
                        .iter()
                        .map(|e| (e.namespace.clone(), e.name.clone()))
                        .collect();
                    ctx.forget_missing_pods(&listed);
                    ctx.pods.clear();
                    ctx.pods_of.clear();
                }
                start
            }
        };
        self.live = start.live;
        for event in &start.initial {
            self.route(ctx, event);
        }
    }
}

/// The Deployments that own a ReplicaSet, read from its writer's decoding,
/// or from its JSON when it has none.
fn deployments_owning(json: &[u8], decoded: Option<Decoded>) -> Vec<String> {
    let Ok(rs) = view::<ReplicaSetView>(json, decoded) else {
        return Vec::new();
    };
    rs.metadata
        .owner_references
        .iter()
        .filter(|o| o.kind == "Deployment")
        .map(|o| o.name.clone())
        .collect()
}

/// Turns a watch event into work for every controller it concerns.
///
/// The event of a status (or binding) write this engine made does not wake
/// the controller that made it, as a controller-runtime predicate filters
/// a controller's own status updates: the writer computed that status from
/// what it had read, so looking again would find nothing to do, while any
/// other change comes with an event of its own. The caches still learn
/// from it, and the controllers that depend on the writer's object (a
/// ReplicaSet's Deployment) are still woken.
fn route(ctx: &mut Ctx, plural: &str, event: &WatchEvent) {
    // Names are copied only for work that is queued.
    let (ns, name) = (event.namespace.as_str(), event.name.as_str());
    let echo = ctx.echoes.remove(&event.rv);
    if ctx.role == Role::ControlPlane {
        crate::quotas::route(ctx, plural, ns, echo);
    }
    match plural {
        "deployments" if echo => {}
        "deployments" => ctx.enqueue(Work::Deployment(ns.to_owned(), name.to_owned())),
        "replicasets" => {
            if !echo {
                ctx.enqueue(Work::ReplicaSet(ns.to_owned(), name.to_owned()));
            }
            let decoded = event.decoded.get().cloned();
            for deployment in deployments_owning(&event.object, decoded) {
                ctx.enqueue(Work::Deployment(ns.to_owned(), deployment));
            }
        }
        "statefulsets" | "daemonsets" if echo => {}
        "statefulsets" => ctx.enqueue(Work::StatefulSet(ns.to_owned(), name.to_owned())),
        "daemonsets" => ctx.enqueue(Work::DaemonSet(ns.to_owned(), name.to_owned())),
        "pods" => {
            if let Role::Nodes(share) = ctx.role
                && !share.schedules()
            {
                // Another share's pod, or one still pending: nothing for
                // this share's kubelets to cache or do. (A pod is bound
                // once and stays on its node.)
                let node = event.fields.iter().find(|(f, _)| *f == "spec.nodeName");
                if !node.is_some_and(|(_, n)| share.has_node(n)) {
                    return;
                }
            }
            let summary = pod_summary(event);
            // Only the control plane acts on a pod's owners.
            let owned = summary.clone().filter(|_| ctx.role == Role::ControlPlane);
            let demand = summary
                .as_ref()
                .map_or_else(Default::default, |p| p.placement.demand);
            match summary {
                Some(pod) if event.kind != EventType::Deleted => ctx.remember_pod(ns, name, pod),
                _ => ctx.forget_pod(ns, name),
            }
            if let Role::Nodes(share) = ctx.role {
                let node = event
                    .fields
                    .iter()
                    .find(|(f, _)| *f == "spec.nodeName")
                    .map(|(_, v)| v.as_str())
                    .filter(|n| !n.is_empty());
                let gone = event.kind == EventType::Deleted;
                let freed =
                    crate::kubelet::observe_pod(&mut ctx.kubelet, (ns, name), node, gone, demand);
                // A share acts on the pods of its nodes; the scheduler's
                // on pending ones as well.
                let mine = node.map_or(share.schedules(), |n| share.has_node(n));
                if !gone {
                    if !echo && mine {
                        ctx.enqueue(Work::Pod(ns.to_owned(), name.to_owned()));
                    }
                } else if freed
                    && share.schedules()
                    && let Some((ns, name)) = ctx.kubelet.next_waiting()
                {
                    // A place on a node came free: the pod that waited
                    // longest for one tries again, as the scheduler
                    // retries unschedulable pods when a pod leaves.
                    ctx.enqueue(Work::Pod(ns.to_owned(), name.to_owned()));
                }
                return;
            }
            let gone = event.kind == EventType::Deleted;
            for (kind, owner) in owned.iter().flat_map(|p| p.owners.iter()) {
                let owner = owner.clone();
                match kind.as_str() {
                    "ReplicaSet" if gone => {
                        // A pod gone for good can let a Recreate rollout go
                        // on, though its ReplicaSet's status (which leaves
                        // terminating pods out) did not change.
                        let rs = ctx.kinds.replicasets.clone();
                        if let Ok((json, decoded)) = ctx.store.get_decoded(&rs, ns, &owner) {
                            for deployment in deployments_owning(&json, decoded) {
                                ctx.enqueue(Work::Deployment(ns.to_owned(), deployment));
                            }
                        }
                        ctx.enqueue(Work::ReplicaSet(ns.to_owned(), owner));
                    }
                    "ReplicaSet" => ctx.enqueue(Work::ReplicaSet(ns.to_owned(), owner)),
                    "StatefulSet" => ctx.enqueue(Work::StatefulSet(ns.to_owned(), owner)),
                    "DaemonSet" => ctx.enqueue(Work::DaemonSet(ns.to_owned(), owner)),
                    _ => {}
                }
            }
            let services: Vec<String> = ctx
                .services
                .get(ns)
                .map(|list| {
                    list.iter()
                        .filter(|(_, sel)| !sel.is_empty() && sel.matches(&event.labels))
                        .map(|(n, _)| n.clone())
                        .collect()
                })
                .unwrap_or_default();
            for service in services {
                ctx.enqueue(Work::Endpoints(ns.to_owned(), service));
            }
        }
        "services" => {
            let list = ctx.services.entry(ns.to_owned()).or_default();
            list.retain(|(n, _)| *n != name);
            if event.kind != EventType::Deleted
                && let Ok(object) = serde_json::from_slice::<Value>(&event.object)
                && let Some(selector) = object["spec"]["selector"].as_object()
            {
                let labels = serde_json::json!({"matchLabels": selector});
                list.push((name.to_owned(), LabelSelector::from_object(&labels)));
            }
            ctx.enqueue(Work::Endpoints(ns.to_owned(), name.to_owned()));
        }
        "namespaces" if event.kind != EventType::Deleted => {
            ctx.enqueue(Work::Namespace(name.to_owned()));
        }
        // What the namespace controllers keep: made again when removed or
        // changed.
        "serviceaccounts"
            if event.kind == EventType::Deleted && name == crate::namespaces::DEFAULT_ACCOUNT =>
        {
            ctx.enqueue(Work::Namespace(ns.to_owned()));
        }
        // Any change of any ClusterRole may change what another aggregates
        // (its own write of the rules comes back once, and changes nothing).
        "clusterroles" => ctx.enqueue(Work::Aggregate),
        "configmaps" if name == crate::namespaces::ROOT_CA => {
            ctx.enqueue(Work::Namespace(ns.to_owned()));
        }
        "nodes" if matches!(ctx.role, Role::Nodes(_)) => {
            let object = if event.kind == EventType::Deleted {
                None
            } else {
                serde_json::from_slice::<Value>(&event.object).ok()
            };
            crate::kubelet::observe_node(&mut ctx.kubelet, name, object.as_ref());
            ctx.enqueue(Work::Schedule);
        }
        "nodes" => {
            // The DaemonSet controller places a pod on every node it may:
            // it keeps the nodes' readiness, labels and taints too.
            let object = if event.kind == EventType::Deleted {
                None
            } else {
                serde_json::from_slice::<Value>(&event.object).ok()
            };
            crate::kubelet::observe_node(&mut ctx.kubelet, name, object.as_ref());
            let daemonsets = ctx.store.list(
                &ctx.kinds.daemonsets.clone(),
                None,
                &LabelSelector::default(),
                &Default::default(),
                None,
                None,
            );
            for bytes in daemonsets.map(|p| p.items).unwrap_or_default() {
                if let Ok(o) = serde_json::from_slice::<Value>(&bytes) {
                    ctx.enqueue(Work::DaemonSet(
                        text(&o, "metadata", "namespace").to_owned(),
                        text(&o, "metadata", "name").to_owned(),
                    ));
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::pod::PodDecoder;
    use sluice_sim_api::Options;

    fn control_plane() -> Ctx {
        let api = ApiServer::new(Options::default());
        Ctx::new(&api, Default::default(), 1, 1.0, Role::ControlPlane).unwrap()
    }

    /// Routes every event `watch` has received so far.
    fn routed(ctx: &mut Ctx, plural: &str, watch: &mut broadcast::Receiver<Arc<WatchEvent>>) {
        while let Ok(event) = watch.try_recv() {
            route(ctx, plural, &event);
        }
    }

    #[test]
    fn a_controller_is_not_woken_by_its_own_status_write_but_is_by_anyone_elses() {
        let mut ctx = control_plane();
        let (store, res) = (ctx.store.clone(), ctx.kinds.deployments.clone());
        store
            .create(&res, "default", json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"app": "d"}}, "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}))
            .unwrap();
        let mut watch = store.watch(&res, None, None).unwrap().live;
        assert!(ctx.modify_status(&res, "default", "d", |s| *s = json!({"replicas": 1})));
        routed(&mut ctx, "deployments", &mut watch);
        assert!(ctx.queue.is_empty(), "its own write: {:?}", ctx.queue);
        assert!(ctx.echoes.is_empty(), "the echo is used up");
        // The same write by another client wakes it.
        store
            .modify_status(&res, "default", "d", |s| *s = json!({"replicas": 2}))
            .unwrap();
        routed(&mut ctx, "deployments", &mut watch);
        assert_eq!(
            Vec::from(ctx.queue.clone()),
            [Work::Deployment("default".into(), "d".into())]
        );
    }

    #[test]
    fn every_node_is_in_exactly_one_share_and_the_schedulers_is_smaller() {
        let shares = [0, 1, 2].map(|index| Share { index, of: 3 });
        let mut sizes = [0; 3];
        for i in 0..3000 {
            let node = format!("sim-node-{i}");
            let owners: Vec<_> = shares.iter().filter(|s| s.has_node(&node)).collect();
            assert_eq!(owners.len(), 1, "{node}");
            sizes[owners[0].index as usize] += 1;
        }
        // Weighted 1 : 3 : 3.
        assert!((350..500).contains(&sizes[0]), "{sizes:?}");
        assert!(
            sizes[1..].iter().all(|&n| (1150..1400).contains(&n)),
            "{sizes:?}"
        );
        assert!(Share::ALL.has_node("any") && Share::ALL.schedules());
        assert!(!shares[1].schedules());
    }

    #[test]
    fn a_watch_that_falls_behind_catches_up_from_the_history() {
        let mut ctx = control_plane();
        let (store, pods) = (ctx.store.clone(), ctx.kinds.pods.clone());
        store.decode_with("", "pods", Arc::new(PodDecoder));
        let start = store.watch(&pods, None, None).unwrap();
        let mut feed = Feed::new(pods.clone(), start.live);
        store
            .create(&pods, "default", json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": "app:1"}]}}))
            .unwrap();
        let created = feed.live.try_recv().unwrap();
        feed.route(&mut ctx, &created);
        // More writes than the watch holds, fewer than the history keeps.
        for restarts in 1..=5000 {
            let statuses = json!([{"name": "a", "restartCount": restarts, "state": {}}]);
            store
                .modify_status(&pods, "default", "p", |s| {
                    s["containerStatuses"] = statuses.clone()
                })
                .unwrap();
        }
        let Err(broadcast::error::TryRecvError::Lagged(missed)) = feed.live.try_recv() else {
            panic!("the watch should have fallen behind");
        };
        feed.catch_up(&mut ctx, &store, missed);
        assert_eq!(feed.seen, store.resource_version(), "every write replayed");
        assert_eq!(ctx.pod("default", "p").unwrap().restarts, 5000);
        store
            .delete(&pods, "default", "p", &Default::default())
            .unwrap();
        let deleted = feed.live.try_recv().unwrap();
        feed.route(&mut ctx, &deleted);
        assert!(ctx.pod("default", "p").is_none(), "and it follows on");
    }

    #[test]
    fn a_pod_deleted_while_a_kubelet_lagged_past_the_history_gives_its_place_back() {
        let api = ApiServer::new(Options {
            history: 100,
            ..Options::default()
        });
        let share = Share { index: 0, of: 1 };
        let mut ctx = Ctx::new(&api, Default::default(), 1, 1.0, Role::Nodes(share)).unwrap();
        let (store, pods, nodes) = (
            ctx.store.clone(),
            ctx.kinds.pods.clone(),
            ctx.kinds.nodes.clone(),
        );
        store.decode_with("", "pods", Arc::new(PodDecoder));
        store
            .create(&nodes, "", crate::kubelet::node("n", 10))
            .unwrap();
        let node = store.get_value(&nodes, "", "n").unwrap();
        crate::kubelet::observe_node(&mut ctx.kubelet, "n", Some(&node));
        let start = store.watch(&pods, None, None).unwrap();
        let mut feed = Feed::new(pods.clone(), start.live);
        store
            .create(&pods, "default", json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"nodeName": "n", "containers": [{"name": "a", "image": "app:1"}]}}))
            .unwrap();
        let created = feed.live.try_recv().unwrap();
        feed.route(&mut ctx, &created);
        assert_eq!(ctx.kubelet.nodes["n"].2, 1, "the pod holds a place");
        // The pod goes, then more writes than the watch holds and the
        // history keeps: the kubelet lists again.
        let now = sluice_sim_api::store::DeleteOptions {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        store.delete(&pods, "default", "p", &now).unwrap();
        store
            .create(&pods, "default", json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "noise"}, "spec": {"containers": [{"name": "a", "image": "app:1"}]}}))
            .unwrap();
        for i in 0..5000 {
            store
                .modify(&pods, "default", "noise", Part::Main, |p| {
                    p["metadata"]["labels"] = json!({"i": i.to_string()});
                })
                .unwrap();
        }
        let Err(broadcast::error::TryRecvError::Lagged(missed)) = feed.live.try_recv() else {
            panic!("the watch should have fallen behind");
        };
        feed.catch_up(&mut ctx, &store, missed);
        assert_eq!(ctx.kubelet.nodes["n"].2, 0, "its place is free again");
        assert!(
            !ctx.kubelet
                .bound
                .contains_key(&("default".to_owned(), "p".to_owned()))
        );
    }

    #[test]
    fn failed_work_is_tried_again_later_each_time_it_fails_in_a_row() {
        let mut ctx = control_plane();
        let work = || Work::ReplicaSet("default".to_owned(), "web".to_owned());
        let start = Instant::now();
        let mut delays = Vec::new();
        for _ in 0..10 {
            ctx.retry(work());
            let Some(Reverse((at, _, queued))) = ctx.timers.pop() else {
                panic!("nothing asked for");
            };
            assert_eq!(queued, work());
            delays.push((at - start).as_secs());
        }
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 256]);
        ctx.succeeded(work);
        ctx.retry(work());
        let Some(Reverse((at, _, _))) = ctx.timers.pop() else {
            panic!("nothing asked for");
        };
        assert_eq!(
            (at - start).as_secs(),
            1,
            "back to the shortest after a success"
        );
    }

    #[test]
    fn a_replicasets_own_status_write_still_wakes_its_deployment() {
        let mut ctx = control_plane();
        let (store, res) = (ctx.store.clone(), ctx.kinds.replicasets.clone());
        store
            .create(&res, "default", json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "d-1", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "d", "uid": "u", "controller": true}]}, "spec": {"selector": {"matchLabels": {"app": "d"}}, "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}))
            .unwrap();
        let mut watch = store.watch(&res, None, None).unwrap().live;
        assert!(ctx.modify_status(&res, "default", "d-1", |s| *s = json!({"replicas": 1})));
        routed(&mut ctx, "replicasets", &mut watch);
        assert_eq!(
            Vec::from(ctx.queue.clone()),
            [Work::Deployment("default".into(), "d".into())],
            "the Deployment sums its ReplicaSets' statuses; the ReplicaSet itself rests"
        );
    }
}
