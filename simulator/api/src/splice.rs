//! Writes of one part of an object without parsing the whole object: where
//! a stored object's `metadata.resourceVersion`, `spec` and `status` lie in
//! its JSON, and the object rebuilt around a new part and version.
//!
//! The store keeps each object as the JSON it serialized; a status write
//! (a kubelet's, a controller's) changes only the status and the version,
//! and a binding only the spec and the version, so the rest is copied as it
//! is. The locating pass reads the object once without building it (the
//! other fields are skipped unparsed).

use std::{borrow::Cow, collections::BTreeMap, ops::Range};

use serde::{Deserialize, Serialize};
use serde_json::{Value, value::RawValue};

/// Where the parts a one-part write changes lie in an object's JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spots {
    /// `metadata.resourceVersion`'s value, quotes included.
    pub version: Range<usize>,
    /// `spec`'s value, when there is one after the version.
    pub spec: Option<Range<usize>>,
    /// `status`'s value, when there is one after the version.
    pub status: Option<Range<usize>>,
    /// Where a status would go when there is none: right after the spec,
    /// when the spec is the object's last key (as in what the store writes,
    /// whose keys are in order and `status` sorts after every other
    /// top-level key of a resource with a status).
    pub status_after: Option<usize>,
}

/// The top-level parts a one-part write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// `spec`.
    Spec,
    /// `status`.
    Status,
}

impl Section {
    /// Its key in the object.
    pub fn key(self) -> &'static str {
        match self {
            Self::Spec => "spec",
            Self::Status => "status",
        }
    }
}

impl Spots {
    /// Where `section` lies, if it is there.
    pub fn of(&self, section: Section) -> Option<Range<usize>> {
        match section {
            Section::Spec => self.spec.clone(),
            Section::Status => self.status.clone(),
        }
    }
}

#[derive(Deserialize)]
struct Shape<'a> {
    #[serde(borrow)]
    metadata: Meta<'a>,
    #[serde(borrow, default, deserialize_with = "present")]
    spec: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    status: Option<&'a RawValue>,
}

/// A part that is there, if only as `null`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct Meta<'a> {
    #[serde(borrow, rename = "resourceVersion")]
    resource_version: Option<&'a RawValue>,
}

/// Finds the version, the spec and the status in `bytes`; `None` when the
/// version is missing or a key appears twice. A part before the version
/// (never so in what the store writes, whose keys are in order) is left
/// out. Either way the caller takes the whole-object path instead.
pub fn locate(bytes: &[u8]) -> Option<Spots> {
    let shape: Shape<'_> = serde_json::from_slice(bytes).ok()?;
    let range = |raw: &RawValue| {
        // Borrowed from `bytes`: its address lies inside them.
        let start = raw.get().as_ptr() as usize - bytes.as_ptr() as usize;
        start..start + raw.get().len()
    };
    let version = range(shape.metadata.resource_version?);
    let after = |raw: Option<&RawValue>| raw.map(range).filter(|r| version.end <= r.start);
    let (spec, status) = (after(shape.spec), after(shape.status));
    let status_after = match (&spec, &status, shape.status) {
        (Some(spec), None, None) if &bytes[spec.end..] == b"}" => Some(spec.end),
        _ => None,
    };
    Some(Spots {
        spec,
        status,
        status_after,
        version,
    })
}

/// What goes before a status added after the spec.
const STATUS_KEY: &[u8] = br#","status":"#;

impl Spots {
    /// Where `section` is written: the range it replaces and the key that
    /// goes before it (a first status, after the spec); `None` when it
    /// cannot be spliced.
    fn place(&self, section: Section) -> Option<(Range<usize>, &'static [u8])> {
        match (self.of(section), self.status_after) {
            (Some(at), _) => Some((at, b"")),
            (None, Some(after)) if section == Section::Status => Some((after..after, STATUS_KEY)),
            _ => None,
        }
    }

    /// The JSON of `section` in `bytes`, these spots' object: `null` for a
    /// status that would go after the spec; `None` when the section cannot
    /// be spliced (the caller writes the whole object instead).
    pub fn old<'b>(&self, bytes: &'b [u8], section: Section) -> Option<&'b [u8]> {
        match self.place(section)? {
            (at, b"") => bytes.get(at),
            _ => Some(b"null"),
        }
    }
}

/// `bytes` (an object these `spots` locate) with its version replaced by
/// `version` (written as a JSON string) and `section` by `part` (JSON), or
/// (a first status) `part` added after the spec; and where the parts lie
/// in the result, as [`locate`] would find them.
///
/// *Assumptions*: [`Spots::old`] is `Some` for `section`.
pub fn splice(
    bytes: &[u8],
    spots: &Spots,
    version: &str,
    section: Section,
    part: &[u8],
) -> (Vec<u8>, Spots) {
    // Outside the assumption, the part would go at the end.
    let (at, key) = spots
        .place(section)
        .unwrap_or((bytes.len()..bytes.len(), b""));
    let mut out = Vec::with_capacity(bytes.len() + key.len() + part.len() + version.len() + 2);
    out.extend_from_slice(&bytes[..spots.version.start]);
    out.push(b'"');
    out.extend_from_slice(version.as_bytes());
    out.push(b'"');
    let version_at = spots.version.start..out.len();
    out.extend_from_slice(&bytes[spots.version.end..at.start]);
    out.extend_from_slice(key);
    let part_at = out.len()..out.len() + part.len();
    out.extend_from_slice(part);
    out.extend_from_slice(&bytes[at.end..]);
    // Every part lies after the version; what lies after the replaced
    // part moves by what it grew, as well.
    let (after_part, after_version) = (
        part_at.end as isize - at.end as isize,
        version_at.end as isize - spots.version.end as isize,
    );
    let moved = |range: Range<usize>| {
        let by = if range.start >= at.end {
            after_part
        } else {
            after_version
        };
        range.start.saturating_add_signed(by)..range.end.saturating_add_signed(by)
    };
    let (spec, status) = match section {
        Section::Spec => (Some(part_at.clone()), spots.status.clone().map(moved)),
        Section::Status => (spots.spec.clone().map(moved), Some(part_at.clone())),
    };
    // A status may be added after the spec only while there is none.
    let status_after = match (&spec, &status) {
        (Some(spec), None) if out.get(spec.end..) == Some(&b"}"[..]) => Some(spec.end),
        _ => None,
    };
    let spots = Spots {
        version: version_at,
        spec,
        status,
        status_after,
    };
    (out, spots)
}

/// A part (`spec` or `status`) as its top-level entries, each value the
/// JSON it holds, in key order: how a writer of a few of its keys edits it
/// without parsing the rest.
///
/// *Guarantees*: serialized, it gives the bytes that parsing the part,
/// setting the same keys and serializing it again would, provided the part
/// and the values set were written compactly with their keys in order (as
/// `serde_json` writes a [`Value`](serde_json::Value)).
#[derive(Debug, Default, Serialize)]
pub struct Entries<'a>(BTreeMap<Key<'a>, Raw<'a>>);

/// An entry's key: borrowed from the part's JSON unless it had escapes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
struct Key<'a>(Cow<'a, str>);

impl std::borrow::Borrow<str> for Key<'_> {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// An entry's value: the JSON read, or a new one.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Raw<'a> {
    Read(&'a RawValue),
    Written(Box<RawValue>),
}

impl<'a> Entries<'a> {
    /// The entries of the JSON object `json` (`null` has none).
    ///
    /// # Errors
    /// When `json` is neither an object nor `null`.
    pub fn parse(json: &'a [u8]) -> serde_json::Result<Self> {
        let map: Option<BTreeMap<Key<'a>, &'a RawValue>> = serde_json::from_slice(json)?;
        Ok(Self(
            map.unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, Raw::Read(v)))
                .collect(),
        ))
    }

    /// The JSON of the entry `key`.
    pub fn get(&self, key: &str) -> Option<&RawValue> {
        self.0.get(key).map(|raw| match raw {
            Raw::Read(v) => *v,
            Raw::Written(v) => &**v,
        })
    }

    /// The entry `key`, when it is a string.
    pub fn text(&self, key: &str) -> Option<String> {
        serde_json::from_str(self.get(key)?.get()).ok()
    }

    /// Sets the entry `key` to `value`.
    ///
    /// # Errors
    /// When `value` does not serialize.
    pub fn set(&mut self, key: &'a str, value: &impl Serialize) -> serde_json::Result<()> {
        let raw = serde_json::value::to_raw_value(value)?;
        self.0.insert(Key(Cow::Borrowed(key)), Raw::Written(raw));
        Ok(())
    }

    /// The part's JSON.
    pub fn to_vec(&self) -> Vec<u8> {
        // Keys and raw values always serialize.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The entries [`Entries::set`] set, with their JSON.
    pub fn written(&self) -> impl Iterator<Item = (&str, &RawValue)> {
        self.0.iter().filter_map(|(key, raw)| match raw {
            Raw::Written(value) => Some((&*key.0, &**value)),
            Raw::Read(_) => None,
        })
    }
}

/// A part (`spec` or `status`) as a write made it.
pub enum Written<'r, 'v> {
    /// The whole part, as a value.
    Value(Cow<'v, Value>),
    /// The stored part's entries, some of them set by the writer.
    Entries(Entries<'r>),
}

impl Written<'_, '_> {
    /// The part's JSON.
    pub fn to_vec(&self) -> serde_json::Result<Vec<u8>> {
        match self {
            Self::Value(value) => serde_json::to_vec(value),
            Self::Entries(entries) => Ok(entries.to_vec()),
        }
    }

    /// The part's string entry `key`.
    pub fn text(&self, key: &str) -> Option<String> {
        match self {
            Self::Value(value) => value[key].as_str().map(str::to_owned),
            Self::Entries(entries) => entries.text(key),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    /// Splices `part` in as `section` of `bytes` at `version`, checks the
    /// result against serializing the changed object and the spots against
    /// locating them afresh, and returns both.
    fn spliced(
        bytes: &[u8],
        spots: &Spots,
        version: &str,
        section: Section,
        part: &Value,
    ) -> (Vec<u8>, Spots) {
        let json = serde_json::to_vec(part).unwrap();
        let (out, after) = splice(bytes, spots, version, section, &json);
        let mut expected: Value = serde_json::from_slice(bytes).unwrap();
        expected[section.key()] = part.clone();
        expected["metadata"]["resourceVersion"] = json!(version);
        // The same bytes as serializing the changed object would give.
        assert_eq!(
            String::from_utf8_lossy(&out),
            serde_json::to_string(&expected).unwrap()
        );
        assert_eq!(
            Some(&after),
            locate(&out).as_ref(),
            "spots after the splice"
        );
        (out, after)
    }

    #[test]
    fn a_spliced_object_is_the_object_with_the_new_part_and_version() {
        let object = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "resourceVersion": "41", "labels": {"status": "x"}},
            "spec": {"containers": [{"name": "app", "image": "web:1"}]},
            "status": {"phase": "Pending"},
        });
        let bytes = serde_json::to_vec(&object).unwrap();
        let spots = locate(&bytes).unwrap();
        assert_eq!(&bytes[spots.version.clone()], br#""41""#);
        let old = spots.old(&bytes, Section::Status).unwrap();
        assert_eq!(old, br#"{"phase":"Pending"}"#);
        // Longer and shorter versions and parts, each part in turn.
        let status = json!({"phase": "Running", "podIP": "10.0.0.9"});
        let (bytes, spots) = spliced(&bytes, &spots, "1042", Section::Status, &status);
        let spec = json!({"containers": [{"name": "app", "image": "web:1"}], "nodeName": "n1"});
        let (bytes, spots) = spliced(&bytes, &spots, "1043", Section::Spec, &spec);
        let (bytes, spots) = spliced(&bytes, &spots, "9", Section::Spec, &json!({}));
        let (_, spots) = spliced(&bytes, &spots, "10", Section::Status, &json!(null));
        assert_eq!(spots.status_after, None, "a status is there, if null");
    }

    #[test]
    fn a_first_status_goes_after_the_spec_as_serializing_would_put_it() {
        let object = json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "web", "resourceVersion": "7"},
            "spec": {"replicas": 2},
        });
        let bytes = serde_json::to_vec(&object).unwrap();
        let spots = locate(&bytes).unwrap();
        assert_eq!(spots.status, None);
        assert_eq!(spots.old(&bytes, Section::Status), Some(&b"null"[..]));
        // The spec first: a status may still go after it.
        let (bytes, spots) = spliced(&bytes, &spots, "8", Section::Spec, &json!({"replicas": 30}));
        assert!(spots.status_after.is_some());
        let (_, spots) = spliced(
            &bytes,
            &spots,
            "9",
            Section::Status,
            &json!({"replicas": 2}),
        );
        assert_eq!(spots.status_after, None);
        // Not when another key follows the spec.
        let bytes = br#"{"metadata":{"resourceVersion":"1"},"spec":{},"type":"x"}"#;
        let spots = locate(bytes).unwrap();
        assert_eq!(spots.status_after, None);
        assert_eq!(spots.old(bytes, Section::Status), None);
    }

    #[test]
    fn parts_that_are_missing_or_out_of_place_are_not_located() {
        for bytes in [
            &br#"{"metadata":{"name":"a","resourceVersion":"1"}}"#[..],
            br#"{"status":{},"spec":{},"metadata":{"resourceVersion":"1"}}"#,
        ] {
            let spots = locate(bytes).unwrap();
            assert_eq!((spots.spec, spots.status), (None, None));
        }
        for bytes in [
            &br#"{"metadata":{"name":"a"},"status":{}}"#[..],
            br#"{"metadata":{"resourceVersion":"1"},"status":{},"status":{}}"#,
            b"not json",
        ] {
            assert_eq!(locate(bytes), None, "{}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn entries_set_and_serialized_are_the_part_edited_as_a_value() {
        let status = json!({
            "conditions": [{"status": "True", "type": "Ready"}], "phase": "Pending",
            "weird \"key\"": {"a": [1, 2.5, null]}, "z": "x",
        });
        let json = serde_json::to_vec(&status).unwrap();
        let mut entries = Entries::parse(&json).unwrap();
        assert_eq!(entries.text("phase").as_deref(), Some("Pending"));
        assert_eq!(entries.text("conditions"), None);
        assert_eq!(entries.to_vec(), json, "read and written again unchanged");
        let podip = json!("10.0.0.9");
        entries.set("phase", &"Running").unwrap();
        entries.set("podIP", &podip).unwrap();
        entries.set("conditions", &json!([])).unwrap();
        let mut expected = status;
        expected["phase"] = json!("Running");
        expected["podIP"] = podip;
        expected["conditions"] = json!([]);
        assert_eq!(entries.to_vec(), serde_json::to_vec(&expected).unwrap());

        let mut none = Entries::parse(b"null").unwrap();
        assert_eq!(none.to_vec(), b"{}");
        none.set("nodeName", &"n1").unwrap();
        assert_eq!(none.to_vec(), br#"{"nodeName":"n1"}"#);
        assert!(Entries::parse(b"[1]").is_err());
    }
}
