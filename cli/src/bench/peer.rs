//! Argo Rollouts measured beside Sluice, in the same run: its controller
//! (built by `scripts/build-peers` from the pinned module version) on a
//! fresh simulated cluster of the same shape, releasing the same workload:
//! N two-replica workloads, each released from `app:1.0` to `app:2.0` in
//! two batches (`setWeight: 50`, then the rest), no analysis, every release
//! triggered at once. Its client-go sends built-in objects as protobuf,
//! which the simulated API server reads as kube-apiserver does.
//!
//! The figures are taken as Sluice's are: step advance from the same kind
//! of ReplicaSet watch (the last status change of a release's sets until
//! the new set's next scale-up), the controller process's CPU time and peak
//! resident memory, and every request it sends the API server, by verb and
//! resource. Requests are counted from the trigger on (its first version's
//! ReplicaSets, made before, are not a release).

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use futures::StreamExt;
use k8s_openapi::{
    api::{apps::v1::ReplicaSet, core::v1::Namespace},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use serde::Serialize;
use serde_json::json;
use sluice_sim::scenario::Simulation;
use tokio_util::sync::CancellationToken;

use super::probe::{self, Requests};

/// The figures of one peer run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PeerFigures {
    /// Which controller, its version and settings.
    pub controller: String,
    /// Concurrent releases.
    pub rollouts: usize,
    /// When some did not end within the limit: how many.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unfinished: Option<String>,
    /// From the trigger to the last release ended.
    pub wall_seconds: f64,
    /// Last pod of a batch ready until the next batch's scale-up (ms).
    pub advance_p50_ms: Option<f64>,
    /// Same, 99th percentile.
    pub advance_p99_ms: Option<f64>,
    /// How many step advances were timed.
    pub advance_samples: usize,
    /// From the trigger to each release's end (ms), median.
    pub release_p50_ms: Option<f64>,
    /// Same, 99th percentile.
    pub release_p99_ms: Option<f64>,
    /// CPU seconds of the controller process from the trigger on.
    pub cpu_seconds: f64,
    /// Peak resident memory of the controller process (MiB).
    pub peak_rss_mib: f64,
    /// Requests from the controller to the API server per release.
    pub api_calls_per_release: f64,
    /// The same by verb and resource.
    pub api_calls_per_rollout: BTreeMap<String, f64>,
}

/// A built peer: the folder `scripts/build-peers` printed.
#[derive(Debug, Clone)]
pub(crate) struct Argo {
    binary: PathBuf,
    crds: Vec<CustomResourceDefinition>,
    version: String,
}

impl Argo {
    /// Reads the build in `dir`.
    pub(crate) fn load(dir: &Path) -> anyhow::Result<Self> {
        let binary = dir.join("rollouts-controller");
        if !binary.exists() {
            bail!(
                "--argo-rollouts: {} has no rollouts-controller: give the folder scripts/build-peers prints",
                dir.display()
            );
        }
        let mut crds = Vec::new();
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("crds"))
            .with_context(|| format!("--argo-rollouts: {}/crds", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file)?;
            crds.push(
                serde_yaml::from_str(&text)
                    .with_context(|| format!("--argo-rollouts: reading {}", file.display()))?,
            );
        }
        let version = std::fs::read_to_string(dir.join("VERSION"))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|_| "unknown version".into());
        Ok(Self {
            binary,
            crds,
            version,
        })
    }
}

fn rollout_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Rollout"),
        "rollouts",
    )
}

/// A port free now on loopback (the controller's metrics and health
/// endpoints take fixed ports).
pub(super) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn argo_rollout(i: usize, image: &str, ns: &str) -> serde_json::Value {
    let app = format!("app-{i}");
    json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": app, "namespace": ns},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": app}},
            "template": {"metadata": {"labels": {"app": app}},
                         "spec": {"containers": [{"name": "app", "image": image}]}},
            "strategy": {"canary": {"steps": [{"setWeight": 50}]}},
        },
    })
}

#[derive(Debug, Default)]
struct Seen {
    /// Per ReplicaSet uid: made after the trigger, its spec replicas, its
    /// status as last seen.
    sets: HashMap<String, (bool, i32, String)>,
    last_status: HashMap<String, Instant>,
    advances: Vec<Duration>,
    /// Per rollout: its stable ReplicaSet's hash as last seen, and whether
    /// it was healthy (phase Healthy, both replicas available).
    rollouts: HashMap<String, (String, bool)>,
    /// Per rollout: the stable hash at the trigger.
    before: HashMap<String, String>,
    /// Per rollout: when its release ended.
    ended: HashMap<String, Instant>,
    armed: bool,
}

fn owner_rollout(rs: &ReplicaSet) -> Option<String> {
    rs.owner_references()
        .iter()
        .find(|o| o.kind == "Rollout" && o.api_version.starts_with("argoproj.io/"))
        .map(|o| format!("{}/{}", rs.namespace().unwrap_or_default(), o.name))
}

fn watch(client: &kube::Client, seen: &Arc<Mutex<Seen>>, prefix: &str) {
    let ours = {
        let prefix = prefix.to_owned();
        move |ns: Option<String>| ns.is_some_and(|ns| ns.starts_with(&prefix))
    };
    let ours_too = ours.clone();
    let sets = Api::<ReplicaSet>::all(client.clone());
    let s = Arc::clone(seen);
    tokio::spawn(async move {
        let mut events =
            std::pin::pin!(watcher(sets, watcher::Config::default()).applied_objects());
        while let Some(Ok(rs)) = events.next().await {
            if !ours(rs.namespace()) {
                continue;
            }
            let Some(key) = owner_rollout(&rs) else {
                continue;
            };
            let spec = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
            let status = rs.status.as_ref().map_or_else(String::new, |s| {
                format!("{}/{}", s.replicas, s.ready_replicas.unwrap_or(0))
            });
            let now = Instant::now();
            let mut seen = s.lock().unwrap_or_else(|e| e.into_inner());
            let uid = rs.uid().unwrap_or_default();
            let armed = seen.armed;
            let (is_new, before, old_status) =
                seen.sets
                    .get(&uid)
                    .cloned()
                    .unwrap_or((armed, spec, String::new()));
            if is_new
                && spec > before
                && before >= 1
                && let Some(at) = seen.last_status.get(&key)
            {
                let sample = now.duration_since(*at);
                seen.advances.push(sample);
            }
            if status != old_status {
                seen.last_status.insert(key, now);
            }
            seen.sets.insert(uid, (is_new, spec, status));
        }
    });
    let rollouts = Api::<DynamicObject>::all_with(client.clone(), &rollout_resource());
    let s = Arc::clone(seen);
    tokio::spawn(async move {
        let mut events =
            std::pin::pin!(watcher(rollouts, watcher::Config::default()).applied_objects());
        while let Some(Ok(r)) = events.next().await {
            if !ours_too(r.namespace()) {
                continue;
            }
            let key = format!("{}/{}", r.namespace().unwrap_or_default(), r.name_any());
            let status = &r.data["status"];
            let stable = status["stableRS"].as_str().unwrap_or_default().to_owned();
            let phase = status["phase"].as_str().unwrap_or_default().to_owned();
            let healthy = phase == "Healthy" && status["availableReplicas"] == json!(2);
            let mut seen = s.lock().unwrap_or_else(|e| e.into_inner());
            let released = seen
                .before
                .get(&key)
                .is_some_and(|b| *b != stable && !stable.is_empty());
            if released && healthy {
                seen.ended.entry(key.clone()).or_insert_with(Instant::now);
            }
            seen.rollouts.insert(key, (stable, healthy));
        }
    });
}

/// Runs Argo Rollouts' controller at `qps` with `n` releases against a
/// fresh simulated cluster, or the cluster `given` names (in namespaces of
/// its own, deleted at the end; its requests then counted from its own
/// `controller_clientset_k8s_request_total`).
pub(crate) async fn run(
    argo: &Argo,
    n: usize,
    qps: f64,
    log: &str,
    given: Option<&Path>,
) -> anyhow::Result<PeerFigures> {
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let mut keep: Vec<Box<dyn std::any::Any + Send>> = Vec::new();
    let by_kind = Requests::default();
    let counting = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (local, kubeconfig, prefix) = match given {
        None => {
            let mut scenario = super::scenario(0, 0, 0);
            scenario.name = format!("bench-argo-{n}");
            scenario.nodes.count = (3 * n as u32).div_ceil(100).max(1);
            let sim = Simulation::start(scenario)
                .map_err(|e| anyhow::anyhow!("starting the simulated cluster: {}", e.message))?;
            let local = kube::Client::new(sim.api.router(), "default");
            let router = by_kind.counting(sim.api.router(), Arc::clone(&counting));
            let addr = super::ground::serve(router, &stop).await?;
            let (dir, kubeconfig) = super::kubeconfig_for(addr)?;
            keep.push(Box::new(sim));
            keep.push(Box::new(dir));
            (local, kubeconfig, "team-".to_owned())
        }
        Some(path) => (
            super::ground::client_for(path).await?,
            path.to_owned(),
            format!("argo-{}-{n}-", super::ground::run_id()),
        ),
    };
    let crds: Api<CustomResourceDefinition> = Api::all(local.clone());
    for crd in &argo.crds {
        match crds.create(&PostParams::default(), crd).await {
            Err(kube::Error::Api(e)) if e.code == 409 && given.is_some() => {}
            done => {
                done.with_context(|| format!("installing the CRD {}", crd.name_any()))?;
            }
        }
    }
    let namespaces: Api<Namespace> = Api::all(local.clone());
    let made: Vec<String> = (0..n.clamp(1, 20))
        .map(|k| format!("{prefix}{k}"))
        .collect();
    for ns in made.iter().cloned().chain(["argo-rollouts".to_owned()]) {
        let object: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}}))?;
        match namespaces.create(&PostParams::default(), &object).await {
            Err(kube::Error::Api(e)) if e.code == 409 && ns == "argo-rollouts" => {}
            done => {
                done?;
            }
        }
    }
    let metrics_port = free_port()?;
    let level = if log.contains("debug") {
        "debug"
    } else {
        "warn"
    };
    let mut child = tokio::process::Command::new(&argo.binary)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--leader-elect=false", "--loglevel", level])
        .args(["--metricsPort", &metrics_port.to_string()])
        .args(["--healthzPort", &free_port()?.to_string()])
        .args(["--qps", &qps.to_string()])
        .args(["--burst", &((qps * 2.0).round() as u64).to_string()])
        .env_remove("KUBECONFIG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", argo.binary.display()))?;
    let pid = child
        .id()
        .map(|p| p.to_string())
        .context("Argo Rollouts' controller exited at once")?;

    let seen = Arc::new(Mutex::new(Seen::default()));
    watch(&local, &seen, &prefix);
    let ns = |i: usize| format!("{prefix}{}", i % 20);
    let api = |i: usize| {
        Api::<DynamicObject>::namespaced_with(local.clone(), &ns(i), &rollout_resource())
    };
    // A CRD just made is served a moment later on a real API server.
    let all = Api::<DynamicObject>::all_with(local.clone(), &rollout_resource());
    for _ in 0..100 {
        if all
            .list(&kube::api::ListParams::default().limit(1))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in 0..n {
        let object: DynamicObject =
            serde_json::from_value(argo_rollout(i, "registry.example/app:1.0", &ns(i)))?;
        api(i)
            .create(&PostParams::default(), &object)
            .await
            .with_context(|| format!("creating Argo Rollout {i}"))?;
    }
    // Every first version up and healthy before the trigger. A real
    // cluster's nodes may take minutes to start a thousand rollouts' pods
    // (and to finish deleting the run before's).
    let first = if given.is_some() { n / 2 } else { n / 10 };
    let deadline = Instant::now() + Duration::from_secs(60 + first as u64);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("Argo Rollouts' controller exited with {status}");
        }
        let healthy = {
            let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            seen.rollouts
                .values()
                .filter(|(stable, healthy)| *healthy && !stable.is_empty())
                .count()
        };
        if healthy >= n {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {healthy} of {n} Argo Rollouts became healthy on their first version");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    {
        let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.before = seen
            .rollouts
            .iter()
            .map(|(k, (stable, _))| (k.clone(), stable.clone()))
            .collect();
        seen.armed = true;
    }
    counting.store(true, std::sync::atomic::Ordering::Relaxed);
    let metrics_url = format!("http://127.0.0.1:{metrics_port}/metrics");
    let requests_before = match given {
        Some(_) => argo_requests(&reqwest::get(&metrics_url).await?.text().await?),
        None => BTreeMap::new(),
    };
    let cpu_before = probe::process_cpu_seconds(&pid);
    let began = Instant::now();
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": super::GOOD}]}}}});
    for i in 0..n {
        api(i)
            .patch(
                &format!("app-{i}"),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .with_context(|| format!("changing Argo Rollout {i}"))?;
    }
    // Sluice's allowance (its pods take that long to start on a loaded
    // cluster), plus what its request rate alone costs: n releases of about
    // 20 requests each take n * 20 / qps seconds.
    let limit = Duration::from_secs(120 + n as u64 / 10 + (n as f64 * 30.0 / qps) as u64);
    let unfinished = loop {
        let ended = seen.lock().unwrap_or_else(|e| e.into_inner()).ended.len();
        if ended >= n {
            break None;
        }
        if began.elapsed() > limit {
            break Some(format!(
                "{} of {n} not ended after {} s",
                n - ended,
                limit.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    counting.store(false, std::sync::atomic::Ordering::Relaxed);
    let cpu = probe::process_cpu_seconds(&pid) - cpu_before;
    let (_, peak) = probe::memory(&pid);
    let requests: BTreeMap<String, f64> = match given {
        Some(_) => {
            let after = argo_requests(&reqwest::get(&metrics_url).await?.text().await?);
            after
                .into_iter()
                .map(|(k, v)| {
                    let since = v.saturating_sub(requests_before.get(&k).copied().unwrap_or(0));
                    (k, since as f64 / n.max(1) as f64)
                })
                .filter(|(_, v)| *v > 0.0)
                .collect()
        }
        None => by_kind.per(n),
    };
    let _ = child.kill().await;
    stop.cancel();
    if given.is_some() {
        for ns in &made {
            let _ = namespaces
                .delete(ns, &kube::api::DeleteParams::background())
                .await;
        }
    }
    drop(keep);

    let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    let releases: Vec<Duration> = seen
        .ended
        .values()
        .map(|t| t.duration_since(began))
        .collect();
    let wall = releases.iter().max().copied().unwrap_or_default();
    Ok(PeerFigures {
        controller: format!("Argo Rollouts {}, QPS {qps}", argo.version),
        rollouts: n,
        unfinished,
        wall_seconds: wall.as_secs_f64(),
        advance_p50_ms: probe::quantile_ms(&seen.advances, 0.5),
        advance_p99_ms: probe::quantile_ms(&seen.advances, 0.99),
        advance_samples: seen.advances.len(),
        release_p50_ms: probe::quantile_ms(&releases, 0.5),
        release_p99_ms: probe::quantile_ms(&releases, 0.99),
        cpu_seconds: cpu,
        peak_rss_mib: peak as f64 / 1_048_576.0,
        api_calls_per_release: requests.values().sum(),
        api_calls_per_rollout: requests,
    })
}

/// `controller_clientset_k8s_request_total` of Argo Rollouts' metrics
/// page, summed by `VERB kind` (its verbs upper-cased).
fn argo_requests(text: &str) -> BTreeMap<String, u64> {
    probe::summed(text, "controller_clientset_k8s_request_total", |label| {
        format!("{} {}", label("verb").to_uppercase(), label("kind"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argos_request_counts_are_read_by_verb_and_kind() {
        let page = r#"controller_clientset_k8s_request_total{kind="replicasets",name="N/A",namespace="a",status_code="200",verb="List"} 1
controller_clientset_k8s_request_total{kind="replicasets",name="x",namespace="b",status_code="200",verb="List"} 2
controller_clientset_k8s_request_total{kind="rollouts",name="x",namespace="b",status_code="200",verb="Update"} 5
"#;
        let by = argo_requests(page);
        assert_eq!(by["LIST replicasets"], 3);
        assert_eq!(by["UPDATE rollouts"], 5);
    }

    #[test]
    fn a_releases_sets_are_the_ones_an_argo_rollout_owns() {
        let rs = |api_version: &str, kind: &str| -> ReplicaSet {
            serde_json::from_value(json!({"metadata": {"name": "app-1-abc", "namespace": "team-1",
                "ownerReferences": [{"apiVersion": api_version, "kind": kind, "name": "app-1", "uid": "u"}]}}))
            .unwrap()
        };
        assert_eq!(
            owner_rollout(&rs("argoproj.io/v1alpha1", "Rollout")).as_deref(),
            Some("team-1/app-1")
        );
        assert_eq!(owner_rollout(&rs("apps/v1", "Deployment")), None);
        assert_eq!(owner_rollout(&rs("sluice.dev/v1alpha1", "Rollout")), None);
    }

    #[test]
    fn the_peers_workload_is_two_replicas_released_in_two_batches() {
        let r = argo_rollout(21, "registry.example/app:1.0", "team-1");
        assert_eq!(r["metadata"]["namespace"], "team-1");
        assert_eq!(r["spec"]["replicas"], 2);
        assert_eq!(
            r["spec"]["strategy"]["canary"]["steps"],
            json!([{"setWeight": 50}])
        );
        assert_eq!(
            r["spec"]["template"]["spec"]["containers"][0]["image"],
            "registry.example/app:1.0"
        );
    }

    #[test]
    fn a_build_folder_without_the_controller_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = Argo::load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("rollouts-controller") && err.contains("build-peers"),
            "{err}"
        );
    }
}
