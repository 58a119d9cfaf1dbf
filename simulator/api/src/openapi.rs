//! A minimal OpenAPI v3 description: for each group-version, the resource
//! paths with their group-version-kind and the `fieldValidation` parameter.
//!
//! That is what kubectl reads to learn that the server validates fields
//! itself (so it sends objects as they are instead of validating them
//! against a schema it would have to download). A custom resource's schema
//! is its CRD's, under the name kube-apiserver gives it (the group
//! reversed, the version, the kind) with its group-version-kind, which is
//! what `kubectl explain` reads; the built-in kinds' are k8s-openapi's,
//! which Kubernetes' own OpenAPI document generated, descriptions
//! included.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, OnceLock},
};

use k8s_openapi::schemars::{JsonSchema, SchemaGenerator, generate::SchemaSettings};
use serde_json::{Value, json};

use crate::resources::Registry;

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
pub(crate) fn root(registry: &Registry) -> Value {
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
pub(crate) fn group_version(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let mut paths = serde_json::Map::new();
    let field_validation = json!({"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}});
    let builtin_kinds: Vec<String> = registry
        .all()
        .filter(|r| r.group == group && r.serves(version) && r.schema.is_none())
        .map(|r| r.kind.clone())
        .collect();
    let mut schemas = (*builtin_schemas(group, version, &builtin_kinds)).clone();
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

/// Schemas by name.
type Schemas = serde_json::Map<String, Value>;

/// The built-in schemas made so far, by group and version.
type Made = BTreeMap<(String, String), Arc<Schemas>>;

/// The schemas of the built-in kinds of one group-version, from
/// k8s-openapi's (generated from Kubernetes' own OpenAPI, descriptions
/// included), each kind's marked with its group-version-kind; made once
/// per group-version.
fn builtin_schemas(group: &str, version: &str, kinds: &[String]) -> Arc<Schemas> {
    static MADE: OnceLock<Mutex<Made>> = OnceLock::new();
    let made = MADE.get_or_init(Mutex::default);
    let key = (group.to_owned(), version.to_owned());
    if let Some(found) = made.lock().ok().and_then(|m| m.get(&key).cloned()) {
        return found;
    }
    let mut generator = SchemaSettings::openapi3().into_generator();
    let roots: Vec<(String, &String)> = kinds
        .iter()
        .filter_map(|kind| builtin(&mut generator, group, version, kind).map(|name| (name, kind)))
        .collect();
    let mut schemas = generator.take_definitions(true);
    for (name, kind) in roots {
        if let Some(schema) = schemas.get_mut(&name) {
            schema["x-kubernetes-group-version-kind"] =
                json!([{"group": group, "version": version, "kind": kind}]);
        }
    }
    let schemas = Arc::new(schemas);
    if let Ok(mut m) = made.lock() {
        m.insert(key, schemas.clone());
    }
    schemas
}

/// The structural schema of built-in kind `kind` of `group`/`version`
/// (its properties, items and maps, `$ref`s resolved, descriptions left
/// out), to drop the fields kube-apiserver does not know as it drops them
/// when it decodes the object into its Go type. A free-form object (a
/// `RawExtension`, `FieldsV1`) keeps whatever it holds. `None` for a kind
/// the simulator has no schema of, and for CustomResourceDefinition (whose
/// schema of schemas nests without end). Made once per kind.
pub(crate) fn structural(group: &str, version: &str, kind: &str) -> Option<Arc<Value>> {
    // By group, version and kind: looked up on every write of a built-in
    // object, so without building a key.
    type Made = HashMap<String, HashMap<String, HashMap<String, Option<Arc<Value>>>>>;
    static MADE: OnceLock<Mutex<Made>> = OnceLock::new();
    if kind == "CustomResourceDefinition" {
        return None;
    }
    let made = MADE.get_or_init(Mutex::default);
    if let Some(found) = made
        .lock()
        .ok()
        .and_then(|m| m.get(group)?.get(version)?.get(kind).cloned())
    {
        return found;
    }
    let mut generator = SchemaSettings::openapi3().into_generator();
    let schema = builtin(&mut generator, group, version, kind).and_then(|name| {
        let definitions = generator.take_definitions(true);
        let root = definitions.get(&name)?;
        Some(Arc::new(inline(root, &definitions, 0)))
    });
    if let Ok(mut m) = made.lock() {
        m.entry(group.to_owned())
            .or_default()
            .entry(version.to_owned())
            .or_default()
            .insert(kind.to_owned(), schema.clone());
    }
    schema
}

/// `schema` with its references resolved and only what pruning reads.
fn inline(schema: &Value, definitions: &Schemas, depth: usize) -> Value {
    let free = || json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    let Value::Object(map) = schema else {
        return Value::Bool(true);
    };
    if depth > 48 {
        return free();
    }
    let reference = map
        .get("$ref")
        .or_else(|| map.get("allOf")?.as_array()?.first()?.get("$ref"));
    if let Some(Value::String(reference)) = reference {
        let name = reference.rsplit('/').next().unwrap_or_default();
        return definitions
            .get(name)
            .map_or_else(free, |s| inline(s, definitions, depth + 1));
    }
    if map.contains_key("anyOf") || map.contains_key("oneOf") {
        return free();
    }
    let mut out = serde_json::Map::new();
    for key in [
        "type",
        "nullable",
        "x-kubernetes-preserve-unknown-fields",
        "x-kubernetes-embedded-resource",
        "x-kubernetes-int-or-string",
    ] {
        if let Some(v) = map.get(key) {
            out.insert(key.to_owned(), v.clone());
        }
    }
    if let Some(Value::Object(properties)) = map.get("properties") {
        let inlined: serde_json::Map<String, Value> = properties
            .iter()
            .map(|(k, v)| (k.clone(), inline(v, definitions, depth + 1)))
            .collect();
        out.insert("properties".to_owned(), Value::Object(inlined));
    }
    if let Some(items) = map.get("items") {
        out.insert("items".to_owned(), inline(items, definitions, depth + 1));
    }
    match map.get("additionalProperties") {
        Some(v @ Value::Object(_)) => {
            out.insert(
                "additionalProperties".to_owned(),
                inline(v, definitions, depth + 1),
            );
        }
        Some(Value::Bool(b)) => {
            out.insert("additionalProperties".to_owned(), Value::Bool(*b));
        }
        _ => {}
    }
    let object = out.get("type") == Some(&json!("object"));
    if object && !out.contains_key("properties") && !out.contains_key("additionalProperties") {
        out.insert(
            "x-kubernetes-preserve-unknown-fields".to_owned(),
            Value::Bool(true),
        );
    }
    Value::Object(out)
}

/// Adds the schema of built-in kind `kind` of `group`/`version`, if it is
/// one; its name.
fn builtin(
    generator: &mut SchemaGenerator,
    group: &str,
    version: &str,
    kind: &str,
) -> Option<String> {
    use k8s_openapi::{
        api::{
            admissionregistration::v1 as admission, apps::v1 as apps,
            autoscaling::v2 as autoscaling, batch::v1 as batch, certificates::v1 as certificates,
            coordination::v1 as coordination, core::v1 as core, discovery::v1 as discovery,
            networking::v1 as networking, node::v1 as node, policy::v1 as policy, rbac::v1 as rbac,
            scheduling::v1 as scheduling, storage::v1 as storage,
        },
        apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions,
    };
    fn add<T: JsonSchema>(generator: &mut SchemaGenerator) -> Option<String> {
        generator.subschema_for::<T>();
        Some(T::schema_name().into_owned())
    }
    let g = generator;
    match (group, version, kind) {
        ("", "v1", "Pod") => add::<core::Pod>(g),
        ("", "v1", "Service") => add::<core::Service>(g),
        ("", "v1", "ConfigMap") => add::<core::ConfigMap>(g),
        ("", "v1", "Secret") => add::<core::Secret>(g),
        ("", "v1", "Namespace") => add::<core::Namespace>(g),
        ("", "v1", "Node") => add::<core::Node>(g),
        ("", "v1", "ServiceAccount") => add::<core::ServiceAccount>(g),
        ("", "v1", "Endpoints") => add::<core::Endpoints>(g),
        ("", "v1", "Event") => add::<core::Event>(g),
        ("", "v1", "PersistentVolumeClaim") => add::<core::PersistentVolumeClaim>(g),
        ("", "v1", "PersistentVolume") => add::<core::PersistentVolume>(g),
        ("", "v1", "LimitRange") => add::<core::LimitRange>(g),
        ("", "v1", "ResourceQuota") => add::<core::ResourceQuota>(g),
        ("", "v1", "ReplicationController") => add::<core::ReplicationController>(g),
        ("", "v1", "PodTemplate") => add::<core::PodTemplate>(g),
        ("apps", "v1", "Deployment") => add::<apps::Deployment>(g),
        ("apps", "v1", "ReplicaSet") => add::<apps::ReplicaSet>(g),
        ("apps", "v1", "StatefulSet") => add::<apps::StatefulSet>(g),
        ("apps", "v1", "DaemonSet") => add::<apps::DaemonSet>(g),
        ("apps", "v1", "ControllerRevision") => add::<apps::ControllerRevision>(g),
        ("batch", "v1", "Job") => add::<batch::Job>(g),
        ("batch", "v1", "CronJob") => add::<batch::CronJob>(g),
        ("autoscaling", "v2", "HorizontalPodAutoscaler") => {
            add::<autoscaling::HorizontalPodAutoscaler>(g)
        }
        ("policy", "v1", "PodDisruptionBudget") => add::<policy::PodDisruptionBudget>(g),
        ("networking.k8s.io", "v1", "Ingress") => add::<networking::Ingress>(g),
        ("networking.k8s.io", "v1", "IngressClass") => add::<networking::IngressClass>(g),
        ("networking.k8s.io", "v1", "NetworkPolicy") => add::<networking::NetworkPolicy>(g),
        ("discovery.k8s.io", "v1", "EndpointSlice") => add::<discovery::EndpointSlice>(g),
        ("coordination.k8s.io", "v1", "Lease") => add::<coordination::Lease>(g),
        ("rbac.authorization.k8s.io", "v1", "Role") => add::<rbac::Role>(g),
        ("rbac.authorization.k8s.io", "v1", "RoleBinding") => add::<rbac::RoleBinding>(g),
        ("rbac.authorization.k8s.io", "v1", "ClusterRole") => add::<rbac::ClusterRole>(g),
        ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding") => {
            add::<rbac::ClusterRoleBinding>(g)
        }
        ("storage.k8s.io", "v1", "StorageClass") => add::<storage::StorageClass>(g),
        ("storage.k8s.io", "v1", "CSIDriver") => add::<storage::CSIDriver>(g),
        ("storage.k8s.io", "v1", "VolumeAttachment") => add::<storage::VolumeAttachment>(g),
        ("scheduling.k8s.io", "v1", "PriorityClass") => add::<scheduling::PriorityClass>(g),
        ("node.k8s.io", "v1", "RuntimeClass") => add::<node::RuntimeClass>(g),
        ("certificates.k8s.io", "v1", "CertificateSigningRequest") => {
            add::<certificates::CertificateSigningRequest>(g)
        }
        ("apiextensions.k8s.io", "v1", "CustomResourceDefinition") => {
            add::<apiextensions::CustomResourceDefinition>(g)
        }
        ("admissionregistration.k8s.io", "v1", "MutatingWebhookConfiguration") => {
            add::<admission::MutatingWebhookConfiguration>(g)
        }
        ("admissionregistration.k8s.io", "v1", "ValidatingWebhookConfiguration") => {
            add::<admission::ValidatingWebhookConfiguration>(g)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_built_in_kinds_unknown_fields_are_named_and_dropped_and_its_maps_and_free_forms_kept() {
        let schema = structural("apps", "v1", "Deployment").unwrap();
        let mut d = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "managedFields": [{"manager": "m", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"surprise": true, "replicas": 2, "strategy": {"rollingUpdate": {"maxSurge": "25%"}},
                "template": {"metadata": {"annotations": {"a/b": "c"}, "colour": "red"},
                    "spec": {"containers": [{"name": "web", "image": "w", "colour": "red",
                        "resources": {"limits": {"cpu": "250m"}}}]}}},
            "status": {"replicas": 2, "mood": "fine"}
        });
        let mut unknown = crate::schema::prune(&mut d, &schema);
        unknown.sort();
        assert_eq!(
            unknown,
            [
                "spec.surprise",
                "spec.template.metadata.colour",
                "spec.template.spec.containers[0].colour",
                "status.mood"
            ]
        );
        assert_eq!(d["spec"]["template"]["metadata"]["annotations"]["a/b"], "c");
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"],
            "250m"
        );
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(
            d["metadata"]["managedFields"][0]["fieldsV1"],
            json!({"f:spec": {}})
        );
        assert!(structural("apiextensions.k8s.io", "v1", "CustomResourceDefinition").is_none());
        assert!(structural("example.com", "v1", "Widget").is_none());
    }
}
