//! A minimal OpenAPI v3 description: for each group-version, the resource
//! paths with their group-version-kind and the `fieldValidation` parameter.
//!
//! That is what kubectl reads to learn that the server validates fields
//! itself (so it sends objects as they are instead of validating them
//! against a schema it would have to download). Schemas are not described.

use serde_json::{Value, json};

use crate::api::resources::Registry;

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: one entry per group-version.
pub fn root(registry: &Registry, generation: u64) -> Value {
    let mut paths = serde_json::Map::new();
    for (group, versions) in registry.groups() {
        for version in versions {
            let path = gv_path(&group, &version);
            paths.insert(
                path.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={generation:016X}")}),
            );
        }
    }
    json!({"paths": paths})
}

/// `/openapi/v3/<api|apis/group>/<version>`, or `None` when not served.
pub fn group_version(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let mut paths = serde_json::Map::new();
    let field_validation = json!({"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}});
    for r in registry
        .all()
        .filter(|r| r.group == group && r.serves(version))
    {
        let gvk = json!({"group": r.group, "version": version, "kind": r.kind});
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
        json!({"openapi": "3.0.0", "info": {"title": "Kubernetes (sluice simulator)", "version": version}, "paths": paths, "components": {"schemas": {}}}),
    )
}
