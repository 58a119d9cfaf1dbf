//! The executor's own metrics, served at the admin port's `/metrics` beside
//! the runtime's per-RPC ones.
//!
//! Metric names (all prefixed `sluice_executor_`):
//! - `rollouts{phase}`: Rollouts in each phase, counted from the
//!   controller's cache at scrape time: each replica counts those of the
//!   shards it holds (0s when it holds none), so a sum over the replicas
//!   counts each Rollout once.
//! - `leader`: 1 while this replica drives rollouts (holds a shard), else 0.
//! - `shards`: how many shards of the rollouts this replica holds (see
//!   `lease`).
//! - `cached_objects{resource, kept}`: the Deployments and ReplicaSets the
//!   leading replica's watches hold, `whole` (a Rollout names the
//!   Deployment, as of the last change the watch brought) or `version`
//!   (only the resourceVersion last seen).
//! - `reconciles_total{result}` and `reconcile_duration_seconds`: every
//!   reconcile, `ok` or `error`, and how long it took.
//! - `reconcile_queue{state}`: Rollouts waiting for a reconcile, `urgent`
//!   (taking a release back), `moving` (a release under way) or `other`,
//!   and those `running`; and
//!   `reconcile_queue_wait_seconds`: how long each waited from its first
//!   trigger to its start.
//! - `decisions_total{decision}`: what the controller decided for a
//!   rollout: `start`, `advance`, `pause`, `resume`, `rollback`,
//!   `rolled_back`, `succeed`, `fail`.
//! - `verdicts_total{verdict}`: the gate's verdicts as steps recorded them.
//! - `step_duration_seconds`: a step's start to its end, as its status
//!   record gives them (to the second).
//! - `kube_requests_total{verb, resource, code}` and
//!   `kube_request_duration_seconds{verb}`: calls to the Kubernetes API
//!   (after the client's own retries; `code` is `error` when no answer
//!   came).
//! - `events_dropped_total`: Kubernetes Events not published because the
//!   queue of Events waiting for the API server was full.
//! - `admission_reviews_total{kind, result}` and
//!   `admission_duration_seconds{kind}`: the admission webhook's answers
//!   (`allowed`, `held` when it patched the object, `denied`, `invalid`
//!   for a review it could not read) and the time from the request read to
//!   the answer written.

use std::{
    collections::BTreeMap,
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use kube::{ResourceExt, runtime::reflector::Store};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        counter::Counter, family::Family, gauge::ConstGauge, gauge::Gauge, histogram::Histogram,
    },
    registry::Registry,
};

use crate::{
    crd::{Phase, Rollout, RolloutStatus, Verdict},
    lease::Held,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

impl ResultLabel {
    fn of(ok: bool) -> Self {
        Self {
            result: if ok { "ok" } else { "error" },
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabel {
    decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabel {
    verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerbLabel {
    verb: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AdmissionLabels {
    kind: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

/// Admission latency buckets in seconds: 50 microseconds to a second.
const ADMISSION_BUCKETS: [f64; 12] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.25, 1.0,
];

fn admission_histogram() -> Histogram {
    Histogram::new(ADMISSION_BUCKETS)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    verb: &'static str,
    resource: String,
    code: String,
}

/// Reconcile and API latency buckets in seconds: a millisecond to ten
/// seconds.
const FAST_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Step duration buckets in seconds: a second to two hours.
const STEP_BUCKETS: [f64; 11] = [
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
];

fn fast_histogram() -> Histogram {
    Histogram::new(FAST_BUCKETS)
}

/// The executor's metrics. `Metrics::default()` records into metrics no
/// registry serves (for tests and embedded use); [`Metrics::register`]
/// serves them.
#[derive(Debug)]
pub struct Metrics {
    reconciles: Family<ResultLabel, Counter>,
    reconcile_seconds: Histogram,
    queue: Family<StateLabel, Gauge>,
    /// `queue`'s gauges in [`QUEUE_STATES`]' order, made once: the
    /// controller loop sets them at every turn.
    queue_states: [Gauge; 4],
    queue_wait: Histogram,
    decisions: Family<DecisionLabel, Counter>,
    verdicts: Family<VerdictLabel, Counter>,
    step_seconds: Histogram,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<VerbLabel, Histogram, fn() -> Histogram>,
    leader: Gauge,
    events_dropped: Counter,
    admissions: Family<AdmissionLabels, Counter>,
    admission_seconds: Family<KindLabel, Histogram, fn() -> Histogram>,
    /// Every Kubernetes API call, for [`Metrics::kube_requests`].
    requests_total: AtomicU64,
    /// The running controller's Rollouts, counted by phase at scrape time.
    rollouts: Arc<RolloutsByPhase>,
    /// What the running controller's workload watches hold.
    cached: Arc<CachedObjects>,
}

/// Counts of cached objects: (resource, how kept, how many).
pub(crate) type CacheCounts = Box<dyn Fn() -> Vec<(&'static str, &'static str, i64)> + Send + Sync>;

/// The reconcile queue's states: its lanes in order, then `running`.
const QUEUE_STATES: [&str; 4] = ["urgent", "moving", "other", "running"];

impl Default for Metrics {
    fn default() -> Self {
        let queue: Family<StateLabel, Gauge> = Family::default();
        let queue_states =
            QUEUE_STATES.map(|state| queue.get_or_create(&StateLabel { state }).clone());
        Self {
            reconciles: Family::default(),
            reconcile_seconds: fast_histogram(),
            queue,
            queue_states,
            queue_wait: fast_histogram(),
            decisions: Family::default(),
            verdicts: Family::default(),
            step_seconds: Histogram::new(STEP_BUCKETS),
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(fast_histogram as fn() -> Histogram),
            leader: Gauge::default(),
            events_dropped: Counter::default(),
            admissions: Family::default(),
            admission_seconds: Family::new_with_constructor(
                admission_histogram as fn() -> Histogram,
            ),
            requests_total: AtomicU64::new(0),
            rollouts: Arc::default(),
            cached: Arc::default(),
        }
    }
}

impl Metrics {
    /// Creates the metrics and registers them under `sluice_executor`.
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let metrics = Arc::new(Self::default());
        let sub = registry.sub_registry_with_prefix("sluice_executor");
        sub.register(
            "reconciles",
            "Reconciles of Rollouts by result",
            metrics.reconciles.clone(),
        );
        sub.register(
            "reconcile_duration_seconds",
            "Time one reconcile took",
            metrics.reconcile_seconds.clone(),
        );
        sub.register(
            "reconcile_queue",
            "Rollouts waiting for a reconcile (urgent, moving or other) and running",
            metrics.queue.clone(),
        );
        sub.register(
            "reconcile_queue_wait_seconds",
            "Time from a Rollout's first trigger to its reconcile's start",
            metrics.queue_wait.clone(),
        );
        sub.register(
            "decisions",
            "Decisions the controller made for rollouts",
            metrics.decisions.clone(),
        );
        sub.register(
            "verdicts",
            "The gate's verdicts on steps",
            metrics.verdicts.clone(),
        );
        sub.register(
            "step_duration_seconds",
            "Time from a step's start to its end",
            metrics.step_seconds.clone(),
        );
        sub.register(
            "kube_requests",
            "Calls to the Kubernetes API by verb, resource and answer",
            metrics.requests.clone(),
        );
        sub.register(
            "kube_request_duration_seconds",
            "Time until the Kubernetes API answered, per verb",
            metrics.request_seconds.clone(),
        );
        sub.register(
            "leader",
            "1 while this replica drives rollouts",
            metrics.leader.clone(),
        );
        sub.register(
            "events_dropped",
            "Kubernetes Events dropped because their queue was full",
            metrics.events_dropped.clone(),
        );
        sub.register(
            "admission_reviews",
            "Admission reviews answered by the webhook, by kind and result",
            metrics.admissions.clone(),
        );
        sub.register(
            "admission_duration_seconds",
            "Time the webhook took to answer a review, per kind",
            metrics.admission_seconds.clone(),
        );
        sub.register_collector(Box::new(Arc::clone(&metrics.rollouts)));
        sub.register_collector(Box::new(Arc::clone(&metrics.cached)));
        metrics
    }

    /// Counts one admission review and the time its answer took.
    pub(crate) fn admitted(&self, kind: &str, result: &'static str, took: Duration) {
        let kind = kind.to_owned();
        self.admissions
            .get_or_create(&AdmissionLabels {
                kind: kind.clone(),
                result,
            })
            .inc();
        self.admission_seconds
            .get_or_create(&KindLabel { kind })
            .observe(took.as_secs_f64());
    }

    /// Admission reviews answered so far with `result`, across kinds.
    pub fn admissions(&self, result: &str) -> u64 {
        let mut n = 0;
        // Families cannot be iterated; the kinds the webhook answers for
        // are few and known.
        for kind in ["Deployment", "StatefulSet", "Rollout", ""] {
            n += self
                .admissions
                .get(&AdmissionLabels {
                    kind: kind.to_owned(),
                    result: match result {
                        "allowed" => "allowed",
                        "held" => "held",
                        "denied" => "denied",
                        _ => "invalid",
                    },
                })
                .map_or(0, |c| c.get());
        }
        n
    }

    /// Counts an Event the queue had no room for.
    pub(crate) fn event_dropped(&self) {
        self.events_dropped.inc();
    }

    /// Counts one reconcile.
    pub(crate) fn reconciled(&self, ok: bool, took: Duration) {
        self.reconciles.get_or_create(&ResultLabel::of(ok)).inc();
        self.reconcile_seconds.observe(took.as_secs_f64());
    }

    /// Records what changed between two statuses of one rollout that was
    /// just written.
    pub(crate) fn observe(&self, before: &RolloutStatus, after: &RolloutStatus) {
        for decision in decisions(before, after) {
            self.decisions
                .get_or_create(&DecisionLabel { decision })
                .inc();
        }
        for step in &after.steps {
            let earlier = before.steps.iter().find(|s| s.index == step.index);
            if let Some(verdict) = step.verdict
                && earlier.and_then(|s| s.verdict).is_none()
            {
                self.verdicts
                    .get_or_create(&VerdictLabel {
                        verdict: verdict_name(verdict),
                    })
                    .inc();
            }
            if let (Some(started), Some(finished)) = (&step.started, &step.finished)
                && earlier.and_then(|s| s.finished.as_ref()).is_none()
                && let (Some(a), Some(b)) = (
                    crate::machine::parse_time(started),
                    crate::machine::parse_time(finished),
                )
            {
                let took = b.duration_since(a).unwrap_or_default();
                self.step_seconds.observe(took.as_secs_f64());
            }
        }
    }

    /// Whether this replica drives rollouts, and the cache it drives from.
    pub(crate) fn leading(&self, rollouts: Option<(Store<Rollout>, Watched<Held>)>) {
        self.leader.set(i64::from(rollouts.is_some()));
        *self
            .rollouts
            .store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = rollouts;
    }

    /// What the running controller's caches hold, counted at scrape time
    /// (`None` once it stops).
    pub(crate) fn caching(&self, counts: Option<CacheCounts>) {
        *self
            .cached
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = counts;
    }

    /// What the running controller's caches hold now, as
    /// `cached_objects` reports it: (resource, `whole` or `version`, count).
    pub fn cached_objects(&self) -> Vec<(&'static str, &'static str, i64)> {
        self.cached
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(|counts| counts())
            .unwrap_or_default()
    }

    /// The reconcile queue's depth now.
    pub(crate) fn queued(&self, [urgent, moving, other]: [usize; 3], running: usize) {
        for (gauge, n) in self
            .queue_states
            .iter()
            .zip([urgent, moving, other, running])
        {
            gauge.set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// A reconcile started after waiting `waited` in the queue.
    pub(crate) fn dequeued(&self, waited: Duration) {
        self.queue_wait.observe(waited.as_secs_f64());
    }

    /// A tower layer counting the Kubernetes API calls that pass through it.
    pub fn kube_layer(self: &Arc<Self>) -> KubeMetricsLayer {
        KubeMetricsLayer {
            metrics: Arc::clone(self),
        }
    }

    /// Calls to the Kubernetes API so far, across verbs and answers.
    pub fn kube_requests(&self) -> u64 {
        self.requests_total.load(Ordering::Relaxed)
    }

    /// Calls of `verb` (as `kube_requests_total` names it: `get`, `list`,
    /// `patch`...) to `resource` that the API server answered with `code`.
    pub fn kube_requests_of(&self, verb: &'static str, resource: &str, code: &str) -> u64 {
        self.requests
            .get(&RequestLabels {
                verb,
                resource: resource.to_owned(),
                code: code.to_owned(),
            })
            .map_or(0, |c| c.get())
    }

    /// Reconciles so far that ended well (`ok`) or in an error.
    pub fn reconciles(&self, ok: bool) -> u64 {
        self.reconciles
            .get(&ResultLabel::of(ok))
            .map_or(0, |c| c.get())
    }

    /// Decisions of one kind made so far (see the module's list).
    pub fn decisions(&self, decision: &'static str) -> u64 {
        self.decisions
            .get(&DecisionLabel { decision })
            .map_or(0, |c| c.get())
    }
}

/// The decisions one status change shows, in the order they were made.
fn decisions(before: &RolloutStatus, after: &RolloutStatus) -> Vec<&'static str> {
    let mut out = Vec::new();
    if before.phase == Phase::Pending && after.phase == Phase::Progressing {
        out.push("start");
    }
    if after.current_step > before.current_step && before.phase != Phase::Pending {
        out.push("advance");
    }
    if after.phase != before.phase {
        match after.phase {
            Phase::Paused => out.push("pause"),
            Phase::Progressing if before.phase == Phase::Paused => out.push("resume"),
            Phase::RollingBack => out.push("rollback"),
            Phase::RolledBack => out.push("rolled_back"),
            Phase::Succeeded => out.push("succeed"),
            Phase::Failed => out.push("fail"),
            _ => {}
        }
    }
    out
}

fn verdict_name(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Pass => "pass",
        Verdict::Fail => "fail",
        Verdict::Inconclusive => "inconclusive",
        Verdict::Error => "error",
    }
}

/// Encodes the gauge family `(name, help)`, one sample per labels and value.
fn gauges(
    encoder: &mut DescriptorEncoder,
    (name, help): (&str, &str),
    samples: impl IntoIterator<Item = (Vec<(&'static str, String)>, i64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Gauge,
    )?;
    for (labels, value) in samples {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A value as a `tokio::sync::watch` channel publishes it.
pub(crate) type Watched<T> = tokio::sync::watch::Receiver<T>;

/// Counts the Rollouts of the shards held by phase, from the controller's
/// cache on each scrape, and the shards held.
#[derive(Debug, Default)]
struct RolloutsByPhase {
    store: Mutex<Option<(Store<Rollout>, Watched<Held>)>>,
}

impl Collector for RolloutsByPhase {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let store = self
            .store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        // A replica that drives nothing counts nothing, as 0s, so a sum
        // over the replicas has every series from each.
        let (rollouts, held) = match store {
            Some((store, held)) => (store.state(), Some(held.borrow().clone())),
            None => (Vec::new(), None),
        };
        let mut counts: BTreeMap<String, i64> = [
            Phase::Pending,
            Phase::Progressing,
            Phase::Paused,
            Phase::RollingBack,
            Phase::Succeeded,
            Phase::RolledBack,
            Phase::Failed,
        ]
        .iter()
        .map(|p| (format!("{p:?}"), 0))
        .collect();
        for rollout in rollouts {
            let (namespace, name) = (rollout.namespace().unwrap_or_default(), rollout.name_any());
            if held
                .as_ref()
                .is_none_or(|h| h.of(&namespace, &name).is_none())
            {
                continue;
            }
            let phase = rollout.status.as_ref().map(|s| s.phase).unwrap_or_default();
            *counts.entry(format!("{phase:?}")).or_default() += 1;
        }
        gauges(
            &mut encoder,
            ("rollouts", "Rollouts in each phase"),
            counts
                .into_iter()
                .map(|(phase, count)| (vec![("phase", phase)], count)),
        )?;
        let shards = held.map_or(0, |h| i64::try_from(h.shards().count()).unwrap_or(i64::MAX));
        gauges(
            &mut encoder,
            ("shards", "Shards of the rollouts this replica drives"),
            [(vec![], shards)],
        )
    }
}

/// Counts the controller's cached workloads on each scrape.
#[derive(Default)]
struct CachedObjects {
    counts: Mutex<Option<CacheCounts>>,
}

impl std::fmt::Debug for CachedObjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CachedObjects")
    }
}

impl Collector for CachedObjects {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counts = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(|counts| counts());
        let Some(counts) = counts else {
            return Ok(());
        };
        gauges(
            &mut encoder,
            (
                "cached_objects",
                "Deployments and ReplicaSets the controller's watches hold, whole or as a version",
            ),
            counts.into_iter().map(|(resource, kept, count)| {
                (
                    vec![("resource", resource.to_owned()), ("kept", kept.to_owned())],
                    count,
                )
            }),
        )
    }
}

/// See [`Metrics::kube_layer`].
#[derive(Clone, Debug)]
pub struct KubeMetricsLayer {
    metrics: Arc<Metrics>,
}

impl<S> tower::Layer<S> for KubeMetricsLayer {
    type Service = KubeMetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        KubeMetricsService {
            inner,
            metrics: Arc::clone(&self.metrics),
        }
    }
}

/// See [`Metrics::kube_layer`].
#[derive(Clone, Debug)]
pub struct KubeMetricsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

/// The verb of a Kubernetes API request, as the API server's audit log
/// names it.
fn verb_of<B>(request: &http::Request<B>) -> &'static str {
    let query = request.uri().query().unwrap_or_default();
    let watch = query
        .split('&')
        .any(|p| p == "watch=true" || p == "watch=1");
    match *request.method() {
        http::Method::GET if watch => "watch",
        // A collection path has an even number of segments after the
        // group and version (`pods`, `namespaces/ns/pods`).
        http::Method::GET if resource_of(request.uri().path()).1 => "list",
        http::Method::GET => "get",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "other",
    }
}

/// The resource a path names (with a subresource after a `/`), and whether
/// it names a collection. A path that names no resource (discovery,
/// `/version`) is named by its first segment, so the label stays bounded.
fn resource_of(path: &str) -> (String, bool) {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match segments.as_slice() {
        ["api", _version, rest @ ..] if !rest.is_empty() => rest,
        ["apis", _group, _version, rest @ ..] if !rest.is_empty() => rest,
        [first, ..] => return (format!("/{first}"), false),
        [] => return ("/".to_owned(), false),
    };
    let rest = match rest {
        ["namespaces", _ns, rest @ ..] if !rest.is_empty() => rest,
        other => other,
    };
    match rest {
        [resource] => ((*resource).to_owned(), true),
        [resource, _name] => ((*resource).to_owned(), false),
        [resource, _name, sub, ..] => (format!("{resource}/{sub}"), false),
        [] => (String::new(), false),
    }
}

impl<S, B, R> tower::Service<http::Request<B>> for KubeMetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let verb = verb_of(&request);
        let resource = resource_of(request.uri().path()).0;
        let metrics = Arc::clone(&self.metrics);
        let start = Instant::now();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let result = answer.await;
            let code = match &result {
                Ok(response) => response.status().as_u16().to_string(),
                Err(_) => "error".to_owned(),
            };
            metrics
                .requests
                .get_or_create(&RequestLabels {
                    verb,
                    resource,
                    code,
                })
                .inc();
            metrics.requests_total.fetch_add(1, Ordering::Relaxed);
            metrics
                .request_seconds
                .get_or_create(&VerbLabel { verb })
                .observe(start.elapsed().as_secs_f64());
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_resource_and_whether_they_are_collections() {
        assert_eq!(resource_of("/api/v1/pods"), ("pods".into(), true));
        assert_eq!(
            resource_of("/api/v1/namespaces/default/pods"),
            ("pods".into(), true)
        );
        assert_eq!(
            resource_of("/apis/apps/v1/namespaces/default/deployments/web"),
            ("deployments".into(), false)
        );
        assert_eq!(
            resource_of("/apis/sluice.dev/v1alpha1/namespaces/a/rollouts/web/status"),
            ("rollouts/status".into(), false)
        );
        assert_eq!(
            resource_of("/api/v1/namespaces/a"),
            ("namespaces".into(), false)
        );
        assert_eq!(
            resource_of("/api/v1/namespaces"),
            ("namespaces".into(), true)
        );
        assert_eq!(resource_of("/version"), ("/version".into(), false));
        assert_eq!(resource_of("/apis/apps/v1"), ("/apis".into(), false));
        assert_eq!(resource_of("/api"), ("/api".into(), false));
    }

    #[test]
    fn a_rollback_after_a_failed_verdict_counts_one_rollback_and_one_fail_verdict() {
        use crate::crd::{StepRecord, StepState};
        let before = RolloutStatus {
            phase: Phase::Progressing,
            current_step: 1,
            steps: vec![StepRecord {
                index: 1,
                started: Some("2026-01-01T00:00:00Z".into()),
                state: StepState::Analyzing,
                ..StepRecord::default()
            }],
            ..RolloutStatus::default()
        };
        let mut after = before.clone();
        after.phase = Phase::RollingBack;
        after.steps[0].verdict = Some(Verdict::Fail);
        after.steps[0].finished = Some("2026-01-01T00:00:42Z".into());
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        metrics.observe(&before, &after);
        metrics.observe(&after, &after);
        let rollback = metrics.decisions.get_or_create(&DecisionLabel {
            decision: "rollback",
        });
        assert_eq!(rollback.get(), 1);
        let fail = metrics
            .verdicts
            .get_or_create(&VerdictLabel { verdict: "fail" });
        assert_eq!(fail.get(), 1);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("sluice_executor_step_duration_seconds_sum 42.0"),
            "{text}"
        );
        assert!(
            text.contains("sluice_executor_step_duration_seconds_count 1"),
            "{text}"
        );
    }

    #[test]
    fn the_reconcile_queue_shows_each_lane_and_the_wait() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let mut idle = String::new();
        prometheus_client::encoding::text::encode(&mut idle, &registry).unwrap();
        assert!(
            idle.contains(r#"sluice_executor_reconcile_queue{state="running"} 0"#),
            "shown at 0 before any reconcile: {idle}"
        );
        metrics.queued([1, 20, 300], 64);
        metrics.dequeued(Duration::from_millis(30));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            r#"sluice_executor_reconcile_queue{state="urgent"} 1"#,
            r#"sluice_executor_reconcile_queue{state="moving"} 20"#,
            r#"sluice_executor_reconcile_queue{state="other"} 300"#,
            r#"sluice_executor_reconcile_queue{state="running"} 64"#,
            r#"sluice_executor_reconcile_queue_wait_seconds_bucket{le="0.05"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing from {text}");
        }
    }

    #[test]
    fn the_cached_workloads_are_gauges_while_a_controller_runs() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let text = |registry: &Registry| {
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
            text
        };
        assert!(!text(&registry).contains("cached_objects"), "none before");
        metrics.caching(Some(Box::new(|| {
            vec![("deployments", "whole", 3), ("deployments", "version", 40)]
        })));
        let shown = text(&registry);
        assert!(
            shown.contains(
                r#"sluice_executor_cached_objects{resource="deployments",kept="whole"} 3"#
            ),
            "{shown}"
        );
        assert!(
            shown.contains(
                r#"sluice_executor_cached_objects{resource="deployments",kept="version"} 40"#
            ),
            "{shown}"
        );
        metrics.caching(None);
        assert!(!text(&registry).contains("cached_objects{"), "none after");
    }

    #[test]
    fn decisions_name_each_transition() {
        let at = |phase, step| RolloutStatus {
            phase,
            current_step: step,
            ..RolloutStatus::default()
        };
        assert_eq!(
            decisions(&at(Phase::Pending, 0), &at(Phase::Progressing, 0)),
            ["start"]
        );
        assert_eq!(
            decisions(&at(Phase::Progressing, 0), &at(Phase::Paused, 1)),
            ["advance", "pause"]
        );
        assert_eq!(
            decisions(&at(Phase::Paused, 1), &at(Phase::Progressing, 2)),
            ["advance", "resume"]
        );
        assert_eq!(
            decisions(&at(Phase::Progressing, 3), &at(Phase::Succeeded, 3)),
            ["succeed"]
        );
        assert!(decisions(&at(Phase::Progressing, 1), &at(Phase::Progressing, 1)).is_empty());
    }
}
