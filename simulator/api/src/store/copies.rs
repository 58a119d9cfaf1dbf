//! Many objects made from one, as a ReplicaSet makes its pods: the object
//! is checked, defaulted, serialized and indexed once, and each copy gets
//! its own name, uid and resourceVersion written into that JSON.

use std::sync::{Arc, LazyLock};

use memchr::memmem::Finder;
use serde_json::{Value, json};

use super::{Entry, EventType, NewObject, Prepared, RV_HOLE, Store, find_once, valid_name};
use crate::{resources::Resource, status::ApiError};

/// What a copy's name and uid are first written as.
const NAME_HOLE: &str = "sluice-name-to-be-assigned";
const UID_HOLE: &str = "sluice-uid-to-be-assigned";

/// Searchers for the holes, built once.
static NAME: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(NAME_HOLE));
static UID: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(UID_HOLE));

impl Store {
    /// Creates `count` objects like `object`, which has a `generateName`
    /// and no name, each with a name of its own: what `count` calls of
    /// [`Store::create`] would do, at a fraction of the cost.
    ///
    /// *Guarantees*: each copy is stored, indexed and announced as
    /// [`Store::create`] would store it; copies are created one after the
    /// other, each under its own resourceVersion.
    ///
    /// # Errors
    /// Those of [`Store::create`], for the first copy that failed (the
    /// copies before it are created). On success, the copies' names.
    pub fn create_copies(
        &self,
        res: &Resource,
        namespace: &str,
        object: Value,
        count: usize,
    ) -> Result<Vec<String>, ApiError> {
        let named = object["metadata"]["name"]
            .as_str()
            .is_some_and(|n| !n.is_empty());
        let prefix = object["metadata"]["generateName"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let special = res.group == "apiextensions.k8s.io" || res.plural == "namespaces";
        let admitted = crate::quota::any(self, namespace) || crate::limits::any(self, namespace);
        if count < 2 || named || prefix.is_empty() || special || admitted {
            return self.each(res, namespace, &object, count);
        }
        let first = format!("{prefix}{}", self.suffix());
        if !valid_name(&first) {
            // Every copy's name would be as invalid: the error a create
            // gives.
            return self.each(res, namespace, &object, 1);
        }
        let NewObject { key, prepared, .. } =
            self.prepare_create(res, namespace, object.clone(), Some((NAME_HOLE, UID_HOLE)))?;
        let Prepared {
            object: mut template,
            bytes,
            hole,
            labels,
            fields,
            owners,
            ..
        } = prepared;
        let holes = (find_once(&bytes, &NAME), find_once(&bytes, &UID), hole);
        let (Some(name_at), Some(uid_at), Some(rv_at)) = holes else {
            // The object quotes a hole's text: each copy is made whole.
            return self.each(res, namespace, &object, count);
        };
        let mut names = Vec::with_capacity(count);
        let decoder = self.decoders.of(res);
        for i in 0..count {
            let name = if i == 0 {
                first.clone()
            } else {
                format!("{prefix}{}", self.suffix())
            };
            let uid = self.uid();
            template["metadata"]["name"] = json!(name);
            template["metadata"]["uid"] = json!(uid);
            let decoded = decoder.as_ref().and_then(|d| d.whole(&template));
            let mut holes = [
                (name_at, NAME_HOLE.len(), name.as_bytes()),
                (uid_at, UID_HOLE.len(), uid.as_bytes()),
                (rv_at, RV_HOLE.len(), b"" as &[u8]),
            ];
            holes.sort_unstable_by_key(|(at, _, _)| *at);
            let mut copy = Vec::with_capacity(bytes.len() + 32);
            let (mut from, mut version_at) = (0, 0);
            for (at, len, text) in holes {
                copy.extend_from_slice(&bytes[from..at]);
                if at == rv_at {
                    // The version's digits go in under the lock.
                    version_at = copy.len();
                    copy.extend_from_slice(RV_HOLE.as_bytes());
                } else {
                    copy.extend_from_slice(text);
                }
                from = at + len;
            }
            copy.extend_from_slice(&bytes[from..]);
            names.push(name.clone());
            let key = (key.0.clone(), name);
            let mut inner = self.lock();
            inner.check_new(res, &key)?;
            inner.rv += 1;
            let digits = inner.rv.to_string();
            drop(copy.splice(version_at..version_at + RV_HOLE.len(), digits.bytes()));
            let entry = Entry {
                bytes: copy.into(),
                labels: labels.clone(),
                fields: fields.clone(),
                uid: Arc::from(uid),
                owners: owners.clone(),
                decoded,
                spots: None,
            };
            inner.install(res, key, entry, EventType::Added);
        }
        Ok(names)
    }

    /// `count` copies made one create at a time; their names.
    fn each(
        &self,
        res: &Resource,
        namespace: &str,
        object: &Value,
        count: usize,
    ) -> Result<Vec<String>, ApiError> {
        (0..count)
            .map(|_| {
                let created = self.create(res, namespace, object.clone())?;
                Ok(created["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned())
            })
            .collect()
    }
}
