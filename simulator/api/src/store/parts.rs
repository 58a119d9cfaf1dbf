//! Writes of one part of an object (its status, or a pod's node) that
//! splice the part into the stored JSON instead of rebuilding the object.

use std::{borrow::Cow, sync::Arc};

use serde_json::Value;

use super::{Entry, EventType, Part, Store, Stored};
use crate::{
    resources::Resource,
    selector::fields_with_part,
    splice::{self, Entries, Section, Written},
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
    /// [`splice`](crate::splice)), so a pod's status write costs a
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
        self.write_section(res, namespace, name, Section::Status, |old| {
            let mut status: Value = serde_json::from_slice(old).map_err(internal)?;
            change(&mut status);
            Ok(Written::Value(Cow::Owned(status)))
        })
    }

    /// Replaces an object's status with `status`, as [`Store::modify_status`]
    /// does, without reading the status it replaces.
    ///
    /// # Errors
    /// 404 NotFound.
    pub fn set_status(
        &self,
        res: &Resource,
        namespace: &str,
        name: &str,
        status: &Value,
    ) -> Result<Option<u64>, ApiError> {
        self.write_section(res, namespace, name, Section::Status, |_| {
            Ok(Written::Value(Cow::Borrowed(status)))
        })
    }

    /// Changes some top-level entries of an object's status, as
    /// [`Store::modify_status`] does, reading the others only as far as to
    /// copy them (see [`Entries`]): for writers, such as a kubelet, that set
    /// a few keys and keep the rest.
    ///
    /// # Errors
    /// 404 NotFound; 500 when the status is not an object; those of
    /// `change`.
    pub fn modify_status_entries(
        &self,
        res: &Resource,
        namespace: &str,
        name: &str,
        mut change: impl FnMut(&mut Entries) -> Result<(), ApiError>,
    ) -> Result<Option<u64>, ApiError> {
        self.write_section(res, namespace, name, Section::Status, |old| {
            let mut status = Entries::parse(old).map_err(internal)?;
            change(&mut status)?;
            Ok(Written::Entries(status))
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
        self.write_section(pods, namespace, name, Section::Spec, |old| {
            let mut spec = Entries::parse(old).map_err(internal)?;
            match spec.text("nodeName") {
                Some(bound) if !bound.is_empty() && bound != node => Err(ApiError::conflict(
                    &pods.group,
                    &pods.plural,
                    name,
                    &format!("pod {name} is already assigned to node {bound:?}"),
                )),
                _ => {
                    spec.set("nodeName", &node).map_err(internal)?;
                    Ok(Written::Entries(spec))
                }
            }
        })
    }

    /// Writes one top-level section of an object, as `write` makes it from
    /// the stored one's JSON (`null` for none), by splicing it into
    /// the stored JSON with the next resourceVersion, retrying when another
    /// write came first; a first status goes after the spec. A status of a
    /// resource without a status subresource, or JSON without the section
    /// where expected, takes the whole-object path instead, with the same
    /// result.
    ///
    /// *Assumptions*: the JSON of what `write` returns is as this store
    /// serializes values (compact, keys in order), so that equal bytes are
    /// an equal section.
    fn write_section<'v>(
        &self,
        res: &Resource,
        namespace: &str,
        name: &str,
        section: Section,
        mut write: impl for<'r> FnMut(&'r [u8]) -> Result<Written<'r, 'v>, ApiError>,
    ) -> Result<Option<u64>, ApiError> {
        if section == Section::Status && !res.status {
            return self.write_whole(res, namespace, name, section, write);
        }
        let decoder = self.decoders.of(res);
        loop {
            let Stored {
                bytes: read,
                decoded: before,
                spots,
            } = self.get_stored(res, namespace, name)?;
            let Some(spots) = spots.or_else(|| splice::locate(&read)) else {
                return self.write_whole(res, namespace, name, section, write);
            };
            let Some(old) = spots.old(&read, section) else {
                return self.write_whole(res, namespace, name, section, write);
            };
            let new = write(old)?;
            let written = new.to_vec().map_err(internal)?;
            if written == old {
                return Ok(None);
            }
            let decoded = decoder
                .as_ref()
                .zip(before)
                .and_then(|(d, before)| d.section(&before, section.key(), &new));
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
            let fields = fields_with_part(&entry.fields, section.key(), &new);
            inner.rv += 1;
            let rv = inner.rv.to_string();
            let (bytes, spots) = splice::splice(&read, &spots, &rv, section, &written);
            let namespace = if res.namespaced { namespace } else { "" };
            let key = (namespace.to_owned(), name.to_owned());
            let entry = Entry {
                bytes: bytes.into(),
                labels,
                fields,
                uid,
                owners,
                decoded,
                spots: Some(Box::new(spots)),
            };
            inner.install(res, key, entry, EventType::Modified);
            return Ok(Some(inner.rv));
        }
    }

    /// [`Store::write_section`] through [`Store::modify`]: the section is
    /// written in a copy of the whole object.
    fn write_whole<'v>(
        &self,
        res: &Resource,
        namespace: &str,
        name: &str,
        section: Section,
        mut write: impl for<'r> FnMut(&'r [u8]) -> Result<Written<'r, 'v>, ApiError>,
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
            let old = object.get(section.key()).unwrap_or(&Value::Null);
            // Each attempt decides afresh: a retry may read a newer object.
            let written = serde_json::to_vec(old)
                .map_err(internal)
                .and_then(|old| write(&old)?.to_vec().map_err(internal))
                .and_then(|new| serde_json::from_slice(&new).map_err(internal));
            match written {
                Ok(value) => {
                    object[section.key()] = value;
                    failed = None;
                }
                Err(e) => failed = Some(e),
            }
        })?;
        match failed {
            Some(e) => Err(e),
            None => Ok(Some(version(&stored)).filter(|v| *v != read).flatten()),
        }
    }
}

fn internal(e: serde_json::Error) -> ApiError {
    ApiError::internal(e.to_string())
}
