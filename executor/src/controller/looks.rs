//! Pod lists shared by the releases waiting in one namespace.
//!
//! A batch whose new pods are slow to come up is looked at for a pod that
//! cannot run (a crash loop, an image that cannot be pulled) a few times
//! (`Ctx::pod_check`). On a busy cluster many releases wait at once, and a
//! list each cost a real API server most of a release's requests (7 of
//! 23.5 per release at 1,000 releases on the real control plane). So:
//! - the looks asked for in one namespace within [`GATHER`] of each other
//!   are made as one list, with a set-based selector over every revision
//!   asked for (`pod-template-hash in (a,b,c)`), and each release reads its
//!   own pods from the answer;
//! - that list also covers every revision looked for in the namespace in
//!   the last [`LINGER`] (the releases still waiting there, which look
//!   again within it), and its answer is kept: a look whose revision it
//!   covered is answered from it, without a request, for [`FRESH`].
//!
//! The first asker of a namespace gathers: it waits [`GATHER`], takes every
//! revision asked for meanwhile and the lingering ones (at most
//! [`MAX_VALUES`]), lists and hands the answer to the others. An asker whose
//! gatherer went away (its reconcile was dropped) or failed lists its own
//! pods alone, so every asker gets its own answer or its own error.
//!
//! A look answered from a kept list sees the pods as they were up to
//! [`FRESH`] ago: a pod that cannot run is named that much later at most,
//! well within the looks' own spacing (2 s, then doubling up to 30 s).

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, ObjectList},
};
use tokio::{sync::watch, time::Instant};

/// How long the first look of a namespace waits for others to join it.
pub(crate) const GATHER: Duration = Duration::from_millis(50);

/// How long a list answers the looks of the revisions it covered.
pub(crate) const FRESH: Duration = Duration::from_secs(3);

/// How long a revision looked for stays in the namespace's next lists:
/// past the longest spacing of one release's looks (`POD_CHECK_MAX`), so a
/// release still waiting finds its pods in the list made last.
pub(crate) const LINGER: Duration = super::POD_CHECK_MAX.saturating_add(Duration::from_secs(5));

/// Revisions listed together at most (a selector of some 2 KiB).
pub(crate) const MAX_VALUES: usize = 150;

/// What a look needs of a pod: kept small, as a namespace's last list is
/// kept for [`FRESH`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PodLook {
    pub name: String,
    /// Its labels, as the look's selector reads them.
    labels: Vec<(String, String)>,
    /// Being deleted: not a pod of the batch any more.
    pub deleting: bool,
    pub containers: Vec<ContainerLook>,
}

/// What a look needs of a container's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ContainerLook {
    pub name: String,
    /// Why it is waiting, when it is.
    pub waiting: Option<String>,
    pub restarts: i32,
}

impl PodLook {
    /// What a look reads of `pod`; `keys`: the labels it may select on.
    pub(crate) fn of(pod: &Pod, keys: &[&str]) -> Self {
        let labels = pod.labels();
        Self {
            name: pod.name_any(),
            labels: keys
                .iter()
                .filter_map(|k| Some(((*k).to_owned(), labels.get(*k)?.clone())))
                .collect(),
            deleting: pod.metadata.deletion_timestamp.is_some(),
            containers: pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .into_iter()
                .flatten()
                .map(|c| ContainerLook {
                    name: c.name.clone(),
                    waiting: c
                        .state
                        .as_ref()
                        .and_then(|s| s.waiting.as_ref())
                        .and_then(|w| w.reason.clone()),
                    restarts: c.restart_count,
                })
                .collect(),
        }
    }

    fn labelled(&self, key: &str, value: &str) -> bool {
        self.labels.iter().any(|(k, v)| k == key && v == value)
    }
}

/// What a shared list found: every pod it returned, or that it failed.
type Answer = Option<Result<Arc<Vec<PodLook>>, ()>>;

/// A list being gathered for one (namespace, label key).
struct Gathering {
    id: u64,
    values: BTreeSet<String>,
    answer: watch::Receiver<Answer>,
}

/// The last list of a (namespace, label key): when it was asked for, the
/// revisions it covered and what it found.
struct Last {
    at: Instant,
    values: BTreeSet<String>,
    pods: Arc<Vec<PodLook>>,
}

/// One (namespace, label key)'s looks.
#[derive(Default)]
struct Looks {
    gathering: Option<Gathering>,
    /// Revisions looked for, and when last.
    asked: HashMap<String, Instant>,
    last: Option<Last>,
}

/// The looks of every namespace, by (namespace, label key).
#[derive(Default)]
pub(crate) struct PodLooks {
    namespaces: Mutex<HashMap<(String, String), Looks>>,
    next_id: std::sync::atomic::AtomicU64,
}

/// Takes a gathering out of the map when its gatherer ends, however it
/// ends, so that nobody joins a list that will never be made.
struct Gatherer<'a> {
    looks: &'a PodLooks,
    slot: (String, String),
    id: u64,
}

impl Gatherer<'_> {
    /// The revisions to list: those asked for while gathering, then those
    /// looked for within [`LINGER`], at most [`MAX_VALUES`].
    fn take(&self) -> BTreeSet<String> {
        let mut map = self.looks.lock();
        let Some(looks) = map.get_mut(&self.slot) else {
            return BTreeSet::new();
        };
        let Some(mut values) = looks
            .gathering
            .take_if(|g| g.id == self.id)
            .map(|g| g.values)
        else {
            return BTreeSet::new();
        };
        let now = Instant::now();
        looks.asked.retain(|_, at| now.duration_since(*at) < LINGER);
        let mut lingering: Vec<(&String, &Instant)> = looks
            .asked
            .iter()
            .filter(|(v, _)| !values.contains(*v))
            .collect();
        // The most recently asked first: the likeliest to ask again.
        lingering.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        let room = MAX_VALUES.saturating_sub(values.len());
        values.extend(lingering.into_iter().take(room).map(|(v, _)| v.clone()));
        values
    }

    /// Keeps what the list asked for at `at` found.
    fn keep(&self, at: Instant, values: BTreeSet<String>, pods: Arc<Vec<PodLook>>) {
        let mut map = self.looks.lock();
        let looks = map.entry(self.slot.clone()).or_default();
        if looks.last.as_ref().is_none_or(|l| l.at <= at) {
            looks.last = Some(Last { at, values, pods });
        }
    }
}

impl Drop for Gatherer<'_> {
    fn drop(&mut self) {
        let mut map = self.looks.lock();
        if let Some(looks) = map.get_mut(&self.slot) {
            looks.gathering.take_if(|g| g.id == self.id);
        }
    }
}

impl PodLooks {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Looks>> {
        self.namespaces
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The pods of namespace `ns` labelled `key=value`: from the
    /// namespace's last list when it covered `value` within [`FRESH`],
    /// otherwise listed together with every other value of `key` asked for
    /// in `ns` meanwhile or within [`LINGER`].
    pub(crate) async fn pods(
        &self,
        client: &Client,
        ns: &str,
        key: &str,
        value: &str,
    ) -> Result<Vec<PodLook>, kube::Error> {
        let slot = (ns.to_owned(), key.to_owned());
        let now = Instant::now();
        let joined = {
            let mut map = self.lock();
            // Namespaces nobody looked at for a while are forgotten.
            map.retain(|_, l| {
                l.gathering.is_some() || l.asked.values().any(|at| now.duration_since(*at) < LINGER)
            });
            let looks = map.entry(slot.clone()).or_default();
            looks.asked.insert(value.to_owned(), now);
            if let Some(last) = looks
                .last
                .as_ref()
                .filter(|l| now.duration_since(l.at) < FRESH && l.values.contains(value))
            {
                return Ok(labelled(&last.pods, key, value));
            }
            match &mut looks.gathering {
                Some(g) if g.values.len() < MAX_VALUES || g.values.contains(value) => {
                    g.values.insert(value.to_owned());
                    Ok(Some(g.answer.clone()))
                }
                // Full: this look goes alone.
                Some(_) => Err(()),
                None => Ok(None),
            }
        };
        let Ok(joined) = joined else {
            return alone(client, ns, key, value).await;
        };
        if let Some(mut answer) = joined {
            let shared = answer
                .wait_for(Option::is_some)
                .await
                .ok()
                .and_then(|a| a.clone());
            return match shared {
                Some(Ok(pods)) => Ok(labelled(&pods, key, value)),
                // The gatherer failed or went away: alone, with its own
                // error if it fails too.
                _ => alone(client, ns, key, value).await,
            };
        }
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tell, answer) = watch::channel(None);
        self.lock().entry(slot.clone()).or_default().gathering = Some(Gathering {
            id,
            values: [value.to_owned()].into(),
            answer,
        });
        let gatherer = Gatherer {
            looks: self,
            slot,
            id,
        };
        tokio::time::sleep(GATHER).await;
        let mut values = gatherer.take();
        values.insert(value.to_owned());
        let selector = if values.len() <= 1 {
            format!("{key}={value}")
        } else {
            format!(
                "{key} in ({})",
                values.iter().cloned().collect::<Vec<_>>().join(",")
            )
        };
        let at = Instant::now();
        match list(client, ns, &selector).await {
            Ok(found) => {
                let pods: Arc<Vec<PodLook>> =
                    Arc::new(found.items.iter().map(|p| PodLook::of(p, &[key])).collect());
                tell.send_replace(Some(Ok(Arc::clone(&pods))));
                let mine = labelled(&pods, key, value);
                gatherer.keep(at, values, pods);
                Ok(mine)
            }
            Err(e) => {
                tell.send_replace(Some(Err(())));
                Err(e)
            }
        }
    }
}

/// The pods labelled `key=value`, listed alone.
async fn alone(
    client: &Client,
    ns: &str,
    key: &str,
    value: &str,
) -> Result<Vec<PodLook>, kube::Error> {
    let found = list(client, ns, &format!("{key}={value}")).await?;
    Ok(found.items.iter().map(|p| PodLook::of(p, &[key])).collect())
}

pub(crate) async fn list(
    client: &Client,
    ns: &str,
    selector: &str,
) -> Result<ObjectList<Pod>, kube::Error> {
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(selector))
        .await
}

/// The pods of `pods` labelled `key=value`.
fn labelled(pods: &[PodLook], key: &str, value: &str) -> Vec<PodLook> {
    pods.iter()
        .filter(|p| p.labelled(key, value))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Arc;

    use k8s_openapi::api::core::v1::Pod;
    use kube::{Api, api::PostParams};
    use serde_json::json;
    use sluice_sim::scenario::{Scenario, Simulation};

    use super::{FRESH, GATHER, LINGER, PodLook, PodLooks};
    use crate::metrics::Metrics;

    const KEY: &str = "pod-template-hash";

    async fn cluster() -> (Simulation, kube::Client, Arc<Metrics>) {
        let sim = Simulation::start(Scenario::load("healthy").unwrap()).unwrap();
        let metrics = Arc::<Metrics>::default();
        let client = crate::client_over(sim.api.router(), "default", &metrics);
        let pods: Api<Pod> = Api::default_namespaced(client.clone());
        for (i, hash) in ["a1", "b2", "c3", "b2"].iter().enumerate() {
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"name": format!("p{i}"), "labels": {KEY: hash}},
                "spec": {"containers": [{"name": "app", "image": "x:1"}]},
            }))
            .unwrap();
            pods.create(&PostParams::default(), &pod).await.unwrap();
        }
        (sim, client, metrics)
    }

    fn names(pods: &[PodLook]) -> Vec<String> {
        let mut n: Vec<String> = pods.iter().map(|p| p.name.clone()).collect();
        n.sort();
        n
    }

    #[tokio::test(start_paused = true)]
    async fn looks_asked_together_in_a_namespace_are_one_list_each_answered_with_its_own_pods() {
        let (_sim, client, metrics) = cluster().await;
        let looks = PodLooks::default();
        let before = metrics.kube_requests();
        let (a, b, none) = tokio::join!(
            looks.pods(&client, "default", KEY, "a1"),
            looks.pods(&client, "default", KEY, "b2"),
            looks.pods(&client, "default", KEY, "zz"),
        );
        assert_eq!(names(&a.unwrap()), ["p0"]);
        assert_eq!(names(&b.unwrap()), ["p1", "p3"]);
        assert!(none.unwrap().is_empty());
        assert_eq!(
            metrics.kube_requests() - before,
            1,
            "one list for the three"
        );
        // Asked again within FRESH, a value the list covered is answered
        // from it; one it did not cover is listed.
        let before = metrics.kube_requests();
        assert_eq!(
            names(&looks.pods(&client, "default", KEY, "b2").await.unwrap()),
            ["p1", "p3"]
        );
        assert_eq!(
            metrics.kube_requests() - before,
            0,
            "answered from the list"
        );
        assert_eq!(
            names(&looks.pods(&client, "default", KEY, "c3").await.unwrap()),
            ["p2"]
        );
        assert_eq!(metrics.kube_requests() - before, 1, "c3 was not covered");
        // That list covered the values asked for within LINGER too.
        assert_eq!(
            names(&looks.pods(&client, "default", KEY, "a1").await.unwrap()),
            ["p0"]
        );
        assert_eq!(metrics.kube_requests() - before, 1);
        // Past FRESH, a look lists again.
        tokio::time::advance(FRESH).await;
        let before = metrics.kube_requests();
        assert_eq!(
            names(&looks.pods(&client, "default", KEY, "a1").await.unwrap()),
            ["p0"]
        );
        assert_eq!(metrics.kube_requests() - before, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_kept_list_shows_pods_as_they_were_until_it_is_stale() {
        let (_sim, client, metrics) = cluster().await;
        let looks = PodLooks::default();
        assert_eq!(
            names(&looks.pods(&client, "default", KEY, "a1").await.unwrap()),
            ["p0"]
        );
        let pods: Api<Pod> = Api::default_namespaced(client.clone());
        pods.create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "p9", "labels": {KEY: "a1"}},
                "spec": {"containers": [{"name": "app", "image": "x:1"}]},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
        tokio::time::advance(FRESH / 2).await;
        assert_eq!(
            names(&looks.pods(&client, "default", KEY, "a1").await.unwrap()),
            ["p0"],
            "within FRESH, the kept list"
        );
        tokio::time::advance(FRESH / 2).await;
        let before = metrics.kube_requests();
        assert_eq!(
            names(&looks.pods(&client, "default", KEY, "a1").await.unwrap()),
            ["p0", "p9"]
        );
        assert_eq!(metrics.kube_requests() - before, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_revision_not_looked_for_within_linger_leaves_the_lists() {
        let (_sim, client, _metrics) = cluster().await;
        let looks = PodLooks::default();
        looks.pods(&client, "default", KEY, "a1").await.unwrap();
        tokio::time::advance(LINGER).await;
        looks.pods(&client, "default", KEY, "b2").await.unwrap();
        let map = looks.lock();
        let last = map[&("default".to_owned(), KEY.to_owned())]
            .last
            .as_ref()
            .unwrap();
        assert_eq!(
            last.values.iter().map(String::as_str).collect::<Vec<_>>(),
            ["b2"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_look_reads_what_tells_a_pod_cannot_run() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "labels": {KEY: "a1", "other": "x"}, "deletionTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "app", "image": "x:1"}]},
            "status": {"containerStatuses": [{"name": "app", "image": "x:1", "imageID": "", "ready": false, "restartCount": 4,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]},
        }))
        .unwrap();
        let look = PodLook::of(&pod, &[KEY]);
        assert_eq!(look.name, "p");
        assert!(look.deleting);
        assert!(look.labelled(KEY, "a1"));
        assert!(
            !look.labelled("other", "x"),
            "only the selector's keys are kept"
        );
        assert_eq!(look.containers.len(), 1);
        assert_eq!(
            look.containers[0].waiting.as_deref(),
            Some("CrashLoopBackOff")
        );
        assert_eq!(look.containers[0].restarts, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_look_whose_gatherer_went_away_lists_alone() {
        let (_sim, client, metrics) = cluster().await;
        let looks = PodLooks::default();
        let before = metrics.kube_requests();
        let start = tokio::time::Instant::now();
        let (gone, (joined, at)) = tokio::join!(
            // The gatherer's reconcile is dropped while it gathers.
            tokio::time::timeout(GATHER / 2, looks.pods(&client, "default", KEY, "a1")),
            async {
                tokio::task::yield_now().await;
                let pods = looks.pods(&client, "default", KEY, "b2").await;
                (pods, start.elapsed())
            },
        );
        assert!(gone.is_err(), "the gatherer was dropped");
        assert!(
            at < GATHER,
            "it joined the gathering and listed alone when it went away, at {at:?}"
        );
        assert_eq!(names(&joined.unwrap()), ["p1", "p3"]);
        assert_eq!(metrics.kube_requests() - before, 1);
        // Nothing is left behind to join.
        assert!(looks.lock().values().all(|l| l.gathering.is_none()));
    }
}
