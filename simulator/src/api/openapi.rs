//! A minimal OpenAPI v3 description: for each group-version, the resource
//! paths with their group-version-kind and the `fieldValidation` parameter.
//!
//! That is what kubectl reads to learn that the server validates fields
//! itself (so it sends objects as they are instead of validating them
//! against a schema it would have to download). A custom resource's schema
//! is its CRD's, under the name kube-apiserver gives it (the group
//! reversed, the version, the kind) with its group-version-kind, which is
//! what `kubectl explain` reads; the built-in kinds' schemas are not
//! described.

use serde_json::{Value, json};

use crate::api::resources::Registry;

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The name kube-apiserver gives a custom resource's schema:
/// `dev.sluice.v1alpha1.Rollout` for `sluice.dev/v1alpha1` Rollout.
fn schema_name(group: &str, version: &str, kind: &str) -> String {
    let reversed: Vec<&str> = group.split('.').rev().collect();
    format!("{}.{version}.{kind}", reversed.join("."))
}

/// A CRD's schema as published: its group-version-kind, and the fields
/// every object has, described as kube-apiserver describes them.
fn described(schema: &Value, gvk: &Value) -> Value {
    let mut out = schema.clone();
    out["x-kubernetes-group-version-kind"] = json!([gvk]);
    let properties = &mut out["properties"];
    if !properties.is_object() {
        *properties = json!({});
    }
    let standard = [
        (
            "apiVersion",
            "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values.",
            "string",
        ),
        (
            "kind",
            "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. In CamelCase.",
            "string",
        ),
        ("metadata", "Standard object's metadata.", "object"),
    ];
    for (name, description, kind) in standard {
        if properties.get(name).is_none() {
            properties[name] = json!({"description": description, "type": kind});
        }
    }
    out
}

/// `/openapi/v3`: one entry per group-version.
///
/// Each entry's `hash` is a digest of its document, as kube-apiserver's
/// is: kubectl keeps documents on disk by their URL, so a hash that stayed
/// when a CRD's schema changed would have it explain the old one.
pub fn root(registry: &Registry) -> Value {
    use std::hash::{Hash, Hasher};
    let mut paths = serde_json::Map::new();
    for (group, versions) in registry.groups() {
        for version in versions {
            let path = gv_path(&group, &version);
            let mut digest = std::collections::hash_map::DefaultHasher::new();
            group_version(registry, &group, &version)
                .map(|doc| doc.to_string())
                .hash(&mut digest);
            let hash = digest.finish();
            paths.insert(
                path.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash:016X}")}),
            );
        }
    }
    json!({"paths": paths})
}

/// `/openapi/v3/<api|apis/group>/<version>`, or `None` when not served.
pub fn group_version(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let mut paths = serde_json::Map::new();
    let field_validation = json!({"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}});
    let mut schemas = serde_json::Map::new();
    for r in registry
        .all()
        .filter(|r| r.group == group && r.serves(version))
    {
        let gvk = json!({"group": r.group, "version": version, "kind": r.kind});
        if let Some(schema) = &r.schema {
            schemas.insert(
                schema_name(&r.group, version, &r.kind),
                described(schema, &gvk),
            );
        }
        let base = if r.namespaced {
            format!(
                "/{}/namespaces/{{namespace}}/{}",
                gv_path(group, version),
                r.plural
            )
        } else {
            format!("/{}/{}", gv_path(group, version), r.plural)
        };
        let operation = |id: String| {
            json!({
                "operationId": id,
                "parameters": [field_validation],
                "x-kubernetes-group-version-kind": gvk,
                "responses": {"200": {"description": "OK"}},
            })
        };
        paths.insert(
            base.clone(),
            json!({"post": operation(format!("create{}", r.kind))}),
        );
        paths.insert(
            format!("{base}/{{name}}"),
            json!({"put": operation(format!("replace{}", r.kind)), "patch": operation(format!("patch{}", r.kind))}),
        );
    }
    if paths.is_empty() {
        return None;
    }
    Some(
        json!({"openapi": "3.0.0", "info": {"title": "Kubernetes (sluice simulator)", "version": version}, "paths": paths, "components": {"schemas": schemas}}),
    )
}
