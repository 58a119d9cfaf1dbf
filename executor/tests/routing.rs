//! Releases behind routers, on the simulated cluster: the canary Service,
//! the pinned stable Service, the NGINX canary Ingress, the HTTPRoute and
//! the VirtualService, while the release runs and after it ends; canary-style
//! and blue-green Deployments beside the user's.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests stop at the first failed step

mod common;

use std::collections::BTreeMap;

use common::{
    World, finished, http_routes, ready_workload, virtual_services, wait_phase,
    with_routers as scenario, world_with,
};
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Service, networking::v1::Ingress};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;
use sluice_executor::crd::{Phase, Rollout, StepState};

const ANALYSIS: &str = r#"
  analyses:
    - name: health
      metrics:
        - name: success-rate
          template: request-success-rate
          successCondition: {threshold: {min: 0.99}}
          failureCondition: {threshold: {max: 0.95}}
          initialDelay: 3s
          interval: 1s
          count: 3
          inconclusiveLimit: 1
"#;

async fn annotate(rollouts: &Api<Rollout>, key: &str, value: &str) {
    let patch = json!({"metadata": {"annotations": {key: value}}});
    rollouts
        .patch("web", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
}

async fn selector(world: &World, name: &str) -> Option<BTreeMap<String, String>> {
    let services: Api<Service> = Api::default_namespaced(world.client.clone());
    services
        .get_opt(name)
        .await
        .unwrap()
        .map(|s| s.spec.unwrap().selector.unwrap_or_default())
}

async fn image_of(world: &World, deployment: &str) -> String {
    let deployments: Api<Deployment> = Api::default_namespaced(world.client.clone());
    deployments
        .get(deployment)
        .await
        .unwrap()
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .containers[0]
        .image
        .clone()
        .unwrap()
}

/// Every trace of the release is gone and the user's objects are as they
/// were, but for the new image when it succeeded.
async fn assert_handed_back(world: &World, image: &str) {
    assert_eq!(image_of(world, "web").await, image);
    let deployments: Api<Deployment> = Api::default_namespaced(world.client.clone());
    let web = deployments.get("web").await.unwrap();
    assert!(
        web.annotations()
            .keys()
            .all(|k| !k.starts_with("sluice.dev/")),
        "{:?}",
        web.annotations()
    );
    assert!(deployments.get_opt("web-canary").await.unwrap().is_none());
    assert_eq!(
        selector(world, "web").await.unwrap(),
        BTreeMap::from([("app".to_owned(), "web".to_owned())])
    );
    let services: Api<Service> = Api::default_namespaced(world.client.clone());
    assert!(
        services.get("web").await.unwrap().annotations().is_empty(),
        "the stable Service carries nothing of ours"
    );
    assert!(
        selector(world, "web-canary").await.is_none(),
        "the canary Service is gone"
    );
    let ingresses: Api<Ingress> = Api::default_namespaced(world.client.clone());
    assert!(ingresses.get_opt("web-canary").await.unwrap().is_none());
    for api in [http_routes(world), virtual_services(world)] {
        let route = api.get("web").await.unwrap();
        assert!(route.annotations().is_empty(), "{:?}", route.annotations());
    }
}

async fn start(world: &World, yaml: &str) -> Api<Rollout> {
    start_with(world, yaml, ANALYSIS).await
}

async fn start_with(world: &World, yaml: &str, analysis: &str) -> Api<Rollout> {
    let rollouts: Api<Rollout> = Api::default_namespaced(world.client.clone());
    let rollout: Rollout = serde_yaml::from_str(&format!("{yaml}{analysis}")).unwrap();
    rollouts
        .create(&PostParams::default(), &rollout)
        .await
        .unwrap();
    rollouts
}

#[tokio::test(start_paused = true)]
async fn a_canary_deployment_behind_nginx_takes_matched_requests_then_the_weight() {
    let world = world_with(scenario("healthy", json!({"ingressHost": "web.example"}))).await;
    ready_workload(&world).await;
    let rollouts = start(
        &world,
        r#"
apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata: {name: web}
spec:
  workload: {kind: Deployment, name: web}
  images: [{container: web, image: registry.example/web:2.0}]
  traffic: {stableService: web, nginx: {ingress: web}}
  strategy:
    style: Canary
    canary:
      steps:
        - {replicas: 2, matches: [{headers: [{name: x-canary, value: "true"}]}], pause: {}}
        - {replicas: 50%, traffic: 40, analyses: [health]}
"#,
    )
    .await;
    let paused = wait_phase(&rollouts, |p| p == Phase::Paused || finished(p)).await;
    let status = paused.status.unwrap();
    assert_eq!(
        (status.current_step, status.step_state),
        (0, StepState::Paused),
        "{status:#?}"
    );

    // Two new pods beside the ten old ones, reached by the header only.
    let deployments: Api<Deployment> = Api::default_namespaced(world.client.clone());
    let canary = deployments.get("web-canary").await.unwrap();
    assert_eq!(canary.status.unwrap().ready_replicas, Some(2));
    assert_eq!(image_of(&world, "web").await, "registry.example/web:1.0");
    let ingress: Ingress = Api::default_namespaced(world.client.clone())
        .get("web-canary")
        .await
        .unwrap();
    let a = ingress.annotations();
    assert_eq!(a["nginx.ingress.kubernetes.io/canary"], "true");
    assert_eq!(a["nginx.ingress.kubernetes.io/canary-weight"], "0");
    assert_eq!(
        a["nginx.ingress.kubernetes.io/canary-by-header"],
        "x-canary"
    );
    assert_eq!(
        a["nginx.ingress.kubernetes.io/canary-by-header-value"],
        "true"
    );
    let spec = serde_json::to_value(ingress.spec.clone()).unwrap();
    assert_eq!(
        spec["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"],
        "web-canary"
    );
    let stable = selector(&world, "web").await.unwrap();
    assert_eq!(
        stable.get("pod-template-hash"),
        Some(&status.stable_revision)
    );
    let canary_selector = selector(&world, "web-canary").await.unwrap();
    assert_eq!(
        canary_selector
            .get("sluice.dev/canary-of")
            .map(String::as_str),
        Some("web")
    );

    annotate(&rollouts, "sluice.dev/promote", "step:0").await;
    let done = wait_phase(&rollouts, finished).await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, Phase::Succeeded, "{status:#?}");
    // The analysis judged the canary Deployment's own pods, fed through
    // the canary Ingress at 40%.
    let evidence = &status.steps[1].evidence;
    assert!(
        evidence
            .iter()
            .any(|e| e.query.contains(r#"workload="web-canary""#) && e.value.is_some()),
        "{evidence:#?}"
    );
    assert_eq!(status.steps[1].traffic, 40);
    assert_handed_back(&world, "registry.example/web:2.0").await;
}

#[tokio::test(start_paused = true)]
async fn a_partition_release_behind_an_http_route_moves_its_weights_and_restores_it() {
    let world = world_with(scenario("healthy", json!({"httpRoute": "web"}))).await;
    ready_workload(&world).await;
    let original = http_routes(&world).get("web").await.unwrap().data["spec"].clone();
    let rollouts = start(
        &world,
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
        - {replicas: 30%, traffic: 10, matches: [{headers: [{name: x-canary, value: "true"}]}], analyses: [health], pause: {}}
"#,
    )
    .await;
    let paused = wait_phase(&rollouts, |p| p == Phase::Paused || finished(p)).await;
    let status = paused.status.unwrap();
    assert_eq!(status.step_state, StepState::Paused, "{status:#?}");
    assert_eq!(
        status.analysis.as_ref().and_then(|a| a.verdict),
        Some(sluice_executor::crd::Verdict::Pass)
    );
    let route = http_routes(&world).get("web").await.unwrap();
    let rules = route.data["spec"]["rules"].as_array().unwrap().clone();
    assert_eq!(rules.len(), 2, "{rules:#?}");
    assert_eq!(rules[0]["matches"][0]["headers"][0]["name"], "x-canary");
    // (group and kind are the API server's defaults from the CRD schema.)
    assert_eq!(
        rules[0]["backendRefs"],
        json!([{"group": "", "kind": "Service", "name": "web-canary", "port": 80, "weight": 1}])
    );
    assert_eq!(
        rules[1]["backendRefs"],
        json!([{"group": "", "kind": "Service", "name": "web", "port": 80, "weight": 90}, {"group": "", "kind": "Service", "name": "web-canary", "port": 80, "weight": 10}])
    );

    annotate(&rollouts, "sluice.dev/promote", "full:0").await;
    let done = wait_phase(&rollouts, finished).await;
    assert_eq!(
        done.status.as_ref().unwrap().phase,
        Phase::Succeeded,
        "{:#?}",
        done.status
    );
    assert_handed_back(&world, "registry.example/web:2.0").await;
    assert_eq!(
        http_routes(&world).get("web").await.unwrap().data["spec"],
        original
    );
}

#[tokio::test(start_paused = true)]
async fn a_bad_canary_behind_a_virtual_service_rolls_back_and_restores_the_route() {
    let world = world_with(scenario("bad-canary", json!({"virtualService": "web"}))).await;
    ready_workload(&world).await;
    let original = virtual_services(&world).get("web").await.unwrap().data["spec"].clone();
    let rollouts = start(
        &world,
        r#"
apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata: {name: web}
spec:
  workload: {kind: Deployment, name: web}
  images: [{container: web, image: registry.example/web:2.0}]
  traffic: {stableService: web, virtualService: {name: web}}
  strategy:
    style: Canary
    canary:
      steps:
        - {replicas: 2, traffic: 30, analyses: [health]}
"#,
    )
    .await;
    let done = wait_phase(&rollouts, finished).await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, Phase::RolledBack, "{status:#?}");
    assert!(
        status.message.contains("analysis failed"),
        "{}",
        status.message
    );
    assert_handed_back(&world, "registry.example/web:1.0").await;
    assert_eq!(
        virtual_services(&world).get("web").await.unwrap().data["spec"],
        original
    );
}

#[tokio::test(start_paused = true)]
async fn a_blue_green_release_switches_the_service_and_keeps_blue_for_its_window() {
    let world = world_with(scenario("healthy", json!({"service": "web"}))).await;
    ready_workload(&world).await;
    // Green takes no requests before the switch: its first rates need a
    // few scrapes after it.
    let analysis = ANALYSIS.replace("initialDelay: 3s", "initialDelay: 12s");
    let rollouts = start_with(
        &world,
        r#"
apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata: {name: web}
spec:
  workload: {kind: Deployment, name: web}
  images: [{container: web, image: registry.example/web:2.0}]
  traffic: {stableService: web}
  strategy:
    style: BlueGreen
    blueGreen: {rollbackWindow: 2s}
    canary:
      steps:
        - {traffic: 0, pause: {}}
        - {traffic: 100, analyses: [health]}
"#,
        &analysis,
    )
    .await;
    let paused = wait_phase(&rollouts, |p| p == Phase::Paused || finished(p)).await;
    let status = paused.status.unwrap();
    assert_eq!(status.step_state, StepState::Paused, "{status:#?}");
    // Green is up at full size; the Service still selects blue only.
    let deployments: Api<Deployment> = Api::default_namespaced(world.client.clone());
    let green = deployments.get("web-canary").await.unwrap();
    assert_eq!(green.status.unwrap().ready_replicas, Some(10));
    let stable = selector(&world, "web").await.unwrap();
    assert_eq!(
        stable.get("pod-template-hash"),
        Some(&status.stable_revision)
    );

    annotate(&rollouts, "sluice.dev/promote", "step:0").await;
    // After the switch the Service selects green while blue is kept.
    let mut switched = false;
    for _ in 0..600 {
        let s = rollouts.get("web").await.unwrap().status.unwrap();
        if s.handback_after.is_some() && s.phase == Phase::Progressing {
            let sel = selector(&world, "web").await.unwrap();
            assert_eq!(
                sel.get("sluice.dev/canary-of").map(String::as_str),
                Some("web")
            );
            assert_eq!(image_of(&world, "web").await, "registry.example/web:1.0");
            switched = true;
            break;
        }
        if finished(s.phase) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        switched,
        "the rollback window was never observed: {:#?}",
        rollouts.get("web").await.unwrap().status
    );
    let done = wait_phase(&rollouts, finished).await;
    assert_eq!(
        done.status.as_ref().unwrap().phase,
        Phase::Succeeded,
        "{:#?}",
        done.status
    );
    assert_handed_back(&world, "registry.example/web:2.0").await;
}

/// A release naming a traffic object that does not exist waits before it
/// changes anything, and says what it waits for; once the object is
/// there it starts. Begun without it, it held the Deployment, then stalled
/// at its first route, Pending with no word.
#[tokio::test(start_paused = true)]
async fn a_release_waits_untouched_for_a_missing_route_and_names_it() {
    let world = world_with(scenario("healthy", json!({"service": "web"}))).await;
    ready_workload(&world).await;
    let routes = http_routes(&world);
    let route = routes.get("web").await.unwrap();
    routes
        .delete("web", &kube::api::DeleteParams::default())
        .await
        .unwrap();
    let rollouts = start(
        &world,
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
        - {replicas: 30%, traffic: 10}
"#,
    )
    .await;
    let mut message = String::new();
    for _ in 0..100 {
        let status = rollouts
            .get("web")
            .await
            .unwrap()
            .status
            .unwrap_or_default();
        message = status.message;
        if !message.is_empty() {
            assert_eq!(status.phase, Phase::Pending, "{message}");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        message.contains(r#"HTTPRoute "web" (traffic.httpRoute.name)"#),
        "{message:?}"
    );
    // Nothing was changed meanwhile.
    let deployments: Api<Deployment> = Api::default_namespaced(world.client.clone());
    let d = deployments.get("web").await.unwrap();
    assert_ne!(d.spec.as_ref().unwrap().paused, Some(true));
    assert!(
        d.annotations()
            .keys()
            .all(|k| !k.starts_with("sluice.dev/")),
        "{:?}",
        d.annotations()
    );
    assert_eq!(image_of(&world, "web").await, "registry.example/web:1.0");
    // The route comes: the release starts and ends.
    let mut again = route.clone();
    again.metadata.resource_version = None;
    again.metadata.uid = None;
    again.metadata.creation_timestamp = None;
    again.metadata.managed_fields = None;
    routes.create(&PostParams::default(), &again).await.unwrap();
    let done = wait_phase(&rollouts, finished).await;
    assert_eq!(done.status.unwrap().phase, Phase::Succeeded);
}
