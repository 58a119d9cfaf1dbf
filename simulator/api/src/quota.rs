//! ResourceQuota, as kube-apiserver's admission plugin enforces it and
//! kube-controller-manager's resource quota controller reports it.
//!
//! A create in a namespace with quotas is refused (403 Forbidden) when it
//! would take a quota's usage past its `status.hard`:
//! `exceeded quota: NAME, requested: ..., used: ..., limited: ...`, naming
//! only the resources exceeded; and a pod that leaves out a request or
//! limit a quota tracks is refused with `failed quota: NAME: must specify
//! ...`. A quota takes effect once its `status.hard` is written (by
//! [`status`], the controller's part, moments after it is made), as on a
//! real cluster. Usage is counted from the stored objects at each
//! admission, which is what the controller's `status.used` converges to.
//!
//! Tracked: object counts (`pods`, `services`, `configmaps`, `secrets`,
//! `persistentvolumeclaims`, `replicationcontrollers`, `resourcequotas`,
//! `services.loadbalancers`, `services.nodeports`, and `count/<resource>`
//! for every resource), pods' compute (`requests.cpu`/`cpu`,
//! `requests.memory`/`memory`, `limits.cpu`, `limits.memory`, and the same
//! for `ephemeral-storage`), and claims' `requests.storage`. Extended
//! resources are counted by their requests (`requests.example.com/gpu`).
//! A quota with `scopes` or a `scopeSelector` covers only the pods they
//! all match (`Terminating`, `BestEffort`, `PriorityClass`, ... and their
//! opposites), or the claims of a `VolumeAttributesClass`. An update is
//! checked for what it adds (a Service made a NodePort), pods' excepted,
//! as the plugin does. A quota's `spec` is validated as kube-apiserver
//! validates it ([`spec_problems`]).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::{
    defaults::{quantity_nanos, quantity_text},
    resources::Resource,
    status::ApiError,
    store::Store,
};

/// An amount in nano-units, and whether it is written in binary SI
/// (`Mi`, `Gi`) as the quantity it came from was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Amount {
    nanos: u128,
    binary: bool,
}

const NANO: u128 = 1_000_000_000;

impl Amount {
    fn count(n: u128) -> Self {
        Self {
            nanos: n * NANO,
            binary: false,
        }
    }

    /// A quantity's amount; `None` when it is not one.
    pub fn parse(text: &str) -> Option<Self> {
        quantity_nanos(text).map(|(nanos, binary)| Self { nanos, binary })
    }

    /// The amount in nano-units.
    pub(crate) fn nanos(self) -> u128 {
        self.nanos
    }

    /// The sum; written as the first is, as Kubernetes adds quantities.
    pub(crate) fn plus(self, other: Self) -> Self {
        Self {
            nanos: self.nanos.saturating_add(other.nanos),
            binary: if self.nanos == 0 {
                other.binary
            } else {
                self.binary
            },
        }
    }
}

impl std::fmt::Display for Amount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Whole bytes that no binary suffix writes are written plainly.
        let text = quantity_text(self.nanos, self.binary)
            .unwrap_or_else(|| (self.nanos / NANO).to_string());
        f.write_str(&text)
    }
}

/// Pods' compute resources a quota may track: the quota's name for it,
/// and where a container states it.
const COMPUTE: [(&str, &str, &str); 9] = [
    ("cpu", "requests", "cpu"),
    ("memory", "requests", "memory"),
    ("ephemeral-storage", "requests", "ephemeral-storage"),
    ("requests.cpu", "requests", "cpu"),
    ("requests.memory", "requests", "memory"),
    (
        "requests.ephemeral-storage",
        "requests",
        "ephemeral-storage",
    ),
    ("limits.cpu", "limits", "cpu"),
    ("limits.memory", "limits", "memory"),
    ("limits.ephemeral-storage", "limits", "ephemeral-storage"),
];

/// The core resources with a count of their own in a quota.
const COUNTED: [&str; 7] = [
    "pods",
    "services",
    "configmaps",
    "secrets",
    "persistentvolumeclaims",
    "replicationcontrollers",
    "resourcequotas",
];

/// What one object of `res` adds to a namespace's usage.
fn usage_of(res: &Resource, object: &Value) -> BTreeMap<String, Amount> {
    let mut usage = BTreeMap::new();
    let core = res.group.is_empty();
    let counted = if core {
        format!("count/{}", res.plural)
    } else {
        format!("count/{}.{}", res.plural, res.group)
    };
    usage.insert(counted, Amount::count(1));
    if core && COUNTED.contains(&res.plural.as_str()) {
        usage.insert(res.plural.clone(), Amount::count(1));
    }
    match (core, res.plural.as_str()) {
        (true, "pods") => {
            for (name, amount) in pod_compute(&object["spec"]) {
                usage.insert(name, amount);
            }
        }
        (true, "services") => {
            let kind = object["spec"]["type"].as_str().unwrap_or("ClusterIP");
            let ports = object["spec"]["ports"]
                .as_array()
                .map_or(0, |p| p.len() as u128);
            if kind == "LoadBalancer" {
                usage.insert("services.loadbalancers".into(), Amount::count(1));
            }
            // A LoadBalancer that allocates no node ports counts only the
            // ports given one.
            let given = object["spec"]["ports"].as_array().map_or(0, |p| {
                p.iter()
                    .filter(|p| p["nodePort"].as_u64().is_some_and(|n| n > 0))
                    .count() as u128
            });
            let allocates = object["spec"]["allocateLoadBalancerNodePorts"] != false;
            if kind == "NodePort" || (kind == "LoadBalancer" && allocates) {
                usage.insert("services.nodeports".into(), Amount::count(ports));
            } else if kind == "LoadBalancer" {
                usage.insert("services.nodeports".into(), Amount::count(given));
            }
        }
        (true, "persistentvolumeclaims") => {
            if let Some(storage) = object["spec"]["resources"]["requests"]["storage"]
                .as_str()
                .and_then(Amount::parse)
            {
                usage.insert("requests.storage".into(), storage);
            }
        }
        _ => {}
    }
    usage
}

/// A pod's total of one resource (`part` is `requests` or `limits`), as
/// Kubernetes sums it: its containers and sidecars (init containers with
/// `restartPolicy: Always`), or an init container with the sidecars
/// started before it, whichever is more.
pub(crate) fn pod_amount(spec: &Value, part: &str, resource: &str) -> Amount {
    let stated = |c: &Value| {
        c["resources"][part][resource]
            .as_str()
            .and_then(Amount::parse)
            .unwrap_or_default()
    };
    let mut sidecars = Amount::default();
    let mut most = Amount::default();
    for init in spec["initContainers"].as_array().into_iter().flatten() {
        if init["restartPolicy"] == "Always" {
            sidecars = sidecars.plus(stated(init));
        } else {
            let at = stated(init).plus(sidecars);
            if at.nanos > most.nanos {
                most = at;
            }
        }
    }
    let running = spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(stated)
        .fold(sidecars, Amount::plus);
    if most.nanos > running.nanos {
        most
    } else {
        running
    }
}

/// A pod's compute, as the quota counts it: each of [`COMPUTE`], and the
/// requests of extended resources (`requests.example.com/gpu`).
fn pod_compute(spec: &Value) -> Vec<(String, Amount)> {
    let mut out: Vec<(String, Amount)> = COMPUTE
        .iter()
        .map(|(name, part, resource)| ((*name).to_owned(), pod_amount(spec, part, resource)))
        .collect();
    let mut extended: Vec<String> = ["initContainers", "containers"]
        .iter()
        .filter_map(|f| spec[*f].as_array())
        .flatten()
        .filter_map(|c| c["resources"]["requests"].as_object())
        .flat_map(|r| r.keys().filter(|k| k.contains('/')).cloned())
        .collect();
    extended.sort();
    extended.dedup();
    for key in extended {
        let amount = pod_amount(spec, "requests", &key);
        out.push((format!("requests.{key}"), amount));
    }
    out
}

/// Whether a pod still counts: one that ended does not.
fn counts(res: &Resource, object: &Value) -> bool {
    !(res.group.is_empty()
        && res.plural == "pods"
        && matches!(
            object["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed")
        ))
}

/// The resource a quota's name `name` counts objects of.
fn counted_resource(store: &Store, name: &str) -> Option<std::sync::Arc<Resource>> {
    if let Some(rest) = name.strip_prefix("count/") {
        let (plural, group) = rest.split_once('.').unwrap_or((rest, ""));
        return store.resource(group, plural);
    }
    let plural = match name {
        "services.loadbalancers" | "services.nodeports" => "services",
        "requests.storage" => "persistentvolumeclaims",
        n if COMPUTE.iter().any(|(c, _, _)| *c == n) => "pods",
        n if n.starts_with("requests.") && n.contains('/') => "pods",
        n if COUNTED.contains(&n) => n,
        _ => return None,
    };
    store.resource("", plural)
}

/// The objects of core resource `plural` in `namespace`, parsed.
pub(crate) fn core_objects(store: &Store, plural: &str, namespace: &str) -> Vec<Value> {
    if !store.holds_core(plural) {
        return Vec::new();
    }
    let Some(res) = store.resource("", plural) else {
        return Vec::new();
    };
    store
        .list(
            &res,
            Some(namespace),
            &Default::default(),
            &Default::default(),
            None,
            None,
        )
        .map(|page| {
            page.items
                .iter()
                .filter_map(|b| serde_json::from_slice(b).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The quotas of `namespace`, parsed.
pub fn quotas(store: &Store, namespace: &str) -> Vec<Value> {
    core_objects(store, "resourcequotas", namespace)
}

/// Whether `namespace` has a quota: its creates are then admitted one by one.
pub(crate) fn any(store: &Store, namespace: &str) -> bool {
    !namespace.is_empty() && !quotas(store, namespace).is_empty()
}

/// A quota's scopes as selector requirements: `(scope, operator,
/// values)`, its `scopes` read as `Exists`, as kube-apiserver reads them.
fn selectors(quota: &Value) -> Vec<(&str, &str, Vec<&str>)> {
    let mut out: Vec<(&str, &str, Vec<&str>)> = quota["spec"]["scopes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|s| (s, "Exists", Vec::new()))
        .collect();
    out.extend(crate::selector::expressions_keyed(
        &quota["spec"]["scopeSelector"],
        "scopeName",
    ));
    out
}

/// Whether `quota` covers `object` of `res`: with no scopes, everything;
/// with scopes, the pods (or, for `VolumeAttributesClass`, the claims)
/// every one of them matches, as the quota evaluators decide.
fn covers(quota: &Value, res: &Resource, object: &Value) -> bool {
    selectors(quota)
        .iter()
        .all(|(scope, operator, values)| scope_matches(res, object, scope, operator, values))
}

fn scope_matches(
    res: &Resource,
    object: &Value,
    scope: &str,
    operator: &str,
    values: &[&str],
) -> bool {
    let core = res.group.is_empty();
    let spec = &object["spec"];
    // A selector over one label, as the evaluators build it.
    let selected = |value: &str| match operator {
        "In" => values.contains(&value),
        "NotIn" => !values.contains(&value),
        "Exists" => true,
        _ => false,
    };
    if core && res.plural == "persistentvolumeclaims" {
        let class = spec["volumeAttributesClassName"]
            .as_str()
            .unwrap_or_default();
        return scope == "VolumeAttributesClass"
            && if operator == "Exists" {
                !class.is_empty()
            } else {
                selected(class)
            };
    }
    if !(core && res.plural == "pods") {
        return false;
    }
    let terminating = spec["activeDeadlineSeconds"]
        .as_i64()
        .is_some_and(|s| s >= 0);
    match scope {
        "Terminating" => terminating,
        "NotTerminating" => !terminating,
        "BestEffort" => best_effort(spec),
        "NotBestEffort" => !best_effort(spec),
        "PriorityClass" => {
            // A pod that names no class has no such label to select.
            let class = spec["priorityClassName"].as_str().unwrap_or_default();
            match operator {
                "Exists" => !class.is_empty(),
                "DoesNotExist" => class.is_empty(),
                "NotIn" if class.is_empty() => true,
                "In" if class.is_empty() => false,
                _ => selected(class),
            }
        }
        "CrossNamespacePodAffinity" => ["podAffinity", "podAntiAffinity"].iter().any(|kind| {
            let terms = &spec["affinity"][*kind];
            let required = terms["requiredDuringSchedulingIgnoredDuringExecution"]
                .as_array()
                .into_iter()
                .flatten();
            let preferred = terms["preferredDuringSchedulingIgnoredDuringExecution"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| &p["podAffinityTerm"]);
            required.chain(preferred).any(|t| {
                t["namespaces"].as_array().is_some_and(|n| !n.is_empty())
                    || t["namespaceSelector"].is_object()
            })
        }),
        _ => false,
    }
}

/// A pod of QoS class `BestEffort`: no container asks for or is limited
/// in CPU or memory.
fn best_effort(spec: &Value) -> bool {
    ["initContainers", "containers"]
        .iter()
        .filter_map(|f| spec[*f].as_array())
        .flatten()
        .all(|c| {
            ["requests", "limits"].iter().all(|part| {
                ["cpu", "memory"].iter().all(|r| {
                    c["resources"][*part][*r]
                        .as_str()
                        .and_then(Amount::parse)
                        .is_none_or(|a| a.nanos == 0)
                })
            })
        })
}

/// Whether a quota has scopes (its usage is then its own).
fn scoped(quota: &Value) -> bool {
    !selectors(quota).is_empty()
}

/// A map of quantities (`spec.hard`, `status.hard`), parsed.
fn amounts(map: &Value) -> BTreeMap<String, Amount> {
    map.as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), Amount::parse(v.as_str()?)?)))
                .collect()
        })
        .unwrap_or_default()
}

/// What the objects of `namespace` use of each of `names`.
pub fn usage(store: &Store, namespace: &str, names: &BTreeSet<String>) -> BTreeMap<String, Amount> {
    usage_of_covered(store, namespace, names, &|_, _| true)
}

/// What the objects of `namespace` that `covered` picks use of each of
/// `names`.
fn usage_of_covered(
    store: &Store,
    namespace: &str,
    names: &BTreeSet<String>,
    covered: &dyn Fn(&Resource, &Value) -> bool,
) -> BTreeMap<String, Amount> {
    let mut by_resource: BTreeMap<(String, String), std::sync::Arc<Resource>> = BTreeMap::new();
    for name in names {
        if let Some(res) = counted_resource(store, name) {
            by_resource.insert((res.group.clone(), res.plural.clone()), res);
        }
    }
    let mut used: BTreeMap<String, Amount> = names
        .iter()
        .map(|n| (n.clone(), Amount::default()))
        .collect();
    for res in by_resource.values() {
        let Ok(page) = store.list(
            res,
            Some(namespace),
            &Default::default(),
            &Default::default(),
            None,
            None,
        ) else {
            continue;
        };
        for object in page
            .items
            .iter()
            .filter_map(|b| serde_json::from_slice::<Value>(b).ok())
        {
            if !counts(res, &object) || !covered(res, &object) {
                continue;
            }
            for (name, amount) in usage_of(res, &object) {
                if let Some(total) = used.get_mut(&name) {
                    *total = total.plus(amount);
                }
            }
        }
    }
    used
}

/// The scopes a quota may name.
const SCOPES: [&str; 7] = [
    "Terminating",
    "NotTerminating",
    "BestEffort",
    "NotBestEffort",
    "PriorityClass",
    "VolumeAttributesClass",
    "CrossNamespacePodAffinity",
];

/// Whether a quota scoped by `scope` may limit standard resource `name`.
fn scope_allows(scope: &str, name: &str) -> bool {
    let pod_compute = matches!(
        name,
        "cpu" | "memory" | "limits.cpu" | "limits.memory" | "requests.cpu" | "requests.memory"
    );
    match scope {
        "Terminating"
        | "NotTerminating"
        | "NotBestEffort"
        | "PriorityClass"
        | "CrossNamespacePodAffinity" => name == "pods" || pod_compute,
        "BestEffort" => name == "pods",
        "VolumeAttributesClass" => matches!(name, "persistentvolumeclaims" | "requests.storage"),
        _ => true,
    }
}

/// What kube-apiserver refuses in a quota's `spec`: resource names that
/// are not a quota's, negative or fractional amounts, and scopes unknown,
/// conflicting or not for a resource it limits.
pub(crate) fn spec_problems(spec: &Value, out: &mut Vec<(String, String)>) {
    let hard = spec["hard"].as_object();
    for (key, value) in hard.into_iter().flatten() {
        let at = format!("spec.hard[{key}]");
        out.extend(crate::names::quota_resource_name(key, &at));
        let text = value.as_str().unwrap_or_default();
        if text.trim_start().starts_with('-') {
            out.push((
                at.clone(),
                format!("Invalid value: {value}: must be greater than or equal to 0"),
            ));
        }
        if crate::names::integer_resource(key)
            && Amount::parse(text.trim_start_matches('-')).is_some_and(|a| a.nanos() % NANO != 0)
        {
            out.push((at, format!("Invalid value: {value}: must be an integer")));
        }
    }
    // Sorted, as the Go code lists the names it checks each scope for.
    let names: BTreeSet<&str> = hard
        .into_iter()
        .flatten()
        .map(|(k, _)| k.as_str())
        .filter(|k| crate::names::standard_for_quota(k))
        .collect();
    let conflicting = |scopes: &BTreeSet<&str>| {
        [
            ("BestEffort", "NotBestEffort"),
            ("Terminating", "NotTerminating"),
        ]
        .iter()
        .filter(|(a, b)| scopes.contains(a) && scopes.contains(b))
        .count()
    };
    if let Some(scopes) = spec["scopes"].as_array().filter(|s| !s.is_empty()) {
        let listed = Value::Array(scopes.clone()).to_string();
        let mut seen = BTreeSet::new();
        for scope in scopes.iter().map(|s| s.as_str().unwrap_or_default()) {
            if !SCOPES.contains(&scope) {
                out.push((
                    "spec.scopes".into(),
                    format!("Invalid value: {listed}: unsupported scope"),
                ));
            }
            for _ in names.iter().filter(|n| !scope_allows(scope, n)) {
                out.push((
                    "spec.scopes".into(),
                    format!("Invalid value: {listed}: unsupported scope applied to resource"),
                ));
            }
            seen.insert(scope);
        }
        for _ in 0..conflicting(&seen) {
            out.push((
                "spec.scopes".into(),
                format!("Invalid value: {listed}: conflicting scopes"),
            ));
        }
    }
    let Some(selector) = spec["scopeSelector"].as_object() else {
        return;
    };
    let at = "spec.scopeSelector.matchExpressions";
    let expressions = selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    // The selector as Go's JSON writes kube-apiserver's internal type,
    // its fields in their declared order.
    let go_selector = format!(
        "{{\"MatchExpressions\":[{}]}}",
        expressions
            .iter()
            .map(|e| format!(
                "{{\"ScopeName\":{},\"Operator\":{},\"Values\":{}}}",
                json!(e["scopeName"].as_str().unwrap_or_default()),
                json!(e["operator"].as_str().unwrap_or_default()),
                json!(e["values"].as_array().filter(|v| !v.is_empty()))
            ))
            .collect::<Vec<_>>()
            .join(",")
    );
    let mut seen = BTreeSet::new();
    for e in &expressions {
        let scope = e["scopeName"].as_str().unwrap_or_default();
        let operator = e["operator"].as_str().unwrap_or_default();
        let values = e["values"].as_array().filter(|v| !v.is_empty());
        if !SCOPES.contains(&scope) {
            out.push((
                format!("{at}.scopeName"),
                format!("Invalid value: {scope:?}: unsupported scope"),
            ));
        }
        for _ in names.iter().filter(|n| !scope_allows(scope, n)) {
            out.push((
                at.into(),
                format!("Invalid value: {go_selector}: unsupported scope applied to resource"),
            ));
        }
        if matches!(
            scope,
            "BestEffort"
                | "NotBestEffort"
                | "Terminating"
                | "NotTerminating"
                | "CrossNamespacePodAffinity"
        ) && operator != "Exists"
        {
            out.push((
                format!("{at}.operator"),
                format!("Invalid value: {operator:?}: must be 'Exists' when scope is any of ResourceQuotaScopeTerminating, ResourceQuotaScopeNotTerminating, ResourceQuotaScopeBestEffort, ResourceQuotaScopeNotBestEffort or ResourceQuotaScopeCrossNamespacePodAffinity"),
            ));
        }
        match operator {
            "In" | "NotIn" if values.is_none() => out.push((
                format!("{at}.values"),
                "Required value: must be at least one value when `operator` is 'In' or 'NotIn' for scope selector".into(),
            )),
            "Exists" | "DoesNotExist" if values.is_some() => out.push((
                format!("{at}.values"),
                format!(
                    "Invalid value: {}: must be no value when `operator` is 'Exist' or 'DoesNotExist' for scope selector",
                    e["values"]
                ),
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            _ => out.push((
                format!("{at}.operator"),
                format!("Invalid value: {operator:?}: not a valid selector operator"),
            )),
        }
        seen.insert(scope);
    }
    let scopes = spec["scopes"]
        .as_array()
        .filter(|s| !s.is_empty())
        .map_or_else(
            || "null".to_owned(),
            |s| Value::Array(s.clone()).to_string(),
        );
    for _ in 0..conflicting(&seen) {
        out.push((
            at.into(),
            format!("Invalid value: {scopes}: conflicting scopes"),
        ));
    }
}

/// A quota's scopes, as an update may not change them.
pub(crate) fn scopes_changed(old: &Value, new: &Value) -> Option<(String, String)> {
    let set = |q: &Value| -> BTreeSet<String> {
        q["spec"]["scopes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect()
    };
    (set(old) != set(new)).then(|| {
        let scopes = new["spec"]["scopes"]
            .as_array()
            .filter(|s| !s.is_empty())
            .map_or_else(
                || "null".to_owned(),
                |s| Value::Array(s.clone()).to_string(),
            );
        (
            "spec.scopes".to_owned(),
            format!("Invalid value: {scopes}: field is immutable"),
        )
    })
}

/// `k=v` pairs of `map` for `keys`, by name, comma-joined.
fn listed(map: &BTreeMap<String, Amount>, keys: &BTreeSet<&String>) -> String {
    keys.iter()
        .map(|k| format!("{k}={}", map.get(*k).copied().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Admits the create of `object` (of `res`, named `name`) in `namespace`
/// against its quotas.
///
/// # Errors
/// 403 Forbidden, worded as kube-apiserver words it.
pub(crate) fn admit(
    store: &Store,
    res: &Resource,
    namespace: &str,
    name: &str,
    object: &Value,
) -> Result<(), ApiError> {
    if namespace.is_empty() || !store.holds_core("resourcequotas") || !counts(res, object) {
        return Ok(());
    }
    let quotas: Vec<Value> = quotas(store, namespace)
        .into_iter()
        .filter(|q| covers(q, res, object))
        .collect();
    if quotas.is_empty() {
        return Ok(());
    }
    let forbidden = |why: String| ApiError::forbidden_object(&res.group, &res.plural, name, &why);
    let requested = usage_of(res, object);
    let hards: Vec<BTreeMap<String, Amount>> = quotas
        .iter()
        .map(|q| amounts(&q["status"]["hard"]))
        .collect();
    let quota_name = |quota: &Value| {
        quota["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    if res.group.is_empty() && res.plural == "pods" {
        for (quota, hard) in quotas.iter().zip(&hards) {
            // Each CPU and memory request or limit the quota tracks must
            // be stated by every container (ephemeral storage need not).
            let must = COMPUTE
                .iter()
                .filter(|(k, _, r)| hard.contains_key(*k) && *r != "ephemeral-storage");
            let mut missing: Vec<String> = Vec::new();
            for (key, part, resource) in must {
                let lacking: Vec<&str> = ["initContainers", "containers"]
                    .iter()
                    .filter_map(|f| object["spec"][*f].as_array())
                    .flatten()
                    .filter(|c| c["resources"][*part][*resource].is_null())
                    .filter_map(|c| c["name"].as_str())
                    .collect();
                if !lacking.is_empty() {
                    missing.push(format!("{key} for: {}", lacking.join(",")));
                }
            }
            if !missing.is_empty() {
                missing.sort();
                return Err(forbidden(format!(
                    "failed quota: {}: must specify {}",
                    quota_name(quota),
                    missing.join("; ")
                )));
            }
        }
    }
    exceeded(store, namespace, &quotas, &hards, &requested, &forbidden)
}

/// Checks an update of `old` into `new`, named `name`, in `namespace`, as
/// the quota plugin does: what it adds to the namespace's usage (a Service
/// made a NodePort or LoadBalancer, a claim grown) must fit its quotas.
/// Pods are not checked on update.
///
/// # Errors
/// 403 Forbidden, as [`admit`].
pub(crate) fn admit_update(
    store: &Store,
    res: &Resource,
    namespace: &str,
    name: &str,
    old: &Value,
    new: &Value,
) -> Result<(), ApiError> {
    if namespace.is_empty()
        || !store.holds_core("resourcequotas")
        || (res.group.is_empty() && res.plural == "pods")
    {
        return Ok(());
    }
    let before = usage_of(res, old);
    let added: BTreeMap<String, Amount> = usage_of(res, new)
        .into_iter()
        .filter_map(|(k, a)| {
            let was = before.get(&k).map_or(0, |b| b.nanos);
            (a.nanos > was).then_some((
                k,
                Amount {
                    nanos: a.nanos - was,
                    binary: a.binary,
                },
            ))
        })
        .collect();
    if added.is_empty() {
        return Ok(());
    }
    let quotas: Vec<Value> = quotas(store, namespace)
        .into_iter()
        .filter(|q| covers(q, res, new))
        .collect();
    let hards: Vec<BTreeMap<String, Amount>> = quotas
        .iter()
        .map(|q| amounts(&q["status"]["hard"]))
        .collect();
    let forbidden = |why: String| ApiError::forbidden_object(&res.group, &res.plural, name, &why);
    exceeded(store, namespace, &quotas, &hards, &added, &forbidden)
}

/// The first of `quotas` (whose `status.hard` are `hards`) that
/// `requested` on top of the namespace's usage would pass, said as the
/// plugin says it.
fn exceeded(
    store: &Store,
    namespace: &str,
    quotas: &[Value],
    hards: &[BTreeMap<String, Amount>],
    requested: &BTreeMap<String, Amount>,
    forbidden: &dyn Fn(String) -> ApiError,
) -> Result<(), ApiError> {
    let quota_name = |quota: &Value| {
        quota["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    // What the namespace uses, counted once for every quota.
    let tracked: BTreeSet<String> = hards
        .iter()
        .flat_map(|h| h.keys())
        .filter(|k| requested.contains_key(*k))
        .cloned()
        .collect();
    if tracked.is_empty() {
        return Ok(());
    }
    let shared = quotas
        .iter()
        .any(|q| !scoped(q))
        .then(|| usage(store, namespace, &tracked));
    for (quota, hard) in quotas.iter().zip(hards) {
        let used = match &shared {
            Some(used) if !scoped(quota) => used.clone(),
            _ => usage_of_covered(store, namespace, &tracked, &|r, o| covers(quota, r, o)),
        };
        let exceeded: BTreeSet<&String> = hard
            .iter()
            .filter(|(k, h)| {
                requested.get(*k).is_some_and(|r| {
                    used.get(*k).copied().unwrap_or_default().nanos + r.nanos > h.nanos
                })
            })
            .map(|(k, _)| k)
            .collect();
        if !exceeded.is_empty() {
            return Err(forbidden(format!(
                "exceeded quota: {}, requested: {}, used: {}, limited: {}",
                quota_name(quota),
                listed(requested, &exceeded),
                listed(&used, &exceeded),
                listed(hard, &exceeded),
            )));
        }
    }
    Ok(())
}

/// A quota's status as kube-controller-manager writes it: `hard` from its
/// spec, `used` counted for each of those resources over the objects it
/// covers.
pub fn status(store: &Store, namespace: &str, quota: &Value) -> Value {
    let hard = amounts(&quota["spec"]["hard"]);
    // What nothing counts (an unknown resource) is left out of `used`.
    let names: BTreeSet<String> = hard
        .keys()
        .filter(|n| counted_resource(store, n).is_some())
        .cloned()
        .collect();
    let used = usage_of_covered(store, namespace, &names, &|r, o| covers(quota, r, o));
    let written = |m: &BTreeMap<String, Amount>, like: &BTreeMap<String, Amount>| {
        Value::Object(
            m.iter()
                .map(|(k, v)| {
                    // A used amount is written as its limit is (`200Mi`
                    // under a `1Gi` limit), or in decimal when it is none.
                    let binary = like.get(k).is_some_and(|h| h.binary) || v.binary;
                    let v = Amount {
                        nanos: v.nanos,
                        binary: binary && v.nanos > 0,
                    };
                    (k.clone(), json!(v.to_string()))
                })
                .collect(),
        )
    };
    // A quota of nothing counted (only unknown resources) has no `used`.
    if used.is_empty() {
        return json!({"hard": written(&hard, &hard)});
    }
    json!({"hard": written(&hard, &hard), "used": written(&used, &hard)})
}

#[cfg(test)]
mod tests {
    use super::Amount;

    fn canon(text: &str) -> String {
        Amount::parse(text).unwrap().to_string()
    }

    #[test]
    fn amounts_add_and_are_written_as_kubernetes_writes_them() {
        assert_eq!(canon("1Gi"), "1Gi");
        assert_eq!(canon("0.5"), "500m");
        assert_eq!(canon("1000"), "1k");
        let sum = Amount::parse("600m")
            .unwrap()
            .plus(Amount::parse("400m").unwrap());
        assert_eq!(sum.to_string(), "1");
        let mem = Amount::parse("100Mi")
            .unwrap()
            .plus(Amount::parse("100Mi").unwrap());
        assert_eq!(mem.to_string(), "200Mi");
        assert_eq!(Amount::parse("1500").unwrap().to_string(), "1500");
        assert_eq!(Amount::default().to_string(), "0");
        assert!(Amount::parse("x").is_none());
    }
}
