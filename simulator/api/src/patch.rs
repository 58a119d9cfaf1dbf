//! The four patch types: JSON merge patch (RFC 7386), JSON patch
//! (RFC 6902, `test` included), strategic merge patch for the built-in
//! kinds, and server-side apply.
//!
//! Strategic merge merges lists of objects by their merge key (containers by
//! `name`, container ports by `containerPort`, ...) instead of replacing
//! them, and understands the directives clients send: `$patch: delete` and
//! `$patch: replace`, `$setElementOrder/<list>` (accepted, order kept) and
//! `$deleteFromPrimitiveList/<list>`.
//!
//! Server-side apply merges the applied configuration as a strategic merge
//! (built-in kinds) or a merge patch (custom resources), creating the
//! object when it is absent; who owns what, its conflicts and the removal
//! of fields a manager stops applying are `managed`'s.

use serde_json::{Map, Value};

use crate::status::ApiError;

/// How a PATCH body is to be read, from its content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/merge-patch+json`.
    Merge,
    /// `application/json-patch+json`.
    Json,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml` (and `+cbor`-less JSON).
    Apply,
}

impl PatchType {
    /// The patch type of a content type.
    ///
    /// # Errors
    /// 415 for anything else.
    pub fn from_content_type(content_type: &str) -> Result<Self, ApiError> {
        let base = content_type.split(';').next().unwrap_or_default().trim();
        match base {
            "application/merge-patch+json" => Ok(Self::Merge),
            "application/json-patch+json" => Ok(Self::Json),
            "application/strategic-merge-patch+json" => Ok(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(Self::Apply),
            _ => Err(ApiError::unsupported_media_type(content_type)),
        }
    }
}

/// The merge key of a list field at `path` (dot-separated field names), if
/// the built-in types merge it by key.
fn merge_key(path: &[&str]) -> Option<&'static str> {
    let field = *path.last()?;
    let parent = path.len().checked_sub(2).map(|i| path[i]);
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "readinessGates"
        | "resourceClaims" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "ports"
            if matches!(
                parent,
                Some("containers" | "initContainers" | "ephemeralContainers")
            ) =>
        {
            "containerPort"
        }
        "ports" => "port",
        "ownerReferences" => "uid",
        "conditions" => "type",
        "hostAliases" => "ip",
        "topologySpreadConstraints" => "topologyKey",
        _ => return None,
    })
}

/// Primitive lists that strategic merge unions instead of replacing.
fn merges_primitives(field: &str) -> bool {
    field == "finalizers"
}

/// Applies a strategic merge patch to `target`.
///
/// # Errors
/// 400 for a patch that is not an object where one is needed.
pub(crate) fn strategic_merge(target: &mut Value, patch: &Value) -> Result<(), ApiError> {
    merge_map(target, patch, &mut Vec::new())
}

fn merge_map<'a>(
    target: &mut Value,
    patch: &'a Value,
    path: &mut Vec<&'a str>,
) -> Result<(), ApiError> {
    let Some(patch_map) = patch.as_object() else {
        *target = patch.clone();
        return Ok(());
    };
    if patch_map.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replacement = patch_map.clone();
        replacement.remove("$patch");
        *target = Value::Object(replacement);
        return Ok(());
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    for (key, value) in patch_map {
        if key == "$patch" || key.starts_with("$setElementOrder/") || key == "$retainKeys" {
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(list), Some(remove)) = (
                target.get_mut(field).and_then(Value::as_array_mut),
                value.as_array(),
            ) {
                list.retain(|item| !remove.contains(item));
            }
            continue;
        }
        let Some(map) = target.as_object_mut() else {
            continue;
        };
        if value.is_null() {
            map.remove(key);
            continue;
        }
        path.push(key);
        match value {
            Value::Object(inner)
                if inner.get("$patch").and_then(Value::as_str) == Some("delete") =>
            {
                map.remove(key);
            }
            Value::Object(_) => {
                merge_map(map.entry(key.clone()).or_insert(Value::Null), value, path)?
            }
            Value::Array(items) => {
                let slot = map.entry(key.clone()).or_insert(Value::Array(Vec::new()));
                merge_list(slot, items, path)?;
            }
            _ => {
                map.insert(key.clone(), value.clone());
            }
        }
        path.pop();
    }
    Ok(())
}

fn merge_list<'a>(
    target: &mut Value,
    items: &'a [Value],
    path: &mut Vec<&'a str>,
) -> Result<(), ApiError> {
    let field = path.last().copied().unwrap_or_default();
    if merges_primitives(field) {
        let list = target
            .as_array_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        let mut merged = list;
        for item in items {
            if !merged.contains(item) {
                merged.push(item.clone());
            }
        }
        *target = Value::Array(merged);
        return Ok(());
    }
    let Some(key) = merge_key(path) else {
        // No merge key: the list is replaced (directives stripped).
        *target = Value::Array(
            items
                .iter()
                .filter(|i| i.get("$patch").is_none())
                .cloned()
                .collect(),
        );
        return Ok(());
    };
    // A lone `{$patch: replace}` element replaces the whole list.
    if items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        let kept = items
            .iter()
            .filter(|i| i.get("$patch").is_none())
            .cloned()
            .collect();
        *target = Value::Array(kept);
        return Ok(());
    }
    if !target.is_array() {
        *target = Value::Array(Vec::new());
    }
    let Some(list) = target.as_array_mut() else {
        return Ok(());
    };
    for item in items {
        let Some(id) = item.get(key) else {
            return Err(ApiError::bad_request(format!(
                "strategic merge patch: an element of {field} lacks its merge key {key:?}"
            )));
        };
        let position = list
            .iter()
            .position(|existing| existing.get(key) == Some(id));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (position, delete) {
            (Some(i), true) => {
                list.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => merge_map(&mut list[i], item, path)?,
            (None, false) => {
                let mut fresh = Value::Object(Map::new());
                merge_map(&mut fresh, item, path)?;
                list.push(fresh);
            }
        }
    }
    Ok(())
}

/// Applies a patch of `kind` to `target`; `builtin` says whether the
/// resource's types know merge keys (custom resources do not).
///
/// # Errors
/// 400 for a body that does not parse, 415 for strategic merge on a custom
/// resource, 422 for a JSON patch `test` that fails or a bad path.
pub(crate) fn apply(
    kind: PatchType,
    target: &mut Value,
    body: &[u8],
    builtin: bool,
) -> Result<(), ApiError> {
    let json = |body: &[u8]| -> Result<Value, ApiError> {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))
    };
    match kind {
        PatchType::Merge => {
            json_patch::merge(target, &json(body)?);
            Ok(())
        }
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding JSON patch: {e}")))?;
            json_patch::patch(target, &ops).map_err(|e| {
                let mut error =
                    ApiError::bad_request(format!("the JSON patch could not be applied: {e}"));
                error.code = 422;
                error.reason = "Invalid";
                error
            })
        }
        PatchType::Strategic if !builtin => Err(ApiError::unsupported_media_type(
            "application/strategic-merge-patch+json is not supported for custom resources",
        )),
        PatchType::Strategic => strategic_merge(target, &json(body)?),
        PatchType::Apply => {
            let applied: Value = serde_yaml::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
            if builtin {
                strategic_merge(target, &applied)
            } else {
                json_patch::merge(target, &applied);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn containers_merge_by_name_and_ports_by_container_port() {
        let mut pod = json!({"spec": {"containers": [
            {"name": "app", "image": "app:1", "ports": [{"containerPort": 80, "name": "http"}]},
            {"name": "sidecar", "image": "proxy:1"}
        ]}});
        let patch = json!({"spec": {"containers": [
            {"name": "app", "image": "app:2", "ports": [{"containerPort": 80, "protocol": "TCP"}]}
        ]}});
        strategic_merge(&mut pod, &patch).unwrap();
        assert_eq!(pod["spec"]["containers"][0]["image"], "app:2");
        assert_eq!(
            pod["spec"]["containers"][0]["ports"][0],
            json!({"containerPort": 80, "name": "http", "protocol": "TCP"})
        );
        assert_eq!(
            pod["spec"]["containers"][1]["image"], "proxy:1",
            "the sidecar stays"
        );
    }

    #[test]
    fn directives_delete_and_replace() {
        let mut pod = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        let patch = json!({
            "metadata": {"labels": {"a": null}},
            "spec": {"$setElementOrder/containers": [{"name": "b"}], "containers": [{"name": "a", "$patch": "delete"}]}
        });
        strategic_merge(&mut pod, &patch).unwrap();
        assert_eq!(
            pod,
            json!({"metadata": {"labels": {"b": "2"}}, "spec": {"containers": [{"name": "b"}]}})
        );
        strategic_merge(
            &mut pod,
            &json!({"metadata": {"labels": {"$patch": "replace", "c": "3"}}}),
        )
        .unwrap();
        assert_eq!(pod["metadata"]["labels"], json!({"c": "3"}));
    }

    #[test]
    fn lists_without_merge_keys_are_replaced_and_finalizers_unioned() {
        let mut obj = json!({"metadata": {"finalizers": ["a"]}, "spec": {"args": ["x", "y"]}});
        strategic_merge(
            &mut obj,
            &json!({"metadata": {"finalizers": ["b"]}, "spec": {"args": ["z"]}}),
        )
        .unwrap();
        assert_eq!(
            obj,
            json!({"metadata": {"finalizers": ["a", "b"]}, "spec": {"args": ["z"]}})
        );
    }

    #[test]
    fn json_patch_test_failures_are_invalid() {
        let mut obj = json!({"spec": {"replicas": 3}});
        let ok = br#"[{"op":"test","path":"/spec/replicas","value":3},{"op":"replace","path":"/spec/replicas","value":5}]"#;
        apply(PatchType::Json, &mut obj, ok, true).unwrap();
        assert_eq!(obj["spec"]["replicas"], 5);
        let failing = br#"[{"op":"test","path":"/spec/replicas","value":3}]"#;
        assert_eq!(
            apply(PatchType::Json, &mut obj, failing, true)
                .unwrap_err()
                .code,
            422
        );
    }

    #[test]
    fn strategic_merge_is_refused_for_custom_resources() {
        let mut obj = json!({});
        assert_eq!(
            apply(PatchType::Strategic, &mut obj, b"{}", false)
                .unwrap_err()
                .code,
            415
        );
    }
}
