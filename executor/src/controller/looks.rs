//! Pod lists shared by the releases waiting in one namespace.
//!
//! A batch whose new pods are slow to come up is looked at for a pod that
//! cannot run (a crash loop, an image that cannot be pulled) a few times
//! (`Ctx::pod_check`). On a busy cluster many releases wait at once, and a
//! list each cost a real API server most of a release's requests (7 of
//! 23.5 per release at 1,000 releases on the real control plane). So the
//! looks asked for in one namespace within [`GATHER`] of each other are
//! made as one list, with a set-based selector over every revision asked
//! for (`pod-template-hash in (a,b,c)`), and each release reads its own
//! pods from the answer.
//!
//! The first asker of a namespace gathers: it waits [`GATHER`], takes every
//! revision asked for meanwhile (at most [`MAX_VALUES`]), lists and hands
//! the answer to the others. An asker whose gatherer went away (its
//! reconcile was dropped) or failed lists its own pods alone, so every
//! asker gets its own answer or its own error.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client,
    api::{ListParams, ObjectList},
};
use tokio::sync::watch;

/// How long the first look of a namespace waits for others to join it.
pub(crate) const GATHER: Duration = Duration::from_millis(50);

/// Revisions listed together at most (a selector of some 2 KiB).
pub(crate) const MAX_VALUES: usize = 150;

/// What a shared list found: every pod it returned, or that it failed.
type Answer = Option<Result<Arc<Vec<Pod>>, ()>>;

/// A list being gathered for one (namespace, label key).
struct Gathering {
    id: u64,
    values: BTreeSet<String>,
    answer: watch::Receiver<Answer>,
}

/// The looks being gathered, by (namespace, label key).
#[derive(Default)]
pub(crate) struct PodLooks {
    gathering: Mutex<HashMap<(String, String), Gathering>>,
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
    fn take(&self) -> BTreeSet<String> {
        let mut map = self.looks.lock();
        match map.get(&self.slot) {
            Some(g) if g.id == self.id => map.remove(&self.slot).map(|g| g.values),
            _ => None,
        }
        .unwrap_or_default()
    }
}

impl Drop for Gatherer<'_> {
    fn drop(&mut self) {
        self.take();
    }
}

impl PodLooks {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Gathering>> {
        self.gathering
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The pods of namespace `ns` labelled `key=value`, listed together
    /// with those of every other value of `key` asked for in `ns` meanwhile.
    pub(crate) async fn pods(
        &self,
        client: &Client,
        ns: &str,
        key: &str,
        value: &str,
    ) -> Result<Vec<Pod>, kube::Error> {
        let slot = (ns.to_owned(), key.to_owned());
        let joined = {
            let mut map = self.lock();
            match map.get_mut(&slot) {
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
            return list(client, ns, &format!("{key}={value}"))
                .await
                .map(|l| l.items);
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
                _ => list(client, ns, &format!("{key}={value}"))
                    .await
                    .map(|l| l.items),
            };
        }
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tell, answer) = watch::channel(None);
        self.lock().insert(
            slot.clone(),
            Gathering {
                id,
                values: [value.to_owned()].into(),
                answer,
            },
        );
        let gatherer = Gatherer {
            looks: self,
            slot,
            id,
        };
        tokio::time::sleep(GATHER).await;
        let values = gatherer.take();
        let selector = if values.len() <= 1 {
            format!("{key}={value}")
        } else {
            format!(
                "{key} in ({})",
                values.into_iter().collect::<Vec<_>>().join(",")
            )
        };
        match list(client, ns, &selector).await {
            Ok(found) => {
                let pods = Arc::new(found.items);
                tell.send_replace(Some(Ok(Arc::clone(&pods))));
                Ok(labelled(&pods, key, value))
            }
            Err(e) => {
                tell.send_replace(Some(Err(())));
                Err(e)
            }
        }
    }
}

async fn list(client: &Client, ns: &str, selector: &str) -> Result<ObjectList<Pod>, kube::Error> {
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(selector))
        .await
}

/// The pods of `pods` labelled `key=value`.
fn labelled(pods: &[Pod], key: &str, value: &str) -> Vec<Pod> {
    pods.iter()
        .filter(|p| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(key))
                .is_some_and(|v| v == value)
        })
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

    use super::{GATHER, PodLooks};
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

    fn names(pods: &[Pod]) -> Vec<String> {
        let mut n: Vec<String> = pods
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
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
        // Asked apart, each lists.
        let before = metrics.kube_requests();
        assert_eq!(
            names(&looks.pods(&client, "default", KEY, "c3").await.unwrap()),
            ["p2"]
        );
        assert_eq!(
            names(&looks.pods(&client, "default", KEY, "a1").await.unwrap()),
            ["p0"]
        );
        assert_eq!(metrics.kube_requests() - before, 2);
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
        assert!(looks.lock().is_empty());
    }
}
