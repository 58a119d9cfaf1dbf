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

/// A duration as kubectl shows ages (apimachinery's `HumanDuration`):
/// `45s`, `2m39s`, `12m`, `5h20m`, `20h`, `3d4h`, `40d`, `2y10d`.
pub(crate) fn human_age(seconds: u64) -> String {
    let (minutes, hours) = (seconds / 60, seconds / 3600);
    let days = hours / 24;
    let with = |big: u64, unit: &str, small: u64, small_unit: &str| {
        if small == 0 {
            format!("{big}{unit}")
        } else {
            format!("{big}{unit}{small}{small_unit}")
        }
    };
    match seconds {
        s if s < 120 => format!("{s}s"),
        _ if minutes < 10 => with(minutes, "m", seconds % 60, "s"),
        _ if minutes < 180 => format!("{minutes}m"),
        _ if hours < 8 => with(hours, "h", minutes % 60, "m"),
        _ if hours < 48 => format!("{hours}h"),
        _ if hours < 24 * 8 => with(days, "d", hours % 24, "h"),
        _ if hours < 24 * 365 * 2 => format!("{days}d"),
        _ if hours < 24 * 365 * 8 => with(days / 365, "y", days % 365, "d"),
        _ => format!("{}y", days / 365),
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

/// A column: its name, type and priority (1: shown by `-o wide` only).
type Column = (&'static str, &'static str, u8);

/// The columns and one row's cells of a built-in kind, as kube-apiserver's
/// printers give them. A list that names `Name` or `Age` places them
/// itself; otherwise the name comes first and the age last.
type Columns = (Vec<Column>, Vec<Value>);

/// The containers' names, their images and the selector: the `-o wide`
/// columns of workloads.
fn wide(o: &Value) -> (Vec<Column>, Vec<Value>) {
    let containers = o["spec"]["template"]["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let joined = |key: &str| {
        containers
            .iter()
            .filter_map(|c| c[key].as_str())
            .collect::<Vec<_>>()
            .join(",")
    };
    let selector = labels_text(&o["spec"]["selector"]["matchLabels"]);
    (
        vec![
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        vec![
            json!(joined("name")),
            json!(joined("image")),
            json!(if selector.is_empty() {
                "<none>".to_owned()
            } else {
                selector
            }),
        ],
    )
}

/// Labels as a selector's text: `app=web,tier=front` (empty for none).
pub(crate) fn labels_text(labels: &Value) -> String {
    labels
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// A printer's columns and cells, with the first `count` of the `-o wide`
/// columns of workloads after them.
fn with_wide(o: &Value, mut columns: Vec<Column>, mut cells: Vec<Value>, count: usize) -> Columns {
    let (wide_columns, wide_cells) = wide(o);
    columns.extend(wide_columns.into_iter().take(count));
    cells.extend(wide_cells.into_iter().take(count));
    (columns, cells)
}

/// How long ago an RFC 3339 time was, as kubectl shows ages; `<unknown>`
/// when there is none.
fn ago(time: &Value, now: SystemTime) -> String {
    time.as_str().and_then(parse_rfc3339).map_or_else(
        || "<unknown>".into(),
        |t| human_age(now.duration_since(t).map_or(0, |d| d.as_secs())),
    )
}

fn count(v: &Value) -> usize {
    v.as_object().map_or(0, serde_json::Map::len)
}

/// A label selector as `metav1.FormatLabelSelector` writes it: `<none>`
/// for an empty one, `k=v` pairs and `k in (a,b)` expressions.
fn selector_text(selector: &Value) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(labels) = selector["matchLabels"].as_object() {
        parts.extend(
            labels
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())),
        );
    }
    for (key, operator, values) in crate::selector::expressions(selector) {
        parts.push(match operator {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_owned(),
            "DoesNotExist" => format!("!{key}"),
            other => format!("{key} {other}"),
        });
    }
    if parts.is_empty() {
        "<none>".to_owned()
    } else {
        parts.join(",")
    }
}

/// Access modes as kubectl abbreviates them (`RWO,ROX`).
fn access_modes(modes: &Value) -> String {
    let modes: Vec<&str> = modes
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(mode, _)| modes.contains(mode))
    .map(|(_, short)| *short)
    .collect::<Vec<_>>()
    .join(",")
}

/// A volume's or claim's class: `spec.storageClassName`, or the beta
/// annotation that came before it.
fn storage_class(o: &Value) -> String {
    o["metadata"]["annotations"]["volume.beta.kubernetes.io/storage-class"]
        .as_str()
        .or(o["spec"]["storageClassName"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// `Terminating` for an object being deleted, else `phase`.
fn terminating_or(o: &Value, phase: &str) -> String {
    if o["metadata"]["deletionTimestamp"].is_string() {
        "Terminating".to_owned()
    } else {
        phase.to_owned()
    }
}

fn builtin(res: &Resource, o: &Value, now: SystemTime) -> Option<Columns> {
    let status = &o["status"];
    let spec = &o["spec"];
    let age = || json!(age(o, now));
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
                    ("Name", "string", 0),
                    ("Ready", "string", 0),
                    ("Status", "string", 0),
                    ("Restarts", "string", 0),
                    ("Age", "string", 0),
                    ("IP", "string", 1),
                    ("Node", "string", 1),
                    ("Nominated Node", "string", 1),
                    ("Readiness Gates", "string", 1),
                ],
                vec![
                    o["metadata"]["name"].clone(),
                    json!(format!("{ready}/{total}")),
                    json!(phase),
                    json!(restarts.to_string()),
                    age(),
                    json!(status["podIP"].as_str().unwrap_or("<none>")),
                    json!(spec["nodeName"].as_str().unwrap_or("<none>")),
                    json!(status["nominatedNodeName"].as_str().unwrap_or("<none>")),
                    json!("<none>"),
                ],
            )
        }
        ("apps", "deployments") => with_wide(
            o,
            vec![
                ("Name", "string", 0),
                ("Ready", "string", 0),
                ("Up-to-date", "integer", 0),
                ("Available", "integer", 0),
                ("Age", "string", 0),
            ],
            vec![
                o["metadata"]["name"].clone(),
                json!(format!(
                    "{}/{}",
                    num(&status["readyReplicas"]),
                    num(&spec["replicas"])
                )),
                json!(num(&status["updatedReplicas"])),
                json!(num(&status["availableReplicas"])),
                age(),
            ],
            3,
        ),
        ("apps", "replicasets") => with_wide(
            o,
            vec![
                ("Name", "string", 0),
                ("Desired", "integer", 0),
                ("Current", "integer", 0),
                ("Ready", "integer", 0),
                ("Age", "string", 0),
            ],
            vec![
                o["metadata"]["name"].clone(),
                json!(num(&spec["replicas"])),
                json!(num(&status["replicas"])),
                json!(num(&status["readyReplicas"])),
                age(),
            ],
            3,
        ),
        ("apps", "statefulsets") => with_wide(
            o,
            vec![
                ("Name", "string", 0),
                ("Ready", "string", 0),
                ("Age", "string", 0),
            ],
            vec![
                o["metadata"]["name"].clone(),
                json!(format!(
                    "{}/{}",
                    num(&status["readyReplicas"]),
                    num(&spec["replicas"])
                )),
                age(),
            ],
            2,
        ),
        ("apps", "daemonsets") => {
            let selector = labels_text(&spec["template"]["spec"]["nodeSelector"]);
            with_wide(
                o,
                vec![
                    ("Name", "string", 0),
                    ("Desired", "integer", 0),
                    ("Current", "integer", 0),
                    ("Ready", "integer", 0),
                    ("Up-to-date", "integer", 0),
                    ("Available", "integer", 0),
                    ("Node Selector", "string", 0),
                    ("Age", "string", 0),
                ],
                vec![
                    o["metadata"]["name"].clone(),
                    json!(num(&status["desiredNumberScheduled"])),
                    json!(num(&status["currentNumberScheduled"])),
                    json!(num(&status["numberReady"])),
                    json!(num(&status["updatedNumberScheduled"])),
                    json!(num(&status["numberAvailable"])),
                    json!(if selector.is_empty() {
                        "<none>".to_owned()
                    } else {
                        selector
                    }),
                    age(),
                ],
                3,
            )
        }
        ("autoscaling", "horizontalpodautoscalers") => {
            let target = &spec["scaleTargetRef"];
            (
                vec![
                    ("Reference", "string", 0),
                    ("Targets", "string", 0),
                    ("MinPods", "string", 0),
                    ("MaxPods", "string", 0),
                    ("Replicas", "string", 0),
                ],
                vec![
                    json!(format!(
                        "{}/{}",
                        target["kind"].as_str().unwrap_or_default(),
                        target["name"].as_str().unwrap_or_default()
                    )),
                    json!("<unknown>"),
                    json!(spec["minReplicas"].as_i64().unwrap_or(1).to_string()),
                    json!(num(&spec["maxReplicas"]).to_string()),
                    json!(num(&status["currentReplicas"]).to_string()),
                ],
            )
        }
        ("policy", "poddisruptionbudgets") => {
            let shown = |v: &Value| match v {
                Value::Null => "N/A".to_owned(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (
                vec![
                    ("Min Available", "string", 0),
                    ("Max Unavailable", "string", 0),
                    ("Allowed Disruptions", "integer", 0),
                ],
                vec![
                    json!(shown(&spec["minAvailable"])),
                    json!(shown(&spec["maxUnavailable"])),
                    json!(num(&status["disruptionsAllowed"])),
                ],
            )
        }
        ("rbac.authorization.k8s.io", "roles" | "clusterroles") => (
            vec![("Name", "string", 0), ("Created At", "date", 0)],
            vec![
                o["metadata"]["name"].clone(),
                o["metadata"]["creationTimestamp"].clone(),
            ],
        ),
        ("rbac.authorization.k8s.io", "rolebindings" | "clusterrolebindings") => {
            let subjects = |kind: &str| {
                o["subjects"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|s| s["kind"] == kind)
                    .map(|s| {
                        let name = s["name"].as_str().unwrap_or_default();
                        match s["namespace"].as_str() {
                            Some(ns) if kind == "ServiceAccount" => format!("{ns}/{name}"),
                            _ => name.to_owned(),
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            (
                vec![
                    ("Name", "string", 0),
                    ("Role", "string", 0),
                    ("Age", "string", 0),
                    ("Users", "string", 1),
                    ("Groups", "string", 1),
                    ("ServiceAccounts", "string", 1),
                ],
                vec![
                    o["metadata"]["name"].clone(),
                    json!(format!(
                        "{}/{}",
                        o["roleRef"]["kind"].as_str().unwrap_or_default(),
                        o["roleRef"]["name"].as_str().unwrap_or_default()
                    )),
                    age(),
                    json!(subjects("User")),
                    json!(subjects("Group")),
                    json!(subjects("ServiceAccount")),
                ],
            )
        }
        ("discovery.k8s.io", "endpointslices") => {
            let ports: Vec<String> = o["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["port"].as_i64().map(|n| n.to_string()))
                .collect();
            let addresses: Vec<&str> = o["endpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|e| e["addresses"].as_array().into_iter().flatten())
                .filter_map(Value::as_str)
                .collect();
            (
                vec![
                    ("AddressType", "string", 0),
                    ("Ports", "string", 0),
                    ("Endpoints", "string", 0),
                ],
                vec![
                    o["addressType"].clone(),
                    json!(if ports.is_empty() {
                        "<unset>".to_owned()
                    } else {
                        ports.join(",")
                    }),
                    json!(if addresses.is_empty() {
                        "<unset>".to_owned()
                    } else {
                        addresses.join(",")
                    }),
                ],
            )
        }
        ("", "services") => {
            let ports: Vec<String> = spec["ports"]
                .as_array()
                .map(|p| {
                    p.iter()
                        .map(|x| {
                            let node = x["nodePort"]
                                .as_i64()
                                .map_or(String::new(), |n| format!(":{n}"));
                            format!(
                                "{}{node}/{}",
                                num(&x["port"]),
                                x["protocol"].as_str().unwrap_or("TCP")
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let kind = spec["type"].as_str().unwrap_or("ClusterIP");
            let external = match kind {
                "ExternalName" => spec["externalName"].as_str().unwrap_or("<none>").to_owned(),
                "LoadBalancer" => status["loadBalancer"]["ingress"]
                    .as_array()
                    .filter(|i| !i.is_empty())
                    .map_or("<pending>".to_owned(), |i| {
                        i.iter()
                            .filter_map(|x| x["ip"].as_str().or(x["hostname"].as_str()))
                            .collect::<Vec<_>>()
                            .join(",")
                    }),
                _ => "<none>".to_owned(),
            };
            let selector = Some(labels_text(&spec["selector"])).filter(|s| !s.is_empty());
            (
                vec![
                    ("Name", "string", 0),
                    ("Type", "string", 0),
                    ("Cluster-IP", "string", 0),
                    ("External-IP", "string", 0),
                    ("Port(s)", "string", 0),
                    ("Age", "string", 0),
                    ("Selector", "string", 1),
                ],
                vec![
                    o["metadata"]["name"].clone(),
                    json!(kind),
                    json!(spec["clusterIP"].as_str().unwrap_or("<none>")),
                    json!(external),
                    json!(if ports.is_empty() {
                        "<none>".to_owned()
                    } else {
                        ports.join(",")
                    }),
                    age(),
                    json!(selector.unwrap_or_else(|| "<none>".to_owned())),
                ],
            )
        }
        ("", "namespaces") => (
            vec![("Status", "string", 0)],
            vec![json!(status["phase"].as_str().unwrap_or("Active"))],
        ),
        ("", "nodes") => {
            let ready = status["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|x| x["type"] == "Ready"))
                .is_some_and(|c| c["status"] == "True");
            let cordoned = spec["unschedulable"] == json!(true);
            let state = match (ready, cordoned) {
                (true, false) => "Ready",
                (true, true) => "Ready,SchedulingDisabled",
                (false, false) => "NotReady",
                (false, true) => "NotReady,SchedulingDisabled",
            };
            let address = |kind: &str| {
                status["addresses"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|a| a["type"] == kind)
                    .and_then(|a| a["address"].as_str())
                    .unwrap_or("<none>")
                    .to_owned()
            };
            let info = &status["nodeInfo"];
            let text = |key: &str| info[key].as_str().unwrap_or("<unknown>").to_owned();
            (
                vec![
                    ("Name", "string", 0),
                    ("Status", "string", 0),
                    ("Roles", "string", 0),
                    ("Age", "string", 0),
                    ("Version", "string", 0),
                    ("Internal-IP", "string", 1),
                    ("External-IP", "string", 1),
                    ("OS-Image", "string", 1),
                    ("Kernel-Version", "string", 1),
                    ("Container-Runtime", "string", 1),
                ],
                vec![
                    o["metadata"]["name"].clone(),
                    json!(state),
                    json!("<none>"),
                    age(),
                    json!(text("kubeletVersion")),
                    json!(address("InternalIP")),
                    json!(address("ExternalIP")),
                    json!(text("osImage")),
                    json!(text("kernelVersion")),
                    json!(text("containerRuntimeVersion")),
                ],
            )
        }
        ("", "configmaps") => (
            vec![("Data", "integer", 0)],
            vec![json!(count(&o["data"]) + count(&o["binaryData"]))],
        ),
        ("", "secrets") => (
            vec![("Type", "string", 0), ("Data", "integer", 0)],
            vec![
                json!(o["type"].as_str().unwrap_or("Opaque")),
                json!(count(&o["data"])),
            ],
        ),
        ("", "serviceaccounts") => (
            vec![("Secrets", "integer", 0)],
            vec![json!(o["secrets"].as_array().map_or(0, Vec::len))],
        ),
        ("", "events") | ("events.k8s.io", "events") => {
            let last = o["lastTimestamp"]
                .as_str()
                .or(o["series"]["lastObservedTime"].as_str())
                .or(o["eventTime"].as_str())
                .map_or(Value::Null, |t| json!(t));
            let first = o["firstTimestamp"]
                .as_str()
                .or(o["eventTime"].as_str())
                .map_or(Value::Null, |t| json!(t));
            let involved = &o["involvedObject"];
            let object = format!(
                "{}/{}",
                involved["kind"].as_str().unwrap_or_default().to_lowercase(),
                involved["name"].as_str().unwrap_or_default()
            );
            let source = [&o["source"]["component"], &o["source"]["host"]]
                .iter()
                .filter_map(|v| v.as_str())
                .filter(|v| !v.is_empty())
                .collect::<Vec<_>>()
                .join(", ");
            let source = if source.is_empty() {
                o["reportingComponent"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            } else {
                source
            };
            (
                vec![
                    ("Last Seen", "string", 0),
                    ("Type", "string", 0),
                    ("Reason", "string", 0),
                    ("Object", "string", 0),
                    ("Subobject", "string", 1),
                    ("Source", "string", 1),
                    ("Message", "string", 0),
                    ("First Seen", "string", 1),
                    ("Count", "integer", 1),
                    ("Name", "string", 1),
                ],
                vec![
                    json!(ago(&last, now)),
                    o["type"].clone(),
                    o["reason"].clone(),
                    json!(object),
                    json!(involved["fieldPath"].as_str().unwrap_or_default()),
                    json!(source),
                    o["message"].clone(),
                    json!(ago(&first, now)),
                    json!(o["count"].as_i64().unwrap_or(1)),
                    o["metadata"]["name"].clone(),
                ],
            )
        }
        ("batch", "jobs") => {
            let completed = status["conditions"].as_array().and_then(|c| {
                c.iter()
                    .find(|x| {
                        x["status"] == "True" && (x["type"] == "Complete" || x["type"] == "Failed")
                    })
                    .and_then(|x| x["type"].as_str())
            });
            let state = match completed {
                Some("Failed") => "Failed",
                Some(_) => "Complete",
                None if spec["suspend"] == json!(true) => "Suspended",
                None => "Running",
            };
            let columns = vec![
                ("Name", "string", 0),
                ("Status", "string", 0),
                ("Completions", "string", 0),
                ("Duration", "string", 0),
                ("Age", "string", 0),
            ];
            let duration = status["startTime"].as_str().and_then(parse_rfc3339).map_or(
                String::new(),
                |start| {
                    let end = status["completionTime"]
                        .as_str()
                        .and_then(parse_rfc3339)
                        .unwrap_or(now);
                    human_age(end.duration_since(start).map_or(0, |d| d.as_secs()))
                },
            );
            let cells = vec![
                o["metadata"]["name"].clone(),
                json!(state),
                json!(format!(
                    "{}/{}",
                    num(&status["succeeded"]),
                    spec["completions"].as_i64().unwrap_or(1)
                )),
                json!(duration),
                age(),
            ];
            with_wide(o, columns, cells, 3)
        }
        ("networking.k8s.io", "ingresses") => {
            let hosts: Vec<&str> = spec["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["host"].as_str())
                .collect();
            let addresses: Vec<&str> = status["loadBalancer"]["ingress"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x["ip"].as_str().or(x["hostname"].as_str()))
                .collect();
            let tls = spec["tls"].as_array().is_some_and(|t| !t.is_empty());
            (
                vec![
                    ("Class", "string", 0),
                    ("Hosts", "string", 0),
                    ("Address", "string", 0),
                    ("Ports", "string", 0),
                ],
                vec![
                    json!(spec["ingressClassName"].as_str().unwrap_or("<none>")),
                    json!(if hosts.is_empty() {
                        "*".to_owned()
                    } else {
                        hosts.join(",")
                    }),
                    json!(addresses.join(",")),
                    json!(if tls { "80, 443" } else { "80" }),
                ],
            )
        }
        ("", "resourcequotas") => {
            // `name: used/hard` for each resource, by name; limits apart.
            let hard = status["hard"].as_object().cloned().unwrap_or_default();
            let (mut requests, mut limits) = (Vec::new(), Vec::new());
            for (name, amount) in &hard {
                let used = status["used"][name].as_str().unwrap_or("0");
                let text = format!("{name}: {used}/{}", amount.as_str().unwrap_or_default());
                if name.split('.').next() == Some("limits") && name.contains('.') {
                    limits.push(text);
                } else {
                    requests.push(text);
                }
            }
            (
                vec![("Request", "string", 0), ("Limit", "string", 0)],
                vec![json!(requests.join(", ")), json!(limits.join(", "))],
            )
        }
        ("", "limitranges") | ("apiextensions.k8s.io", "customresourcedefinitions") => (
            // No printer of their own: kube-apiserver's default columns.
            vec![("Name", "string", 0), ("Created At", "date", 0)],
            vec![
                o["metadata"]["name"].clone(),
                o["metadata"]["creationTimestamp"].clone(),
            ],
        ),
        ("", "persistentvolumeclaims") => {
            let bound = spec["volumeName"].as_str().is_some_and(|v| !v.is_empty());
            let text = |v: &Value, none: &str| v.as_str().unwrap_or(none).to_owned();
            (
                vec![
                    ("Name", "string", 0),
                    ("Status", "string", 0),
                    ("Volume", "string", 0),
                    ("Capacity", "string", 0),
                    ("Access Modes", "string", 0),
                    ("StorageClass", "string", 0),
                    ("VolumeAttributesClass", "string", 0),
                    ("Age", "string", 0),
                    ("VolumeMode", "string", 1),
                ],
                vec![
                    o["metadata"]["name"].clone(),
                    json!(terminating_or(
                        o,
                        status["phase"].as_str().unwrap_or_default()
                    )),
                    json!(text(&spec["volumeName"], "")),
                    json!(if bound {
                        text(&status["capacity"]["storage"], "")
                    } else {
                        String::new()
                    }),
                    json!(if bound {
                        access_modes(&status["accessModes"])
                    } else {
                        String::new()
                    }),
                    json!(storage_class(o)),
                    json!(text(&spec["volumeAttributesClassName"], "<unset>")),
                    age(),
                    json!(text(&spec["volumeMode"], "<unset>")),
                ],
            )
        }
        ("", "persistentvolumes") => {
            let claim = &spec["claimRef"];
            let text = |v: &Value, none: &str| v.as_str().unwrap_or(none).to_owned();
            (
                vec![
                    ("Name", "string", 0),
                    ("Capacity", "string", 0),
                    ("Access Modes", "string", 0),
                    ("Reclaim Policy", "string", 0),
                    ("Status", "string", 0),
                    ("Claim", "string", 0),
                    ("StorageClass", "string", 0),
                    ("VolumeAttributesClass", "string", 0),
                    ("Reason", "string", 0),
                    ("Age", "string", 0),
                    ("VolumeMode", "string", 1),
                ],
                vec![
                    o["metadata"]["name"].clone(),
                    json!(text(&spec["capacity"]["storage"], "0")),
                    json!(access_modes(&spec["accessModes"])),
                    json!(text(&spec["persistentVolumeReclaimPolicy"], "")),
                    json!(terminating_or(
                        o,
                        status["phase"].as_str().unwrap_or_default()
                    )),
                    json!(if claim.is_object() {
                        format!(
                            "{}/{}",
                            text(&claim["namespace"], ""),
                            text(&claim["name"], "")
                        )
                    } else {
                        String::new()
                    }),
                    json!(storage_class(o)),
                    json!(text(&spec["volumeAttributesClassName"], "<unset>")),
                    json!(text(&status["reason"], "")),
                    age(),
                    json!(text(&spec["volumeMode"], "<unset>")),
                ],
            )
        }
        ("storage.k8s.io", "storageclasses") => {
            let default = o["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"]
                == "true"
                || o["metadata"]["annotations"]["storageclass.beta.kubernetes.io/is-default-class"]
                    == "true";
            let name = o["metadata"]["name"].as_str().unwrap_or_default();
            (
                vec![
                    ("Name", "string", 0),
                    ("Provisioner", "string", 0),
                    ("ReclaimPolicy", "string", 0),
                    ("VolumeBindingMode", "string", 0),
                    ("AllowVolumeExpansion", "string", 0),
                    ("Age", "string", 0),
                ],
                vec![
                    json!(if default {
                        format!("{name} (default)")
                    } else {
                        name.to_owned()
                    }),
                    o["provisioner"].clone(),
                    json!(o["reclaimPolicy"].as_str().unwrap_or("Delete")),
                    json!(o["volumeBindingMode"].as_str().unwrap_or("Immediate")),
                    json!(o["allowVolumeExpansion"].as_bool().unwrap_or(false)),
                    age(),
                ],
            )
        }
        ("scheduling.k8s.io", "priorityclasses") => (
            vec![
                ("Name", "string", 0),
                ("Value", "integer", 0),
                ("Global-Default", "boolean", 0),
                ("Age", "string", 0),
                ("PreemptionPolicy", "string", 0),
            ],
            vec![
                o["metadata"]["name"].clone(),
                json!(num(&o["value"])),
                json!(o["globalDefault"].as_bool().unwrap_or(false)),
                age(),
                json!(o["preemptionPolicy"].as_str().unwrap_or_default()),
            ],
        ),
        ("networking.k8s.io", "networkpolicies") => (
            vec![("Pod-Selector", "string", 0)],
            vec![json!(selector_text(&spec["podSelector"]))],
        ),
        ("networking.k8s.io", "ingressclasses") => {
            let p = &spec["parameters"];
            let parameters = if p.is_object() {
                let kind = p["kind"].as_str().unwrap_or_default();
                let kind = match p["apiGroup"].as_str() {
                    Some(group) => format!("{kind}.{group}"),
                    None => kind.to_owned(),
                };
                format!("{kind}/{}", p["name"].as_str().unwrap_or_default())
            } else {
                "<none>".to_owned()
            };
            (
                vec![("Controller", "string", 0), ("Parameters", "string", 0)],
                vec![
                    json!(spec["controller"].as_str().unwrap_or_default()),
                    json!(parameters),
                ],
            )
        }
        ("coordination.k8s.io", "leases") => (
            vec![("Holder", "string", 0)],
            vec![json!(spec["holderIdentity"].as_str().unwrap_or_default())],
        ),
        (
            "admissionregistration.k8s.io",
            "mutatingwebhookconfigurations" | "validatingwebhookconfigurations",
        ) => (
            vec![("Webhooks", "integer", 0)],
            vec![json!(o["webhooks"].as_array().map_or(0, Vec::len))],
        ),
        ("", "endpoints") => {
            // `ip:port` pairs, the first three and how many more.
            let mut pairs = Vec::new();
            for subset in o["subsets"].as_array().into_iter().flatten() {
                let ips = subset["addresses"].as_array().cloned().unwrap_or_default();
                let ports = subset["ports"].as_array().cloned().unwrap_or_default();
                // Each port's addresses in turn, as the printer lists them.
                if ports.is_empty() {
                    pairs.extend(
                        ips.iter()
                            .map(|ip| ip["ip"].as_str().unwrap_or_default().to_owned()),
                    );
                }
                for port in &ports {
                    for ip in &ips {
                        let ip = ip["ip"].as_str().unwrap_or_default();
                        pairs.push(format!("{ip}:{}", num(&port["port"])));
                    }
                }
            }
            let shown = match pairs.len() {
                0 => "<none>".to_owned(),
                n if n <= 3 => pairs.join(","),
                n => format!("{} + {} more...", pairs[..3].join(","), n - 3),
            };
            (vec![("Endpoints", "string", 0)], vec![json!(shown)])
        }
        ("apps", "controllerrevisions") => {
            let owner = o["metadata"]["ownerReferences"]
                .as_array()
                .and_then(|refs| refs.iter().find(|r| r["controller"] == true));
            let controller = owner.map_or_else(
                || "<none>".to_owned(),
                |r| {
                    let group = r["apiVersion"]
                        .as_str()
                        .and_then(|v| v.split_once('/'))
                        .map_or("", |(g, _)| g);
                    let kind = r["kind"].as_str().unwrap_or_default().to_lowercase();
                    let kind = if group.is_empty() {
                        kind
                    } else {
                        format!("{kind}.{group}")
                    };
                    format!("{kind}/{}", r["name"].as_str().unwrap_or_default())
                },
            );
            (
                vec![("Controller", "string", 0), ("Revision", "string", 0)],
                vec![json!(controller), json!(num(&o["revision"]))],
            )
        }
        ("batch", "cronjobs") => {
            let template = &spec["jobTemplate"]["spec"]["template"]["spec"];
            let joined = |key: &str| {
                template["containers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c[key].as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let last = &status["lastScheduleTime"];
            (
                vec![
                    ("Name", "string", 0),
                    ("Schedule", "string", 0),
                    ("Timezone", "string", 0),
                    ("Suspend", "boolean", 0),
                    ("Active", "integer", 0),
                    ("Last Schedule", "string", 0),
                    ("Age", "string", 0),
                    ("Containers", "string", 1),
                    ("Images", "string", 1),
                    ("Selector", "string", 1),
                ],
                vec![
                    o["metadata"]["name"].clone(),
                    spec["schedule"].clone(),
                    json!(spec["timeZone"].as_str().unwrap_or("<none>")),
                    // kubectl's printer writes the flag as Go's `True`/`False`.
                    json!(if spec["suspend"] == true {
                        "True"
                    } else {
                        "False"
                    }),
                    json!(status["active"].as_array().map_or(0, Vec::len)),
                    json!(if last.is_string() {
                        ago(last, now)
                    } else {
                        "<none>".to_owned()
                    }),
                    age(),
                    json!(joined("name")),
                    json!(joined("image")),
                    json!(selector_text(&spec["jobTemplate"]["spec"]["selector"])),
                ],
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
    let custom = &res.printer_columns;
    let definition = |(name, kind, priority): &Column| json!({"name": name, "type": kind, "format": if *name == "Name" { "name" } else { "" }, "description": name, "priority": priority});
    let name_column = json!({"name": "Name", "type": "string", "format": "name", "description": "Name of the object", "priority": 0});
    let age_column = json!({"name": "Age", "type": "string", "format": "", "description": "Time since creation", "priority": 0});
    // The columns, from the kind's printer (an empty object gives them
    // when there are no rows) or its CRD's printer columns.
    let printed = builtin(res, objects.first().unwrap_or(&json!({})), now).map(|(c, _)| c);
    let mut columns = Vec::new();
    let (names_itself, ages_itself) = match &printed {
        Some(cols) => (
            cols.iter().any(|c| c.0 == "Name"),
            // A printer that names its Name column lists every column.
            cols.iter().any(|c| c.0 == "Age" || c.0 == "Name"),
        ),
        // A CRD's printer columns are all there is: an age only when it
        // declares none.
        None => (false, !custom.is_empty()),
    };
    if !names_itself {
        columns.push(name_column);
    }
    match &printed {
        Some(cols) => columns.extend(cols.iter().map(definition)),
        None => columns.extend(custom.iter().map(|c| json!({"name": c["name"], "type": if c["type"] == "date" { json!("string") } else { c["type"].clone() }, "format": "", "description": c["description"].as_str().unwrap_or_default(), "priority": c["priority"].as_i64().unwrap_or(0)}))),
    }
    if !ages_itself {
        columns.push(age_column);
    }
    let mut rows = Vec::new();
    for o in objects {
        let mut cells = Vec::new();
        if !names_itself {
            cells.push(o["metadata"]["name"].clone());
        }
        if let Some((_, values)) = builtin(res, o, now) {
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
        if !ages_itself {
            cells.push(json!(age(o, now)));
        }
        rows.push(json!({"cells": cells, "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}}));
    }
    let mut metadata = json!({"resourceVersion": resource_version.to_string()});
    if let Some(token) = continue_token {
        metadata["continue"] = json!(token);
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata, "columnDefinitions": columns, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_kubectl_prints_them() {
        for (seconds, shown) in [
            (45, "45s"),
            (119, "119s"),
            (159, "2m39s"),
            (300, "5m"),
            (720, "12m"),
            (3 * 3600 + 20 * 60, "3h20m"),
            (20 * 3600, "20h"),
            (3 * 86_400 + 4 * 3600, "3d4h"),
            (40 * 86_400, "40d"),
            (740 * 86_400, "2y10d"),
            (9 * 365 * 86_400, "9y"),
        ] {
            assert_eq!(human_age(seconds), shown, "{seconds}");
        }
    }
}
