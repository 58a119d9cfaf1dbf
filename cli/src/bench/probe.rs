//! What the harness watches and counts while rollouts run: ReplicaSet and
//! Rollout events (for step-advance and decision latencies), calls to the
//! API server and to the gRPC services, and CPU time per thread group.
//!
//! Both ends of each latency are seen through the same watch, so the watch
//! delivery delay cancels out of the difference.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::{
    Api, Client, ResourceExt,
    runtime::{WatchStreamExt, watcher},
};
use sluice_executor::crd::{Phase, Rollout, RolloutStatus, Verdict};

/// A counter shared with a layer or an interceptor.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counter(Arc<AtomicU64>);

impl Counter {
    pub(crate) fn add(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Requests counted by verb and resource.
#[derive(Debug, Clone, Default)]
pub(crate) struct Requests(Arc<std::sync::Mutex<std::collections::BTreeMap<String, u64>>>);

impl Requests {
    pub(crate) fn add(&self, method: &axum::http::Method, uri: &axum::http::Uri) {
        let key = request_kind(method, uri);
        *self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default() += 1;
    }

    /// `router` with every request through it counted while `on` holds.
    pub(crate) fn counting(&self, router: axum::Router, on: Arc<AtomicBool>) -> axum::Router {
        let counts = self.clone();
        router.layer(axum::middleware::map_request(
            move |r: axum::extract::Request| {
                if on.load(Ordering::Relaxed) {
                    counts.add(r.method(), r.uri());
                }
                async move { r }
            },
        ))
    }

    /// Each count divided by `n`.
    pub(crate) fn per(&self, n: usize) -> std::collections::BTreeMap<String, f64> {
        let counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        counts
            .iter()
            .map(|(k, v)| (k.clone(), *v as f64 / n.max(1) as f64))
            .collect()
    }
}

/// The samples of counter `metric` on a Prometheus metrics page, summed by
/// the name `key` gives each from its labels (`label(name)` reads one).
pub(crate) fn summed(
    text: &str,
    metric: &str,
    key: impl Fn(&dyn Fn(&str) -> String) -> String,
) -> std::collections::BTreeMap<String, u64> {
    let mut by = std::collections::BTreeMap::new();
    let open = format!("{metric}{{");
    for line in text.lines() {
        let Some((labels, value)) = line
            .strip_prefix(&open)
            .and_then(|rest| rest.split_once("} "))
        else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.trim_matches('"').to_owned())
                .unwrap_or_default()
        };
        let count = value.trim().parse::<f64>().unwrap_or(0.0) as u64;
        *by.entry(key(&label)).or_default() += count;
    }
    by
}

/// `VERB resource[/subresource]` of a Kubernetes API request, with the
/// verb as kube-apiserver names it (a GET with `watch=true` is WATCH, a
/// GET of a collection LIST).
fn request_kind(method: &axum::http::Method, uri: &axum::http::Uri) -> String {
    let parts: Vec<&str> = uri.path().split('/').filter(|p| !p.is_empty()).collect();
    // /api/v1/... or /apis/group/version/...
    let rest = match parts.first() {
        Some(&"api") => parts.get(2..).unwrap_or_default(),
        Some(&"apis") => parts.get(3..).unwrap_or_default(),
        _ => return format!("{method} {}", uri.path()),
    };
    let rest = match rest {
        ["namespaces", _, more @ ..] if !more.is_empty() => more,
        other => other,
    };
    let (resource, named, sub) = match rest {
        [r] => (*r, false, None),
        [r, _] => (*r, true, None),
        [r, _, s, ..] => (*r, true, Some(*s)),
        [] => ("", false, None),
    };
    let query = uri.query().unwrap_or_default();
    let verb = match method.as_str() {
        "GET"
            if query
                .split('&')
                .any(|q| q == "watch=true" || q == "watch=1") =>
        {
            "WATCH"
        }
        "GET" if !named => "LIST",
        other => other,
    };
    match sub {
        Some(s) => format!("{verb} {resource}/{s}"),
        None => format!("{verb} {resource}"),
    }
}

#[derive(Debug, Default)]
struct Seen {
    /// Per ReplicaSet uid: created by the release (first seen with its
    /// mark), its spec replicas, and its status as last seen.
    sets: HashMap<String, (bool, i32, String)>,
    /// Per rollout: when one of its ReplicaSets' status last changed.
    last_status: HashMap<String, Instant>,
    /// Step-advance samples.
    advances: Vec<Duration>,
    /// Per rollout: when its canary ReplicaSet went to 0 (traffic and pods
    /// off the new version).
    drained: HashMap<String, SystemTime>,
    /// Per rollout: when a failed verdict first showed in its status.
    verdicts: HashMap<String, SystemTime>,
    /// Per rollout: its status as last seen.
    statuses: HashMap<String, RolloutStatus>,
    /// Per rollout: when its status first showed an ended phase.
    ended_at: HashMap<String, Instant>,
}

/// Watches ReplicaSets and Rollouts until dropped.
#[derive(Debug, Clone, Default)]
pub(crate) struct Watch {
    seen: Arc<Mutex<Seen>>,
}

fn status_text(rs: &ReplicaSet) -> String {
    rs.status.as_ref().map_or_else(String::new, |s| {
        format!(
            "{}/{}/{}",
            s.replicas,
            s.ready_replicas.unwrap_or(0),
            s.available_replicas.unwrap_or(0)
        )
    })
}

impl Watch {
    /// Starts watching through `client`, in namespaces starting with
    /// `prefix`.
    pub(crate) fn start(client: &Client, prefix: &str) -> Self {
        let watch = Self::default();
        let sets = Api::<ReplicaSet>::all(client.clone());
        let seen = Arc::clone(&watch.seen);
        let (sets_prefix, rollouts_prefix) = (prefix.to_owned(), prefix.to_owned());
        tokio::spawn(async move {
            let mut events =
                std::pin::pin!(watcher(sets, watcher::Config::default()).applied_objects());
            while let Some(Ok(rs)) = events.next().await {
                if !rs
                    .namespace()
                    .is_some_and(|ns| ns.starts_with(&sets_prefix))
                {
                    continue;
                }
                // The bench names each Rollout after its Deployment; a
                // release marks only the sets it creates, not the stable one,
                // so its sets are found by their owner.
                let Some(rollout) = rs
                    .owner_references()
                    .iter()
                    .find(|o| o.kind == "Deployment")
                    .map(|o| o.name.clone())
                else {
                    continue;
                };
                let key = format!("{}/{rollout}", rs.namespace().unwrap_or_default());
                let spec = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
                let status = status_text(&rs);
                let now = Instant::now();
                let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                let uid = rs.uid().unwrap_or_default();
                // The set a release creates carries its mark from the start
                // (with the first batch's pods); the stable one never does.
                let marked = rs
                    .annotations()
                    .contains_key(sluice_executor::keys::ROLLOUT);
                let (is_new, before, old_status) =
                    seen.sets
                        .get(&uid)
                        .cloned()
                        .unwrap_or((marked, spec, String::new()));
                if is_new && spec > before && before >= 1 {
                    // The first patch of a later batch: the batch before
                    // was complete at the last status change.
                    if let Some(at) = seen.last_status.get(&key) {
                        let sample = now.duration_since(*at);
                        seen.advances.push(sample);
                    }
                }
                if is_new && spec == 0 && before > 0 {
                    seen.drained.insert(key.clone(), SystemTime::now());
                }
                if status != old_status {
                    seen.last_status.insert(key, now);
                }
                seen.sets.insert(uid, (is_new, spec, status));
            }
        });
        let rollouts = Api::<Rollout>::all(client.clone());
        let seen = Arc::clone(&watch.seen);
        tokio::spawn(async move {
            let mut events =
                std::pin::pin!(watcher(rollouts, watcher::Config::default()).applied_objects());
            while let Some(Ok(r)) = events.next().await {
                if !r
                    .namespace()
                    .is_some_and(|ns| ns.starts_with(&rollouts_prefix))
                {
                    continue;
                }
                let key = format!("{}/{}", r.namespace().unwrap_or_default(), r.name_any());
                // A status written before the spec last changed is the
                // previous release's (a replaced spec's first event).
                let current = |s: &&sluice_executor::crd::RolloutStatus| {
                    s.observed_generation >= r.metadata.generation.unwrap_or(0)
                };
                if let Some(status) = r.status.as_ref().filter(current) {
                    let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                    if matches!(
                        status.phase,
                        Phase::Succeeded | Phase::RolledBack | Phase::Failed
                    ) {
                        seen.ended_at
                            .entry(key.clone())
                            .or_insert_with(Instant::now);
                    }
                    seen.statuses.insert(key.clone(), status.clone());
                }
                let failed = r
                    .status
                    .as_ref()
                    .and_then(|s| s.analysis.as_ref())
                    .and_then(|a| a.verdict)
                    == Some(Verdict::Fail);
                if failed {
                    let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                    seen.verdicts.entry(key).or_insert_with(SystemTime::now);
                }
            }
        });
        watch
    }

    /// Forgets every release seen so far (the sets' counts stay).
    pub(crate) fn forget(&self) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let sets = std::mem::take(&mut seen.sets);
        *seen = Seen {
            sets,
            ..Seen::default()
        };
    }

    /// Step-advance samples so far.
    pub(crate) fn advances(&self) -> Vec<Duration> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .advances
            .clone()
    }

    /// Each ended release's time from `began`.
    pub(crate) fn release_times(&self, began: Instant) -> Vec<Duration> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .ended_at
            .values()
            .map(|t| t.saturating_duration_since(began))
            .collect()
    }

    /// How many rollouts have ended; cheap enough to ask often.
    pub(crate) fn ended(&self) -> usize {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.statuses
            .values()
            .filter(|s| {
                matches!(
                    s.phase,
                    Phase::Succeeded | Phase::RolledBack | Phase::Failed
                )
            })
            .count()
    }

    /// The statuses of the rollouts that ended, and of the others.
    pub(crate) fn outcomes(&self) -> (HashMap<String, RolloutStatus>, Vec<RolloutStatus>) {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let mut ended = HashMap::new();
        let mut running = Vec::new();
        for (key, status) in &seen.statuses {
            if matches!(
                status.phase,
                Phase::Succeeded | Phase::RolledBack | Phase::Failed
            ) {
                ended.insert(key.clone(), status.clone());
            } else {
                running.push(status.clone());
            }
        }
        (ended, running)
    }

    /// When the rollout's failed verdict was recorded and when its new pods
    /// were drained.
    pub(crate) fn decision(&self, key: &str) -> (Option<SystemTime>, Option<SystemTime>) {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        (
            seen.verdicts.get(key).copied(),
            seen.drained.get(key).copied(),
        )
    }
}

/// Resident and peak resident memory, in bytes, of the process `pid`
/// (`self` for this one).
pub(crate) fn memory(pid: &str) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU seconds (user and system) the process `pid` has used.
pub(crate) fn process_cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(close) = stat.rfind(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    // utime and stime are the 14th and 15th fields; the 3rd is index 0.
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    ticks / 100.0 // USER_HZ on Linux
}

/// The value at quantile `q` (0 to 1) of `samples`, in milliseconds.
pub(crate) fn quantile_ms(samples: &[Duration], q: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted: Vec<Duration> = samples.to_vec();
    sorted.sort();
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    Some(sorted[index.min(sorted.len() - 1)].as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_named_by_verb_and_resource_as_the_api_server_names_them() {
        let kind = |m: &str, u: &str| request_kind(&m.parse().unwrap(), &u.parse().unwrap());
        assert_eq!(
            kind(
                "GET",
                "/apis/apps/v1/namespaces/d/replicasets?labelSelector=a"
            ),
            "LIST replicasets"
        );
        assert_eq!(
            kind(
                "GET",
                "/apis/apps/v1/replicasets?watch=true&resourceVersion=3"
            ),
            "WATCH replicasets"
        );
        assert_eq!(
            kind("GET", "/apis/apps/v1/namespaces/d/deployments/web"),
            "GET deployments"
        );
        assert_eq!(
            kind(
                "PATCH",
                "/apis/sluice.dev/v1alpha1/namespaces/d/rollouts/web/status"
            ),
            "PATCH rollouts/status"
        );
        assert_eq!(kind("POST", "/api/v1/namespaces/d/events"), "POST events");
        assert_eq!(kind("GET", "/api/v1/namespaces"), "LIST namespaces");
        assert_eq!(kind("GET", "/api/v1/namespaces/d"), "GET namespaces");
        assert_eq!(kind("GET", "/version"), "GET /version");
    }

    #[tokio::test]
    async fn requests_are_counted_by_kind_only_while_switched_on() {
        let on = Arc::new(AtomicBool::new(false));
        let counts = Requests::default();
        let router = counts.counting(
            axum::Router::new().fallback(|| async { "{}" }),
            Arc::clone(&on),
        );
        let client = kube::Client::new(router, "default");
        let list = || {
            axum::http::Request::get("/api/v1/namespaces/d/pods")
                .body(Vec::new())
                .unwrap()
        };
        client.request_text(list()).await.unwrap();
        assert!(counts.per(1).is_empty(), "switched off");
        on.store(true, Ordering::Relaxed);
        client.request_text(list()).await.unwrap();
        client.request_text(list()).await.unwrap();
        assert_eq!(counts.per(2).get("LIST pods"), Some(&1.0));
    }

    #[test]
    fn quantiles_pick_the_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile_ms(&samples, 0.5), Some(51.0));
        assert_eq!(quantile_ms(&samples, 0.99), Some(99.0));
        assert_eq!(quantile_ms(&[], 0.5), None);
    }

    #[test]
    fn this_process_cpu_time_and_memory_are_read() {
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(200) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(process_cpu_seconds("self") > 0.0 && x > 0);
        let (rss, peak) = memory("self");
        assert!(rss > 0 && peak >= rss);
        assert_eq!(process_cpu_seconds("no-such-process"), 0.0);
    }
}
