//! Scenarios: a whole simulated world in one YAML file, and running it.
//!
//! ```yaml
//! name: bad-canary
//! seed: 7                      # same seed, same run
//! speed: 1.0                   # simulated seconds per real second
//! nodes: {count: 3, capacity: 110}
//! versions:                    # behaviour by container image
//!   - image: registry.example/web:2.0
//!     profile: {errorRatio: 0.08, latencyP50Ms: 20, latencyP99Ms: 80,
//!               startMinSeconds: 1, startMaxSeconds: 3, readyAfterSeconds: 1,
//!               stopSeconds: 1,  # SIGTERM to exit, within the grace period
//!               crashLoop: false, neverReady: false, latencyPerRpsMs: 0,
//!               changes: [{afterSeconds: 60, errorRatio: 0.2}]}
//! load:                        # requests per second on entry points
//!   - target: {service: web}   # or ingressHost, httpRoute, virtualService
//!     rps: 200
//!     schedule: [[120, 400]]   # from 120 s on, 400 rps
//!     classes: [{share: 0.05, headers: {x-canary: "true"}, cookies: {}}]
//! events:                      # faults at given times
//!   - {atSeconds: 20, fault: {prometheusUnavailable: {}}}
//!   - {atSeconds: 30, fault: {apiErrors: {verb: patch, resource: deployments, rate: 0.5, code: 500}}}
//!   - {atSeconds: 40, fault: {apiLatency: {verb: "", resource: pods, latencyMs: 200}}}
//!   - {atSeconds: 50, fault: {dropWatches: {resource: pods}}}
//!   - {atSeconds: 60, fault: {nodeLoss: {node: sim-node-0}}}
//!   - {atSeconds: 70, fault: {versionDegradation: {image: registry.example/web:2.0, errorRatio: 0.3}}}
//! release: {kind: Deployment, name: web, namespace: default, image: registry.example/web:2.0}
//! manifests: [ ...plain Kubernetes objects... ]
//! ```

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::{
    api::{ApiServer, Options, faults::Rule, status::ApiError},
    cluster::{
        Cluster, ClusterOptions,
        profile::{Profile, Profiles},
    },
    metrics::{Metrics, traffic::LoadProfile},
};

/// The built-in scenarios, by name.
pub const BUILT_IN: [(&str, &str); 5] = [
    ("healthy", include_str!("../scenarios/healthy.yaml")),
    ("bad-canary", include_str!("../scenarios/bad-canary.yaml")),
    ("slow-canary", include_str!("../scenarios/slow-canary.yaml")),
    ("crashloop", include_str!("../scenarios/crashloop.yaml")),
    (
        "prometheus-outage",
        include_str!("../scenarios/prometheus-outage.yaml"),
    ),
];

/// Nodes of the simulated cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Nodes {
    /// How many.
    pub count: u32,
    /// Pods each takes.
    #[serde(default = "default_capacity")]
    pub capacity: u32,
}

fn default_capacity() -> u32 {
    crate::cluster::kubelet::DEFAULT_CAPACITY
}

impl Default for Nodes {
    fn default() -> Self {
        Self {
            count: 3,
            capacity: default_capacity(),
        }
    }
}

/// A version's behaviour, by image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Version {
    /// The container image.
    pub image: String,
    /// How it behaves.
    #[serde(default)]
    pub profile: Profile,
}

/// A fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum FaultSpec {
    /// API requests fail.
    ApiErrors {
        /// Verb or empty.
        #[serde(default)]
        verb: String,
        /// Resource or empty.
        #[serde(default)]
        resource: String,
        /// Share failing.
        rate: f64,
        /// HTTP code.
        code: u16,
    },
    /// API requests are slow.
    #[serde(rename_all = "camelCase")]
    ApiLatency {
        /// Verb or empty.
        #[serde(default)]
        verb: String,
        /// Resource or empty.
        #[serde(default)]
        resource: String,
        /// Added latency.
        latency_ms: u64,
    },
    /// Watch events of a resource are delivered late, in order.
    #[serde(rename_all = "camelCase")]
    WatchLag {
        /// Resource or empty.
        #[serde(default)]
        resource: String,
        /// How late, milliseconds.
        lag_ms: u64,
    },
    /// Open watches are closed.
    DropWatches {
        /// Resource or empty.
        #[serde(default)]
        resource: String,
    },
    /// The Prometheus endpoint answers 503.
    PrometheusUnavailable {},
    /// A node disappears.
    NodeLoss {
        /// Its name.
        node: String,
    },
    /// A version gets worse.
    #[serde(rename_all = "camelCase")]
    VersionDegradation {
        /// Its image.
        image: String,
        /// New error ratio.
        error_ratio: f64,
        /// Added latency, milliseconds.
        #[serde(default)]
        added_latency_ms: f64,
    },
}

/// A fault at a given time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TimedEvent {
    /// Seconds after the start.
    pub at_seconds: f64,
    /// The fault: `{prometheusUnavailable: {}}` or, as YAML tags it,
    /// `!prometheusUnavailable {}`.
    #[serde(deserialize_with = "fault")]
    pub fault: FaultSpec,
    /// How long it lasts; forever when unset.
    #[serde(default)]
    pub for_seconds: Option<f64>,
}

/// A fault written either way: a map with one key naming the fault, or a
/// YAML tag.
fn fault<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<FaultSpec, D::Error> {
    use serde::de::Error;
    let value = serde_yaml::Value::deserialize(deserializer)?;
    let value = match value {
        serde_yaml::Value::Mapping(map) if map.len() == 1 => {
            let (key, inner) = map
                .into_iter()
                .next()
                .ok_or_else(|| D::Error::custom("empty"))?;
            let tag = key
                .as_str()
                .ok_or_else(|| D::Error::custom("a fault's name must be text"))?;
            serde_yaml::Value::Tagged(Box::new(serde_yaml::value::TaggedValue {
                tag: serde_yaml::value::Tag::new(tag),
                value: inner,
            }))
        }
        other => other,
    };
    serde_yaml::from_value(value).map_err(D::Error::custom)
}

/// What a demo releases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Release {
    /// Deployment or StatefulSet.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Its namespace.
    #[serde(default = "default_ns")]
    pub namespace: String,
    /// The new image.
    pub image: String,
}

fn default_ns() -> String {
    "default".into()
}

fn one() -> f64 {
    1.0
}

/// A scenario file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scenario {
    /// Its name.
    pub name: String,
    /// Seed of every random draw.
    #[serde(default)]
    pub seed: u64,
    /// Simulated seconds per real second.
    #[serde(default = "one")]
    pub speed: f64,
    /// Nodes.
    #[serde(default)]
    pub nodes: Nodes,
    /// Version behaviour.
    #[serde(default)]
    pub versions: Vec<Version>,
    /// Objects to create at start.
    #[serde(default)]
    pub manifests: Vec<Value>,
    /// Load.
    #[serde(default)]
    pub load: Vec<LoadProfile>,
    /// Faults over time.
    #[serde(default)]
    pub events: Vec<TimedEvent>,
    /// What a demo releases.
    #[serde(default)]
    pub release: Option<Release>,
}

/// Why a scenario could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// Not a known name, and not a readable file.
    #[error(
        "no built-in scenario {0:?} (known: healthy, bad-canary, slow-canary, crashloop, prometheus-outage, big-cluster) and no such file"
    )]
    Unknown(String),
    /// The YAML does not describe a scenario.
    #[error("scenario {name}: {message}")]
    Invalid {
        /// The scenario.
        name: String,
        /// What is wrong.
        message: String,
    },
}

impl Scenario {
    /// Parses a scenario's YAML.
    ///
    /// # Errors
    /// [`ScenarioError::Invalid`] naming the problem.
    pub fn parse(name: &str, yaml: &str) -> Result<Self, ScenarioError> {
        let scenario: Self = serde_yaml::from_str(yaml).map_err(|e| ScenarioError::Invalid {
            name: name.into(),
            message: e.to_string(),
        })?;
        if !(scenario.speed > 0.0 && scenario.speed.is_finite()) {
            return Err(ScenarioError::Invalid {
                name: name.into(),
                message: format!("speed: must be above 0, got {}", scenario.speed),
            });
        }
        Ok(scenario)
    }

    /// A built-in scenario by name, or a scenario file by path.
    ///
    /// # Errors
    /// [`ScenarioError`].
    pub fn load(name_or_file: &str) -> Result<Self, ScenarioError> {
        if name_or_file == "big-cluster" {
            return Ok(Self::big_cluster(2_000, 5));
        }
        if let Some((_, yaml)) = BUILT_IN.iter().find(|(n, _)| *n == name_or_file) {
            return Self::parse(name_or_file, yaml);
        }
        let yaml = std::fs::read_to_string(name_or_file)
            .map_err(|_| ScenarioError::Unknown(name_or_file.into()))?;
        Self::parse(name_or_file, &yaml)
    }

    /// Thousands of workloads, for benchmarks: `workloads` Deployments of
    /// `replicas` pods over 20 namespaces, with nodes to hold them.
    pub fn big_cluster(workloads: usize, replicas: usize) -> Self {
        let mut manifests = Vec::with_capacity(workloads);
        for i in 0..workloads {
            let ns = format!("team-{}", i % 20);
            manifests.push(json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": format!("app-{i}"), "namespace": ns, "labels": {"app": format!("app-{i}")}},
                "spec": {
                    "replicas": replicas, "selector": {"matchLabels": {"app": format!("app-{i}")}},
                    "template": {"metadata": {"labels": {"app": format!("app-{i}")}}, "spec": {"containers": [{"name": "app", "image": "registry.example/app:1.0"}]}}
                }
            }));
        }
        let pods = (workloads * replicas) as u32;
        Self {
            name: "big-cluster".into(),
            seed: 1,
            speed: 1.0,
            nodes: Nodes {
                count: pods.div_ceil(100).max(1),
                capacity: 110,
            },
            versions: Vec::new(),
            manifests,
            load: Vec::new(),
            events: Vec::new(),
            release: None,
        }
    }

    /// The versions' behaviour, with times scaled by the speed factor.
    pub fn profiles(&self) -> Profiles {
        let scale = |mut p: Profile| {
            p.start_min_seconds /= self.speed;
            p.start_max_seconds /= self.speed;
            p.ready_after_seconds /= self.speed;
            p
        };
        Profiles {
            by_image: self
                .versions
                .iter()
                .map(|v| (v.image.clone(), scale(v.profile.clone())))
                .collect(),
            default: scale(Profile::default()),
        }
    }
}

/// A scenario running in this process.
#[derive(Clone)]
pub struct Simulation {
    /// Its scenario.
    pub scenario: Arc<Scenario>,
    /// The API server.
    pub api: ApiServer,
    /// The controllers.
    pub cluster: Cluster,
    /// Traffic and metrics.
    pub metrics: Metrics,
    /// Active faults, by id.
    pub faults: Arc<Mutex<Vec<(String, FaultSpec)>>>,
    stop: CancellationToken,
}

impl std::fmt::Debug for Simulation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulation")
            .field("scenario", &self.scenario.name)
            .finish_non_exhaustive()
    }
}

impl Simulation {
    /// Starts `scenario` on the current tokio runtime.
    ///
    /// # Errors
    /// A manifest the API server refuses.
    pub fn start(scenario: Scenario) -> Result<Self, ApiError> {
        let speed = scenario.speed;
        let options = Options {
            seed: scenario.seed.max(1),
            ..Options::tokio_clock(speed)
        };
        let api = ApiServer::new(options);
        api.install_upstream_crds()?;
        let stop = CancellationToken::new();
        let cluster_options = ClusterOptions {
            seed: scenario.seed.max(1),
            nodes: scenario.nodes.count,
            node_capacity: scenario.nodes.capacity,
            speed,
            profiles: scenario.profiles(),
            ..ClusterOptions::default()
        };
        let cluster = Cluster::start(api.clone(), cluster_options, stop.clone())?;
        apply_manifests(&api, &scenario.manifests)?;
        let metrics = Metrics::new(api.store().clone(), cluster.profiles.clone(), api.clock());
        metrics.set_loads(scenario.load.clone());
        tokio::spawn(crate::metrics::run(
            metrics.clone(),
            Duration::from_secs_f64(1.0 / speed),
            stop.clone(),
        ));
        let simulation = Self {
            scenario: Arc::new(scenario),
            api,
            cluster,
            metrics,
            faults: Arc::default(),
            stop,
        };
        let timeline = simulation.clone();
        tokio::spawn(async move { timeline.run_events().await });
        Ok(simulation)
    }

    async fn run_events(&self) {
        let speed = self.scenario.speed;
        let start = tokio::time::Instant::now();
        let mut events = self.scenario.events.clone();
        events.sort_by(|a, b| a.at_seconds.total_cmp(&b.at_seconds));
        for (i, event) in events.into_iter().enumerate() {
            let at = start + Duration::from_secs_f64(event.at_seconds.max(0.0) / speed);
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep_until(at) => {}
            }
            let id = format!("event-{i}");
            tracing::info!(scenario = %self.scenario.name, fault = ?event.fault, "scenario event");
            self.inject(&id, event.fault.clone());
            if let Some(seconds) = event.for_seconds {
                let this = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs_f64(seconds / speed)).await;
                    this.clear(&[id]);
                });
            }
        }
    }

    /// Starts a fault; the same id replaces an earlier one.
    pub fn inject(&self, id: &str, fault: FaultSpec) {
        self.clear(&[id.to_owned()]);
        match &fault {
            FaultSpec::ApiErrors {
                verb,
                resource,
                rate,
                code,
            } => {
                self.api.faults().add(Rule::Errors {
                    id: id.into(),
                    verb: verb.clone(),
                    resource: resource.clone(),
                    rate: *rate,
                    code: *code,
                });
            }
            FaultSpec::ApiLatency {
                verb,
                resource,
                latency_ms,
            } => {
                self.api.faults().add(Rule::Latency {
                    id: id.into(),
                    verb: verb.clone(),
                    resource: resource.clone(),
                    latency: Duration::from_millis(*latency_ms),
                });
            }
            FaultSpec::WatchLag { resource, lag_ms } => {
                self.api.faults().add(Rule::WatchLag {
                    id: id.into(),
                    resource: resource.clone(),
                    lag: Duration::from_millis(*lag_ms),
                });
            }
            FaultSpec::DropWatches { resource } => self.api.faults().drop_watches(resource),
            FaultSpec::PrometheusUnavailable {} => {
                self.metrics
                    .unavailable
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
            FaultSpec::NodeLoss { node } => {
                if let Some(nodes) = self.api.store().resource("", "nodes") {
                    let _ = self
                        .api
                        .store()
                        .delete(&nodes, "", node, &Default::default());
                }
            }
            FaultSpec::VersionDegradation {
                image,
                error_ratio,
                added_latency_ms,
            } => {
                if let Ok(mut profiles) = self.cluster.profiles.write() {
                    let mut profile = profiles.of(image).clone();
                    profile.error_ratio = *error_ratio;
                    profile.latency_p50_ms += added_latency_ms;
                    profile.latency_p99_ms += added_latency_ms;
                    profile.changes.clear();
                    profiles.by_image.insert(image.clone(), profile);
                }
            }
        }
        if let Ok(mut faults) = self.faults.lock() {
            faults.push((id.to_owned(), fault));
        }
    }

    /// Ends faults by id (all when `ids` is empty); returns the ids ended.
    pub fn clear(&self, ids: &[String]) -> Vec<String> {
        let mut cleared = Vec::new();
        let ended: Vec<(String, FaultSpec)> = match self.faults.lock() {
            Ok(mut faults) => {
                let (gone, kept) = faults
                    .drain(..)
                    .partition(|(id, _)| ids.is_empty() || ids.contains(id));
                *faults = kept;
                gone
            }
            Err(_) => Vec::new(),
        };
        for (id, fault) in ended {
            match fault {
                FaultSpec::PrometheusUnavailable {} => {
                    self.metrics
                        .unavailable
                        .store(false, std::sync::atomic::Ordering::Relaxed);
                }
                FaultSpec::NodeLoss { node } => {
                    if let Some(nodes) = self.api.store().resource("", "nodes") {
                        let _ = self.api.store().create(
                            &nodes,
                            "",
                            crate::cluster::kubelet::node(&node, self.scenario.nodes.capacity),
                        );
                    }
                }
                FaultSpec::VersionDegradation { image, .. } => {
                    if let (Ok(mut profiles), Some(v)) = (
                        self.cluster.profiles.write(),
                        self.scenario.versions.iter().find(|v| v.image == image),
                    ) {
                        profiles.by_image.insert(image, v.profile.clone());
                    }
                }
                _ => {}
            }
            self.api.faults().clear(std::slice::from_ref(&id));
            cleared.push(id);
        }
        cleared
    }

    /// Stops the controllers, traffic and timeline.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

/// Creates plain Kubernetes objects, and their namespaces when missing.
///
/// # Errors
/// The first object the API server refuses.
pub fn apply_manifests(api: &ApiServer, manifests: &[Value]) -> Result<(), ApiError> {
    let store = api.store();
    for object in manifests {
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        let kind = object["kind"].as_str().unwrap_or_default();
        let res = store.registry().by_kind(group, kind).ok_or_else(|| {
            ApiError::bad_request(format!("no resource for {api_version} {kind}"))
        })?;
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_owned();
        if res.namespaced
            && let Some(ns_res) = store.resource("", "namespaces")
            && store.get(&ns_res, "", &namespace).is_err()
        {
            store.create(
                &ns_res,
                "",
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
            )?;
        }
        store.create(&res, &namespace, object.clone())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_scenario_loads() {
        for (name, _) in BUILT_IN {
            if let Err(e) = Scenario::load(name) {
                panic!("{name}: {e}");
            }
        }
    }

    #[test]
    fn a_fault_is_read_as_a_map_or_a_tag() {
        let scenario = |fault: &str| {
            Scenario::parse(
                "faults",
                &format!("name: faults\nevents:\n  - {{atSeconds: 1, fault: {fault}}}\n"),
            )
            .map(|s| s.events[0].fault.clone())
        };
        let wanted = FaultSpec::WatchLag {
            resource: "rollouts".into(),
            lag_ms: 300,
        };
        assert_eq!(
            scenario("{watchLag: {resource: rollouts, lagMs: 300}}").unwrap(),
            wanted
        );
        assert_eq!(
            scenario("!watchLag {resource: rollouts, lagMs: 300}").unwrap(),
            wanted
        );
        assert_eq!(
            scenario("{prometheusUnavailable: {}}").unwrap(),
            FaultSpec::PrometheusUnavailable {}
        );
        let err = scenario("{watchLag: {resource: rollouts, lagMs: 300, extra: 1}}").unwrap_err();
        assert!(err.to_string().contains("extra"), "{err}");
    }
}
