//! What the Deployment and ReplicaSet controllers read of their objects:
//! typed views that leave the pod template out, and the decoders that make
//! them as the store writes the objects (see
//! [`Decoder`](sluice_sim_api::store::Decoder)).
//!
//! A Deployment is reconciled each time one of its ReplicaSets' status
//! changes, and a ReplicaSet each time one of its pods changes: their
//! controllers read these views from the writes' decodings instead of
//! parsing the objects, templates and all, again and again. A view is
//! read from the JSON only when the object has no decoding.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use sluice_sim_api::{
    splice::Written,
    store::{Decoded, Decoder},
};

/// Reads a field that may be `null` as its default, as an absent one.
fn or_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Option::<T>::deserialize(deserializer).map(Option::unwrap_or_default)
}

/// Reads any JSON value as its compact text.
fn as_json<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Arc<str>, D::Error> {
    let value = Value::deserialize(deserializer)?;
    serde_json::to_string(&value)
        .map(Arc::from)
        .map_err(serde::de::Error::custom)
}

/// The metadata the controllers read of a Deployment or ReplicaSet.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct Meta {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// `metadata.creationTimestamp`.
    pub creation_timestamp: String,
    /// `metadata.deletionTimestamp`.
    pub deletion_timestamp: Option<String>,
    /// The annotations read.
    #[serde(deserialize_with = "or_default")]
    pub annotations: Annotations,
    /// Its owners.
    #[serde(deserialize_with = "or_default")]
    pub owner_references: Vec<OwnerReference>,
}

/// An owner, by kind and name.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(default)]
pub(crate) struct OwnerReference {
    /// `kind`.
    pub kind: String,
    /// `name`.
    pub name: String,
    /// `uid`.
    pub uid: String,
}

/// The annotations the controllers read.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Annotations {
    /// [`REVISION`](crate::workloads::keys::REVISION).
    pub revision: Option<String>,
    /// [`DESIRED`](crate::workloads::keys::DESIRED): the
    /// Deployment's replicas when its controller last scaled the set.
    pub desired: Option<String>,
    /// [`MAX`](crate::workloads::keys::MAX): replicas + maxSurge
    /// then.
    pub max: Option<String>,
    /// A digest of the annotations a Deployment's controller copies onto
    /// its new ReplicaSet (all but
    /// [`NOT_COPIED`](crate::workloads::keys::NOT_COPIED)), whatever their
    /// order: equal on the Deployment and the set when the set has them
    /// all and no others, so a sync compares two numbers rather than parse
    /// both objects.
    pub copied: u64,
}

impl<'de> Deserialize<'de> for Annotations {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(AnnotationsVisitor)
    }
}

/// Reads annotations one at a time: the three kept as text, the others
/// hashed into [`Annotations::copied`] (or skipped unread, as kubectl's
/// last applied configuration, which can be kilobytes), none stored.
struct AnnotationsVisitor;

impl<'de> serde::de::Visitor<'de> for AnnotationsVisitor {
    type Value = Annotations;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a map of annotations")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Annotations, A::Error> {
        use crate::workloads::keys;
        use std::hash::{Hash, Hasher};
        let mut out = Annotations::default();
        while let Some(key) = map.next_key::<String>()? {
            let slot = match key.as_str() {
                keys::REVISION => Some(&mut out.revision),
                keys::DESIRED => Some(&mut out.desired),
                keys::MAX => Some(&mut out.max),
                _ => None,
            };
            if let Some(slot) = slot {
                *slot = map.next_value::<Option<String>>()?;
            } else if keys::NOT_COPIED.contains(&key.as_str()) {
                map.next_value::<serde::de::IgnoredAny>()?;
            } else {
                let value: Value = map.next_value()?;
                let mut h = std::hash::DefaultHasher::new();
                key.hash(&mut h);
                value.to_string().hash(&mut h);
                out.copied = out.copied.wrapping_add(h.finish());
            }
        }
        Ok(out)
    }
}

impl Meta {
    /// The revision annotation as a number (0 when absent).
    pub(crate) fn revision(&self) -> i64 {
        self.annotations
            .revision
            .as_deref()
            .and_then(|r| r.parse().ok())
            .unwrap_or(0)
    }
}

/// A Deployment, all but its pod template and selector.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(default)]
pub(crate) struct DeploymentView {
    /// Its metadata.
    #[serde(deserialize_with = "or_default")]
    pub metadata: Meta,
    /// Its spec, but the template and selector.
    #[serde(deserialize_with = "or_default")]
    pub spec: DeploymentSpec,
    /// Its status as compact JSON: kept as text, as the store keeps every
    /// version the watch history holds, and a parsed status takes several
    /// times the memory; the controller parses it when it reconciles.
    #[serde(deserialize_with = "as_json")]
    pub status: Arc<str>,
}

/// A Deployment's spec, but the template and selector.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct DeploymentSpec {
    /// `replicas`.
    pub replicas: Option<i64>,
    /// `paused`.
    pub paused: Option<bool>,
    /// `strategy`, as it is.
    pub strategy: Value,
    /// `minReadySeconds`.
    pub min_ready_seconds: Option<i64>,
    /// `revisionHistoryLimit`.
    pub revision_history_limit: Option<i64>,
    /// `progressDeadlineSeconds`.
    pub progress_deadline_seconds: Option<i64>,
}

/// A ReplicaSet, all but its pod template and selector.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(default)]
pub(crate) struct ReplicaSetView {
    /// Its metadata.
    #[serde(deserialize_with = "or_default")]
    pub metadata: Meta,
    /// Its spec, but the template and selector.
    #[serde(deserialize_with = "or_default")]
    pub spec: ReplicaSetSpec,
    /// Its status.
    #[serde(deserialize_with = "or_default")]
    pub status: ReplicaSetStatus,
}

/// A ReplicaSet's spec, but the template and selector.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(default)]
pub(crate) struct ReplicaSetSpec {
    /// `replicas`.
    pub replicas: Option<i64>,
}

/// A ReplicaSet's status.
#[derive(Debug, Clone, Deserialize, serde::Serialize, Default, PartialEq, Eq)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct ReplicaSetStatus {
    /// `replicas`.
    pub replicas: i64,
    /// `fullyLabeledReplicas`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fully_labeled_replicas: Option<i64>,
    /// `readyReplicas` (left out at zero, as Go's `omitempty` leaves it).
    #[serde(skip_serializing_if = "is_zero")]
    pub ready_replicas: i64,
    /// `availableReplicas` (left out at zero).
    #[serde(skip_serializing_if = "is_zero")]
    pub available_replicas: i64,
    /// `observedGeneration`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `conditions`: `ReplicaFailure` while pods cannot be made.
    #[serde(skip_serializing_if = "Vec::is_empty", deserialize_with = "or_default")]
    pub conditions: Vec<ReplicaSetCondition>,
}

/// A ReplicaSet's condition.
#[derive(Debug, Clone, Deserialize, serde::Serialize, Default, PartialEq, Eq)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct ReplicaSetCondition {
    /// `type`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `status`.
    pub status: String,
    /// `lastTransitionTime`.
    pub last_transition_time: String,
    /// `reason`.
    pub reason: String,
    /// `message`.
    pub message: String,
}

impl ReplicaSetView {
    /// `spec.replicas`, 0 when absent.
    pub(crate) fn replicas(&self) -> i64 {
        self.spec
            .replicas
            .unwrap_or(0)
            .clamp(0, i64::from(i32::MAX))
    }
}

/// A view from the object's decoding, or from its JSON when it has none.
pub(crate) fn view<T>(json: &[u8], decoded: Option<Decoded>) -> serde_json::Result<Arc<T>>
where
    T: for<'de> Deserialize<'de> + Send + Sync + 'static,
{
    match decoded.and_then(|d| d.downcast::<T>().ok()) {
        Some(view) => Ok(view),
        None => serde_json::from_slice(json).map(Arc::new),
    }
}

/// A view a status write changes only the status of.
pub(crate) trait StatusView:
    for<'de> Deserialize<'de> + Clone + Send + Sync + 'static
{
    /// Takes `status` as its status; `None` when it does not read.
    fn set_status(&mut self, status: &Value) -> Option<()>;
}

impl StatusView for DeploymentView {
    fn set_status(&mut self, status: &Value) -> Option<()> {
        self.status = serde_json::to_string(status).ok()?.into();
        Some(())
    }
}

impl StatusView for ReplicaSetView {
    fn set_status(&mut self, status: &Value) -> Option<()> {
        self.status = or_default(status).ok()?;
        Some(())
    }
}

/// Decodes a resource's objects into views `T`.
pub(crate) struct ViewDecoder<T>(std::marker::PhantomData<fn() -> T>);

impl<T> Default for ViewDecoder<T> {
    fn default() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<T: StatusView> Decoder for ViewDecoder<T> {
    fn whole(&self, object: &Value) -> Option<Decoded> {
        Some(Arc::new(T::deserialize(object).ok()?))
    }

    fn section(&self, before: &Decoded, section: &str, written: &Written) -> Option<Decoded> {
        let (Written::Value(status), "status") = (written, section) else {
            // The controllers write specs whole, through `whole`.
            return None;
        };
        let mut view = T::clone(before.downcast_ref()?);
        view.set_status(status)?;
        Some(Arc::new(view))
    }
}

/// For `skip_serializing_if`: a count of zero, which Go leaves out.
#[allow(clippy::trivially_copy_pass_by_ref)] // serde passes a reference
fn is_zero(n: &i64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::workloads::keys;

    /// Checks that every event `watch` holds carries the view its JSON
    /// reads as; how many there were.
    fn decoded_as_read<T>(
        watch: &mut tokio::sync::broadcast::Receiver<Arc<sluice_sim_api::store::WatchEvent>>,
    ) -> usize
    where
        T: for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug + Send + Sync + 'static,
    {
        let mut seen = 0;
        while let Ok(event) = watch.try_recv() {
            let decoded = event.decoded.get().cloned().expect("decoded by its writer");
            let read: T = serde_json::from_slice(&event.object).unwrap();
            assert_eq!(decoded.downcast_ref::<T>(), Some(&read), "event {seen}");
            seen += 1;
        }
        seen
    }

    #[test]
    fn deployments_and_replicasets_decoded_by_their_writers_are_what_their_json_reads_as() {
        let api = sluice_sim_api::ApiServer::new(sluice_sim_api::Options::default());
        let store = api.store();
        let (d, rs) = (
            ViewDecoder::<DeploymentView>::default(),
            ViewDecoder::<ReplicaSetView>::default(),
        );
        store.decode_with("apps", "deployments", Arc::new(d));
        store.decode_with("apps", "replicasets", Arc::new(rs));
        let (deployments, replicasets) = (
            store.resource("apps", "deployments").unwrap(),
            store.resource("apps", "replicasets").unwrap(),
        );
        let mut d_watch = store.watch(&deployments, None, None).unwrap().live;
        let mut rs_watch = store.watch(&replicasets, None, None).unwrap().live;
        let template = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "web:1"}]}});
        let selector = json!({"matchLabels": {"app": "web"}});
        store
            .create(&deployments, "default", json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 3, "selector": selector, "template": template, "strategy": {"type": "Recreate"}}}))
            .unwrap();
        store
            .create(&replicasets, "default", json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web-1", "annotations": {keys::REVISION: "2"}, "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "u"}]}, "spec": {"replicas": 3, "selector": selector, "template": template}}))
            .unwrap();
        for (res, name) in [(&deployments, "web"), (&replicasets, "web-1")] {
            let status = json!({"replicas": 3, "readyReplicas": 2, "availableReplicas": 1, "observedGeneration": 1});
            store.set_status(res, "default", name, &status).unwrap();
            store
                .modify_status(res, "default", name, |s| s["readyReplicas"] = json!(3))
                .unwrap();
            store
                .modify(
                    res,
                    "default",
                    name,
                    sluice_sim_api::store::Part::Main,
                    |o| {
                        o["spec"]["replicas"] = json!(5);
                        o["metadata"]["annotations"][keys::REVISION] = json!("4");
                    },
                )
                .unwrap();
        }
        assert_eq!(decoded_as_read::<DeploymentView>(&mut d_watch), 4);
        assert_eq!(decoded_as_read::<ReplicaSetView>(&mut rs_watch), 4);
        let (json, decoded) = store.get_decoded(&replicasets, "default", "web-1").unwrap();
        let rs = view::<ReplicaSetView>(&json, decoded).unwrap();
        assert_eq!(
            (
                rs.replicas(),
                rs.metadata.revision(),
                rs.status.ready_replicas
            ),
            (5, 4, 3)
        );
        let owner = &rs.metadata.owner_references[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("Deployment", "web")
        );
    }

    #[test]
    fn the_revision_annotation_is_read_under_its_key() {
        let rs: ReplicaSetView = serde_json::from_value(json!({
            "metadata": {"annotations": {keys::REVISION: "7"}},
        }))
        .unwrap();
        assert_eq!(rs.metadata.revision(), 7);
    }

    #[test]
    fn null_sections_read_as_absent_ones() {
        let d: DeploymentView = serde_json::from_value(json!({
            "metadata": {"name": "web", "annotations": null}, "spec": null, "status": null,
        }))
        .unwrap();
        assert_eq!(d.metadata.name, "web");
        assert_eq!(&*d.status, "null");
        assert_eq!(d.spec.replicas, None);
        assert_eq!(d.metadata.revision(), 0);
    }
}
