//! The cluster's objects, in memory, with Kubernetes' object semantics.
//!
//! *Guarantees*
//! - One global, monotonic resourceVersion; every write gets the next one.
//! - Objects are kept serialized (about a tenth of the memory of a parsed
//!   JSON tree); reads hand out shared bytes without copying.
//! - Every write is recorded in its resource's event history (the last
//!   [`HISTORY`] events) and sent to its watchers, under the same lock as the
//!   write, so a watch started at resourceVersion N sees exactly the writes
//!   after N, in order. An N older than the history is `410 Gone`.
//! - Deletion honours finalizers (`deletionTimestamp` first, removal when the
//!   last finalizer goes), owner references (background, foreground and
//!   orphan propagation) and namespaces (deleting one deletes its content).
//!
//! *Assumptions*: callers have resolved the resource and checked the verb.
//!
//! *Layout, by job*: this file holds the objects and their writes
//! (create, read, update, patch, watch); `keys` how they are found and
//! named; `lock` how the store is held; `list` paging; `delete` deletion
//! with its preconditions, finalizers, owners and namespaces. Writes that
//! change one part of an object (a status, a pod's binding) are in
//! `parts`, which splices the part into the stored JSON; writes of many
//! objects at once in `copies`; the decoding of objects by their writers
//! for in-process watchers is in `decode`.

use std::{
    any::Any,
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    sync::{
        Arc, LazyLock, OnceLock, RwLock,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::SystemTime,
};

use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

pub use decode::{Decoded, Decoder};
use delete::finalizers;
pub use delete::{DeleteOptions, Propagation, deletable};
pub use keys::Pair;
use keys::{ObjectKey, TableKey};
pub use keys::{valid_label, valid_name};
pub use list::ListPage;
use lock::Garbage;

use crate::{
    resources::{self, Registry, Resource},
    selector::{FieldSelector, LabelSelector, fields_of, labels_of},
    splice::Spots,
    status::ApiError,
    time::rfc3339,
};

mod copies;
mod decode;
mod delete;
mod keys;
mod list;
mod lock;
mod parts;
#[cfg(test)]
mod tests;

/// Events kept per resource for watches that resume from a resourceVersion.
pub const HISTORY: usize = 10_000;
/// A pod's grace period when neither the request nor the pod gives one.
pub const DEFAULT_GRACE_SECONDS: i64 = 30;
/// Events a slow watcher may fall behind before it is closed.
const WATCH_BUFFER: usize = 4096;

// Hash and order as the owned tuple does, as `Borrow` requires.

/// An object that names another as its owner.
#[derive(Clone)]
pub struct Dependent {
    /// Its resource's group and plural.
    pub resource: (String, String),
    /// Its JSON.
    pub json: Arc<[u8]>,
    /// What its resource's decoder made of it, if it has one.
    pub decoded: Option<Decoded>,
}

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Removed.
    Deleted,
}

impl EventType {
    /// The watch event's `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One change, as watchers receive it.
#[derive(Debug)]
pub struct WatchEvent {
    /// What happened.
    pub kind: EventType,
    /// The resourceVersion of the change.
    pub rv: u64,
    /// The object's namespace (empty when cluster-scoped).
    pub namespace: String,
    /// The object's name.
    pub name: String,
    /// Its labels, for selector filtering.
    pub labels: Arc<[(String, String)]>,
    /// Its indexed fields, for selector filtering.
    pub fields: Arc<[(&'static str, String)]>,
    /// For a modification, the object before it, with its labels and
    /// indexed fields: a filtered watch sees it arrive or leave.
    pub before: Option<Before>,
    /// The object as JSON.
    pub object: Arc<[u8]>,
    /// The object as an in-process watcher decoded it, kept for the next
    /// one: every watcher of a resource gets the same event, so they can
    /// share one decoding, as controllers share an informer's cache.
    pub decoded: OnceLock<Arc<dyn Any + Send + Sync>>,
}

/// An object before a change: its labels and indexed fields, and its JSON
/// (what a filtered watch it leaves is sent with its DELETED).
#[derive(Debug)]
pub struct Before {
    labels: Arc<[(String, String)]>,
    fields: Arc<[(&'static str, String)]>,
    object: Arc<[u8]>,
}

impl WatchEvent {
    /// What a watch with these filters sees of this event, if anything.
    /// As kube-apiserver: an object modified into the selection is ADDED
    /// for it, and one modified out of it DELETED (sent as
    /// [`WatchEvent::left`] shows it).
    pub fn seen_as(
        &self,
        namespace: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> Option<EventType> {
        if namespace.is_some_and(|ns| ns != self.namespace) {
            return None;
        }
        let matches = |l: &[(String, String)], f: &[(&'static str, String)]| {
            labels.matches(l) && fields.matches(&self.namespace, &self.name, f)
        };
        let now = matches(&self.labels, &self.fields);
        match (&self.before, self.kind) {
            (Some(before), EventType::Modified) => {
                match (matches(&before.labels, &before.fields), now) {
                    (true, true) => Some(EventType::Modified),
                    (false, true) => Some(EventType::Added),
                    (true, false) => Some(EventType::Deleted),
                    (false, false) => None,
                }
            }
            _ => now.then_some(self.kind),
        }
    }

    /// The object a watch it left is sent with its DELETED: the state it
    /// had while it still matched, under this change's resourceVersion, as
    /// kube-apiserver's watch cache sends it. `None` when this event is
    /// not a modification.
    pub fn left(&self) -> Option<Vec<u8>> {
        let before = self.before.as_ref()?;
        let mut object: serde_json::Value = serde_json::from_slice(&before.object).ok()?;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        serde_json::to_vec(&object).ok()
    }
}

#[derive(Debug, Clone)]
struct Entry {
    bytes: Arc<[u8]>,
    labels: Arc<[(String, String)]>,
    fields: Arc<[(&'static str, String)]>,
    uid: Arc<str>,
    owners: Box<[Arc<str>]>,
    /// The object as its resource's [`Decoder`] made it, if it has one.
    decoded: Option<Decoded>,
    /// Where its version, spec and status lie in `bytes`, when a one-part
    /// write made them and so knows (see [`splice`](crate::splice)).
    spots: Option<Box<Spots>>,
}

impl Entry {
    /// Its decoding, as an event carries it.
    fn decoded_cell(&self) -> OnceLock<Decoded> {
        self.decoded
            .clone()
            .map_or_else(OnceLock::new, OnceLock::from)
    }
}

/// An object's JSON, what its resource's decoder made of it, and where its
/// parts lie when that is known: what a write of one part reads.
struct Stored {
    bytes: Arc<[u8]>,
    decoded: Option<Decoded>,
    spots: Option<Spots>,
}

/// What a resourceVersion is first written as, to be replaced by the real
/// one under the lock.
const RV_HOLE: &str = "sluice-resource-version-to-be-assigned";

/// Where `finder`'s text is in `bytes`, when it is there exactly once.
fn find_once(bytes: &[u8], finder: &memchr::memmem::Finder<'_>) -> Option<usize> {
    let mut found = finder.find_iter(bytes);
    match (found.next(), found.next()) {
        (Some(at), None) => Some(at),
        _ => None,
    }
}

/// A created object ready to commit.
struct NewObject {
    key: ObjectKey,
    prepared: Prepared,
    /// The resource it defines, for a CustomResourceDefinition.
    defined: Option<Resource>,
}

/// An object serialized, with what the indexes need, ready to be stored
/// under a resourceVersion not yet known.
struct Prepared {
    /// The object, its resourceVersion still the hole.
    object: Value,
    /// Its JSON.
    bytes: Vec<u8>,
    /// Where the hole's text starts in `bytes`; `None` when the text also
    /// appears elsewhere in the object, and it is serialized again instead.
    hole: Option<usize>,
    labels: Arc<[(String, String)]>,
    fields: Arc<[(&'static str, String)]>,
    owners: Box<[Arc<str>]>,
    decoded: Option<Decoded>,
}

impl Prepared {
    /// Serializes `object` (the costly part of a write) and has `decoder`
    /// (its resource's, if any) decode it for the watchers; no lock is
    /// needed.
    fn new(mut object: Value, decoder: Option<Arc<dyn Decoder>>) -> Result<Self, ApiError> {
        object["metadata"]["resourceVersion"] = json!(RV_HOLE);
        let bytes = serde_json::to_vec(&object).map_err(|e| ApiError::internal(e.to_string()))?;
        // Built once: building a searcher cost as much as searching.
        static HOLE: LazyLock<memchr::memmem::Finder<'static>> =
            LazyLock::new(|| memchr::memmem::Finder::new(RV_HOLE));
        let hole = find_once(&bytes, &HOLE);
        Ok(Self {
            labels: labels_of(&object),
            fields: fields_of(&object),
            owners: owners_of(&object),
            decoded: decoder.and_then(|d| d.whole(&object)),
            object,
            bytes,
            hole,
        })
    }
}

struct Table {
    objects: BTreeMap<ObjectKey, Entry>,
    history: VecDeque<Arc<WatchEvent>>,
    /// The newest resourceVersion dropped from `history`.
    compacted: u64,
    sender: broadcast::Sender<Arc<WatchEvent>>,
}

impl Table {
    fn new() -> Self {
        Self {
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            compacted: 0,
            sender: broadcast::channel(WATCH_BUFFER).0,
        }
    }
}

/// Where an object lives.
///
/// Shared: the owner and uid indexes hold the same one, so indexing an
/// object costs one copy of its four names, not one per index.
type Location = Arc<(TableKey, ObjectKey)>;

struct Inner {
    /// Events kept per resource.
    history: usize,
    rv: u64,
    registry: Registry,
    tables: HashMap<TableKey, Table>,
    /// owner uid -> dependents.
    dependents: HashMap<Arc<str>, BTreeSet<Location>>,
    /// uid -> location, for owners in foreground deletion.
    by_uid: HashMap<Arc<str>, Location>,
    /// What the writes under the current lock replaced.
    garbage: Garbage,
    /// The store's decoders.
    decoders: Arc<decode::Decoders>,
}

/// The start of a watch.
pub struct WatchStart {
    /// Events to send first (the history after the requested version, or
    /// synthetic ADDED events for the current state).
    pub initial: Vec<Arc<WatchEvent>>,
    /// Live events from here on.
    pub live: broadcast::Receiver<Arc<WatchEvent>>,
    /// The store's resourceVersion when the watch started.
    pub resource_version: u64,
}

/// Which part of an object a write targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The object (status ignored when the resource has a status subresource).
    Main,
    /// Only the status.
    Status,
}

/// The in-memory object store.
pub struct Store {
    /// Everything stored: readers share it, a write holds it alone.
    inner: RwLock<Inner>,
    /// uids and generated names handed out so far (no lock needed).
    uids: AtomicU64,
    /// Cluster IPs handed out so far.
    ips: AtomicU32,
    clock: Arc<dyn Fn() -> SystemTime + Send + Sync>,
    /// Decoders of objects for in-process watchers, by resource (shared
    /// with the writes made under the lock).
    decoders: Arc<decode::Decoders>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

fn text<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_str().unwrap_or_default()
}

impl Store {
    /// A store with the built-in resources and the usual namespaces.
    pub fn new(clock: Arc<dyn Fn() -> SystemTime + Send + Sync>) -> Self {
        Self::with_history(clock, HISTORY)
    }

    /// As [`Store::new`], keeping `history` events per resource for watches.
    pub fn with_history(clock: Arc<dyn Fn() -> SystemTime + Send + Sync>, history: usize) -> Self {
        let decoders = Arc::new(decode::Decoders::default());
        let store = Self {
            inner: RwLock::new(Inner {
                history,
                rv: 0,
                registry: Registry::builtin(),
                tables: HashMap::new(),
                dependents: HashMap::new(),
                by_uid: HashMap::new(),
                garbage: Garbage::default(),
                decoders: decoders.clone(),
            }),
            uids: AtomicU64::new(0),
            ips: AtomicU32::new(0),
            clock,
            decoders,
        };
        if let Some(ns) = store.resource("", "namespaces") {
            for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
                let object =
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
                let _ = store.create(&ns, "", object);
            }
        }
        if let Some(classes) = store.resource("scheduling.k8s.io", "priorityclasses") {
            // The two classes kube-apiserver makes at its start.
            for (name, value, description) in [
                (
                    "system-node-critical",
                    2_000_001_000,
                    "Used for system critical pods that must not be moved from their current node.",
                ),
                (
                    "system-cluster-critical",
                    2_000_000_000,
                    "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
                ),
            ] {
                let object = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                    "metadata": {"name": name}, "value": value, "description": description});
                let _ = store.create(&classes, "", object);
            }
        }
        store
    }

    /// What replacing `current` with `object` (or its status) stores, or
    /// `None` when that changes nothing. Needs no lock: the caller commits
    /// it only if `current` is still the stored object.
    fn replacement(
        &self,
        res: &Resource,
        current: &Value,
        mut object: Value,
        part: Part,
    ) -> Result<Option<Value>, ApiError> {
        check_kind(res, &object)?;
        let mut next = match part {
            Part::Status => {
                let mut next = current.clone();
                next["status"] = object.get("status").cloned().unwrap_or(Value::Null);
                // Who owns which status fields changes with the status.
                if let Some(managed) = object["metadata"].get("managedFields") {
                    next["metadata"]["managedFields"] = managed.clone();
                }
                next
            }
            Part::Main => {
                if res.status {
                    object["status"] = current.get("status").cloned().unwrap_or(Value::Null);
                    if object["status"].is_null()
                        && let Some(map) = object.as_object_mut()
                    {
                        map.remove("status");
                    }
                }
                self.defaults(res, &mut object);
                let mut problems = crate::validation::problems(res, &object);
                problems.extend(crate::validation::update_problems(res, current, &object));
                if !problems.is_empty() {
                    return Err(ApiError::invalid(
                        &res.group,
                        &res.kind,
                        text(current, &["metadata", "name"]),
                        &problems,
                    ));
                }
                // Fields the server owns keep their values.
                for field in [
                    "uid",
                    "creationTimestamp",
                    "deletionTimestamp",
                    "deletionGracePeriodSeconds",
                    "generation",
                    "name",
                    "namespace",
                ] {
                    match current["metadata"].get(field) {
                        Some(v) => object["metadata"][field] = v.clone(),
                        None => {
                            if let Some(meta) = object["metadata"].as_object_mut() {
                                meta.remove(field);
                            }
                        }
                    }
                }
                object
            }
        };
        if next.get("apiVersion").is_none() {
            next["apiVersion"] = current["apiVersion"].clone();
        }
        if next.get("kind").is_none() {
            next["kind"] = current["kind"].clone();
        }
        if res.counts_generations() && spec_changed(&next, current, res) {
            let generation = current["metadata"]["generation"].as_i64().unwrap_or(1);
            next["metadata"]["generation"] = json!(generation + 1);
        }
        if next == *current || same_but_ownership_times(&next, current) {
            // Nothing changed: no new resourceVersion, no event. As on
            // kube-apiserver, a write that would only move the times of
            // its managedFields entries is none either.
            return Ok(None);
        }
        Ok(Some(next))
    }

    /// A new uid.
    fn uid(&self) -> String {
        format!(
            "5a1ce000-0000-4000-8000-{:012x}",
            self.uids.fetch_add(1, Ordering::Relaxed) + 1
        )
    }

    /// A generated name's random-looking suffix.
    fn suffix(&self) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let mut n =
            (self.uids.fetch_add(1, Ordering::Relaxed) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (0..5)
            .map(|_| {
                let c = ALPHABET[(n % ALPHABET.len() as u64) as usize] as char;
                n /= ALPHABET.len() as u64;
                c
            })
            .collect()
    }

    /// Fills in what the API server defaults, cluster IPs included.
    pub fn defaults(&self, res: &Resource, object: &mut Value) {
        let mut next_ip = || {
            let ip = self.ips.fetch_add(1, Ordering::Relaxed) + 1;
            format!("10.96.{}.{}", ip / 250, ip % 250 + 1)
        };
        crate::defaults::apply(&res.group, &res.plural, object, &mut next_ip);
        if let Some(schema) = &res.schema {
            // As kube-apiserver: unknown fields go, then defaults come.
            crate::schema::prune(object, schema);
            crate::schema::defaults(object, schema);
        } else if let Some(schema) = res
            .versions
            .first()
            .and_then(|version| crate::openapi::structural(&res.group, version, &res.kind))
        {
            // A built-in kind's unknown fields go as its Go type drops them.
            crate::schema::prune(object, &schema);
        }
    }

    /// A snapshot of the known resources.
    pub fn registry(&self) -> Registry {
        self.read().registry.clone()
    }

    /// One known resource, without copying the whole registry.
    pub fn resource(&self, group: &str, plural: &str) -> Option<Arc<Resource>> {
        self.read().registry.get(group, plural)
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.read().rv
    }

    /// Objects stored, over every resource.
    pub fn len(&self) -> usize {
        self.read().tables.values().map(|t| t.objects.len()).sum()
    }

    /// Whether any object of core resource `plural` is stored, in any
    /// namespace: a look that allocates nothing, for the admission steps
    /// that apply only where such objects exist (quotas, limit ranges).
    pub(crate) fn holds_core(&self, plural: &str) -> bool {
        self.read()
            .tables
            .get(&("", plural) as &dyn Pair)
            .is_some_and(|t| !t.objects.is_empty())
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn now(&self) -> String {
        rfc3339((self.clock)())
    }

    /// Creates an object.
    ///
    /// # Errors
    /// 409 AlreadyExists, 404 for a missing namespace, 403 for a terminating
    /// one, 422 for a bad name, 400 for a body of another kind.
    pub fn create(
        &self,
        res: &Resource,
        namespace: &str,
        object: Value,
    ) -> Result<Value, ApiError> {
        // Everything but the checks against other objects and the commit is
        // done before taking the lock, so writers run side by side.
        let new = self.prepare_create(res, namespace, object, None)?;
        let mut inner = self.lock();
        inner.check_new(res, &new.key)?;
        if let Some(defined) = new.defined {
            inner.registry.insert(defined);
        }
        inner.commit_prepared(res, new.key, new.prepared, EventType::Added)
    }

    /// Object `name` as read, and as `body` patches it; or, for a
    /// server-side apply of an object that does not exist, the object the
    /// apply creates.
    fn read_patched(
        &self,
        res: &Resource,
        namespace: &str,
        name: &str,
        kind: crate::patch::PatchType,
        body: &[u8],
        part: Part,
    ) -> Result<Patched, ApiError> {
        use crate::patch::{PatchType, apply};
        let builtin = res.builtin();
        match self.get_value(res, namespace, name) {
            Ok(current) => {
                let mut patched = current.clone();
                apply(kind, &mut patched, body, builtin)?;
                Ok(Patched::Existing(current, patched))
            }
            Err(e) if e.code == 404 && kind == PatchType::Apply && part == Part::Main => {
                let mut fresh = json!({});
                apply(kind, &mut fresh, body, builtin)?;
                if fresh["metadata"]["name"].is_null() {
                    fresh["metadata"]["name"] = json!(name);
                }
                Ok(Patched::Fresh(fresh))
            }
            Err(e) => Err(e),
        }
    }

    /// What [`Store::create`] would store, stored nowhere (`dryRun=All`):
    /// the same checks, names, defaults and validation, no
    /// resourceVersion, no event.
    ///
    /// # Errors
    /// As [`Store::create`].
    pub fn create_dry(
        &self,
        res: &Resource,
        namespace: &str,
        object: Value,
    ) -> Result<Value, ApiError> {
        let new = self.prepare_create(res, namespace, object, None)?;
        self.read().check_new(res, &new.key)?;
        Ok(dry_result(new.prepared.object))
    }

    /// What [`Store::update`] would store, stored nowhere (`dryRun=All`).
    ///
    /// # Errors
    /// As [`Store::update`].
    pub fn update_dry(
        &self,
        res: &Resource,
        namespace: &str,
        name: &str,
        object: Value,
        part: Part,
    ) -> Result<Value, ApiError> {
        check_kind(res, &object)?;
        check_name(name, &object)?;
        let current = self.get_value(res, namespace, name)?;
        check_version(res, name, &object, &current)?;
        self.admit_update(res, namespace, name, &current, &object, part)?;
        Ok(match self.replacement(res, &current, object, part)? {
            Some(next) => {
                let mut next = next;
                next["metadata"]["resourceVersion"] =
                    current["metadata"]["resourceVersion"].clone();
                next
            }
            None => current,
        })
    }

    /// What [`Store::patch`] would store, stored nowhere (`dryRun=All`).
    ///
    /// # Errors
    /// As [`Store::patch`].
    pub fn patch_dry(
        &self,
        res: &Resource,
        namespace: &str,
        name: &str,
        kind: crate::patch::PatchType,
        body: &[u8],
        part: Part,
    ) -> Result<Value, ApiError> {
        let (current, patched) = match self.read_patched(res, namespace, name, kind, body, part)? {
            Patched::Existing(current, patched) => (current, patched),
            Patched::Fresh(fresh) => return self.create_dry(res, namespace, fresh),
        };
        check_version(res, name, &patched, &current)?;
        self.admit_update(res, namespace, name, &current, &patched, part)?;
        Ok(match self.replacement(res, &current, patched, part)? {
            Some(mut next) => {
                next["metadata"]["resourceVersion"] =
                    current["metadata"]["resourceVersion"].clone();
                next
            }
            None => current,
        })
    }

    /// The quota admission of a replacement of `current` by `object`
    /// (its status alone changes no usage). Called without the lock held,
    /// as it counts what the namespace stores.
    fn admit_update(
        &self,
        res: &Resource,
        namespace: &str,
        name: &str,
        current: &Value,
        object: &Value,
        part: Part,
    ) -> Result<(), ApiError> {
        if part != Part::Main {
            return Ok(());
        }
        crate::quota::admit_update(self, res, namespace, name, current, object)
    }

    /// A new object made ready to commit: checked, named (with `identity`,
    /// a name and uid, when given), defaulted and serialized.
    fn prepare_create(
        &self,
        res: &Resource,
        namespace: &str,
        mut object: Value,
        identity: Option<(&str, &str)>,
    ) -> Result<NewObject, ApiError> {
        let now = self.now();
        check_kind(res, &object)?;
        if res.group.is_empty() && res.plural == "pods" {
            // Admitted before its name is made, as kube-apiserver admits it.
            crate::serviceaccounts::admit_pod(self, namespace, &mut object, || self.suffix())?;
        }
        let meta = object
            .as_object_mut()
            .map(|o| o.entry("metadata").or_insert_with(|| json!({})));
        let Some(meta) = meta.and_then(Value::as_object_mut) else {
            return Err(ApiError::bad_request("the object has no metadata"));
        };
        let body_ns = meta
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if res.namespaced && !body_ns.is_empty() && body_ns != namespace {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let mut name = match identity {
            Some((name, _)) => name.to_owned(),
            None => meta
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        };
        if name.is_empty() {
            let prefix = meta
                .get("generateName")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            if prefix.is_empty() {
                return Err(ApiError::invalid(
                    &res.group,
                    &res.kind,
                    "",
                    &[(
                        "metadata.name".into(),
                        "Required value: name or generateName is required".into(),
                    )],
                ));
            }
            name = format!("{prefix}{}", self.suffix());
        }
        // A namespace's name is an RFC 1123 label (no dots, 63 at most);
        // other objects' a subdomain.
        let namespace_name = res.group.is_empty() && res.plural == "namespaces";
        let why = if namespace_name {
            (!keys::valid_label(&name)).then_some(
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
            )
        } else {
            (!valid_name(&name)).then_some(
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
            )
        };
        if let Some(why) = why {
            return Err(ApiError::invalid(
                &res.group,
                &res.kind,
                &name,
                &[(
                    "metadata.name".into(),
                    format!("Invalid value: {name:?}: {why}"),
                )],
            ));
        }
        let namespace = if res.namespaced { namespace } else { "" };
        let key = (namespace.to_owned(), name.clone());
        let uid = match identity {
            Some((_, uid)) => uid.to_owned(),
            None => self.uid(),
        };
        meta.insert("name".into(), json!(name));
        if res.namespaced {
            meta.insert("namespace".into(), json!(namespace));
        } else {
            meta.remove("namespace");
        }
        meta.insert("uid".into(), json!(uid));
        meta.insert("creationTimestamp".into(), json!(now));
        if res.counts_generations() {
            meta.insert("generation".into(), json!(1));
        } else {
            meta.remove("generation");
        }
        meta.remove("deletionTimestamp");
        // managedFields are kept: the API layer sets them (`managed`).
        if !res.builtin()
            && res.status
            && let Some(map) = object.as_object_mut()
        {
            // A custom resource whose status has its own subresource
            // starts without one, as kube-apiserver creates it.
            map.remove("status");
        }
        self.defaults(res, &mut object);
        crate::limits::admit(self, res, namespace, &name, &mut object)?;
        let problems = crate::validation::problems(res, &object);
        if !problems.is_empty() {
            return Err(ApiError::invalid(&res.group, &res.kind, &name, &problems));
        }
        if identity.is_none() {
            // Copies (`create_copies`) are made one by one where a quota is.
            crate::quota::admit(self, res, namespace, &name, &object)?;
        }
        if res.group.is_empty() && res.plural == "namespaces" {
            object["status"] = json!({"phase": "Active"});
            object["spec"] = json!({"finalizers": ["kubernetes"]});
        }
        let defined =
            if res.group == "apiextensions.k8s.io" && res.plural == "customresourcedefinitions" {
                let defined = resources::from_crd(&object)
                    .map_err(|causes| ApiError::invalid(&res.group, &res.kind, &name, &causes))?;
                established(&mut object, &now);
                Some(defined)
            } else {
                None
            };
        let prepared = Prepared::new(object, self.decoders.of(res))?;
        Ok(NewObject {
            key,
            prepared,
            defined,
        })
    }

    /// One object, as JSON bytes.
    ///
    /// # Errors
    /// 404 NotFound.
    pub fn get(&self, res: &Resource, namespace: &str, name: &str) -> Result<Arc<[u8]>, ApiError> {
        let inner = self.read();
        inner.entry(res, namespace, name).map(|e| e.bytes.clone())
    }

    /// One object's JSON, and what its resource's decoder made of it.
    ///
    /// # Errors
    /// 404.
    pub fn get_decoded(
        &self,
        res: &Resource,
        namespace: &str,
        name: &str,
    ) -> Result<(Arc<[u8]>, Option<Decoded>), ApiError> {
        self.get_stored(res, namespace, name)
            .map(|stored| (stored.bytes, stored.decoded))
    }

    /// One object as stored, for a write that changes part of it.
    fn get_stored(&self, res: &Resource, namespace: &str, name: &str) -> Result<Stored, ApiError> {
        let inner = self.read();
        inner.entry(res, namespace, name).map(|e| Stored {
            bytes: e.bytes.clone(),
            decoded: e.decoded.clone(),
            spots: e.spots.as_deref().cloned(),
        })
    }

    /// One object, parsed.
    ///
    /// # Errors
    /// 404 NotFound.
    pub fn get_value(
        &self,
        res: &Resource,
        namespace: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        let bytes = self.get(res, namespace, name)?;
        serde_json::from_slice(&bytes).map_err(|e| ApiError::internal(e.to_string()))
    }

    /// Starts a watch after `since` (or at the current state when `None`).
    ///
    /// # Errors
    /// 410 Gone when `since` is older than the history.
    pub fn watch(
        &self,
        res: &Resource,
        namespace: Option<&str>,
        since: Option<u64>,
    ) -> Result<WatchStart, ApiError> {
        let mut inner = self.lock();
        let rv = inner.rv;
        let table = inner
            .tables
            .entry((res.group.clone(), res.plural.clone()))
            .or_insert_with(Table::new);
        let live = table.sender.subscribe();
        let initial = match since {
            Some(since) if since < table.compacted => {
                return Err(ApiError::gone(format!(
                    "too old resource version: {since} ({})",
                    table.compacted
                )));
            }
            Some(since) => table
                .history
                .iter()
                .filter(|e| e.rv > since)
                .cloned()
                .collect(),
            None => table
                .objects
                .iter()
                .filter(|(key, _)| namespace.is_none_or(|ns| key.0 == ns))
                .map(|(key, entry)| {
                    Arc::new(WatchEvent {
                        kind: EventType::Added,
                        rv,
                        namespace: key.0.clone(),
                        name: key.1.clone(),
                        labels: entry.labels.clone(),
                        fields: entry.fields.clone(),
                        before: None,
                        object: entry.bytes.clone(),
                        decoded: entry.decoded_cell(),
                    })
                })
                .collect(),
        };
        Ok(WatchStart {
            initial,
            live,
            resource_version: rv,
        })
    }

    /// Replaces an object (PUT), or its status.
    ///
    /// # Errors
    /// 404, 409 for a stale resourceVersion, 400 for a mismatched body.
    pub fn update(
        &self,
        res: &Resource,
        namespace: &str,
        name: &str,
        object: Value,
        part: Part,
    ) -> Result<Value, ApiError> {
        check_kind(res, &object)?;
        check_name(name, &object)?;
        if self.holds_core("resourcequotas")
            && let Ok(current) = self.get_value(res, namespace, name)
        {
            // Admitted before the lock: the quota counts what is stored.
            self.admit_update(res, namespace, name, &current, &object, part)?;
        }
        let mut inner = self.lock();
        let current = inner.value(res, namespace, name)?;
        check_version(res, name, &object, &current)?;
        inner.replace(self, res, namespace, name, current, object, part)
    }

    /// Patches an object, or its status; server-side apply creates it when absent.
    ///
    /// # Errors
    /// As [`Store::update`], plus patch errors.
    pub fn patch(
        &self,
        res: &Resource,
        namespace: &str,
        name: &str,
        kind: crate::patch::PatchType,
        body: &[u8],
        part: Part,
    ) -> Result<Value, ApiError> {
        use crate::patch::apply;
        let builtin = res.builtin();
        // Parsed outside the lock; a write that came first meanwhile is
        // caught when the patched object is stored.
        let (current, patched) = match self.read_patched(res, namespace, name, kind, body, part)? {
            Patched::Existing(current, patched) => (current, patched),
            Patched::Fresh(fresh) => return self.create(res, namespace, fresh),
        };
        self.admit_update(res, namespace, name, &current, &patched, part)?;
        let mut inner = self.lock();
        // Another write may have landed since the read: patch again on top.
        let latest = inner.value(res, namespace, name)?;
        let (current, patched) = if text(&latest, &["metadata", "resourceVersion"])
            == text(&current, &["metadata", "resourceVersion"])
        {
            (current, patched)
        } else {
            let mut again = latest.clone();
            apply(kind, &mut again, body, builtin)?;
            (latest, again)
        };
        check_version(res, name, &patched, &current)?;
        inner.replace(self, res, namespace, name, current, patched, part)
    }

    /// Changes an object in place: `change` edits a copy of the current
    /// object, read outside the store's lock, and the result is committed
    /// only if the object is still the one read; otherwise `change` runs
    /// again on the newer version (so it may run more than once, and no
    /// other write is lost). Nothing is written when `change` leaves the
    /// object as it was. With [`Part::Status`], only the status `change`
    /// leaves is kept, as with a write to the status subresource (the
    /// status-only writes of controllers take [`Store::modify_status`],
    /// which splices instead).
    ///
    /// # Errors
    /// 404, or what a replace of the result would give.
    pub fn modify(
        &self,
        res: &Resource,
        namespace: &str,
        name: &str,
        part: Part,
        mut change: impl FnMut(&mut Value),
    ) -> Result<Value, ApiError> {
        // Optimistic, as the API server's guaranteed update over etcd: read,
        // change and serialize outside the lock, then write only if the
        // object is still the one read, else again from the newer one.
        // Writers to different objects then use the cores side by side.
        loop {
            let read = self.get(res, namespace, name)?;
            let current: Value =
                serde_json::from_slice(&read).map_err(|e| ApiError::internal(e.to_string()))?;
            let still = |inner: &Inner| {
                inner
                    .entry(res, namespace, name)
                    .is_ok_and(|e| Arc::ptr_eq(&e.bytes, &read))
            };
            let mut next = current.clone();
            change(&mut next);
            let Some(next) = self.replacement(res, &current, next, part)? else {
                return Ok(current);
            };
            let prepared = Prepared::new(next, self.decoders.of(res))?;
            let mut inner = self.lock();
            if !still(&inner) {
                continue;
            }
            return inner.commit_replacement(self, res, namespace, name, prepared);
        }
    }
}

/// Optimistic concurrency: a write that names a resourceVersion must name
/// the current one.
/// A replacement's body names the object of its URL, or no object.
pub(crate) fn check_name(name: &str, object: &Value) -> Result<(), ApiError> {
    let body_name = text(object, &["metadata", "name"]);
    if !body_name.is_empty() && body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    Ok(())
}

/// What a patch reads: the stored object and its patched copy, or the
/// object a server-side apply creates.
enum Patched {
    Existing(Value, Value),
    Fresh(Value),
}

/// A dry run's answer: the object without the resourceVersion it was
/// never given.
fn dry_result(mut object: Value) -> Value {
    if let Some(meta) = object["metadata"].as_object_mut() {
        meta.remove("resourceVersion");
    }
    object
}

fn check_version(
    res: &Resource,
    name: &str,
    wanted: &Value,
    current: &Value,
) -> Result<(), ApiError> {
    let expected = text(wanted, &["metadata", "resourceVersion"]);
    if !expected.is_empty() && expected != text(current, &["metadata", "resourceVersion"]) {
        return Err(ApiError::conflict(
            &res.group,
            &res.plural,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        ));
    }
    Ok(())
}

pub(crate) fn check_kind(res: &Resource, object: &Value) -> Result<(), ApiError> {
    let kind = text(object, &["kind"]);
    let api_version = text(object, &["apiVersion"]);
    if !kind.is_empty() && kind != res.kind {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            res.kind
        )));
    }
    if !api_version.is_empty()
        && !res
            .versions
            .iter()
            .any(|v| res.api_version(v) == api_version)
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            res.api_version(&res.versions[0])
        )));
    }
    Ok(())
}

fn established(crd: &mut Value, now: &str) {
    let names = crd["spec"]["names"].clone();
    crd["status"] = json!({
        "acceptedNames": names,
        "storedVersions": crd["spec"]["versions"].as_array().map(|v| v.iter().filter(|x| x["storage"] == json!(true)).map(|x| x["name"].clone()).collect::<Vec<_>>()).unwrap_or_default(),
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now}
        ]
    });
}

/// Whether two versions of an object differ outside metadata (and outside
/// status, when it has its own subresource): what bumps the generation.
fn spec_changed(a: &Value, b: &Value, res: &Resource) -> bool {
    let skip =
        |k: &str| matches!(k, "metadata" | "apiVersion" | "kind") || (res.status && k == "status");
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return a != b;
    };
    a.iter()
        .filter(|(k, _)| !skip(k))
        .any(|(k, v)| b.get(k) != Some(v))
        || b.iter()
            .filter(|(k, _)| !skip(k))
            .any(|(k, _)| !a.contains_key(k))
}

fn owners_of(object: &Value) -> Box<[Arc<str>]> {
    object["metadata"]["ownerReferences"]
        .as_array()
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r["uid"].as_str().map(Arc::from))
                .collect()
        })
        .unwrap_or_default()
}

impl Inner {
    /// Whether an object may be created under `key`: its namespace is
    /// open and no object has the key.
    fn check_new(&self, res: &Resource, key: &ObjectKey) -> Result<(), ApiError> {
        if res.namespaced {
            self.check_namespace_open(&key.0)?;
        }
        if self
            .tables
            .get(&(res.group.as_str(), res.plural.as_str()) as &dyn Pair)
            .is_some_and(|t| t.objects.contains_key(key))
        {
            return Err(ApiError::already_exists(&res.group, &res.plural, &key.1));
        }
        Ok(())
    }

    fn check_namespace_open(&self, namespace: &str) -> Result<(), ApiError> {
        let table = self.tables.get(&("", "namespaces") as &dyn Pair);
        let Some(entry) = table.and_then(|t| t.objects.get(&("", namespace) as &dyn Pair)) else {
            return Err(ApiError::not_found("", "namespaces", namespace));
        };
        if entry
            .fields
            .iter()
            .any(|(f, v)| *f == "status.phase" && v == "Terminating")
        {
            let mut e = ApiError::bad_request(format!(
                "unable to create new content in namespace {namespace} because it is being terminated"
            ));
            e.code = 403;
            e.reason = "Forbidden";
            return Err(e);
        }
        Ok(())
    }

    fn entry(&self, res: &Resource, namespace: &str, name: &str) -> Result<&Entry, ApiError> {
        let namespace = if res.namespaced { namespace } else { "" };
        self.tables
            .get(&(res.group.as_str(), res.plural.as_str()) as &dyn Pair)
            .and_then(|t| t.objects.get(&(namespace, name) as &dyn Pair))
            .ok_or_else(|| ApiError::not_found(&res.group, &res.plural, name))
    }

    fn value(&self, res: &Resource, namespace: &str, name: &str) -> Result<Value, ApiError> {
        let entry = self.entry(res, namespace, name)?;
        serde_json::from_slice(&entry.bytes).map_err(|e| ApiError::internal(e.to_string()))
    }

    /// Stores `object` under the next resourceVersion and tells watchers.
    fn commit(
        &mut self,
        res: &Resource,
        key: ObjectKey,
        object: Value,
        kind: EventType,
    ) -> Result<Value, ApiError> {
        let prepared = Prepared::new(object, self.decoders.of(res))?;
        self.commit_prepared(res, key, prepared, kind)
    }

    /// Stores an object serialized beforehand under the next
    /// resourceVersion and tells watchers; under the lock this only splices
    /// the version's digits into the bytes.
    fn commit_prepared(
        &mut self,
        res: &Resource,
        key: ObjectKey,
        prepared: Prepared,
        kind: EventType,
    ) -> Result<Value, ApiError> {
        self.rv += 1;
        let rv = self.rv;
        let Prepared {
            mut object,
            bytes,
            hole,
            labels,
            fields,
            owners,
            decoded,
        } = prepared;
        let digits = rv.to_string();
        object["metadata"]["resourceVersion"] = json!(digits);
        let bytes: Arc<[u8]> = match hole {
            Some(at) => {
                let mut spliced = Vec::with_capacity(bytes.len() + digits.len());
                spliced.extend_from_slice(&bytes[..at]);
                spliced.extend_from_slice(digits.as_bytes());
                spliced.extend_from_slice(&bytes[at + RV_HOLE.len()..]);
                spliced.into()
            }
            None => serde_json::to_vec(&object)
                .map_err(|e| ApiError::internal(e.to_string()))?
                .into(),
        };
        let uid: Arc<str> = Arc::from(text(&object, &["metadata", "uid"]));
        let entry = Entry {
            bytes,
            labels,
            fields,
            uid,
            owners,
            decoded,
            spots: None,
        };
        self.install(res, key, entry, kind);
        Ok(object)
    }

    /// Puts `entry` in place under the current resourceVersion (or removes
    /// the object, for `Deleted`), records and sends the event, and keeps
    /// the owner and uid indexes.
    fn install(&mut self, res: &Resource, key: ObjectKey, entry: Entry, kind: EventType) {
        let rv = self.rv;
        let history = self.history;
        let table_key = (res.group.as_str(), res.plural.as_str());
        if !self.tables.contains_key(&table_key as &dyn Pair) {
            self.tables
                .insert((res.group.clone(), res.plural.clone()), Table::new());
        }
        let Some(table) = self.tables.get_mut(&table_key as &dyn Pair) else {
            return;
        };
        // An object written again keeps its key: only a new one needs a
        // copy of it (the event takes the key itself).
        let old = if kind == EventType::Deleted {
            table.objects.remove(&key)
        } else if let Some(slot) = table.objects.get_mut(&key as &dyn Pair) {
            Some(std::mem::replace(slot, entry.clone()))
        } else {
            table.objects.insert(key.clone(), entry.clone())
        };
        let owners_unchanged = kind != EventType::Deleted
            && old
                .as_ref()
                .is_some_and(|old| old.owners == entry.owners && old.uid == entry.uid);
        let location = (!owners_unchanged)
            .then(|| Arc::new(((res.group.clone(), res.plural.clone()), key.clone())));
        let before = (kind == EventType::Modified)
            .then(|| {
                old.as_ref().map(|o| Before {
                    labels: o.labels.clone(),
                    fields: o.fields.clone(),
                    object: o.bytes.clone(),
                })
            })
            .flatten();
        let event = Arc::new(WatchEvent {
            kind,
            rv,
            namespace: key.0,
            name: key.1,
            labels: entry.labels.clone(),
            fields: entry.fields.clone(),
            before,
            object: entry.bytes.clone(),
            decoded: entry.decoded_cell(),
        });
        table.history.push_back(event.clone());
        if table.history.len() > history
            && let Some(dropped) = table.history.pop_front()
        {
            table.compacted = dropped.rv;
            self.garbage.events.push(dropped);
        }
        // No receivers is fine: nobody is watching.
        let _ = table.sender.send(event);
        // Same owners and uid: the indexes already say so.
        let Some(location) = location else {
            self.garbage.entries.extend(old);
            return;
        };
        if let Some(old) = &old {
            for owner in old.owners.iter() {
                if let Some(set) = self.dependents.get_mut(owner) {
                    set.remove(&location);
                }
            }
            self.by_uid.remove(&old.uid);
        }
        if kind != EventType::Deleted {
            for owner in entry.owners.iter() {
                self.dependents
                    .entry(owner.clone())
                    .or_default()
                    .insert(location.clone());
            }
            self.by_uid.insert(entry.uid, location);
        }
        self.garbage.entries.extend(old);
    }

    #[allow(clippy::too_many_arguments)]
    fn replace(
        &mut self,
        store: &Store,
        res: &Resource,
        namespace: &str,
        name: &str,
        current: Value,
        object: Value,
        part: Part,
    ) -> Result<Value, ApiError> {
        match store.replacement(res, &current, object, part)? {
            None => Ok(current),
            Some(next) => {
                let prepared = Prepared::new(next, store.decoders.of(res))?;
                self.commit_replacement(store, res, namespace, name, prepared)
            }
        }
    }

    /// Stores a replacement made by [`Store::replacement`]: registers a
    /// CRD's resource, and removes an object whose deletion it finishes.
    fn commit_replacement(
        &mut self,
        store: &Store,
        res: &Resource,
        namespace: &str,
        name: &str,
        prepared: Prepared,
    ) -> Result<Value, ApiError> {
        let namespace = if res.namespaced { namespace } else { "" };
        let next = &prepared.object;
        if res.group == "apiextensions.k8s.io"
            && res.plural == "customresourcedefinitions"
            && let Ok(defined) = resources::from_crd(next)
        {
            self.registry.insert(defined);
        }
        let finishing = !text(next, &["metadata", "deletionTimestamp"]).is_empty()
            && finalizers(next).is_empty();
        let key = (namespace.to_owned(), name.to_owned());
        let committed = self.commit_prepared(res, key, prepared, EventType::Modified)?;
        if finishing {
            self.remove(store, res, namespace, name, committed.clone())?;
        }
        Ok(committed)
    }

    // The arguments are one deletion's facts; a struct would only rename them.
}

/// Whether `a` and `b` differ at most in their managedFields' times.
fn same_but_ownership_times(a: &Value, b: &Value) -> bool {
    let untimed = |o: &Value| {
        let mut o = o["metadata"]["managedFields"].clone();
        for entry in o.as_array_mut().into_iter().flatten() {
            if let Some(map) = entry.as_object_mut() {
                map.remove("time");
            }
        }
        o
    };
    let (fa, fb) = (
        &a["metadata"]["managedFields"],
        &b["metadata"]["managedFields"],
    );
    if fa == fb || untimed(a) != untimed(b) {
        return false;
    }
    let without = |o: &Value| {
        let mut o = o.clone();
        if let Some(meta) = o["metadata"].as_object_mut() {
            meta.remove("managedFields");
        }
        o
    };
    without(a) == without(b)
}

/// Reads a `.a.b.c` path.
pub fn get_path<'a>(object: &'a Value, path: &str) -> &'a Value {
    path.trim_start_matches('.')
        .split('.')
        .fold(object, |v, p| &v[p])
}

/// Writes a `.a.b.c` path, creating objects on the way.
pub fn set_path(object: &mut Value, path: &str, value: Value) {
    let mut cur = object;
    let parts: Vec<&str> = path.trim_start_matches('.').split('.').collect();
    for (i, p) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        if i == parts.len() - 1 {
            cur[*p] = value;
            return;
        }
        cur = &mut cur[*p];
    }
}
