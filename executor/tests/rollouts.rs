//! Rollouts end to end on the simulated cluster, in one process: the
//! simulator (API server, controllers, traffic, metrics), the planner and
//! the gate on loopback, and the rollout controller.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests stop at the first failed step

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::{
    Api,
    api::{ListParams, PostParams},
};
use sluice_executor::crd::{Phase, Rollout};

mod common;

use common::{finished, ready_workload, release, rollout, wait_phase, world, world_with};

#[tokio::test(start_paused = true)]
async fn a_healthy_release_reaches_every_pod_and_leaves_no_trace() {
    let world = world("healthy").await;
    ready_workload(&world).await;
    let rollouts = release(&world, "registry.example/web:2.0").await;
    let done = wait_phase(&rollouts, finished).await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, Phase::Succeeded, "{status:#?}");
    assert_eq!(
        status.steps.len(),
        3,
        "two steps and the final batch: {:#?}",
        status.steps
    );
    assert!(
        status.steps[0].verdict.is_some() && !status.steps[0].evidence.is_empty(),
        "{:#?}",
        status.steps[0]
    );

    let d: Deployment = Api::default_namespaced(world.client.clone())
        .get("web")
        .await
        .unwrap();
    let spec = d.spec.unwrap();
    assert_eq!(
        spec.template.spec.unwrap().containers[0].image.as_deref(),
        Some("registry.example/web:2.0")
    );
    assert_ne!(spec.paused, Some(true), "the Deployment is handed back");
    assert!(
        d.metadata
            .annotations
            .unwrap_or_default()
            .keys()
            .all(|k| !k.starts_with("sluice.dev/")),
        "no trace left"
    );
    let sets: Vec<ReplicaSet> = Api::default_namespaced(world.client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let running: Vec<(String, i32)> = sets
        .iter()
        .map(|rs| {
            (
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
                    .clone()
                    .unwrap(),
                rs.spec.as_ref().unwrap().replicas.unwrap(),
            )
        })
        .collect();
    assert!(
        running.contains(&("registry.example/web:2.0".into(), 10))
            && running.contains(&("registry.example/web:1.0".into(), 0)),
        "{running:?}"
    );
    // Events are published beside the reconciles, so the last may follow
    // the status that caused it by a moment.
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::default_namespaced(world.client.clone());
    let wanted = ["Progressing", "StepAnalyzing", "Succeeded"];
    let mut reasons: Vec<String> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    for _ in 0..100 {
        let mine: Vec<_> = events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("web"))
            .collect();
        notes = mine.iter().filter_map(|e| e.note.clone()).collect();
        reasons = mine.into_iter().filter_map(|e| e.reason).collect();
        if wanted.iter().all(|w| reasons.iter().any(|r| r == w)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for reason in wanted {
        assert!(
            reasons.iter().any(|r| r == reason),
            "no {reason} event in {reasons:?}"
        );
    }
    // Each step tells its own story: Events of one reason are not folded
    // into the first one's note (two steps here are analysed).
    let analysing: Vec<&String> = notes.iter().filter(|n| n.contains("analysing")).collect();
    assert_eq!(
        analysing.len(),
        2,
        "one StepAnalyzing Event per analysed step, each with its own note: {notes:?}"
    );
}

/// Every batch's scale of the new ReplicaSet, seen from a watch of its own:
/// a release moves forward only. A reconcile woken by its own write to a
/// ReplicaSet before the watch shows its status write must act on the step
/// it recorded, not on the one before (which scaled the new set back down).
#[tokio::test(start_paused = true)]
async fn the_new_replicaset_never_scales_back_during_a_release() {
    let world = world("healthy").await;
    ready_workload(&world).await;
    // The Rollouts' watch lags behind the ReplicaSets' (as one watch cache
    // may behind another): each scale's event reaches the controller before
    // the status write that recorded the step.
    world
        .sim
        .api
        .faults()
        .add(sluice_sim::api::faults::Rule::WatchLag {
            id: "rollouts-late".into(),
            resource: "rollouts".into(),
            lag: Duration::from_millis(300),
        });
    let (recorder, seen) = new_set_replicas(&world.client);
    let mut r: Rollout = rollout("registry.example/web:2.0");
    r.spec.analyses.clear();
    r.spec.strategy = serde_json::from_value(serde_json::json!({"canary": {"steps": [
        {"replicas": 1}, {"replicas": 2}, {"replicas": 3}, {"replicas": "50%"}, {"replicas": 7}
    ]}}))
    .unwrap();
    let rollouts: Api<Rollout> = Api::default_namespaced(world.client.clone());
    rollouts.create(&PostParams::default(), &r).await.unwrap();
    let done = wait_phase(&rollouts, finished).await;
    assert_eq!(done.status.as_ref().unwrap().phase, Phase::Succeeded);
    tokio::time::sleep(Duration::from_secs(1)).await;
    recorder.abort();
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "the new ReplicaSet's replicas went back: {seen:?}"
    );
    assert_eq!(seen.last(), Some(&10), "{seen:?}");
}

/// Every `spec.replicas` the ReplicaSet running web:2.0 is given, in
/// order, from a watch of its own.
fn new_set_replicas(
    client: &kube::Client,
) -> (
    tokio::task::JoinHandle<()>,
    std::sync::Arc<std::sync::Mutex<Vec<i32>>>,
) {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let sets: Api<ReplicaSet> = Api::default_namespaced(client.clone());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<i32>::new()));
    let record = std::sync::Arc::clone(&seen);
    let mut events = watcher(sets, watcher::Config::default())
        .applied_objects()
        .boxed();
    let task = tokio::spawn(async move {
        while let Some(Ok(rs)) = events.next().await {
            let spec = rs.spec.unwrap_or_default();
            let image = spec
                .template
                .and_then(|t| t.spec)
                .and_then(|s| s.containers.into_iter().next())
                .and_then(|c| c.image);
            if image.as_deref() == Some("registry.example/web:2.0") {
                let replicas = spec.replicas.unwrap_or(1);
                let mut seen = record.lock().unwrap();
                if seen.last() != Some(&replicas) {
                    seen.push(replicas);
                }
            }
        }
    });
    (task, seen)
}

/// A release records where it is, not each pod's every move: the new
/// ReplicaSet is made with the first batch's pods (no second write to ask
/// for them), and the start already says what the first batch's look
/// would, so the first batch costs one status write. (The simulator's
/// ReplicaSet status follows a scale at once; the real control plane's
/// test checks the same where kube-controller-manager's lags.)
#[tokio::test(start_paused = true)]
async fn a_batch_is_recorded_once_and_its_pods_asked_for_as_the_release_begins() {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let world = world("healthy").await;
    ready_workload(&world).await;
    let rollouts: Api<Rollout> = Api::default_namespaced(world.client.clone());
    let (sets, asked) = new_set_replicas(&world.client);
    let written = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorders = {
        let written = std::sync::Arc::clone(&written);
        let mut events = watcher(rollouts.clone(), watcher::Config::default())
            .applied_objects()
            .boxed();
        let statuses = tokio::spawn(async move {
            while let Some(Ok(r)) = events.next().await {
                if let Some(s) = r.status {
                    let mut written = written.lock().unwrap();
                    if written.last() != Some(&s) {
                        written.push(s);
                    }
                }
            }
        });
        [sets, statuses]
    };
    let mut r: Rollout = rollout("registry.example/web:2.0");
    r.spec.analyses.clear();
    r.spec.strategy = serde_json::from_value(serde_json::json!({"canary": {"steps": [
        {"replicas": 1}, {"replicas": "50%"}
    ]}}))
    .unwrap();
    rollouts.create(&PostParams::default(), &r).await.unwrap();
    let done = wait_phase(&rollouts, finished).await;
    assert_eq!(done.status.as_ref().unwrap().phase, Phase::Succeeded);
    tokio::time::sleep(Duration::from_secs(1)).await;
    for recorder in recorders {
        recorder.abort();
    }
    let asked = asked.lock().unwrap().clone();
    assert_eq!(
        asked.first(),
        Some(&1),
        "made with the first batch: {asked:?}"
    );
    let written = written.lock().unwrap().clone();
    let first: Vec<_> = written
        .iter()
        .filter(|s| s.phase == Phase::Progressing && s.current_step == 0)
        .map(|s| (s.ready_canary_replicas, s.message.as_str()))
        .collect();
    assert_eq!(
        first,
        [(0, "step 1: 0 of 1 new pods ready")],
        "every status written: {:#?}",
        written
            .iter()
            .map(|s| (s.phase, s.current_step, s.step_state, &s.message))
            .collect::<Vec<_>>()
    );
}

/// A release of a template that adds a field the stable one lacks (a
/// nodeSelector) and is then aborted gives the Deployment back without
/// it: the template is written so that what the target lacks goes (a
/// merge patch of the target alone kept it, and kube-controller-manager
/// then rolled the "stable" version out with the new nodeSelector).
#[tokio::test(start_paused = true)]
async fn a_rolled_back_template_loses_the_fields_the_release_added() {
    use kube::api::{Patch, PatchParams};
    let world = world("healthy").await;
    ready_workload(&world).await;
    let deployments: Api<Deployment> = Api::default_namespaced(world.client.clone());
    let mut template =
        serde_json::to_value(deployments.get("web").await.unwrap().spec.unwrap().template).unwrap();
    template["spec"]["nodeSelector"] = serde_json::json!({"disk": "none-has-it"});
    template["spec"]["containers"][0]["image"] = serde_json::json!("registry.example/web:2.0");
    let mut r: Rollout = rollout("registry.example/web:2.0");
    r.spec.analyses.clear();
    r.spec.images.clear();
    r.spec.template = Some(template);
    r.spec.strategy = serde_json::from_value(serde_json::json!({"canary": {"steps": [
        {"replicas": 1, "pause": {}}, {"replicas": "50%"}
    ]}}))
    .unwrap();
    let rollouts: Api<Rollout> = Api::default_namespaced(world.client.clone());
    rollouts.create(&PostParams::default(), &r).await.unwrap();
    wait_phase(&rollouts, |p| p == Phase::Progressing || p == Phase::Paused).await;
    let held = deployments.get("web").await.unwrap().spec.unwrap().template;
    assert!(
        held.spec.unwrap().node_selector.is_some(),
        "held on the new template"
    );
    rollouts
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"annotations": {
                sluice_executor::keys::ABORT: "by the test"
            }}})),
        )
        .await
        .unwrap();
    let done = wait_phase(&rollouts, finished).await;
    assert_eq!(done.status.as_ref().unwrap().phase, Phase::RolledBack);
    let spec = deployments.get("web").await.unwrap().spec.unwrap();
    let pod = spec.template.spec.unwrap();
    assert_eq!(
        pod.node_selector, None,
        "the release's nodeSelector is gone"
    );
    assert_eq!(
        pod.containers[0].image.as_deref(),
        Some("registry.example/web:1.0")
    );
}

#[tokio::test(start_paused = true)]
async fn a_bad_canary_rolls_back_on_its_first_analysis() {
    let world = world("bad-canary").await;
    ready_workload(&world).await;
    let rollouts = release(&world, "registry.example/web:2.0").await;
    let done = wait_phase(&rollouts, finished).await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, Phase::RolledBack, "{status:#?}");
    assert!(
        status.message.contains("analysis failed"),
        "{}",
        status.message
    );
    let evidence = &status.steps[0].evidence;
    assert!(
        evidence
            .iter()
            .any(|e| e.outcome == "FAILED" && e.value.is_some_and(|v| v < 0.95)),
        "{evidence:#?}"
    );

    let d: Deployment = Api::default_namespaced(world.client.clone())
        .get("web")
        .await
        .unwrap();
    assert_eq!(
        d.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .image
            .as_deref(),
        Some("registry.example/web:1.0"),
        "the stable template is back"
    );
    assert_ne!(d.spec.unwrap().paused, Some(true));
    assert!(
        d.metadata
            .annotations
            .unwrap_or_default()
            .keys()
            .all(|k| !k.starts_with("sluice.dev/"))
    );
}

#[tokio::test(start_paused = true)]
async fn a_restarted_controller_resumes_at_the_step_it_left() {
    let world = world("healthy").await;
    ready_workload(&world).await;
    let rollouts: Api<Rollout> = Api::default_namespaced(world.client.clone());
    let mut spec = rollout("registry.example/web:2.0");
    spec.spec.strategy.canary.steps[0].pause = Some(sluice_model::spec::Pause::default());
    rollouts
        .create(&PostParams::default(), &spec)
        .await
        .unwrap();
    let paused = wait_phase(&rollouts, |p| p == Phase::Paused).await;
    let status = paused.status.unwrap();
    assert_eq!(
        (status.current_step, status.step_state),
        (0, sluice_executor::crd::StepState::Paused)
    );
    let steps_before = status.steps.clone();

    // The executor dies in the pause and a new one takes over with nothing
    // but the cluster; promotion then finishes the release, no step twice.
    world.restart_controller().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rollouts.get("web").await.unwrap().status.unwrap();
    assert_eq!(
        (after.phase, after.current_step),
        (Phase::Paused, 0),
        "the new controller keeps the pause"
    );
    let patch = serde_json::json!({"metadata": {"annotations": {"sluice.dev/promote": "step:0"}}});
    rollouts
        .patch(
            "web",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(patch),
        )
        .await
        .unwrap();
    let done = wait_phase(&rollouts, finished).await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, Phase::Succeeded, "{status:#?}");
    let mut indexes: Vec<u32> = status.steps.iter().map(|s| s.index).collect();
    indexes.dedup();
    assert_eq!(indexes, [0, 1, 2], "every step once, in order");
    assert_eq!(
        status.steps[0].started, steps_before[0].started,
        "the first step was not started again"
    );
}

#[tokio::test(start_paused = true)]
async fn a_statefulset_is_released_through_its_partition() {
    use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Pod};
    let world = world("healthy").await;
    let sets: Api<StatefulSet> = Api::default_namespaced(world.client.clone());
    let db: StatefulSet = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "db"},
        "spec": {"replicas": 4, "serviceName": "db", "podManagementPolicy": "Parallel", "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db", "image": "registry.example/db:1.0"}]}}}
    }))
    .unwrap();
    sets.create(&PostParams::default(), &db).await.unwrap();
    for _ in 0..300 {
        if sets
            .get("db")
            .await
            .unwrap()
            .status
            .and_then(|s| s.ready_replicas)
            == Some(4)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rollout: Rollout = serde_yaml::from_str(
        "apiVersion: sluice.dev/v1alpha1\nkind: Rollout\nmetadata: {name: db}\nspec:\n  workload: {kind: StatefulSet, name: db}\n  images: [{container: db, image: registry.example/db:2.0}]\n  strategy: {canary: {steps: [{replicas: 1, pause: {duration: 1s}}, {replicas: 50%, pause: {duration: 1s}}]}}\n",
    )
    .unwrap();
    let rollouts: Api<Rollout> = Api::default_namespaced(world.client.clone());
    rollouts
        .create(&PostParams::default(), &rollout)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::default_namespaced(world.client.clone());
    let mut saw_partial = false;
    let mut phase = Phase::Pending;
    for _ in 0..1200 {
        let r = rollouts.get("db").await.unwrap();
        phase = r.status.as_ref().map(|s| s.phase).unwrap_or_default();
        if matches!(phase, Phase::Succeeded | Phase::RolledBack | Phase::Failed) {
            break;
        }
        // Mid-release, only the highest ordinals run the new version.
        let images: Vec<(String, String)> = pods
            .list(&ListParams::default().labels("app=db"))
            .await
            .unwrap()
            .items
            .iter()
            .map(|p| {
                (
                    p.metadata.name.clone().unwrap(),
                    p.spec.as_ref().unwrap().containers[0]
                        .image
                        .clone()
                        .unwrap(),
                )
            })
            .collect();
        let new: Vec<&String> = images
            .iter()
            .filter(|(_, i)| i.ends_with(":2.0"))
            .map(|(n, _)| n)
            .collect();
        if new.len() == 1 {
            assert_eq!(new[0], "db-3", "the highest ordinal goes first");
            saw_partial = true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        phase,
        Phase::Succeeded,
        "{:#?}",
        rollouts.get("db").await.unwrap().status
    );
    assert!(saw_partial, "the first batch held the other ordinals back");
    let db = sets.get("db").await.unwrap();
    let spec = db.spec.unwrap();
    assert_eq!(
        spec.update_strategy
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
    for _ in 0..100 {
        let all_new = pods
            .list(&ListParams::default().labels("app=db"))
            .await
            .unwrap()
            .items
            .iter()
            .all(|p| {
                p.spec.as_ref().unwrap().containers[0].image.as_deref()
                    == Some("registry.example/db:2.0")
            });
        if all_new {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not every pod runs the new version");
}

#[tokio::test(start_paused = true)]
async fn a_release_rides_out_throttling_and_unavailable_answers_and_counts_its_decisions() {
    use sluice_sim::api::faults::Rule;
    let world = world("healthy").await;
    ready_workload(&world).await;
    // From here on a quarter of all writes are refused as overloaded and a
    // fifth of all reads throttled; the client retries both.
    let faults = world.sim.api.faults();
    faults.add(Rule::Errors {
        id: "writes".into(),
        verb: "patch".into(),
        resource: String::new(),
        rate: 0.25,
        code: 503,
    });
    faults.add(Rule::Errors {
        id: "reads".into(),
        verb: "get".into(),
        resource: String::new(),
        rate: 0.2,
        code: 429,
    });
    let rollouts = release(&world, "registry.example/web:2.0").await;
    let done = wait_phase(&rollouts, finished).await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, Phase::Succeeded, "{status:#?}");
    let once: Vec<u32> = status.steps.iter().map(|s| s.index).collect();
    assert_eq!(once, [0, 1, 2], "every step once: {:#?}", status.steps);

    let metrics = &world.metrics();
    assert_eq!(metrics.decisions("start"), 1);
    assert_eq!(metrics.decisions("advance"), 2, "three steps, two advances");
    assert_eq!(metrics.decisions("succeed"), 1);
    assert_eq!(metrics.decisions("rollback"), 0);
    assert!(metrics.kube_requests() > 0);
    // The client absorbed the refusals: no reconcile saw one.
    assert_eq!(metrics.reconciles(false), 0);
    assert!(metrics.reconciles(true) > 0);
}

/// A release's start claims it on the Rollout, then writes its status over
/// the version that claim returned: no conflict with its own claim, and no
/// read of the Rollout to get past one.
#[tokio::test(start_paused = true)]
async fn a_start_writes_its_status_over_its_own_claim() {
    let world = world("healthy").await;
    ready_workload(&world).await;
    let rollouts = release(&world, "registry.example/web:2.0").await;
    let done = wait_phase(&rollouts, finished).await;
    assert_eq!(done.status.unwrap().phase, Phase::Succeeded);
    let metrics = &world.metrics();
    assert_eq!(
        metrics.kube_requests_of("patch", "rollouts", "200"),
        1,
        "the claim"
    );
    assert_eq!(
        metrics.kube_requests_of("patch", "rollouts/status", "409"),
        0
    );
    assert_eq!(metrics.kube_requests_of("get", "rollouts", "200"), 0);
    assert!(metrics.kube_requests_of("patch", "rollouts/status", "200") > 0);
}

/// A cluster's other workloads cost the controller only the version it
/// last saw of each; the Deployment a Rollout names, and its ReplicaSets,
/// are kept whole. A workload a Rollout comes to name after its watch kept
/// only its version is read from the API server and released the same way.
#[tokio::test(start_paused = true)]
async fn the_controller_keeps_whole_only_what_its_rollouts_name() {
    let mut scenario = sluice_sim::scenario::Scenario::load("healthy").unwrap();
    for i in 0..3 {
        scenario.manifests.push(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": format!("other-{i}"), "namespace": "default"},
            "spec": {
                "replicas": 2, "selector": {"matchLabels": {"app": format!("other-{i}")}},
                "template": {"metadata": {"labels": {"app": format!("other-{i}")}},
                             "spec": {"containers": [{"name": "web", "image": "registry.example/web:1.0"}]}},
            },
        }));
    }
    let world = world_with(scenario).await;
    ready_workload(&world).await;
    let counts = |world: &common::World| {
        let mut by = std::collections::BTreeMap::new();
        for (resource, kept, n) in world.metrics().cached_objects() {
            by.insert(format!("{resource}/{kept}"), n);
        }
        by
    };
    let (deployments, sets) = ("deployments/whole", "replicasets/whole");
    let (deployment_versions, set_versions) = ("deployments/version", "replicasets/version");
    let before = counts(&world);
    assert_eq!(before[deployments], 0, "no Rollout yet: {before:?}");
    assert_eq!(before[deployment_versions], 4, "{before:?}");
    assert_eq!(before[sets], 0, "{before:?}");
    assert_eq!(before[set_versions], 4, "{before:?}");

    let rollouts = release(&world, "registry.example/web:2.0").await;
    let done = wait_phase(&rollouts, finished).await;
    assert_eq!(done.status.unwrap().phase, Phase::Succeeded);
    let after = counts(&world);
    assert_eq!(after[deployments], 1, "{after:?}");
    assert_eq!(after[deployment_versions], 3, "{after:?}");
    assert_eq!(after[sets], 2, "web's stable and new sets: {after:?}");
    assert_eq!(after[set_versions], 3, "{after:?}");

    // A Rollout for a workload the watch holds only the version of.
    let mut other = rollout("registry.example/web:2.0");
    other.metadata.name = Some("other".into());
    other.spec.workload.name = "other-0".into();
    other.spec.analyses.clear();
    other.spec.strategy =
        serde_json::from_value(serde_json::json!({"canary": {"steps": [{"replicas": 1}]}}))
            .unwrap();
    rollouts
        .create(&PostParams::default(), &other)
        .await
        .unwrap();
    let mut phase = None;
    for _ in 0..600 {
        phase = rollouts.get("other").await.unwrap().status.map(|s| s.phase);
        if phase.is_some_and(finished) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(phase, Some(Phase::Succeeded));
    let d: Deployment = Api::default_namespaced(world.client.clone())
        .get("other-0")
        .await
        .unwrap();
    assert_eq!(
        d.spec.unwrap().template.spec.unwrap().containers[0]
            .image
            .as_deref(),
        Some("registry.example/web:2.0")
    );
    let last = counts(&world);
    assert_eq!(last[deployments], 2, "{last:?}");
    assert_eq!(last[deployment_versions], 2, "{last:?}");
}

/// A release can find its new ReplicaSet holding every replica at a step
/// that wants fewer (its status write lost a race after the step's moves
/// were made). The Deployment controller, as kube-controller-manager does
/// for a paused Deployment, scales every other set to 0 while the new one
/// is saturated (all replicas, available, and `desired-replicas` saying
/// so), so moving back by scaling the stable set up first was undone at
/// once, again and again, for as long as the release lasted.
#[tokio::test(start_paused = true)]
async fn a_new_set_found_saturated_at_an_earlier_step_moves_back_without_a_fight() {
    use kube::api::{Patch, PatchParams};
    use serde_json::json;
    let world = world("healthy").await;
    ready_workload(&world).await;
    let rollouts = release_none_missing(
        &world,
        json!([{"replicas": 2, "pause": {}}, {"replicas": "100%"}]),
    )
    .await;
    wait_phase(&rollouts, |p| p == Phase::Paused).await;
    let sets: Api<ReplicaSet> = Api::default_namespaced(world.client.clone());
    let image = |rs: &ReplicaSet| {
        rs.spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .and_then(|t| t.spec.as_ref())
            .and_then(|s| s.containers.first())
            .and_then(|c| c.image.clone())
    };
    let (new, stable) = {
        let all = sets.list(&ListParams::default()).await.unwrap().items;
        let new = all
            .iter()
            .find(|rs| image(rs).as_deref() == Some("registry.example/web:2.0"))
            .unwrap()
            .metadata
            .name
            .clone()
            .unwrap();
        let stable = all
            .iter()
            .find(|rs| image(rs).as_deref() != Some("registry.example/web:2.0"))
            .unwrap()
            .metadata
            .name
            .clone()
            .unwrap();
        (new, stable)
    };
    // What the lost race leaves: every replica on the new set, ready,
    // none on the stable one. The executor's patches are refused while the
    // new pods come up, so it cannot cut them first.
    let refused = "replicaset-patches-refused".to_owned();
    world
        .sim
        .api
        .faults()
        .add(sluice_sim::api::faults::Rule::Errors {
            id: refused.clone(),
            verb: "patch".into(),
            resource: "replicasets".into(),
            rate: 1.0,
            code: 409,
        });
    for (name, replicas) in [(&new, 10), (&stable, 0)] {
        let mut rs = sets.get(name).await.unwrap();
        rs.spec.as_mut().unwrap().replicas = Some(replicas);
        rs.metadata.annotations.get_or_insert_default().insert(
            "deployment.kubernetes.io/desired-replicas".into(),
            "10".into(),
        );
        sets.replace(name, &PostParams::default(), &rs)
            .await
            .unwrap();
    }
    for _ in 0..600 {
        let n = sets.get(&new).await.unwrap();
        if n.status.as_ref().and_then(|s| s.available_replicas) == Some(10) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let params = PatchParams::default();
    world.sim.api.faults().clear(&[refused]);
    // The refusals' 409s said "changed since read"; the next change wakes
    // the controller, as a real one would have.
    sets.patch(
        &new,
        &params,
        &Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}})),
    )
    .await
    .unwrap();
    let generation = |rs: &ReplicaSet| rs.metadata.generation.unwrap_or(0);
    let before = generation(&sets.get(&stable).await.unwrap());
    // The step's batch comes back: 2 new pods, 8 stable.
    let mut back = false;
    for _ in 0..600 {
        let (n, s) = (
            sets.get(&new).await.unwrap(),
            sets.get(&stable).await.unwrap(),
        );
        let spec = |rs: &ReplicaSet| rs.spec.as_ref().and_then(|s| s.replicas);
        let ready = |rs: &ReplicaSet| rs.status.as_ref().and_then(|s| s.ready_replicas);
        if (spec(&n), spec(&s), ready(&s)) == (Some(2), Some(8), Some(8)) {
            back = true;
            break;
        }
        // A fight writes the stable set without end: stop at the first
        // sign of one rather than run it for a minute.
        if generation(&s) - before > 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let writes = generation(&sets.get(&stable).await.unwrap()) - before;
    assert!(
        back,
        "the batch never came back; the stable set was written {writes} times"
    );
    assert!(
        writes <= 10,
        "the stable set was written {writes} times on the way back"
    );
    // And the release goes on from there to its end.
    annotate(&rollouts, sluice_executor::keys::PROMOTE, "full:0").await;
    let done = wait_phase(&rollouts, finished).await;
    assert_eq!(done.status.unwrap().phase, Phase::Succeeded);
    // Handed back saturated, as the Deployment controller reads it.
    let n = sets.get(&new).await.unwrap();
    assert_eq!(
        n.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("deployment.kubernetes.io/desired-replicas"))
            .map(String::as_str),
        Some("10")
    );
}

/// An abort at a step where the new set holds every replica: the stable
/// set comes back beside a saturated new set, which the Deployment
/// controller (as kube-controller-manager's `scale` of a paused
/// Deployment) would scale straight back to 0 while the new set's mark
/// says it is saturated.
#[tokio::test(start_paused = true)]
async fn an_abort_at_a_full_step_brings_the_stable_pods_back_without_a_fight() {
    use serde_json::json;
    let world = world("healthy").await;
    ready_workload(&world).await;
    let rollouts = release_none_missing(
        &world,
        json!([{"replicas": "100%", "pause": {}}, {"replicas": "100%"}]),
    )
    .await;
    let paused = wait_phase(&rollouts, |p| p == Phase::Paused).await;
    assert_eq!(paused.status.unwrap().ready_canary_replicas, 10);
    let sets: Api<ReplicaSet> = Api::default_namespaced(world.client.clone());
    let stable = sets
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|rs| rs.spec.as_ref().and_then(|s| s.replicas) == Some(0))
        .unwrap()
        .metadata
        .name
        .unwrap();
    let generation = |rs: &ReplicaSet| rs.metadata.generation.unwrap_or(0);
    let before = generation(&sets.get(&stable).await.unwrap());
    annotate(&rollouts, sluice_executor::keys::ABORT, "by hand").await;
    let mut ended = None;
    for _ in 0..600 {
        let r = rollouts.get("web").await.unwrap();
        if r.status.as_ref().is_some_and(|s| finished(s.phase)) {
            ended = r.status.map(|s| s.phase);
            break;
        }
        if generation(&sets.get(&stable).await.unwrap()) - before > 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let writes = generation(&sets.get(&stable).await.unwrap()) - before;
    assert_eq!(
        ended,
        Some(Phase::RolledBack),
        "the stable set was written {writes} times"
    );
    assert!(writes <= 10, "the stable set was written {writes} times");
}

/// Sets one annotation on the Rollout `web`, as the API's controls do.
async fn annotate(rollouts: &Api<Rollout>, key: &str, value: &str) {
    use kube::api::{Patch, PatchParams};
    rollouts
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"annotations": {key: value}}})),
        )
        .await
        .unwrap();
}

/// Creates the Rollout `web` with `steps` and no analysis, after setting the
/// Deployment's strategy so that no pod may be missing (maxUnavailable 0):
/// a ready new pod goes only once a stable one is back.
async fn release_none_missing(world: &common::World, steps: serde_json::Value) -> Api<Rollout> {
    use kube::api::{Patch, PatchParams};
    let deployments: Api<Deployment> = Api::default_namespaced(world.client.clone());
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({"spec": {"strategy": {"type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}}}),
            ),
        )
        .await
        .unwrap();
    let mut r: Rollout = rollout("registry.example/web:2.0");
    r.spec.analyses.clear();
    r.spec.strategy =
        serde_json::from_value(serde_json::json!({"canary": {"steps": steps}})).unwrap();
    let rollouts: Api<Rollout> = Api::default_namespaced(world.client.clone());
    rollouts.create(&PostParams::default(), &r).await.unwrap();
    rollouts
}

/// A Deployment scaled down mid-release until its batch is every pod (one
/// replica at 50% is one new pod), then scaled up again. With the stable
/// set at 0 the new one is the paused Deployment's lone ReplicaSet with
/// pods, which the Deployment controller (as kube-controller-manager's
/// `scale`) sizes to the new `replicas` at once: the batch must come back
/// to half new, half stable, without more new pods serving than the batch
/// and without the two controllers taking turns on either set.
#[tokio::test(start_paused = true)]
async fn a_scale_up_after_a_scale_down_to_a_lone_new_set_keeps_the_batch() {
    use futures::StreamExt;
    use kube::api::{Patch, PatchParams};
    use kube::runtime::{WatchStreamExt, watcher};
    use serde_json::json;
    let world = world("healthy").await;
    ready_workload(&world).await;
    let rollouts = release_none_missing(
        &world,
        json!([{"replicas": "50%", "pause": {}}, {"replicas": "100%"}]),
    )
    .await;
    wait_phase(&rollouts, |p| p == Phase::Paused).await;
    let deployments: Api<Deployment> = Api::default_namespaced(world.client.clone());
    let sets: Api<ReplicaSet> = Api::default_namespaced(world.client.clone());
    let scale = |n: i32| {
        let deployments = deployments.clone();
        async move {
            deployments
                .patch(
                    "web",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"replicas": n}})),
                )
                .await
                .unwrap();
        }
    };
    let is_new = |rs: &ReplicaSet| {
        rs.spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .and_then(|t| t.spec.as_ref())
            .and_then(|s| s.containers.first())
            .and_then(|c| c.image.as_deref())
            == Some("registry.example/web:2.0")
    };
    let counts = |rs: &ReplicaSet| {
        (
            rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            rs.status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0),
        )
    };
    // (new spec, new ready, stable spec, stable ready) at each of the two
    // sets' events.
    let sets_now = || {
        let sets = sets.clone();
        async move {
            let all = sets.list(&ListParams::default()).await.unwrap().items;
            let new = all
                .iter()
                .find(|rs| is_new(rs))
                .map(counts)
                .unwrap_or((0, 0));
            let old = all
                .iter()
                .filter(|rs| !is_new(rs))
                .map(counts)
                .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
            (new.0, new.1, old.0, old.1)
        }
    };
    scale(1).await;
    let mut lone = false;
    for _ in 0..600 {
        if sets_now().await == (1, 1, 0, 0) {
            lone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        lone,
        "one replica at 50% never became one new pod: {:?}",
        sets_now().await
    );
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = std::sync::Arc::clone(&seen);
    let mut events = watcher(sets.clone(), watcher::Config::default())
        .applied_objects()
        .boxed();
    let recorder = tokio::spawn(async move {
        let mut now = std::collections::BTreeMap::new();
        while let Some(Ok(rs)) = events.next().await {
            now.insert(is_new(&rs), counts(&rs));
            let at = |new: bool| now.get(&new).copied().unwrap_or((0, 0));
            let (n, o) = (at(true), at(false));
            record.lock().unwrap().push((n.0, n.1, o.0, o.1));
        }
    });
    let generations = || {
        let sets = sets.clone();
        async move {
            let all = sets.list(&ListParams::default()).await.unwrap().items;
            let of = |new: bool| -> i64 {
                all.iter()
                    .filter(|rs| is_new(rs) == new)
                    .map(|rs| rs.metadata.generation.unwrap_or(0))
                    .sum()
            };
            (of(true), of(false))
        }
    };
    let before = generations().await;
    scale(10).await;
    let mut back = false;
    for _ in 0..600 {
        if sets_now().await == (5, 5, 5, 5) {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Settle, then look at what happened on the way.
    tokio::time::sleep(Duration::from_secs(3)).await;
    recorder.abort();
    let seen = seen.lock().unwrap().clone();
    assert!(back, "the batch never came back to 5 and 5: {seen:?}");
    assert_eq!(sets_now().await, (5, 5, 5, 5), "{seen:?}");
    let most_new_ready = seen.iter().map(|s| s.1).max().unwrap_or(0);
    assert!(
        most_new_ready <= 5,
        "{most_new_ready} new pods were ready at once at a batch of 5: {seen:?}"
    );
    let after = generations().await;
    let (new_writes, old_writes) = (after.0 - before.0, after.1 - before.1);
    assert!(
        new_writes <= 4 && old_writes <= 4,
        "the sets were written {new_writes} (new) and {old_writes} (stable) times: {seen:?}"
    );
    // The release goes on from there to its end.
    annotate(&rollouts, sluice_executor::keys::PROMOTE, "full:0").await;
    let done = wait_phase(&rollouts, finished).await;
    assert_eq!(done.status.unwrap().phase, Phase::Succeeded);
}
