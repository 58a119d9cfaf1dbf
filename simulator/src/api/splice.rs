//! Writes of one part of an object without parsing the whole object: where
//! a stored object's `metadata.resourceVersion`, `spec` and `status` lie in
//! its JSON, and the object rebuilt around a new part and version.
//!
//! The store keeps each object as the JSON it serialized; a status write
//! (a kubelet's, a controller's) changes only the status and the version,
//! and a binding only the spec and the version, so the rest is copied as it
//! is. The locating pass reads the object once without building it (the
//! other fields are skipped unparsed).

use std::ops::Range;

use serde::Deserialize;
use serde_json::value::RawValue;

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
    #[serde(borrow)]
    spec: Option<&'a RawValue>,
    #[serde(borrow)]
    status: Option<&'a RawValue>,
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

/// `bytes` with the version at `version_at` replaced by `version` (written
/// as a JSON string) and the part at `part_at` (after it) by `part` (JSON).
pub fn splice(
    bytes: &[u8],
    version_at: &Range<usize>,
    version: &str,
    part_at: &Range<usize>,
    part: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + part.len() + version.len() + 2);
    out.extend_from_slice(&bytes[..version_at.start]);
    out.push(b'"');
    out.extend_from_slice(version.as_bytes());
    out.push(b'"');
    out.extend_from_slice(&bytes[version_at.end..part_at.start]);
    out.extend_from_slice(part);
    out.extend_from_slice(&bytes[part_at.end..]);
    out
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn a_spliced_object_is_the_object_with_the_new_status_and_version() {
        let object = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "resourceVersion": "41", "labels": {"status": "x"}},
            "spec": {"containers": [{"name": "app", "image": "web:1"}]},
            "status": {"phase": "Pending"},
        });
        let bytes = serde_json::to_vec(&object).unwrap();
        let spots = locate(&bytes).unwrap();
        assert_eq!(&bytes[spots.version.clone()], br#""41""#);
        let status_at = spots.of(Section::Status).unwrap();
        assert_eq!(&bytes[status_at.clone()], br#"{"phase":"Pending"}"#);
        let status = json!({"phase": "Running", "podIP": "10.0.0.9"});
        let out = splice(
            &bytes,
            &spots.version,
            "42",
            &status_at,
            &serde_json::to_vec(&status).unwrap(),
        );
        let mut expected = object.clone();
        expected["status"] = status;
        expected["metadata"]["resourceVersion"] = json!("42");
        // The same bytes as serializing the changed object would give.
        assert_eq!(out, serde_json::to_vec(&expected).unwrap());
        assert_eq!(serde_json::from_slice::<Value>(&out).unwrap(), expected);

        let spec = json!({"containers": [{"name": "app", "image": "web:1"}], "nodeName": "n1"});
        let spec_at = spots.of(Section::Spec).unwrap();
        let out = splice(
            &bytes,
            &spots.version,
            "43",
            &spec_at,
            &serde_json::to_vec(&spec).unwrap(),
        );
        let mut expected = object;
        expected["spec"] = spec;
        expected["metadata"]["resourceVersion"] = json!("43");
        assert_eq!(out, serde_json::to_vec(&expected).unwrap());
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
        let at = spots.status_after.unwrap();
        let status = json!({"replicas": 2});
        let mut part = br#","status":"#.to_vec();
        part.extend(serde_json::to_vec(&status).unwrap());
        let out = splice(&bytes, &spots.version, "8", &(at..at), &part);
        let mut expected = object;
        expected["status"] = status;
        expected["metadata"]["resourceVersion"] = json!("8");
        assert_eq!(out, serde_json::to_vec(&expected).unwrap());
        // Not when another key follows the spec.
        let bytes = br#"{"metadata":{"resourceVersion":"1"},"spec":{},"type":"x"}"#;
        assert_eq!(locate(bytes).unwrap().status_after, None);
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
}
