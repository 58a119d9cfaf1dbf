//! Writes of one part of an object (its status, or a pod's node) that
//! splice the part into the stored JSON instead of rebuilding the object.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{Entry, EventType, Part, Store};
use crate::api::{resources::Resource, selector::fields_with_part, splice, status::ApiError};

impl Store {
    /// Changes an object's status alone, as a controller or kubelet writes
    /// its status subresource: `change` gets the status (`null` when there
    /// is none) and nothing else. Returns whether anything was written.
    ///
    /// *Guarantees*: the same result, version and event as
    /// [`Store::modify`] with [`Part::Status`]. Only the status is parsed
    /// and serialized; the rest of the stored JSON is copied as it is (see
    /// [`splice`](crate::api::splice)), so a pod's status write costs a
    /// fraction of a whole-object one. Objects whose JSON does not have the
    /// expected shape take the whole-object path.
    ///
    /// # Errors
    /// 404 NotFound.
    pub fn modify_status(
        &self,
        res: &Resource,
        namespace: &str,
        name: &str,
        mut change: impl FnMut(&mut Value),
    ) -> Result<bool, ApiError> {
        if res.status
            && let Some(written) =
                self.modify_part(res, namespace, name, splice::Part::Status, |status| {
                    change(status);
                    Ok(())
                })?
        {
            return Ok(written);
        }
        self.modify(res, namespace, name, Part::Status, |object| {
            let mut status = object.get("status").cloned().unwrap_or(Value::Null);
            change(&mut status);
            object["status"] = status;
        })
        .map(|_| true)
    }

    /// Binds a pod to `node`, as the pods/binding subresource does: sets
    /// `spec.nodeName` alone (the generation stays, as no one changed the
    /// pod's template). Returns whether anything was written; binding a
    /// pod again to its node writes nothing.
    ///
    /// # Errors
    /// 404 NotFound; 409 Conflict when the pod is bound to another node.
    pub fn bind(
        &self,
        pods: &Resource,
        namespace: &str,
        name: &str,
        node: &str,
    ) -> Result<bool, ApiError> {
        let mut set = |spec: &mut Value| match spec["nodeName"].as_str() {
            Some(bound) if !bound.is_empty() && bound != node => Err(ApiError::conflict(
                &pods.group,
                &pods.plural,
                name,
                &format!("pod {name} is already assigned to node {bound:?}"),
            )),
            _ => {
                spec["nodeName"] = json!(node);
                Ok(())
            }
        };
        if let Some(written) =
            self.modify_part(pods, namespace, name, splice::Part::Spec, &mut set)?
        {
            return Ok(written);
        }
        let mut failed = None;
        let written = self.modify(pods, namespace, name, Part::Main, |pod| {
            if let Err(e) = set(&mut pod["spec"]) {
                failed = Some(e);
            }
        });
        match failed {
            Some(e) => Err(e),
            None => written.map(|_| true),
        }
    }

    /// Changes one top-level part of an object by splicing it into the
    /// stored JSON (with the next resourceVersion), retrying when another
    /// write came first. `None` when the object has no such part where
    /// expected: the caller takes the whole-object path.
    fn modify_part(
        &self,
        res: &Resource,
        namespace: &str,
        name: &str,
        part: splice::Part,
        mut change: impl FnMut(&mut Value) -> Result<(), ApiError>,
    ) -> Result<Option<bool>, ApiError> {
        loop {
            let read = self.get(res, namespace, name)?;
            let Some(spots) = splice::locate(&read) else {
                return Ok(None);
            };
            let Some(at) = spots.of(part) else {
                return Ok(None);
            };
            let old = &read[at.clone()];
            let mut value: Value =
                serde_json::from_slice(old).map_err(|e| ApiError::internal(e.to_string()))?;
            change(&mut value)?;
            // The store wrote `old` with this same serializer, keys in
            // order: equal bytes are an equal part.
            let written =
                serde_json::to_vec(&value).map_err(|e| ApiError::internal(e.to_string()))?;
            if written == old {
                return Ok(Some(false));
            }
            let mut inner = self.lock();
            let entry = match inner.entry(res, namespace, name) {
                Ok(entry) if Arc::ptr_eq(&entry.bytes, &read) => entry,
                Ok(_) => continue,
                Err(e) => return Err(e),
            };
            let (labels, uid, owners) = (
                entry.labels.clone(),
                entry.uid.clone(),
                entry.owners.clone(),
            );
            let fields = fields_with_part(&entry.fields, part.key(), &value);
            inner.rv += 1;
            let rv = inner.rv.to_string();
            let bytes = splice::splice(&read, &spots.version, &rv, &at, &written);
            let namespace = if res.namespaced { namespace } else { "" };
            let key = (namespace.to_owned(), name.to_owned());
            let entry = Entry {
                bytes: bytes.into(),
                labels,
                fields,
                uid,
                owners,
            };
            inner.install(res, key, entry, EventType::Modified);
            return Ok(Some(true));
        }
    }
}
