//! Writes of one part of an object (its status, or a pod's node) that
//! splice the part into the stored JSON instead of rebuilding the object.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{Entry, EventType, Part, Store};
use crate::api::{
    resources::Resource,
    selector::fields_with_part,
    splice::{self, Section},
    status::ApiError,
};

impl Store {
    /// Changes an object's status alone, as a controller or kubelet writes
    /// its status subresource: `change` gets the status (`null` when there
    /// is none) and nothing else. Returns the resourceVersion written, or
    /// `None` when nothing changed.
    ///
    /// *Guarantees*: the same result, version and event as
    /// [`Store::modify`] with [`Part::Status`]. Only the status is parsed
    /// and serialized; the rest of the stored JSON is copied as it is (see
    /// [`splice`](crate::api::splice)), so a pod's status write costs a
    /// fraction of a whole-object one.
    ///
    /// # Errors
    /// 404 NotFound.
    pub fn modify_status(
        &self,
        res: &Resource,
        namespace: &str,
        name: &str,
        mut change: impl FnMut(&mut Value),
    ) -> Result<Option<u64>, ApiError> {
        self.modify_section(res, namespace, name, Section::Status, |status| {
            change(status);
            Ok(())
        })
    }

    /// Binds a pod to `node`, as the pods/binding subresource does: sets
    /// `spec.nodeName` alone (the generation stays, as no one changed the
    /// pod's template). Returns the resourceVersion written; binding a pod
    /// again to its node writes nothing (`None`).
    ///
    /// # Errors
    /// 404 NotFound; 409 Conflict when the pod is bound to another node.
    pub fn bind(
        &self,
        pods: &Resource,
        namespace: &str,
        name: &str,
        node: &str,
    ) -> Result<Option<u64>, ApiError> {
        self.modify_section(
            pods,
            namespace,
            name,
            Section::Spec,
            |spec| match spec["nodeName"].as_str() {
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
            },
        )
    }

    /// Changes one top-level section of an object by splicing it into the
    /// stored JSON (with the next resourceVersion), retrying when another
    /// write came first; a first status goes after the spec. A status of a
    /// resource without a status subresource, or JSON without the section
    /// where expected, takes the whole-object path instead, with the same
    /// result.
    fn modify_section(
        &self,
        res: &Resource,
        namespace: &str,
        name: &str,
        section: Section,
        mut change: impl FnMut(&mut Value) -> Result<(), ApiError>,
    ) -> Result<Option<u64>, ApiError> {
        if section == Section::Status && !res.status {
            return self.modify_whole(res, namespace, name, section, change);
        }
        let decoder = self.decoders.of(res);
        loop {
            let (read, before) = self.get_decoded(res, namespace, name)?;
            let Some(spots) = splice::locate(&read) else {
                return self.modify_whole(res, namespace, name, section, change);
            };
            // The section's place, or (a first status) the place it goes
            // and the key written before it.
            let (at, old, key): (_, &[u8], &[u8]) = match (spots.of(section), spots.status_after) {
                (Some(at), _) => (at.clone(), &read[at], b""),
                (None, Some(after)) if section == Section::Status => {
                    (after..after, b"null", br#","status":"#)
                }
                _ => return self.modify_whole(res, namespace, name, section, change),
            };
            let mut value: Value =
                serde_json::from_slice(old).map_err(|e| ApiError::internal(e.to_string()))?;
            change(&mut value)?;
            // The store wrote `old` with this same serializer, keys in
            // order: equal bytes are an equal section.
            let written =
                serde_json::to_vec(&value).map_err(|e| ApiError::internal(e.to_string()))?;
            if written == old {
                return Ok(None);
            }
            let decoded = decoder
                .as_ref()
                .zip(before)
                .and_then(|(d, before)| d.section(&before, section.key(), &value));
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
            let fields = fields_with_part(&entry.fields, section.key(), &value);
            inner.rv += 1;
            let rv = inner.rv.to_string();
            let bytes = if key.is_empty() {
                splice::splice(&read, &spots.version, &rv, &at, &written)
            } else {
                splice::splice(&read, &spots.version, &rv, &at, &[key, &written].concat())
            };
            let namespace = if res.namespaced { namespace } else { "" };
            let key = (namespace.to_owned(), name.to_owned());
            let entry = Entry {
                bytes: bytes.into(),
                labels,
                fields,
                uid,
                owners,
                decoded,
            };
            inner.install(res, key, entry, EventType::Modified);
            return Ok(Some(inner.rv));
        }
    }

    /// [`Store::modify_section`] through [`Store::modify`]: the section is
    /// changed in a copy of the whole object.
    fn modify_whole(
        &self,
        res: &Resource,
        namespace: &str,
        name: &str,
        section: Section,
        mut change: impl FnMut(&mut Value) -> Result<(), ApiError>,
    ) -> Result<Option<u64>, ApiError> {
        let part = match section {
            Section::Spec => Part::Main,
            Section::Status => Part::Status,
        };
        let version = |object: &Value| {
            object["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|v| v.parse::<u64>().ok())
        };
        let (mut read, mut failed) = (None, None);
        let stored = self.modify(res, namespace, name, part, |object| {
            read = version(object);
            let mut value = object.get(section.key()).cloned().unwrap_or(Value::Null);
            // Each attempt decides afresh: a retry may read a newer object.
            failed = change(&mut value).err();
            if failed.is_none() {
                object[section.key()] = value;
            }
        })?;
        match failed {
            Some(e) => Err(e),
            None => Ok(Some(version(&stored)).filter(|v| *v != read).flatten()),
        }
    }
}
