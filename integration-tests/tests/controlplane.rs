//! Sluice against a real Kubernetes control plane (kube-apiserver and
//! kube-controller-manager built from the pinned Go modules, etcd), with
//! the simulator as its node fleet.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests stop at the first failed step

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::{
    Api,
    api::{ListParams, PostParams},
};
use serde_json::json;
use sluice_executor::{
    crd::{Phase, Rollout, RolloutStatus, StepState},
    keys,
    stack::{self, Services},
};
use sluice_gate::{
    prometheus::{ClientOptions, Prometheus},
    service::GateService,
};
use sluice_integration_tests::controlplane::ControlPlane;
use sluice_proto::v1::{metrics_gate_server::MetricsGateServer, planner_server::PlannerServer};
use tokio_util::sync::CancellationToken;

mod fleet;

/// A control plane with Sluice's and the routers' CRDs, the agent's nodes
/// (with its traffic and metrics), a planner, a gate reading the agent's
/// metrics, and the executor, each started as the demo starts them
/// (`sluice_executor::stack`).
struct Platform {
    plane: ControlPlane,
    client: kube::Client,
    services: Services,
    /// Stops the running executor.
    executor: std::sync::Mutex<CancellationToken>,
    restarts: std::sync::atomic::AtomicUsize,
    stop: CancellationToken,
}

impl Platform {
    /// Stops the executor and starts a fresh one with nothing carried
    /// over, as a replaced executor would: it leads once the old one has
    /// given the Lease up.
    async fn restart_controller(&self) {
        let n = 1 + self
            .restarts
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let next = start_controller(
            &self.client,
            self.services,
            &self.stop,
            &format!("executor-{n}"),
        )
        .await;
        let old = std::mem::replace(&mut *self.executor.lock().unwrap(), next);
        old.cancel();
    }
}

/// The executor `serve` runs (API, Lease, controller, drain), on the cluster
/// `client` reaches, as `identity`.
async fn start_controller(
    client: &kube::Client,
    services: Services,
    stop: &CancellationToken,
    identity: &str,
) -> CancellationToken {
    let token = stop.child_token();
    let client = client.clone();
    stack::executor(
        stack::config(services, identity),
        sluice_executor::Cluster::Given(Box::new(move |_| client)),
        token.clone(),
    )
    .await
    .unwrap();
    token
}

async fn platform(stop: &CancellationToken, loads: &str) -> Platform {
    let plane = ControlPlane::start().await;
    // Sluice's own CRD and the upstream routers' (Gateway API, Istio).
    let crds = [
        concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/crds/rollouts.yaml"),
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../simulator/crds/gateway-api-v1.6.1/httproutes.yaml"
        ),
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../simulator/crds/istio-1.30.3/virtualservices.yaml"
        ),
    ];
    for crd in crds {
        let (ok, out) = plane.kubectl(&["apply", "--server-side", "-f", crd]);
        assert!(ok, "{crd} is accepted by a real API server: {out}");
    }
    let (ok, out) = plane.kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/rollouts.sluice.dev",
        "crd/httproutes.gateway.networking.k8s.io",
        "crd/virtualservices.networking.istio.io",
        "--timeout=60s",
    ]);
    assert!(ok, "{out}");
    let client = plane.client().await;
    let metrics_addr = fleet::start(&client, loads, stop).await;
    let prometheus = Prometheus::new(ClientOptions::new(
        format!("http://{metrics_addr}").parse().unwrap(),
    ))
    .unwrap();
    let services = stack::services(
        PlannerServer::new(sluice_planner::service::PlannerService),
        MetricsGateServer::new(GateService::new(prometheus, stop.clone())),
        stop.clone(),
    )
    .await
    .unwrap();
    let executor = start_controller(&client, services, stop, "executor-0").await;
    Platform {
        plane,
        client,
        services,
        executor: std::sync::Mutex::new(executor),
        restarts: std::sync::atomic::AtomicUsize::new(0),
        stop: stop.clone(),
    }
}

/// Creates the Rollout `yaml` describes.
async fn create_rollout(client: &kube::Client, yaml: &str) -> Api<Rollout> {
    let rollout: Rollout = serde_yaml::from_str(yaml).unwrap();
    let rollouts: Api<Rollout> = Api::default_namespaced(client.clone());
    rollouts
        .create(&PostParams::default(), &rollout)
        .await
        .unwrap();
    rollouts
}

/// Applies manifests with kubectl, as a user would.
fn apply(plane: &ControlPlane, manifests: &[serde_json::Value]) {
    for manifest in manifests {
        // A file of its own: tests run side by side in one process.
        let file = tempfile::Builder::new().suffix(".json").tempfile().unwrap();
        std::fs::write(file.path(), manifest.to_string()).unwrap();
        let path = file.path();
        let (ok, out) = plane.kubectl(&["apply", "-f", path.to_str().unwrap()]);
        assert!(ok, "{out}");
    }
}

/// The rollout's status once `until` holds for its phase, or after 90 s.
async fn wait_rollout_until(
    rollouts: &Api<Rollout>,
    name: &str,
    until: impl Fn(Phase) -> bool,
) -> RolloutStatus {
    let mut status = RolloutStatus::default();
    for _ in 0..900 {
        status = rollouts.get(name).await.unwrap().status.unwrap_or_default();
        if until(status.phase) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    status
}

async fn wait_rollout(rollouts: &Api<Rollout>, name: &str) -> Phase {
    wait_rollout_until(rollouts, name, |p| {
        matches!(p, Phase::Succeeded | Phase::RolledBack | Phase::Failed)
    })
    .await
    .phase
}

/// Waits until a Deployment has `replicas` ready and available, failing
/// with the controller manager's log if it never does.
async fn wait_deployment_ready(
    plane: &ControlPlane,
    deployments: &Api<Deployment>,
    name: &str,
    replicas: i32,
) {
    for _ in 0..600 {
        let d = deployments.get(name).await.unwrap();
        let status = d.status.unwrap_or_default();
        if status.ready_replicas == Some(replicas) && status.available_replicas == Some(replicas) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the real controllers and the agent never brought {name} up; kcm log:\n{}",
        plane.log("kube-controller-manager")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statefulset_release_on_a_real_control_plane() {
    use k8s_openapi::api::apps::v1::StatefulSet;
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let p = platform(&stop, "[]").await;
    let (plane, client) = (&p.plane, p.client.clone());
    let sets: Api<StatefulSet> = Api::default_namespaced(client.clone());
    let db: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "db"},
        "spec": {"replicas": 3, "serviceName": "db", "podManagementPolicy": "Parallel", "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db", "image": "registry.example/db:1.0"}]}}}
    }))
    .unwrap();
    sets.create(&PostParams::default(), &db).await.unwrap();
    let mut ready = false;
    for _ in 0..600 {
        if sets
            .get("db")
            .await
            .unwrap()
            .status
            .and_then(|s| s.ready_replicas)
            == Some(3)
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        ready,
        "the real StatefulSet controller and the agent bring db up; kcm log:\n{}",
        plane.log("kube-controller-manager")
    );
    let rollouts = create_rollout(&client,
        "apiVersion: sluice.dev/v1alpha1\nkind: Rollout\nmetadata: {name: db}\nspec:\n  workload: {kind: StatefulSet, name: db}\n  images: [{container: db, image: registry.example/db:2.0}]\n  strategy: {canary: {steps: [{replicas: 1, pause: {duration: 1s}}]}}\n",
    )
    .await;
    let phase = wait_rollout(&rollouts, "db").await;
    if phase != Phase::Succeeded {
        let (_, pods) = plane.kubectl(&[
            "get",
            "pods,sts,controllerrevisions",
            "-o",
            "wide",
            "-L",
            "controller-revision-hash",
        ]);
        let (_, sts) = plane.kubectl(&["get", "sts", "db", "-o", "yaml"]);
        panic!(
            "not released: {:#?}\n{pods}\n{sts}",
            rollouts
                .get("db")
                .await
                .unwrap()
                .status
                .map(|s| (s.phase, s.message))
        );
    }
    let db = sets.get("db").await.unwrap();
    assert_eq!(
        db.spec
            .unwrap()
            .update_strategy
            .unwrap()
            .rolling_update
            .unwrap()
            .partition,
        Some(0),
        "the partition is given back"
    );
    assert!(
        db.metadata
            .annotations
            .unwrap_or_default()
            .keys()
            .all(|k| !k.starts_with("sluice.dev/"))
    );
}

/// Every status the Rollouts of the default namespace are written with,
/// in order, from a watch of its own.
fn written_statuses(
    client: &kube::Client,
) -> (
    tokio::task::JoinHandle<()>,
    Arc<std::sync::Mutex<Vec<sluice_executor::crd::RolloutStatus>>>,
) {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let rollouts: Api<sluice_executor::crd::Rollout> = Api::default_namespaced(client.clone());
    let record = Arc::clone(&seen);
    let task = tokio::spawn(async move {
        let mut events = watcher(rollouts, watcher::Config::default())
            .applied_objects()
            .boxed();
        while let Some(Ok(r)) = events.next().await {
            if let Some(status) = r.status {
                let mut seen = record.lock().unwrap();
                if seen.last() != Some(&status) {
                    seen.push(status);
                }
            }
        }
    });
    (task, seen)
}

/// Every `spec.replicas` the ReplicaSet running `image` is given, in order,
/// from a watch independent of the executor's.
/// Whether a ReplicaSet's pods run `image`.
fn runs_image(rs: &ReplicaSet, image: &str) -> bool {
    rs.spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.spec.as_ref())
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.as_deref())
        == Some(image)
}

/// The replicas and ready pods of the ReplicaSet running web:2.0.
async fn ready_new(client: &kube::Client) -> (i32, i32) {
    let sets: Api<ReplicaSet> = Api::default_namespaced(client.clone());
    sets.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .find(|rs| runs_image(rs, "registry.example/web:2.0"))
        .map_or((0, 0), |rs| {
            (
                rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                rs.status
                    .as_ref()
                    .and_then(|s| s.ready_replicas)
                    .unwrap_or(0),
            )
        })
}

fn new_replicas(
    client: &kube::Client,
    image: &str,
) -> (tokio::task::JoinHandle<()>, Arc<std::sync::Mutex<Vec<i32>>>) {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sets: Api<ReplicaSet> = Api::default_namespaced(client.clone());
    let (image, record) = (image.to_owned(), Arc::clone(&seen));
    let task = tokio::spawn(async move {
        let mut events = watcher(sets, watcher::Config::default())
            .applied_objects()
            .boxed();
        while let Some(Ok(rs)) = events.next().await {
            if runs_image(&rs, &image) {
                let replicas = rs.spec.and_then(|s| s.replicas).unwrap_or(1);
                let mut seen = record.lock().unwrap();
                if seen.last() != Some(&replicas) {
                    seen.push(replicas);
                }
            }
        }
    });
    (task, seen)
}

/// The Deployment `web`, four replicas of `registry.example/web:1.0`,
/// made and waited for until every pod is ready.
async fn four_web_pods(plane: &ControlPlane, client: &kube::Client) -> Api<Deployment> {
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let web: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "registry.example/web:1.0"}]}}}
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &web)
        .await
        .unwrap();
    wait_deployment_ready(plane, &deployments, "web", 4).await;
    deployments
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_release_on_a_real_control_plane() {
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let p = platform(&stop, "[]").await;
    let (plane, client) = (&p.plane, p.client.clone());

    let deployments = four_web_pods(plane, &client).await;

    let scales = new_replicas(&client, "registry.example/web:2.0");
    let statuses = written_statuses(&client);
    let rollouts = create_rollout(&client,
        "apiVersion: sluice.dev/v1alpha1\nkind: Rollout\nmetadata: {name: web}\nspec:\n  workload: {kind: Deployment, name: web}\n  images: [{container: web, image: registry.example/web:2.0}]\n  strategy: {canary: {steps: [{replicas: 1}, {replicas: 50%, pause: {duration: 1s}}]}}\n",
    )
    .await;
    let phase = wait_rollout(&rollouts, "web").await;
    let status = rollouts.get("web").await.unwrap().status;
    assert_eq!(phase, Phase::Succeeded, "{status:#?}");
    // The first batch is recorded once: the start says what its look says,
    // and the look that saw its pod ready and asked a stable one to go
    // leaves the count to the next, which records the next step once
    // kube-controller-manager has acted (its ReplicaSet status counts a
    // deleted pod until its next sync).
    statuses.0.abort();
    let written = statuses.1.lock().unwrap().clone();
    let first: Vec<_> = written
        .iter()
        .filter(|s| s.phase == Phase::Progressing && s.current_step == 0)
        .map(|s| (s.ready_canary_replicas, s.message.clone()))
        .collect();
    assert_eq!(
        first,
        [(0, "step 1: 0 of 1 new pods ready".to_owned())],
        "every status written: {:#?}",
        written
            .iter()
            .map(|s| (s.phase, s.current_step, s.step_state, &s.message))
            .collect::<Vec<_>>()
    );
    // Seen from a watch of its own, the new ReplicaSet only ever grows:
    // neither kube-controller-manager nor a reconcile acting on a stale
    // step scaled it back.
    tokio::time::sleep(Duration::from_secs(1)).await;
    scales.0.abort();
    let seen = scales.1.lock().unwrap().clone();
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "the new ReplicaSet's replicas went back: {seen:?}"
    );
    assert_eq!(seen.last(), Some(&4), "{seen:?}");
    assert_eq!(
        seen.first(),
        Some(&1),
        "made with the first batch: {seen:?}"
    );

    let d = deployments.get("web").await.unwrap();
    let spec = d.spec.clone().unwrap();
    assert_eq!(
        spec.template.spec.unwrap().containers[0].image.as_deref(),
        Some("registry.example/web:2.0")
    );
    assert_ne!(spec.paused, Some(true), "handed back to its controller");
    assert!(
        d.metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .keys()
            .all(|k| !k.starts_with("sluice.dev/"))
    );
    // The real Deployment controller adopted the executor's ReplicaSet: no third one.
    let sets = Api::<ReplicaSet>::default_namespaced(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert_eq!(
        sets.len(),
        2,
        "{:?}",
        sets.iter()
            .map(|s| s.metadata.name.clone())
            .collect::<Vec<_>>()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let d = deployments.get("web").await.unwrap();
    assert_eq!(
        d.status.unwrap().updated_replicas,
        Some(4),
        "the Deployment counts every pod as updated"
    );

    let (ok, out) = plane.kubectl(&["get", "rollouts"]);
    assert!(
        ok && out.contains("PHASE")
            && out.contains("STEP")
            && out.contains("TRAFFIC")
            && out.contains("Succeeded"),
        "{out}"
    );
}

/// A `kubectl scale` while a step waits for its promotion, then a pause and
/// an abort written as the workload is given back, on the real control
/// plane: the batch follows the new size as soon as the scale lands, and
/// the controls at the hand-back neither hold the workload nor vanish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scale_in_a_steps_pause_and_controls_at_the_hand_back_on_a_real_control_plane() {
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let p = platform(&stop, "[]").await;
    let (plane, client) = (&p.plane, p.client.clone());
    let deployments = four_web_pods(plane, &client).await;
    let statuses = written_statuses(&client);
    let scales = new_replicas(&client, "registry.example/web:2.0");
    let rollouts = create_rollout(&client,
        "apiVersion: sluice.dev/v1alpha1\nkind: Rollout\nmetadata: {name: web}\nspec:\n  workload: {kind: Deployment, name: web}\n  images: [{container: web, image: registry.example/web:2.0}]\n  strategy: {canary: {steps: [{replicas: 25%, pause: {}}, {replicas: 50%, pause: {}}]}}\n",
    )
    .await;
    let trace = |statuses: &Arc<std::sync::Mutex<Vec<RolloutStatus>>>| {
        statuses
            .lock()
            .unwrap()
            .iter()
            .map(|s| (s.phase, s.current_step, s.step_state, s.message.clone()))
            .collect::<Vec<_>>()
    };
    let waiting = wait_status(&rollouts, "web", |s| {
        s.phase == Phase::Paused && s.step_state == StepState::Paused
    })
    .await;
    assert_eq!(waiting.current_step, 0, "{waiting:#?}");
    assert_eq!(scales.1.lock().unwrap().last(), Some(&1));

    // Scaled by a person while the step waits: 25% of 8 is 2 new pods,
    // moved and recorded as soon as the scale reaches the executor (its
    // events wake the release; no periodic look is waited for).
    let (ok, out) = plane.kubectl(&["scale", "deployment/web", "--replicas=8"]);
    assert!(ok, "{out}");
    let mut followed = false;
    for _ in 0..100 {
        let s = rollouts
            .get("web")
            .await
            .unwrap()
            .status
            .unwrap_or_default();
        if scales.1.lock().unwrap().last() == Some(&2)
            && s.steps.first().is_some_and(|r| r.canary_replicas == 2)
            && s.canary_replicas == 2
        {
            followed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        followed,
        "the batch did not follow the scale within 10 s: replicas {:?}, statuses {:#?}",
        scales.1.lock().unwrap(),
        trace(&statuses.1)
    );
    let s = rollouts.get("web").await.unwrap().status.unwrap();
    assert_eq!(
        (s.phase, s.current_step, s.step_state),
        (Phase::Paused, 0, StepState::Paused),
        "the step still waits for its promotion: {s:#?}"
    );
    wait_deployment_ready(plane, &deployments, "web", 8).await;

    // `kubectl rollout resume` with no webhook to keep the hold: paused
    // again, and kube-controller-manager does not roll the held Recreate
    // strategy out (which takes every old pod down at once).
    let (ok, out) = plane.kubectl(&["rollout", "resume", "deployment/web"]);
    assert!(ok, "{out}");
    let mut held = false;
    for _ in 0..100 {
        let d = deployments.get("web").await.unwrap();
        if d.spec.and_then(|s| s.paused) == Some(true) {
            held = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(held, "the hold is back: {:#?}", trace(&statuses.1));
    wait_deployment_ready(plane, &deployments, "web", 8).await;
    assert_eq!(
        scales.1.lock().unwrap().last(),
        Some(&2),
        "the batch stays: {:?}",
        scales.1.lock().unwrap()
    );

    // Scaled down until the batch is every pod (25% of 1 is 1 new pod, no
    // stable one), then up again: the new set is then the paused
    // Deployment's lone set with pods, which kube-controller-manager sizes
    // to 8 at once. Its surplus goes before it is ready, and the two
    // controllers do not take turns on it.
    let (ok, out) = plane.kubectl(&["scale", "deployment/web", "--replicas=1"]);
    assert!(ok, "{out}");
    wait_deployment_ready(plane, &deployments, "web", 1).await;
    // Whether the new set comes to `n` pods, all ready, within 30 s.
    let new_set_at = |n: i32| {
        let (client, scales) = (client.clone(), Arc::clone(&scales.1));
        async move {
            for _ in 0..300 {
                // Read before the await: a guard held across it would
                // block the watch task that records into the same lock.
                let last = scales.lock().unwrap().last().copied();
                if last == Some(n) && ready_new(&client).await == (n, n) {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            false
        }
    };
    let lone = new_set_at(1).await;
    assert!(lone, "1 new pod alone: {:?}", scales.1.lock().unwrap());
    let moves_before = scales.1.lock().unwrap().len();
    let most_ready = Arc::new(std::sync::atomic::AtomicI32::new(0));
    let watching = {
        use futures::StreamExt;
        use kube::runtime::{WatchStreamExt, watcher};
        let sets: Api<ReplicaSet> = Api::default_namespaced(client.clone());
        let most_ready = Arc::clone(&most_ready);
        tokio::spawn(async move {
            let mut events = watcher(sets, watcher::Config::default())
                .applied_objects()
                .boxed();
            while let Some(Ok(rs)) = events.next().await {
                if runs_image(&rs, "registry.example/web:2.0") {
                    let ready = rs.status.and_then(|s| s.ready_replicas).unwrap_or(0);
                    most_ready.fetch_max(ready, std::sync::atomic::Ordering::Relaxed);
                }
            }
        })
    };
    let (ok, out) = plane.kubectl(&["scale", "deployment/web", "--replicas=8"]);
    assert!(ok, "{out}");
    wait_deployment_ready(plane, &deployments, "web", 8).await;
    let back = new_set_at(2).await;
    watching.abort();
    let moves: Vec<i32> = scales.1.lock().unwrap()[moves_before..].to_vec();
    assert!(back, "back to 2 new pods of 8: {moves:?}");
    wait_deployment_ready(plane, &deployments, "web", 8).await;
    // 8 from kube-controller-manager, 2 from the executor; a fight would
    // repeat them.
    assert!(moves.len() <= 2, "the new set's replicas went {moves:?}");
    let most_ready = most_ready.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("after the scale-up: new set {moves:?}, at most {most_ready} new pods ready");
    assert!(
        most_ready <= 2,
        "{most_ready} new pods were ready at once at a batch of 2"
    );

    // Promoted to the end; a pause and an abort written the moment the
    // workload is given back (kubectl writes them without the API's
    // refusal).
    let merge = |patch: serde_json::Value| {
        let rollouts = rollouts.clone();
        async move {
            rollouts
                .patch(
                    "web",
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(patch),
                )
                .await
                .unwrap();
        }
    };
    merge(json!({"metadata": {"annotations": {keys::PROMOTE: "full:0"}}})).await;
    let mut caught = false;
    for _ in 0..3000 {
        let r = rollouts.get("web").await.unwrap();
        let s = r.status.clone().unwrap_or_default();
        if s.handing_back_since.is_some() && s.phase != Phase::Succeeded {
            // Written over the version read, so that "caught" means the
            // abort landed before the release ended (an abort on an ended
            // rollout is only taken off).
            caught = rollouts
                .patch(
                    "web",
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(json!({"spec": {"paused": true}, "metadata": {
                        "resourceVersion": r.metadata.resource_version,
                        "annotations": {keys::ABORT: "too late"}}})),
                )
                .await
                .is_ok();
            break;
        }
        if s.phase == Phase::Succeeded {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let end = wait_status(&rollouts, "web", |s| {
        matches!(
            s.phase,
            Phase::Succeeded | Phase::RolledBack | Phase::Failed
        )
    })
    .await;
    assert_eq!(end.phase, Phase::Succeeded, "{:#?}", trace(&statuses.1));
    let rollout = rollouts.get("web").await.unwrap();
    if caught {
        assert!(
            end.message.contains("came too late"),
            "the late abort is said: {}",
            end.message
        );
        assert!(
            !rollout
                .metadata
                .annotations
                .clone()
                .unwrap_or_default()
                .contains_key(keys::ABORT),
            "and taken off"
        );
    }
    eprintln!("hand-back caught: {caught}");
    let d = deployments.get("web").await.unwrap();
    let spec = d.spec.unwrap();
    assert_eq!(spec.replicas, Some(8), "the user's scale is kept");
    assert_ne!(spec.paused, Some(true), "handed back to its controller");
    assert!(
        d.metadata
            .annotations
            .unwrap_or_default()
            .keys()
            .all(|k| !k.starts_with("sluice.dev/"))
    );
    wait_deployment_ready(plane, &deployments, "web", 8).await;
    statuses.0.abort();
    scales.0.abort();
}

/// An abort at a step where the new ReplicaSet holds every replica brings
/// the stable pods back and ends: kube-controller-manager scales every
/// other set of a paused Deployment to 0 while the new one is saturated,
/// so a stable set scaled up beside it was scaled back at once, at every
/// look, without end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_at_a_full_step_on_a_real_control_plane() {
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let p = platform(&stop, "[]").await;
    let (plane, client) = (&p.plane, p.client.clone());
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    // Four replicas, none of which may be missing (maxUnavailable 0): a
    // new pod goes only once a stable one is back.
    let web: Deployment = serde_json::from_value(web_manifest("registry.example/web:1.0")).unwrap();
    deployments
        .create(&PostParams::default(), &web)
        .await
        .unwrap();
    wait_deployment_ready(plane, &deployments, "web", 4).await;
    let rollouts = create_rollout(&client,
        "apiVersion: sluice.dev/v1alpha1\nkind: Rollout\nmetadata: {name: web}\nspec:\n  workload: {kind: Deployment, name: web}\n  images: [{container: web, image: registry.example/web:2.0}]\n  strategy: {canary: {steps: [{replicas: 100%, pause: {}}, {replicas: 100%}]}}\n",
    )
    .await;
    let paused = wait_rollout_until(&rollouts, "web", |p| p == Phase::Paused).await;
    assert_eq!(paused.ready_canary_replicas, 4, "{paused:#?}");
    let sets: Api<ReplicaSet> = Api::default_namespaced(client.clone());
    let stable_of = |all: Vec<ReplicaSet>| {
        all.into_iter()
            .find(|rs| {
                rs.spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .and_then(|t| t.spec.as_ref())
                    .and_then(|s| s.containers.first())
                    .and_then(|c| c.image.as_deref())
                    == Some("registry.example/web:1.0")
            })
            .unwrap()
    };
    let stable = stable_of(sets.list(&ListParams::default()).await.unwrap().items);
    let before = stable.metadata.generation.unwrap_or(0);
    rollouts
        .patch(
            "web",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                json!({"metadata": {"annotations": {keys::ABORT: "by hand"}}}),
            ),
        )
        .await
        .unwrap();
    let ended = wait_rollout_until(&rollouts, "web", |p| {
        matches!(p, Phase::Succeeded | Phase::RolledBack | Phase::Failed)
    })
    .await;
    let stable = stable_of(sets.list(&ListParams::default()).await.unwrap().items);
    let writes = stable.metadata.generation.unwrap_or(0) - before;
    assert_eq!(
        ended.phase,
        Phase::RolledBack,
        "stable written {writes} times: {ended:#?}"
    );
    assert!(writes <= 10, "the stable set was written {writes} times");
    wait_deployment_ready(plane, &deployments, "web", 4).await;
    let d = deployments.get("web").await.unwrap();
    assert_eq!(
        d.spec.unwrap().template.spec.unwrap().containers[0]
            .image
            .as_deref(),
        Some("registry.example/web:1.0"),
        "the stable template is back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_deployment_behind_an_http_route_on_a_real_control_plane() {
    use k8s_openapi::api::core::v1::Service;
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let p = platform(&stop, "[]").await;
    let (plane, client) = (&p.plane, p.client.clone());

    apply(
        plane,
        &[
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "registry.example/web:1.0"}]}}}}),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}),
            json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"parentRefs": [{"name": "gateway"}], "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}}),
        ],
    );
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let services: Api<Service> = Api::default_namespaced(client.clone());
    let routes: Api<DynamicObject> = Api::default_namespaced_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
            "httproutes",
        ),
    );
    let original_route = routes.get("web").await.unwrap().data["spec"].clone();
    wait_deployment_ready(plane, &deployments, "web", 4).await;

    let rollouts = create_rollout(&client,
        r#"
apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata: {name: web}
spec:
  workload: {kind: Deployment, name: web}
  images: [{container: web, image: registry.example/web:2.0}]
  traffic: {stableService: web, httpRoute: {name: web}}
  strategy:
    style: Canary
    canary:
      steps:
        - {replicas: 1, traffic: 25, matches: [{headers: [{name: x-canary, value: "true"}]}], pause: {}}
"#,
    )
    .await;
    let paused = wait_rollout_until(&rollouts, "web", |p| {
        matches!(p, Phase::Paused | Phase::Failed | Phase::RolledBack)
    })
    .await;
    assert_eq!(paused.phase, Phase::Paused, "{paused:#?}");
    // The real controllers run the canary Deployment; the real API server
    // took the route and the pinned Services as written.
    let canary = deployments.get("web-canary").await.unwrap();
    assert_eq!(canary.status.unwrap().ready_replicas, Some(1));
    let rules = routes.get("web").await.unwrap().data["spec"]["rules"].clone();
    assert_eq!(
        rules[0]["matches"][0]["headers"][0]["value"], "true",
        "{rules:#}"
    );
    assert_eq!(rules[0]["backendRefs"][0]["name"], "web-canary");
    assert_eq!(rules[1]["backendRefs"][0]["weight"], 75);
    assert_eq!(rules[1]["backendRefs"][1]["weight"], 25);
    let stable = services
        .get("web")
        .await
        .unwrap()
        .spec
        .unwrap()
        .selector
        .unwrap();
    assert_eq!(
        stable.get("pod-template-hash"),
        Some(&paused.stable_revision)
    );
    let canary_svc = services.get("web-canary").await.unwrap().spec.unwrap();
    assert_eq!(
        canary_svc
            .selector
            .unwrap()
            .get("sluice.dev/canary-of")
            .map(String::as_str),
        Some("web")
    );

    let promote = json!({"metadata": {"annotations": {"sluice.dev/promote": "full:0"}}});
    rollouts
        .patch("web", &PatchParams::default(), &Patch::Merge(promote))
        .await
        .unwrap();
    let phase = wait_rollout(&rollouts, "web").await;
    let status = rollouts.get("web").await.unwrap().status;
    assert_eq!(phase, Phase::Succeeded, "{status:#?}");
    let d = deployments.get("web").await.unwrap();
    assert_eq!(
        d.spec.unwrap().template.spec.unwrap().containers[0]
            .image
            .as_deref(),
        Some("registry.example/web:2.0")
    );
    assert_eq!(d.status.unwrap().updated_replicas, Some(4));
    assert!(deployments.get_opt("web-canary").await.unwrap().is_none());
    assert!(services.get_opt("web-canary").await.unwrap().is_none());
    let web = services.get("web").await.unwrap();
    assert_eq!(
        serde_json::to_value(web.spec.unwrap().selector).unwrap(),
        json!({"app": "web"})
    );
    let route = routes.get("web").await.unwrap();
    assert_eq!(route.data["spec"], original_route);
    let left = route.metadata.annotations.unwrap_or_default();
    assert!(
        left.keys().all(|k| !k.starts_with("sluice.dev/")),
        "{left:?}"
    );
}

/// The web Deployment (4 pods of 1.0), its Service and an NGINX Ingress.
fn web_behind_nginx() -> Vec<serde_json::Value> {
    vec![
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "registry.example/web:1.0"}]}}}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}),
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"ingressClassName": "nginx", "rules": [{"host": "web.example", "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}}),
    ]
}

const LOAD_THROUGH_NGINX: &str = r#"[{target: {ingressHost: web.example}, rps: 200, classes: [{share: 0.1, headers: {x-canary: "true"}}]}]"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_canary_behind_nginx_rolls_back_on_a_real_control_plane() {
    use k8s_openapi::api::{core::v1::Service, networking::v1::Ingress};
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let p = platform(&stop, LOAD_THROUGH_NGINX).await;
    let (plane, client) = (&p.plane, p.client.clone());
    apply(plane, &web_behind_nginx());
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let ingresses: Api<Ingress> = Api::default_namespaced(client.clone());
    let services: Api<Service> = Api::default_namespaced(client.clone());
    wait_deployment_ready(plane, &deployments, "web", 4).await;
    let original = ingresses.get("web").await.unwrap();
    // Let the stable version serve through the real objects for a while.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let rollouts = create_rollout(
        &client,
        r#"
apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata: {name: web}
spec:
  workload: {kind: Deployment, name: web}
  images: [{container: web, image: registry.example/web:2.0-bad}]
  traffic: {stableService: web, nginx: {ingress: web}}
  strategy:
    canary:
      steps:
        - {replicas: 50%, traffic: 50, matches: [{headers: [{name: x-canary, value: "true"}]}], analyses: [health]}
  analyses:
    - name: health
      metrics:
        - name: success-rate
          template: request-success-rate
          successCondition: {threshold: {min: 0.99}}
          failureCondition: {threshold: {max: 0.9}}
          initialDelay: 3s
          interval: 1s
          count: 3
          inconclusiveLimit: 2
"#,
    )
    .await;
    // While it runs, the real API server holds the canary Ingress the
    // executor wrote.
    // (It is made at weight 0 when the batch starts, and set to the step's
    // weight once its pods are ready.)
    let mut canary_weight = 0;
    let mut by_header = None;
    for _ in 0..900 {
        let phase = rollouts
            .get("web")
            .await
            .unwrap()
            .status
            .unwrap_or_default()
            .phase;
        if matches!(
            phase,
            Phase::Paused | Phase::Succeeded | Phase::RolledBack | Phase::Failed
        ) {
            break;
        }
        if let Some(canary) = ingresses.get_opt("web-canary").await.unwrap() {
            let a = canary.metadata.annotations.unwrap_or_default();
            let weight = a
                .get("nginx.ingress.kubernetes.io/canary-weight")
                .and_then(|w| w.parse().ok())
                .unwrap_or(0);
            canary_weight = canary_weight.max(weight);
            if a.contains_key("nginx.ingress.kubernetes.io/canary-by-header") {
                by_header = Some((
                    a["nginx.ingress.kubernetes.io/canary-by-header"].clone(),
                    a.get("nginx.ingress.kubernetes.io/canary-by-header-value")
                        .cloned(),
                ));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(canary_weight, 50);
    assert_eq!(
        by_header,
        Some(("x-canary".to_owned(), Some("true".to_owned()))),
        "the step's header match, as NGINX's canary-by-header"
    );
    let analyzing = rollouts.get("web").await.unwrap().status.unwrap();
    assert_eq!(analyzing.phase, Phase::RolledBack, "{analyzing:#?}");
    let evidence = &analyzing.steps[0].evidence;
    assert!(
        evidence
            .iter()
            .any(|e| e.outcome == "FAILED" && e.value.is_some_and(|v| v < 0.9)),
        "the gate saw the canary's errors through the agent's metrics: {evidence:#?}"
    );

    // Every trace gone; the user's objects as written, the old version back.
    assert!(ingresses.get_opt("web-canary").await.unwrap().is_none());
    assert!(services.get_opt("web-canary").await.unwrap().is_none());
    let ingress = ingresses.get("web").await.unwrap();
    assert_eq!(ingress.spec, original.spec);
    assert_eq!(ingress.metadata.annotations, original.metadata.annotations);
    let web = services.get("web").await.unwrap();
    assert_eq!(
        serde_json::to_value(web.spec.unwrap().selector).unwrap(),
        json!({"app": "web"})
    );
    let d = deployments.get("web").await.unwrap();
    let spec = d.spec.clone().unwrap();
    assert_eq!(
        spec.template.spec.unwrap().containers[0].image.as_deref(),
        Some("registry.example/web:1.0")
    );
    assert_ne!(spec.paused, Some(true));
    wait_deployment_ready(plane, &deployments, "web", 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_executor_resumes_at_its_step_on_a_real_control_plane() {
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let p = platform(&stop, "[]").await;
    let (plane, client) = (&p.plane, p.client.clone());
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    apply(plane, &web_behind_nginx()[..1]);
    wait_deployment_ready(plane, &deployments, "web", 4).await;

    let rollouts = create_rollout(&client,
        "apiVersion: sluice.dev/v1alpha1\nkind: Rollout\nmetadata: {name: web}\nspec:\n  workload: {kind: Deployment, name: web}\n  images: [{container: web, image: registry.example/web:2.0}]\n  strategy: {canary: {steps: [{replicas: 25%, pause: {}}, {replicas: 50%, pause: {duration: 1s}}]}}\n",
    )
    .await;
    let paused = wait_rollout_until(&rollouts, "web", |p| {
        p != Phase::Pending && p != Phase::Progressing
    })
    .await;
    assert_eq!(
        (paused.phase, paused.current_step),
        (Phase::Paused, 0),
        "{paused:#?}"
    );

    // The executor dies while the first step waits; a new one starts with
    // nothing but the cluster, and the promotion reaches it.
    p.restart_controller().await;
    let promote = json!({"metadata": {"annotations": {"sluice.dev/promote": "step:0"}}});
    rollouts
        .patch(
            "web",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(promote),
        )
        .await
        .unwrap();
    let second = wait_rollout_until(&rollouts, "web", |p| p != Phase::Paused).await;
    assert!(
        matches!(second.phase, Phase::Progressing | Phase::Succeeded),
        "{second:#?}"
    );
    p.restart_controller().await;
    let phase = wait_rollout(&rollouts, "web").await;
    let status = rollouts.get("web").await.unwrap().status.unwrap();
    assert_eq!(phase, Phase::Succeeded, "{status:#?}");
    let indexes: Vec<u32> = status.steps.iter().map(|s| s.index).collect();
    assert_eq!(indexes, [0, 1, 2], "{:#?}", status.steps);
    assert_eq!(
        status.steps[0].started, paused.steps[0].started,
        "the first step was not started again"
    );
    let d = deployments.get("web").await.unwrap();
    assert_eq!(
        d.spec.unwrap().template.spec.unwrap().containers[0]
            .image
            .as_deref(),
        Some("registry.example/web:2.0")
    );
    wait_deployment_ready(plane, &deployments, "web", 4).await;
}

/// What one release did, with everything a cluster assigns by itself (uids,
/// times, resourceVersions, generations) left out.
#[derive(Debug, PartialEq)]
struct Observed {
    /// Every (phase, step) the Rollout went through, in order.
    path: Vec<(Phase, u32)>,
    /// Each step's record: index, new pods, traffic, end state.
    steps: Vec<(u32, u32, u32, sluice_executor::crd::StepState)>,
    /// The Deployment, Service and HTTPRoute as a user would read them.
    objects: Vec<(String, serde_json::Value)>,
    /// The ReplicaSets: name, replicas, image.
    replicasets: Vec<(String, i32, String)>,
    /// Every `spec.replicas` the new version's ReplicaSet had, in order, as
    /// a watch of its own saw them.
    new_sizes: Vec<i32>,
    /// Who wrote its ReplicaSets' fields: their `managedFields` managers.
    managers: Vec<String>,
}

fn dynamic(
    client: &kube::Client,
    group: &str,
    kind: &str,
    plural: &str,
) -> Api<kube::api::DynamicObject> {
    use kube::api::{ApiResource, GroupVersionKind};
    Api::default_namespaced_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, "v1", kind), plural),
    )
}

/// The parts of an object its writer chose, plus what the API server
/// defaults in (both clusters must default alike).
fn user_view(object: &kube::api::DynamicObject) -> serde_json::Value {
    let mut annotations = object.metadata.annotations.clone().unwrap_or_default();
    annotations.remove("deployment.kubernetes.io/revision");
    annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    let mut spec = object.data["spec"].clone();
    // Allocated from each cluster's own range, as a uid is.
    if let Some(spec) = spec.as_object_mut() {
        spec.remove("clusterIP");
        spec.remove("clusterIPs");
    }
    json!({"labels": object.metadata.labels, "annotations": annotations, "spec": spec})
}

/// Waits (up to a minute) until Deployment `web` runs `replicas` pods, all
/// of its current template and ready.
async fn settle(deployments: &Api<Deployment>, replicas: i32) {
    for _ in 0..600 {
        let status = deployments
            .get("web")
            .await
            .unwrap()
            .status
            .unwrap_or_default();
        if [
            status.ready_replicas,
            status.updated_replicas,
            status.replicas,
        ]
        .iter()
        .all(|n| *n == Some(replicas))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the differential scenario's release on the cluster `client`
/// reaches (whose controller is already running) and reports what it saw.
async fn observe_release(client: &kube::Client) -> Observed {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let manifests = [
        (
            "apps",
            "Deployment",
            "deployments",
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "registry.example/web:1.0", "ports": [{"containerPort": 8080}]}]}}}}),
        ),
        (
            "",
            "Service",
            "services",
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}),
        ),
        (
            "gateway.networking.k8s.io",
            "HTTPRoute",
            "httproutes",
            json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"parentRefs": [{"name": "gateway"}], "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}}),
        ),
    ];
    for (group, kind, plural, manifest) in &manifests {
        let object: kube::api::DynamicObject = serde_json::from_value(manifest.clone()).unwrap();
        dynamic(client, group, kind, plural)
            .create(&PostParams::default(), &object)
            .await
            .unwrap();
    }
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    settle(&deployments, 4).await;
    let rollouts: Api<Rollout> = Api::default_namespaced(client.clone());
    let path = Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorder = {
        let (rollouts, path) = (rollouts.clone(), Arc::clone(&path));
        tokio::spawn(async move {
            let mut events = watcher(rollouts, watcher::Config::default())
                .applied_objects()
                .boxed();
            while let Some(Ok(r)) = events.next().await {
                let s = r.status.unwrap_or_default();
                let mut path = path.lock().unwrap();
                if path.last() != Some(&(s.phase, s.current_step)) {
                    path.push((s.phase, s.current_step));
                }
            }
        })
    };
    // An independent watch of the ReplicaSets: every size the new
    // version's one is given, whoever gives it.
    let new_sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sizes = {
        let (sets, new_sizes) = (
            Api::<ReplicaSet>::default_namespaced(client.clone()),
            Arc::clone(&new_sizes),
        );
        tokio::spawn(async move {
            let mut events = watcher(sets, watcher::Config::default())
                .applied_objects()
                .boxed();
            while let Some(Ok(rs)) = events.next().await {
                let spec = rs.spec.unwrap_or_default();
                let image = spec
                    .template
                    .and_then(|t| t.spec)
                    .and_then(|s| s.containers[0].image.clone())
                    .unwrap_or_default();
                let mut sizes = new_sizes.lock().unwrap();
                let size = spec.replicas.unwrap_or(1);
                if image.ends_with(":2.0") && sizes.last() != Some(&size) {
                    sizes.push(size);
                }
            }
        })
    };
    let rollouts = create_rollout(
        client,
        r#"
apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata: {name: web}
spec:
  workload: {kind: Deployment, name: web}
  images: [{container: web, image: registry.example/web:2.0}]
  traffic: {stableService: web, httpRoute: {name: web}}
  strategy:
    canary:
      steps:
        - {replicas: 25%, traffic: 25, pause: {duration: 1s}}
        - {replicas: 50%, traffic: 50, matches: [{headers: [{name: x-canary, value: "true"}]}], pause: {duration: 1s}}
"#,
    )
    .await;
    let phase = wait_rollout(&rollouts, "web").await;
    assert_eq!(phase, Phase::Succeeded);
    // The Deployment's own controller finishes the hand-back.
    settle(&deployments, 4).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    recorder.abort();
    sizes.abort();
    // The ReplicaSet the executor made names it; the Deployment it gave
    // back does not (it disowns what it gave back).
    let deployment_managers: Vec<String> = deployments
        .get("web")
        .await
        .unwrap()
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(
        !deployment_managers.iter().any(|m| m == "sluice"),
        "{deployment_managers:?}"
    );
    let managers = Api::<ReplicaSet>::default_namespaced(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .flat_map(|rs| rs.metadata.managed_fields.unwrap_or_default())
        .filter_map(|m| m.manager)
        .collect();
    let status = rollouts.get("web").await.unwrap().status.unwrap();
    let mut objects = Vec::new();
    for (group, kind, plural, _) in &manifests {
        let object = dynamic(client, group, kind, plural)
            .get("web")
            .await
            .unwrap();
        objects.push((kind.to_string(), user_view(&object)));
    }
    let mut replicasets: Vec<(String, i32, String)> =
        Api::<ReplicaSet>::default_namespaced(client.clone())
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|rs| {
                let spec = rs.spec.unwrap();
                let image = spec.template.unwrap().spec.unwrap().containers[0]
                    .image
                    .clone()
                    .unwrap();
                (rs.metadata.name.unwrap(), spec.replicas.unwrap_or(1), image)
            })
            .collect();
    replicasets.sort();
    let path = path.lock().unwrap().clone();
    Observed {
        path,
        steps: status
            .steps
            .iter()
            .map(|s| (s.index, s.canary_replicas, s.traffic, s.state))
            .collect(),
        objects,
        replicasets,
        new_sizes: new_sizes.lock().unwrap().clone(),
        managers,
    }
}

/// The sizes (old version's, new version's) of a paused Deployment's two
/// ReplicaSets on the cluster `client` reaches: once a second ReplicaSet
/// is made beside the first and the two are sized 3 + 1, as a controller
/// moving pods itself would; then again after the Deployment is scaled
/// from 4 to 8. Each is read once the sizes have held for a second.
async fn scale_paused(client: &kube::Client) -> Vec<(i32, i32)> {
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let sets: Api<ReplicaSet> = Api::default_namespaced(client.clone());
    let template = |image: &str| json!({"metadata": {"labels": {"app": "held"}}, "spec": {"containers": [{"name": "web", "image": image}]}});
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "held"},
        "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "held"}}, "template": template("registry.example/web:1.0")}
    }))
    .unwrap();
    let d = deployments
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    let sizes = || async {
        let mut last = None;
        let mut same = 0;
        for _ in 0..600 {
            let all = sets
                .list(&ListParams::default().labels("app=held"))
                .await
                .unwrap()
                .items;
            let size = |image: &str| {
                all.iter()
                    .filter(|rs| {
                        rs.spec
                            .as_ref()
                            .unwrap()
                            .template
                            .as_ref()
                            .unwrap()
                            .spec
                            .as_ref()
                            .unwrap()
                            .containers[0]
                            .image
                            .as_deref()
                            == Some(image)
                    })
                    .map(|rs| rs.spec.as_ref().unwrap().replicas.unwrap_or(1))
                    .sum::<i32>()
            };
            let now = (
                size("registry.example/web:1.0"),
                size("registry.example/web:2.0"),
            );
            same = if last == Some(now) { same + 1 } else { 0 };
            last = Some(now);
            if same == 10 && now.0 > 0 {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the ReplicaSets of held never settled: {last:?}")
    };
    let first = sizes().await;
    assert_eq!(first, (4, 0));
    let old = sets
        .list(&ListParams::default().labels("app=held"))
        .await
        .unwrap()
        .items
        .remove(0);
    deployments
        .patch(
            "held",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                json!({"spec": {"paused": true, "template": template("registry.example/web:2.0")}}),
            ),
        )
        .await
        .unwrap();
    let mut labels = template("registry.example/web:2.0")["metadata"]["labels"].clone();
    labels["pod-template-hash"] = json!("manual");
    let mut rs_template = template("registry.example/web:2.0");
    rs_template["metadata"]["labels"] = labels.clone();
    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "held-manual", "labels": labels,
            // Sized for 4 replicas + 1 surge, as the Deployment controller
            // marks the sets it sizes: the proportions then depend on the
            // sizes alone, not on how many pods happen to run.
            "annotations": {"deployment.kubernetes.io/desired-replicas": "4", "deployment.kubernetes.io/max-replicas": "5"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "held", "uid": d.metadata.uid, "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": rs_template},
    }))
    .unwrap();
    sets.create(&PostParams::default(), &rs).await.unwrap();
    sets.patch(
        old.metadata.name.as_deref().unwrap(),
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"spec": {"replicas": 3}})),
    )
    .await
    .unwrap();
    let moved = sizes().await;
    deployments
        .patch(
            "held",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"replicas": 8}})),
        )
        .await
        .unwrap();
    let scaled = sizes().await;
    vec![first, moved, scaled]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_and_a_real_control_plane_release_alike() {
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let p = platform(&stop, "[]").await;
    let real = observe_release(&p.client).await;
    let real_scaling = scale_paused(&p.client).await;

    // The same release on the in-memory simulator, driven by a controller
    // of its own with the same planner and gate.
    let empty = sluice_sim::scenario::Scenario::parse(
        "differential",
        "name: differential\nseed: 1\nversions:\n  - {image: registry.example/web:1.0, profile: {startMinSeconds: 0.2, startMaxSeconds: 0.5, readyAfterSeconds: 0.2}}\n  - {image: registry.example/web:2.0, profile: {startMinSeconds: 0.2, startMaxSeconds: 0.5, readyAfterSeconds: 0.2}}\n",
    )
    .unwrap();
    let sim = sluice_sim::scenario::Simulation::start(empty).unwrap();
    let client = sluice_executor::client_over(sim.api.router(), "default", &Arc::default());
    let _controller = start_controller(&client, p.services, &stop, "simulated").await;
    let simulated = observe_release(&client).await;
    let simulated_scaling = scale_paused(&client).await;

    // kube-controller-manager scales a paused Deployment too: the two
    // sets' 3 + 1 is short of replicas + maxSurge (5), and the surplus goes
    // to the largest; after the scale to 8 both grow in proportion. The
    // simulator must do the same.
    assert_eq!(
        real_scaling,
        [(4, 0), (4, 1), (8, 2)],
        "the real controller"
    );
    assert_eq!(
        simulated_scaling, real_scaling,
        "the simulator's controller"
    );
    // The release's own moves were never undone: the new version's
    // ReplicaSet only grew, batch by batch.
    for (cluster, seen) in [("real", &real), ("simulated", &simulated)] {
        assert!(
            seen.new_sizes.windows(2).all(|w| w[0] < w[1]) && seen.new_sizes.last() == Some(&4),
            "{cluster}: the new ReplicaSet's sizes went {:?}",
            seen.new_sizes
        );
    }
    assert!(
        real.managers.iter().any(|m| m == "sluice"),
        "the executor's writes are recorded under its field manager: {:?}",
        real.managers
    );

    assert!(
        real.path.contains(&(Phase::Paused, 0))
            && real.path.contains(&(Phase::Paused, 1))
            && real.path.last() == Some(&(Phase::Succeeded, 2)),
        "{:?}",
        real.path
    );
    assert_eq!(simulated.path, real.path, "the same phases and steps");
    assert_eq!(simulated.steps, real.steps, "the same step records");
    for ((kind, sim), (_, real)) in simulated.objects.iter().zip(&real.objects) {
        assert_eq!(sim, real, "{kind} reads the same on both clusters");
    }
    // The ReplicaSet the executor made for the new version has the same
    // name on both; the one the Deployment controller made for the old
    // version is named by a hash of Kubernetes' Go struct dump, which the
    // simulator does not reproduce (it hashes the JSON): same form, other
    // value. Everything else about the ReplicaSets agrees.
    let contents = |sets: &[(String, i32, String)]| -> Vec<(i32, String)> {
        sets.iter().map(|(_, r, i)| (*r, i.clone())).collect()
    };
    assert_eq!(
        contents(&simulated.replicasets),
        contents(&real.replicasets)
    );
    let new_name = |sets: &[(String, i32, String)]| {
        sets.iter()
            .find(|(_, _, image)| image.ends_with(":2.0"))
            .map(|(name, _, _)| name.clone())
    };
    assert_eq!(
        new_name(&simulated.replicasets),
        new_name(&real.replicasets)
    );
    for (name, _, _) in simulated.replicasets.iter().chain(&real.replicasets) {
        let hash = name.strip_prefix("web-").unwrap();
        assert!(
            hash.len() <= 10
                && hash
                    .bytes()
                    .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b)),
            "{name} has the form of a pod-template-hash"
        );
    }
}

/// The executor's admission webhook as one replica serves it.
struct Webhook {
    metrics: std::sync::Arc<sluice_executor::metrics::Metrics>,
    addr: std::net::SocketAddr,
    pair: sluice_integration_tests::pki::Pair,
    bindings: sluice_executor::admission::Bindings,
    /// Stops this serving of it.
    stop: CancellationToken,
}

impl Webhook {
    /// Serves it again at the same address, as a restarted executor would.
    async fn restart(&mut self, within: &CancellationToken) {
        let bound =
            sluice_executor::admission::Bound::bind(self.addr, &self.pair.cert, &self.pair.key)
                .await
                .unwrap();
        self.stop = within.child_token();
        tokio::spawn(bound.serve(
            self.bindings.clone(),
            self.metrics.clone(),
            self.stop.clone(),
        ));
    }
}

/// The executor's admission webhook, served in process over HTTPS with a
/// certificate the API server trusts, and registered from
/// `deploy/base/webhook.yaml` with its clientConfig pointed at it.
async fn register_webhook(p: &Platform, dir: &std::path::Path) -> Webhook {
    register_webhook_at(&p.client, &p.plane.kubeconfig, &p.stop, dir).await
}

/// Runs kubectl against the cluster of `kubeconfig`; (success, output).
fn kubectl_at(kubeconfig: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Applies `manifests` with kubectl to the cluster of `kubeconfig`.
fn apply_at(kubeconfig: &std::path::Path, manifests: &[serde_json::Value]) {
    for manifest in manifests {
        let file = tempfile::Builder::new().suffix(".json").tempfile().unwrap();
        std::fs::write(file.path(), manifest.to_string()).unwrap();
        let (ok, out) = kubectl_at(kubeconfig, &["apply", "-f", file.path().to_str().unwrap()]);
        assert!(ok, "{out}");
    }
}

/// [`register_webhook`] on any cluster: its client and kubeconfig.
async fn register_webhook_at(
    client: &kube::Client,
    kubeconfig: &std::path::Path,
    within: &CancellationToken,
    dir: &std::path::Path,
) -> Webhook {
    let ca = sluice_integration_tests::pki::Authority::new(dir, "webhook-ca");
    let pair = ca.issue("webhook");
    let bound = sluice_executor::admission::Bound::bind(
        "127.0.0.1:0".parse().unwrap(),
        &pair.cert,
        &pair.key,
    )
    .await
    .unwrap();
    let addr = bound.addr();
    let bindings = sluice_executor::admission::Bindings::start(client.clone(), within.clone());
    let metrics = std::sync::Arc::new(sluice_executor::metrics::Metrics::default());
    let stop = within.child_token();
    tokio::spawn(bound.serve(bindings.clone(), metrics.clone(), stop.clone()));
    let manifests =
        sluice_executor::admission::registration(addr, &std::fs::read(&ca.cert).unwrap());
    apply_at(kubeconfig, &manifests);
    Webhook {
        metrics,
        addr,
        pair,
        bindings,
        stop,
    }
}

/// What a kubectl-driven bound release did, as both clusters must agree.
#[derive(Debug, PartialEq)]
struct KubectlRelease {
    /// New pods of each step, as the status recorded them.
    steps: Vec<u32>,
    /// Pods of each version while paused at the first step.
    at_pause: (usize, usize),
    /// The Deployment in the end, as its user sees it.
    user_view: serde_json::Value,
    /// Its ReplicaSets in the end: (pods wanted) by image.
    sets: Vec<(String, i32)>,
}

/// A release driven only with kubectl on the cluster of `kubeconfig`
/// (webhook registered, a controller running): web applied, bound, its
/// image set, promoted at the first step's pause.
async fn kubectl_release(client: &kube::Client, kubeconfig: &std::path::Path) -> KubectlRelease {
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let rollouts: Api<Rollout> = Api::default_namespaced(client.clone());
    apply_at(kubeconfig, &[web_manifest("registry.example/web:1.0")]);
    for _ in 0..600 {
        let s = deployments
            .get("web")
            .await
            .unwrap()
            .status
            .unwrap_or_default();
        if s.ready_replicas == Some(4) && s.updated_replicas == Some(4) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    apply_at(
        kubeconfig,
        &[json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"workload": {"kind": "Deployment", "name": "web"},
                     "strategy": {"canary": {"steps": [{"replicas": "50%", "pause": {}}, {"replicas": "100%"}]}}},
        })],
    );
    wait_status(&rollouts, "web", |s| s.phase == Phase::Succeeded).await;
    let (ok, out) = kubectl_at(
        kubeconfig,
        &[
            "set",
            "image",
            "deployment/web",
            "web=registry.example/web:2.0",
        ],
    );
    assert!(ok, "{out}");
    let paused = wait_status(&rollouts, "web", |s| s.phase == Phase::Paused).await;
    assert_eq!(paused.phase, Phase::Paused, "{paused:#?}");
    // The batch in place: its pods ready, the old ones gone.
    let mut at_pause = (0, 0);
    for _ in 0..300 {
        let pods = Api::<k8s_openapi::api::core::v1::Pod>::default_namespaced(client.clone())
            .list(&ListParams::default().labels("app=web"))
            .await
            .unwrap();
        let count = |image: &str| {
            pods.items
                .iter()
                .filter(|p| {
                    p.metadata.deletion_timestamp.is_none()
                        && p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some(image)
                })
                .count()
        };
        at_pause = (
            count("registry.example/web:1.0"),
            count("registry.example/web:2.0"),
        );
        if at_pause == (2, 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (ok, out) = kubectl_at(
        kubeconfig,
        &["annotate", "rollout", "web", "sluice.dev/promote=step:0"],
    );
    assert!(ok, "{out}");
    let done = wait_status(&rollouts, "web", |s| {
        s.phase == Phase::Succeeded && s.current_step == 1
    })
    .await;
    assert_eq!(done.phase, Phase::Succeeded, "{done:#?}");
    settle(&deployments, 4).await;
    let d = deployments.get("web").await.unwrap();
    let mut sets: Vec<(String, i32)> = Api::<ReplicaSet>::default_namespaced(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|rs| {
            let spec = rs.spec.unwrap();
            (
                spec.template.unwrap().spec.unwrap().containers[0]
                    .image
                    .clone()
                    .unwrap(),
                spec.replicas.unwrap_or(0),
            )
        })
        .collect();
    sets.sort();
    KubectlRelease {
        steps: done.steps.iter().map(|s| s.canary_replicas).collect(),
        at_pause,
        user_view: users_fields(&d),
        sets,
    }
}

/// `web` as a GitOps repository holds it: four replicas of `image`, one
/// surge pod and none unavailable.
fn web_manifest(image: &str) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": 4,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": image}]}},
        },
    })
}

/// Applies `manifest` server-side as the GitOps tool `gitops` would,
/// returning kubectl's success and output.
fn gitops_apply(plane: &ControlPlane, manifest: &serde_json::Value, force: bool) -> (bool, String) {
    let file = tempfile::Builder::new().suffix(".json").tempfile().unwrap();
    std::fs::write(file.path(), manifest.to_string()).unwrap();
    let mut args = vec![
        "apply",
        "--server-side",
        "--field-manager=gitops",
        "-f",
        file.path().to_str().unwrap(),
    ];
    if force {
        args.push("--force-conflicts");
    }
    plane.kubectl(&args)
}

/// The most pods of `image` (not terminating) seen at once while `open`
/// holds, from a watch of its own.
fn count_pods(
    client: &kube::Client,
    image: &'static str,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::Pod;
    use kube::runtime::{WatchStreamExt, watcher};
    use std::sync::atomic::Ordering;
    let most = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (pods, seen) = (Api::<Pod>::default_namespaced(client.clone()), most.clone());
    tokio::spawn(async move {
        let mut live = std::collections::BTreeSet::new();
        let mut events = watcher(pods, watcher::Config::default())
            .touched_objects()
            .boxed();
        while let Some(Ok(pod)) = events.next().await {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let runs = pod
                .spec
                .as_ref()
                .is_some_and(|s| s.containers[0].image.as_deref() == Some(image));
            if runs && pod.metadata.deletion_timestamp.is_none() {
                live.insert(name);
            } else {
                live.remove(&name);
            }
            if open.load(Ordering::SeqCst) {
                seen.fetch_max(live.len(), Ordering::SeqCst);
            }
        }
    });
    most
}

/// The rollout's status once `until` holds for it, or after 90 s.
async fn wait_status(
    rollouts: &Api<Rollout>,
    name: &str,
    until: impl Fn(&RolloutStatus) -> bool,
) -> RolloutStatus {
    let mut status = RolloutStatus::default();
    for _ in 0..900 {
        status = rollouts.get(name).await.unwrap().status.unwrap_or_default();
        if until(&status) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    status
}

/// The fields under `spec.<field>` the GitOps tool's apply owns on `d`.
fn gitops_owns(d: &Deployment, field: &str) -> serde_json::Value {
    d.metadata
        .managed_fields
        .iter()
        .flatten()
        .find(|m| m.manager.as_deref() == Some("gitops") && m.operation.as_deref() == Some("Apply"))
        .and_then(|m| m.fields_v1.as_ref())
        .map_or(serde_json::Value::Null, |f| f.0["f:spec"][field].clone())
}

/// The user's view of `web`: what a GitOps tool compares with git.
fn users_fields(d: &Deployment) -> serde_json::Value {
    let spec = d.spec.clone().unwrap();
    json!({
        "replicas": spec.replicas,
        "paused": spec.paused.unwrap_or(false),
        "strategy": spec.strategy,
        "image": spec.template.spec.unwrap().containers[0].image,
        "sluice_annotations": d.metadata.annotations.clone().unwrap_or_default().keys().filter(|k| k.starts_with("sluice.dev/")).cloned().collect::<Vec<_>>(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gitops_change_is_released_in_batches_through_the_webhook_on_a_real_control_plane() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let p = platform(&stop, "[]").await;
    let (plane, client) = (&p.plane, p.client.clone());
    let dir = tempfile::tempdir().unwrap();
    let metrics = register_webhook(&p, dir.path()).await.metrics;
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let rollouts: Api<Rollout> = Api::default_namespaced(client.clone());

    // Before: the repository's first version, applied server-side.
    let (ok, out) = gitops_apply(plane, &web_manifest("registry.example/web:1.0"), false);
    assert!(ok, "{out}");
    wait_deployment_ready(plane, &deployments, "web", 4).await;
    let strategy_owned_before = gitops_owns(&deployments.get("web").await.unwrap(), "f:strategy");
    assert!(strategy_owned_before.is_object(), "{strategy_owned_before}");
    // The binding: a strategy and no version.
    apply(
        plane,
        &[json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"workload": {"kind": "Deployment", "name": "web"},
                     "strategy": {"canary": {"steps": [{"replicas": "25%", "pause": {}}, {"replicas": "100%"}]}}},
        })],
    );
    let idle = wait_status(&rollouts, "web", |s| s.phase == Phase::Succeeded).await;
    assert_eq!(idle.phase, Phase::Succeeded, "an idle binding: {idle:?}");
    // A second binding of the same Deployment is refused by the API server.
    let file = tempfile::Builder::new().suffix(".json").tempfile().unwrap();
    std::fs::write(
        file.path(),
        json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "web-again", "namespace": "default"},
            "spec": {"workload": {"kind": "Deployment", "name": "web"}},
        })
        .to_string(),
    )
    .unwrap();
    let (ok, out) = plane.kubectl(&["apply", "-f", file.path().to_str().unwrap()]);
    assert!(!ok && out.contains("is bound to Rollout"), "{out}");

    // The new version lands in git and is synced.
    let open = std::sync::Arc::new(AtomicBool::new(true));
    let most_new = count_pods(&client, "registry.example/web:2.0", open.clone());
    let (ok, out) = gitops_apply(plane, &web_manifest("registry.example/web:2.0"), false);
    assert!(ok, "{out}");
    // Held in the same request that changed it.
    let held = deployments.get("web").await.unwrap();
    assert_eq!(
        held.spec.as_ref().unwrap().paused,
        Some(true),
        "{:?}",
        held.metadata.annotations
    );
    assert_eq!(
        held.metadata.annotations.as_ref().unwrap()["sluice.dev/rollout"],
        "web"
    );
    let paused = wait_status(&rollouts, "web", |s| s.phase == Phase::Paused).await;
    assert_eq!(
        (paused.phase, paused.current_step),
        (Phase::Paused, 0),
        "{paused:#?}"
    );
    // The GitOps tool syncs again during the release: as Argo CD does with
    // RespectIgnoreDifferences (the ignored fields as they are live), and
    // as Flux does (the manifest, forced). No conflict, and the hold stays.
    let mut argo = web_manifest("registry.example/web:2.0");
    let live = deployments.get("web").await.unwrap();
    argo["spec"]["paused"] = json!(true);
    argo["spec"]["strategy"] = serde_json::to_value(live.spec.unwrap().strategy).unwrap();
    let (ok, out) = gitops_apply(plane, &argo, false);
    assert!(ok, "no conflict for Argo CD's sync: {out}");
    let (ok, out) = gitops_apply(plane, &web_manifest("registry.example/web:2.0"), true);
    assert!(ok, "{out}");
    let d = deployments.get("web").await.unwrap();
    assert_eq!(
        d.spec.as_ref().unwrap().paused,
        Some(true),
        "still held after the syncs"
    );
    // kube-controller-manager has seen every change and made no pod of
    // the new version beyond the first batch's one.
    for _ in 0..100 {
        let d = deployments.get("web").await.unwrap();
        if d.status.as_ref().and_then(|s| s.observed_generation) >= d.metadata.generation {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let still = rollouts.get("web").await.unwrap().status.unwrap();
    assert_eq!((still.phase, still.current_step), (Phase::Paused, 0));
    open.store(false, Ordering::SeqCst);
    assert_eq!(
        most_new.load(Ordering::SeqCst),
        1,
        "new pods before the promotion"
    );

    let (ok, out) = plane.kubectl(&["annotate", "rollout", "web", "sluice.dev/promote=step:0"]);
    assert!(ok, "{out}");
    let done = wait_status(&rollouts, "web", |s| s.phase == Phase::Succeeded).await;
    assert_eq!(done.phase, Phase::Succeeded, "{done:#?}");
    // The strategy the release held and gave back is git's tool's again,
    // as it was before: a manifest that drops it has it removed (the
    // server's defaults come back), as with no Sluice.
    let d = deployments.get("web").await.unwrap();
    assert_eq!(
        gitops_owns(&d, "f:strategy"),
        strategy_owned_before,
        "{:#?}",
        d.metadata.managed_fields
    );
    let mut no_strategy = web_manifest("registry.example/web:2.0");
    no_strategy["spec"]
        .as_object_mut()
        .unwrap()
        .remove("strategy");
    let (ok, out) = gitops_apply(plane, &no_strategy, false);
    assert!(ok, "{out}");
    let d = deployments.get("web").await.unwrap();
    assert_eq!(
        serde_json::to_value(d.spec.unwrap().strategy).unwrap(),
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
        "git dropped the strategy"
    );
    // After: the repository's manifest applies cleanly and is what runs.
    let (ok, out) = gitops_apply(plane, &web_manifest("registry.example/web:2.0"), false);
    assert!(ok, "no conflict after the release: {out}");
    let d = deployments.get("web").await.unwrap();
    assert_eq!(
        users_fields(&d),
        json!({"replicas": 4, "paused": false, "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}, "image": "registry.example/web:2.0", "sluice_annotations": []})
    );
    wait_deployment_ready(plane, &deployments, "web", 4).await;
    // Sluice owns none of the fields it gave back: git may change them
    // later with no conflict.
    let d = deployments.get("web").await.unwrap();
    let managers: Vec<String> = d
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(!managers.contains(&"sluice".to_owned()), "{managers:?}");
    let mut surge_two = web_manifest("registry.example/web:2.0");
    surge_two["spec"]["strategy"]["rollingUpdate"]["maxSurge"] = json!(2);
    let (ok, out) = gitops_apply(plane, &surge_two, false);
    assert!(ok, "git changes a field the release gave back: {out}");
    let (ok, out) = gitops_apply(plane, &web_manifest("registry.example/web:2.0"), false);
    assert!(ok, "{out}");

    // kubectl set image, then a revert mid-release: a fast rollback.
    let (ok, out) = plane.kubectl(&[
        "set",
        "image",
        "deployment/web",
        "web=registry.example/web:3.0",
    ]);
    assert!(ok, "{out}");
    let paused = wait_status(&rollouts, "web", |s| s.phase == Phase::Paused).await;
    assert_eq!(paused.phase, Phase::Paused, "{paused:#?}");
    let (ok, out) = plane.kubectl(&[
        "set",
        "image",
        "deployment/web",
        "web=registry.example/web:2.0",
    ]);
    assert!(ok, "{out}");
    let reverted = wait_status(&rollouts, "web", |s| {
        matches!(
            s.phase,
            Phase::RolledBack | Phase::Failed | Phase::Succeeded
        )
    })
    .await;
    assert_eq!(reverted.phase, Phase::RolledBack, "{reverted:#?}");
    assert!(
        reverted.message.starts_with("reverted"),
        "{}",
        reverted.message
    );
    let d = deployments.get("web").await.unwrap();
    assert_eq!(
        users_fields(&d),
        json!({"replicas": 4, "paused": false, "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}, "image": "registry.example/web:2.0", "sluice_annotations": []})
    );
    wait_deployment_ready(plane, &deployments, "web", 4).await;
    assert!(
        metrics.admissions("held") >= 3,
        "the webhook held the changes"
    );
    let (ok, out) = plane.kubectl(&["get", "rollouts"]);
    assert!(ok && out.contains("STABLE") && out.contains("NEW"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_statefulset_on_a_real_control_plane_and_a_change_while_no_executor_answers() {
    use k8s_openapi::api::apps::v1::StatefulSet;
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let p = platform(&stop, "[]").await;
    let (plane, client) = (&p.plane, p.client.clone());
    let dir = tempfile::tempdir().unwrap();
    let mut webhook = register_webhook(&p, dir.path()).await;
    let sets: Api<StatefulSet> = Api::default_namespaced(client.clone());
    apply(
        plane,
        &[json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "db", "namespace": "default"},
            "spec": {"replicas": 3, "serviceName": "db", "podManagementPolicy": "Parallel", "selector": {"matchLabels": {"app": "db"}},
                "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db", "image": "registry.example/db:1.0"}]}}}
        })],
    );
    for _ in 0..600 {
        if sets
            .get("db")
            .await
            .unwrap()
            .status
            .and_then(|s| s.ready_replicas)
            == Some(3)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    apply(
        plane,
        &[json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "db", "namespace": "default"},
            "spec": {"workload": {"kind": "StatefulSet", "name": "db"},
                     "strategy": {"canary": {"steps": [{"replicas": 1, "pause": {}}]}}},
        })],
    );
    let rollouts: Api<Rollout> = Api::default_namespaced(client.clone());
    let idle = wait_status(&rollouts, "db", |s| s.phase == Phase::Succeeded).await;
    assert_eq!(idle.phase, Phase::Succeeded, "{idle:#?}");
    // Who owns which part of the update strategy, which the release holds
    // and moves.
    let strategy_owners = |set: &StatefulSet| -> Vec<(String, serde_json::Value)> {
        set.metadata
            .managed_fields
            .iter()
            .flatten()
            .filter_map(|m| {
                let part = m.fields_v1.as_ref()?.0["f:spec"]["f:updateStrategy"].clone();
                (!part.is_null()).then(|| (m.manager.clone().unwrap_or_default(), part))
            })
            .collect()
    };
    let owners_before = strategy_owners(&sets.get("db").await.unwrap());
    assert!(!owners_before.is_empty());

    let (ok, out) = plane.kubectl(&[
        "set",
        "image",
        "statefulset/db",
        "db=registry.example/db:2.0",
    ]);
    assert!(ok, "{out}");
    let paused = wait_status(&rollouts, "db", |s| s.phase == Phase::Paused).await;
    assert_eq!(
        (paused.phase, paused.current_step),
        (Phase::Paused, 0),
        "{paused:#?}"
    );
    let image_count = |image: &'static str| {
        let client = client.clone();
        async move {
            Api::<k8s_openapi::api::core::v1::Pod>::default_namespaced(client)
                .list(&ListParams::default().labels("app=db"))
                .await
                .unwrap()
                .items
                .iter()
                .filter(|p| {
                    p.metadata.deletion_timestamp.is_none()
                        && p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some(image)
                })
                .count()
        }
    };
    assert_eq!(
        image_count("registry.example/db:2.0").await,
        1,
        "one pod in the first batch"
    );

    // Aborted: the real StatefulSet controller remakes the new pod at the
    // stable revision; the StatefulSet stays held on the applied template.
    let (ok, out) = plane.kubectl(&["annotate", "rollout", "db", "sluice.dev/abort=testing"]);
    assert!(ok, "{out}");
    let aborted = wait_status(&rollouts, "db", |s| {
        matches!(s.phase, Phase::RolledBack | Phase::Failed)
    })
    .await;
    assert_eq!(aborted.phase, Phase::RolledBack, "{aborted:#?}");
    assert_eq!(image_count("registry.example/db:2.0").await, 0);

    // No executor answers: a change of the template is refused (failurePolicy
    // Fail), the StatefulSet left as it was, and passes once it answers
    // again.
    webhook.stop.cancel();
    let before = sets.get("db").await.unwrap();
    let (ok, out) = plane.kubectl(&[
        "set",
        "image",
        "statefulset/db",
        "db=registry.example/db:1.0",
    ]);
    assert!(!ok && out.contains("failed calling webhook"), "{out}");
    let after = sets.get("db").await.unwrap();
    assert_eq!(
        after.metadata.resource_version, before.metadata.resource_version,
        "nothing written"
    );
    webhook.restart(&stop).await;
    let mut reverted = false;
    for _ in 0..100 {
        let (ok, _) = plane.kubectl(&[
            "set",
            "image",
            "statefulset/db",
            "db=registry.example/db:1.0",
        ]);
        if ok {
            reverted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reverted, "the revert passes once the webhook answers again");
    let done = wait_status(&rollouts, "db", |s| s.phase == Phase::Succeeded).await;
    assert_eq!(done.phase, Phase::Succeeded, "{done:#?}");
    let db = sets.get("db").await.unwrap();
    assert_eq!(
        db.spec
            .unwrap()
            .update_strategy
            .unwrap()
            .rolling_update
            .and_then(|r| r.partition)
            .unwrap_or(0),
        0,
        "the partition is the user's again"
    );
    assert_eq!(
        strategy_owners(&sets.get("db").await.unwrap()),
        owners_before,
        "the strategy's owners are the user's again"
    );
    assert!(
        db.metadata
            .annotations
            .unwrap_or_default()
            .keys()
            .all(|k| !k.starts_with("sluice.dev/"))
    );
    assert_eq!(image_count("registry.example/db:1.0").await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubectl_driven_release_runs_alike_on_the_simulator_and_a_real_control_plane() {
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let p = platform(&stop, "[]").await;
    let dir = tempfile::tempdir().unwrap();
    register_webhook(&p, dir.path()).await;
    let real = kubectl_release(&p.client, &p.plane.kubeconfig).await;

    // The same on the simulator, served over loopback for kubectl, with a
    // webhook and a controller of its own.
    let scenario = sluice_sim::scenario::Scenario::parse(
        "differential",
        "name: differential\nseed: 1\nversions:\n  - {image: registry.example/web:1.0, profile: {startMinSeconds: 0.2, startMaxSeconds: 0.5, readyAfterSeconds: 0.2}}\n  - {image: registry.example/web:2.0, profile: {startMinSeconds: 0.2, startMaxSeconds: 0.5, readyAfterSeconds: 0.2}}\n",
    )
    .unwrap();
    let sim = sluice_sim::scenario::Simulation::start(scenario).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(axum::serve(listener, sim.api.router()).into_future());
    let kubeconfig = dir.path().join("sim.kubeconfig");
    std::fs::write(
        &kubeconfig,
        sluice_sim::kubeconfig(addr, &Default::default()),
    )
    .unwrap();
    let client = sluice_executor::client_over(sim.api.router(), "default", &Arc::default());
    let sim_dir = dir.path().join("sim");
    std::fs::create_dir(&sim_dir).unwrap();
    register_webhook_at(&client, &kubeconfig, &stop, &sim_dir).await;
    let _controller = start_controller(&client, p.services, &stop, "simulated").await;
    let simulated = kubectl_release(&client, &kubeconfig).await;

    assert_eq!(real.steps, [2, 4], "{real:#?}");
    assert_eq!(real.at_pause, (2, 2), "the first batch on the real cluster");
    assert_eq!(
        simulated, real,
        "the simulator releases as the real control plane does"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_canary_behind_nginx_rolls_back_a_bad_change_and_restarts_on_a_newer_one_on_a_real_control_plane()
 {
    use k8s_openapi::api::{core::v1::Service, networking::v1::Ingress};
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let p = platform(&stop, LOAD_THROUGH_NGINX).await;
    let (plane, client) = (&p.plane, p.client.clone());
    let dir = tempfile::tempdir().unwrap();
    let _webhook = register_webhook(&p, dir.path()).await;
    apply(plane, &web_behind_nginx());
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let ingresses: Api<Ingress> = Api::default_namespaced(client.clone());
    let services: Api<Service> = Api::default_namespaced(client.clone());
    let rollouts: Api<Rollout> = Api::default_namespaced(client.clone());
    wait_deployment_ready(plane, &deployments, "web", 4).await;
    let original = ingresses.get("web").await.unwrap();
    // The binding: canary-style behind NGINX, each change checked by its
    // success rate, then held for a promotion.
    apply(
        plane,
        &[json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "workload": {"kind": "Deployment", "name": "web"},
                "traffic": {"stableService": "web", "nginx": {"ingress": "web"}},
                "strategy": {"style": "Canary", "canary": {"steps": [
                    {"replicas": "50%", "traffic": 50, "analyses": ["health"], "pause": {}}]}},
                "analyses": [{"name": "health", "metrics": [{
                    "name": "success-rate", "template": "request-success-rate",
                    "successCondition": {"threshold": {"min": 0.99}},
                    "failureCondition": {"threshold": {"max": 0.9}},
                    "initialDelay": "3s", "interval": "1s", "count": 3, "inconclusiveLimit": 2}]}],
            },
        })],
    );
    let idle = wait_status(&rollouts, "web", |s| s.phase == Phase::Succeeded).await;
    assert_eq!(idle.phase, Phase::Succeeded, "an idle binding: {idle:?}");
    // Let the stable version serve through the real objects for a while.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let canary_traces = || async {
        (
            deployments.get_opt("web-canary").await.unwrap().is_some(),
            ingresses.get_opt("web-canary").await.unwrap().is_some(),
            services.get_opt("web-canary").await.unwrap().is_some(),
        )
    };

    // A bad version, by kubectl: held, tried on half the traffic, rolled
    // back by its analysis; the user's pods were never touched.
    let (ok, out) = plane.kubectl(&[
        "set",
        "image",
        "deployment/web",
        "web=registry.example/web:2.0-bad",
    ]);
    assert!(ok, "{out}");
    let failed = wait_status(&rollouts, "web", |s| {
        s.release != idle.release && matches!(s.phase, Phase::RolledBack | Phase::Failed)
    })
    .await;
    assert_eq!(failed.phase, Phase::RolledBack, "{failed:#?}");
    assert!(
        failed.message.contains("analysis failed"),
        "{}",
        failed.message
    );
    assert_eq!(canary_traces().await, (false, false, false));
    let ingress = ingresses.get("web").await.unwrap();
    assert_eq!(ingress.spec, original.spec);
    assert_eq!(ingress.metadata.annotations, original.metadata.annotations);
    let d = deployments.get("web").await.unwrap();
    assert_eq!(
        users_fields(&d)["paused"],
        json!(true),
        "held on the rejected version"
    );
    assert_eq!(
        d.status.as_ref().unwrap().updated_replicas.unwrap_or(0),
        0,
        "kube-controller-manager made no pod of it"
    );

    // A fix, then a newer one while the fix waits at its step: the release
    // starts over on the newest from the same stable version, and ends
    // with every pod on it and nothing of Sluice's left.
    let (ok, out) = plane.kubectl(&[
        "set",
        "image",
        "deployment/web",
        "web=registry.example/web:2.0",
    ]);
    assert!(ok, "{out}");
    let paused = wait_status(&rollouts, "web", |s| {
        s.release != failed.release && s.phase == Phase::Paused
    })
    .await;
    assert_eq!(paused.phase, Phase::Paused, "{paused:#?}");
    let (ok, out) = plane.kubectl(&[
        "set",
        "image",
        "deployment/web",
        "web=registry.example/web:3.0",
    ]);
    assert!(ok, "{out}");
    let again = wait_status(&rollouts, "web", |s| {
        s.release != paused.release && s.phase == Phase::Paused
    })
    .await;
    assert_eq!(again.phase, Phase::Paused, "{again:#?}");
    assert_eq!(again.stable_revision, paused.stable_revision, "same stable");
    let canary = deployments.get("web-canary").await.unwrap();
    assert_eq!(
        canary.spec.unwrap().template.spec.unwrap().containers[0]
            .image
            .as_deref(),
        Some("registry.example/web:3.0")
    );
    let (ok, out) = plane.kubectl(&["annotate", "rollout", "web", "sluice.dev/promote=step:0"]);
    assert!(ok, "{out}");
    let done = wait_status(&rollouts, "web", |s| {
        s.release == again.release && s.phase == Phase::Succeeded
    })
    .await;
    assert_eq!(done.phase, Phase::Succeeded, "{done:#?}");
    wait_deployment_ready(plane, &deployments, "web", 4).await;
    let d = deployments.get("web").await.unwrap();
    assert_eq!(d.status.as_ref().unwrap().updated_replicas, Some(4));
    assert_eq!(
        users_fields(&d),
        json!({"replicas": 4, "paused": false, "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}, "image": "registry.example/web:3.0", "sluice_annotations": []})
    );
    assert_eq!(canary_traces().await, (false, false, false));
    let ingress = ingresses.get("web").await.unwrap();
    assert_eq!(ingress.spec, original.spec);
    assert_eq!(ingress.metadata.annotations, original.metadata.annotations);
}

/// What a GitOps tool's server-side applies and a person's kubectl meet on
/// a cluster: each step's outcome (an error's first line), then the
/// object's labels, annotations and image, and each client manager's
/// entry (controllers' entries left out: their writes differ by design).
fn server_side_story(kubeconfig: &std::path::Path) -> Vec<serde_json::Value> {
    let manifest = |image: &str, labels: serde_json::Value, annotations: serde_json::Value| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "ssa", "namespace": "default", "labels": labels, "annotations": annotations},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "ssa"}},
                "template": {"metadata": {"labels": {"app": "ssa"}},
                    "spec": {"containers": [{"name": "web", "image": image,
                        "ports": [{"containerPort": 8080, "name": "http"}]}]}}}})
    };
    let apply = |m: &serde_json::Value, force: bool| {
        let file = tempfile::Builder::new().suffix(".json").tempfile().unwrap();
        std::fs::write(file.path(), m.to_string()).unwrap();
        let mut args = vec![
            "apply",
            "--server-side",
            "--field-manager=flux",
            "-f",
            file.path().to_str().unwrap(),
        ];
        if force {
            args.push("--force-conflicts");
        }
        kubectl_at(kubeconfig, &args)
    };
    let first_line = |(ok, out): (bool, String)| json!({"ok": ok, "said": if ok { String::new() } else { out.lines().next().unwrap_or_default().to_owned() }});
    let mut story = Vec::new();
    let full = manifest(
        "registry.example/web:1.0",
        json!({"app": "ssa", "tier": "front"}),
        json!({"note": "from git"}),
    );
    story.push(first_line(apply(&full, false)));
    story.push(first_line(kubectl_at(
        kubeconfig,
        &[
            "set",
            "image",
            "deployment/ssa",
            "web=registry.example/web:2.0",
        ],
    )));
    // Git still says 1.0: a conflict with kubectl-set, unless forced.
    story.push(first_line(apply(&full, false)));
    story.push(first_line(apply(&full, true)));
    // Someone labels it by hand; git drops its tier label and annotation.
    story.push(first_line(kubectl_at(
        kubeconfig,
        &["label", "deployment/ssa", "team=shop"],
    )));
    story.push(first_line(apply(
        &manifest("registry.example/web:1.0", json!({"app": "ssa"}), json!({})),
        false,
    )));
    let (ok, out) = kubectl_at(
        kubeconfig,
        &[
            "get",
            "deployment/ssa",
            "-o",
            "json",
            "--show-managed-fields",
        ],
    );
    assert!(ok, "{out}");
    let object: serde_json::Value = serde_json::from_str(&out).unwrap();
    let annotations: serde_json::Map<String, serde_json::Value> = object["metadata"]["annotations"]
        .as_object()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("deployment.kubernetes.io/"))
        .collect();
    story.push(json!({
        "labels": object["metadata"]["labels"],
        "annotations": annotations,
        "image": object["spec"]["template"]["spec"]["containers"][0]["image"],
    }));
    for entry in object["metadata"]["managedFields"].as_array().unwrap() {
        if entry["manager"] == "kube-controller-manager" {
            continue;
        }
        story.push(json!({
            "manager": entry["manager"],
            "operation": entry["operation"],
            "apiVersion": entry["apiVersion"],
            "subresource": entry["subresource"],
            "fieldsV1": entry["fieldsV1"],
        }));
    }
    // Scaled by hand (as an autoscaler would): git's replicas conflict
    // with the scale subresource's writer until forced.
    story.push(first_line(kubectl_at(
        kubeconfig,
        &["scale", "deployment/ssa", "--replicas=3"],
    )));
    let back = manifest("registry.example/web:1.0", json!({"app": "ssa"}), json!({}));
    story.push(first_line(apply(&back, false)));
    story.push(first_line(apply(&back, true)));
    story
}

/// kubectl moving a Deployment from client-side to server-side apply,
/// dropping an env var and an annotation on the way: each answer, then
/// what is left and who owns it.
fn migration_story(kubeconfig: &std::path::Path) -> Vec<serde_json::Value> {
    let manifest = |env: serde_json::Value, annotations: serde_json::Value| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "moved", "namespace": "default", "annotations": annotations},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "moved"}},
                "template": {"metadata": {"labels": {"app": "moved"}},
                    "spec": {"containers": [{"name": "web", "image": "registry.example/web:1.0", "env": env}]}}}})
    };
    let run = |m: &serde_json::Value, server_side: bool| {
        let file = tempfile::Builder::new().suffix(".json").tempfile().unwrap();
        std::fs::write(file.path(), m.to_string()).unwrap();
        let mut args = vec!["apply", "-f", file.path().to_str().unwrap()];
        if server_side {
            args.push("--server-side");
        }
        let (ok, _) = kubectl_at(kubeconfig, &args);
        json!(ok)
    };
    let mut story = vec![
        run(
            &manifest(
                json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]),
                json!({"note": "x"}),
            ),
            false,
        ),
        run(
            &manifest(json!([{"name": "A", "value": "1"}]), json!({})),
            true,
        ),
    ];
    let (ok, out) = kubectl_at(
        kubeconfig,
        &[
            "get",
            "deployment/moved",
            "-o",
            "json",
            "--show-managed-fields",
        ],
    );
    assert!(ok, "{out}");
    let object: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut annotations: Vec<String> = object["metadata"]["annotations"]
        .as_object()
        .map(|a| {
            a.keys()
                .filter(|k| !k.starts_with("deployment.kubernetes.io/"))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    annotations.sort();
    story.push(json!({
        "env": object["spec"]["template"]["spec"]["containers"][0]["env"],
        "annotations": annotations,
    }));
    let mut managers: Vec<String> = object["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["manager"] != "kube-controller-manager")
        .map(|e| format!("{} {}", e["manager"], e["operation"]))
        .collect();
    managers.sort();
    story.push(json!(managers));
    story
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_owns_conflicts_and_removes_alike_on_the_simulator_and_a_real_control_plane()
 {
    let plane = ControlPlane::start().await;
    let real = server_side_story(&plane.kubeconfig);
    let real_migration = migration_story(&plane.kubeconfig);

    let scenario = sluice_sim::scenario::Scenario::parse(
        "ssa",
        "name: ssa\nseed: 1\nversions:\n  - {image: registry.example/web:1.0}\n",
    )
    .unwrap();
    let sim = sluice_sim::scenario::Simulation::start(scenario).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(axum::serve(listener, sim.api.router()).into_future());
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("sim.kubeconfig");
    std::fs::write(
        &kubeconfig,
        sluice_sim::kubeconfig(addr, &Default::default()),
    )
    .unwrap();
    let simulated = server_side_story(&kubeconfig);
    let simulated_migration = migration_story(&kubeconfig);

    // The story as kube-apiserver tells it: the conflict named, forced
    // away, a dropped field removed and a hand-made label kept.
    assert_eq!(real[2]["ok"], false, "{real:#?}");
    assert!(
        real[2]["said"]
            .as_str()
            .unwrap()
            .contains(r#"conflict with "kubectl-set" using apps/v1: .spec.template.spec.containers[name="web"].image"#),
        "{real:#?}"
    );
    assert_eq!(
        real[6]["labels"],
        json!({"app": "ssa", "team": "shop"}),
        "{real:#?}"
    );
    let scaled_then_applied = &real[real.len() - 2];
    assert_eq!(scaled_then_applied["ok"], false, "{real:#?}");
    assert!(
        scaled_then_applied["said"]
            .as_str()
            .unwrap()
            .contains(r#"with subresource "scale""#),
        "{real:#?}"
    );
    for (step, (s, r)) in simulated.iter().zip(&real).enumerate() {
        assert_eq!(
            s, r,
            "step {step}: the simulator (left) and kube-apiserver (right)"
        );
    }
    assert_eq!(simulated.len(), real.len(), "{simulated:#?}\n{real:#?}");
    // kubectl's move to server-side apply drops what the new manifest
    // leaves out, on both.
    assert_eq!(
        real_migration[2]["env"],
        json!([{"name": "A", "value": "1"}])
    );
    assert_eq!(
        simulated_migration, real_migration,
        "the simulator (left) and kube-apiserver (right)"
    );
}

/// The agent's nodes on a real control plane (no node lifecycle
/// controller runs there): Ready and without the `not-ready` taint the
/// API server's admission put on them, so kube-controller-manager's
/// DaemonSet controller makes a pod for each and the agent binds each to
/// its own node; a pod with a node selector goes only to that node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonsets_and_node_selectors_place_pods_on_the_agents_nodes_of_a_real_control_plane() {
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let plane = ControlPlane::start().await;
    let client = plane.client().await;
    let _metrics = fleet::start(&client, "", &stop).await;
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let mut untainted = false;
    for _ in 0..300 {
        let list = nodes.list(&ListParams::default()).await.unwrap().items;
        untainted = list.len() == 2
            && list.iter().all(|n| {
                n.spec
                    .as_ref()
                    .and_then(|s| s.taints.as_ref())
                    .is_none_or(|t| t.iter().all(|t| t.key != "node.kubernetes.io/not-ready"))
            });
        if untainted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(untainted, "the agent's two nodes lose the not-ready taint");
    apply(
        &plane,
        &[
            json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "logs", "namespace": "default"},
                "spec": {"selector": {"matchLabels": {"app": "logs"}},
                    "template": {"metadata": {"labels": {"app": "logs"}},
                        "spec": {"containers": [{"name": "agent", "image": "registry.example/logs:1.0"}]}}}}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "pinned", "namespace": "default"},
                "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "pinned"}},
                    "template": {"metadata": {"labels": {"app": "pinned"}},
                        "spec": {"nodeSelector": {"kubernetes.io/hostname": "sluice-node-1"},
                            "containers": [{"name": "web", "image": "registry.example/web:1.0"}]}}}}),
        ],
    );
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    wait_deployment_ready(&plane, &deployments, "pinned", 3).await;
    let daemonsets: Api<k8s_openapi::api::apps::v1::DaemonSet> =
        Api::default_namespaced(client.clone());
    let mut status = None;
    for _ in 0..600 {
        let s = daemonsets
            .get("logs")
            .await
            .unwrap()
            .status
            .unwrap_or_default();
        if s.desired_number_scheduled == 2 && s.number_ready == 2 {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        status.is_some(),
        "the DaemonSet is scheduled and ready on both nodes: {:?}; kcm log:\n{}",
        daemonsets.get("logs").await.unwrap().status,
        plane.log("kube-controller-manager")
    );
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::default_namespaced(client.clone());
    let on = |app: &'static str| {
        let pods = pods.clone();
        async move {
            let mut nodes: Vec<String> = pods
                .list(&ListParams::default().labels(&format!("app={app}")))
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|p| p.spec.unwrap().node_name.unwrap_or_default())
                .collect();
            nodes.sort();
            nodes
        }
    };
    assert_eq!(
        on("logs").await,
        ["sluice-node-0", "sluice-node-1"],
        "one per node, each on its own"
    );
    assert_eq!(on("pinned").await, ["sluice-node-1"; 3]);

    // A node's room comes back as its pods go: two rounds of 40 pods on a
    // node of 50, which already holds 4, fit only if the first round's
    // room was given back.
    for round in 0..2 {
        for replicas in [40, 0] {
            deployments
                .patch(
                    "pinned",
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(json!({"spec": {"replicas": replicas}})),
                )
                .await
                .unwrap();
            if replicas > 0 {
                wait_deployment_ready(&plane, &deployments, "pinned", replicas).await;
            }
        }
        let mut gone = false;
        for _ in 0..600 {
            gone = on("pinned").await.is_empty();
            if gone {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(gone, "round {round}: the pods went");
    }
}
