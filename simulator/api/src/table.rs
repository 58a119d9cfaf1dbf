//! `meta.k8s.io/v1` Table output, which `kubectl get` asks for: the columns
//! a real API server prints for the common kinds, and a custom resource's
//! `additionalPrinterColumns`.

use std::time::SystemTime;

use serde_json::{Value, json};

use crate::{resources::Resource, store::get_path, time::parse_rfc3339};

/// Whether an Accept header asks for a Table.
pub(crate) fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

/// A duration as kubectl shows ages: `45s`, `12m`, `5h`, `3d`.
pub(crate) fn human_age(seconds: u64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 3600 * 2 => format!("{}m", s / 60),
        s if s < 86_400 * 2 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn age(object: &Value, now: SystemTime) -> String {
    let created = object["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(parse_rfc3339);
    created.map_or_else(
        || "<unknown>".into(),
        |t| human_age(now.duration_since(t).map_or(0, |d| d.as_secs())),
    )
}

fn num(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

/// (column name, type) and the cells of one object, for a built-in kind.
/// Column (name, type) pairs and one row's cells.
type Columns = (Vec<(&'static str, &'static str)>, Vec<Value>);

fn builtin(res: &Resource, o: &Value) -> Option<Columns> {
    let status = &o["status"];
    let spec = &o["spec"];
    Some(match (res.group.as_str(), res.plural.as_str()) {
        ("", "pods") => {
            let statuses = status["containerStatuses"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let total = spec["containers"].as_array().map_or(0, Vec::len);
            let ready = statuses
                .iter()
                .filter(|s| s["ready"] == json!(true))
                .count();
            let restarts: i64 = statuses.iter().map(|s| num(&s["restartCount"])).sum();
            let waiting = statuses
                .iter()
                .find_map(|s| s["state"]["waiting"]["reason"].as_str());
            let phase = if o["metadata"]["deletionTimestamp"].is_string() {
                "Terminating"
            } else {
                waiting.or(status["phase"].as_str()).unwrap_or("Pending")
            };
            (
                vec![
                    ("Ready", "string"),
                    ("Status", "string"),
                    ("Restarts", "string"),
                    ("Node", "string"),
                ],
                vec![
                    json!(format!("{ready}/{total}")),
                    json!(phase),
                    json!(restarts.to_string()),
                    json!(spec["nodeName"].as_str().unwrap_or("<none>")),
                ],
            )
        }
        ("apps", "deployments") => (
            vec![
                ("Ready", "string"),
                ("Up-to-date", "integer"),
                ("Available", "integer"),
            ],
            vec![
                json!(format!(
                    "{}/{}",
                    num(&status["readyReplicas"]),
                    num(&spec["replicas"])
                )),
                json!(num(&status["updatedReplicas"])),
                json!(num(&status["availableReplicas"])),
            ],
        ),
        ("apps", "replicasets") => (
            vec![
                ("Desired", "integer"),
                ("Current", "integer"),
                ("Ready", "integer"),
            ],
            vec![
                json!(num(&spec["replicas"])),
                json!(num(&status["replicas"])),
                json!(num(&status["readyReplicas"])),
            ],
        ),
        ("apps", "statefulsets") => (
            vec![("Ready", "string")],
            vec![json!(format!(
                "{}/{}",
                num(&status["readyReplicas"]),
                num(&spec["replicas"])
            ))],
        ),
        ("", "services") => {
            let ports: Vec<String> = spec["ports"]
                .as_array()
                .map(|p| {
                    p.iter()
                        .map(|x| {
                            format!(
                                "{}/{}",
                                num(&x["port"]),
                                x["protocol"].as_str().unwrap_or("TCP")
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            (
                vec![
                    ("Type", "string"),
                    ("Cluster-IP", "string"),
                    ("Port(s)", "string"),
                ],
                vec![
                    json!(spec["type"].as_str().unwrap_or("ClusterIP")),
                    json!(spec["clusterIP"].as_str().unwrap_or("<none>")),
                    json!(if ports.is_empty() {
                        "<none>".to_owned()
                    } else {
                        ports.join(",")
                    }),
                ],
            )
        }
        ("", "namespaces") => (
            vec![("Status", "string")],
            vec![json!(status["phase"].as_str().unwrap_or("Active"))],
        ),
        ("", "nodes") => {
            let ready = status["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|x| x["type"] == "Ready"))
                .is_some_and(|c| c["status"] == "True");
            (
                vec![("Status", "string")],
                vec![json!(if ready { "Ready" } else { "NotReady" })],
            )
        }
        _ => return None,
    })
}

/// The Table of `objects` of `res`.
pub(crate) fn table(
    res: &Resource,
    objects: &[Value],
    resource_version: u64,
    continue_token: Option<&str>,
    now: SystemTime,
) -> Value {
    let mut columns: Vec<Value> = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name of the object", "priority": 0}),
    ];
    let mut rows = Vec::new();
    let custom = &res.printer_columns;
    for (i, o) in objects.iter().enumerate() {
        let mut cells = vec![o["metadata"]["name"].clone()];
        if let Some((cols, values)) = builtin(res, o) {
            if i == 0 {
                columns.extend(cols.iter().map(|(n, t)| json!({"name": n, "type": t, "format": "", "description": n, "priority": 0})));
            }
            cells.extend(values);
        } else {
            for c in custom {
                let path = c["jsonPath"].as_str().unwrap_or_default();
                let value = get_path(o, path);
                cells.push(if c["type"] == "date" {
                    value
                        .as_str()
                        .and_then(parse_rfc3339)
                        .map_or(Value::Null, |t| {
                            json!(human_age(now.duration_since(t).map_or(0, |d| d.as_secs())))
                        })
                } else {
                    value.clone()
                });
            }
        }
        if !custom.iter().any(|c| c["name"] == "Age") {
            cells.push(json!(age(o, now)));
        }
        rows.push(json!({"cells": cells, "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}}));
    }
    if builtin(res, &json!({})).is_none() {
        columns.extend(custom.iter().map(|c| json!({"name": c["name"], "type": if c["type"] == "date" { json!("string") } else { c["type"].clone() }, "format": "", "description": c["description"].as_str().unwrap_or_default(), "priority": c["priority"].as_i64().unwrap_or(0)})));
    } else if objects.is_empty()
        && let Some((cols, _)) = builtin(res, &json!({}))
    {
        columns.extend(cols.iter().map(
            |(n, t)| json!({"name": n, "type": t, "format": "", "description": n, "priority": 0}),
        ));
    }
    if !custom.iter().any(|c| c["name"] == "Age") {
        columns.push(json!({"name": "Age", "type": "string", "format": "", "description": "Time since creation", "priority": 0}));
    }
    let mut metadata = json!({"resourceVersion": resource_version.to_string()});
    if let Some(token) = continue_token {
        metadata["continue"] = json!(token);
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata, "columnDefinitions": columns, "rows": rows})
}
