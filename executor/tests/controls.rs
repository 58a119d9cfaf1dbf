//! Control calls at the moments a deploy platform makes them, end to end on
//! the simulated cluster: Pause, Resume, Promote, Abort and Retry never
//! restart a release or lose its progress, and a terminal phase is written
//! only when it is true.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests stop at the first failed step

use std::time::Duration;

use k8s_openapi::api::{
    apps::v1::{Deployment, ReplicaSet},
    core::v1::Service,
};
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use sluice_executor::{
    crd::{Phase, Rollout, RolloutStatus, StepState},
    keys,
};

mod common;

use common::{World, finished, ready_workload, wait_phase, world};

fn rollout_yaml(style: &str, steps: &str, container: &str) -> Rollout {
    serde_yaml::from_str(&format!(
        r#"
apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata: {{name: web}}
spec:
  workload: {{kind: Deployment, name: web}}
  images: [{{container: {container}, image: "registry.example/web:2.0"}}]
  traffic: {{stableService: web}}
  strategy:
    style: {style}
    canary:
      progressDeadline: 120s
      steps: {steps}
"#
    ))
    .unwrap()
}

async fn start(world: &World, rollout: &Rollout) -> Api<Rollout> {
    let rollouts: Api<Rollout> = Api::default_namespaced(world.client.clone());
    rollouts
        .create(&PostParams::default(), rollout)
        .await
        .unwrap();
    rollouts
}

async fn merge(rollouts: &Api<Rollout>, patch: serde_json::Value) {
    rollouts
        .patch("web", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
}

/// What the API's Pause and Resume do.
async fn set_paused(rollouts: &Api<Rollout>, paused: bool) {
    merge(rollouts, json!({"spec": {"paused": paused}})).await;
}

/// What the API's Promote does, at the step the rollout is at.
async fn promote(rollouts: &Api<Rollout>, full: bool) {
    let step = status(rollouts).await.current_step;
    let how = if full { "full" } else { "step" };
    merge(
        rollouts,
        json!({"metadata": {"annotations": {keys::PROMOTE: format!("{how}:{step}")}}}),
    )
    .await;
}

async fn abort(rollouts: &Api<Rollout>) {
    merge(
        rollouts,
        json!({"metadata": {"annotations": {keys::ABORT: "by the test"}}}),
    )
    .await;
}

/// What the API's Retry does.
async fn retry(rollouts: &Api<Rollout>) {
    rollouts
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": null})),
        )
        .await
        .unwrap();
}

async fn status(rollouts: &Api<Rollout>) -> RolloutStatus {
    rollouts
        .get("web")
        .await
        .unwrap()
        .status
        .unwrap_or_default()
}

/// Waits for the status to satisfy `ok`.
async fn wait_for(rollouts: &Api<Rollout>, what: &str, ok: impl Fn(&RolloutStatus) -> bool) {
    for _ in 0..600 {
        if ok(&status(rollouts).await) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never {what}: {:#?}", status(rollouts).await);
}

fn paused_at_step(step: u32) -> impl Fn(&RolloutStatus) -> bool {
    move |s| s.phase == Phase::Paused && s.step_state == StepState::Paused && s.current_step == step
}

fn condition<'a>(s: &'a RolloutStatus, kind: &str) -> (&'a str, &'a str) {
    s.conditions
        .iter()
        .find(|c| c.kind == kind)
        .map_or(("", ""), |c| (c.status.as_str(), c.reason.as_str()))
}

/// The ReplicaSets whose pods run `image`.
async fn sets_running(world: &World, image: &str) -> Vec<ReplicaSet> {
    let sets: Api<ReplicaSet> = Api::default_namespaced(world.client.clone());
    sets.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|rs| {
            rs.spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .and_then(|t| t.spec.as_ref())
                .is_some_and(|p| p.containers[0].image.as_deref() == Some(image))
        })
        .collect()
}

/// Ready pods running `image`, across every ReplicaSet.
async fn ready_with(world: &World, image: &str) -> i32 {
    sets_running(world, image)
        .await
        .iter()
        .map(|rs| {
            rs.status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0)
        })
        .sum()
}

async fn assert_handed_back(world: &World, image: &str) {
    let d: Deployment = Api::default_namespaced(world.client.clone())
        .get("web")
        .await
        .unwrap();
    let spec = d.spec.clone().unwrap();
    assert_eq!(
        spec.template.spec.unwrap().containers[0].image.as_deref(),
        Some(image)
    );
    assert_ne!(spec.paused, Some(true), "the Deployment is handed back");
    assert!(
        d.metadata
            .annotations
            .unwrap_or_default()
            .keys()
            .all(|k| !k.starts_with("sluice.dev/")),
        "no trace left on the Deployment"
    );
    assert_eq!(
        ready_with(world, image).await,
        10,
        "every replica runs {image}"
    );
}

/// The release lands nothing while held: the same step, the same pods.
async fn assert_held(world: &World, rollouts: &Api<Rollout>, step: u32, new_pods: i32) {
    for _ in 0..20 {
        let s = status(rollouts).await;
        assert_eq!(s.phase, Phase::Paused, "{s:#?}");
        assert_eq!(s.current_step, step, "{s:#?}");
        assert_eq!(
            ready_with(world, "registry.example/web:2.0").await,
            new_pods
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn pause_and_resume_at_a_partition_step_keep_its_progress_until_promoted() {
    let world = world("healthy").await;
    ready_workload(&world).await;
    let rollouts = start(
        &world,
        &rollout_yaml(
            "Partition",
            "[{replicas: 1, pause: {}}, {replicas: 50%}]",
            "web",
        ),
    )
    .await;
    wait_for(&rollouts, "paused at step 1", paused_at_step(0)).await;
    assert_eq!(ready_with(&world, "registry.example/web:2.0").await, 1);

    set_paused(&rollouts, true).await;
    wait_for(&rollouts, "paused by request", |s| {
        condition(s, "Paused") == ("True", "PausedByRequest")
    })
    .await;
    assert_held(&world, &rollouts, 0, 1).await;

    set_paused(&rollouts, false).await;
    wait_for(&rollouts, "back in its step's pause", |s| {
        condition(s, "Paused") == ("True", "StepPause")
    })
    .await;
    assert_held(&world, &rollouts, 0, 1).await;

    promote(&rollouts, false).await;
    let done = wait_phase(&rollouts, finished).await.status.unwrap();
    assert_eq!(done.phase, Phase::Succeeded, "{done:#?}");
    assert_eq!(condition(&done, "Completed"), ("True", "Succeeded"));
    assert!(done.started.is_some() && done.finished.is_some());
    assert_handed_back(&world, "registry.example/web:2.0").await;
}

/// `kubectl rollout resume` of the Deployment a release holds, with no
/// webhook to keep the hold: the executor pauses it again rather than let
/// its controller roll the held `Recreate` strategy out (every old pod
/// down at once), and an abort then ends.
#[tokio::test(start_paused = true)]
async fn a_deployment_unpaused_mid_release_is_held_again_and_its_old_pods_stay() {
    let world = world("healthy").await;
    ready_workload(&world).await;
    let rollouts = start(
        &world,
        &rollout_yaml(
            "Partition",
            "[{replicas: 2, pause: {}}, {replicas: 50%}]",
            "web",
        ),
    )
    .await;
    wait_for(&rollouts, "paused at step 1", paused_at_step(0)).await;
    let deployments: Api<Deployment> = Api::default_namespaced(world.client.clone());
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": false}})),
        )
        .await
        .unwrap();
    let mut held = false;
    for _ in 0..50 {
        let d = deployments.get("web").await.unwrap();
        if d.spec.unwrap().paused == Some(true) {
            held = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(held, "the hold is back");
    // The batch holds: 2 new pods, the stable ones back to 8.
    for _ in 0..100 {
        if ready_with(&world, "registry.example/web:1.0").await == 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_held(&world, &rollouts, 0, 2).await;
    assert_eq!(ready_with(&world, "registry.example/web:1.0").await, 8);
    abort(&rollouts).await;
    let done = wait_phase(&rollouts, finished).await.status.unwrap();
    assert_eq!(done.phase, Phase::RolledBack, "{done:#?}");
    assert_eq!(ready_with(&world, "registry.example/web:1.0").await, 10);
    let d = deployments.get("web").await.unwrap();
    assert_ne!(d.spec.unwrap().paused, Some(true), "given back unpaused");
}

/// The new version's ReplicaSet's `spec.replicas`.
async fn new_replicas(world: &World) -> i32 {
    sets_running(world, "registry.example/web:2.0")
        .await
        .iter()
        .filter_map(|rs| rs.spec.as_ref()?.replicas)
        .sum()
}

/// A pause that lands between a promotion's moves and the status write that
/// records them (the Rollouts' watch lags, the status write is slow): the
/// status still says where the release is, and it holds there.
#[tokio::test(start_paused = true)]
async fn a_pause_landing_while_a_promotion_is_recorded_leaves_a_true_status() {
    use sluice_sim::api::faults::Rule;
    let world = world("healthy").await;
    ready_workload(&world).await;
    let rollouts = start(
        &world,
        &rollout_yaml(
            "Partition",
            "[{replicas: 2, pause: {}}, {replicas: 4, pause: {}}, {replicas: 6}]",
            "web",
        ),
    )
    .await;
    wait_for(&rollouts, "paused at step 1", paused_at_step(0)).await;
    let faults = world.sim.api.faults();
    faults.add(Rule::WatchLag {
        id: "late".into(),
        resource: "rollouts".into(),
        lag: Duration::from_millis(300),
    });
    faults.add(Rule::Latency {
        id: "slow".into(),
        verb: "patch".into(),
        resource: "rollouts".into(),
        latency: Duration::from_millis(500),
    });
    promote(&rollouts, true).await;
    // The moment the promotion moves pods, a pause (a replace: not slowed)
    // lands before the status write that records the move.
    for _ in 0..500 {
        if new_replicas(&world).await > 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(new_replicas(&world).await > 2, "the promotion moved no pod");
    let mut paused = rollouts.get("web").await.unwrap();
    paused.spec.paused = true;
    rollouts
        .replace("web", &PostParams::default(), &paused)
        .await
        .unwrap();
    faults.clear(&[]);
    wait_for(&rollouts, "paused by request", |s| {
        condition(s, "Paused") == ("True", "PausedByRequest")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s = status(&rollouts).await;
    let moved = new_replicas(&world).await;
    assert!(s.current_step >= 1, "the promotion is recorded: {s:#?}");
    assert!(
        i32::try_from(s.canary_replicas).unwrap() >= moved,
        "the status's batch holds the new pods there are ({moved}): {s:#?}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(new_replicas(&world).await, moved, "held while paused");
}

#[tokio::test(start_paused = true)]
async fn a_canary_release_keeps_its_pods_through_pause_and_resume_then_aborts_and_retries() {
    let world = world("healthy").await;
    ready_workload(&world).await;
    let rollouts = start(
        &world,
        &rollout_yaml(
            "Canary",
            "[{replicas: 3, pause: {}}, {replicas: 6, pause: {}}]",
            "web",
        ),
    )
    .await;
    wait_for(&rollouts, "paused at step 1", paused_at_step(0)).await;
    assert_eq!(ready_with(&world, "registry.example/web:2.0").await, 3);
    set_paused(&rollouts, true).await;
    assert_held(&world, &rollouts, 0, 3).await;
    set_paused(&rollouts, false).await;
    assert_held(&world, &rollouts, 0, 3).await;

    promote(&rollouts, false).await;
    wait_for(&rollouts, "paused at step 2", paused_at_step(1)).await;
    assert_eq!(ready_with(&world, "registry.example/web:2.0").await, 6);

    abort(&rollouts).await;
    let done = wait_phase(&rollouts, finished).await.status.unwrap();
    assert_eq!(done.phase, Phase::RolledBack, "{done:#?}");
    assert!(done.message.contains("by the test"), "{}", done.message);
    // Every trace is gone once RolledBack is written.
    let deployments: Api<Deployment> = Api::default_namespaced(world.client.clone());
    assert!(deployments.get_opt("web-canary").await.unwrap().is_none());
    let services: Api<Service> = Api::default_namespaced(world.client.clone());
    assert!(services.get_opt("web-canary").await.unwrap().is_none());
    let stable = services.get("web").await.unwrap();
    assert!(
        stable
            .metadata
            .annotations
            .unwrap_or_default()
            .keys()
            .all(|k| !k.starts_with("sluice.dev/"))
    );
    assert_eq!(ready_with(&world, "registry.example/web:1.0").await, 10);

    retry(&rollouts).await;
    wait_for(&rollouts, "paused at step 1 again", paused_at_step(0)).await;
    promote(&rollouts, true).await;
    let done = wait_phase(&rollouts, finished).await.status.unwrap();
    assert_eq!(done.phase, Phase::Succeeded, "{done:#?}");
    assert_handed_back(&world, "registry.example/web:2.0").await;
    assert!(deployments.get_opt("web-canary").await.unwrap().is_none());
}

/// A pause and an abort that reach the controller after it gave the
/// workload back (through kubectl, or crossing the last look): the release
/// neither holds nor rolls back a workload its own controller is already
/// rolling, ends Succeeded, says the abort came too late and leaves no
/// control behind for the next release.
#[tokio::test(start_paused = true)]
async fn a_pause_or_an_abort_during_the_hand_back_neither_holds_nor_drops_silently() {
    let world = world("healthy").await;
    ready_workload(&world).await;
    let rollouts = start(
        &world,
        &rollout_yaml("Canary", "[{replicas: 3, pause: {}}]", "web"),
    )
    .await;
    wait_for(&rollouts, "paused at step 1", paused_at_step(0)).await;
    promote(&rollouts, false).await;
    // The canary style hands the new template to the Deployment, whose own
    // controller then replaces its ten pods: a hand-back of a few seconds.
    wait_for(&rollouts, "handing back", |s| {
        s.handing_back_since.is_some()
    })
    .await;
    set_paused(&rollouts, true).await;
    abort(&rollouts).await;
    let s = status(&rollouts).await;
    assert_ne!(s.phase, Phase::Paused, "{s:#?}");
    let done = wait_phase(&rollouts, finished).await;
    let status = done.status.clone().unwrap();
    assert_eq!(status.phase, Phase::Succeeded, "{status:#?}");
    assert!(
        status
            .message
            .contains("an abort asked during the hand-back came too late"),
        "{}",
        status.message
    );
    assert_eq!(condition(&status, "Paused"), ("False", "NotPaused"));
    assert_eq!(status.handing_back_since, None);
    // The abort was read and taken off: nothing acts on the next release.
    let rollout = rollouts.get("web").await.unwrap();
    assert!(
        !rollout
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key(keys::ABORT),
        "the abort is taken off"
    );
    assert_handed_back(&world, "registry.example/web:2.0").await;
}

#[tokio::test(start_paused = true)]
async fn an_image_for_a_container_the_workload_lacks_fails_naming_it() {
    let world = world("healthy").await;
    ready_workload(&world).await;
    let rollouts = start(
        &world,
        &rollout_yaml("Partition", "[{replicas: 50%}]", "sidecar"),
    )
    .await;
    let done = wait_phase(&rollouts, finished).await.status.unwrap();
    assert_eq!(done.phase, Phase::Failed, "{done:#?}");
    assert!(
        done.message.contains("\"sidecar\"") && done.message.contains("it has: web"),
        "{}",
        done.message
    );
    assert_eq!(ready_with(&world, "registry.example/web:1.0").await, 10);
}

#[tokio::test(start_paused = true)]
async fn a_release_started_while_the_workload_still_rolls_out_waits_for_it() {
    let world = world("healthy").await;
    // No wait for the workload: it is still coming up.
    let rollouts = start(
        &world,
        &rollout_yaml("Partition", "[{replicas: 50%}]", "web"),
    )
    .await;
    wait_for(&rollouts, "waiting to start", |s| {
        s.phase == Phase::Pending && s.message.contains("waiting to start")
    })
    .await;
    let done = wait_phase(&rollouts, finished).await.status.unwrap();
    assert_eq!(done.phase, Phase::Succeeded, "{done:#?}");
    assert_handed_back(&world, "registry.example/web:2.0").await;
}

#[tokio::test(start_paused = true)]
async fn crash_looping_new_pods_roll_back_before_the_progress_deadline_naming_the_pod() {
    let world = world("crashloop").await;
    ready_workload(&world).await;
    let rollouts = start(
        &world,
        &rollout_yaml("Partition", "[{replicas: 2}, {replicas: 50%}]", "web"),
    )
    .await;
    let done = wait_phase(&rollouts, finished).await.status.unwrap();
    assert_eq!(done.phase, Phase::RolledBack, "{done:#?}");
    assert!(
        done.message.contains("CrashLoopBackOff")
            && done.message.contains("container web")
            && done.message.contains("pod web-"),
        "{}",
        done.message
    );
    let started = sluice_executor::machine::parse_time(done.started.as_deref().unwrap()).unwrap();
    let finished = sluice_executor::machine::parse_time(done.finished.as_deref().unwrap()).unwrap();
    assert!(
        finished.duration_since(started).unwrap() < Duration::from_secs(120),
        "decided by the pods, not by the 120 s progress deadline"
    );
    assert_eq!(ready_with(&world, "registry.example/web:1.0").await, 10);
}

/// Pods of the StatefulSet `db` running `image`, ready.
async fn db_ready_with(world: &World, image: &str) -> usize {
    use k8s_openapi::api::core::v1::Pod;
    let pods: Api<Pod> = Api::default_namespaced(world.client.clone());
    pods.list(&ListParams::default().labels("app=db"))
        .await
        .unwrap()
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some(image)
                && p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count()
}

#[tokio::test(start_paused = true)]
async fn a_statefulset_release_holds_its_partition_through_pause_and_rolls_back_on_abort() {
    use k8s_openapi::api::apps::v1::StatefulSet;
    let world = world("healthy").await;
    let sets: Api<StatefulSet> = Api::default_namespaced(world.client.clone());
    let db: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "db"},
        "spec": {"replicas": 4, "serviceName": "db", "podManagementPolicy": "Parallel", "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db", "image": "registry.example/db:1.0"}]}}}
    }))
    .unwrap();
    sets.create(&PostParams::default(), &db).await.unwrap();
    for _ in 0..300 {
        if db_ready_with(&world, "registry.example/db:1.0").await == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rollout: Rollout = serde_yaml::from_str(
        "apiVersion: sluice.dev/v1alpha1\nkind: Rollout\nmetadata: {name: web}\nspec:\n  workload: {kind: StatefulSet, name: db}\n  images: [{container: db, image: registry.example/db:2.0}]\n  strategy: {canary: {steps: [{replicas: 1, pause: {}}, {replicas: 50%, pause: {}}]}}\n",
    )
    .unwrap();
    let rollouts = start(&world, &rollout).await;
    wait_for(&rollouts, "paused at step 1", paused_at_step(0)).await;
    assert_eq!(db_ready_with(&world, "registry.example/db:2.0").await, 1);

    set_paused(&rollouts, true).await;
    for _ in 0..20 {
        let s = status(&rollouts).await;
        assert_eq!((s.phase, s.current_step), (Phase::Paused, 0), "{s:#?}");
        assert_eq!(db_ready_with(&world, "registry.example/db:2.0").await, 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    set_paused(&rollouts, false).await;
    wait_for(&rollouts, "back in its step's pause", |s| {
        condition(s, "Paused") == ("True", "StepPause") && s.current_step == 0
    })
    .await;
    promote(&rollouts, false).await;
    wait_for(&rollouts, "paused at step 2", paused_at_step(1)).await;
    assert_eq!(db_ready_with(&world, "registry.example/db:2.0").await, 2);

    abort(&rollouts).await;
    let done = wait_phase(&rollouts, finished).await.status.unwrap();
    assert_eq!(done.phase, Phase::RolledBack, "{done:#?}");
    assert_eq!(db_ready_with(&world, "registry.example/db:1.0").await, 4);
    let db = sets.get("db").await.unwrap();
    assert!(
        db.metadata
            .annotations
            .unwrap_or_default()
            .keys()
            .all(|k| !k.starts_with("sluice.dev/")),
        "no trace left on the StatefulSet"
    );
    let partition = db
        .spec
        .unwrap()
        .update_strategy
        .and_then(|u| u.rolling_update)
        .and_then(|r| r.partition)
        .unwrap_or(0);
    assert_eq!(partition, 0, "the partition as the user wrote it");
}

/// Every ReplicaSet's spec size and whether it carries a `sluice.dev/`
/// annotation, by image.
async fn sets_by_image(world: &World) -> Vec<(String, i32, bool)> {
    let sets: Api<ReplicaSet> = Api::default_namespaced(world.client.clone());
    let mut all: Vec<(String, i32, bool)> = sets
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|rs| {
            let marked = rs
                .metadata
                .annotations
                .unwrap_or_default()
                .keys()
                .any(|k| k.starts_with("sluice.dev/"));
            let spec = rs.spec.unwrap();
            let image = spec.template.unwrap().spec.unwrap().containers[0]
                .image
                .clone()
                .unwrap();
            (image, spec.replicas.unwrap_or(1), marked)
        })
        .collect();
    all.sort();
    all
}

#[tokio::test(start_paused = true)]
async fn a_newer_version_mid_release_retires_the_middle_one_and_leaves_no_trace() {
    let world = world("healthy").await;
    ready_workload(&world).await;
    let rollouts = start(
        &world,
        &rollout_yaml(
            "Partition",
            "[{replicas: 3, pause: {}}, {replicas: 50%, pause: {}}]",
            "web",
        ),
    )
    .await;
    wait_for(&rollouts, "paused at step 1", paused_at_step(0)).await;
    assert_eq!(ready_with(&world, "registry.example/web:2.0").await, 3);

    // The platform asks for 3.0 while 2.0 is on 3 pods.
    let middle = status(&rollouts).await.canary_revision;
    merge(
        &rollouts,
        json!({"spec": {"images": [{"container": "web", "image": "registry.example/web:3.0"}]}}),
    )
    .await;
    wait_for(&rollouts, "paused at step 1 of the new release", |s| {
        s.canary_revision != middle
            && paused_at_step(0)(s)
            && s.canary_replicas == 3
            && s.ready_canary_replicas == 3
    })
    .await;
    // The middle version's pods are gone, the stable one kept the rest.
    let sets = sets_by_image(&world).await;
    let size = |image: &str| {
        sets.iter()
            .filter(|(i, _, _)| i.ends_with(image))
            .map(|(_, n, _)| n)
            .sum::<i32>()
    };
    assert_eq!(
        (size(":1.0"), size(":2.0"), size(":3.0")),
        (7, 0, 3),
        "{sets:?}"
    );

    promote(&rollouts, true).await;
    let done = wait_phase(&rollouts, finished).await.status.unwrap();
    assert_eq!(done.phase, Phase::Succeeded, "{done:#?}");
    let sets = sets_by_image(&world).await;
    assert!(
        sets.iter().all(|(_, _, marked)| !marked),
        "no ReplicaSet keeps a sluice.dev/ annotation: {sets:?}"
    );
    assert_handed_back(&world, "registry.example/web:3.0").await;
}

#[tokio::test(start_paused = true)]
async fn a_release_whose_status_was_lost_after_it_held_the_deployment_is_resumed_not_called_done() {
    // A status write can lose to a concurrent change of the Rollout (a
    // Pause, a new version on an ended rollout) after the release has
    // already held the Deployment with the new template: the next look
    // sees a Pending status without revisions. It must carry on from the
    // stable version recorded on the Deployment, never read the held
    // template as "already running".
    let world = world("healthy").await;
    ready_workload(&world).await;
    let rollouts = start(
        &world,
        &rollout_yaml("Partition", "[{replicas: 1, pause: {}}]", "web"),
    )
    .await;
    wait_for(&rollouts, "paused at step 1", paused_at_step(0)).await;
    assert_eq!(ready_with(&world, "registry.example/web:2.0").await, 1);
    // The status, lost.
    rollouts
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": null})),
        )
        .await
        .unwrap();
    wait_for(&rollouts, "paused at step 1 again", |s| {
        finished(s.phase) || (s.phase == Phase::Paused && s.current_step == 0)
    })
    .await;
    let again = status(&rollouts).await;
    assert_eq!(again.phase, Phase::Paused, "{again:#?}");
    assert_eq!(ready_with(&world, "registry.example/web:2.0").await, 1);
    promote(&rollouts, true).await;
    let done = wait_phase(&rollouts, finished).await.status.unwrap();
    assert_eq!(done.phase, Phase::Succeeded, "{done:#?}");
    assert_handed_back(&world, "registry.example/web:2.0").await;
}

/// Two Rollouts wait for the Deployment `web` holds; when its release
/// ends, both find it free at the same moment, and only one may take it.
async fn rollouts_waiting_for_one_deployment_take_it_one_at_a_time(style: &str) {
    let world = world("healthy").await;
    ready_workload(&world).await;
    let rollouts = start(
        &world,
        &rollout_yaml(style, "[{replicas: 1, pause: {}}, {replicas: 50%}]", "web"),
    )
    .await;
    wait_for(&rollouts, "paused at step 1", paused_at_step(0)).await;
    // Every Rollout version the cluster stores, in its order.
    let versions: std::sync::Arc<std::sync::Mutex<Vec<(u64, String, Phase)>>> =
        std::sync::Arc::default();
    let recording = {
        use futures::StreamExt;
        use kube::runtime::{WatchStreamExt, watcher};
        let (rollouts, versions) = (rollouts.clone(), std::sync::Arc::clone(&versions));
        tokio::spawn(async move {
            let mut events = watcher(rollouts, watcher::Config::default())
                .applied_objects()
                .boxed();
            while let Some(Ok(r)) = events.next().await {
                let rv = r.metadata.resource_version.as_deref().unwrap_or("0");
                versions.lock().unwrap().push((
                    rv.parse().unwrap_or(0),
                    r.metadata.name.clone().unwrap_or_default(),
                    r.status.map(|s| s.phase).unwrap_or_default(),
                ));
            }
        })
    };
    // Both back to 1.0, each pausing at its first step.
    for name in ["b", "c"] {
        let mut r = rollout_yaml(style, "[{replicas: 1, pause: {}}, {replicas: 50%}]", "web");
        r.metadata.name = Some(name.into());
        r.spec.images[0].image = "registry.example/web:1.0".into();
        rollouts.create(&PostParams::default(), &r).await.unwrap();
    }
    let of = |name: &'static str| {
        let rollouts = rollouts.clone();
        async move { rollouts.get(name).await.unwrap().status.unwrap_or_default() }
    };
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        for name in ["b", "c"] {
            let s = of(name).await;
            assert!(
                s.phase == Phase::Pending && s.steps.iter().all(|st| st.started.is_none()),
                "{name} started while web held the Deployment: {s:#?}"
            );
        }
    }
    promote(&rollouts, true).await;
    let done = wait_phase(&rollouts, finished).await.status.unwrap();
    assert_eq!(done.phase, Phase::Succeeded, "{done:#?}");
    // One of the two takes it and pauses at its step; the other waits.
    let deployments: Api<Deployment> = Api::default_namespaced(world.client.clone());
    let mut winner = None;
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (b, c) = (of("b").await, of("c").await);
        let began = |s: &RolloutStatus| s.steps.iter().any(|st| st.started.is_some());
        assert!(
            !began(&b) || !began(&c),
            "both took the Deployment: b {b:#?}\nc {c:#?}"
        );
        if winner.is_none() {
            winner = [("b", &b), ("c", &c)]
                .into_iter()
                .find(|(_, s)| paused_at_step(0)(s))
                .map(|(n, _)| n);
        }
        if let Some(w) = winner {
            let loser = if w == "b" { &c } else { &b };
            if loser.message.contains("held by Rollout") {
                let holder = deployments.get("web").await.unwrap();
                assert_eq!(
                    holder
                        .metadata
                        .annotations
                        .unwrap_or_default()
                        .get(keys::ROLLOUT),
                    Some(&w.to_owned())
                );
                // The winner moved only after web's end was stored.
                recording.abort();
                let versions = versions.lock().unwrap().clone();
                let first = |name: &str, phase: Phase| {
                    versions
                        .iter()
                        .filter(|(_, n, p)| n == name && *p == phase)
                        .map(|(rv, _, _)| *rv)
                        .min()
                };
                let (ended, began) = (
                    first("web", Phase::Succeeded).unwrap(),
                    first(w, Phase::Progressing).unwrap(),
                );
                assert!(
                    ended < began,
                    "{w} began (version {began}) before web ended (version {ended})"
                );
                return;
            }
        }
    }
    panic!(
        "no single holder after web: b {:#?}\nc {:#?}",
        of("b").await,
        of("c").await
    );
}

#[tokio::test(start_paused = true)]
async fn partition_rollouts_waiting_for_one_deployment_take_it_one_at_a_time() {
    rollouts_waiting_for_one_deployment_take_it_one_at_a_time("Partition").await;
}

#[tokio::test(start_paused = true)]
async fn canary_rollouts_waiting_for_one_deployment_take_it_one_at_a_time() {
    rollouts_waiting_for_one_deployment_take_it_one_at_a_time("Canary").await;
}

/// Starts a second Rollout of web, `next`, releasing web:3.0 partition-style
/// with `steps`; returns a reader of its status.
async fn start_next(
    rollouts: &Api<Rollout>,
    steps: &str,
) -> impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = RolloutStatus>>> {
    let mut next = rollout_yaml("Partition", steps, "web");
    next.metadata.name = Some("next".into());
    next.spec.images[0].image = "registry.example/web:3.0".into();
    rollouts
        .create(&PostParams::default(), &next)
        .await
        .unwrap();
    let rollouts = rollouts.clone();
    move || {
        let rollouts = rollouts.clone();
        Box::pin(async move {
            rollouts
                .get("next")
                .await
                .unwrap()
                .status
                .unwrap_or_default()
        })
    }
}

/// A Rollout deleted in flight (`kubectl delete` of an API-started one, or
/// DeleteRollout with `force`) leaves the Deployment as its release left
/// it, held. A Rollout made next for that Deployment says its holder is
/// gone and how to free it, rather than wait for a release nobody drives;
/// the holder made again takes that release over where it was, and once
/// it is aborted the next Rollout goes on.
#[tokio::test(start_paused = true)]
async fn a_hold_left_by_a_deleted_rollout_is_named_and_taken_over_by_its_name() {
    let world = world("healthy").await;
    ready_workload(&world).await;
    let steps = "[{replicas: 50%, pause: {}}, {replicas: 100%}]";
    let rollouts = start(&world, &rollout_yaml("Partition", steps, "web")).await;
    wait_for(&rollouts, "paused at step 1", paused_at_step(0)).await;
    assert_eq!(ready_with(&world, "registry.example/web:2.0").await, 5);
    rollouts.delete("web", &Default::default()).await.unwrap();
    for _ in 0..100 {
        if rollouts.get_opt("web").await.unwrap().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(rollouts.get_opt("web").await.unwrap().is_none());
    let of_next = start_next(&rollouts, "[{replicas: 100%}]").await;
    let mut named = false;
    for _ in 0..100 {
        let s = of_next().await;
        assert_eq!(s.phase, Phase::Pending, "{s:#?}");
        if s.message
            .contains("Rollout \"web\", which no longer exists")
            && s.message.contains("Create Rollout \"web\" again")
        {
            named = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(named, "{:#?}", of_next().await);
    // The half-released Deployment is left as it was meanwhile.
    assert_eq!(ready_with(&world, "registry.example/web:2.0").await, 5);
    // The holder again: it takes its release over at its step, pods kept.
    start(&world, &rollout_yaml("Partition", steps, "web")).await;
    wait_for(&rollouts, "paused at step 1 again", |s| {
        finished(s.phase) || paused_at_step(0)(s)
    })
    .await;
    assert_eq!(status(&rollouts).await.phase, Phase::Paused);
    assert_eq!(ready_with(&world, "registry.example/web:2.0").await, 5);
    // At its next look, the waiting Rollout names a holder that exists.
    for _ in 0..600 {
        if of_next()
            .await
            .message
            .contains("whose release must end first")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s = of_next().await;
    assert_eq!(s.phase, Phase::Pending, "{s:#?}");
    assert!(s.message.contains("whose release must end first"), "{s:#?}");
    abort(&rollouts).await;
    let done = wait_phase(&rollouts, finished).await.status.unwrap();
    assert_eq!(done.phase, Phase::RolledBack, "{done:#?}");
    // Then the next Rollout releases 3.0 to the end.
    for _ in 0..600 {
        if finished(of_next().await.phase) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s = of_next().await;
    assert_eq!(s.phase, Phase::Succeeded, "{s:#?}");
    assert_handed_back(&world, "registry.example/web:3.0").await;
}

/// New pods that cannot be made at all (here their ServiceAccount went
/// away; a quota or a webhook's refusal does the same) make no pod to
/// look at: the step's message says why from the new ReplicaSet's
/// `ReplicaFailure` condition while it waits, and the release goes on once
/// the pods can be made.
#[tokio::test(start_paused = true)]
async fn new_pods_that_cannot_be_made_are_said_while_the_step_waits() {
    use k8s_openapi::api::core::v1::ServiceAccount;
    let world = world("healthy").await;
    let accounts: Api<ServiceAccount> = Api::default_namespaced(world.client.clone());
    let account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "web"}})).unwrap();
    accounts
        .create(&PostParams::default(), &account)
        .await
        .unwrap();
    let deployments: Api<Deployment> = Api::default_namespaced(world.client.clone());
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": {"spec": {"serviceAccountName": "web"}}}})),
        )
        .await
        .unwrap();
    for _ in 0..600 {
        let d = deployments.get("web").await.unwrap();
        let st = d.status.unwrap_or_default();
        if st.updated_replicas == Some(10)
            && st.ready_replicas == Some(10)
            && st.replicas == Some(10)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rollouts = start(
        &world,
        &rollout_yaml(
            "Partition",
            "[{replicas: 1, pause: {}}, {replicas: 50%}]",
            "web",
        ),
    )
    .await;
    wait_for(&rollouts, "paused at step 1", paused_at_step(0)).await;
    accounts.delete("web", &Default::default()).await.unwrap();
    promote(&rollouts, false).await;
    wait_for(&rollouts, "the cause said", |s| {
        s.current_step == 1 && s.message.contains("new pods cannot be made")
    })
    .await;
    let s = status(&rollouts).await;
    assert_eq!(s.phase, Phase::Progressing, "{s:#?}");
    assert!(
        s.message
            .contains("error looking up service account default/web"),
        "{}",
        s.message
    );
    accounts
        .create(&PostParams::default(), &account)
        .await
        .unwrap();
    let done = wait_phase(&rollouts, finished).await.status.unwrap();
    assert_eq!(done.phase, Phase::Succeeded, "{done:#?}");
    assert!(!done.message.contains("cannot be made"), "{}", done.message);
}

/// A quota that cannot hold a batch's surge stalls the release at that
/// step, as on a real cluster, and the step's message carries the quota's
/// refusal; room made in the quota lets the release go on.
#[tokio::test(start_paused = true)]
async fn a_quota_that_refuses_the_new_pods_is_said_and_the_release_goes_on_once_it_has_room() {
    use k8s_openapi::api::core::v1::ResourceQuota;
    let world = world("healthy").await;
    ready_workload(&world).await;
    let quotas: Api<ResourceQuota> = Api::default_namespaced(world.client.clone());
    let quota: ResourceQuota = serde_json::from_value(
        json!({"metadata": {"name": "pods"}, "spec": {"hard": {"pods": "10"}}}),
    )
    .unwrap();
    quotas.create(&PostParams::default(), &quota).await.unwrap();
    for _ in 0..600 {
        let q = quotas.get("pods").await.unwrap();
        if q.status
            .and_then(|s| s.used)
            .is_some_and(|u| u.contains_key("pods"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rollouts = start(
        &world,
        &rollout_yaml("Partition", "[{replicas: 1}, {replicas: 50%}]", "web"),
    )
    .await;
    wait_for(&rollouts, "the quota's refusal said", |s| {
        s.message.contains("new pods cannot be made")
    })
    .await;
    let s = status(&rollouts).await;
    assert_eq!(s.phase, Phase::Progressing, "{s:#?}");
    assert_eq!(s.current_step, 0, "{s:#?}");
    assert!(
        s.message
            .contains("exceeded quota: pods, requested: pods=1, used: pods=10, limited: pods=10"),
        "{}",
        s.message
    );
    quotas
        .patch(
            "pods",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"hard": {"pods": "20"}}})),
        )
        .await
        .unwrap();
    let done = wait_phase(&rollouts, finished).await.status.unwrap();
    assert_eq!(done.phase, Phase::Succeeded, "{done:#?}");
}

/// An ended release's STABLE and NEW follow what its workload runs, but
/// never another Rollout's release in flight: scaled to one replica, that
/// release's step is its whole workload, an unapproved version the ended
/// one never released.
#[tokio::test(start_paused = true)]
async fn an_ended_release_never_reports_another_releases_version() {
    let world = world("healthy").await;
    ready_workload(&world).await;
    let rollouts = start(
        &world,
        &rollout_yaml("Partition", "[{replicas: 100%}]", "web"),
    )
    .await;
    let done = wait_phase(&rollouts, finished).await.status.unwrap();
    assert_eq!(done.phase, Phase::Succeeded, "{done:#?}");
    let released = done.stable_revision.clone();
    assert_eq!(done.canary_revision, released);
    let of_next = start_next(&rollouts, "[{replicas: 30%, pause: {}}, {replicas: 100%}]").await;
    for _ in 0..600 {
        if paused_at_step(0)(&of_next().await) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        paused_at_step(0)(&of_next().await),
        "{:#?}",
        of_next().await
    );
    let deployments: Api<Deployment> = Api::default_namespaced(world.client.clone());
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .unwrap();
    for _ in 0..600 {
        if ready_with(&world, "registry.example/web:3.0").await == 1
            && ready_with(&world, "registry.example/web:2.0").await == 0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ready_with(&world, "registry.example/web:3.0").await, 1);
    // Looked at again (a control, say), the ended release keeps its own.
    merge(
        &rollouts,
        json!({"metadata": {"labels": {"looked": "again"}}}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ended = status(&rollouts).await;
    assert_eq!(ended.phase, Phase::Succeeded);
    assert_eq!(
        (
            ended.stable_revision.as_str(),
            ended.canary_revision.as_str()
        ),
        (released.as_str(), released.as_str()),
        "{ended:#?}"
    );
}

/// A Rollout written with kubectl (no StartRollout to refuse it) whose pod
/// template the workload could never take: each write the release needs
/// is refused as invalid, and the Rollout says so (message, Progressing
/// False with the reason Invalid) rather than retrying with nothing said.
#[tokio::test(start_paused = true)]
async fn a_template_the_workload_refuses_is_said_on_the_rollout() {
    let world = world("healthy").await;
    ready_workload(&world).await;
    let rollout: Rollout = serde_yaml::from_str(
        r#"
apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata: {name: web}
spec:
  workload: {kind: Deployment, name: web}
  template:
    metadata: {labels: {app: other}}
    spec: {containers: [{name: web, image: "registry.example/web:2.0"}]}
  strategy:
    canary:
      steps: [{replicas: 1, pause: {}}]
"#,
    )
    .unwrap();
    let rollouts = start(&world, &rollout).await;
    wait_for(&rollouts, "the refusal said", |s| {
        s.message
            .contains("the API server refused a write of this release")
    })
    .await;
    let s = status(&rollouts).await;
    assert_eq!(condition(&s, "Progressing"), ("False", "Invalid"), "{s:#?}");
    assert!(s.message.contains("selector"), "{}", s.message);
}

/// A delete that reaches the cluster after the controller read the Rollout
/// but before the start touched the workload: the start is claimed on the
/// Rollout first, over the version read, so the claim fails and the
/// Deployment is left alone (a start made on the stale read would hold it
/// for a Rollout that no longer exists).
#[tokio::test(start_paused = true)]
async fn a_start_read_before_its_rollout_was_deleted_touches_nothing() {
    let world = world("healthy").await;
    ready_workload(&world).await;
    // The controller sees Rollouts late, as one watch cache may lag.
    world
        .sim
        .api
        .faults()
        .add(sluice_sim::api::faults::Rule::WatchLag {
            id: "rollouts-late".into(),
            resource: "rollouts".into(),
            lag: Duration::from_millis(300),
        });
    let rollouts = start(
        &world,
        &rollout_yaml("Partition", "[{replicas: 1, pause: {}}]", "web"),
    )
    .await;
    // Deleted while the controller's view of it is on its way: the
    // controller then reads a Rollout that is already gone.
    tokio::time::sleep(Duration::from_millis(100)).await;
    rollouts.delete("web", &Default::default()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let d: Deployment = Api::default_namespaced(world.client.clone())
        .get("web")
        .await
        .unwrap();
    let annotations = d.metadata.annotations.clone().unwrap_or_default();
    let marks: Vec<&String> = annotations
        .keys()
        .filter(|k| k.starts_with("sluice.dev/"))
        .collect();
    assert!(marks.is_empty(), "the Deployment was held: {marks:?}");
    assert_ne!(d.spec.unwrap().paused, Some(true));
    assert_eq!(
        sets_running(&world, "registry.example/web:2.0").await.len(),
        0
    );
}
