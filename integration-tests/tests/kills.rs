//! The executor killed with SIGKILL again and again while many rollouts are
//! under way, every part a real process: the simulator (cluster, traffic
//! and metrics behind HTTPRoutes), the planner, the gate and the executor,
//! restarted after each kill with nothing carried over.
//!
//! The test watches the cluster itself, independently of the executor, and
//! checks every version of every Rollout and HTTPRoute it sees: each
//! rollout ends as its version deserves, no step starts twice, a step
//! never goes back, and once a rollout decided to roll back no route sends
//! the canary any traffic again.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests stop at the first failed step

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt;
use kube::{
    Api, Client,
    api::{DynamicObject, GroupVersionKind, PostParams},
    discovery::ApiResource,
    runtime::{WatchStreamExt, watcher},
};
use sluice_executor::crd::{Phase, Rollout};
use sluice_integration_tests::process::{self, Service};

/// Rollouts under way at once; every third one's new version is bad.
const ROLLOUTS: usize = 6;
/// Kills during the release.
const KILLS: u64 = 5;

fn bad(i: usize) -> bool {
    i % 3 == 2
}

/// One Deployment, Service and HTTPRoute per app, load through each route,
/// and a new version that is healthy or answers 30% errors.
fn scenario() -> String {
    let mut manifests = String::new();
    let mut load = String::new();
    for i in 0..ROLLOUTS {
        manifests.push_str(&format!(
            r#"
  - apiVersion: apps/v1
    kind: Deployment
    metadata: {{name: app-{i}, namespace: default, labels: {{app: app-{i}}}}}
    spec:
      replicas: 4
      selector: {{matchLabels: {{app: app-{i}}}}}
      template:
        metadata: {{labels: {{app: app-{i}}}}}
        spec:
          containers:
            - {{name: app, image: "registry.example/app:1.0", ports: [{{containerPort: 8080}}]}}
  - apiVersion: v1
    kind: Service
    metadata: {{name: app-{i}, namespace: default}}
    spec:
      selector: {{app: app-{i}}}
      ports: [{{port: 80, targetPort: 8080}}]
  - apiVersion: gateway.networking.k8s.io/v1
    kind: HTTPRoute
    metadata: {{name: app-{i}, namespace: default}}
    spec:
      parentRefs: [{{name: gateway}}]
      rules: [{{backendRefs: [{{name: app-{i}, port: 80}}]}}]
"#
        ));
        load.push_str(&format!(
            "  - {{target: {{httpRoute: app-{i}}}, rps: 100}}\n"
        ));
    }
    format!(
        r#"name: many-under-kills
seed: 11
nodes: {{count: 3, capacity: 110}}
versions:
  - image: registry.example/app:1.0
    profile: {{errorRatio: 0.001, latencyP50Ms: 20, latencyP99Ms: 80, startMinSeconds: 0.3, startMaxSeconds: 0.6, readyAfterSeconds: 0.2}}
  - image: registry.example/app:2.0
    profile: {{errorRatio: 0.001, latencyP50Ms: 20, latencyP99Ms: 80, startMinSeconds: 0.3, startMaxSeconds: 0.6, readyAfterSeconds: 0.2}}
  - image: registry.example/app:2.0-bad
    profile: {{errorRatio: 0.3, latencyP50Ms: 20, latencyP99Ms: 80, startMinSeconds: 0.3, startMaxSeconds: 0.6, readyAfterSeconds: 0.2}}
load:
{load}manifests:{manifests}"#
    )
}

fn rollout(i: usize) -> Rollout {
    let image = if bad(i) {
        "registry.example/app:2.0-bad"
    } else {
        "registry.example/app:2.0"
    };
    serde_yaml::from_str(&format!(
        r#"
apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata: {{name: app-{i}, namespace: default}}
spec:
  workload: {{kind: Deployment, name: app-{i}}}
  images: [{{container: app, image: "{image}"}}]
  traffic: {{stableService: app-{i}, httpRoute: {{name: app-{i}}}}}
  strategy:
    canary:
      progressDeadline: 60s
      steps:
        - {{replicas: 25%, traffic: 20, analyses: [health], pause: {{duration: 1s}}}}
        - {{replicas: 50%, traffic: 50, analyses: [health]}}
  analyses:
    - name: health
      metrics:
        - name: success-rate
          template: request-success-rate
          successCondition: {{threshold: {{min: 0.95}}}}
          failureCondition: {{threshold: {{max: 0.9}}}}
          initialDelay: 2s
          interval: 1s
          count: 2
          inconclusiveLimit: 2
"#
    ))
    .unwrap()
}

/// Every version of an object the test saw, with its resourceVersion.
type Seen<T> = Arc<Mutex<Vec<(u64, T)>>>;

fn record<K>(api: Api<K>, seen: Seen<K>) -> tokio::task::JoinHandle<()>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(event) = events.next().await {
            if let Ok(object) = event {
                let rv = object
                    .meta()
                    .resource_version
                    .as_deref()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                seen.lock().unwrap().push((rv, object));
            }
        }
    })
}

/// An executor; a restarted one takes the Lease over only once the dead
/// one's claim has lapsed, so the claim is kept short. `extra` adds flags.
fn executor(planner: &Service, gate: &Service, kubeconfig: &str, extra: &[&str]) -> Service {
    let mut args = vec!["--lease-seconds", "1"];
    args.extend_from_slice(extra);
    process::executor(planner, gate, kubeconfig, &args)
}
/// The share of an HTTPRoute's requests its rules send to `canary`.
fn canary_weight(route: &DynamicObject, canary: &str) -> u64 {
    route.data["spec"]["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|rule| rule["backendRefs"].as_array().into_iter().flatten())
        .filter(|b| b["name"] == canary)
        .map(|b| b["weight"].as_u64().unwrap_or(1))
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn rollouts_end_right_with_no_step_twice_while_the_executor_is_killed_again_and_again() {
    let spread = under_kills(1, 1).await;
    assert_eq!(spread, 1);
}

/// Three replicas share six shards; one of them, a seeded pick, is killed
/// at each kill and started again, so shards move to the others when its
/// Leases expire and back when it rejoins.
#[tokio::test(flavor = "multi_thread")]
async fn sharded_rollouts_end_right_with_no_step_twice_while_replicas_are_killed() {
    let spread = under_kills(3, 6).await;
    // A killed replica's name stays on its Leases until they are taken
    // over, so more than three names can be seen at once.
    assert!(
        spread >= 3,
        "the shards were spread over the replicas: {spread}"
    );
}

/// Runs the scenario with `replicas` executors over `shards` shards,
/// killing one at each kill, checks every rollout and route the test saw,
/// and returns the most replicas seen holding shards at one time.
async fn under_kills(replicas: usize, shards: u32) -> usize {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("scenario.yaml");
    std::fs::write(&file, scenario()).unwrap();
    let kubeconfig = dir.path().join("kubeconfig").display().to_string();
    let (_sim, metrics) = process::simulator(file.to_str().unwrap(), &kubeconfig);
    let planner = Service::start("sluice-planner", &[]);
    let gate = Service::start(
        "sluice-gate",
        &["--prometheus-url", &format!("http://{metrics}")],
    );

    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&kubeconfig).unwrap(),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let client = Client::try_from(config).unwrap();
    let rollouts: Api<Rollout> = Api::default_namespaced(client.clone());
    let route_kind = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
        "httproutes",
    );
    let routes: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &route_kind);
    let seen_rollouts: Seen<Rollout> = Arc::default();
    let seen_routes: Seen<DynamicObject> = Arc::default();
    let watches = [
        record(rollouts.clone(), Arc::clone(&seen_rollouts)),
        record(routes.clone(), Arc::clone(&seen_routes)),
    ];

    // Let the stable version serve and build a traffic history first.
    tokio::time::sleep(Duration::from_secs(4)).await;
    // The rollouts start a second and a half apart, so each kill finds
    // them at different steps and states.
    let shards_flag = shards.to_string();
    let start = |r: usize, generation: u64| {
        let identity = format!("replica-{r}-{generation}");
        executor(
            &planner,
            &gate,
            &kubeconfig,
            &["--shards", &shards_flag, "--identity", &identity],
        )
    };
    let mut running: Vec<Service> = (0..replicas).map(|r| start(r, 0)).collect();
    let (holders, held) = record_holders(client.clone());
    let creating = {
        let rollouts = rollouts.clone();
        tokio::spawn(async move {
            for i in 0..ROLLOUTS {
                rollouts
                    .create(&PostParams::default(), &rollout(i))
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(1_500)).await;
            }
        })
    };
    let mut landed = 0;
    for k in 0..KILLS {
        tokio::time::sleep(process::seeded_delay(
            29,
            k,
            Duration::from_secs(2),
            Duration::from_secs(5),
        ))
        .await;
        let list = rollouts.list(&Default::default()).await.unwrap().items;
        let under_way: Vec<String> = list
            .iter()
            .filter_map(|r| r.status.as_ref())
            .filter(|s| {
                !matches!(
                    s.phase,
                    Phase::Succeeded | Phase::RolledBack | Phase::Failed
                )
            })
            .map(|s| {
                format!(
                    "{:?} step {} {:?}",
                    s.phase,
                    s.current_step + 1,
                    s.step_state
                )
            })
            .collect();
        if under_way.is_empty() {
            break;
        }
        let victim = usize::try_from(k).unwrap() * 7 % replicas;
        eprintln!("kill {} (replica {victim}): {under_way:?}", k + 1);
        landed += 1;
        running[victim].kill();
        running[victim] = start(victim, k + 1);
    }
    creating.await.unwrap();
    assert!(landed >= 3, "only {landed} kills landed mid-release");

    let deadline = Instant::now() + Duration::from_secs(180);
    let ended = loop {
        let list = rollouts.list(&Default::default()).await.unwrap().items;
        let done = list.iter().all(|r| {
            r.status.as_ref().is_some_and(|s| {
                matches!(
                    s.phase,
                    Phase::Succeeded | Phase::RolledBack | Phase::Failed
                )
            })
        });
        if done {
            break list;
        }
        assert!(
            Instant::now() < deadline,
            "not every rollout ended: {:#?}",
            list.iter()
                .map(|r| (
                    r.metadata.name.clone(),
                    r.status.clone().map(|s| (s.phase, s.message))
                ))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // Let the last route writes reach the watch.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for watch in watches {
        watch.abort();
    }
    holders.abort();

    let seen_rollouts = seen_rollouts.lock().unwrap().clone();
    let seen_routes = seen_routes.lock().unwrap().clone();
    for i in 0..ROLLOUTS {
        let name = format!("app-{i}");
        let last = ended
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(&name))
            .unwrap();
        let status = last.status.clone().unwrap();
        let want = if bad(i) {
            Phase::RolledBack
        } else {
            Phase::Succeeded
        };
        assert_eq!(status.phase, want, "{name}: {status:#?}");

        let versions: Vec<&(u64, Rollout)> = seen_rollouts
            .iter()
            .filter(|(_, r)| r.metadata.name.as_deref() == Some(&name))
            .collect();
        // Each step started once: one start time for each index, ever.
        let mut starts: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
        let mut step = 0;
        for (_, r) in &versions {
            let Some(s) = &r.status else { continue };
            for record in &s.steps {
                if let Some(started) = &record.started {
                    starts
                        .entry(record.index)
                        .or_default()
                        .insert(started.clone());
                }
            }
            assert!(
                s.current_step >= step,
                "{name}: went back from step {step} to {}",
                s.current_step
            );
            step = s.current_step;
        }
        for (index, times) in &starts {
            assert_eq!(times.len(), 1, "{name}: step {index} started at {times:?}");
        }
        if !bad(i) {
            assert_eq!(starts.len(), 3, "{name}: {starts:?}");
        }

        // Once the decision to roll back is in the cluster, no route write
        // sends the canary anything.
        let decided = versions
            .iter()
            .filter(|(_, r)| {
                r.status
                    .as_ref()
                    .is_some_and(|s| matches!(s.phase, Phase::RollingBack | Phase::RolledBack))
            })
            .map(|(rv, _)| *rv)
            .min();
        let canary = format!("{name}-canary");
        let route_versions: Vec<(u64, u64)> = seen_routes
            .iter()
            .filter(|(_, r)| r.metadata.name.as_deref() == Some(&name))
            .map(|(rv, r)| (*rv, canary_weight(r, &canary)))
            .collect();
        if bad(i) {
            let decided = decided.unwrap_or_else(|| panic!("{name} never decided to roll back"));
            assert!(
                route_versions.iter().any(|(rv, w)| *rv < decided && *w > 0),
                "{name}: the canary had traffic before the decision: {route_versions:?}"
            );
            let late: Vec<_> = route_versions
                .iter()
                .filter(|(rv, w)| *rv > decided && *w > 0)
                .collect();
            assert!(
                late.is_empty(),
                "{name}: canary traffic after the rollback decision at {decided}: {late:?}"
            );
        } else {
            assert!(decided.is_none(), "{name} started to roll back");
        }
        let (_, last_weight) = route_versions.last().copied().unwrap();
        assert_eq!(last_weight, 0, "{name}: the route is restored");
    }
    *held.lock().unwrap()
}

/// The two tests run one after the other: each runs a cluster and several
/// executors, and two at once on a small machine would slow both.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Follows the executor's shard Leases: the most distinct replicas
/// holding them at one time.
fn record_holders(client: Client) -> (tokio::task::JoinHandle<()>, Arc<Mutex<usize>>) {
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::default_namespaced(client);
    let most: Arc<Mutex<usize>> = Arc::default();
    let seen = Arc::clone(&most);
    let task = tokio::spawn(async move {
        let mut holders: BTreeMap<String, String> = BTreeMap::new();
        let mut events = watcher(leases, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(event) = events.next().await {
            let Ok(lease) = event else { continue };
            let name = lease.metadata.name.clone().unwrap_or_default();
            if name.starts_with("sluice-executor") && !name.contains("-member-") {
                match lease.spec.and_then(|s| s.holder_identity) {
                    Some(holder) => holders.insert(name, holder),
                    None => holders.remove(&name),
                };
                let now = holders.values().collect::<BTreeSet<_>>().len();
                let mut most = seen.lock().unwrap();
                *most = (*most).max(now);
            }
        }
    });
    (task, most)
}
