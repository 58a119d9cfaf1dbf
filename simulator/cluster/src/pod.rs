//! What the engines know of a pod, and how its writer decodes it.
//!
//! Every engine reads every pod event: rather than each parsing the pod,
//! the store has [`PodDecoder`] decode it once, as it is written (see
//! [`Decoder`]), from what the write holds parsed; an event that was not
//! decoded so is decoded by its first reader ([`pod_summary`]).

use std::{cmp::Reverse, sync::Arc};

use serde::Deserialize;
use serde_json::Value;

use sluice_sim_api::{
    splice::Written,
    store::{Decoded, Decoder, WatchEvent},
};

/// What controllers read of a pod.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodSummary {
    /// Its name.
    pub name: String,
    /// Its uid.
    pub uid: String,
    /// When it was made (RFC 3339).
    pub created: String,
    /// Being deleted.
    pub deleting: bool,
    /// The grace period its deletion gave, seconds.
    pub grace_seconds: i64,
    /// Bound to a node.
    pub scheduled: bool,
    /// `status.phase` is Running.
    pub running: bool,
    /// Its Ready condition is True.
    pub ready: bool,
    /// The uid of its controller (the owner reference marked so, else the
    /// first).
    pub owner_uid: String,
    /// Its owners, by kind and name.
    pub owners: Vec<(String, String)>,
    /// The node it is bound to (empty when unscheduled).
    pub node: String,
    /// Its containers' names and images, in order.
    pub containers: Box<[(String, String)]>,
    /// Restarts of its first container.
    pub restarts: i64,
    /// When its first container started running, if it runs.
    pub started_at: Option<String>,
    /// The nodes it may be scheduled on.
    pub placement: crate::placement::Placement,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct PodWire {
    metadata: PodWireMeta,
    spec: PodWireSpec,
    status: PodWireStatus,
}

#[derive(serde::Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct PodWireMeta {
    name: String,
    uid: String,
    creation_timestamp: String,
    deletion_timestamp: Option<String>,
    deletion_grace_period_seconds: Option<i64>,
    owner_references: Vec<PodWireOwner>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct PodWireOwner {
    kind: String,
    name: String,
    uid: String,
    controller: Option<bool>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct PodWireSpec {
    node_name: Option<String>,
    containers: Vec<PodWireContainer>,
    init_containers: Vec<PodWireContainer>,
    node_selector: Value,
    affinity: Value,
    tolerations: Value,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct PodWireContainer {
    name: String,
    image: String,
    resources: Value,
}

#[derive(serde::Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct PodWireStatus {
    phase: String,
    conditions: Vec<PodWireCondition>,
    container_statuses: Vec<PodWireContainerStatus>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct PodWireContainerStatus {
    restart_count: i64,
    state: PodWireState,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct PodWireState {
    running: Option<PodWireRunning>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct PodWireRunning {
    started_at: String,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct PodWireCondition {
    #[serde(rename = "type")]
    kind: String,
    status: String,
}

impl PodSummary {
    fn parse(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice::<PodWire>(bytes)
            .ok()
            .map(Self::from_wire)
    }

    fn from_wire(wire: PodWire) -> Self {
        let owner = wire
            .metadata
            .owner_references
            .iter()
            .find(|o| o.controller == Some(true))
            .or(wire.metadata.owner_references.first());
        let mut pod = Self {
            owner_uid: owner.map(|o| o.uid.clone()).unwrap_or_default(),
            owners: wire
                .metadata
                .owner_references
                .iter()
                .map(|o| (o.kind.clone(), o.name.clone()))
                .collect(),
            name: wire.metadata.name,
            uid: wire.metadata.uid,
            created: wire.metadata.creation_timestamp,
            deleting: wire.metadata.deletion_timestamp.is_some(),
            grace_seconds: wire.metadata.deletion_grace_period_seconds.unwrap_or(0),
            ..Self::default()
        };
        pod.set_spec(wire.spec);
        pod.set_status(wire.status);
        pod
    }

    fn set_spec(&mut self, spec: PodWireSpec) {
        self.scheduled = spec.node_name.as_ref().is_some_and(|n| !n.is_empty());
        self.node = spec.node_name.unwrap_or_default();
        self.placement = crate::placement::Placement::of_spec(
            &spec.node_selector,
            &spec.affinity,
            &spec.tolerations,
        );
        // As the scheduler counts it: the containers' requests together,
        // or an init container's alone if that is more.
        let of = |c: &PodWireContainer| crate::placement::Demand::of_resources(&c.resources);
        let running = spec
            .containers
            .iter()
            .fold(crate::placement::Demand::default(), |sum, c| {
                sum.plus(of(c))
            });
        self.placement.demand = spec
            .init_containers
            .iter()
            .map(of)
            .fold(running, |d, c| d.max(c));
        self.set_containers(spec.containers);
    }

    fn set_containers(&mut self, containers: Vec<PodWireContainer>) {
        self.containers = containers.into_iter().map(|c| (c.name, c.image)).collect();
    }

    /// Decodes one top-level entry of the spec or status, set to `json`;
    /// `None` when it does not decode.
    fn set_entry(&mut self, section: &str, key: &str, json: &str) -> Option<()> {
        match (section, key) {
            ("spec", "nodeName") => {
                let node: Option<String> = serde_json::from_str(json).ok()?;
                self.node = node.unwrap_or_default();
                self.scheduled = !self.node.is_empty();
            }
            ("spec", "containers") => {
                let containers: Vec<PodWireContainer> = serde_json::from_str(json).ok()?;
                self.set_containers(containers);
            }
            ("spec", "tolerations") => {
                // The one placement field a pod's update may change.
                self.placement.tolerations = serde_json::from_str(json).ok()?;
            }
            ("status", "phase") => {
                let phase: Option<String> = serde_json::from_str(json).ok()?;
                self.running = phase.as_deref() == Some("Running");
            }
            ("status", "conditions") => {
                let conditions: Vec<PodWireCondition> = serde_json::from_str(json).ok()?;
                self.set_conditions(&conditions);
            }
            ("status", "containerStatuses") => {
                let statuses: Vec<PodWireContainerStatus> = serde_json::from_str(json).ok()?;
                self.set_container_statuses(statuses);
            }
            _ => {}
        }
        Some(())
    }

    fn set_status(&mut self, status: PodWireStatus) {
        self.set_container_statuses(status.container_statuses);
        self.running = status.phase == "Running";
        self.set_conditions(&status.conditions);
    }

    fn set_container_statuses(&mut self, statuses: Vec<PodWireContainerStatus>) {
        let first = statuses.into_iter().next();
        self.restarts = first.as_ref().map_or(0, |c| c.restart_count);
        self.started_at = first.and_then(|c| c.state.running).map(|r| r.started_at);
    }

    fn set_conditions(&mut self, conditions: &[PodWireCondition]) {
        self.ready = conditions
            .iter()
            .any(|c| c.kind == "Ready" && c.status == "True");
    }

    /// The image of its first container.
    pub fn image(&self) -> &str {
        self.containers.first().map_or("", |(_, image)| image)
    }

    /// Unscheduled < pending < not ready < ready; among equals, newest
    /// first: the order in which a ReplicaSet gives pods up.
    pub fn rank(&self) -> (u8, Reverse<String>) {
        let rank = match (self.scheduled, self.running, self.ready) {
            (false, _, _) => 0,
            (true, false, _) => 1,
            (true, true, false) => 2,
            (true, true, true) => 3,
        };
        (rank, Reverse(self.created.clone()))
    }
}

/// Decodes pods for the engines as the store writes them (see
/// [`Decoder`]), from the values the write holds parsed: a status write or
/// a binding decodes only the section it changed.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PodDecoder;

impl Decoder for PodDecoder {
    fn whole(&self, object: &Value) -> Option<Decoded> {
        let wire = PodWire::deserialize(object).ok()?;
        Some(Arc::new(PodSummary::from_wire(wire)))
    }

    fn section(&self, before: &Decoded, section: &str, written: &Written) -> Option<Decoded> {
        let mut pod = PodSummary::clone(before.downcast_ref::<PodSummary>()?);
        match (section, written) {
            ("spec", Written::Value(spec)) => pod.set_spec(PodWireSpec::deserialize(&**spec).ok()?),
            ("status", Written::Value(status)) => {
                pod.set_status(PodWireStatus::deserialize(&**status).ok()?)
            }
            // Only what was set is read: the rest decodes as it did.
            (_, Written::Entries(entries)) => {
                for (key, json) in entries.written() {
                    pod.set_entry(section, key, json.get())?;
                }
            }
            _ => return None,
        }
        Some(Arc::new(pod))
    }
}

/// A pod as its writer or the first engine to read this event decoded it.
///
/// An engine that finds the event not decoded yet decodes it itself rather
/// than wait on the other (waiting would put its thread to sleep for a
/// decoding that takes microseconds); the first result stored is kept.
pub(crate) fn pod_summary(event: &WatchEvent) -> Option<Arc<PodSummary>> {
    let decoded = match event.decoded.get() {
        Some(decoded) => decoded.clone(),
        None => {
            let decoded: Decoded = match PodSummary::parse(&event.object) {
                Some(pod) => Arc::new(pod),
                None => Arc::new(()),
            };
            let _ = event.decoded.set(decoded.clone());
            decoded
        }
    };
    decoded.downcast::<PodSummary>().ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use sluice_sim_api::{
        ApiServer, Options,
        resources::Resource,
        status::ApiError,
        store::{Part, Store},
    };

    fn pod_store() -> (Arc<Store>, Arc<Resource>) {
        let store = ApiServer::new(Options::default()).store().clone();
        let pods = store.resource("", "pods").unwrap();
        (store, pods)
    }

    #[test]
    fn a_pod_decoded_by_its_writer_is_the_pod_its_json_decodes_to() {
        let (store, pods) = pod_store();
        store.decode_with("", "pods", Arc::new(PodDecoder));
        let mut watch = store.watch(&pods, None, None).unwrap().live;
        store
            .create(&pods, "default", json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u1", "controller": true}]}, "spec": {"containers": [{"name": "a", "image": "app:1"}, {"name": "b", "image": "side:1"}]}}))
            .unwrap();
        store.bind(&pods, "default", "p", "n1").unwrap();
        store
            .modify_status(&pods, "default", "p", |s| {
                s["phase"] = json!("Running");
                s["containerStatuses"] = json!([{"name": "a", "restartCount": 2, "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]);
            })
            .unwrap();
        store
            .modify_status(&pods, "default", "p", |s| {
                s["conditions"] = json!([{"type": "Ready", "status": "True"}]);
            })
            .unwrap();
        // Entries set, as the kubelet writes: a restart, then not ready.
        let restarted = json!([{"name": "a", "restartCount": 3, "state": {"waiting": {}}}]);
        let not_ready = json!([{"type": "Ready", "status": "False"}]);
        for (key, value) in [
            ("containerStatuses", &restarted),
            ("conditions", &not_ready),
        ] {
            store
                .modify_status_entries(&pods, "default", "p", |s| {
                    s.set(key, value)
                        .map_err(|e| ApiError::internal(e.to_string()))
                })
                .unwrap();
        }
        // Whole-object writes: a new controller, then a graceful deletion.
        store
            .modify(&pods, "default", "p", Part::Main, |p| {
                p["metadata"]["ownerReferences"][0]["uid"] = json!("u2");
            })
            .unwrap();
        store
            .delete(&pods, "default", "p", &Default::default())
            .unwrap();
        let mut seen = 0;
        while let Ok(event) = watch.try_recv() {
            let parsed = PodSummary::parse(&event.object).unwrap();
            let decoded = event
                .decoded
                .get()
                .unwrap_or_else(|| panic!("event {seen} not decoded by its writer"));
            assert_eq!(
                decoded.clone().downcast::<PodSummary>().ok().as_deref(),
                Some(&parsed),
                "event {seen}"
            );
            seen += 1;
        }
        assert_eq!(seen, 8, "create, bind, four statuses, owner, deletion");
        let last = PodSummary::parse(&store.get(&pods, "default", "p").unwrap()).unwrap();
        assert!(last.deleting && !last.ready && last.scheduled && last.restarts == 3);
        assert!(last.running && last.started_at.is_none());
        assert_eq!(last.owner_uid, "u2");
    }

    #[test]
    fn pods_created_as_copies_are_decoded_as_their_json_reads() {
        let (store, pods) = pod_store();
        store.decode_with("", "pods", Arc::new(PodDecoder));
        let mut watch = store.watch(&pods, None, None).unwrap().live;
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "web-", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "u1", "controller": true}]}, "spec": {"containers": [{"name": "a", "image": "app:1"}]}});
        store.create_copies(&pods, "default", pod, 4).unwrap();
        let mut seen = 0;
        while let Ok(event) = watch.try_recv() {
            let decoded = event.decoded.get().cloned().unwrap();
            let parsed = PodSummary::parse(&event.object).unwrap();
            assert_eq!(decoded.downcast_ref::<PodSummary>(), Some(&parsed));
            assert_eq!(parsed.name, event.name);
            seen += 1;
        }
        assert_eq!(seen, 4);
    }
}
