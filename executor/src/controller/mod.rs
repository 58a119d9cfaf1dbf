//! The rollout controller: reconciles Rollouts, watching the Deployments
//! and ReplicaSets they drive.
//!
//! *Guarantees*: every reconcile is idempotent and returns; it reads the
//! cluster, writes what differs, and asks to be woken by a watch event or a
//! timer set to the next deadline (a pause's end, a progress deadline). The
//! Rollout's status is the only state: a restarted executor resumes each
//! rollout at the step and state its status records.
//!
//! This slice drives Deployments and StatefulSets partition-style with
//! replica-weighted traffic (no router). A StatefulSet moves through its
//! `rollingUpdate.partition` (see `statefulset.rs`); for a Deployment the Deployment is paused, the new version's
//! ReplicaSet is scaled up batch by batch and the stable one down, never
//! above replicas + maxSurge pods; each batch waits for its pods (within the
//! progress deadline and failure threshold), runs its analyses on the gate,
//! pauses as the plan says, and rolls back on a failed analysis or a missed
//! deadline. Other workloads, styles and routers fail the rollout with a
//! message saying so.

mod analysis;
mod cache;
mod canary;
pub mod events;
mod looks;
mod partition;
mod queue;
mod runner;
mod statefulset;
mod steps;
pub mod traffic;
pub mod written;

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, SystemTime},
};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::Patch,
    runtime::{
        reflector::{self, ObjectRef},
        watcher,
    },
};
use serde_json::{Value, json};
use sluice_proto::v1::{
    self as pb, metrics_gate_client::MetricsGateClient, planner_client::PlannerClient,
};
use tonic::transport::Channel;

use sluice_runtime::auth::Scope;

use crate::{
    crd::{Phase, Rollout, RolloutStatus, WorkloadKind},
    keys,
    metrics::Metrics,
    watch,
};

pub use analysis::Analyses;
use cache::{Cache, Fetched, Named, Objects, Owned};
pub use runner::Action;

/// What can stop a reconcile; each is retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The planner failed.
    #[error("planner: {0}")]
    Planner(String),
    /// The planner refused the strategy: no release can be planned until
    /// the spec changes.
    #[error("the strategy cannot be planned: {0}")]
    Invalid(String),
    /// An object the rollout names does not exist or cannot be built.
    #[error("{0}")]
    Missing(String),
}

/// What reconciles share.
pub struct Ctx {
    /// The cluster.
    pub client: Client,
    /// The planner.
    pub planner: PlannerClient<Channel>,
    /// The gate.
    pub gate: MetricsGateClient<Channel>,
    /// Running analyses.
    pub analyses: Analyses,
    /// Rollouts as the executor's writes returned them, read until the
    /// watch cache catches up.
    pub written: Arc<written::Written>,
    /// The running controller's cache of Deployments and ReplicaSets.
    cache: std::sync::RwLock<Option<Cache>>,
    /// Plans already made, by rollout uid, strategy and analyses, replicas
    /// and maxSurge: a plan is a pure function of those, so asking the
    /// planner again would only cost a call.
    plans: std::sync::Mutex<HashMap<PlanKey, Arc<pb::Plan>>>,
    /// Where reconciles, decisions and verdicts are counted.
    pub metrics: Arc<Metrics>,
    /// Reconciles that may run at once (different Rollouts; one Rollout is
    /// never reconciled twice at once).
    pub concurrency: u16,
    /// Every workload kept whole, not only those Rollouts name.
    pub keep_all_workloads: bool,
    /// This replica, as its Events name it (`reportingInstance`); the host
    /// name when unset.
    pub identity: Option<String>,
    /// The namespaces watched (`--namespace`).
    pub scope: Scope,
    /// Where Events go, started with the first one.
    events: std::sync::OnceLock<events::EventSink>,
    /// The time.
    pub clock: Clock,
    /// ReplicaSets this controller created that its cache may not show
    /// yet, by (namespace, name), with when they were made.
    created: std::sync::Mutex<HashMap<(String, String), Created>>,
    /// The last look for a new pod that cannot run, per Rollout (namespace,
    /// name).
    pod_checks: std::sync::Mutex<HashMap<(String, String), PodCheck>>,
    /// Those looks' pod lists, shared by the releases of a namespace.
    pod_looks: looks::PodLooks,
}

/// Where in a release a look for new pods that cannot run was made: the
/// step, and the new revision (a newer release starts its steps over).
pub(crate) type PodStep = (u32, String);

/// A look for a Rollout's new pods that cannot run: where, when, how long
/// it stands, and the failure it found.
#[derive(Clone)]
struct PodCheck {
    step: PodStep,
    at: tokio::time::Instant,
    stands: Duration,
    found: Option<String>,
}

/// How long the first look for a new pod that cannot run stands; each next
/// one in the same step stands twice as long, up to [`POD_CHECK_MAX`]. A
/// batch waiting for its pods is reconciled on each of their changes, and
/// listing them every time cost a real API server a pod list every few
/// seconds per waiting rollout (18 per release at 1,000 slow releases).
const POD_CHECK_FIRST: Duration = Duration::from_secs(2);
/// The longest a look stands: a pod that cannot run is named within it.
const POD_CHECK_MAX: Duration = Duration::from_secs(30);

/// How long a look at `step` stands after `before`.
fn next_stand(before: Option<&PodCheck>, step: &PodStep) -> Duration {
    before
        .filter(|c| c.step == *step)
        .map_or(POD_CHECK_FIRST, |c| (c.stands * 2).min(POD_CHECK_MAX))
}

/// A ReplicaSet this controller created, and when.
type Created = (tokio::time::Instant, Arc<ReplicaSet>);

/// How long a created ReplicaSet is read from memory at most: the watch
/// shows it well before; past that, the API server is asked.
const CREATED_FOR: Duration = Duration::from_secs(10);

type PlanKey = (String, String, u32, String);

/// Plans kept before the cache starts over.
const PLAN_CACHE_LIMIT: usize = 50_000;

impl Ctx {
    /// What reconciles share, with no plans cached yet.
    pub fn new(
        client: Client,
        planner: PlannerClient<Channel>,
        gate: MetricsGateClient<Channel>,
    ) -> Self {
        let written = Arc::new(written::Written::default());
        Self {
            client,
            planner,
            gate,
            analyses: Analyses::new(Arc::clone(&written)),
            written,
            cache: Default::default(),
            plans: Default::default(),
            metrics: Arc::default(),
            concurrency: DEFAULT_CONCURRENCY,
            keep_all_workloads: false,
            identity: None,
            events: std::sync::OnceLock::new(),
            clock: Clock::default(),
            created: Default::default(),
            pod_checks: Default::default(),
            pod_looks: looks::PodLooks::default(),
            scope: Scope::All,
        }
    }

    /// The same, watching only the namespaces of `scope`.
    pub fn within(self, scope: Scope) -> Self {
        Self { scope, ..self }
    }

    /// Remembers a ReplicaSet this controller just created.
    pub(crate) fn created(&self, rs: ReplicaSet) {
        let key = (rs.namespace().unwrap_or_default(), rs.name_any());
        let mut created = self
            .created
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = tokio::time::Instant::now();
        created.retain(|_, (at, _)| now.duration_since(*at) < CREATED_FOR);
        created.insert(key, (now, Arc::new(rs)));
    }

    /// What the last look for a new pod of Rollout `key` that cannot run
    /// found, while it stands (at the same `step`).
    pub(crate) fn pod_check(
        &self,
        key: &(String, String),
        step: &PodStep,
    ) -> Option<Option<String>> {
        let checks = self
            .pod_checks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        checks
            .get(key)
            .filter(|c| c.step == *step && c.at.elapsed() < c.stands)
            .map(|c| c.found.clone())
    }

    /// Remembers what a look for a new pod of Rollout `key` at `step`
    /// found; it stands twice as long as the one before it in that step.
    pub(crate) fn pod_checked(&self, key: (String, String), step: PodStep, found: Option<String>) {
        let mut checks = self
            .pod_checks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = tokio::time::Instant::now();
        checks.retain(|_, c| now.duration_since(c.at) < POD_CHECK_MAX * 2);
        let stands = next_stand(checks.get(&key), &step);
        checks.insert(
            key,
            PodCheck {
                step,
                at: now,
                stands,
                found,
            },
        );
    }

    /// ReplicaSet `ns/name` from the cache, or as this controller created
    /// it moments ago when the cache does not show it yet.
    pub(crate) fn replicaset(
        &self,
        cache: &Cache,
        ns: &str,
        name: &str,
    ) -> Option<Arc<ReplicaSet>> {
        // The cache first, without the lock: it answers nearly every call.
        // A remembered set the cache shows is never read again; it goes
        // with the next `created` past CREATED_FOR.
        if let Some(rs) = cache.replicaset(ns, name) {
            return Some(rs);
        }
        let created = self
            .created
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        created
            .get(&(ns.to_owned(), name.to_owned()))
            .filter(|(at, _)| at.elapsed() < CREATED_FOR)
            .map(|(_, rs)| Arc::clone(rs))
    }

    /// The same, keeping written Rollouts in `written`, which the API
    /// shares so its controls reach the next reconcile at once.
    pub fn with_written(self, written: Arc<written::Written>) -> Self {
        Self {
            analyses: Analyses::new(Arc::clone(&written)),
            written,
            ..self
        }
    }

    /// The same, counting into `metrics`.
    pub fn with_metrics(self, metrics: Arc<Metrics>) -> Self {
        Self { metrics, ..self }
    }

    /// The same, keeping every workload whole in its caches when `all`
    /// (`--keep-all-workloads`), not only those Rollouts name.
    pub fn keeping_all_workloads(self, all: bool) -> Self {
        Self {
            keep_all_workloads: all,
            ..self
        }
    }

    /// The same, its Events naming `identity` as the replica that made them.
    pub fn with_identity(self, identity: String) -> Self {
        Self {
            identity: Some(identity),
            ..self
        }
    }

    /// The same, with at most `concurrency` reconciles at once (0: no bound).
    pub fn with_concurrency(self, concurrency: u16) -> Self {
        Self {
            concurrency,
            ..self
        }
    }
}

/// Reconciles at once unless configured: enough to keep a thousand
/// rollouts' API calls overlapping, few enough that a burst of events (a
/// restart, a resync) cannot open thousands of requests at once.
pub const DEFAULT_CONCURRENCY: u16 = 64;

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx").finish_non_exhaustive()
    }
}

/// The time, as the controller reads it: the wall clock when the
/// controller started, moved on by tokio's clock, so tests that pause
/// tokio's time move the controller's time too.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    wall: SystemTime,
    start: tokio::time::Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Self {
            wall: SystemTime::now(),
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock {
    /// Now.
    pub fn now(&self) -> SystemTime {
        self.wall + self.start.elapsed()
    }
}

/// The rollout that annotated an object, as a controller trigger.
fn owner_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<ObjectRef<Rollout>> {
    let name = meta.annotations.as_ref()?.get(keys::ROLLOUT)?;
    Some(ObjectRef::new(name).within(meta.namespace.as_deref().unwrap_or_default()))
}

/// The Rollout bound to a workload, as a controller trigger.
fn bound_to(
    rollouts: &reflector::Store<Rollout>,
    kind: WorkloadKind,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<ObjectRef<Rollout>> {
    let (ns, name) = (meta.namespace.as_deref()?, meta.name.as_deref()?);
    first_binding(rollouts, ns, kind, name).map(|r| ObjectRef::from_obj(&*r))
}

/// The Rollout bound to a workload: the first made (then by name) when two
/// got past the webhook at once, as the webhook holds the workload for it.
fn first_binding(
    rollouts: &reflector::Store<Rollout>,
    ns: &str,
    kind: WorkloadKind,
    name: &str,
) -> Option<Arc<Rollout>> {
    rollouts
        .state()
        .into_iter()
        .filter(|r| {
            r.spec.bound()
                && r.spec.workload.kind == kind
                && r.spec.workload.name == name
                && r.metadata.namespace.as_deref() == Some(ns)
        })
        .min_by(|a, b| {
            let age = |r: &Rollout| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
            age(a)
                .cmp(&age(b))
                .then_with(|| a.name_any().cmp(&b.name_any()))
        })
}

impl Ctx {
    /// The running controller's cache (empty until its watches have
    /// listed, so reads fall back to the API server).
    pub(crate) fn cache(&self) -> Option<Cache> {
        self.cache
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// The workload watches' lists: pages of 100, so a list of a big cluster
/// holds at most that many whole objects at once before [`cache::Kept`]
/// cuts the unnamed ones to their metadata (kube's default of 500 made
/// an executor of a 10,000-workload cluster hold tens of MiB more).
fn workload_pages() -> watcher::Config {
    watcher::Config::default().page_size(100)
}

/// Runs the controller for the rollouts of the shards `held` says this
/// replica holds, until `shutdown` completes. A shard gained meanwhile has
/// its rollouts reconciled at once; a shard lost has its runs dropped.
pub async fn run(
    ctx: Arc<Ctx>,
    held: tokio::sync::watch::Receiver<crate::lease::Held>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    use kube::runtime::WatchStreamExt;
    let (deployments, replicasets) = (Objects::default(), Objects::default());
    let (rollouts_reader, rollouts_writer) = reflector::store();
    let (owned, fetched) = (Owned::default(), Fetched::default());
    let named = Named::keeping_all(ctx.keep_all_workloads).within(held.clone());
    *ctx.cache
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Cache {
        deployments: deployments.clone(),
        replicasets: replicasets.clone(),
        owned: owned.clone(),
        rollouts: rollouts_reader.clone(),
        fetched: fetched.clone(),
    });
    let deployment_events = workload_events(
        &ctx,
        &named,
        &deployments,
        {
            let named = named.clone();
            move |d| named.keep_deployment(d)
        },
        {
            let fetched = fetched.clone();
            move |event| fetched.follow_deployments(event)
        },
    );
    let replicaset_events = workload_events(
        &ctx,
        &named,
        &replicasets,
        {
            let named = named.clone();
            move |rs| named.keep_replicaset(rs)
        },
        {
            let fetched = fetched.clone();
            move |event| {
                owned.follow(event);
                fetched.follow_replicasets(event);
            }
        },
    );
    // The executor never reads a Rollout's managedFields (the API answers
    // from reads of its own), and they are a good part of what a stored
    // Rollout weighs.
    let rollout_events = reflector::reflector(
        rollouts_writer,
        watch::events(&ctx.client, &ctx.scope, rollouts_reader.clone())
            .modify(|r: &mut Rollout| r.metadata.managed_fields = None),
    )
    .inspect_ok({
        let named = named.clone();
        move |event| {
            for gone in named.follow(event) {
                fetched.forget(&gone);
            }
        }
    })
    .applied_objects();
    let woken = named;
    let metrics = Arc::clone(&ctx.metrics);
    metrics.leading(Some((rollouts_reader.clone(), held.clone())));
    metrics.caching(Some(Box::new(move || {
        let (d, r) = (deployments.counts(), replicasets.counts());
        let n = |c: usize| i64::try_from(c).unwrap_or(i64::MAX);
        vec![
            ("deployments", "whole", n(d.0)),
            ("deployments", "version", n(d.1)),
            ("replicasets", "whole", n(r.0)),
            ("replicasets", "version", n(r.1)),
        ]
    })));
    let (rollouts, bound_sets) = (rollouts_reader.clone(), rollouts_reader.clone());
    let triggers = futures::stream::select_all([
        rollout_events
            .filter_map(|r| std::future::ready(logged(r).map(|r| ObjectRef::from_obj(&r))))
            .boxed(),
        deployment_events
            .filter_map(move |d| {
                // A Deployment nobody holds still wakes the Rollout bound
                // to it, which reports a change that reached it unheld.
                std::future::ready(logged(d).and_then(|d| {
                    owner_of(d.meta())
                        .or_else(|| bound_to(&rollouts, WorkloadKind::Deployment, d.meta()))
                }))
            })
            .boxed(),
        replicaset_events
            .flat_map(move |rs| {
                // Marked by a release, or owned by a Deployment a Rollout
                // names (its stable set carries no mark).
                futures::stream::iter(logged(rs).map_or_else(Vec::new, |rs| {
                    match owner_of(rs.meta()) {
                        Some(marked) => vec![marked],
                        None => woken.rollouts_of(rs.meta()),
                    }
                }))
            })
            .boxed(),
        watch::touched::<StatefulSet>(&ctx.client, &ctx.scope)
            .filter_map(move |s| {
                std::future::ready(logged(s).and_then(|s| {
                    owner_of(&s.metadata)
                        .or_else(|| bound_to(&bound_sets, WorkloadKind::StatefulSet, &s.metadata))
                }))
            })
            .boxed(),
        ctx.analyses.wakes().boxed(),
        ctx.written.wakes().boxed(),
        gained(held.clone(), rollouts_reader.clone()).boxed(),
    ]);
    let written = Arc::clone(&ctx.written);
    let concurrency = usize::from(ctx.concurrency);
    runner::Loop {
        store: rollouts_reader,
        lane: move |r: &Arc<Rollout>| lane(&written.fresher(Arc::clone(r))),
        reconcile: move |rollout: Arc<Rollout>| {
            let ctx = Arc::clone(&ctx);
            async move {
                match reconcile(Arc::clone(&rollout), Arc::clone(&ctx)).await {
                    Ok(action) => action,
                    Err(error) => error_policy(rollout, &error, ctx),
                }
            }
        },
        concurrency,
        owner: move |key: &ObjectRef<Rollout>| {
            held.borrow()
                .of(key.namespace.as_deref().unwrap_or_default(), &key.name)
                .cloned()
        },
    }
    .run(triggers, shutdown, Arc::clone(&metrics))
    .await;
    metrics.leading(None);
    metrics.caching(None);
}

/// The Rollouts of each shard as this replica gains it (those of the
/// shards held at the start come with the Rollouts' first list).
fn gained(
    held: tokio::sync::watch::Receiver<crate::lease::Held>,
    rollouts: reflector::Store<Rollout>,
) -> impl futures::Stream<Item = ObjectRef<Rollout>> {
    let had: std::collections::BTreeSet<u32> = held.borrow().shards().collect();
    futures::stream::unfold((held, had), move |(mut held, had)| {
        let rollouts = rollouts.clone();
        async move {
            held.changed().await.ok()?;
            let now = held.borrow_and_update().clone();
            let new: Vec<u32> = now.shards().filter(|s| !had.contains(s)).collect();
            let keys: Vec<ObjectRef<Rollout>> = if new.is_empty() {
                Vec::new()
            } else {
                rollouts
                    .state()
                    .iter()
                    .filter(|r| {
                        let shard = crate::lease::shard_of(
                            r.namespace().as_deref().unwrap_or_default(),
                            &r.name_any(),
                            now.count(),
                        );
                        new.contains(&shard)
                    })
                    .map(|r| ObjectRef::from_obj(r.as_ref()))
                    .collect()
            };
            Some((keys, (held, now.shards().collect())))
        }
    })
    .flat_map(futures::stream::iter)
}

/// A trigger stream's item, its error logged (the watch retries by itself).
fn logged<T>(item: Result<T, watcher::Error>) -> Option<T> {
    item.map_err(|error| tracing::debug!(%error, "watch failed; retrying"))
        .ok()
}

/// The lane a Rollout's reconcile queues in: urgent while it takes a
/// release back (a failed verdict not yet acted on, a rollback under way,
/// an abort asked for, a binding deleted), so a rollback never waits
/// behind other rollouts' advances; moving while a release is under way,
/// so releases started go on before new ones start.
fn lane(rollout: &Rollout) -> runner::Lane {
    let Some(status) = rollout.status.as_ref() else {
        return runner::Lane::Other;
    };
    let failed = status.step_state == crate::crd::StepState::Analyzing
        && status.analysis.as_ref().is_some_and(|a| {
            a.step == status.current_step && a.verdict == Some(crate::crd::Verdict::Fail)
        });
    let asked = rollout.annotations().contains_key(keys::ABORT)
        || rollout.metadata.deletion_timestamp.is_some();
    let under_way =
        status.started.is_some() && matches!(status.phase, Phase::Progressing | Phase::Paused);
    if status.phase == Phase::RollingBack || (under_way && (failed || asked)) {
        runner::Lane::Urgent
    } else if under_way {
        runner::Lane::Moving
    } else {
        runner::Lane::Other
    }
}

/// The events of one workload watch, once the Rollouts have listed: each
/// object as `keep` keeps it, written to `objects`, then shown to `also`;
/// then those that can wake a Rollout, each once `objects` shows it.
fn workload_events<K, Keep, Also>(
    ctx: &Ctx,
    named: &Named,
    objects: &Objects<K>,
    keep: Keep,
    also: Also,
) -> impl futures::Stream<Item = Result<cache::Kept<K>, watcher::Error>> + Send + use<K, Keep, Also>
where
    K: watch::Watched,
    K::DynamicType: Default,
    Keep: Fn(K) -> cache::Kept<K> + Clone + Send + Sync + 'static,
    Also: Fn(&watcher::Event<cache::Kept<K>>) + Send + 'static,
{
    let known = {
        let objects = objects.clone();
        move |ns: &str| objects.in_namespace(ns)
    };
    let (events, _) = watch::kept(&ctx.client, &ctx.scope, workload_pages(), known, keep);
    let objects = objects.clone();
    let events = named.after_listed(events).inspect_ok(move |event| {
        objects.follow(event);
        also(event);
    });
    settled(only_whole(events))
}

/// A workload watch's events less those of objects kept as metadata: no
/// Rollout names them and no release marked them, so they wake nothing.
fn only_whole<K, S>(
    events: S,
) -> impl futures::Stream<Item = Result<watcher::Event<cache::Kept<K>>, watcher::Error>> + Send
where
    K: Send + Sync + 'static,
    S: futures::Stream<Item = Result<watcher::Event<cache::Kept<K>>, watcher::Error>> + Send,
{
    events.try_filter(|event| {
        std::future::ready(match event {
            watcher::Event::Apply(o) | watcher::Event::InitApply(o) | watcher::Event::Delete(o) => {
                o.whole().is_some()
            }
            watcher::Event::Init | watcher::Event::InitDone => true,
        })
    })
}

/// The objects a reflector's events touched, each emitted only once the
/// reflector's store shows it.
///
/// A (re)list's objects reach the store together, when the list ends; a
/// trigger sent for each as it arrives would wake a reconcile that reads
/// the store before the swap, sees the state from before the relist, and
/// waits for an event that has already passed. So a list's objects are
/// held and released after its end.
fn settled<K, S>(events: S) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send
where
    K: Send + 'static,
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
{
    events
        .scan(Vec::new(), |listing, event| {
            let out: Vec<Result<K, watcher::Error>> = match event {
                Ok(watcher::Event::Apply(o) | watcher::Event::Delete(o)) => vec![Ok(o)],
                Ok(watcher::Event::Init) => {
                    listing.clear();
                    Vec::new()
                }
                Ok(watcher::Event::InitApply(o)) => {
                    listing.push(o);
                    Vec::new()
                }
                Ok(watcher::Event::InitDone) => listing.drain(..).map(Ok).collect(),
                Err(e) => vec![Err(e)],
            };
            std::future::ready(Some(futures::stream::iter(out)))
        })
        .flatten()
}

fn error_policy(rollout: Arc<Rollout>, error: &Error, _: Arc<Ctx>) -> Action {
    if let Error::Kube(kube::Error::Api(answer)) = error
        && answer.code == 403
    {
        // `blocked` has said it, once; a permission comes back by hand.
        tracing::debug!(rollout = %rollout.name_any(), %error, "reconcile refused; retrying");
        return Action::requeue(FORBIDDEN_RETRY);
    }
    if let Error::Kube(kube::Error::Api(answer)) = error
        && answer.code == 409
    {
        // A write over a version the cluster has moved past: the change
        // that moved it wakes this Rollout too, and it runs again on it.
        tracing::debug!(rollout = %rollout.name_any(), %error, "read was stale; running again");
        return Action::requeue(STALE_RETRY);
    }
    if let Error::Kube(kube::Error::Api(answer)) = error
        && answer.code == 404
        && answer
            .details
            .as_ref()
            .is_some_and(|d| d.kind == "rollouts" && d.name == rollout.name_any())
    {
        // The Rollout itself is gone (deleted, say with its namespace): its
        // deletion's event ends its runs.
        tracing::debug!(rollout = %rollout.name_any(), "the Rollout is gone");
        return Action::await_change();
    }
    tracing::warn!(rollout = %rollout.name_any(), %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// When a reconcile whose write met a newer version runs again, at the
/// latest (the watch usually brings that version sooner).
const STALE_RETRY: Duration = Duration::from_millis(500);

/// How often a release the API server refused a request tries again.
const FORBIDDEN_RETRY: Duration = Duration::from_secs(5);

/// Writes the status computed from the object at `resource_version`; the
/// write fails with a conflict when the object changed since (the
/// controller's cache may lag its own writes), and the reconcile runs again
/// on the fresh object, unless only the spec or metadata changed (then the
/// status is written over the fresh version: see below). A field `before` had that `status` leaves out is
/// written as null (a merge patch leaves absent fields alone). Returns the
/// Rollout as written.
async fn write_status(
    api: &Api<Rollout>,
    read: &Rollout,
    before: &RolloutStatus,
    status: &RolloutStatus,
) -> Result<Option<Rollout>, Error> {
    let name = &read.name_any();
    let resource_version = read.resource_version();
    let mut status = status.clone();
    status.step_label = if status.total_steps > 0 {
        format!("{}/{}", status.current_step + 1, status.total_steps)
    } else {
        String::new()
    };
    let mut body = serde_json::to_value(&status).unwrap_or_default();
    if let (Some(old), Some(new)) = (
        serde_json::to_value(before).unwrap_or_default().as_object(),
        body.as_object_mut(),
    ) {
        for key in old.keys() {
            new.entry(key.clone()).or_insert(Value::Null);
        }
    }
    let mut patch = json!({"metadata": {"resourceVersion": resource_version}, "status": body});
    match api
        .patch_status(name, &crate::writes::patch(), &Patch::Merge(&patch))
        .await
    {
        Ok(written) => return Ok(Some(written)),
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    // The Rollout changed since it was read. If only its spec or metadata
    // did (a pause or another control arrived meanwhile), what this
    // reconcile did is recorded all the same: its effects on the cluster
    // are made, and a status that left them out would misstate where the
    // release is. If its status changed too, the next reconcile starts over
    // from it.
    let Some(fresh) = api.get_opt(name).await? else {
        return Ok(None);
    };
    if fresh.status.clone().unwrap_or_default() != *before {
        return Ok(None);
    }
    // An end is not written over a control this decision did not read (an
    // abort that crossed the hand-back's last look): the next decision
    // reads it, says what became of it and takes it off, so that it does
    // not stay behind to act on the next release.
    let unread =
        |key: &str| fresh.annotations().get(key).is_some() && read.annotations().get(key).is_none();
    if crate::api::finished(status.phase) && (unread(keys::ABORT) || unread(keys::PROMOTE)) {
        return Ok(None);
    }
    patch["metadata"]["resourceVersion"] = json!(fresh.resource_version());
    match api
        .patch_status(name, &crate::writes::patch(), &Patch::Merge(&patch))
        .await
    {
        Ok(written) => Ok(Some(written)),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `rollout` as this reconcile's claim of its start wrote it (see
/// `steps::claim_start`), when that is the only change since it was read;
/// otherwise `rollout` as read. The claim's version is kept by `written`
/// until the watch shows it, then by the watch's store.
fn claimed(ctx: &Ctx, rollout: &Arc<Rollout>) -> Arc<Rollout> {
    let version = |r: &Rollout| r.resource_version().and_then(|v| v.parse::<u64>().ok());
    // Not `fresher`: that forgets a kept version the read already is, and
    // the next reconcile would read the lagging watch cache.
    let kept = ctx
        .written
        .newer_than(rollout)
        .unwrap_or_else(|| Arc::clone(rollout));
    let stored = ctx
        .cache()
        .and_then(|c| c.rollouts.get(&ObjectRef::from_obj(rollout.as_ref())));
    let newer = match stored {
        Some(stored) if version(&stored) > version(&kept) => stored,
        _ => kept,
    };
    let without_claim = |r: &Rollout| {
        let mut annotations = r.metadata.annotations.clone().unwrap_or_default();
        annotations.remove(keys::BEGUN);
        annotations
    };
    let only_claimed = version(&newer) > version(rollout)
        && newer.annotations().contains_key(keys::BEGUN)
        && newer.spec == rollout.spec
        && newer.status == rollout.status
        && newer.metadata.deletion_timestamp == rollout.metadata.deletion_timestamp
        && newer.metadata.finalizers == rollout.metadata.finalizers
        && newer.metadata.labels == rollout.metadata.labels
        && without_claim(&newer) == without_claim(rollout);
    if only_claimed {
        newer
    } else {
        Arc::clone(rollout)
    }
}

async fn clear_annotation(
    api: &Api<Rollout>,
    written: &written::Written,
    name: &str,
    key: &str,
) -> Result<(), Error> {
    let rollout = api
        .patch(
            name,
            &crate::writes::patch(),
            &Patch::Merge(json!({"metadata": {"annotations": {key: null}}})),
        )
        .await?;
    written.record(rollout);
    Ok(())
}

fn fail(status: &mut RolloutStatus, message: impl Into<String>) -> Action {
    status.phase = Phase::Failed;
    status.message = message.into();
    status.finished = Some(crate::machine::time_text(SystemTime::now()));
    Action::await_change()
}

/// The plan for the rollout at the workload's current size.
async fn plan(
    ctx: &Ctx,
    rollout: &Rollout,
    replicas: u32,
    max_surge: &str,
) -> Result<Arc<pb::Plan>, Error> {
    let key: PlanKey = (
        rollout.uid().unwrap_or_default(),
        serde_json::to_string(&(&rollout.spec.strategy, &rollout.spec.analyses))
            .unwrap_or_default(),
        replicas,
        max_surge.to_owned(),
    );
    if let Some(plan) = ctx
        .plans
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&key)
    {
        return Ok(Arc::clone(plan));
    }
    let strategy =
        sluice_model::convert::strategy_to_proto(&rollout.spec.strategy).map_err(|p| {
            Error::Invalid(
                p.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
    let request = pb::PlanRequest {
        strategy: Some(strategy),
        replicas,
        max_surge: max_surge.to_owned(),
        known_analyses: rollout
            .spec
            .analyses
            .iter()
            .map(|a| a.name.clone())
            .collect(),
        progress: None,
    };
    let response = ctx.planner.clone().plan(request).await.map_err(|s| {
        if s.code() == tonic::Code::InvalidArgument {
            Error::Invalid(s.message().to_owned())
        } else {
            Error::Planner(s.message().to_owned())
        }
    })?;
    let plan = Arc::new(
        response
            .into_inner()
            .plan
            .ok_or_else(|| Error::Planner("no plan in the answer".into()))?,
    );
    let mut plans = ctx
        .plans
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if plans.len() >= PLAN_CACHE_LIMIT {
        plans.clear();
    }
    plans.insert(key, Arc::clone(&plan));
    Ok(plan)
}

/// One reconcile, timed and counted.
async fn reconcile(rollout: Arc<Rollout>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let start = tokio::time::Instant::now();
    let rollout = ctx.written.fresher(rollout);
    let result = reconcile_once(Arc::clone(&rollout), &ctx).await;
    ctx.metrics.reconciled(result.is_ok(), start.elapsed());
    if let Err(Error::Kube(kube::Error::Api(answer))) = &result
        && (answer.code == 403 || answer.code == 422)
    {
        blocked(&rollout, &ctx, answer.code, &answer.message).await;
    }
    result
}

/// The API server refused the executor a request this release needs: says
/// so in a log line and on the Rollout (message, `Progressing` False with
/// the reason `Forbidden`, a Warning Event), once per refusal, instead of a
/// silent stall. The release goes on from where it was once the permission
/// is granted. `why` is the API server's answer, which names the verb, the
/// resource and the namespace.
///
/// A 422 (a write refused as invalid: the workload with the new template
/// breaks its own rules) is said the same way, reason `Invalid`, rather
/// than retried with nothing on the Rollout.
async fn blocked(rollout: &Rollout, ctx: &Ctx, code: u16, why: &str) {
    let name = rollout.name_any();
    let ns = rollout.namespace().unwrap_or_default();
    let before = rollout.status.clone().unwrap_or_default();
    let mut status = before.clone();
    let (mark, reason): (fn(&mut RolloutStatus, &str, i64, std::time::SystemTime), _) =
        if code == 422 {
            (
                sluice_model::machine::set_refused,
                sluice_model::machine::reasons::INVALID,
            )
        } else {
            (
                sluice_model::machine::set_blocked,
                sluice_model::machine::reasons::FORBIDDEN,
            )
        };
    mark(
        &mut status,
        why,
        rollout.metadata.generation.unwrap_or(0),
        ctx.clock.now(),
    );
    if status.message == before.message {
        // Said already; the retries log at debug only.
        tracing::debug!(rollout = %name, namespace = %ns, forbidden = %why, "still not allowed");
        return;
    }
    // Written only over the Rollout this look read: a second look at the
    // same refusal before the watch shows the first write conflicts here
    // instead of logging and recording it twice. The whole status is
    // written (an ended release's gives way to a Pending one): a merge
    // patch that sets every field and takes away the ones it no longer
    // has (the executor may patch the status, not replace it).
    let api: Api<Rollout> = Api::namespaced(ctx.client.clone(), &ns);
    let mut fields = serde_json::to_value(&status).unwrap_or_else(|_| json!({}));
    if let (Ok(Value::Object(old)), Value::Object(new)) =
        (serde_json::to_value(&before), &mut fields)
    {
        for (key, _) in old {
            new.entry(key).or_insert(Value::Null);
        }
    }
    let patch = json!({
        "metadata": {"resourceVersion": rollout.resource_version()},
        "status": fields,
    });
    match api
        .patch_status(&name, &crate::writes::patch(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {
            tracing::debug!(rollout = %name, namespace = %ns, forbidden = %why, "refusal recorded already");
            return;
        }
        Err(error) => {
            // Said at every retry: nothing on the Rollout says it.
            tracing::error!(
                rollout = %name,
                namespace = %ns,
                forbidden = %why,
                %error,
                "the executor is not allowed a request this release needs, nor to record that on the Rollout; it waits until the permission is granted"
            );
            return;
        }
    }
    tracing::error!(
        rollout = %name,
        namespace = %ns,
        forbidden = %why,
        "the executor is not allowed a request this release needs; it waits until the permission is granted"
    );
    publish_blocked_event(ctx, rollout, reason, &status.message);
}

#[tracing::instrument(skip_all, fields(rollout = %rollout.name_any(), namespace = %rollout.namespace().unwrap_or_default()))]
async fn reconcile_once(rollout: Arc<Rollout>, ctx: &Arc<Ctx>) -> Result<Action, Error> {
    let ns = rollout.namespace().unwrap_or_default();
    let name = rollout.name_any();
    let api: Api<Rollout> = Api::namespaced(ctx.client.clone(), &ns);
    let mut status = rollout.status.clone().unwrap_or_default();
    let generation = rollout.metadata.generation.unwrap_or(0);
    let before = status.clone();

    if rollout.spec.bound() {
        let ours = rollout.finalizers().iter().any(|f| f == keys::FINALIZER);
        if rollout.metadata.deletion_timestamp.is_some() {
            // A binding deleted: its workload goes back to its own
            // controller whole, wherever the release was.
            if ours {
                match rollout.spec.workload.kind {
                    WorkloadKind::Deployment
                        if rollout.spec.strategy.style.unwrap_or_default()
                            != sluice_model::spec::Style::Partition =>
                    {
                        canary::let_go(ctx, &rollout).await?;
                    }
                    WorkloadKind::Deployment => partition::let_go(ctx, &rollout).await?,
                    WorkloadKind::StatefulSet => statefulset::let_go(ctx, &rollout).await?,
                }
                let rest: Vec<String> = rollout
                    .finalizers()
                    .iter()
                    .filter(|f| *f != keys::FINALIZER)
                    .cloned()
                    .collect();
                let patch = serde_json::json!({"metadata": {"resourceVersion": rollout.resource_version(), "finalizers": rest}});
                api.patch(&name, &crate::writes::patch(), &Patch::Merge(patch))
                    .await?;
                ctx.written.forget(&ns, &name);
                tracing::info!(rollout = %name, "binding deleted; workload handed back");
            }
            return Ok(Action::await_change());
        }
        if !ours {
            let mut all = rollout.finalizers().to_vec();
            all.push(keys::FINALIZER.to_owned());
            let patch = serde_json::json!({"metadata": {"resourceVersion": rollout.resource_version(), "finalizers": all}});
            let with = api
                .patch(&name, &crate::writes::patch(), &Patch::Merge(patch))
                .await?;
            ctx.written.record(with);
            // The write's own event brings the next reconcile.
            return Ok(Action::await_change());
        }
    }
    if rollout.spec.bound()
        && let Some(cache) = ctx.cache()
        && let Some(first) = first_binding(
            &cache.rollouts,
            &ns,
            rollout.spec.workload.kind,
            &rollout.spec.workload.name,
        )
        && first.name_any() != name
    {
        // A second binding (two made at once can both pass the webhook):
        // it touches nothing, and says why.
        let why = format!(
            "spec.workload: {} {:?} is bound to Rollout {:?}, made first; a workload takes one \
             bound Rollout: delete this one",
            rollout.spec.workload.kind_name(),
            rollout.spec.workload.name,
            first.name_any()
        );
        if status.phase != Phase::Failed || status.message != why {
            fail(&mut status, why);
            status.observed_generation = generation;
            write_status(&api, &rollout, &before, &status).await?;
        }
        return Ok(Action::await_change());
    }
    let mut consumed = Vec::new();
    use sluice_model::spec::Style;
    let style = rollout.spec.strategy.style.unwrap_or_default();
    let action = match (rollout.spec.workload.kind, style) {
        (WorkloadKind::Deployment, Style::Partition) => {
            partition::reconcile(ctx, &rollout, &mut consumed, &mut status).await?
        }
        (WorkloadKind::Deployment, Style::Canary | Style::BlueGreen) => {
            canary::reconcile(ctx, &rollout, &mut consumed, &mut status).await?
        }
        (WorkloadKind::StatefulSet, Style::Partition) => {
            statefulset::reconcile(ctx, &rollout, &mut consumed, &mut status).await?
        }
        (WorkloadKind::StatefulSet, style) => fail(
            &mut status,
            format!("a StatefulSet is released partition-style only (strategy.style is {style:?})"),
        ),
    };
    status.observed_generation = generation;
    if !rollout.spec.bound() {
        // A bound Rollout's release is named by the workload's template,
        // which only the release's own reconcile reads.
        status.release = crate::machine::release_id(&rollout.spec);
    }
    crate::machine::set_conditions(
        &mut status,
        rollout.spec.paused,
        generation,
        ctx.clock.now(),
    );
    let mut written = None;
    if status != before {
        // Over the version the start's claim returned, when it made one:
        // over the version read, the write would conflict with the claim.
        let read = claimed(ctx, &rollout);
        written = write_status(&api, &read, &before, &status).await?;
        if let Some(rollout) = &written {
            ctx.written.record(rollout.clone());
        }
        if written.is_none() {
            // The Rollout changed since it was read: its newer version is
            // on its way through the watch and triggers the next reconcile.
            return Ok(Action::requeue(Duration::from_secs(2)));
        }
    }
    // A reconcile asked for at once reads the status just written (kept in
    // `ctx.written` until the watch shows it), so the next step does not
    // wait for the write's trip through the watch.
    if status != before {
        ctx.metrics.observe(&before, &status);
        publish_event(ctx, &rollout, &before, &status);
    }
    // Intents are removed only once what they caused is recorded.
    for key in &consumed {
        clear_annotation(&api, &ctx.written, &name, key).await?;
    }
    // A rollback just decided and recorded acts at once, from the Rollout
    // the write returned, rather than after a trip through the watch: the
    // decision is in the cluster, so a crash from here on resumes the
    // rollback, and traffic goes back to stable one round trip sooner.
    // (With an annotation cleared, the written version is already stale.)
    if let Some(written) = written
        && consumed.is_empty()
        && before.phase != Phase::RollingBack
        && status.phase == Phase::RollingBack
    {
        return Box::pin(reconcile_once(Arc::new(written), ctx)).await;
    }
    Ok(action)
}

/// Records a Kubernetes Event on the Rollout for every phase change and
/// every step reached, so `kubectl describe rollout` tells the story. The
/// Event is queued, not awaited (see [`events`]); failing to record one is
/// logged, never fatal.
fn publish_event(ctx: &Ctx, rollout: &Rollout, before: &RolloutStatus, after: &RolloutStatus) {
    use kube::runtime::events::{Event, EventType};
    let (reason, kind) = if before.phase != after.phase {
        let warning = matches!(
            after.phase,
            Phase::RollingBack | Phase::RolledBack | Phase::Failed
        );
        (
            format!("{:?}", after.phase),
            if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
        )
    } else if before.current_step != after.current_step || before.step_state != after.step_state {
        (format!("Step{:?}", after.step_state), EventType::Normal)
    } else {
        return;
    };
    let event = Event {
        type_: kind,
        reason,
        note: Some(
            format!(
                "step {}/{}: {}",
                after.current_step + 1,
                after.total_steps.max(1),
                after.message
            )
            .chars()
            .take(1000)
            .collect(),
        ),
        action: "Reconcile".into(),
        secondary: None,
    };
    send_event(ctx, rollout, event);
}

/// A Warning Event `Forbidden` on the Rollout.
fn publish_blocked_event(ctx: &Ctx, rollout: &Rollout, reason: &str, message: &str) {
    use kube::runtime::events::{Event, EventType};
    let event = Event {
        type_: EventType::Warning,
        reason: reason.into(),
        note: Some(message.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    send_event(ctx, rollout, event);
}

/// Queues `event` about `rollout` (see [`events`]).
fn send_event(ctx: &Ctx, rollout: &Rollout, event: kube::runtime::events::Event) {
    use kube::Resource;
    ctx.events
        .get_or_init(|| {
            events::EventSink::start(
                ctx.client.clone(),
                Arc::clone(&ctx.metrics),
                ctx.identity.clone(),
            )
        })
        .send(event, rollout.object_ref(&()));
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use kube::runtime::watcher::Event;

    use super::settled;

    #[tokio::test]
    async fn shards_gained_bring_their_rollouts_once() {
        use crate::lease::{Held, shard_of};
        let rollout = |name: &str| -> super::Rollout {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
                "metadata": {"name": name, "namespace": "ns"},
                "spec": {"workload": {"kind": "Deployment", "name": name},
                         "strategy": {"canary": {"steps": [{"replicas": 1}]}}},
            }))
            .unwrap()
        };
        let (store, mut writer) = kube::runtime::reflector::store();
        writer.apply_watcher_event(&Event::Init);
        let names: Vec<String> = (0..40).map(|i| format!("r{i}")).collect();
        for name in &names {
            writer.apply_watcher_event(&Event::InitApply(rollout(name)));
        }
        writer.apply_watcher_event(&Event::InitDone);
        let token = sluice_runtime::server::CancellationToken::new();
        // No shard held at the start; then every shard.
        let all = Held::all(4, &token);
        let (publish, held) = tokio::sync::watch::channel(Held::none(4));
        let mut gained = Box::pin(super::gained(held, store));
        publish.send_replace(all.clone());
        let mut got = Vec::new();
        while got.len() < names.len() {
            let key = tokio::time::timeout(std::time::Duration::from_secs(5), gained.next())
                .await
                .expect("every rollout of the gained shards")
                .unwrap();
            got.push(key.name);
        }
        got.sort();
        let mut want = names.clone();
        want.sort();
        assert_eq!(got, want);
        // Nothing new when nothing is gained.
        publish.send_replace(all);
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), gained.next())
                .await
                .is_err()
        );
        assert!(names.iter().any(|n| shard_of("ns", n, 4) == 3));
    }

    #[test]
    fn a_look_for_failing_pods_stands_longer_each_time_in_one_step() {
        use super::{POD_CHECK_FIRST, POD_CHECK_MAX, PodCheck, next_stand};
        let at = |step: u32, stands| PodCheck {
            step: (step, "abc".to_owned()),
            at: tokio::time::Instant::now(),
            stands,
            found: None,
        };
        let step = |n: u32, revision: &str| (n, revision.to_owned());
        assert_eq!(next_stand(None, &step(0, "abc")), POD_CHECK_FIRST);
        let mut stands = POD_CHECK_FIRST;
        let mut seen = vec![stands];
        for _ in 0..6 {
            stands = next_stand(Some(&at(1, stands)), &step(1, "abc"));
            seen.push(stands);
        }
        assert_eq!(
            seen.iter()
                .map(std::time::Duration::as_secs)
                .collect::<Vec<_>>(),
            [2, 4, 8, 16, 30, 30, 30]
        );
        // A new step looks soon again, as does a newer release's same step.
        assert_eq!(
            next_stand(Some(&at(1, POD_CHECK_MAX)), &step(2, "abc")),
            POD_CHECK_FIRST
        );
        assert_eq!(
            next_stand(Some(&at(1, POD_CHECK_MAX)), &step(1, "def")),
            POD_CHECK_FIRST
        );
    }

    #[test]
    fn a_release_taken_back_queues_urgent_one_under_way_moving_and_the_rest_other() {
        use super::{lane, runner::Lane};
        use crate::crd::{
            AnalysisResult, Phase, Rollout, RolloutSpec, RolloutStatus, StepState, Verdict,
        };
        let with = |status: Option<RolloutStatus>| {
            let mut r = Rollout::new("r", RolloutSpec::default());
            r.status = status;
            r
        };
        let phase = |phase| RolloutStatus {
            phase,
            started: Some("2026-12-07T00:00:00Z".into()),
            ..Default::default()
        };
        let analysing = |step, verdict| RolloutStatus {
            current_step: 1,
            step_state: StepState::Analyzing,
            analysis: Some(AnalysisResult {
                step,
                verdict: Some(verdict),
                ..Default::default()
            }),
            ..phase(Phase::Progressing)
        };
        assert_eq!(lane(&with(Some(analysing(1, Verdict::Fail)))), Lane::Urgent);
        assert_eq!(lane(&with(Some(analysing(1, Verdict::Pass)))), Lane::Moving);
        // A failed verdict of another step was acted on already.
        assert_eq!(lane(&with(Some(analysing(0, Verdict::Fail)))), Lane::Moving);
        assert_eq!(lane(&with(Some(phase(Phase::RollingBack)))), Lane::Urgent);
        assert_eq!(lane(&with(Some(phase(Phase::Paused)))), Lane::Moving);
        // Nothing started yet, or nothing under way: a start waits for
        // the releases under way.
        assert_eq!(lane(&with(None)), Lane::Other);
        let pending = RolloutStatus {
            started: None,
            ..phase(Phase::Progressing)
        };
        assert_eq!(lane(&with(Some(pending))), Lane::Other);
        assert_eq!(lane(&with(Some(phase(Phase::Succeeded)))), Lane::Other);
        let mut aborting = with(Some(phase(Phase::Paused)));
        aborting
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(crate::keys::ABORT.into(), "bad".into());
        assert_eq!(lane(&aborting), Lane::Urgent);
        // An abort of a release that has ended takes nothing back.
        aborting.status = Some(phase(Phase::RolledBack));
        assert_eq!(lane(&aborting), Lane::Other);
    }

    #[tokio::test]
    async fn a_relists_objects_are_released_only_once_the_list_has_ended() {
        let events = futures::stream::iter(
            [
                Event::Apply("before"),
                Event::Init,
                Event::InitApply("a"),
                Event::InitApply("b"),
                Event::InitDone,
                Event::Delete("c"),
            ]
            .map(Ok),
        );
        let mut out = Box::pin(settled(events));
        assert_eq!(out.next().await.unwrap().unwrap(), "before");
        // The list comes out whole, at its end...
        let listed: Vec<&str> = out.by_ref().take(2).map(Result::unwrap).collect().await;
        assert_eq!(listed, ["a", "b"]);
        assert_eq!(out.next().await.unwrap().unwrap(), "c");
        assert!(out.next().await.is_none());

        // ...and a list cut short by a new one releases only the new one.
        let restarted = futures::stream::iter(
            [
                Event::Init,
                Event::InitApply("stale"),
                Event::Init,
                Event::InitApply("fresh"),
                Event::InitDone,
            ]
            .map(Ok),
        );
        let all: Vec<&str> = settled(restarted).map(Result::unwrap).collect().await;
        assert_eq!(all, ["fresh"]);
    }
}
