//! A CustomResourceDefinition's structural schema, applied to its objects
//! as kube-apiserver applies it: unknown fields pruned, then the
//! OpenAPI checks (type, nullable, required, enum, minimum and maximum,
//! lengths, pattern, item counts), each problem worded and placed as the
//! real server words and places it.
//!
//! Not applied: CEL rules (`x-kubernetes-validations`), `format`s, and the
//! uniqueness of `x-kubernetes-list-type: set|map` items; an object they
//! would refuse is stored here (see the README's simulator section).

use serde_json::{Map, Value};

/// The fields of `object` its schema does not know, as paths
/// (`spec.foo`, `spec.items[0].bar`); removed from `object`. Its
/// `apiVersion`, `kind` and `metadata` stay whatever the schema says.
pub(crate) fn prune(object: &mut Value, schema: &Value) -> Vec<String> {
    let mut unknown = Vec::new();
    if let Value::Object(map) = object {
        prune_map(map, schema, "", true, &mut unknown);
    }
    unknown
}

/// The members of an object under `schema` at `path`: unknown ones go (and
/// are named), nulls the schema does not allow go, the rest are pruned by
/// their own schemas. An object's `root` keeps its type and metadata.
fn prune_map(
    map: &mut Map<String, Value>,
    schema: &Value,
    path: &str,
    root: bool,
    unknown: &mut Vec<String>,
) {
    let keep = |key: &str| {
        (root && matches!(key, "apiVersion" | "kind" | "metadata"))
            || schema["properties"].get(key).is_some()
            || keeps_unknown(schema)
    };
    map.retain(|key, value| {
        if !keep(key) {
            unknown.push(join(path, key));
            return false;
        }
        // A null where the schema does not allow one is as if absent (so
        // a default fills it, or `required` names it).
        !value.is_null()
            || schema["properties"]
                .get(key)
                .is_none_or(|p| p["nullable"] == true)
    });
    for (key, inner) in map.iter_mut() {
        if let Some(property) = schema["properties"].get(key)
            && !(root && matches!(key.as_str(), "apiVersion" | "kind" | "metadata"))
        {
            prune_in(inner, property, &join(path, key), unknown);
        }
    }
}

fn keeps_unknown(schema: &Value) -> bool {
    schema["x-kubernetes-preserve-unknown-fields"] == true
}

fn prune_in(value: &mut Value, schema: &Value, path: &str, unknown: &mut Vec<String>) {
    let embedded = schema["x-kubernetes-embedded-resource"] == true;
    match value {
        Value::Object(map) if schema["properties"].is_object() || embedded => {
            prune_map(map, schema, path, embedded, unknown);
        }
        Value::Object(map) if schema["additionalProperties"].is_object() => {
            for (key, inner) in map.iter_mut() {
                prune_in(
                    inner,
                    &schema["additionalProperties"],
                    &join(path, key),
                    unknown,
                );
            }
        }
        Value::Object(map)
            if !keeps_unknown(schema)
                && schema["additionalProperties"] != true
                && schema["type"] == "object" =>
        {
            for key in map.keys() {
                unknown.push(join(path, key));
            }
            map.clear();
        }
        Value::Array(items) if schema["items"].is_object() => {
            for (i, item) in items.iter_mut().enumerate() {
                prune_in(item, &schema["items"], &format!("{path}[{i}]"), unknown);
            }
        }
        _ => {}
    }
}

/// Fills in the `default`s a structural schema declares, as the API server
/// does for custom resources: an absent (or null, when not nullable)
/// property with a default takes it; then every property present, every
/// array item and every value of a map is defaulted by its own schema. A
/// default never creates the object around it.
pub(crate) fn defaults(object: &mut Value, schema: &Value) {
    match object {
        Value::Object(map) => {
            if let Some(properties) = schema["properties"].as_object() {
                for (key, property) in properties {
                    let Some(default) = property.get("default") else {
                        continue;
                    };
                    let nullable = property["nullable"].as_bool().unwrap_or(false);
                    match map.get(key) {
                        None => {
                            map.insert(key.clone(), default.clone());
                        }
                        Some(Value::Null) if !nullable => {
                            map.insert(key.clone(), default.clone());
                        }
                        Some(_) => {}
                    }
                }
            }
            for (key, value) in map.iter_mut() {
                if let Some(property) = schema["properties"].get(key) {
                    defaults(value, property);
                } else if schema["additionalProperties"].is_object() {
                    defaults(value, &schema["additionalProperties"]);
                }
            }
        }
        Value::Array(items) if schema["items"].is_object() => {
            for item in items {
                defaults(item, &schema["items"]);
            }
        }
        _ => {}
    }
}

/// What `object` (pruned and defaulted) breaks of `schema`, as
/// `(field, message)` in kube-apiserver's words.
pub(crate) fn problems(object: &Value, schema: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let (Value::Object(map), Some(properties)) = (object, schema["properties"].as_object()) {
        required(map, schema, "", &mut out);
        for (key, value) in map {
            if matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            if let Some(property) = properties.get(key) {
                check(value, property, key, &mut out);
            }
        }
    }
    out
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn required(map: &Map<String, Value>, schema: &Value, path: &str, out: &mut Vec<(String, String)>) {
    for key in schema["required"].as_array().into_iter().flatten() {
        let Some(key) = key.as_str() else { continue };
        if !map.contains_key(key) {
            out.push((join(path, key), "Required value".into()));
        }
    }
}

/// How kube-apiserver shows a value in a message: strings quoted, the
/// rest as JSON.
fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "\"null\"".into(),
        Value::Object(_) => "\"object\"".into(),
        Value::Array(_) => "\"array\"".into(),
        other => other.to_string(),
    }
}

/// A bound as kube-apiserver prints it: a whole number without `.0`.
fn number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        x.to_string()
    }
}

/// Whether `text` matches `pattern`; `None` for a pattern this regex
/// engine does not take (then nothing is refused for it). Compiled once.
fn matches(pattern: &str, text: &str) -> Option<bool> {
    type Compiled = std::collections::HashMap<String, Option<regex::Regex>>;
    static COMPILED: std::sync::LazyLock<std::sync::Mutex<Compiled>> =
        std::sync::LazyLock::new(Default::default);
    let mut compiled = COMPILED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    compiled
        .entry(pattern.to_owned())
        .or_insert_with(|| regex::Regex::new(pattern).ok())
        .as_ref()
        .map(|re| re.is_match(text))
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        // Integers are int64: a larger one is a number.
        Value::Number(n) if n.is_i64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn check(value: &Value, schema: &Value, path: &str, out: &mut Vec<(String, String)>) {
    let invalid = |out: &mut Vec<(String, String)>, why: String| {
        out.push((
            path.to_owned(),
            format!("Invalid value: {}: {why}", shown(value)),
        ));
    };
    // A type error shows the type it got, not the value.
    let wrong_type = |out: &mut Vec<(String, String)>, expected: &str, actual: &str| {
        out.push((
            path.to_owned(),
            format!("Invalid value: \"{actual}\": {path} in body must be of type {expected}: \"{actual}\""),
        ));
    };
    if value.is_null() {
        // (A null where the schema does not allow one was pruned.)
        if let Some(allowed) = schema["enum"].as_array()
            && !allowed.contains(value)
        {
            let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
            out.push((
                path.to_owned(),
                format!(
                    "Unsupported value: null: supported values: {}",
                    list.join(", ")
                ),
            ));
        }
        return;
    }
    let actual = type_name(value);
    if schema["x-kubernetes-int-or-string"] == true {
        if !matches!(actual, "integer" | "string") {
            wrong_type(out, "integer,string", actual);
            return;
        }
    } else if let Some(expected) = schema["type"].as_str() {
        let fits = expected == actual || (expected == "number" && actual == "integer");
        if !fits {
            wrong_type(out, expected, actual);
            return;
        }
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(|v| v.to_string()).collect();
        out.push((
            path.to_owned(),
            format!(
                "Unsupported value: {}: supported values: {}",
                value,
                list.join(", ")
            ),
        ));
    }
    match value {
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or_default();
            let exclusive = |key: &str| schema[key] == true;
            if let Some(min) = schema["minimum"].as_f64() {
                if exclusive("exclusiveMinimum") && x <= min {
                    invalid(
                        out,
                        format!("{path} in body should be greater than {}", number(min)),
                    );
                } else if x < min {
                    invalid(
                        out,
                        format!(
                            "{path} in body should be greater than or equal to {}",
                            number(min)
                        ),
                    );
                }
            }
            if let Some(max) = schema["maximum"].as_f64() {
                if exclusive("exclusiveMaximum") && x >= max {
                    invalid(
                        out,
                        format!("{path} in body should be less than {}", number(max)),
                    );
                } else if x > max {
                    invalid(
                        out,
                        format!(
                            "{path} in body should be less than or equal to {}",
                            number(max)
                        ),
                    );
                }
            }
        }
        Value::String(s) => {
            let chars = s.chars().count() as u64;
            if let Some(max) = schema["maxLength"].as_u64()
                && chars > max
            {
                out.push((
                    path.to_owned(),
                    format!("Too long: may not be more than {max} bytes"),
                ));
            }
            if let Some(min) = schema["minLength"].as_u64()
                && chars < min
            {
                invalid(
                    out,
                    format!("{path} in body should be at least {min} chars long"),
                );
            }
            if let Some(pattern) = schema["pattern"].as_str()
                && matches(pattern, s) == Some(false)
            {
                invalid(out, format!("{path} in body should match '{pattern}'"));
            }
        }
        Value::Array(items) => {
            if let Some(max) = schema["maxItems"].as_u64()
                && items.len() as u64 > max
            {
                out.push((
                    path.to_owned(),
                    format!("Too many: {}: must have at most {max} items", items.len()),
                ));
            }
            if let Some(min) = schema["minItems"].as_u64()
                && (items.len() as u64) < min
            {
                invalid(
                    out,
                    format!("{path} in body should have at least {min} items"),
                );
            }
            if schema["items"].is_object() {
                for (i, item) in items.iter().enumerate() {
                    check(item, &schema["items"], &format!("{path}[{i}]"), out);
                }
            }
        }
        Value::Object(map) => {
            required(map, schema, path, out);
            if let Some(max) = schema["maxProperties"].as_u64()
                && map.len() as u64 > max
            {
                out.push((
                    path.to_owned(),
                    format!("Too many: {}: must have at most {max} items", map.len()),
                ));
            }
            for (key, inner) in map {
                if let Some(property) = schema["properties"].get(key) {
                    check(inner, property, &join(path, key), out);
                } else if schema["additionalProperties"].is_object() {
                    check(
                        inner,
                        &schema["additionalProperties"],
                        &join(path, key),
                        out,
                    );
                }
            }
        }
        Value::Bool(_) | Value::Null => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["workload"], "properties": {
                "workload": {"type": "object", "required": ["name"], "properties": {
                    "kind": {"type": "string", "enum": ["Deployment", "StatefulSet"]},
                    "name": {"type": "string", "minLength": 1, "maxLength": 8, "pattern": "^[a-z]+$"}}},
                "replicas": {"type": "integer", "minimum": 0, "maximum": 10},
                "surge": {"x-kubernetes-int-or-string": true},
                "note": {"type": "string", "nullable": true},
                "steps": {"type": "array", "maxItems": 2, "items": {"type": "object", "properties": {
                    "weight": {"type": "integer"}}}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}},
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}})
    }

    #[test]
    fn schema_defaults_fill_absent_fields_inside_objects_that_exist() {
        let schema = json!({"type": "object", "properties": {
            "spec": {"type": "object", "properties": {
                "rules": {"type": "array", "items": {"type": "object", "properties": {
                    "matches": {"type": "array", "default": [{"path": {"type": "PathPrefix", "value": "/"}}]},
                    "backendRefs": {"type": "array", "items": {"type": "object", "properties": {
                        "weight": {"type": "integer", "default": 1},
                        "kind": {"type": "string", "default": "Service"}}}}}}},
                "absent": {"type": "object", "properties": {"x": {"type": "integer", "default": 3}}}}}}});
        let mut route = json!({"spec": {"rules": [
            {"backendRefs": [{"name": "web"}, {"name": "web-canary", "weight": 10}]}]}});
        defaults(&mut route, &schema);
        assert_eq!(
            route,
            json!({"spec": {"rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                "backendRefs": [
                    {"name": "web", "weight": 1, "kind": "Service"},
                    {"name": "web-canary", "weight": 10, "kind": "Service"}]}]}})
        );
    }

    #[test]
    fn unknown_fields_are_pruned_and_named_known_and_preserved_ones_stay() {
        let mut object = json!({
            "apiVersion": "x/v1", "kind": "X", "metadata": {"name": "a"},
            "spec": {"workload": {"name": "web", "colour": "red"}, "bogus": 1,
                "steps": [{"weight": 1, "extra": true}],
                "labels": {"a": "b"}, "free": {"anything": {"goes": 1}}},
            "status": {"whatever": 1},
            "top": 2,
        });
        let mut unknown = prune(&mut object, &schema());
        unknown.sort();
        assert_eq!(
            unknown,
            [
                "spec.bogus",
                "spec.steps[0].extra",
                "spec.workload.colour",
                "top"
            ]
        );
        assert_eq!(
            object,
            json!({
                "apiVersion": "x/v1", "kind": "X", "metadata": {"name": "a"},
                "spec": {"workload": {"name": "web"}, "steps": [{"weight": 1}],
                    "labels": {"a": "b"}, "free": {"anything": {"goes": 1}}},
                "status": {"whatever": 1},
            })
        );
    }

    #[test]
    fn each_rule_is_worded_and_placed_as_kube_apiserver_does() {
        let object = json!({"spec": {
            "workload": {"kind": "Job", "name": "Web_Server"},
            "replicas": -1, "surge": true, "note": null,
            "steps": [{"weight": "x"}, {}, {}], "labels": {"a": 1}}});
        let found = problems(&object, &schema());
        let expect = [
            (
                "spec.workload.kind",
                "Unsupported value: \"Job\": supported values: \"Deployment\", \"StatefulSet\"",
            ),
            (
                "spec.workload.name",
                "Too long: may not be more than 8 bytes",
            ),
            (
                "spec.workload.name",
                "Invalid value: \"Web_Server\": spec.workload.name in body should match '^[a-z]+$'",
            ),
            (
                "spec.replicas",
                "Invalid value: -1: spec.replicas in body should be greater than or equal to 0",
            ),
            (
                "spec.surge",
                "Invalid value: \"boolean\": spec.surge in body must be of type integer,string: \"boolean\"",
            ),
            ("spec.steps", "Too many: 3: must have at most 2 items"),
            (
                "spec.steps[0].weight",
                "Invalid value: \"string\": spec.steps[0].weight in body must be of type integer: \"string\"",
            ),
            (
                "spec.labels.a",
                "Invalid value: \"integer\": spec.labels.a in body must be of type string: \"integer\"",
            ),
        ];
        for (field, message) in expect {
            assert!(
                found.iter().any(|(f, m)| f == field && m == message),
                "{field}: {message}\nnot in {found:#?}"
            );
        }
        assert_eq!(found.len(), expect.len(), "{found:#?}");
        let missing = problems(&json!({"spec": {"workload": {}}}), &schema());
        assert_eq!(
            missing,
            [("spec.workload.name".to_owned(), "Required value".to_owned())]
        );
        // A null where none is allowed is as if absent; a nullable enum
        // still names its values; an integer past int64 is a number.
        let mut nulls = json!({"spec": {"workload": null, "style": null, "replicas": 9_223_372_036_854_775_808_u64}});
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "required": ["workload"], "properties": {
            "workload": {"type": "object"},
            "style": {"type": "string", "nullable": true, "enum": ["A", "B"]},
            "replicas": {"type": "integer"}}}}});
        prune(&mut nulls, &schema);
        assert_eq!(
            problems(&nulls, &schema),
            [
                ("spec.workload".to_owned(), "Required value".to_owned()),
                ("spec.replicas".to_owned(), "Invalid value: \"number\": spec.replicas in body must be of type integer: \"number\"".to_owned()),
                ("spec.style".to_owned(), "Unsupported value: null: supported values: \"A\", \"B\"".to_owned()),
            ]
        );
        let no_spec = problems(
            &json!({"metadata": {}}),
            &json!({"type": "object", "required": ["spec"], "properties": {"spec": {"type": "object"}}}),
        );
        assert_eq!(no_spec, [("spec".to_owned(), "Required value".to_owned())]);
    }
}
