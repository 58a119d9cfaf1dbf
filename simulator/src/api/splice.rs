//! Status writes without parsing the whole object: where a stored object's
//! `metadata.resourceVersion` and `status` lie in its JSON, and the object
//! rebuilt around a new status and version.
//!
//! The store keeps each object as the JSON it serialized; a status write
//! (a kubelet's, a controller's) changes only the status and the version,
//! so the bytes between them are copied as they are. The locating pass
//! reads the object once without building it (the other fields are skipped
//! unparsed).

use std::ops::Range;

use serde::Deserialize;
use serde_json::value::RawValue;

/// Where the two parts a status write changes lie in an object's JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spots {
    /// `metadata.resourceVersion`'s value, quotes included.
    pub version: Range<usize>,
    /// `status`'s value.
    pub status: Range<usize>,
}

#[derive(Deserialize)]
struct Shape<'a> {
    #[serde(borrow)]
    metadata: Meta<'a>,
    #[serde(borrow)]
    status: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Meta<'a> {
    #[serde(borrow, rename = "resourceVersion")]
    resource_version: Option<&'a RawValue>,
}

/// Finds the version and the status in `bytes`; `None` when either is
/// missing, a key appears twice, or the status comes before the version
/// (never so in what the store writes, whose keys are in order), so the
/// caller takes the whole-object path instead.
pub fn locate(bytes: &[u8]) -> Option<Spots> {
    let shape: Shape<'_> = serde_json::from_slice(bytes).ok()?;
    let range = |raw: &RawValue| {
        // Borrowed from `bytes`: its address lies inside them.
        let start = raw.get().as_ptr() as usize - bytes.as_ptr() as usize;
        start..start + raw.get().len()
    };
    let version = range(shape.metadata.resource_version?);
    let status = range(shape.status?);
    (version.end <= status.start).then_some(Spots { version, status })
}

/// `bytes` with the version at `spots.version` replaced by `version` (a
/// JSON string) and the status by `status` (JSON).
pub fn splice(bytes: &[u8], spots: &Spots, version: &str, status: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + status.len() + version.len() + 2);
    out.extend_from_slice(&bytes[..spots.version.start]);
    out.push(b'"');
    out.extend_from_slice(version.as_bytes());
    out.push(b'"');
    out.extend_from_slice(&bytes[spots.version.end..spots.status.start]);
    out.extend_from_slice(status);
    out.extend_from_slice(&bytes[spots.status.end..]);
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
        assert_eq!(&bytes[spots.status.clone()], br#"{"phase":"Pending"}"#);
        let status = json!({"phase": "Running", "podIP": "10.0.0.9"});
        let out = splice(&bytes, &spots, "42", &serde_json::to_vec(&status).unwrap());
        let mut expected = object;
        expected["status"] = status;
        expected["metadata"]["resourceVersion"] = json!("42");
        // The same bytes as serializing the changed object would give.
        assert_eq!(out, serde_json::to_vec(&expected).unwrap());
        assert_eq!(serde_json::from_slice::<Value>(&out).unwrap(), expected);
    }

    #[test]
    fn objects_without_a_status_or_a_version_take_the_whole_object_path() {
        for bytes in [
            &br#"{"metadata":{"name":"a","resourceVersion":"1"}}"#[..],
            br#"{"metadata":{"name":"a"},"status":{}}"#,
            br#"{"status":{},"metadata":{"resourceVersion":"1"}}"#,
            br#"{"metadata":{"resourceVersion":"1"},"status":{},"status":{}}"#,
            b"not json",
        ] {
            assert_eq!(locate(bytes), None, "{}", String::from_utf8_lossy(bytes));
        }
    }
}
