//! What kube-apiserver refuses with 422 Invalid in the built-in kinds'
//! fields that Sluice, kubectl and common charts write: label values, a
//! workload's replicas, its selector against its template's labels, its
//! containers' names, images and ports, a Service's type and ports, the
//! keys of ConfigMaps and Secrets and those a Secret's type requires, an
//! Ingress path's `pathType` and a CRD version's schema. Each problem
//! is a `(field path, message)` as kube-apiserver words it, so a client
//! sees the same `causes[].field`.
//!
//! A custom resource is also checked against its CRD's structural schema
//! ([`crate::schema`]).
//!
//! This is a subset of the real validation: an object it lets through may
//! still be refused by a real API server (see the README's simulator
//! section), but one it refuses is refused there too.

use serde_json::Value;

use crate::resources::Resource;

/// The problems of `object` (defaulted, as it would be stored) of `res`.
pub(crate) fn problems(res: &Resource, object: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    labels(&object["metadata"]["labels"], "metadata.labels", &mut out);
    // All annotations together: at most 256 KiB (what breaks `kubectl
    // apply` of a big ConfigMap, whose last-applied copy is one).
    if text_size(&object["metadata"]["annotations"]) > 262_144 {
        out.push((
            "metadata.annotations".to_owned(),
            "Too long: may not be more than 262144 bytes".to_owned(),
        ));
    }
    match (res.group.as_str(), res.plural.as_str()) {
        ("apps", "deployments") => {
            workload(object, &mut out);
            strategy(object, &mut out);
        }
        ("apps", "replicasets" | "daemonsets") => workload(object, &mut out),
        ("batch", "jobs") => job(&object["spec"], "spec", &mut out),
        ("apps", "statefulsets") => {
            workload(object, &mut out);
            let update = &object["spec"]["updateStrategy"];
            if update["type"] == "OnDelete" && update["rollingUpdate"].is_object() {
                let r = &update["rollingUpdate"];
                out.push((
                    "spec.updateStrategy.rollingUpdate".to_owned(),
                    format!(
                        "Invalid value: {{\"Partition\":{},\"MaxUnavailable\":{}}}: only allowed for updateStrategy 'RollingUpdate'",
                        r["partition"],
                        r["maxUnavailable"]
                    ),
                ));
            }
        }
        ("", "pods") => pod_spec(&object["spec"], "spec", &mut out),
        ("", "resourcequotas") => crate::quota::spec_problems(&object["spec"], &mut out),
        ("", "limitranges") => crate::limits::problems(&object["spec"], &mut out),
        ("", "services") => {
            labels(&object["spec"]["selector"], "spec.selector", &mut out);
            service(object, &mut out);
        }
        ("policy", "poddisruptionbudgets") => {
            label_selector(&object["spec"]["selector"], "spec.selector", &mut out);
        }
        ("networking.k8s.io", "networkpolicies") => {
            label_selector(&object["spec"]["podSelector"], "spec.podSelector", &mut out);
        }
        ("", "configmaps") => {
            keys(object, &["data", "binaryData"], &mut out);
            if text_size(&object["data"]) + text_size(&object["binaryData"]) > 1_048_576 {
                // kube-apiserver names no field but the list itself.
                out.push((
                    "[]".to_owned(),
                    "Too long: may not be more than 1048576 bytes".to_owned(),
                ));
            }
        }
        ("", "secrets") => {
            keys(object, &["data"], &mut out);
            secret_type(object, &mut out);
        }
        ("networking.k8s.io", "ingresses") => ingress(object, &mut out),
        ("batch", "cronjobs") => {
            job(
                &object["spec"]["jobTemplate"]["spec"],
                "spec.jobTemplate.spec",
                &mut out,
            );
            if let Some(schedule) = object["spec"]["schedule"].as_str()
                && let Err(why) = cron_schedule(schedule)
            {
                out.push((
                    "spec.schedule".to_owned(),
                    format!("Invalid value: {schedule:?}: {why}"),
                ));
            }
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => crd(object, &mut out),
        _ => {}
    }
    if let Some(schema) = &res.schema {
        let found = crate::schema::problems(object, schema);
        // kube-apiserver runs a CRD's CEL rules only on an object without
        // such problems, and says when it skipped them (in a cause with no
        // field). The simulator runs no CEL, but says the same.
        let blocking = found.iter().any(|(_, m)| {
            m.contains(" in body must be of type ")
                || [
                    "Required value",
                    "Unsupported value",
                    "Too long",
                    "Too many",
                ]
                .iter()
                .any(|start| m.starts_with(start))
        });
        out.extend(found);
        if blocking && has_rules(schema) {
            out.push((
                "<nil>".to_owned(),
                "Invalid value: null: some validation rules were not checked because the object was invalid; correct the existing errors to complete validation".to_owned(),
            ));
        }
    }
    out
}

/// The bytes of a map of text: its keys and values together.
fn text_size(map: &Value) -> usize {
    map.as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
        .sum()
}

/// Whether a schema has CEL rules (`x-kubernetes-validations`) anywhere.
/// The problems of replacing `old` with `new` (defaulted) of `res`: the
/// fields kube-apiserver keeps as they were.
/// - a Deployment's, ReplicaSet's or DaemonSet's `spec.selector`;
/// - a StatefulSet's spec but for its replicas, template, update strategy
///   and the few fields its validation lets change;
/// - a ConfigMap's or Secret's data once `immutable: true`, and that mark;
/// - a Pod's spec but for its images and the few fields an update may
///   change;
/// - a Secret's `type`.
pub(crate) fn update_problems(res: &Resource, old: &Value, new: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let forbidden_frozen = "Forbidden: field is immutable when `immutable` is set";
    match (res.group.as_str(), res.plural.as_str()) {
        ("", "resourcequotas") => out.extend(crate::quota::scopes_changed(old, new)),
        ("apps", "deployments" | "replicasets" | "daemonsets") => {
            let (before, after) = (&old["spec"]["selector"], &new["spec"]["selector"]);
            if before != after {
                out.push((
                    "spec.selector".to_owned(),
                    format!(
                        "Invalid value: v1.LabelSelector{{MatchLabels:{}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}}: field is immutable",
                        go_map(&after["matchLabels"])
                    ),
                ));
            }
        }
        ("apps", "statefulsets") => {
            let rest = |o: &Value| {
                let mut spec = o["spec"].clone();
                if let Some(map) = spec.as_object_mut() {
                    for field in [
                        "replicas",
                        "template",
                        "updateStrategy",
                        "minReadySeconds",
                        "ordinals",
                        "revisionHistoryLimit",
                        "persistentVolumeClaimRetentionPolicy",
                    ] {
                        map.remove(field);
                    }
                }
                spec
            };
            if rest(old) != rest(new) {
                out.push((
                    "spec".to_owned(),
                    "Forbidden: updates to statefulset spec for fields other than 'replicas', \
                     'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', \
                     'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"
                        .to_owned(),
                ));
            }
        }
        ("", "pods") if pod_spec_changed(&old["spec"], &new["spec"]) => {
            out.push((
                "spec".to_owned(),
                "Forbidden: pod updates may not change fields other than \
                     `spec.containers[*].image`,`spec.initContainers[*].image`,\
                     `spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing \
                     tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if \
                     it was previously negative)"
                    .to_owned(),
            ));
        }
        ("rbac.authorization.k8s.io", "rolebindings" | "clusterrolebindings")
            if old["roleRef"] != new["roleRef"] =>
        {
            out.push((
                "roleRef".to_owned(),
                format!(
                    "Invalid value: rbac.RoleRef{{APIGroup:{:?}, Kind:{:?}, Name:{:?}}}: cannot change roleRef",
                    new["roleRef"]["apiGroup"].as_str().unwrap_or_default(),
                    new["roleRef"]["kind"].as_str().unwrap_or_default(),
                    new["roleRef"]["name"].as_str().unwrap_or_default()
                ),
            ));
        }
        ("", "services") => {
            let (before, after) = (&old["spec"]["clusterIP"], &new["spec"]["clusterIP"]);
            if before.as_str().is_some_and(|ip| !ip.is_empty())
                && after.as_str().is_some_and(|ip| !ip.is_empty())
                && before != after
            {
                out.push((
                    "spec.clusterIPs[0]".to_owned(),
                    format!("Invalid value: []string{{{after}}}: may not change once set"),
                ));
            }
        }
        ("batch", "jobs") if old["spec"]["template"] != new["spec"]["template"] => {
            out.push((
                "spec.template".to_owned(),
                "Invalid value: field is immutable".to_owned(),
            ));
        }
        ("", "configmaps" | "secrets") => {
            if old["immutable"] == Value::Bool(true) {
                if new["immutable"] != Value::Bool(true) {
                    out.push(("immutable".to_owned(), forbidden_frozen.to_owned()));
                }
                for field in ["data", "binaryData"] {
                    let empty =
                        |v: &Value| v.is_null() || v.as_object().is_some_and(|m| m.is_empty());
                    let (a, b) = (&old[field], &new[field]);
                    if a != b && !(empty(a) && empty(b)) {
                        out.push((field.to_owned(), forbidden_frozen.to_owned()));
                    }
                }
            }
            if res.plural == "secrets" && old["type"] != new["type"] {
                out.push((
                    "type".to_owned(),
                    format!(
                        "Invalid value: {:?}: field is immutable",
                        new["type"].as_str().unwrap_or_default()
                    ),
                ));
            }
        }
        _ => {}
    }
    out
}

/// Whether a Pod's spec changed from `old` to `new` beyond what an update
/// may change: its containers' images, `activeDeadlineSeconds`,
/// `terminationGracePeriodSeconds`, tolerations added to `old`'s and
/// scheduling gates removed from them.
fn pod_spec_changed(old: &Value, new: &Value) -> bool {
    let mut spec = new.clone();
    for list in ["containers", "initContainers"] {
        if let (Some(now), Some(before)) = (spec[list].as_array_mut(), old[list].as_array()) {
            for (c, b) in now.iter_mut().zip(before) {
                c["image"] = b["image"].clone();
            }
        }
    }
    for field in ["activeDeadlineSeconds", "terminationGracePeriodSeconds"] {
        spec[field] = old[field].clone();
    }
    let within = |small: &Value, big: &Value| {
        small.as_array().is_none_or(|s| {
            s.iter()
                .all(|x| big.as_array().is_some_and(|b| b.contains(x)))
        })
    };
    if within(&old["tolerations"], &spec["tolerations"]) {
        spec["tolerations"] = old["tolerations"].clone();
    }
    if within(&spec["schedulingGates"], &old["schedulingGates"]) {
        spec["schedulingGates"] = old["schedulingGates"].clone();
    }
    if let Some(map) = spec.as_object_mut() {
        map.retain(|_, v| !v.is_null());
    }
    spec != *old
}

/// Whether `schedule` reads as a standard cron schedule, as the parser
/// kube-apiserver uses reads one: five fields (minute, hour, day of month,
/// month, day of week) of `*`, `?`, numbers, names, ranges, steps and
/// lists, or a descriptor (`@hourly`, `@every 1h30m`, ...); no time zone.
fn cron_schedule(schedule: &str) -> Result<(), String> {
    if schedule.contains("TZ") {
        return Err("cannot use TZ or CRON_TZ in schedule, use timeZone field instead".into());
    }
    let schedule = schedule.trim();
    if let Some(descriptor) = schedule.strip_prefix('@') {
        return match descriptor {
            "yearly" | "annually" | "monthly" | "weekly" | "daily" | "midnight" | "hourly" => {
                Ok(())
            }
            every if every.starts_with("every ") => go_duration(every["every ".len()..].trim())
                .then_some(())
                .ok_or_else(|| format!("failed to parse duration {schedule}")),
            _ => Err(format!("unrecognized descriptor: {schedule}")),
        };
    }
    let fields: Vec<&str> = schedule.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "expected exactly 5 fields, found {}: [{}]",
            fields.len(),
            fields.join(" ")
        ));
    }
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
    let bounds: [(u32, u32, &[&str]); 5] = [
        (0, 59, &[]),
        (0, 23, &[]),
        (1, 31, &[]),
        (1, 12, &MONTHS),
        (0, 6, &DAYS),
    ];
    for (field, (min, max, names)) in fields.iter().zip(bounds) {
        for part in field.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((r, s)) => (r, Some(s)),
                None => (part, None),
            };
            let value = |text: &str| -> Result<u32, String> {
                if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
                    return Ok(i as u32 + min);
                }
                text.parse::<u32>().map_err(|_| {
                    format!("failed to parse int from {text}: strconv.Atoi: parsing {text:?}: invalid syntax")
                })
            };
            let (start, end) = match range {
                "*" | "?" => (min, max),
                r => match r.split_once('-') {
                    Some((a, b)) => (value(a)?, value(b)?),
                    None => {
                        let v = value(r)?;
                        (v, if step.is_some() { max } else { v })
                    }
                },
            };
            if start < min {
                return Err(format!(
                    "beginning of range ({start}) below minimum ({min}): {part}"
                ));
            }
            if end > max {
                return Err(format!(
                    "end of range ({end}) above maximum ({max}): {part}"
                ));
            }
            if start > end {
                return Err(format!(
                    "beginning of range ({start}) beyond end of range ({end}): {part}"
                ));
            }
            if let Some(step) = step {
                match step.parse::<u32>() {
                    Ok(0) => {
                        return Err(format!("step of range should be a positive number: {part}"));
                    }
                    Ok(_) => {}
                    Err(_) => {
                        return Err(format!(
                            "failed to parse int from {step}: strconv.Atoi: parsing {step:?}: invalid syntax"
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Whether `text` reads as a Go duration (`90s`, `1h30m`, `1.5h`).
fn go_duration(text: &str) -> bool {
    let mut rest = text.strip_prefix(['+', '-']).unwrap_or(text);
    if rest == "0" {
        return true;
    }
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 || rest[..digits].parse::<f64>().is_err() {
            return false;
        }
        rest = &rest[digits..];
        let Some(unit) = ["ns", "us", "µs", "ms", "s", "m", "h"]
            .iter()
            .filter(|u| rest.starts_with(**u))
            .max_by_key(|u| u.len())
        else {
            return false;
        };
        rest = &rest[unit.len()..];
    }
    true
}

fn has_rules(schema: &Value) -> bool {
    match schema {
        Value::Object(map) => {
            map.contains_key("x-kubernetes-validations") || map.values().any(has_rules)
        }
        Value::Array(items) => items.iter().any(has_rules),
        _ => false,
    }
}

/// A valid label value: at most 63 characters, alphanumerics, `-`, `_`
/// and `.`, beginning and ending with an alphanumeric (or empty).
fn label_value_ok(v: &str) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    v.is_empty()
        || (v.len() <= 63
            && v.chars().all(|c| alnum(c) || matches!(c, '-' | '_' | '.'))
            && v.starts_with(alnum)
            && v.ends_with(alnum))
}

fn labels(labels: &Value, path: &str, out: &mut Vec<(String, String)>) {
    let Some(map) = labels.as_object() else {
        return;
    };
    for (key, value) in map {
        for why in crate::names::qualified_name(key) {
            out.push((path.to_owned(), format!("Invalid value: {key:?}: {why}")));
        }
        let text = value.as_str().unwrap_or_default();
        if !label_value_ok(text) {
            out.push((
                path.to_owned(),
                format!(
                    "Invalid value: {text:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
                ),
            ));
        }
    }
}

/// A label selector's keys and values: its `matchLabels` as labels, each
/// expression's key as a label key.
fn label_selector(selector: &Value, path: &str, out: &mut Vec<(String, String)>) {
    labels(
        &selector["matchLabels"],
        &format!("{path}.matchLabels"),
        out,
    );
    for (i, (key, _, _)) in crate::selector::expressions(selector).iter().enumerate() {
        for why in crate::names::qualified_name(key) {
            out.push((
                format!("{path}.matchExpressions[{i}].key"),
                format!("Invalid value: {key:?}: {why}"),
            ));
        }
    }
}

fn workload(object: &Value, out: &mut Vec<(String, String)>) {
    let spec = &object["spec"];
    if let Some(replicas) = spec["replicas"].as_i64()
        && replicas < 0
    {
        out.push((
            "spec.replicas".into(),
            format!("Invalid value: {replicas}: must be greater than or equal to 0"),
        ));
    }
    let selector = &spec["selector"];
    let template_labels = &spec["template"]["metadata"]["labels"];
    labels(template_labels, "spec.template.metadata.labels", out);
    let match_labels = selector["matchLabels"].as_object();
    let expressions = selector["matchExpressions"]
        .as_array()
        .is_some_and(|e| !e.is_empty());
    if match_labels.is_none_or(serde_json::Map::is_empty) && !expressions {
        // A ReplicaSet made by a Deployment always has one; only a bare
        // workload without a selector gets here.
        out.push(("spec.selector".into(), "Required value".into()));
    } else {
        // The whole selector, its expressions too, must select the
        // template's labels.
        if !crate::admission::selects(selector, template_labels) {
            out.push((
                "spec.template.metadata.labels".into(),
                // The labels as Go's JSON writes a map (sorted keys).
                format!(
                    "Invalid value: {}: `selector` does not match template `labels`",
                    if template_labels.is_object() {
                        template_labels.to_string()
                    } else {
                        "null".to_owned()
                    }
                ),
            ));
        }
    }
    let claims: Vec<&str> = spec["volumeClaimTemplates"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["metadata"]["name"].as_str())
        .collect();
    pod_spec_with(
        &spec["template"]["spec"],
        "spec.template.spec",
        &claims,
        out,
    );
    let restart = spec["template"]["spec"]["restartPolicy"]
        .as_str()
        .unwrap_or("Always");
    if restart != "Always" && spec["template"].is_object() {
        out.push((
            "spec.template.spec.restartPolicy".into(),
            format!("Unsupported value: {restart:?}: supported values: \"Always\""),
        ));
    }
}

/// A Deployment's strategy: a known type, and a rolling update that can
/// move (not both surge and unavailability zero).
fn strategy(object: &Value, out: &mut Vec<(String, String)>) {
    let strategy = &object["spec"]["strategy"];
    let kind = strategy["type"].as_str().unwrap_or("RollingUpdate");
    if kind != "RollingUpdate" && kind != "Recreate" {
        out.push((
            "spec.strategy".into(),
            format!(
                "Unsupported value: {kind:?}: supported values: \"Recreate\", \"RollingUpdate\""
            ),
        ));
    }
    let rolling = &strategy["rollingUpdate"];
    let zero = |v: &Value| v == &Value::from(0) || v == "0%" || v == "0";
    if kind == "RollingUpdate" && zero(&rolling["maxSurge"]) && zero(&rolling["maxUnavailable"]) {
        out.push((
            "spec.strategy.rollingUpdate.maxUnavailable".into(),
            format!(
                "Invalid value: {}: may not be 0 when `maxSurge` is 0",
                rolling["maxUnavailable"]
            ),
        ));
    }
}

/// A Job's pods end: they restart `OnFailure` or `Never`.
fn job(spec: &Value, path: &str, out: &mut Vec<(String, String)>) {
    let template = &spec["template"]["spec"];
    if !template.is_object() {
        return;
    }
    pod_spec(template, &format!("{path}.template.spec"), out);
    let restart = template["restartPolicy"].as_str().unwrap_or("Always");
    if restart != "OnFailure" && restart != "Never" {
        out.push((
            format!("{path}.template.spec.restartPolicy"),
            format!("Unsupported value: {restart:?}: supported values: \"OnFailure\", \"Never\""),
        ));
    }
}

/// A label map as Go's `%#v` prints it, as kube-apiserver's message does.
fn go_map(labels: &Value) -> String {
    let pairs: Vec<String> = labels
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k:?}:{:?}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    format!("map[string]string{{{}}}", pairs.join(", "))
}

fn pod_spec(spec: &Value, path: &str, out: &mut Vec<(String, String)>) {
    pod_spec_with(spec, path, &[], out);
}

/// [`pod_spec`], where `claims` are volumes too (a StatefulSet's claim
/// templates).
fn pod_spec_with(spec: &Value, path: &str, claims: &[&str], out: &mut Vec<(String, String)>) {
    labels(&spec["nodeSelector"], &format!("{path}.nodeSelector"), out);
    let Some(containers) = spec["containers"].as_array() else {
        out.push((format!("{path}.containers"), "Required value".into()));
        return;
    };
    if containers.is_empty() {
        out.push((format!("{path}.containers"), "Required value".into()));
    }
    // Container names are unique across containers and init containers.
    let mut names = std::collections::BTreeSet::new();
    let volumes: std::collections::BTreeSet<&str> = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .chain(claims.iter().copied())
        .collect();
    for (list, key) in [
        (containers.as_slice(), "containers"),
        (
            spec["initContainers"]
                .as_array()
                .map_or(&[][..], Vec::as_slice),
            "initContainers",
        ),
    ] {
        for (i, c) in list.iter().enumerate() {
            let at = format!("{path}.{key}[{i}]");
            let name = c["name"].as_str().unwrap_or_default();
            if name.is_empty() {
                out.push((format!("{at}.name"), "Required value".into()));
            } else if !crate::store::valid_label(name) {
                out.push((
                    format!("{at}.name"),
                    format!("Invalid value: {name:?}: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"),
                ));
            } else if !names.insert(name) {
                out.push((format!("{at}.name"), format!("Duplicate value: {name:?}")));
            }
            for (j, mount) in c["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                let volume = mount["name"].as_str().unwrap_or_default();
                if !volumes.contains(volume) {
                    out.push((
                        format!("{at}.volumeMounts[{j}].name"),
                        format!("Not found: {volume:?}"),
                    ));
                }
            }
            for (j, env) in c["env"].as_array().into_iter().flatten().enumerate() {
                if env["name"].as_str().is_none_or(str::is_empty) {
                    out.push((format!("{at}.env[{j}].name"), "Required value".into()));
                }
            }
            for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
                let p = &c[probe];
                let handled = ["exec", "httpGet", "tcpSocket", "grpc"]
                    .iter()
                    .any(|h| p[*h].is_object());
                if p.is_object() && !handled {
                    out.push((
                        format!("{at}.{probe}"),
                        "Required value: must specify a handler type".into(),
                    ));
                }
            }
            if c["image"].as_str().is_none_or(|s| s.trim().is_empty()) {
                out.push((format!("{at}.image"), "Required value".into()));
            }
            resources(&c["resources"], &at, out);
            for (j, port) in c["ports"].as_array().into_iter().flatten().enumerate() {
                if let Some(n) = port["containerPort"].as_i64()
                    && !(1..=65535).contains(&n)
                {
                    out.push((
                        format!("{at}.ports[{j}].containerPort"),
                        format!("Invalid value: {n}: must be between 1 and 65535, inclusive"),
                    ));
                }
            }
        }
    }
}

/// The keys of a ConfigMap's or Secret's maps: `[-._a-zA-Z0-9]+`, at
/// most 253 characters.
fn keys(object: &Value, maps: &[&str], out: &mut Vec<(String, String)>) {
    for map in maps {
        for key in object[*map]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            let ok = !key.is_empty()
                && key.len() <= 253
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
            if !ok {
                out.push((
                    format!("{map}[{key}]"),
                    format!(
                        "Invalid value: {key:?}: a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
                    ),
                ));
            }
        }
    }
}

/// The keys a Secret's type requires.
fn secret_type(object: &Value, out: &mut Vec<(String, String)>) {
    let needed: &[&str] = match object["type"].as_str() {
        Some("kubernetes.io/tls") => &["tls.crt", "tls.key"],
        Some("kubernetes.io/basic-auth") => &[],
        Some("kubernetes.io/dockerconfigjson") => &[".dockerconfigjson"],
        Some("kubernetes.io/ssh-auth") => &["ssh-privatekey"],
        _ => &[],
    };
    for key in needed {
        if object["data"].get(*key).is_none() {
            out.push((format!("data[{key}]"), "Required value".to_owned()));
        }
    }
}

fn service(object: &Value, out: &mut Vec<(String, String)>) {
    if let Some(kind) = object["spec"]["type"].as_str()
        && !matches!(
            kind,
            "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName"
        )
    {
        out.push((
            "spec.type".to_owned(),
            format!(
                "Unsupported value: {kind:?}: supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""
            ),
        ));
    }
    for (i, port) in object["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        if let Some(n) = port["port"].as_i64()
            && !(1..=65535).contains(&n)
        {
            out.push((
                format!("spec.ports[{i}].port"),
                format!("Invalid value: {n}: must be between 1 and 65535, inclusive"),
            ));
        }
        if let Some(n) = port["targetPort"].as_i64()
            && !(1..=65535).contains(&n)
        {
            out.push((
                format!("spec.ports[{i}].targetPort"),
                format!("Invalid value: {n}: must be between 1 and 65535, inclusive"),
            ));
        }
    }
    let ports = object["spec"]["ports"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    // With more than one port, each is named, and no two alike.
    let mut names = std::collections::BTreeSet::new();
    let mut numbers = std::collections::BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let name = port["name"].as_str().unwrap_or_default();
        if ports.len() > 1 && name.is_empty() {
            out.push((format!("spec.ports[{i}].name"), "Required value".to_owned()));
        } else if !name.is_empty() && !names.insert(name) {
            out.push((
                format!("spec.ports[{i}].name"),
                format!("Duplicate value: {name:?}"),
            ));
        }
        let key = (
            port["port"].as_i64(),
            port["protocol"].as_str().unwrap_or("TCP"),
        );
        if !numbers.insert(key) {
            out.push((
                format!("spec.ports[{i}]"),
                format!(
                    "Duplicate value: core.ServicePort{{Name:{name:?}, Protocol:{:?}, Port:{}}}",
                    key.1,
                    key.0.unwrap_or_default()
                ),
            ));
        }
    }
    let kind = object["spec"]["type"].as_str().unwrap_or("ClusterIP");
    if kind == "ExternalName" {
        if object["spec"]["externalName"]
            .as_str()
            .is_none_or(str::is_empty)
        {
            out.push(("spec.externalName".to_owned(), "Required value".to_owned()));
        }
    } else if ports.is_empty() && object["spec"]["clusterIP"] != "None" {
        out.push(("spec.ports".to_owned(), "Required value".to_owned()));
    }
}

/// Every Ingress path says how it matches.
fn ingress(object: &Value, out: &mut Vec<(String, String)>) {
    let rules = object["spec"]["rules"].as_array().into_iter().flatten();
    for (i, rule) in rules.enumerate() {
        let paths = rule["http"]["paths"].as_array().into_iter().flatten();
        for (j, path) in paths.enumerate() {
            if path["pathType"].as_str().is_none_or(str::is_empty) {
                out.push((
                    format!("spec.rules[{i}].http.paths[{j}].pathType"),
                    "Required value: pathType must be specified".to_owned(),
                ));
            }
        }
    }
}

/// Every version of an `apiextensions.k8s.io/v1` CRD has a schema.
fn crd(object: &Value, out: &mut Vec<(String, String)>) {
    let versions = object["spec"]["versions"].as_array().into_iter().flatten();
    for (i, version) in versions.enumerate() {
        if !version["schema"]["openAPIV3Schema"].is_object() {
            out.push((
                format!("spec.versions[{i}].schema.openAPIV3Schema"),
                "Required value: schemas are required".to_owned(),
            ));
        }
    }
}

/// A container's requests and limits: none negative, and no request above
/// its limit.
fn resources(resources: &Value, at: &str, out: &mut Vec<(String, String)>) {
    use crate::quota::Amount;
    for part in ["requests", "limits"] {
        for (key, value) in resources[part].as_object().into_iter().flatten() {
            if value
                .as_str()
                .is_some_and(|v| v.trim_start().starts_with('-'))
            {
                out.push((
                    format!("{at}.resources.{part}[{key}]"),
                    format!("Invalid value: {value}: must be greater than or equal to 0"),
                ));
            }
        }
    }
    for (key, request) in resources["requests"].as_object().into_iter().flatten() {
        let limit = &resources["limits"][key];
        let (Some(r), Some(l)) = (
            request.as_str().and_then(Amount::parse),
            limit.as_str().and_then(Amount::parse),
        ) else {
            continue;
        };
        if r.nanos() > l.nanos() {
            out.push((
                format!("{at}.resources.requests"),
                format!(
                    "Invalid value: {request}: must be less than or equal to {key} limit of {}",
                    limit.as_str().unwrap_or_default()
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn cron_schedules_read_as_the_standard_parser_reads_them() {
        for good in [
            "* * * * *",
            "*/5 0-23/2 1,15 JAN-dec sun-SAT",
            "0 3 ? * 1-5",
            "@hourly",
            "@every 1h30m",
            "@every 1.5s",
        ] {
            assert_eq!(cron_schedule(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("* * * *", "expected exactly 5 fields"),
            ("60 * * * *", "above maximum (59)"),
            ("0 0 0 * *", "below minimum (1)"),
            ("5-1 * * * *", "beyond end of range"),
            ("*/0 * * * *", "positive number"),
            ("x * * * *", "failed to parse int from x"),
            ("@fortnightly", "unrecognized descriptor"),
            ("@every soon", "failed to parse duration"),
            ("TZ=UTC 0 3 * * *", "use timeZone field"),
        ] {
            let err = cron_schedule(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    fn deployments() -> Resource {
        (*crate::resources::Registry::builtin()
            .get("apps", "deployments")
            .expect("deployments are served"))
        .clone()
    }

    fn deployment() -> Value {
        json!({"metadata": {"name": "web", "labels": {"app": "web"}},
               "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}},
                                     "spec": {"containers": [{"name": "web", "image": "web:1", "ports": [{"containerPort": 8080}]}]}}}})
    }

    #[test]
    fn a_valid_deployment_has_no_problem_and_each_bad_field_is_named() {
        let res = deployments();
        assert!(problems(&res, &deployment()).is_empty());
        let fields =
            |d: Value| -> Vec<String> { problems(&res, &d).into_iter().map(|(f, _)| f).collect() };
        let mut d = deployment();
        d["spec"]["replicas"] = json!(-1);
        assert_eq!(fields(d), ["spec.replicas"]);
        let mut d = deployment();
        d["spec"]["template"]["metadata"]["labels"] = json!({"app": "other"});
        assert_eq!(fields(d), ["spec.template.metadata.labels"]);
        let mut d = deployment();
        d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = json!(80800);
        assert_eq!(
            fields(d),
            ["spec.template.spec.containers[0].ports[0].containerPort"]
        );
        let mut d = deployment();
        d["spec"]["template"]["spec"]["containers"][0]
            .as_object_mut()
            .unwrap()
            .remove("image");
        assert_eq!(fields(d), ["spec.template.spec.containers[0].image"]);
        let mut d = deployment();
        d["metadata"]["labels"] = json!({"team": "a b"});
        assert_eq!(fields(d), ["metadata.labels"]);
    }

    #[test]
    fn the_messages_read_as_kube_apiservers() {
        let mut d = deployment();
        d["spec"]["replicas"] = json!(-1);
        d["spec"]["template"]["metadata"]["labels"] = json!({"app": "other"});
        let messages: Vec<String> = problems(&deployments(), &d)
            .into_iter()
            .map(|(_, m)| m)
            .collect();
        assert_eq!(
            messages,
            [
                "Invalid value: -1: must be greater than or equal to 0",
                "Invalid value: {\"app\":\"other\"}: `selector` does not match template `labels`",
            ]
        );
    }

    #[test]
    fn a_custom_resource_with_cel_rules_refused_for_its_types_says_they_were_skipped() {
        let mut widgets = deployments();
        widgets.group = "example.com".into();
        widgets.plural = "widgets".into();
        let schema = |rules: bool| {
            let mut replicas = json!({"type": "integer"});
            if rules {
                replicas["x-kubernetes-validations"] = json!([{"rule": "self >= 0"}]);
            }
            json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {"replicas": replicas}}}})
        };
        let object = json!({"metadata": {"name": "w"}, "spec": {"replicas": "two"}});
        widgets.schema = Some(std::sync::Arc::new(schema(true)));
        let fields: Vec<String> = problems(&widgets, &object)
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        assert_eq!(fields, ["spec.replicas", "<nil>"]);
        widgets.schema = Some(std::sync::Arc::new(schema(false)));
        let fields: Vec<String> = problems(&widgets, &object)
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        assert_eq!(fields, ["spec.replicas"], "no rules, no note");
    }
}
