//! Read your own writes: the Rollouts as the executor's writes returned
//! them, read instead of the watch cache's older versions until the cache
//! catches up.
//!
//! A release's own writes to the Deployment and its ReplicaSets come back
//! through their watches and trigger the next reconcile, often before the
//! Rollout's status write comes back through its watch. Read from the
//! cache, that reconcile would act on the status from before the write: do
//! the step it just did again, or move pods back to the previous batch, and
//! then fail its status write with a conflict. With the written version it
//! acts on what it recorded.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use kube::{ResourceExt, runtime::reflector::ObjectRef};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::crd::Rollout;

/// Rollouts as a write returned them, by namespace and name, until the
/// watch cache shows them or a newer version. The API's writes (a pause,
/// a promotion, an abort) are kept here too and wake the controller at
/// once, so a control acts on the next reconcile however far the
/// controller's watch of Rollouts lags (in the replica that serves the
/// call; another replica's controller sees it through its watch).
#[derive(Debug, Default)]
pub struct Written {
    kept: Mutex<HashMap<(String, String), Arc<Rollout>>>,
    wake: Mutex<Option<mpsc::UnboundedSender<ObjectRef<Rollout>>>>,
}

/// A resourceVersion as a number. Kubernetes calls it opaque; every API
/// server in use (etcd revisions, the simulator) writes a decimal counter.
/// `None` for anything else, and then the watch cache is used as it is.
fn version(rollout: &Rollout) -> Option<u64> {
    rollout.resource_version()?.parse().ok()
}

fn key(rollout: &Rollout) -> (String, String) {
    (rollout.namespace().unwrap_or_default(), rollout.name_any())
}

impl Written {
    /// Keeps `rollout`, as a write returned it, unless a newer version is
    /// kept already.
    pub fn record(&self, mut rollout: Rollout) {
        // Not kept, as in the watch cache (`controller::run`).
        rollout.metadata.managed_fields = None;
        let Some(new) = version(&rollout) else {
            return;
        };
        let mut map = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        let key = key(&rollout);
        if map.get(&key).and_then(|kept| version(kept)) < Some(new) {
            map.insert(key, Arc::new(rollout));
        }
    }

    /// `rollout` as the watch cache gave it, or the newer version a write
    /// returned while the cache has not caught up.
    pub fn fresher(&self, rollout: Arc<Rollout>) -> Arc<Rollout> {
        let key = key(&rollout);
        let mut map = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&key) {
            Some(newer) if version(newer) > version(&rollout) && version(&rollout).is_some() => {
                Arc::clone(newer)
            }
            Some(_) => {
                map.remove(&key);
                rollout
            }
            None => rollout,
        }
    }

    /// The version a write returned, when it is newer than `rollout`;
    /// unlike [`Written::fresher`], keeps it either way (a reconcile looking
    /// again at what it read must not make the next one read the lagging
    /// watch cache).
    pub fn newer_than(&self, rollout: &Rollout) -> Option<Arc<Rollout>> {
        let map = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&key(rollout))
            .filter(|kept| version(kept) > version(rollout) && version(rollout).is_some())
            .cloned()
    }

    /// Keeps `rollout` as [`Written::record`] does and asks the controller
    /// for a reconcile of it now; nothing when no controller runs in this
    /// process (a replica not holding the Lease), whose reads would never
    /// take the copy away.
    pub fn record_and_wake(&self, rollout: Rollout) {
        let wake = self
            .wake
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .filter(|w| !w.is_closed());
        if let Some(wake) = wake {
            let reference = ObjectRef::from_obj(&rollout);
            self.record(rollout);
            let _ = wake.send(reference);
        }
    }

    /// The reconciles [`Written::record_and_wake`] asks for, for the
    /// controller's `reconcile_on`.
    pub fn wakes(&self) -> impl futures::Stream<Item = ObjectRef<Rollout>> + use<> {
        let (sender, receiver) = mpsc::unbounded_channel();
        *self.wake.lock().unwrap_or_else(|p| p.into_inner()) = Some(sender);
        UnboundedReceiverStream::new(receiver)
    }

    /// Forgets what was kept of one Rollout.
    pub fn forget(&self, namespace: &str, name: &str) {
        self.kept
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(namespace.to_owned(), name.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(version: &str, message: &str) -> Rollout {
        let mut r: Rollout = serde_json::from_value(serde_json::json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "web", "namespace": "default", "resourceVersion": version},
            "spec": {"workload": {"kind": "Deployment", "name": "web"}},
        }))
        .unwrap();
        r.status = Some(crate::crd::RolloutStatus {
            message: message.into(),
            ..Default::default()
        });
        r
    }

    fn message(r: &Rollout) -> &str {
        &r.status.as_ref().unwrap().message
    }

    #[test]
    fn a_look_at_the_kept_version_keeps_it() {
        let written = Written::default();
        written.record(rollout("7", "written"));
        let cached = Arc::new(rollout("6", "cached"));
        let kept = written.newer_than(&cached).unwrap();
        assert_eq!(message(&kept), "written");
        // Looking with the kept version itself finds nothing newer, and
        // leaves it for the next read of the lagging cache.
        assert!(written.newer_than(&kept).is_none());
        assert_eq!(message(&written.fresher(cached)), "written");
    }

    #[test]
    fn a_written_version_is_read_until_the_watch_cache_catches_up() {
        let written = Written::default();
        written.record(rollout("7", "written"));
        let read = written.fresher(Arc::new(rollout("5", "cached")));
        assert_eq!(message(&read), "written");
        // The cache caught up (or went past): it is read, the copy dropped.
        let read = written.fresher(Arc::new(rollout("8", "cached later")));
        assert_eq!(message(&read), "cached later");
        let read = written.fresher(Arc::new(rollout("5", "cached")));
        assert_eq!(message(&read), "cached");
    }

    #[test]
    fn an_older_write_does_not_replace_a_newer_one() {
        let written = Written::default();
        written.record(rollout("9", "second write"));
        written.record(rollout("7", "first write, answered late"));
        let read = written.fresher(Arc::new(rollout("5", "cached")));
        assert_eq!(message(&read), "second write");
    }

    #[test]
    fn an_unreadable_version_leaves_the_cache_as_it_is() {
        let written = Written::default();
        written.record(rollout("7", "written"));
        let read = written.fresher(Arc::new(rollout("opaque", "cached")));
        assert_eq!(message(&read), "cached");
        written.record(rollout("opaque", "written"));
        let read = written.fresher(Arc::new(rollout("3", "cached")));
        assert_eq!(message(&read), "cached");
    }

    #[tokio::test]
    async fn a_control_is_kept_and_wakes_only_where_a_controller_listens() {
        use futures::StreamExt;
        let written = Written::default();
        written.record_and_wake(rollout("7", "paused"));
        let read = written.fresher(Arc::new(rollout("5", "cached")));
        assert_eq!(message(&read), "cached", "no controller: nothing kept");
        let mut wakes = written.wakes();
        written.record_and_wake(rollout("8", "paused"));
        let read = written.fresher(Arc::new(rollout("5", "cached")));
        assert_eq!(message(&read), "paused");
        assert_eq!(wakes.next().await.unwrap().name, "web");
    }

    #[test]
    fn forgetting_drops_the_kept_version() {
        let written = Written::default();
        written.record(rollout("7", "written"));
        written.forget("default", "web");
        let read = written.fresher(Arc::new(rollout("5", "cached")));
        assert_eq!(message(&read), "cached");
    }
}
