//! The simulated cluster's traffic and metrics: per-pod request counters
//! and latency histograms, exposed in the Prometheus text format at
//! `/metrics`, and a Prometheus-compatible query endpoint
//! (`/api/v1/query`, `/api/v1/query_range`) over the same series.
//!
//! # Metric names
//! - `http_requests_total{namespace, workload, revision, pod, version, code}`:
//!   requests served, by status code (`200` or `500`).
//! - `http_request_duration_seconds_bucket{namespace, workload, revision, pod, version, le}`
//!   with `_sum` and `_count`: latency.
//!
//! `workload` is the Deployment (or StatefulSet) name, `revision` the pod's
//! `pod-template-hash` (or `controller-revision-hash`), `version` its image tag.
//! Counters grow by their expected values (requests x error ratio, and
//! each bucket's share of a log-normal latency with the version's median and
//! 99th percentile), so runs are exactly repeatable.
//!
//! # Layout
//! - [`traffic`]: load profiles and routing.
//! - [`tsdb`], [`promql`]: stored samples and the query engine.
//! - [`http`]: the HTTP endpoints.

pub mod http;
pub mod promql;
pub mod traffic;
pub mod tsdb;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde_json::Value;
use tokio::time::Instant;

use sluice_sim_api::store::Store;
use sluice_sim_cluster::profile::Profiles;
use traffic::LoadProfile;
use tsdb::{Labels, Tsdb};

/// Latency bucket bounds, seconds.
pub const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// How long samples are kept for queries.
pub const RETENTION: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Clone)]
struct PodCounters {
    labels: Vec<(String, String)>,
    /// Its container image, which picks its version profile.
    image: String,
    /// The ids of its series in the store, in `series_values` order; made
    /// on its first tick.
    ids: Vec<usize>,
    ok: f64,
    errors: f64,
    buckets: [f64; BUCKETS.len()],
    sum: f64,
    count: f64,
}

/// The metrics state.
#[derive(Debug)]
pub struct State {
    /// Load on the entry points.
    pub loads: Vec<LoadProfile>,
    counters: HashMap<(String, String), PodCounters>,
    /// The stored samples.
    pub tsdb: Tsdb,
    first_seen: HashMap<String, Instant>,
    start: Instant,
}

/// Traffic and metrics for one simulated cluster.
#[derive(Clone)]
pub struct Metrics {
    /// Shared state. A query holds it while it runs (up to its timeout):
    /// it is taken only off the async threads, so the API server beside
    /// it never waits for a query.
    pub state: Arc<Mutex<State>>,
    /// When set, the query endpoint answers 503 (a Prometheus outage).
    pub unavailable: Arc<std::sync::atomic::AtomicBool>,
    store: Arc<Store>,
    profiles: Arc<RwLock<Profiles>>,
    clock: Arc<dyn Fn() -> SystemTime + Send + Sync>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// The standard normal CDF (Abramowitz and Stegun 7.1.26, error < 1.5e-7).
fn normal_cdf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs() / std::f64::consts::SQRT_2);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-(x * x) / 2.0).exp();
    if x >= 0.0 {
        0.5 * (1.0 + erf)
    } else {
        0.5 * (1.0 - erf)
    }
}

/// Share of requests at most `bound` seconds, for a log-normal latency.
fn latency_cdf(bound: f64, p50: f64, p99: f64) -> f64 {
    let sigma = ((p99 / p50).max(1.000_001)).ln() / 2.326_348;
    normal_cdf((bound.ln() - p50.ln()) / sigma)
}

fn text<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .fold(v, |v, p| &v[*p])
        .as_str()
        .unwrap_or_default()
}

/// The image of a pod's first container.
fn image_of(pod: &Value) -> &str {
    pod["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default()
}

fn pod_labels(pod: &Value) -> Vec<(String, String)> {
    let labels = &pod["metadata"]["labels"];
    let revision = labels["pod-template-hash"]
        .as_str()
        .or(labels["controller-revision-hash"].as_str())
        .unwrap_or_default()
        .to_owned();
    let owner = &pod["metadata"]["ownerReferences"][0];
    let owner_name = owner["name"].as_str().unwrap_or_default();
    let workload = match owner["kind"].as_str() {
        Some("ReplicaSet") => owner_name
            .strip_suffix(&format!("-{revision}"))
            .unwrap_or(owner_name)
            .to_owned(),
        Some(_) => owner_name.to_owned(),
        None => text(pod, &["metadata", "name"]).to_owned(),
    };
    let version = image_of(pod)
        .rsplit_once(':')
        .map_or("latest", |(_, tag)| tag)
        .to_owned();
    vec![
        (
            "namespace".into(),
            text(pod, &["metadata", "namespace"]).to_owned(),
        ),
        ("workload".into(), workload),
        ("revision".into(), revision),
        ("pod".into(), text(pod, &["metadata", "name"]).to_owned()),
        ("version".into(), version),
    ]
}

impl Metrics {
    /// Metrics for the cluster in `store`, with version behaviour from `profiles`.
    pub fn new(
        store: Arc<Store>,
        profiles: Arc<RwLock<Profiles>>,
        clock: Arc<dyn Fn() -> SystemTime + Send + Sync>,
    ) -> Self {
        let state = State {
            loads: Vec::new(),
            counters: HashMap::new(),
            tsdb: Tsdb::new(RETENTION.as_millis() as i64),
            first_seen: HashMap::new(),
            start: Instant::now(),
        };
        Self {
            state: Arc::new(Mutex::new(state)),
            unavailable: Arc::default(),
            store,
            profiles,
            clock,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cluster's time in milliseconds since the epoch.
    pub fn now_ms(&self) -> i64 {
        (self.clock)()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }

    /// Replaces the load profiles.
    pub fn set_loads(&self, loads: Vec<LoadProfile>) {
        self.lock().loads = loads;
    }

    /// Serves `dt` of traffic: counters grow, and one sample per series is stored.
    pub fn tick(&self, dt: Duration) {
        let now = Instant::now();
        let at = self.now_ms();
        let (loads, elapsed) = {
            let state = self.lock();
            (
                state.loads.clone(),
                now.duration_since(state.start).as_secs_f64(),
            )
        };
        let per_pod = traffic::split(&self.store, &loads, elapsed);
        let Some(pods_res) = self.store.resource("", "pods") else {
            return;
        };
        let profiles = self.profiles.read().map(|p| p.clone()).unwrap_or_default();
        let mut state = self.lock();
        for ((ns, pod), rps) in &per_pod {
            let key = (ns.clone(), pod.clone());
            // A pod is read once, when it first takes traffic: its image
            // and labels do not change.
            if !state.counters.contains_key(&key) {
                let Ok(object) = self.store.get_value(&pods_res, ns, pod) else {
                    continue;
                };
                state.counters.insert(
                    key.clone(),
                    PodCounters {
                        labels: pod_labels(&object),
                        image: image_of(&object).to_owned(),
                        ids: Vec::new(),
                        ok: 0.0,
                        errors: 0.0,
                        buckets: [0.0; BUCKETS.len()],
                        sum: 0.0,
                        count: 0.0,
                    },
                );
            }
            let image = state.counters[&key].image.clone();
            let started = *state.first_seen.entry(image.clone()).or_insert(now);
            let profile = profiles.of(&image);
            let (error_ratio, p50_ms, p99_ms) = profile.at(now.duration_since(started));
            let extra = profile.latency_per_rps_ms * rps;
            let (p50, p99) = ((p50_ms + extra) / 1000.0, (p99_ms + extra) / 1000.0);
            let requests = rps * dt.as_secs_f64();
            let Some(counters) = state.counters.get_mut(&key) else {
                continue;
            };
            counters.errors += requests * error_ratio;
            counters.ok += requests * (1.0 - error_ratio);
            for (i, bound) in BUCKETS.iter().enumerate() {
                counters.buckets[i] += requests * latency_cdf(*bound, p50, p99);
            }
            let sigma = ((p99 / p50).max(1.000_001)).ln() / 2.326_348;
            counters.sum += requests * p50 * (sigma * sigma / 2.0).exp();
            counters.count += requests;
        }
        // Pods that are gone stop being reported, as their targets would.
        // Their series end with a staleness marker, as Prometheus writes
        // one when a target or a series is gone from a scrape: an instant
        // query no longer finds them, instead of for five more minutes.
        let State { counters, tsdb, .. } = &mut *state;
        counters.retain(|(ns, pod), c| {
            let live = self.store.get(&pods_res, ns, pod).is_ok();
            if !live {
                for id in &c.ids {
                    tsdb.append_id(*id, at, tsdb::stale_marker());
                }
            }
            live
        });
        for c in counters.values_mut() {
            if c.ids.is_empty() {
                c.ids = series_labels(&c.labels)
                    .iter()
                    .map(|labels| tsdb.id(labels))
                    .collect();
            }
            for (id, value) in c.ids.iter().zip(series_values(c)) {
                tsdb.append_id(*id, at, value);
            }
        }
    }

    /// The Prometheus text exposition of every live pod's series.
    pub fn exposition(&self) -> String {
        use std::fmt::Write as _;
        let state = self.lock();
        let mut pods: Vec<&PodCounters> = state.counters.values().collect();
        pods.sort_by(|a, b| a.labels.cmp(&b.labels));
        let mut out = String::with_capacity(pods.len() * 1600);
        out.push_str("# HELP http_requests_total Requests served, by status code.\n# TYPE http_requests_total counter\n");
        for c in &pods {
            let l = render(&c.labels);
            let _ = writeln!(out, "http_requests_total{{{l},code=\"200\"}} {}", c.ok);
            let _ = writeln!(out, "http_requests_total{{{l},code=\"500\"}} {}", c.errors);
        }
        out.push_str("# HELP http_request_duration_seconds Time to serve a request.\n# TYPE http_request_duration_seconds histogram\n");
        for c in &pods {
            let l = render(&c.labels);
            for (bound, count) in BUCKETS.iter().zip(c.buckets) {
                let _ = writeln!(
                    out,
                    "http_request_duration_seconds_bucket{{{l},le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "http_request_duration_seconds_bucket{{{l},le=\"+Inf\"}} {}",
                c.count
            );
            let _ = writeln!(out, "http_request_duration_seconds_sum{{{l}}} {}", c.sum);
            let _ = writeln!(
                out,
                "http_request_duration_seconds_count{{{l}}} {}",
                c.count
            );
        }
        out
    }
}

fn render(labels: &[(String, String)]) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect::<Vec<_>>()
        .join(",")
}

/// The label sets of a pod's series: requests by code, then the latency
/// sum, count, `+Inf` bucket and the finite buckets.
fn series_labels(pod: &[(String, String)]) -> Vec<Labels> {
    let base: Vec<(&str, &str)> = pod.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let labelled = |name: &str, extra: Option<(&str, &str)>| -> Labels {
        let mut l = base.clone();
        l.extend(extra);
        Tsdb::labels(name, &l)
    };
    let mut out = vec![
        labelled("http_requests_total", Some(("code", "200"))),
        labelled("http_requests_total", Some(("code", "500"))),
        labelled("http_request_duration_seconds_sum", None),
        labelled("http_request_duration_seconds_count", None),
        labelled("http_request_duration_seconds_bucket", Some(("le", "+Inf"))),
    ];
    for bound in BUCKETS {
        let le = bound.to_string();
        out.push(labelled(
            "http_request_duration_seconds_bucket",
            Some(("le", &le)),
        ));
    }
    out
}

/// A pod's values, in [`series_labels`] order.
fn series_values(c: &PodCounters) -> impl Iterator<Item = f64> + '_ {
    [c.ok, c.errors, c.sum, c.count, c.count]
        .into_iter()
        .chain(c.buckets.iter().copied())
}

/// Serves one simulated second of traffic every `every` of tokio time
/// (a second, or less when the scenario runs faster) until `stop`.
pub async fn run(metrics: Metrics, every: Duration, stop: tokio_util::sync::CancellationToken) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = interval.tick() => {
                // Off the async threads: a long query may hold the state.
                let metrics = metrics.clone();
                let ticked = tokio::task::spawn_blocking(move || metrics.tick(Duration::from_secs(1)));
                if ticked.await.is_err() {
                    return;
                }
            }
        }
    }
}
