//! Every workload style behind every router completes a healthy release on
//! the simulated cluster, pausing at each step so the test can check the
//! pods and the routing objects against the plan, and ends with the
//! workload and the routing objects as the user wrote them (but for the new
//! image) and nothing of the release left behind.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests stop at the first failed step

mod common;

use std::time::Duration;

use common::{
    World, finished, http_routes, route_api, virtual_services, wait_phase, with_routers, world_with,
};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api,
    api::{DynamicObject, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use sluice_executor::crd::{Phase, Rollout, StepState};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Workload {
    /// A Deployment moved batch by batch through its own ReplicaSets.
    Partition,
    /// A Deployment with a `web-canary` Deployment beside it.
    Canary,
    /// A Deployment with green brought up at full size beside it.
    BlueGreen,
    /// A StatefulSet through `rollingUpdate.partition`.
    StatefulSet,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Router {
    /// Replica-weighted through the Service.
    Service,
    Nginx,
    HttpRoute,
    VirtualService,
}

const OLD: &str = "registry.example/web:1.0";
const NEW: &str = "registry.example/web:2.0";

/// The workload as a dynamic object, whichever kind it is.
fn workloads(world: &World, workload: Workload) -> Api<DynamicObject> {
    if workload == Workload::StatefulSet {
        route_api(world, "apps", "v1", "StatefulSet", "statefulsets")
    } else {
        route_api(world, "apps", "v1", "Deployment", "deployments")
    }
}

fn ingresses(world: &World) -> Api<DynamicObject> {
    route_api(world, "networking.k8s.io", "v1", "Ingress", "ingresses")
}

fn services(world: &World) -> Api<DynamicObject> {
    route_api(world, "", "v1", "Service", "services")
}

/// What the user wrote of an object: labels, annotations and spec, with
/// what the cluster's own controllers add left out.
fn as_written(object: &DynamicObject) -> Value {
    let mut annotations = object.metadata.annotations.clone().unwrap_or_default();
    annotations.remove("deployment.kubernetes.io/revision");
    json!({
        "labels": object.metadata.labels,
        "annotations": annotations,
        "spec": object.data["spec"],
    })
}

/// The scenario: every router in front of `web`, load through the one
/// under test, and `web` a StatefulSet when that is the workload.
fn scenario(workload: Workload, router: Router) -> sluice_sim::scenario::Scenario {
    let entry = match router {
        Router::Service => json!({"service": "web"}),
        Router::Nginx => json!({"ingressHost": "web.example"}),
        Router::HttpRoute => json!({"httpRoute": "web"}),
        Router::VirtualService => json!({"virtualService": "web"}),
    };
    let mut s = with_routers("healthy", entry);
    if workload == Workload::StatefulSet {
        for manifest in &mut s.manifests {
            if manifest["kind"] == "Deployment" {
                manifest["kind"] = json!("StatefulSet");
                manifest["spec"]["serviceName"] = json!("web");
                manifest["spec"]["podManagementPolicy"] = json!("Parallel");
            }
        }
    }
    s
}

fn rollout_yaml(workload: Workload, router: Router) -> String {
    let kind = if workload == Workload::StatefulSet {
        "StatefulSet"
    } else {
        "Deployment"
    };
    let traffic = match router {
        Router::Service => "{stableService: web}",
        Router::Nginx => "{stableService: web, nginx: {ingress: web}}",
        Router::HttpRoute => "{stableService: web, httpRoute: {name: web}}",
        Router::VirtualService => "{stableService: web, virtualService: {name: web}}",
    };
    let steps = match (workload, router) {
        (Workload::BlueGreen, _) => "[{traffic: 0, pause: {}}, {traffic: 100, pause: {}}]",
        // Service-only traffic follows the replicas.
        (_, Router::Service) => "[{replicas: 30%, pause: {}}, {replicas: 60%, pause: {}}]",
        _ => "[{replicas: 30%, traffic: 30, pause: {}}, {replicas: 60%, traffic: 60, pause: {}}]",
    };
    let style = match workload {
        Workload::Partition | Workload::StatefulSet => "Partition",
        Workload::Canary => "Canary",
        Workload::BlueGreen => "BlueGreen",
    };
    format!(
        r#"
apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata: {{name: web}}
spec:
  workload: {{kind: {kind}, name: web}}
  images: [{{container: web, image: "{NEW}"}}]
  traffic: {traffic}
  strategy:
    style: {style}
    blueGreen: {{rollbackWindow: 1s}}
    canary: {{steps: {steps}}}
"#
    )
}

/// New pods and traffic percent the plan gives each paused step.
fn planned(workload: Workload) -> [(usize, u32); 2] {
    match workload {
        Workload::BlueGreen => [(10, 0), (10, 100)],
        _ => [(3, 30), (6, 60)],
    }
}

async fn ready_pods(world: &World, image: &str) -> usize {
    let pods: Api<Pod> = Api::default_namespaced(world.client.clone());
    pods.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some(image))
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count()
}

async fn wait_ready(world: &World, image: &str, count: usize) {
    for _ in 0..600 {
        if ready_pods(world, image).await == count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{count} ready pods of {image} never came, {} did",
        ready_pods(world, image).await
    );
}

/// The percent of requests the router under test gives the canary.
async fn router_weight(world: &World, router: Router) -> Option<u64> {
    let weight = |v: &Value| v["weight"].as_u64();
    match router {
        Router::Service => None,
        Router::Nginx => {
            let canary = ingresses(world).get_opt("web-canary").await.unwrap()?;
            let a = canary.metadata.annotations.unwrap_or_default();
            assert_eq!(
                a.get("nginx.ingress.kubernetes.io/canary")
                    .map(String::as_str),
                Some("true")
            );
            a.get("nginx.ingress.kubernetes.io/canary-weight")?
                .parse()
                .ok()
        }
        Router::HttpRoute => {
            let route = http_routes(world).get("web").await.unwrap();
            let refs = route.data["spec"]["rules"][0]["backendRefs"].clone();
            let canary = refs
                .as_array()?
                .iter()
                .find(|b| b["name"] == "web-canary")?;
            weight(canary)
        }
        Router::VirtualService => {
            let vs = virtual_services(world).get("web").await.unwrap();
            let route = vs.data["spec"]["http"][0]["route"].clone();
            let canary = route.as_array()?.iter().find(|d| {
                d["destination"]["host"]
                    .as_str()
                    .is_some_and(|h| h.starts_with("web-canary"))
            })?;
            weight(canary)
        }
    }
}

async fn release(workload: Workload, router: Router) {
    let world = world_with(scenario(workload, router)).await;
    wait_ready(&world, OLD, 10).await;
    let originals = {
        let mut all = Vec::new();
        let w = workloads(&world, workload).get("web").await.unwrap();
        all.push(("workload", as_written(&w)));
        for (name, api) in [
            ("service", services(&world)),
            ("ingress", ingresses(&world)),
            ("httproute", http_routes(&world)),
            ("virtualservice", virtual_services(&world)),
        ] {
            all.push((name, as_written(&api.get("web").await.unwrap())));
        }
        all
    };

    let rollouts: Api<Rollout> = Api::default_namespaced(world.client.clone());
    let rollout: Rollout = serde_yaml::from_str(&rollout_yaml(workload, router)).unwrap();
    rollouts
        .create(&PostParams::default(), &rollout)
        .await
        .unwrap();

    for (step, (pods, traffic)) in planned(workload).into_iter().enumerate() {
        let paused = wait_phase(&rollouts, |p| p == Phase::Paused || finished(p)).await;
        let status = paused.status.unwrap();
        assert_eq!(
            (status.phase, status.current_step, status.step_state),
            (Phase::Paused, step as u32, StepState::Paused),
            "{status:#?}"
        );
        wait_ready(&world, NEW, pods).await;
        assert_eq!(status.canary_replicas as usize, pods);
        let old = match workload {
            // Partition styles move pods from the old version to the new.
            Workload::Partition | Workload::StatefulSet => 10 - pods,
            // The user's Deployment keeps its size beside the canary.
            Workload::Canary | Workload::BlueGreen => 10,
        };
        assert_eq!(ready_pods(&world, OLD).await, old);
        let traffic = match (workload, router) {
            // Behind the Service alone the canary's share is its share of
            // the ready pods, here beside the user's full Deployment.
            (Workload::Canary, Router::Service) => 100 * pods as u32 / (10 + pods as u32),
            _ => traffic,
        };
        assert_eq!(status.traffic, traffic, "{status:#?}");
        if router != Router::Service {
            assert_eq!(
                router_weight(&world, router).await,
                Some(u64::from(traffic))
            );
        }
        let patch =
            json!({"metadata": {"annotations": {"sluice.dev/promote": format!("step:{step}")}}});
        rollouts
            .patch("web", &PatchParams::default(), &Patch::Merge(patch))
            .await
            .unwrap();
        // Wait until the promotion moved the step on.
        for _ in 0..600 {
            let s = rollouts.get("web").await.unwrap().status.unwrap();
            if s.current_step > step as u32 || finished(s.phase) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    let done = wait_phase(&rollouts, finished).await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, Phase::Succeeded, "{status:#?}");
    wait_ready(&world, NEW, 10).await;
    assert_eq!(ready_pods(&world, OLD).await, 0);

    for (name, original) in originals {
        let now = match name {
            "workload" => workloads(&world, workload).get("web").await.unwrap(),
            "service" => services(&world).get("web").await.unwrap(),
            "ingress" => ingresses(&world).get("web").await.unwrap(),
            "httproute" => http_routes(&world).get("web").await.unwrap(),
            _ => virtual_services(&world).get("web").await.unwrap(),
        };
        let mut want = original;
        if name == "workload" {
            want["spec"]["template"]["spec"]["containers"][0]["image"] = json!(NEW);
        }
        assert_eq!(as_written(&now), want, "{name} as the user wrote it");
    }
    assert!(
        services(&world)
            .get_opt("web-canary")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        ingresses(&world)
            .get_opt("web-canary")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        workloads(&world, workload)
            .get_opt("web-canary")
            .await
            .unwrap()
            .is_none()
    );
}

macro_rules! matrix {
    ($($name:ident: $workload:ident behind $router:ident;)*) => {$(
        #[tokio::test(start_paused = true)]
        async fn $name() {
            release(Workload::$workload, Router::$router).await;
        }
    )*};
}

matrix! {
    partition_deployment_behind_its_service: Partition behind Service;
    partition_deployment_behind_nginx: Partition behind Nginx;
    partition_deployment_behind_an_http_route: Partition behind HttpRoute;
    partition_deployment_behind_a_virtual_service: Partition behind VirtualService;
    canary_deployment_behind_its_service: Canary behind Service;
    canary_deployment_behind_nginx: Canary behind Nginx;
    canary_deployment_behind_an_http_route: Canary behind HttpRoute;
    canary_deployment_behind_a_virtual_service: Canary behind VirtualService;
    blue_green_deployment_behind_its_service: BlueGreen behind Service;
    blue_green_deployment_behind_nginx: BlueGreen behind Nginx;
    blue_green_deployment_behind_an_http_route: BlueGreen behind HttpRoute;
    blue_green_deployment_behind_a_virtual_service: BlueGreen behind VirtualService;
    statefulset_behind_its_service: StatefulSet behind Service;
    statefulset_behind_nginx: StatefulSet behind Nginx;
    statefulset_behind_an_http_route: StatefulSet behind HttpRoute;
    statefulset_behind_a_virtual_service: StatefulSet behind VirtualService;
}
