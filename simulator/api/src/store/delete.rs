//! Deletion: preconditions, a pod's grace period, finalizers, owner
//! references (background, foreground and orphan propagation) and
//! namespaces (deleting one deletes its content).

use std::sync::Arc;

use serde_json::{Value, json};

use super::{DEFAULT_GRACE_SECONDS, Dependent, EventType, Inner, Location, Store, owners_of, text};
use crate::{resources::Resource, status::ApiError, time::rfc3339};

/// How a deletion treats dependents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Propagation {
    /// Delete the object now and its dependents after.
    #[default]
    Background,
    /// Delete dependents first; the object waits with a finalizer.
    Foreground,
    /// Leave dependents, removing their owner reference.
    Orphan,
}

/// Options of a DELETE.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// Dependents' fate.
    pub propagation: Option<Propagation>,
    /// Seconds a running pod has to stop; `None` takes the pod's
    /// `terminationGracePeriodSeconds` (30 when unset), 0 removes it at once.
    pub grace_period_seconds: Option<i64>,
    /// Delete only if the uid matches.
    pub uid: Option<String>,
    /// Delete only if the resourceVersion matches.
    pub resource_version: Option<String>,
}

pub(super) fn finalizers(object: &Value) -> Vec<String> {
    object["metadata"]["finalizers"]
        .as_array()
        .map(|f| {
            f.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

const FOREGROUND: &str = "foregroundDeletion";

const ORPHAN: &str = "orphan";

/// The namespaces kube-apiserver's NamespaceLifecycle admission refuses to
/// delete (`kube-node-lease` may go).
const IMMORTAL: [&str; 3] = ["default", "kube-system", "kube-public"];

/// NamespaceLifecycle admission of a delete (a dry run's too): the
/// namespaces every cluster keeps are refused, 403.
///
/// # Errors
/// 403 for `default`, `kube-system` and `kube-public`.
pub fn deletable(res: &Resource, name: &str) -> Result<(), ApiError> {
    if res.group.is_empty() && res.plural == "namespaces" && IMMORTAL.contains(&name) {
        let mut e = ApiError::forbidden(format!(
            "namespaces {name:?} is forbidden: this namespace may not be deleted"
        ));
        e.details = Some(json!({"name": name, "kind": "namespaces"}));
        return Err(e);
    }
    Ok(())
}

impl Store {
    /// The objects whose owner references name `owner_uid`, with the
    /// resource (group, plural) each belongs to.
    pub fn dependents(&self, owner_uid: &str) -> Vec<Dependent> {
        let inner = self.read();
        let Some(set) = inner.dependents.get(owner_uid) else {
            return Vec::new();
        };
        set.iter()
            .filter_map(|location| {
                let (table, key) = &**location;
                let entry = inner.tables.get(table)?.objects.get(key)?;
                Some(Dependent {
                    resource: table.clone(),
                    json: entry.bytes.clone(),
                    decoded: entry.decoded.clone(),
                })
            })
            .collect()
    }

    /// Deletes an object.
    ///
    /// # Errors
    /// 404, 409 for a failed precondition.
    pub fn delete(
        &self,
        res: &Resource,
        namespace: &str,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<Value, ApiError> {
        let now = self.now();
        let mut inner = self.lock();
        let current = inner.value(res, namespace, name)?;
        deletable(res, name)?;
        for (wanted, field, said) in [
            (&options.uid, "uid", "UID"),
            (
                &options.resource_version,
                "resourceVersion",
                "ResourceVersion",
            ),
        ] {
            let actual = text(&current, &["metadata", field]);
            if let Some(wanted) = wanted
                && actual != wanted
            {
                return Err(ApiError::conflict(
                    &res.group,
                    &res.plural,
                    name,
                    &format!(
                        "Precondition failed: {said} in precondition: {wanted}, {said} in object meta: {actual}"
                    ),
                ));
            }
        }
        // A pod bound to a node is stopped by its kubelet first: it is
        // marked for deletion with its grace period, and the kubelet removes
        // it (grace 0) once its containers have exited. An unbound pod has
        // nothing to stop and goes at once, as with the real API server.
        if res.group.is_empty() && res.plural == "pods" {
            let grace = options
                .grace_period_seconds
                .or_else(|| current["spec"]["terminationGracePeriodSeconds"].as_i64())
                .unwrap_or(DEFAULT_GRACE_SECONDS);
            let bound = !text(&current, &["spec", "nodeName"]).is_empty();
            let terminating = !text(&current, &["metadata", "deletionTimestamp"]).is_empty();
            if grace > 0 && bound {
                if terminating {
                    return Ok(current);
                }
                let until = (self.clock)() + std::time::Duration::from_secs(grace.unsigned_abs());
                let mut next = current;
                next["metadata"]["deletionTimestamp"] = json!(rfc3339(until));
                next["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
                let key = (namespace.to_owned(), name.to_owned());
                return inner.commit(res, key, next, EventType::Modified);
            }
        }
        inner.delete(
            self,
            res,
            namespace,
            name,
            current,
            options.propagation.unwrap_or_default(),
            &now,
        )
    }
}

impl Inner {
    #[allow(clippy::too_many_arguments)]
    fn delete(
        &mut self,
        store: &Store,
        res: &Resource,
        namespace: &str,
        name: &str,
        current: Value,
        propagation: Propagation,
        now: &str,
    ) -> Result<Value, ApiError> {
        let namespace = if res.namespaced { namespace } else { "" };
        let already = !text(&current, &["metadata", "deletionTimestamp"]).is_empty();
        let mut pending = finalizers(&current);
        let is_namespace = res.group.is_empty() && res.plural == "namespaces";
        match propagation {
            Propagation::Foreground if !pending.iter().any(|f| f == FOREGROUND) => {
                pending.push(FOREGROUND.into())
            }
            Propagation::Orphan if !pending.iter().any(|f| f == ORPHAN) => {
                pending.push(ORPHAN.into())
            }
            _ => {}
        }
        if pending.is_empty() && !is_namespace {
            let removed = self.remove(store, res, namespace, name, current)?;
            return Ok(removed);
        }
        let mut next = current.clone();
        if !already {
            next["metadata"]["deletionTimestamp"] = json!(now);
            next["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        }
        if !pending.is_empty() {
            next["metadata"]["finalizers"] = json!(pending);
        }
        if is_namespace {
            next["status"]["phase"] = json!("Terminating");
        }
        let key = (namespace.to_owned(), name.to_owned());
        let committed = if next == current {
            current
        } else {
            self.commit(res, key, next, EventType::Modified)?
        };
        let uid: Arc<str> = Arc::from(text(&committed, &["metadata", "uid"]));
        if is_namespace {
            self.empty_namespace(store, name, now)?;
            return self
                .finish_namespace(store, name)
                .map(|done| done.unwrap_or(committed));
        }
        match propagation {
            Propagation::Orphan => {
                self.orphan_dependents(&uid)?;
                self.drop_finalizer(store, res, namespace, name, ORPHAN)
            }
            Propagation::Foreground => {
                self.delete_dependents(store, &uid, Propagation::Foreground, now)?;
                self.finish_foreground(store, &uid)?;
                self.value(res, namespace, name).or(Ok(committed))
            }
            Propagation::Background => Ok(committed),
        }
    }

    /// Removes an object for good, then deletes its dependents (background).
    pub(super) fn remove(
        &mut self,
        store: &Store,
        res: &Resource,
        namespace: &str,
        name: &str,
        object: Value,
    ) -> Result<Value, ApiError> {
        let key = (namespace.to_owned(), name.to_owned());
        let uid: Arc<str> = Arc::from(text(&object, &["metadata", "uid"]));
        let owners = owners_of(&object);
        let removed = self.commit(res, key, object, EventType::Deleted)?;
        if res.group == "apiextensions.k8s.io" && res.plural == "customresourcedefinitions" {
            let spec = &removed["spec"];
            self.registry
                .remove(text(spec, &["group"]), text(spec, &["names", "plural"]));
        }
        let now = store.now();
        self.delete_dependents(store, &uid, Propagation::Background, &now)?;
        for owner in owners.iter() {
            self.finish_foreground(store, owner)?;
        }
        if res.namespaced {
            self.finish_namespace(store, namespace)?;
        }
        Ok(removed)
    }

    fn resource_at(&self, location: &Location) -> Option<Arc<Resource>> {
        self.registry.get(&location.0.0, &location.0.1)
    }

    fn delete_dependents(
        &mut self,
        store: &Store,
        owner: &Arc<str>,
        propagation: Propagation,
        now: &str,
    ) -> Result<(), ApiError> {
        let dependents: Vec<Location> = self
            .dependents
            .get(owner)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for location in dependents {
            let Some(res) = self.resource_at(&location) else {
                continue;
            };
            let Ok(current) = self.value(&res, &location.1.0, &location.1.1) else {
                continue;
            };
            if !text(&current, &["metadata", "deletionTimestamp"]).is_empty()
                && propagation == Propagation::Background
            {
                continue;
            }
            self.delete(
                store,
                &res,
                &location.1.0,
                &location.1.1,
                current,
                propagation,
                now,
            )?;
        }
        Ok(())
    }

    fn orphan_dependents(&mut self, owner: &Arc<str>) -> Result<(), ApiError> {
        let dependents: Vec<Location> = self
            .dependents
            .get(owner)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for location in dependents {
            let Some(res) = self.resource_at(&location) else {
                continue;
            };
            let Ok(mut current) = self.value(&res, &location.1.0, &location.1.1) else {
                continue;
            };
            if let Some(refs) = current["metadata"]["ownerReferences"].as_array_mut() {
                refs.retain(|r| r["uid"].as_str() != Some(owner));
                // The last one gone, the list goes too (`omitempty`).
                if refs.is_empty()
                    && let Some(meta) = current["metadata"].as_object_mut()
                {
                    meta.remove("ownerReferences");
                }
            }
            self.commit(&res, location.1.clone(), current, EventType::Modified)?;
        }
        Ok(())
    }

    fn drop_finalizer(
        &mut self,
        store: &Store,
        res: &Resource,
        namespace: &str,
        name: &str,
        finalizer: &str,
    ) -> Result<Value, ApiError> {
        let mut current = self.value(res, namespace, name)?;
        let mut list = finalizers(&current);
        list.retain(|f| f != finalizer);
        current["metadata"]["finalizers"] = json!(list);
        if list.is_empty() {
            if let Some(meta) = current["metadata"].as_object_mut() {
                meta.remove("finalizers");
            }
            return self.remove(store, res, namespace, name, current);
        }
        self.commit(
            res,
            (namespace.to_owned(), name.to_owned()),
            current,
            EventType::Modified,
        )
    }

    /// An owner in foreground deletion goes once no dependent is left.
    fn finish_foreground(&mut self, store: &Store, owner: &Arc<str>) -> Result<(), ApiError> {
        if self.dependents.get(owner).is_some_and(|s| !s.is_empty()) {
            return Ok(());
        }
        let Some(location) = self.by_uid.get(owner).cloned() else {
            return Ok(());
        };
        let Some(res) = self.resource_at(&location) else {
            return Ok(());
        };
        let Ok(current) = self.value(&res, &location.1.0, &location.1.1) else {
            return Ok(());
        };
        if finalizers(&current).iter().any(|f| f == FOREGROUND) {
            self.drop_finalizer(store, &res, &location.1.0, &location.1.1, FOREGROUND)?;
        }
        Ok(())
    }

    fn empty_namespace(
        &mut self,
        store: &Store,
        namespace: &str,
        now: &str,
    ) -> Result<(), ApiError> {
        let locations: Vec<Location> = self
            .tables
            .iter()
            .flat_map(|(tk, t)| {
                t.objects
                    .keys()
                    .filter(|k| k.0 == namespace)
                    .map(move |k| Arc::new((tk.clone(), k.clone())))
            })
            .collect();
        for location in locations {
            let Some(res) = self.resource_at(&location) else {
                continue;
            };
            let Ok(current) = self.value(&res, &location.1.0, &location.1.1) else {
                continue;
            };
            if text(&current, &["metadata", "deletionTimestamp"]).is_empty() {
                self.delete(
                    store,
                    &res,
                    &location.1.0,
                    &location.1.1,
                    current,
                    Propagation::Background,
                    now,
                )?;
            }
        }
        Ok(())
    }

    /// A terminating namespace goes once nothing is left in it.
    fn finish_namespace(
        &mut self,
        store: &Store,
        namespace: &str,
    ) -> Result<Option<Value>, ApiError> {
        let Some(ns_res) = self.registry.get("", "namespaces") else {
            return Ok(None);
        };
        let Ok(ns) = self.value(&ns_res, "", namespace) else {
            return Ok(None);
        };
        if text(&ns, &["status", "phase"]) != "Terminating" {
            return Ok(None);
        }
        let occupied = self.tables.iter().any(|((_, plural), t)| {
            plural != "namespaces" && t.objects.keys().any(|k| k.0 == namespace)
        });
        if occupied {
            return Ok(None);
        }
        let mut ns = ns;
        ns["spec"]["finalizers"] = json!([]);
        self.remove(store, &ns_res, "", namespace, ns).map(Some)
    }
}
