//! What the controller keeps of the cluster's Deployments and ReplicaSets.
//!
//! A cluster holds far more workloads than releases touch. The controller
//! watches every Deployment and ReplicaSet (a Rollout's workload must wake
//! it the moment it changes), but keeps whole only the Deployments a Rollout
//! names, their ReplicaSets and whatever carries a release's mark; of every
//! other object it keeps only the resourceVersion it last saw ([`Objects`]),
//! and the owner index keeps every ReplicaSet's owners. A watch event of
//! such an object carries its metadata only ([`Kept`]) and wakes nothing.
//! Which Deployments are named follows the Rollout watch ([`Named`]), which
//! lists before the workload watches start.
//!
//! A workload a Rollout comes to name after the watch kept only its
//! metadata is read once from the API server and remembered ([`Fetched`])
//! until the watch brings it whole; a read takes whichever copy is newer
//! and refuses a copy older than what the watch has seen, so a release
//! never acts on a body the cluster has moved past.
//!
//! *Assumptions*: resourceVersions compare as integers (etcd's revisions, as
//! kube-apiserver and the simulator give them). One that does not parse is
//! never taken as newer, which costs a read, never a stale body.

use std::{
    collections::HashMap,
    sync::{Arc, PoisonError, RwLock},
};

use k8s_openapi::{
    api::apps::v1::{Deployment, ReplicaSet},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Resource,
    runtime::{
        reflector::{self, ObjectRef},
        watcher,
    },
};

use crate::{
    crd::{Rollout, WorkloadKind},
    keys,
};

/// An object as a workload watch brings it: whole, or only the metadata
/// the owner index and the triggers read.
#[derive(Debug, Clone)]
pub(crate) enum Kept<K> {
    /// A release may read it.
    Whole(Arc<K>),
    /// No release involves it: what [`slim`] leaves of its metadata (boxed:
    /// it is far larger than the other variant).
    Meta(Box<ObjectMeta>),
}

impl<K> Kept<K> {
    /// The object, when kept whole.
    pub(crate) fn whole(&self) -> Option<&Arc<K>> {
        match self {
            Self::Whole(k) => Some(k),
            Self::Meta(_) => None,
        }
    }
}

/// What a workload watch has seen of one object.
#[derive(Debug)]
enum Entry<K> {
    /// Named: a release may read it.
    Whole(Arc<K>),
    /// Not named: the resourceVersion it was last seen at.
    Seen(Option<u64>),
}

impl<K> Clone for Entry<K> {
    fn clone(&self) -> Self {
        match self {
            Self::Whole(k) => Self::Whole(Arc::clone(k)),
            Self::Seen(v) => Self::Seen(*v),
        }
    }
}

impl<K: Resource> Entry<K> {
    fn of(kept: &Kept<K>) -> Self {
        match kept {
            Kept::Whole(k) => Self::Whole(Arc::clone(k)),
            Kept::Meta(m) => Self::Seen(version(m)),
        }
    }
}

/// Every object a workload watch has seen, by (namespace, name), as the
/// watch's events leave it: a relist's objects replace the old ones
/// together at its end, as kube's reflector does.
pub(crate) struct Objects<K> {
    inner: Arc<RwLock<ObjectsInner<K>>>,
}

impl<K> Clone for Objects<K> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K> Default for Objects<K> {
    fn default() -> Self {
        Self {
            inner: Arc::new(RwLock::new(ObjectsInner {
                map: HashMap::new(),
                listing: None,
            })),
        }
    }
}

struct ObjectsInner<K> {
    map: HashMap<Key, Entry<K>>,
    /// A relist in progress: what it has shown so far.
    listing: Option<HashMap<Key, Entry<K>>>,
}

impl<K: Resource + Clone> Objects<K> {
    /// Follows one event of the watch.
    pub(crate) fn follow(&self, event: &watcher::Event<Kept<K>>) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        match event {
            watcher::Event::Apply(o) => {
                inner.map.insert(key_of(o.meta()), Entry::of(o));
            }
            watcher::Event::Delete(o) => {
                inner.map.remove(&key_of(o.meta()));
            }
            watcher::Event::Init => inner.listing = Some(HashMap::new()),
            watcher::Event::InitApply(o) => {
                inner
                    .listing
                    .get_or_insert_default()
                    .insert(key_of(o.meta()), Entry::of(o));
            }
            watcher::Event::InitDone => {
                let listed = inner.listing.take().unwrap_or_default();
                inner.map = listed;
            }
        }
    }

    fn get(&self, ns: &str, name: &str) -> Option<Entry<K>> {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .map
            .get(&(ns.to_owned(), name.to_owned()))
            .cloned()
    }

    /// What it holds in `ns`, as a watch would bring it (for a merged
    /// watch's relist of one namespace, to say what went).
    pub(crate) fn in_namespace(&self, ns: &str) -> Vec<Kept<K>> {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .map
            .iter()
            .filter(|((n, _), _)| n == ns)
            .map(|((n, name), entry)| match entry {
                Entry::Whole(k) => Kept::Whole(Arc::clone(k)),
                Entry::Seen(v) => Kept::Meta(Box::new(ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(n.clone()),
                    resource_version: v.map(|v| v.to_string()),
                    ..ObjectMeta::default()
                })),
            })
            .collect()
    }

    /// How many objects it keeps whole, and how many it has only seen.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        let whole = inner
            .map
            .values()
            .filter(|e| matches!(e, Entry::Whole(_)))
            .count();
        (whole, inner.map.len() - whole)
    }
}

/// A body read as a whole object (the controller's triggers require one).
impl<'de, K: serde::Deserialize<'de>> serde::Deserialize<'de> for Kept<K> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        K::deserialize(d).map(|k| Self::Whole(Arc::new(k)))
    }
}

impl<K: Resource + Clone> Resource for Kept<K> {
    type DynamicType = K::DynamicType;
    type Scope = K::Scope;

    fn kind(dt: &Self::DynamicType) -> std::borrow::Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &Self::DynamicType) -> std::borrow::Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &Self::DynamicType) -> std::borrow::Cow<'_, str> {
        K::version(dt)
    }
    fn plural(dt: &Self::DynamicType) -> std::borrow::Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        match self {
            Self::Whole(k) => k.meta(),
            Self::Meta(m) => m,
        }
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Self::Whole(k) => Arc::make_mut(k).meta_mut(),
            Self::Meta(m) => m,
        }
    }
}

/// `meta` cut to what [`Kept::Meta`] carries: name, namespace,
/// resourceVersion, owners and the release mark.
fn slim(meta: ObjectMeta) -> ObjectMeta {
    let mark = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(keys::ROLLOUT))
        .map(|r| [(keys::ROLLOUT.to_owned(), r.clone())].into());
    ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        resource_version: meta.resource_version,
        owner_references: meta.owner_references,
        annotations: mark,
        ..ObjectMeta::default()
    }
}

/// The names of the Deployments among `meta`'s owners (a ReplicaSet's).
fn deployment_owners(meta: &ObjectMeta) -> impl Iterator<Item = &str> {
    meta.owner_references
        .iter()
        .flatten()
        .filter(|o| o.kind == "Deployment")
        .map(|o| o.name.as_str())
}

/// Whether `meta` carries a release's mark.
fn marked(meta: &ObjectMeta) -> bool {
    meta.annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(keys::ROLLOUT))
}

/// `resourceVersion` as a number, when it is one.
fn version(meta: &ObjectMeta) -> Option<u64> {
    meta.resource_version.as_deref()?.parse().ok()
}

/// Whether `a` is at least as new as `b` (false when either is not a number).
fn not_older(a: &ObjectMeta, b: &ObjectMeta) -> bool {
    matches!((version(a), version(b)), (Some(a), Some(b)) if a >= b)
}

/// Whether `a` is newer than `b` (false when either is not a number).
fn newer(a: &ObjectMeta, b: &ObjectMeta) -> bool {
    matches!((version(a), version(b)), (Some(a), Some(b)) if a > b)
}

type Key = (String, String);

fn key_of(meta: &ObjectMeta) -> Key {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// The Deployments the Rollouts name, kept from the Rollout watch's events.
#[derive(Clone)]
pub(crate) struct Named {
    index: Arc<RwLock<NamedIndex>>,
    listed: tokio::sync::watch::Sender<bool>,
    /// Every object kept whole, named or not (`--keep-all-workloads`).
    all: bool,
    /// The shards this replica holds: only their Rollouts' workloads are
    /// kept whole (another replica's are another's to read). `None`: all.
    held: Option<tokio::sync::watch::Receiver<crate::lease::Held>>,
}

impl Default for Named {
    fn default() -> Self {
        Self::keeping_all(false)
    }
}

#[derive(Default)]
struct NamedIndex {
    /// Rollout (namespace, name) to the Deployment it names.
    by_rollout: HashMap<Key, String>,
    /// Deployment (namespace, name) to the Rollouts that name it.
    named: HashMap<Key, Vec<String>>,
    /// A relist in progress: the index it is building.
    listing: Option<Box<NamedIndex>>,
}

impl NamedIndex {
    fn put(&mut self, rollout: &Rollout) {
        let key = key_of(&rollout.metadata);
        self.remove(&key);
        if rollout.spec.workload.kind == WorkloadKind::Deployment {
            let target = (key.0.clone(), rollout.spec.workload.name.clone());
            self.named.entry(target).or_default().push(key.1.clone());
            self.by_rollout
                .insert(key, rollout.spec.workload.name.clone());
        }
    }

    /// Forgets Rollout `key`; returns the Deployment no Rollout names any more.
    fn remove(&mut self, key: &Key) -> Option<Key> {
        let name = self.by_rollout.remove(key)?;
        let target = (key.0.clone(), name);
        let rollouts = self.named.get_mut(&target)?;
        rollouts.retain(|r| *r != key.1);
        if rollouts.is_empty() {
            self.named.remove(&target);
            return Some(target);
        }
        None
    }
}

impl Named {
    /// An empty index; with `all`, the workload watches keep every object
    /// whole.
    pub(crate) fn keeping_all(all: bool) -> Self {
        Self {
            index: Arc::default(),
            listed: tokio::sync::watch::Sender::new(false),
            all,
            held: None,
        }
    }

    /// Keeps whole only the workloads of the Rollouts of the shards `held`
    /// says this replica holds. One of a shard gained later is read once
    /// when its release needs it, as one a Rollout comes to name is; one of
    /// a shard lost is cut to its version at its next change.
    pub(crate) fn within(mut self, held: tokio::sync::watch::Receiver<crate::lease::Held>) -> Self {
        self.held = Some(held);
        self
    }

    /// Whether this replica drives Rollout `ns/name`.
    fn drives(&self, ns: &str, name: &str) -> bool {
        self.held
            .as_ref()
            .is_none_or(|held| held.borrow().of(ns, name).is_some())
    }

    /// Whether a release of a Rollout this replica drives marked `meta`.
    fn marked_here(&self, meta: &ObjectMeta) -> bool {
        marked(meta)
            && meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(keys::ROLLOUT))
                .is_some_and(|r| self.drives(meta.namespace.as_deref().unwrap_or_default(), r))
    }

    /// Follows one event of the Rollout watch; returns the Deployments no
    /// Rollout names any more.
    pub(crate) fn follow(&self, event: &watcher::Event<Rollout>) -> Vec<Key> {
        let mut index = self.index.write().unwrap_or_else(PoisonError::into_inner);
        match event {
            watcher::Event::Apply(r) => index.put(r),
            watcher::Event::Delete(r) => {
                return index.remove(&key_of(&r.metadata)).into_iter().collect();
            }
            watcher::Event::Init => index.listing = Some(Box::default()),
            watcher::Event::InitApply(r) => index.listing.get_or_insert_default().put(r),
            watcher::Event::InitDone => {
                let listed = *index.listing.take().unwrap_or_default();
                let gone = index
                    .named
                    .keys()
                    .filter(|k| !listed.named.contains_key(*k))
                    .cloned()
                    .collect();
                *index = listed;
                self.listed.send_replace(true);
                return gone;
            }
        }
        Vec::new()
    }

    /// Whether a Rollout this replica drives names Deployment `ns/name`.
    pub(crate) fn names(&self, ns: &str, name: &str) -> bool {
        self.index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .named
            .get(&(ns.to_owned(), name.to_owned()))
            .is_some_and(|rollouts| rollouts.iter().any(|r| self.drives(ns, r)))
    }

    /// The Rollouts that name the Deployment owning `rs`, to wake when it
    /// changes.
    pub(crate) fn rollouts_of(&self, rs: &ObjectMeta) -> Vec<ObjectRef<Rollout>> {
        let ns = rs.namespace.as_deref().unwrap_or_default();
        let index = self.index.read().unwrap_or_else(PoisonError::into_inner);
        deployment_owners(rs)
            .filter_map(|owner| index.named.get(&(ns.to_owned(), owner.to_owned())))
            .flatten()
            .map(|r| ObjectRef::new(r).within(ns))
            .collect()
    }

    /// Waits until the Rollout watch has listed once.
    pub(crate) async fn listed(&self) {
        let mut listed = self.listed.subscribe();
        // The sender lives as long as `self`.
        let _ = listed.wait_for(|l| *l).await;
    }

    /// `events`, started once the Rollout watch has listed, so what a
    /// workload watch keeps whole is known from its first list.
    pub(crate) fn after_listed<S: futures::Stream + Send + 'static>(
        &self,
        events: S,
    ) -> impl futures::Stream<Item = S::Item> + Send + use<S> {
        use futures::StreamExt;
        let named = self.clone();
        futures::stream::once(async move {
            named.listed().await;
            events
        })
        .flatten()
    }

    /// What the Deployment watch keeps of `d`.
    pub(crate) fn keep_deployment(&self, d: Deployment) -> Kept<Deployment> {
        let whole = self.all
            || self.marked_here(&d.metadata)
            || self.names(
                d.metadata.namespace.as_deref().unwrap_or_default(),
                d.metadata.name.as_deref().unwrap_or_default(),
            );
        if whole {
            // Its managedFields stay: a release's last write gives the
            // fields it held back from them (`writes::disown`).
            Kept::Whole(Arc::new(d))
        } else {
            Kept::Meta(Box::new(slim(d.metadata)))
        }
    }

    /// What the ReplicaSet watch keeps of `rs`: whole when its Deployment
    /// is named.
    pub(crate) fn keep_replicaset(&self, mut rs: ReplicaSet) -> Kept<ReplicaSet> {
        let ns = rs.metadata.namespace.as_deref().unwrap_or_default();
        let whole = self.all
            || self.marked_here(&rs.metadata)
            || deployment_owners(&rs.metadata).any(|owner| self.names(ns, owner));
        if whole {
            rs.metadata.managed_fields = None;
            Kept::Whole(Arc::new(rs))
        } else {
            Kept::Meta(Box::new(slim(rs.metadata)))
        }
    }
}

/// Whole objects read from the API server because the watch kept only
/// their metadata, by (namespace, name).
#[derive(Clone, Default)]
pub(crate) struct Fetched {
    deployments: Arc<RwLock<HashMap<Key, Arc<Deployment>>>>,
    replicasets: Arc<RwLock<HashMap<Key, Arc<ReplicaSet>>>>,
}

impl Fetched {
    /// Remembers Deployment `d` and its sets as just read.
    pub(crate) fn put(&self, d: &Arc<Deployment>, sets: &[Arc<ReplicaSet>]) {
        self.deployments
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key_of(&d.metadata), Arc::clone(d));
        let mut kept = self
            .replicasets
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        for rs in sets {
            kept.insert(key_of(&rs.metadata), Arc::clone(rs));
        }
    }

    /// Remembers Deployment `d` as a write of the executor's returned it,
    /// until the watch brings that version or a newer one: a reconcile
    /// that runs before the watch shows the write reads what it wrote.
    pub(crate) fn wrote_deployment(&self, d: Deployment) {
        self.deployments
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key_of(&d.metadata), Arc::new(d));
    }

    /// The same for ReplicaSet `rs` (its managedFields left out, as the
    /// watch keeps sets).
    pub(crate) fn wrote_replicaset(&self, mut rs: ReplicaSet) {
        rs.metadata.managed_fields = None;
        self.replicasets
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key_of(&rs.metadata), Arc::new(rs));
    }

    /// Forgets what was read of Deployment `ns/name` and its sets, as no
    /// Rollout names it any more.
    pub(crate) fn forget(&self, (ns, name): &Key) {
        self.deployments
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(ns.clone(), name.clone()));
        self.replicasets
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(n, _), rs| n != ns || !deployment_owners(&rs.metadata).any(|o| o == name));
    }

    /// Follows one event of a watch: a copy the watch now holds as new, or
    /// an object deleted, is forgotten.
    fn follow<K: Resource + Clone>(
        map: &RwLock<HashMap<Key, Arc<K>>>,
        event: &watcher::Event<Kept<K>>,
    ) {
        let gone = |o: &Kept<K>, deleted: bool| {
            let key = key_of(o.meta());
            let read = map.read().unwrap_or_else(PoisonError::into_inner);
            let stale = read.get(&key).is_some_and(|f| {
                deleted || o.whole().is_some_and(|w| not_older(w.meta(), f.meta()))
            });
            drop(read);
            if stale {
                map.write()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&key);
            }
        };
        match event {
            watcher::Event::Apply(o) | watcher::Event::InitApply(o) => gone(o, false),
            watcher::Event::Delete(o) => gone(o, true),
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
    }

    pub(crate) fn follow_deployments(&self, event: &watcher::Event<Kept<Deployment>>) {
        Self::follow(&self.deployments, event);
    }

    pub(crate) fn follow_replicasets(&self, event: &watcher::Event<Kept<ReplicaSet>>) {
        Self::follow(&self.replicasets, event);
    }
}

/// Object `ns/name` as [`newest`] picks it from what the watch keeps and
/// what was fetched.
fn freshest<K: Resource + Clone>(
    objects: &Objects<K>,
    fetched: &RwLock<HashMap<Key, Arc<K>>>,
    ns: &str,
    name: &str,
) -> Option<Arc<K>> {
    let copy = fetched
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&(ns.to_owned(), name.to_owned()))
        .cloned();
    newest(objects.get(ns, name), copy)
}

/// The newer of what the watch keeps of an object and what was fetched of
/// it; `None` when the watch has seen a newer version than any whole copy,
/// or has not seen the object at all.
fn newest<K: Resource>(seen: Option<Entry<K>>, fetched: Option<Arc<K>>) -> Option<Arc<K>> {
    match (seen?, fetched) {
        (Entry::Whole(k), Some(f)) if newer(f.meta(), k.meta()) => Some(f),
        (Entry::Whole(k), _) => Some(k),
        (Entry::Seen(Some(v)), Some(f)) if version(f.meta()).is_some_and(|f| f >= v) => Some(f),
        (Entry::Seen(_), _) => None,
    }
}

/// The Deployments and ReplicaSets as the controller's watches last saw
/// them, so a reconcile reads them from memory instead of the API server.
///
/// *Assumptions*: a read may lag the cluster; every write that derives a
/// count from it carries the object's resourceVersion, so a stale read
/// makes a conflict (and a fresh reconcile), never a wrong write.
#[derive(Clone)]
pub(crate) struct Cache {
    /// Every Deployment, whole when a Rollout names it.
    pub deployments: Objects<Deployment>,
    /// Every ReplicaSet, whole when a Rollout names its Deployment.
    pub replicasets: Objects<ReplicaSet>,
    /// The names of the ReplicaSets each owner (by uid) has, as the same
    /// watch saw them.
    pub owned: Owned,
    /// Every Rollout (the controller's own store).
    pub rollouts: reflector::Store<Rollout>,
    /// Named objects read from the API server.
    pub fetched: Fetched,
}

impl Cache {
    /// Deployment `ns/name`, whole; `None` when no fresh whole copy is in
    /// memory (read it from the API server, then [`Fetched::put`]).
    pub(crate) fn deployment(&self, ns: &str, name: &str) -> Option<Arc<Deployment>> {
        freshest(&self.deployments, &self.fetched.deployments, ns, name)
    }

    /// ReplicaSet `ns/name`, whole; `None` as for [`Cache::deployment`].
    pub(crate) fn replicaset(&self, ns: &str, name: &str) -> Option<Arc<ReplicaSet>> {
        freshest(&self.replicasets, &self.fetched.replicasets, ns, name)
    }
}

/// ReplicaSet names by owner uid, kept from the ReplicaSet watch's events,
/// so a reconcile finds a Deployment's sets without scanning them all.
#[derive(Clone, Default)]
pub(crate) struct Owned(Arc<RwLock<OwnedIndex>>);

#[derive(Default)]
struct OwnedIndex {
    /// Owner uid to the names of its sets (namespaced by the owner); a
    /// Vec, as an owner has few (a BTreeSet's node is some 300 bytes even
    /// for one name, in a cluster of many owners).
    by_owner: HashMap<String, Vec<String>>,
    /// Set (namespace, name) to its owners' uids.
    owners: HashMap<Key, Vec<String>>,
    /// A relist in progress: the index it is building.
    listing: Option<Box<OwnedIndex>>,
}

impl OwnedIndex {
    fn put(&mut self, meta: &ObjectMeta) {
        let key = key_of(meta);
        self.remove(&key);
        let uids: Vec<String> = meta
            .owner_references
            .iter()
            .flatten()
            .map(|o| o.uid.clone())
            .collect();
        for uid in &uids {
            let names = self.by_owner.entry(uid.clone()).or_default();
            if !names.contains(&key.1) {
                names.push(key.1.clone());
            }
        }
        if !uids.is_empty() {
            self.owners.insert(key, uids);
        }
    }

    fn remove(&mut self, key: &Key) {
        for uid in self.owners.remove(key).unwrap_or_default() {
            if let Some(names) = self.by_owner.get_mut(&uid) {
                names.retain(|n| *n != key.1);
                if names.is_empty() {
                    self.by_owner.remove(&uid);
                }
            }
        }
    }
}

impl Owned {
    /// Follows one event of the ReplicaSet watch.
    pub(crate) fn follow<K: Resource>(&self, event: &watcher::Event<K>) {
        let mut index = self.0.write().unwrap_or_else(PoisonError::into_inner);
        match event {
            watcher::Event::Apply(rs) => index.put(rs.meta()),
            watcher::Event::Delete(rs) => index.remove(&key_of(rs.meta())),
            watcher::Event::Init => index.listing = Some(Box::default()),
            watcher::Event::InitApply(rs) => index.listing.get_or_insert_default().put(rs.meta()),
            watcher::Event::InitDone => {
                let listed = index.listing.take().unwrap_or_default();
                *index = *listed;
            }
        }
    }

    /// The names of the ReplicaSets `uid` owns.
    pub(crate) fn names(&self, uid: &str) -> Vec<String> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .by_owner
            .get(uid)
            .map(|names| {
                let mut names = names.clone();
                names.sort();
                names
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
    use kube::{ResourceExt, runtime::watcher::Event};
    use serde_json::json;

    use super::*;

    fn set(name: &str, owner: &str) -> k8s_openapi::api::apps::v1::ReplicaSet {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "d",
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                              "name": "web", "uid": owner}]},
        }))
        .unwrap()
    }

    #[test]
    fn the_owner_index_follows_applies_deletes_and_a_relist() {
        let owned = Owned::default();
        owned.follow(&Event::Apply(set("web-1", "u")));
        owned.follow(&Event::Apply(set("web-2", "u")));
        owned.follow(&Event::Apply(set("other-1", "v")));
        assert_eq!(owned.names("u"), ["web-1", "web-2"]);
        owned.follow(&Event::Delete(set("web-1", "u")));
        assert_eq!(owned.names("u"), ["web-2"]);
        // Orphaned: no longer the owner's.
        let mut orphan = set("web-2", "u");
        orphan.metadata.owner_references = None;
        owned.follow(&Event::Apply(orphan));
        assert!(owned.names("u").is_empty());
        // A relist: the index is the listing's once it ends, and stays the
        // old one until then.
        owned.follow(&Event::<ReplicaSet>::Init);
        owned.follow(&Event::InitApply(set("web-3", "u")));
        assert_eq!(owned.names("v"), ["other-1"]);
        owned.follow(&Event::<ReplicaSet>::InitDone);
        assert_eq!(owned.names("u"), ["web-3"]);
        assert!(owned.names("v").is_empty(), "gone while the watch was down");
    }

    fn deployment(name: &str, version: &str) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "d", "uid": format!("uid-{name}"),
                         "resourceVersion": version, "labels": {"app": name},
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
                         "managedFields": [{"manager": "kubectl"}]},
            "spec": {"selector": {"matchLabels": {"app": name}},
                     "template": {"spec": {"containers": [{"name": "app", "image": "a:1"}]}}},
        }))
        .unwrap()
    }

    fn owned_by(deployment: &str, name: &str, version: &str) -> ReplicaSet {
        let mut rs = set(name, &format!("uid-{deployment}"));
        rs.metadata.owner_references.as_mut().unwrap()[0].name = deployment.into();
        rs.metadata.resource_version = Some(version.into());
        rs.spec = Some(Default::default());
        rs
    }

    fn rollout(name: &str, workload: &str) -> Rollout {
        serde_json::from_value(json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
            "metadata": {"name": name, "namespace": "d"},
            "spec": {"workload": {"kind": "Deployment", "name": workload},
                     "images": [{"container": "app", "image": "a:2"}],
                     "strategy": {"canary": {"steps": [{"replicas": 1}]}}},
        }))
        .unwrap()
    }

    #[test]
    fn only_named_workloads_and_their_sets_are_kept_whole() {
        let named = Named::default();
        named.follow(&Event::Apply(rollout("r", "web")));
        match named.keep_deployment(deployment("web", "1")) {
            Kept::Whole(d) => {
                assert!(d.spec.is_some());
                assert!(
                    d.metadata.managed_fields.is_some(),
                    "read at the release's end"
                );
            }
            Kept::Meta(_) => panic!("a named Deployment is kept whole"),
        }
        let Kept::Meta(meta) = named.keep_deployment(deployment("other", "1")) else {
            panic!("an unnamed Deployment is kept as its metadata");
        };
        assert_eq!(meta.name.as_deref(), Some("other"));
        assert_eq!(meta.resource_version.as_deref(), Some("1"));
        assert!(
            meta.labels.is_none() && meta.annotations.is_none() && meta.managed_fields.is_none()
        );
        assert!(matches!(
            named.keep_replicaset(owned_by("web", "web-1", "1")),
            Kept::Whole(_)
        ));
        assert!(matches!(
            named.keep_replicaset(owned_by("other", "other-1", "1")),
            Kept::Meta(_)
        ));
        // A release's mark keeps an object whole, and the mark stays in
        // the metadata the triggers read.
        let mut marked = deployment("canary", "1");
        marked.metadata.annotations = Some([(keys::ROLLOUT.to_owned(), "r".to_owned())].into());
        assert!(matches!(named.keep_deployment(marked), Kept::Whole(_)));
        let mut marked = owned_by("other", "other-2", "1");
        marked.metadata.annotations = Some([(keys::ROLLOUT.to_owned(), "r".to_owned())].into());
        assert!(matches!(
            named.keep_replicaset(marked.clone()),
            Kept::Whole(_)
        ));
        assert_eq!(
            slim(marked.metadata).annotations.unwrap()[keys::ROLLOUT],
            "r"
        );
        // Asked to keep everything, it does.
        let all = Named::keeping_all(true);
        assert!(matches!(
            all.keep_deployment(deployment("other", "1")),
            Kept::Whole(_)
        ));
        assert!(matches!(
            all.keep_replicaset(owned_by("other", "other-1", "1")),
            Kept::Whole(_)
        ));
    }

    #[test]
    fn only_the_workloads_of_the_shards_held_are_kept_whole() {
        use crate::lease::{Held, shard_of};
        // Two rollouts in different shards of 4, and shard of `mine` held.
        let names: Vec<String> = (0..20).map(|i| format!("r{i}")).collect();
        let mine = names[0].clone();
        let theirs = names
            .iter()
            .find(|n| shard_of("d", n, 4) != shard_of("d", &mine, 4))
            .unwrap()
            .clone();
        let token = sluice_runtime::server::CancellationToken::new();
        let all = Held::all(4, &token);
        let (publish, held) = tokio::sync::watch::channel(all.clone());
        let named = Named::default().within(held);
        named.follow(&Event::Apply(rollout(&mine, "web")));
        named.follow(&Event::Apply(rollout(&theirs, "api")));
        assert!(matches!(
            named.keep_deployment(deployment("web", "1")),
            Kept::Whole(_)
        ));
        assert!(matches!(
            named.keep_deployment(deployment("api", "1")),
            Kept::Whole(_)
        ));
        // The other shards lost: only the shard of `mine` is left.
        publish.send_replace(all.without(|s| s != shard_of("d", &mine, 4)));
        assert!(matches!(
            named.keep_deployment(deployment("web", "2")),
            Kept::Whole(_)
        ));
        assert!(matches!(
            named.keep_deployment(deployment("api", "2")),
            Kept::Meta(_)
        ));
        assert!(matches!(
            named.keep_replicaset(owned_by("api", "api-1", "2")),
            Kept::Meta(_)
        ));
        // A release's mark keeps whole only where its Rollout is driven.
        let mut marked = deployment("api-canary", "1");
        marked.metadata.annotations = Some([(keys::ROLLOUT.to_owned(), theirs.clone())].into());
        assert!(matches!(named.keep_deployment(marked), Kept::Meta(_)));
        let mut marked = deployment("web-canary", "1");
        marked.metadata.annotations = Some([(keys::ROLLOUT.to_owned(), mine.clone())].into());
        assert!(matches!(named.keep_deployment(marked), Kept::Whole(_)));
    }

    #[test]
    fn the_named_index_follows_rollouts_and_a_relist() {
        let named = Named::default();
        named.follow(&Event::Apply(rollout("a", "web")));
        named.follow(&Event::Apply(rollout("b", "web")));
        assert!(named.names("d", "web"));
        let woken = |named: &Named| {
            let mut names: Vec<_> = named
                .rollouts_of(&owned_by("web", "web-1", "1").metadata)
                .into_iter()
                .map(|r| r.name)
                .collect();
            names.sort();
            names
        };
        assert_eq!(
            woken(&named),
            ["a", "b"],
            "a set wakes every Rollout naming its owner"
        );
        assert!(
            named
                .rollouts_of(&owned_by("other", "other-1", "1").metadata)
                .is_empty()
        );
        assert!(
            named.follow(&Event::Delete(rollout("a", "web"))).is_empty(),
            "b still names it"
        );
        assert!(named.names("d", "web"));
        // Renamed in place: the old workload is no longer named.
        named.follow(&Event::Apply(rollout("b", "api")));
        assert!(!named.names("d", "web") && named.names("d", "api"));
        // A relist: what it no longer holds is reported gone at its end.
        named.follow(&Event::Init);
        named.follow(&Event::InitApply(rollout("c", "db")));
        assert!(
            named.names("d", "api"),
            "the old index serves until the list ends"
        );
        let gone = named.follow(&Event::InitDone);
        assert_eq!(gone, [("d".to_owned(), "api".to_owned())]);
        assert!(named.names("d", "db") && !named.names("d", "api"));
        assert_eq!(
            named.follow(&Event::Delete(rollout("c", "db"))),
            [("d".to_owned(), "db".to_owned())]
        );
    }

    #[tokio::test]
    async fn workload_watches_wait_for_the_rollouts_first_list() {
        use futures::StreamExt;
        let named = Named::default();
        let mut events = Box::pin(named.after_listed(futures::stream::iter([1, 2])));
        assert!(futures::poll!(events.next()).is_pending());
        named.follow(&Event::<Rollout>::Init);
        assert!(futures::poll!(events.next()).is_pending());
        named.follow(&Event::<Rollout>::InitDone);
        assert_eq!(events.collect::<Vec<_>>().await, [1, 2]);
    }

    #[test]
    fn a_read_takes_the_newer_copy_and_never_one_older_than_the_watch() {
        let whole = |v: &str| Some(Entry::Whole(Arc::new(deployment("web", v))));
        let meta = |v: &str| Some(Entry::<Deployment>::Seen(v.parse().ok()));
        let fetched = |v: &str| Some(Arc::new(deployment("web", v)));
        let rv = |d: Option<Arc<Deployment>>| d.and_then(|d| d.metadata.resource_version.clone());
        assert_eq!(rv(newest(whole("5"), None)).as_deref(), Some("5"));
        assert_eq!(rv(newest(whole("5"), fetched("7"))).as_deref(), Some("7"));
        assert_eq!(rv(newest(whole("9"), fetched("7"))).as_deref(), Some("9"));
        assert_eq!(rv(newest(meta("7"), fetched("7"))).as_deref(), Some("7"));
        assert_eq!(rv(newest(meta("5"), fetched("7"))).as_deref(), Some("7"));
        assert_eq!(
            newest(meta("9"), fetched("7")),
            None,
            "the watch has seen past it"
        );
        assert_eq!(newest(meta("9"), None), None);
        assert_eq!(newest(None, fetched("7")), None, "gone, or not yet seen");
        // A version that is not a number is never taken as newer.
        assert_eq!(rv(newest(whole("x"), fetched("7"))).as_deref(), Some("x"));
        assert_eq!(newest(meta("x"), fetched("7")), None);
    }

    #[test]
    fn the_store_keeps_named_objects_whole_and_of_others_their_version() {
        let named = Named::default();
        named.follow(&Event::Apply(rollout("r", "web")));
        let objects = Objects::<Deployment>::default();
        let apply = |d| Event::Apply(named.keep_deployment(d));
        objects.follow(&apply(deployment("web", "3")));
        objects.follow(&apply(deployment("other", "4")));
        assert_eq!(objects.counts(), (1, 1));
        assert!(matches!(objects.get("d", "web"), Some(Entry::Whole(_))));
        assert!(matches!(
            objects.get("d", "other"),
            Some(Entry::Seen(Some(4)))
        ));
        // What a merged watch is told the namespace holds.
        let mut held: Vec<_> = objects
            .in_namespace("d")
            .iter()
            .map(|k| (k.name_any(), k.resource_version(), k.whole().is_some()))
            .collect();
        held.sort();
        assert_eq!(
            held,
            [
                ("other".into(), Some("4".into()), false),
                ("web".into(), Some("3".into()), true)
            ]
        );
        assert!(objects.in_namespace("elsewhere").is_empty());
        // A relist replaces everything at its end, not before.
        objects.follow(&Event::Init);
        objects.follow(&Event::InitApply(
            named.keep_deployment(deployment("new", "9")),
        ));
        assert_eq!(objects.counts(), (1, 1));
        objects.follow(&Event::InitDone);
        assert_eq!(objects.counts(), (0, 1));
        assert!(objects.get("d", "web").is_none());
        objects.follow(&Event::Delete(
            named.keep_deployment(deployment("new", "10")),
        ));
        assert_eq!(objects.counts(), (0, 0));
    }

    #[test]
    fn a_fetched_copy_goes_once_the_watch_holds_it_whole_or_nobody_names_it() {
        let fetched = Fetched::default();
        let d = Arc::new(deployment("web", "7"));
        let sets = [
            Arc::new(owned_by("web", "web-1", "7")),
            Arc::new(owned_by("web", "web-2", "7")),
        ];
        fetched.put(&d, &sets);
        let count = |f: &Fetched| {
            (
                f.deployments.read().unwrap().len(),
                f.replicasets.read().unwrap().len(),
            )
        };
        // An older whole copy, or metadata, leaves it.
        fetched.follow_deployments(&Event::Apply(Kept::Whole(Arc::new(deployment("web", "6")))));
        fetched.follow_deployments(&Event::Apply(Kept::Meta(Box::new(slim(
            deployment("web", "8").metadata,
        )))));
        assert_eq!(count(&fetched), (1, 2));
        fetched.follow_deployments(&Event::Apply(Kept::Whole(Arc::new(deployment("web", "8")))));
        fetched.follow_replicasets(&Event::Delete(Kept::Meta(Box::new(slim(
            owned_by("web", "web-1", "8").metadata,
        )))));
        assert_eq!(count(&fetched), (0, 1));
        fetched.put(&d, &sets[..1]);
        fetched.forget(&("d".to_owned(), "web".to_owned()));
        assert_eq!(count(&fetched), (0, 0));
    }

    #[test]
    fn a_write_is_read_back_until_the_watch_shows_it() {
        let named = Named::default();
        named.follow(&Event::Apply(rollout("r", "web")));
        let (objects, fetched) = (Objects::<ReplicaSet>::default(), Fetched::default());
        let apply = |rs: ReplicaSet| {
            let event = Event::Apply(named.keep_replicaset(rs));
            objects.follow(&event);
            fetched.follow_replicasets(&event);
        };
        let replicas = |rs: Option<Arc<ReplicaSet>>| rs.and_then(|rs| rs.spec.as_ref()?.replicas);
        let mut seen = owned_by("web", "web-1", "5");
        seen.spec.as_mut().unwrap().replicas = Some(1);
        apply(seen);
        // The executor scales it to 2; the write returns version 6.
        let mut written = owned_by("web", "web-1", "6");
        written.spec.as_mut().unwrap().replicas = Some(2);
        written.metadata.managed_fields = Some(Vec::new());
        fetched.wrote_replicaset(written.clone());
        let read = freshest(&objects, &fetched.replicasets, "d", "web-1");
        assert_eq!(
            replicas(read.clone()),
            Some(2),
            "its own write, not the watch's 1"
        );
        assert!(read.unwrap().metadata.managed_fields.is_none());
        // The watch shows it, then a newer change: the watch's copy again.
        apply(written);
        assert!(fetched.replicasets.read().unwrap().is_empty());
        let mut later = owned_by("web", "web-1", "7");
        later.spec.as_mut().unwrap().replicas = Some(3);
        apply(later);
        assert_eq!(
            replicas(freshest(&objects, &fetched.replicasets, "d", "web-1")),
            Some(3)
        );
    }
}
