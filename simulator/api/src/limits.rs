//! LimitRange, as kube-apiserver's LimitRanger admission plugin applies it
//! to a pod being created: each `Container` limit's `default` and
//! `defaultRequest` fill in what a container leaves out (noted in the
//! pod's `kubernetes.io/limit-ranger` annotation), then `min`, `max` and
//! `maxLimitRequestRatio` are checked per container and, for a `Pod`
//! limit, over the pod's containers; a pod outside them is refused with
//! 403 Forbidden and the plugin's words. A LimitRange's own defaults (a
//! container's default limit from `max`, its default request from the
//! default limit or `min`) are filled in when it is written
//! ([`default_limit_range`]). PersistentVolumeClaim limits are stored, not
//! enforced.

use serde_json::{Value, json};

use crate::{quota::Amount, resources::Resource, status::ApiError, store::Store};

/// The pod annotation that says what the plugin set.
const ANNOTATION: &str = "kubernetes.io/limit-ranger";

/// A LimitRange item's defaults, as kube-apiserver fills them in.
pub(crate) fn default_limit_range(object: &mut Value) {
    let Some(limits) = object["spec"]["limits"].as_array_mut() else {
        return;
    };
    for limit in limits.iter_mut().filter(|l| l["type"] == "Container") {
        for field in ["default", "defaultRequest"] {
            if !limit[field].is_object() {
                limit[field] = json!({});
            }
        }
        let fill = |limit: &mut Value, to: &str, from: &str| {
            let source = limit[from].as_object().cloned().unwrap_or_default();
            for (key, value) in source {
                if limit[to].get(&key).is_none() {
                    limit[to][key] = value;
                }
            }
        };
        fill(limit, "default", "max");
        fill(limit, "defaultRequest", "default");
        fill(limit, "defaultRequest", "min");
    }
}

/// What kube-apiserver refuses in a LimitRange's `spec`: a type that is
/// not one, a type twice, resource names its type does not take, a `Pod`
/// limit with defaults, a claim limit without a storage bound, and bounds
/// that contradict each other (min above max, a default outside them, a
/// ratio below 1 or above max/min). Checked after the range's own
/// defaults are filled in, as there.
pub(crate) fn problems(spec: &Value, out: &mut Vec<(String, String)>) {
    let mut types = std::collections::BTreeSet::new();
    for (i, limit) in spec["limits"].as_array().into_iter().flatten().enumerate() {
        let at = format!("spec.limits[{i}]");
        let kind = limit["type"].as_str().unwrap_or_default();
        let whys = crate::names::qualified_name(kind);
        if !whys.is_empty() {
            out.extend(whys.into_iter().map(|w| {
                (
                    format!("{at}.type"),
                    format!("Invalid value: {kind:?}: {w}"),
                )
            }));
        } else if !kind.contains('/')
            && !matches!(kind, "Pod" | "Container" | "PersistentVolumeClaim")
        {
            out.push((
                format!("{at}.type"),
                format!(
                    "Invalid value: {kind:?}: must be a standard limit type or fully qualified"
                ),
            ));
        }
        if !types.insert(kind) {
            out.push((format!("{at}.type"), format!("Duplicate value: {kind:?}")));
        }
        let name_problems = |name: &str, path: &str| {
            if matches!(kind, "Pod" | "Container") {
                crate::names::container_resource_name(name, path)
            } else {
                crate::names::resource_name(name, path)
            }
        };
        let mut parts = vec!["max", "min"];
        if kind == "Pod" {
            for field in ["default", "defaultRequest"] {
                if limit[field].as_object().is_some_and(|m| !m.is_empty()) {
                    out.push((
                        format!("{at}.{field}"),
                        "Forbidden: may not be specified when `type` is 'Pod'".to_owned(),
                    ));
                }
            }
        } else {
            parts.extend(["default", "defaultRequest"]);
        }
        if kind == "PersistentVolumeClaim"
            && limit["min"]["storage"].is_null()
            && limit["max"]["storage"].is_null()
        {
            out.push((
                format!("{at}.limits"),
                "Required value: either minimum or maximum storage value is required, but neither was provided"
                    .to_owned(),
            ));
        }
        parts.push("maxLimitRequestRatio");
        let mut keys = std::collections::BTreeSet::new();
        for part in &parts {
            for key in limit[*part]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, _)| k)
            {
                out.extend(name_problems(key, &format!("{at}.{part}[{key}]")));
                keys.insert(key.clone());
            }
        }
        for key in keys {
            let found = |part: &str| -> Option<(Amount, String)> {
                if kind == "Pod" && part.starts_with("default") {
                    return None;
                }
                let text = limit[part][&key].as_str()?;
                Some((Amount::parse(text)?, text.to_owned()))
            };
            let (min, max) = (found("min"), found("max"));
            let (default, request) = (found("default"), found("defaultRequest"));
            let ratio = found("maxLimitRequestRatio");
            let mut invalid = |part: &str, value: &str, why: String| {
                out.push((
                    format!("{at}.{part}[{key}]"),
                    format!("Invalid value: {value:?}: {why}"),
                ));
            };
            let above = |a: &Option<(Amount, String)>, b: &Option<(Amount, String)>| match (a, b) {
                (Some((a, _)), Some((b, _))) => a.nanos() > b.nanos(),
                _ => false,
            };
            let text = |a: &Option<(Amount, String)>| {
                a.as_ref().map(|(_, t)| t.clone()).unwrap_or_default()
            };
            if above(&min, &max) {
                invalid(
                    "min",
                    &text(&min),
                    format!(
                        "min value {} is greater than max value {}",
                        text(&min),
                        text(&max)
                    ),
                );
            }
            if above(&min, &request) {
                invalid(
                    "defaultRequest",
                    &text(&request),
                    format!(
                        "min value {} is greater than default request value {}",
                        text(&min),
                        text(&request)
                    ),
                );
            }
            if above(&request, &max) {
                invalid(
                    "defaultRequest",
                    &text(&request),
                    format!(
                        "default request value {} is greater than max value {}",
                        text(&request),
                        text(&max)
                    ),
                );
            }
            if above(&request, &default) {
                invalid(
                    "defaultRequest",
                    &text(&request),
                    format!(
                        "default request value {} is greater than default limit value {}",
                        text(&request),
                        text(&default)
                    ),
                );
            }
            if above(&min, &default) {
                invalid(
                    "default",
                    &text(&min),
                    format!(
                        "min value {} is greater than default value {}",
                        text(&min),
                        text(&default)
                    ),
                );
            }
            if above(&default, &max) {
                invalid(
                    "default",
                    &text(&max),
                    format!(
                        "default value {} is greater than max value {}",
                        text(&default),
                        text(&max)
                    ),
                );
            }
            if let Some((r, shown)) = &ratio {
                if r.nanos() < 1_000_000_000 {
                    invalid(
                        "maxLimitRequestRatio",
                        shown,
                        format!("ratio {shown} is less than 1"),
                    );
                }
                if let (Some((lo, _)), Some((hi, _))) = (&min, &max) {
                    // In thousandths, as the Go code compares them.
                    let milli = |a: &Amount| (a.nanos().div_ceil(1_000_000)) as f64;
                    let limit_ratio = milli(hi) / milli(lo);
                    if milli(r) / 1000.0 > limit_ratio {
                        invalid(
                            "maxLimitRequestRatio",
                            shown,
                            format!("ratio {shown} is greater than max/min = {limit_ratio:.6}"),
                        );
                    }
                }
            }
            // What may not be overcommitted (hugepages, extended
            // resources) has one default for requests and limits.
            let overcommit = crate::names::native(&key) && !key.starts_with("hugepages-");
            if let (false, Some((d, dt)), Some((q, qt))) = (overcommit, &default, &request)
                && d.nanos() != q.nanos()
            {
                invalid(
                    "defaultRequest",
                    qt,
                    format!("default value {dt} must equal to defaultRequest value {qt} in {key}"),
                );
            }
        }
    }
}

/// The LimitRanges of `namespace`, parsed.
fn ranges(store: &Store, namespace: &str) -> Vec<Value> {
    crate::quota::core_objects(store, "limitranges", namespace)
}

/// Whether `namespace` has a LimitRange: its pods are then created one by
/// one, each admitted under its own name.
pub(crate) fn any(store: &Store, namespace: &str) -> bool {
    !namespace.is_empty() && !ranges(store, namespace).is_empty()
}

/// Fills in and checks the resources of pod `object`, named `name`, being
/// created in `namespace`.
///
/// # Errors
/// 403 Forbidden, worded as the LimitRanger plugin words it.
pub(crate) fn admit(
    store: &Store,
    res: &Resource,
    namespace: &str,
    name: &str,
    object: &mut Value,
) -> Result<(), ApiError> {
    if !(res.group.is_empty() && res.plural == "pods") || namespace.is_empty() {
        return Ok(());
    }
    let ranges = ranges(store, namespace);
    if ranges.is_empty() {
        return Ok(());
    }
    let items: Vec<&Value> = ranges
        .iter()
        .filter_map(|r| r["spec"]["limits"].as_array())
        .flatten()
        .collect();
    let mut set: Vec<String> = Vec::new();
    for item in items.iter().filter(|l| l["type"] == "Container") {
        for (list, kind) in [
            ("containers", "container"),
            ("initContainers", "init container"),
        ] {
            let Some(containers) = object["spec"].get_mut(list).and_then(Value::as_array_mut)
            else {
                continue;
            };
            for c in containers {
                let mut filled = |part: &str, from: &str| {
                    let mut keys = Vec::new();
                    for (key, value) in item[from].as_object().into_iter().flatten() {
                        if c["resources"][part].get(key).is_none() {
                            if !c["resources"][part].is_object() {
                                c["resources"][part] = json!({});
                            }
                            c["resources"][part][key] = value.clone();
                            keys.push(key.clone());
                        }
                    }
                    keys.sort();
                    keys
                };
                let limits = filled("limits", "default");
                let requests = filled("requests", "defaultRequest");
                let container = c["name"].as_str().unwrap_or_default();
                for (keys, what) in [(requests, "request"), (limits, "limit")] {
                    if !keys.is_empty() {
                        set.push(format!("{} {what} for {kind} {container}", keys.join(", ")));
                    }
                }
            }
        }
    }
    if !set.is_empty() {
        if !object["metadata"]["annotations"].is_object() {
            object["metadata"]["annotations"] = json!({});
        }
        object["metadata"]["annotations"][ANNOTATION] =
            json!(format!("LimitRanger plugin set: {}", set.join("; ")));
        // The pod's QoS class follows what it now states.
        if object["status"]["qosClass"].is_string() {
            object["status"]["qosClass"] = json!(crate::defaults::qos_class(&object["spec"]));
        }
    }
    let mut errors: Vec<String> = Vec::new();
    for item in &items {
        match item["type"].as_str() {
            Some("Container") => {
                for list in ["containers", "initContainers"] {
                    for c in object["spec"][list].as_array().into_iter().flatten() {
                        check(item, "Container", &c["resources"], &mut errors);
                    }
                }
            }
            Some("Pod") => {
                check(item, "Pod", &pod_resources(&object["spec"]), &mut errors);
            }
            _ => {}
        }
    }
    if errors.is_empty() {
        return Ok(());
    }
    let why = if errors.len() == 1 {
        errors.remove(0)
    } else {
        format!("[{}]", errors.join(", "))
    };
    Err(ApiError::forbidden_object("", "pods", name, &why))
}

/// A pod's requests and limits over its containers, as Kubernetes sums
/// them (see [`crate::quota::pod_amount`]).
fn pod_resources(spec: &Value) -> Value {
    let mut out = json!({"requests": {}, "limits": {}});
    for part in ["requests", "limits"] {
        let mut keys: Vec<String> = ["containers", "initContainers"]
            .iter()
            .filter_map(|f| spec[*f].as_array())
            .flatten()
            .filter_map(|c| c["resources"][part].as_object())
            .flat_map(|r| r.keys().cloned())
            .collect();
        keys.sort();
        keys.dedup();
        for key in keys {
            out[part][&key] = json!(crate::quota::pod_amount(spec, part, &key).to_string());
        }
    }
    out
}

/// The constraints of one LimitRange item on `resources` (a container's,
/// or a pod's totals), as `limit_type` names them.
fn check(item: &Value, limit_type: &str, resources: &Value, errors: &mut Vec<String>) {
    let amount = |part: &str, key: &str| resources[part][key].as_str().and_then(Amount::parse);
    let entries = |field: &str| {
        item[field]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), Amount::parse(v.as_str()?)?)))
            .collect::<Vec<_>>()
    };
    for (key, min) in entries("min") {
        match amount("requests", &key) {
            None => errors.push(format!(
                "minimum {key} usage per {limit_type} is {min}.  No request is specified"
            )),
            Some(request) if request.nanos() < min.nanos() => errors.push(format!(
                "minimum {key} usage per {limit_type} is {min}, but request is {request}"
            )),
            Some(_) => {}
        }
    }
    for (key, max) in entries("max") {
        match amount("limits", &key) {
            None => errors.push(format!(
                "maximum {key} usage per {limit_type} is {max}.  No limit is specified"
            )),
            Some(limit) if limit.nanos() > max.nanos() => errors.push(format!(
                "maximum {key} usage per {limit_type} is {max}, but limit is {limit}"
            )),
            Some(_) => {}
        }
    }
    for (key, ratio) in entries("maxLimitRequestRatio") {
        let (request, limit) = (amount("requests", &key), amount("limits", &key));
        match (request, limit) {
            (_, None) => errors.push(format!(
                "{key} max limit to request ratio per {limit_type} is {ratio}, but no limit is specified"
            )),
            (None, _) => errors.push(format!(
                "{key} max limit to request ratio per {limit_type} is {ratio}, but no request is specified or request is 0"
            )),
            (Some(request), _) if request.nanos() == 0 => errors.push(format!(
                "{key} max limit to request ratio per {limit_type} is {ratio}, but no request is specified or request is 0"
            )),
            (Some(request), Some(limit)) => {
                let observed = limit.nanos() as f64 / request.nanos() as f64;
                if observed > ratio.nanos() as f64 / 1e9 {
                    errors.push(format!(
                        "{key} max limit to request ratio per {limit_type} is {ratio}, but provided ratio is {observed:.6}"
                    ));
                }
            }
        }
    }
}
