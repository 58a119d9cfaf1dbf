//! Synthetic traffic: load profiles split over pods exactly as the routing
//! objects say, and per-pod request counters and latency histograms from
//! each version's profile.
//!
//! Routing, per request class (a share of the load carrying given headers
//! or cookies):
//! - a Service: evenly over its ready endpoints;
//! - an NGINX Ingress host: the stable Ingress's backend, unless a canary
//!   Ingress for the host takes the request: by header
//!   (`canary-by-header`, with `-value` or `-pattern`, else `always` /
//!   `never`), then by cookie (`always` / `never`), then by weight
//!   (`canary-weight` of `canary-weight-total`, default 100);
//! - a Gateway API HTTPRoute: the most specific rule whose matches hold
//!   (headers, path, query parameters), split by backend weights;
//! - an Istio VirtualService: the first HTTP route whose match holds, split
//!   by destination weights.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use sluice_sim_api::{selector::LabelSelector, store::Store};

/// What a load profile sends requests to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Target {
    /// A Service by name.
    #[serde(default)]
    pub service: Option<String>,
    /// An NGINX Ingress host.
    #[serde(default)]
    pub ingress_host: Option<String>,
    /// A Gateway API HTTPRoute by name.
    #[serde(default)]
    pub http_route: Option<String>,
    /// An Istio VirtualService by name.
    #[serde(default)]
    pub virtual_service: Option<String>,
}

/// A share of the requests that carries given headers or cookies.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestClass {
    /// Share of the load, 0 to 1.
    pub share: f64,
    /// Headers these requests carry.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Cookies these requests carry.
    #[serde(default)]
    pub cookies: BTreeMap<String, String>,
}

/// Load on one entry point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadProfile {
    /// Namespace of the target.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// The entry point.
    pub target: Target,
    /// Requests per second.
    pub rps: f64,
    /// Later rates: (seconds after start, requests per second).
    #[serde(default)]
    pub schedule: Vec<(f64, f64)>,
    /// Shares carrying headers or cookies; the rest carries none.
    #[serde(default)]
    pub classes: Vec<RequestClass>,
}

fn default_namespace() -> String {
    "default".into()
}

impl LoadProfile {
    /// Requests per second at `elapsed` seconds.
    pub fn rps_at(&self, elapsed: f64) -> f64 {
        self.schedule
            .iter()
            .filter(|(after, _)| elapsed >= *after)
            .map(|(_, rps)| *rps)
            .next_back()
            .unwrap_or(self.rps)
    }
}

fn list(store: &Store, group: &str, plural: &str, ns: &str) -> Vec<Value> {
    let Some(res) = store.resource(group, plural) else {
        return Vec::new();
    };
    store
        .list(
            &res,
            Some(ns),
            &LabelSelector::default(),
            &Default::default(),
            None,
            None,
        )
        .map(|p| {
            p.items
                .iter()
                .filter_map(|b| serde_json::from_slice(b).ok())
                .collect()
        })
        .unwrap_or_default()
}

fn get(store: &Store, group: &str, plural: &str, ns: &str, name: &str) -> Option<Value> {
    let res = store.resource(group, plural)?;
    store.get_value(&res, ns, name).ok()
}

fn regex_match(pattern: &str, value: &str) -> bool {
    regex::Regex::new(&format!("^(?:{pattern})$")).is_ok_and(|r| r.is_match(value))
}

const NGINX: &str = "nginx.ingress.kubernetes.io/";

/// The services a class of requests reaches, with weights summing to 1.
pub fn route(store: &Store, ns: &str, target: &Target, class: &RequestClass) -> Vec<(String, f64)> {
    if let Some(service) = &target.service {
        return vec![(service.clone(), 1.0)];
    }
    if let Some(host) = &target.ingress_host {
        return route_ingress(store, ns, host, class);
    }
    if let Some(name) = &target.http_route {
        return get(store, "gateway.networking.k8s.io", "httproutes", ns, name)
            .map(|r| route_http(&r, class))
            .unwrap_or_default();
    }
    if let Some(name) = &target.virtual_service {
        return get(store, "networking.istio.io", "virtualservices", ns, name)
            .map(|v| route_virtual_service(&v, class))
            .unwrap_or_default();
    }
    Vec::new()
}

fn ingress_backend(ingress: &Value, host: &str) -> Option<String> {
    ingress["spec"]["rules"].as_array()?.iter().find(|r| r["host"].as_str().unwrap_or_default() == host)?["http"]["paths"][0]["backend"]["service"]["name"]
        .as_str()
        .map(str::to_owned)
}

fn route_ingress(store: &Store, ns: &str, host: &str, class: &RequestClass) -> Vec<(String, f64)> {
    let ingresses = list(store, "networking.k8s.io", "ingresses", ns);
    let is_canary = |i: &Value| i["metadata"]["annotations"][format!("{NGINX}canary")] == "true";
    let Some(stable) = ingresses
        .iter()
        .filter(|i| !is_canary(i))
        .find_map(|i| ingress_backend(i, host))
    else {
        return Vec::new();
    };
    let Some((canary_ingress, canary)) = ingresses
        .iter()
        .filter(|i| is_canary(i))
        .find_map(|i| ingress_backend(i, host).map(|b| (i, b)))
    else {
        return vec![(stable, 1.0)];
    };
    let annotation = |k: &str| {
        canary_ingress["metadata"]["annotations"][format!("{NGINX}{k}")]
            .as_str()
            .map(str::to_owned)
    };
    if let Some(header) = annotation("canary-by-header")
        && let Some(value) = class.headers.get(&header)
    {
        let decision = if let Some(expected) = annotation("canary-by-header-value") {
            (value == &expected).then_some(true)
        } else if let Some(pattern) = annotation("canary-by-header-pattern") {
            regex_match(&pattern, value).then_some(true)
        } else {
            match value.as_str() {
                "always" => Some(true),
                "never" => Some(false),
                _ => None,
            }
        };
        if let Some(to_canary) = decision {
            return vec![(if to_canary { canary } else { stable }, 1.0)];
        }
    }
    if let Some(cookie) = annotation("canary-by-cookie") {
        match class.cookies.get(&cookie).map(String::as_str) {
            Some("always") => return vec![(canary, 1.0)],
            Some("never") => return vec![(stable, 1.0)],
            _ => {}
        }
    }
    let weight: f64 = annotation("canary-weight")
        .and_then(|w| w.parse().ok())
        .unwrap_or(0.0);
    let total: f64 = annotation("canary-weight-total")
        .and_then(|w| w.parse().ok())
        .unwrap_or(100.0);
    let share = (weight / total).clamp(0.0, 1.0);
    vec![(stable, 1.0 - share), (canary, share)]
}

fn header_matches(class: &RequestClass, name: &str, kind: &str, value: &str) -> bool {
    let actual = class
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str());
    match (actual, kind) {
        (Some(a), "RegularExpression") => regex_match(value, a),
        (Some(a), _) => a == value,
        (None, _) => false,
    }
}

fn route_http(route: &Value, class: &RequestClass) -> Vec<(String, f64)> {
    let rules = route["spec"]["rules"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut best: Option<(usize, &Value)> = None;
    for rule in &rules {
        let matches = rule["matches"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| vec![serde_json::json!({})]);
        for m in &matches {
            let headers = m["headers"].as_array().cloned().unwrap_or_default();
            let holds = headers.iter().all(|h| {
                header_matches(
                    class,
                    h["name"].as_str().unwrap_or_default(),
                    h["type"].as_str().unwrap_or("Exact"),
                    h["value"].as_str().unwrap_or_default(),
                )
            });
            if holds && best.is_none_or(|(score, _)| headers.len() > score) {
                best = Some((headers.len(), rule));
            }
        }
    }
    let Some((_, rule)) = best else {
        return Vec::new();
    };
    weighted(
        rule["backendRefs"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|b| {
                (
                    b["name"].as_str().unwrap_or_default().to_owned(),
                    b["weight"].as_f64().unwrap_or(1.0),
                )
            }),
    )
}

fn string_match(spec: &Value, value: Option<&str>) -> bool {
    let Some(value) = value else { return false };
    if let Some(e) = spec["exact"].as_str() {
        return value == e;
    }
    if let Some(p) = spec["prefix"].as_str() {
        return value.starts_with(p);
    }
    if let Some(r) = spec["regex"].as_str() {
        return regex_match(r, value);
    }
    false
}

fn route_virtual_service(vs: &Value, class: &RequestClass) -> Vec<(String, f64)> {
    for http in vs["spec"]["http"].as_array().cloned().unwrap_or_default() {
        let matches = http["match"].as_array().cloned().unwrap_or_default();
        let holds = matches.is_empty()
            || matches.iter().any(|m| {
                m["headers"].as_object().is_none_or(|headers| {
                    headers.iter().all(|(name, spec)| {
                        string_match(
                            spec,
                            class
                                .headers
                                .iter()
                                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                                .map(|(_, v)| v.as_str()),
                        )
                    })
                })
            });
        if holds {
            let routes = http["route"].as_array().cloned().unwrap_or_default();
            let single = routes.len() == 1;
            return weighted(routes.iter().map(|r| {
                let host = r["destination"]["host"].as_str().unwrap_or_default();
                let service = host.split('.').next().unwrap_or_default().to_owned();
                (
                    service,
                    r["weight"]
                        .as_f64()
                        .unwrap_or(if single { 100.0 } else { 0.0 }),
                )
            }));
        }
    }
    Vec::new()
}

fn weighted(backends: impl Iterator<Item = (String, f64)>) -> Vec<(String, f64)> {
    let list: Vec<(String, f64)> = backends.collect();
    let total: f64 = list.iter().map(|(_, w)| *w).sum();
    if total <= 0.0 {
        return Vec::new();
    }
    list.into_iter().map(|(s, w)| (s, w / total)).collect()
}

/// The ready pods behind a Service, from its EndpointSlice.
pub fn ready_pods(store: &Store, ns: &str, service: &str) -> Vec<String> {
    let ready = |slice: &Value| -> Vec<String> {
        slice["endpoints"]
            .as_array()
            .map(|e| {
                e.iter()
                    .filter(|x| x["conditions"]["ready"] == true)
                    .filter_map(|x| x["targetRef"]["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    // The simulator's own controller keeps one slice per Service under a
    // known name; a real cluster's (mirrored in agent mode) are found by
    // the label every slice carries.
    if let Some(slice) = get(
        store,
        "discovery.k8s.io",
        "endpointslices",
        ns,
        &format!("{service}-sim"),
    ) {
        return ready(&slice);
    }
    let Some(res) = store.resource("discovery.k8s.io", "endpointslices") else {
        return Vec::new();
    };
    let selector = LabelSelector::from_object(
        &serde_json::json!({"matchLabels": {"kubernetes.io/service-name": service}}),
    );
    let Ok(page) = store.list(&res, Some(ns), &selector, &Default::default(), None, None) else {
        return Vec::new();
    };
    let mut pods: Vec<String> = page
        .items
        .iter()
        .filter_map(|bytes| serde_json::from_slice::<Value>(bytes).ok())
        .flat_map(|slice| ready(&slice))
        .collect();
    pods.sort();
    pods.dedup();
    pods
}

/// Requests per second each pod receives from `loads` at `elapsed` seconds,
/// keyed by (namespace, pod).
pub fn split(store: &Store, loads: &[LoadProfile], elapsed: f64) -> HashMap<(String, String), f64> {
    let mut per_pod: HashMap<(String, String), f64> = HashMap::new();
    for load in loads {
        let rps = load.rps_at(elapsed);
        let shared: f64 = load.classes.iter().map(|c| c.share).sum::<f64>().min(1.0);
        let mut classes = load.classes.clone();
        classes.push(RequestClass {
            share: 1.0 - shared,
            ..RequestClass::default()
        });
        for class in &classes {
            for (service, weight) in route(store, &load.namespace, &load.target, class) {
                let pods = ready_pods(store, &load.namespace, &service);
                if pods.is_empty() {
                    continue;
                }
                let each = rps * class.share * weight / pods.len() as f64;
                for pod in pods {
                    *per_pod.entry((load.namespace.clone(), pod)).or_default() += each;
                }
            }
        }
    }
    per_pod
}
