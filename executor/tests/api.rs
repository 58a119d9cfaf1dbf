//! The public Rollouts API over a simulated cluster, in one process: what
//! StartRollout refuses (and that a refusal writes nothing), that every
//! field of a spec reads back as it was given, the status fields, deletes,
//! watches that end, and page tokens.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests stop at the first failed step

use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use sluice_executor::crd::Rollout;
use sluice_proto::v1 as pb;
use tonic::{Code, Status};
use tonic_types::StatusExt;

mod common;

use common::{ApiWorld, api_world};

fn seconds(s: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: s,
        nanos: 0,
    })
}

fn value(v: serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap()),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.into_iter().map(value).collect(),
        }),
        serde_json::Value::Object(o) => Kind::StructValue(prost_types::Struct {
            fields: o.into_iter().map(|(k, v)| (k, value(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

fn value_match(name: &str, kind: pb::MatchType, v: &str) -> pb::ValueMatch {
    pb::ValueMatch {
        name: name.into(),
        r#type: kind as i32,
        value: v.into(),
    }
}

/// A spec with every field of the proto set to a value other than its
/// default, released through `router`.
fn full_spec(router: pb::traffic_routing::Router) -> pb::RolloutSpec {
    let one_header = matches!(router, pb::traffic_routing::Router::Nginx(_));
    let matches = if one_header {
        vec![pb::RequestMatch {
            headers: vec![value_match("x-canary", pb::MatchType::Exact, "true")],
            ..Default::default()
        }]
    } else {
        vec![pb::RequestMatch {
            headers: vec![value_match("x-canary", pb::MatchType::Exact, "true")],
            cookies: vec![value_match("beta", pb::MatchType::Prefix, "yes")],
            query_params: vec![value_match("v", pb::MatchType::RegularExpression, "2.*")],
            path: Some(pb::PathMatch {
                r#type: pb::MatchType::Prefix as i32,
                value: "/api".into(),
            }),
        }]
    };
    let template = match value(json!({
        "metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{
            "name": "web",
            "image": "registry.example/web:2.0",
            "ports": [{"containerPort": 8080}],
        }]},
    }))
    .kind
    {
        Some(prost_types::value::Kind::StructValue(s)) => s,
        _ => unreachable!(),
    };
    pb::RolloutSpec {
        workload: Some(pb::WorkloadRef {
            kind: pb::WorkloadKind::Deployment as i32,
            name: "web".into(),
        }),
        // One or the other, never both: the NGINX spec carries the images,
        // the others the template, so both round-trip.
        pod_template: (!one_header).then_some(template),
        images: if one_header {
            vec![pb::ImageUpdate {
                container: "web".into(),
                image: "registry.example/web:2.0".into(),
            }]
        } else {
            Vec::new()
        },
        strategy: Some(pb::Strategy {
            style: pb::ReleaseStyle::Canary as i32,
            canary: Some(pb::CanaryStrategy {
                steps: vec![
                    pb::CanaryStep {
                        replicas: "1".into(),
                        traffic: Some(5),
                        matches,
                        pause: Some(pb::Pause {
                            duration: seconds(30),
                        }),
                        analyses: vec!["health".into()],
                    },
                    pb::CanaryStep {
                        replicas: "50%".into(),
                        traffic: Some(40),
                        matches: Vec::new(),
                        pause: Some(pb::Pause { duration: None }),
                        analyses: vec!["health".into()],
                    },
                ],
                failure_threshold: "1".into(),
                progress_deadline: seconds(120),
                background_analysis: Some(pb::BackgroundAnalysis {
                    analyses: vec!["background".into()],
                    starting_step: 2,
                }),
                restart_limit: Some(4),
            }),
            blue_green: Some(pb::BlueGreenStrategy {
                rollback_window: seconds(300),
            }),
        }),
        traffic: Some(pb::TrafficRouting {
            stable_service: "web".into(),
            canary_service: "web-preview".into(),
            router: Some(router),
        }),
        analyses: vec![
            pb::Analysis {
                name: "health".into(),
                metrics: vec![pb::Metric {
                    name: "errors".into(),
                    query:
                        r#"sum(rate(errors{ns="{{namespace}}",team="{{args.team}}"}[{{window}}]))"#
                            .into(),
                    template: String::new(),
                    success_condition: Some(pb::Condition {
                        kind: Some(pb::condition::Kind::Threshold(pb::Threshold {
                            min: Some(0.0),
                            max: Some(0.05),
                        })),
                    }),
                    failure_condition: Some(pb::Condition {
                        kind: Some(pb::condition::Kind::Comparison(pb::Comparison {
                            baseline_query: "sum(rate(errors[{{window}}]))".into(),
                            max_ratio: 1.5,
                            slack: 0.001,
                            direction: pb::ComparisonDirection::LowerIsWorse as i32,
                        })),
                    }),
                    interval: seconds(20),
                    count: 5,
                    initial_delay: Some(prost_types::Duration {
                        seconds: 1,
                        nanos: 500_000_000,
                    }),
                    failure_limit: 1,
                    inconclusive_limit: 2,
                    consecutive_error_limit: 3,
                    consecutive_success_limit: 4,
                    dry_run: true,
                }],
                args: [("team".to_owned(), "payments".to_owned())].into(),
            },
            pb::Analysis {
                name: "background".into(),
                metrics: vec![pb::Metric {
                    name: "latency".into(),
                    template: "request-latency-p99".into(),
                    failure_condition: Some(pb::Condition {
                        kind: Some(pb::condition::Kind::Threshold(pb::Threshold {
                            min: None,
                            max: Some(0.5),
                        })),
                    }),
                    ..Default::default()
                }],
                args: Default::default(),
            },
        ],
        on_analysis_error: pb::ErrorPolicy::Rollback as i32,
    }
}

fn start(name: &str, spec: pb::RolloutSpec) -> pb::StartRolloutRequest {
    pb::StartRolloutRequest {
        namespace: "default".into(),
        name: name.into(),
        spec: Some(spec),
    }
}

/// A small valid spec: web's container `web` on a new image.
fn simple_spec() -> pb::RolloutSpec {
    pb::RolloutSpec {
        workload: Some(pb::WorkloadRef {
            kind: pb::WorkloadKind::Deployment as i32,
            name: "web".into(),
        }),
        images: vec![pb::ImageUpdate {
            container: "web".into(),
            image: "registry.example/web:2.0".into(),
        }],
        strategy: Some(pb::Strategy {
            canary: Some(pb::CanaryStrategy {
                steps: vec![pb::CanaryStep {
                    replicas: "20%".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn fields(status: &Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

fn description(status: &Status, field: &str) -> String {
    status
        .get_error_details()
        .bad_request()
        .and_then(|b| {
            b.field_violations
                .iter()
                .find(|v| v.field == field)
                .cloned()
        })
        .map(|v| v.description)
        .unwrap_or_else(|| panic!("no violation of {field}: {status:?}"))
}

/// The names of the Rollout objects in the cluster.
async fn stored(world: &ApiWorld) -> Vec<String> {
    let rollouts: Api<Rollout> = Api::all(world.client.clone());
    rollouts
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|r| r.metadata.name.unwrap())
        .collect()
}

/// StartRollout's refusal of `spec` as `name`, having checked it wrote nothing.
async fn refused(world: &mut ApiWorld, spec: pb::RolloutSpec) -> Status {
    let before = stored(world).await;
    let status = world
        .api
        .start_rollout(start("refused", spec))
        .await
        .unwrap_err();
    assert_eq!(
        stored(world).await,
        before,
        "a refused start writes nothing"
    );
    status
}

#[tokio::test(start_paused = true)]
async fn a_spec_with_every_field_set_reads_back_the_same_from_get_list_and_watch() {
    let mut world = api_world("healthy").await;
    let routers = [
        (
            "through-nginx",
            pb::traffic_routing::Router::Nginx(pb::NginxIngress {
                ingress: "web".into(),
            }),
        ),
        (
            "through-route",
            pb::traffic_routing::Router::HttpRoute(pb::GatewayHttpRoute { name: "web".into() }),
        ),
        (
            "through-istio",
            pb::traffic_routing::Router::VirtualService(pb::IstioVirtualService {
                name: "web".into(),
                routes: vec!["primary".into(), "fallback".into()],
            }),
        ),
    ];
    for (name, router) in routers {
        let sent = full_spec(router);
        let started = world
            .api
            .start_rollout(start(name, sent.clone()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(started.spec.as_ref(), Some(&sent), "StartRollout of {name}");
        let got = world
            .api
            .get_rollout(pb::GetRolloutRequest {
                namespace: "default".into(),
                name: name.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.spec.as_ref(), Some(&sent), "GetRollout of {name}");
        let listed = world
            .api
            .list_rollouts(pb::ListRolloutsRequest::default())
            .await
            .unwrap()
            .into_inner();
        let mine = listed.rollouts.iter().find(|r| r.name == name).unwrap();
        assert_eq!(mine.spec.as_ref(), Some(&sent), "ListRollouts of {name}");
        let mut events = world
            .api
            .watch_rollout(pb::WatchRolloutRequest {
                namespace: "default".into(),
                name: name.into(),
                since_revision: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        let initial = events.next().await.unwrap().unwrap();
        assert_eq!(initial.r#type, pb::RolloutEventType::Initial as i32);
        assert_eq!(
            initial.rollout.unwrap().spec.as_ref(),
            Some(&sent),
            "WatchRollout of {name}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn images_for_a_container_the_workload_lacks_are_refused_naming_the_ones_it_has() {
    let mut world = api_world("healthy").await;
    let mut spec = simple_spec();
    spec.images[0].container = "sidecar".into();
    let status = refused(&mut world, spec).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(fields(&status), ["spec.images[0].container"]);
    let why = description(&status, "spec.images[0].container");
    assert!(
        why.contains("\"sidecar\"") && why.contains("its containers: web"),
        "{why}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_missing_workload_is_a_failed_precondition_and_a_missing_namespace_not_found() {
    let mut world = api_world("healthy").await;
    let mut spec = simple_spec();
    spec.workload.as_mut().unwrap().name = "nope".into();
    let status = refused(&mut world, spec).await;
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("Deployment default/nope"),
        "{status:?}"
    );
    let failure = status
        .get_error_details()
        .precondition_failure()
        .unwrap()
        .clone();
    assert_eq!(failure.violations[0].subject, "Deployment default/nope");

    let mut elsewhere = start("web", simple_spec());
    elsewhere.namespace = "nowhere".into();
    let status = world.api.start_rollout(elsewhere).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(status.message().contains("namespace nowhere"), "{status:?}");
    assert!(!status.message().contains("rollout"), "{status:?}");
}

#[tokio::test(start_paused = true)]
async fn matches_a_router_cannot_express_and_styles_a_statefulset_cannot_take_are_refused() {
    let mut world = api_world("healthy").await;
    let mut spec = full_spec(pb::traffic_routing::Router::Nginx(pb::NginxIngress {
        ingress: "web".into(),
    }));
    let step = &mut spec
        .strategy
        .as_mut()
        .unwrap()
        .canary
        .as_mut()
        .unwrap()
        .steps[0];
    step.matches[0]
        .headers
        .push(value_match("x-beta", pb::MatchType::Exact, "1"));
    let status = refused(&mut world, spec).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(fields(&status), ["spec.strategy.canary.steps[0].matches"]);

    let mut spec = simple_spec();
    spec.workload.as_mut().unwrap().kind = pb::WorkloadKind::StatefulSet as i32;
    spec.strategy.as_mut().unwrap().style = pb::ReleaseStyle::Canary as i32;
    let status = refused(&mut world, spec).await;
    assert_eq!(fields(&status), ["spec.strategy.style"], "{status:?}");
}

#[tokio::test(start_paused = true)]
async fn analyses_or_metrics_named_twice_and_unknown_templates_are_refused() {
    let mut world = api_world("healthy").await;
    let mut spec = full_spec(pb::traffic_routing::Router::HttpRoute(
        pb::GatewayHttpRoute { name: "web".into() },
    ));
    let mut copy = spec.analyses[0].clone();
    copy.metrics.push(copy.metrics[0].clone());
    spec.analyses.push(copy);
    spec.analyses[1].metrics[0].template = "request-saturation".into();
    let status = refused(&mut world, spec).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        fields(&status),
        [
            "spec.analyses[1].metrics[0].template",
            "spec.analyses[2].name",
            "spec.analyses[2].metrics[1].name",
        ]
    );
    assert!(
        description(&status, "spec.analyses[1].metrics[0].template").contains("request-saturation")
    );
}

#[tokio::test(start_paused = true)]
async fn more_than_a_hundred_steps_are_refused_with_the_count() {
    let mut world = api_world("healthy").await;
    let mut spec = simple_spec();
    let canary = spec.strategy.as_mut().unwrap().canary.as_mut().unwrap();
    canary.steps = vec![canary.steps[0].clone(); 101];
    let status = refused(&mut world, spec).await;
    assert_eq!(
        description(&status, "spec.strategy.canary.steps"),
        "at most 100 steps, got 101"
    );
}

#[tokio::test(start_paused = true)]
async fn an_image_of_three_mebibytes_is_an_invalid_argument_naming_it_not_unavailable() {
    let mut world = api_world("healthy").await;
    let mut spec = simple_spec();
    spec.images[0].image = "r".repeat(3 << 20);
    let status = refused(&mut world, spec).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    assert_eq!(fields(&status), ["spec.images[0].image", "spec"]);
    assert!(status.message().len() <= 256);
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_bad_steps_give_twenty_violations_and_a_count_that_fit_a_header() {
    let mut world = api_world("healthy").await;
    let mut spec = simple_spec();
    let canary = spec.strategy.as_mut().unwrap().canary.as_mut().unwrap();
    canary.steps = vec![
        pb::CanaryStep {
            replicas: "20%".into(),
            traffic: Some(120),
            ..Default::default()
        };
        10_000
    ];
    let status = refused(&mut world, spec).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    let listed = fields(&status);
    assert_eq!(listed.len(), 21, "{listed:?}");
    assert_eq!(listed[0], "spec.strategy.canary.steps");
    assert_eq!(listed[20], "(more)");
    assert!(
        status.details().len() < 4096 && status.message().len() <= 256,
        "{} bytes of details",
        status.details().len()
    );
}

#[tokio::test(start_paused = true)]
async fn a_refused_restart_leaves_the_stored_spec_as_it_was() {
    let mut world = api_world("healthy").await;
    let first = world
        .api
        .start_rollout(start("web", simple_spec()))
        .await
        .unwrap()
        .into_inner();
    let mut bad = simple_spec();
    bad.images[0].container = "sidecar".into();
    let status = world
        .api
        .start_rollout(start("web", bad))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let now = get(&mut world, "web").await;
    assert_eq!(now.revision, first.revision, "nothing was written");
    assert_eq!(now.spec, first.spec);
}

async fn get(world: &mut ApiWorld, name: &str) -> pb::Rollout {
    world
        .api
        .get_rollout(pb::GetRolloutRequest {
            namespace: "default".into(),
            name: name.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// Pause, Resume, Abort and Promote requests for rollout `name` of
/// `default`.
fn pause_of(name: &str, reason: &str) -> pb::PauseRequest {
    pb::PauseRequest {
        namespace: "default".into(),
        name: name.into(),
        reason: reason.into(),
    }
}

fn resume_of(name: &str) -> pb::ResumeRequest {
    pb::ResumeRequest {
        namespace: "default".into(),
        name: name.into(),
    }
}

fn abort_of(name: &str, reason: &str) -> pb::AbortRequest {
    pb::AbortRequest {
        namespace: "default".into(),
        name: name.into(),
        reason: reason.into(),
    }
}

fn promote_of(name: &str, full: bool) -> pb::PromoteRequest {
    pb::PromoteRequest {
        namespace: "default".into(),
        name: name.into(),
        full,
    }
}

/// Writes `status` on rollout `name`, as the controller would.
async fn set_status(world: &ApiWorld, name: &str, status: serde_json::Value) {
    let rollouts: Api<Rollout> = Api::default_namespaced(world.client.clone());
    rollouts
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_status_shows_the_pause_the_time_taken_and_each_conditions_generation() {
    let mut world = api_world("healthy").await;
    world
        .api
        .start_rollout(start("web", simple_spec()))
        .await
        .unwrap();
    set_status(
        &world,
        "web",
        json!({
            "phase": "Progressing",
            "started": "2026-01-01T10:00:00Z",
            "conditions": [{"type": "Progressing", "status": "True", "reason": "StepStarted",
                "message": "step 1", "lastTransitionTime": "2026-01-01T10:00:00Z",
                "observedGeneration": 1}],
        }),
    )
    .await;
    let paused = world
        .api
        .pause(pause_of("web", ""))
        .await
        .unwrap()
        .into_inner();
    let status = paused.status.unwrap();
    assert!(status.paused, "held by Pause");
    assert_eq!(status.conditions[0].observed_generation, 1);
    let running = status.elapsed.unwrap().seconds;
    assert!(running > 3600, "runs to now while it runs: {running}s");

    world.api.resume(resume_of("web")).await.unwrap();
    set_status(
        &world,
        "web",
        json!({"phase": "Succeeded", "finished": "2026-01-01T10:02:30Z"}),
    )
    .await;
    let status = get(&mut world, "web").await.status.unwrap();
    assert!(!status.paused, "Resume continues");
    assert_eq!(
        status.elapsed.unwrap().seconds,
        150,
        "start to end once ended"
    );
}

async fn delete(world: &mut ApiWorld, name: &str, force: bool) -> Result<pb::Rollout, Status> {
    world
        .api
        .delete_rollout(pb::DeleteRolloutRequest {
            namespace: "default".into(),
            name: name.into(),
            force,
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(start_paused = true)]
async fn deleting_a_rollout_in_flight_needs_force_and_an_ended_one_goes_at_once() {
    let mut world = api_world("healthy").await;
    for name in ["pending", "running", "ended", "waiting"] {
        world
            .api
            .start_rollout(start(name, simple_spec()))
            .await
            .unwrap();
    }
    // Pending on a workload an earlier release of it changed.
    set_status(
        &world,
        "pending",
        json!({"phase": "Pending", "stableRevision": "abc123"}),
    )
    .await;
    set_status(&world, "running", json!({"phase": "Progressing"})).await;
    set_status(&world, "ended", json!({"phase": "RolledBack"})).await;
    // A release that has not begun changed nothing: it goes without force.
    let waiting = delete(&mut world, "waiting", false).await.unwrap();
    assert_eq!(waiting.name, "waiting");

    for name in ["pending", "running"] {
        let refused = delete(&mut world, name, false).await.unwrap_err();
        assert_eq!(
            refused.code(),
            Code::FailedPrecondition,
            "{name}: {refused:?}"
        );
        assert!(refused.message().contains("Abort"), "{refused:?}");
    }
    assert_eq!(stored(&world).await.len(), 3, "nothing else deleted");

    let forced = delete(&mut world, "running", true).await.unwrap();
    assert_eq!(forced.name, "running");
    let gone = delete(&mut world, "ended", false).await.unwrap();
    assert_eq!(
        gone.status.unwrap().phase,
        pb::RolloutPhase::RolledBack as i32,
        "returns the rollout as it was"
    );
    assert_eq!(stored(&world).await, ["pending"]);
    let again = delete(&mut world, "ended", false).await.unwrap_err();
    assert_eq!(again.code(), Code::NotFound, "a repeated delete: {again:?}");
}

/// A start the executor has made (its hold on the Deployment) whose status
/// write has not landed (or was lost to a Pause) reads as Pending with no
/// revision: a delete without force is still refused, or it would leave
/// the Deployment held with nothing to release it.
#[tokio::test]
async fn a_pending_rollout_whose_start_already_holds_the_workload_is_not_deleted_unforced() {
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::api::{Patch, PatchParams};
    let mut world = api_world("healthy").await;
    world
        .api
        .start_rollout(start("held", simple_spec()))
        .await
        .unwrap();
    set_status(&world, "held", json!({"phase": "Pending"})).await;
    let deployments: Api<Deployment> = Api::default_namespaced(world.client.clone());
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"sluice.dev/rollout": "held"}}})),
        )
        .await
        .unwrap();
    let refused = delete(&mut world, "held", false).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert_eq!(stored(&world).await, ["held"]);
    // Nor when the start is claimed on the Rollout but has not reached the
    // workload yet (the executor claims before it touches anything).
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"sluice.dev/rollout": null}}})),
        )
        .await
        .unwrap();
    let rollouts: Api<Rollout> = Api::default_namespaced(world.client.clone());
    let release = sluice_executor::machine::release_id(&rollouts.get("held").await.unwrap().spec);
    rollouts
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"sluice.dev/begun": release}}})),
        )
        .await
        .unwrap();
    let refused = delete(&mut world, "held", false).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    // A claim of an earlier release says nothing of this one.
    rollouts
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"sluice.dev/begun": "an-earlier-release"}}}),
            ),
        )
        .await
        .unwrap();
    delete(&mut world, "held", false).await.unwrap();
    world
        .api
        .start_rollout(start("held", simple_spec()))
        .await
        .unwrap();
    set_status(&world, "held", json!({"phase": "Pending"})).await;
    // Another rollout's mark says nothing of this one: it goes.
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"sluice.dev/rollout": "other"}}})),
        )
        .await
        .unwrap();
    delete(&mut world, "held", false).await.unwrap();
}

/// The next item of a stream, failing the test if none comes in 30 s.
async fn next<S: futures::Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("the stream neither sent nor ended")
}

// Real time: a watch streamed over the loopback gRPC connection waits on
// socket readiness, and paused time's auto-advance can fire the guard
// timeout of `next` while the frames are in flight (it did on a 2-core
// machine). Nothing here waits on time, so real time costs nothing.
#[tokio::test]
async fn a_watch_ends_with_ok_after_the_terminal_state_and_at_once_on_an_ended_rollout() {
    let mut world = api_world("healthy").await;
    world
        .api
        .start_rollout(start("web", simple_spec()))
        .await
        .unwrap();
    let watch = pb::WatchRolloutRequest {
        namespace: "default".into(),
        name: "web".into(),
        since_revision: String::new(),
    };
    let mut events = world
        .api
        .watch_rollout(watch.clone())
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut events).await.unwrap().unwrap();
    assert_eq!(first.r#type, pb::RolloutEventType::Initial as i32);
    set_status(&world, "web", json!({"phase": "Progressing"})).await;
    set_status(&world, "web", json!({"phase": "Succeeded"})).await;
    let mut phases = Vec::new();
    while let Some(event) = next(&mut events).await {
        let event = event.unwrap();
        phases.push(event.rollout.unwrap().status.unwrap().phase());
    }
    assert_eq!(
        phases.last(),
        Some(&pb::RolloutPhase::Succeeded),
        "ends after the terminal state: {phases:?}"
    );

    let mut ended = world
        .api
        .watch_rollout(watch.clone())
        .await
        .unwrap()
        .into_inner();
    let initial = next(&mut ended).await.unwrap().unwrap();
    assert_eq!(initial.r#type, pb::RolloutEventType::Initial as i32);
    assert!(next(&mut ended).await.is_none(), "INITIAL, then the end");

    let revision = initial.rollout.unwrap().revision;
    let mut resumed = world
        .api
        .watch_rollout(pb::WatchRolloutRequest {
            since_revision: revision,
            ..watch
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        next(&mut resumed).await.is_none(),
        "nothing follows the end"
    );
}

async fn page(world: &mut ApiWorld, token: &str) -> Result<pb::ListRolloutsResponse, Status> {
    world
        .api
        .list_rollouts(pb::ListRolloutsRequest {
            page_size: 2,
            page_token: token.into(),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

fn names(page: &pb::ListRolloutsResponse) -> Vec<&str> {
    page.rollouts.iter().map(|r| r.name.as_str()).collect()
}

#[tokio::test(start_paused = true)]
async fn pages_never_repeat_a_rollout_created_between_them_and_bad_tokens_are_named() {
    let mut world = api_world("healthy").await;
    for name in ["b", "c", "d", "e", "f"] {
        world
            .api
            .start_rollout(start(name, simple_spec()))
            .await
            .unwrap();
    }
    let first = page(&mut world, "").await.unwrap();
    assert_eq!(names(&first), ["b", "c"]);
    world
        .api
        .start_rollout(start("a", simple_spec()))
        .await
        .unwrap();
    let second = page(&mut world, &first.next_page_token).await.unwrap();
    assert_eq!(
        names(&second),
        ["d", "e"],
        "after c, whatever came before it"
    );
    let third = page(&mut world, &second.next_page_token).await.unwrap();
    assert_eq!(names(&third), ["f"]);
    assert_eq!(third.next_page_token, "", "the last page");

    let bad = page(&mut world, "2").await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(fields(&bad), ["page_token"]);
}

// Real time: a watch streamed over the loopback gRPC connection waits on
// socket readiness, and paused time's auto-advance can fire the guard
// timeout of `next` while the frames are in flight (it did on a 2-core
// machine). Nothing here waits on time, so real time costs nothing.
#[tokio::test]
async fn a_new_version_on_an_ended_rollout_never_reads_as_the_old_outcome() {
    let mut world = api_world("healthy").await;
    world
        .api
        .start_rollout(start("web", simple_spec()))
        .await
        .unwrap();
    let release = sluice_executor::machine::release_id(
        &Api::<Rollout>::default_namespaced(world.client.clone())
            .get("web")
            .await
            .unwrap()
            .spec,
    );
    set_status(
        &world,
        "web",
        json!({"phase": "Succeeded", "release": release, "message": "released",
            "conditions": [{"type": "Completed", "status": "True", "reason": "Succeeded", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}),
    )
    .await;
    // The same spec again is the same rollout, as it is.
    let same = world
        .api
        .start_rollout(start("web", simple_spec()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        same.status.unwrap().phase,
        pb::RolloutPhase::Succeeded as i32
    );

    let mut newer = simple_spec();
    newer.images[0].image = "registry.example/web:3.0".into();
    let started = world
        .api
        .start_rollout(start("web", newer))
        .await
        .unwrap()
        .into_inner();
    let status = started.status.unwrap_or_default();
    assert_eq!(
        status.phase,
        pb::RolloutPhase::Pending as i32,
        "the answer is not the old Succeeded: {status:?}"
    );
    assert!(
        status.conditions.iter().all(|c| c.r#type != "Completed"),
        "no Completed condition of the old release: {status:?}"
    );
    // A watch started now waits for the new release's outcome.
    let mut events = world
        .api
        .watch_rollout(pb::WatchRolloutRequest {
            namespace: "default".into(),
            name: "web".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut events).await.unwrap().unwrap();
    assert_eq!(
        first.rollout.unwrap().status.unwrap_or_default().phase,
        pb::RolloutPhase::Pending as i32
    );
    // It stays open for the new release's states.
    set_status(&world, "web", json!({"phase": "Progressing"})).await;
    let update = next(&mut events).await.unwrap().unwrap();
    assert_eq!(
        update.rollout.unwrap().status.unwrap_or_default().phase,
        pb::RolloutPhase::Progressing as i32
    );
}

#[tokio::test(start_paused = true)]
async fn abort_calls_off_a_pending_release_and_pause_does_not_hold_a_rollback() {
    let mut world = api_world("healthy").await;
    for name in ["pending", "rolling-back"] {
        world
            .api
            .start_rollout(start(name, simple_spec()))
            .await
            .unwrap();
    }
    let aborted = world
        .api
        .abort(abort_of("pending", "not today"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(aborted.name, "pending");
    // The answer says the abort is asked, not yet done.
    assert_eq!(
        aborted.status.unwrap_or_default().abort_requested,
        "not today"
    );
    let stored = Api::<Rollout>::default_namespaced(world.client.clone())
        .get("pending")
        .await
        .unwrap();
    assert_eq!(
        stored.metadata.annotations.unwrap_or_default()[sluice_executor::keys::ABORT],
        "not today",
        "the controller is asked to call it off"
    );

    set_status(&world, "rolling-back", json!({"phase": "RollingBack"})).await;
    let refused = world
        .api
        .pause(pause_of("rolling-back", ""))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("RollingBack"), "{refused:?}");
}

#[tokio::test(start_paused = true)]
async fn bad_revisions_enum_numbers_and_reasons_are_refused_as_is_a_promote_of_a_replaced_release()
{
    let mut world = api_world("healthy").await;
    world
        .api
        .start_rollout(start("web", simple_spec()))
        .await
        .unwrap();
    for bad in ["garbage", "-5", "99999999999999999999"] {
        let refused = world
            .api
            .watch_rollout(pb::WatchRolloutRequest {
                namespace: "default".into(),
                name: "web".into(),
                since_revision: bad.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{bad}: {refused:?}");
        assert_eq!(fields(&refused), ["since_revision"], "{refused:?}");
    }
    let mut spec = simple_spec();
    spec.workload.as_mut().unwrap().kind = 99;
    spec.strategy.as_mut().unwrap().style = 9;
    let refused = refused(&mut world, spec).await;
    assert_eq!(
        fields(&refused),
        ["spec.workload.kind", "spec.strategy.style"],
        "{refused:?}"
    );
    // A Promote meant for the release a new spec replaces: refused, not
    // dropped once the new release starts.
    set_status(
        &world,
        "web",
        json!({"phase": "Paused", "currentStep": 1, "totalSteps": 2, "stepState": "Paused",
               "release": "the-replaced-release"}),
    )
    .await;
    let promote = world
        .api
        .promote(promote_of("web", false))
        .await
        .unwrap_err();
    assert_eq!(promote.code(), Code::FailedPrecondition, "{promote:?}");
    assert!(promote.message().contains("new release"), "{promote:?}");
    let long = "x".repeat(1025);
    let pause = world.api.pause(pause_of("web", &long)).await.unwrap_err();
    let abort = world.api.abort(abort_of("web", &long)).await.unwrap_err();
    for refused in [pause, abort] {
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert_eq!(fields(&refused), ["reason"], "{refused:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn pause_abort_and_promote_are_refused_once_the_workload_is_given_back() {
    let mut world = api_world("healthy").await;
    world
        .api
        .start_rollout(start("web", simple_spec()))
        .await
        .unwrap();
    // Every step done, the hand-back window not over: still the release's.
    set_status(
        &world,
        "web",
        json!({"phase": "Progressing", "currentStep": 1, "totalSteps": 2, "stepState": "Completed",
               "handbackAfter": "2030-01-01T00:00:00Z", "release": "r"}),
    )
    .await;
    world.api.pause(pause_of("web", "")).await.unwrap();
    let rollouts: Api<Rollout> = Api::default_namespaced(world.client.clone());
    assert!(rollouts.get("web").await.unwrap().spec.paused);
    world.api.resume(resume_of("web")).await.unwrap();
    // Given back: nothing is left to hold, call off or promote.
    set_status(
        &world,
        "web",
        json!({"handbackAfter": null, "handingBackSince": "2026-12-07T00:00:00Z",
               "message": "handing back: 3 of 4 new pods ready"}),
    )
    .await;
    let before = rollouts.get("web").await.unwrap();
    let pause = world.api.pause(pause_of("web", "")).await.unwrap_err();
    let abort = world
        .api
        .abort(abort_of("web", "too late"))
        .await
        .unwrap_err();
    let promote = world
        .api
        .promote(promote_of("web", true))
        .await
        .unwrap_err();
    for refused in [&pause, &abort, &promote] {
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
        assert!(
            refused
                .message()
                .contains("default/web is handing its workload back"),
            "{refused:?}"
        );
    }
    assert!(
        abort.message().contains("release the previous version"),
        "{abort:?}"
    );
    let after = rollouts.get("web").await.unwrap();
    assert_eq!(
        after.metadata.resource_version, before.metadata.resource_version,
        "a refusal writes nothing"
    );
}

#[tokio::test(start_paused = true)]
async fn a_bound_workload_takes_its_versions_from_its_own_changes_not_from_start_rollout() {
    let mut world = api_world("healthy").await;
    // The binding, written with kubectl: a strategy, no version.
    let rollouts = create_web_binding(&world).await;
    world.bindings.wait_for("default", "web-binding").await;
    // A version for the bound workload through the API: refused, naming
    // the binding, nothing written.
    let status = refused(&mut world, simple_spec()).await;
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status
            .message()
            .contains("bound to Rollout \"web-binding\""),
        "{}",
        status.message()
    );
    // A version given to the binding itself: refused too.
    let before = rollouts.get("web-binding").await.unwrap();
    let status = world
        .api
        .start_rollout(start("web-binding", simple_spec()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("change the workload"),
        "{}",
        status.message()
    );
    assert_eq!(rollouts.get("web-binding").await.unwrap().spec, before.spec);
    // Get shows it like any other, with no images.
    let got = world
        .api
        .get_rollout(pb::GetRolloutRequest {
            namespace: "default".into(),
            name: "web-binding".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let spec = got.spec.unwrap();
    assert!(spec.images.is_empty() && spec.pod_template.is_none());
    assert_eq!(spec.workload.unwrap().name, "web");
}

/// Rollout `web-binding`, bound to Deployment `web` with the default
/// strategy, created as kubectl would; the Rollouts' API.
async fn create_web_binding(world: &ApiWorld) -> Api<Rollout> {
    let rollouts: Api<Rollout> = Api::default_namespaced(world.client.clone());
    let binding: Rollout = serde_yaml::from_str(
        "apiVersion: sluice.dev/v1alpha1\nkind: Rollout\nmetadata: {name: web-binding}\nspec:\n  workload: {kind: Deployment, name: web}\n",
    )
    .unwrap();
    rollouts
        .create(&kube::api::PostParams::default(), &binding)
        .await
        .unwrap();
    rollouts
}

/// The release identity the executor records for binding `name` over
/// Deployment "web" as it is now.
async fn bound_release_now(world: &ApiWorld, name: &str) -> String {
    let rollouts: Api<Rollout> = Api::default_namespaced(world.client.clone());
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::default_namespaced(world.client.clone());
    let binding = rollouts.get(name).await.unwrap();
    let web = deployments.get("web").await.unwrap();
    sluice_executor::machine::bound_release_id(
        &binding.spec,
        &sluice_executor::admission::hold::deployment_template(&web),
    )
}

/// Changes the image of Deployment "web" as `kubectl set image` does.
async fn set_web_image(world: &ApiWorld, image: &str) {
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::default_namespaced(world.client.clone());
    let web = deployments.get("web").await.unwrap();
    let container = web.spec.unwrap().template.spec.unwrap().containers[0]
        .name
        .clone();
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
                {"name": container, "image": image}]}}}})),
        )
        .await
        .unwrap();
}

// Real time, as the other watch test (see there).
#[tokio::test]
async fn a_held_change_after_an_ended_release_reads_as_pending_until_the_executor_takes_it() {
    let mut world = api_world("healthy").await;
    let rollouts = create_web_binding(&world).await;
    // Its last release ended, recorded as the executor records it.
    let released = bound_release_now(&world, "web-binding").await;
    set_status(
        &world,
        "web-binding",
        json!({"phase": "Succeeded", "release": released, "stableRevision": "abc",
               "canaryRevision": "abc", "currentStep": 1, "totalSteps": 2, "traffic": 100,
               "message": "every step done"}),
    )
    .await;
    let phase = |r: &pb::Rollout| r.status.as_ref().unwrap().phase();
    assert_eq!(
        phase(&get(&mut world, "web-binding").await),
        pb::RolloutPhase::Succeeded
    );
    // The user changes the workload (`kubectl set image`); the executor has
    // not looked yet.
    set_web_image(&world, "registry.example/web:v9").await;
    let shown = get(&mut world, "web-binding").await;
    let status = shown.status.as_ref().unwrap();
    assert_eq!(status.phase(), pb::RolloutPhase::Pending, "{status:?}");
    assert!(
        status.message.contains("has not begun"),
        "{}",
        status.message
    );
    assert!(status.stable_revision.is_empty() && status.steps.is_empty());
    let completed = status
        .conditions
        .iter()
        .find(|c| c.r#type == "Completed")
        .unwrap();
    assert_eq!(completed.status, "False", "{completed:?}");
    // Listing by phase finds it among the Pending ones, not the Succeeded.
    let listed = |phase: pb::RolloutPhase| pb::ListRolloutsRequest {
        namespace: "default".into(),
        phases: vec![phase as i32],
        ..pb::ListRolloutsRequest::default()
    };
    let pending = world
        .api
        .list_rollouts(listed(pb::RolloutPhase::Pending))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&pending), ["web-binding"]);
    let succeeded = world
        .api
        .list_rollouts(listed(pb::RolloutPhase::Succeeded))
        .await
        .unwrap()
        .into_inner();
    assert!(names(&succeeded).is_empty(), "{:?}", names(&succeeded));
    // A watch started now does not end on the old outcome: it follows the
    // new release to its own end.
    let mut events = world
        .api
        .watch_rollout(pb::WatchRolloutRequest {
            namespace: "default".into(),
            name: "web-binding".into(),
            since_revision: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let initial = next(&mut events).await.unwrap().unwrap();
    assert_eq!(
        phase(initial.rollout.as_ref().unwrap()),
        pb::RolloutPhase::Pending
    );
    // Pause acts on the waiting release rather than being refused as ended.
    let paused = world
        .api
        .pause(pause_of("web-binding", ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(phase(&paused), pb::RolloutPhase::Pending);
    assert!(rollouts.get("web-binding").await.unwrap().spec.paused);
    let release = bound_release_now(&world, "web-binding").await;
    assert_ne!(release, released);
    set_status(
        &world,
        "web-binding",
        json!({"phase": "Progressing", "release": release, "stableRevision": "abc",
               "canaryRevision": "def", "currentStep": 0, "traffic": 0, "message": ""}),
    )
    .await;
    set_status(&world, "web-binding", json!({"phase": "Succeeded"})).await;
    let mut phases = Vec::new();
    while let Some(event) = next(&mut events).await {
        phases.push(phase(event.unwrap().rollout.as_ref().unwrap()));
    }
    assert_eq!(
        phases.last(),
        Some(&pb::RolloutPhase::Succeeded),
        "ends at the new release's end: {phases:?}"
    );
    assert!(
        phases.contains(&pb::RolloutPhase::Progressing),
        "{phases:?}"
    );
}

#[tokio::test]
async fn a_newer_template_mid_release_reads_as_pending_and_its_promote_is_refused() {
    let mut world = api_world("healthy").await;
    create_web_binding(&world).await;
    // A release waiting at its first step's pause, as the executor records it.
    let released = bound_release_now(&world, "web-binding").await;
    set_status(
        &world,
        "web-binding",
        json!({"phase": "Paused", "release": released, "stableRevision": "abc",
               "canaryRevision": "def", "currentStep": 0, "totalSteps": 2, "stepState": "Paused",
               "message": "step 1 waits for promotion"}),
    )
    .await;
    set_web_image(&world, "registry.example/web:v9").await;
    // Until the executor takes the newer template up: Pending, from the
    // same stable revision, and a Promote meant for the replaced release is
    // refused, not dropped.
    let shown = get(&mut world, "web-binding").await;
    let status = shown.status.as_ref().unwrap();
    assert_eq!(status.phase(), pb::RolloutPhase::Pending, "{status:?}");
    assert_eq!(status.stable_revision, "abc");
    let refused = world
        .api
        .promote(promote_of("web-binding", false))
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_promote_of_an_ended_rollout_says_it_ended_even_when_paused_on_request() {
    let mut world = api_world("healthy").await;
    create_web_binding(&world).await;
    world.api.pause(pause_of("web-binding", "")).await.unwrap();
    set_status(
        &world,
        "web-binding",
        json!({"phase": "RolledBack", "message": "aborted"}),
    )
    .await;
    let refused = world
        .api
        .promote(promote_of("web-binding", false))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("RolledBack") && !refused.message().contains("Resume"),
        "{}",
        refused.message()
    );
}

/// Values a StartRollout once accepted and then read as something else
/// (an undefined enum as its default, a Duration past its range wrapped,
/// an empty condition from NaN) or that no node could pull: refused,
/// naming the field and the value, with nothing written.
#[tokio::test(start_paused = true)]
async fn values_read_as_something_else_or_never_pullable_are_refused() {
    let mut world = api_world("healthy").await;
    let http_route =
        pb::traffic_routing::Router::HttpRoute(pb::GatewayHttpRoute { name: "web".into() });
    let mut spec = full_spec(http_route);
    spec.on_analysis_error = 9;
    let canary = spec.strategy.as_mut().unwrap().canary.as_mut().unwrap();
    canary.steps[0].matches[0].headers[0].r#type = 9;
    canary.steps[0].matches[0].path.as_mut().unwrap().r#type = 9;
    canary.steps[0].pause = Some(pb::Pause {
        duration: Some(prost_types::Duration {
            seconds: 1_000_000_000_000,
            nanos: 0,
        }),
    });
    canary.progress_deadline = Some(prost_types::Duration {
        seconds: 1,
        nanos: -5,
    });
    spec.strategy.as_mut().unwrap().blue_green = Some(pb::BlueGreenStrategy {
        rollback_window: Some(prost_types::Duration {
            seconds: 0,
            nanos: 2_000_000_000,
        }),
    });
    let metric = &mut spec.analyses[0].metrics[0];
    metric.success_condition = Some(pb::Condition {
        kind: Some(pb::condition::Kind::Threshold(pb::Threshold {
            min: Some(5.0),
            max: Some(f64::NAN),
        })),
    });
    metric.failure_condition = Some(pb::Condition {
        kind: Some(pb::condition::Kind::Comparison(pb::Comparison {
            baseline_query: String::new(),
            max_ratio: -3.0,
            slack: -1.0,
            direction: 7,
        })),
    });
    let all = refused(&mut world, spec).await;
    assert_eq!(all.code(), Code::InvalidArgument, "{all:?}");
    let mut got = fields(&all);
    got.sort();
    let mut want = vec![
        "spec.onAnalysisError",
        "spec.strategy.canary.steps[0].matches[0].headers[0].type",
        "spec.strategy.canary.steps[0].matches[0].path.type",
        "spec.strategy.canary.steps[0].pause.duration",
        "spec.strategy.canary.progressDeadline",
        "spec.strategy.blueGreen.rollbackWindow",
        "spec.analyses[0].metrics[0].successCondition.threshold.max",
        "spec.analyses[0].metrics[0].failureCondition.comparison.direction",
        "spec.analyses[0].metrics[0].failureCondition.comparison.maxRatio",
        "spec.analyses[0].metrics[0].failureCondition.comparison.slack",
    ];
    want.sort_unstable();
    assert_eq!(got, want, "{all:?}");
    assert!(
        description(&all, "spec.onAnalysisError").ends_with("got the number 9"),
        "{all:?}"
    );
    assert!(
        description(&all, "spec.strategy.canary.progressDeadline")
            .contains("got seconds 1 nanos -5"),
        "{all:?}"
    );
    // min above max, alone.
    let mut spec = full_spec(pb::traffic_routing::Router::HttpRoute(
        pb::GatewayHttpRoute { name: "web".into() },
    ));
    spec.analyses[0].metrics[0].success_condition = Some(pb::Condition {
        kind: Some(pb::condition::Kind::Threshold(pb::Threshold {
            min: Some(5.0),
            max: Some(1.0),
        })),
    });
    let refused_min = refused(&mut world, spec).await;
    assert_eq!(
        fields(&refused_min),
        ["spec.analyses[0].metrics[0].successCondition.threshold"],
        "{refused_min:?}"
    );
    // Images no node could pull, each shown as sent.
    for image in [
        " registry.example/web:30 ",
        "registry.example/web:3\n0",
        "registry.example/Web:30",
        "registry.example/web:",
        "registry.example/web@sha256:abc",
        "registry.example/web:-bad",
    ] {
        let mut spec = simple_spec();
        spec.images[0].image = image.into();
        let refused = refused(&mut world, spec).await;
        assert_eq!(
            fields(&refused),
            ["spec.images[0].image"],
            "{image:?}: {refused:?}"
        );
        let said = description(&refused, "spec.images[0].image");
        assert!(said.contains("got \""), "{image:?}: {said}");
    }
    // And references that pull are taken.
    for (i, image) in [
        "nginx",
        "nginx:1.27",
        "library/nginx:1.27-alpine",
        "localhost:5000/team/web:v2",
        "Registry.Example:443/web/api_v2@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ]
    .into_iter()
    .enumerate()
    {
        let mut spec = simple_spec();
        spec.images[0].image = image.into();
        world
            .api
            .start_rollout(start(&format!("ok-{i}"), spec))
            .await
            .unwrap_or_else(|e| panic!("{image}: {e:?}"));
    }
    // Traffic objects no object could be named, and a canary Service that
    // is the stable one.
    for (router, stable, canary, want) in [
        (
            pb::traffic_routing::Router::HttpRoute(pb::GatewayHttpRoute { name: "web".into() }),
            "Bad_Svc",
            "Bad Svc",
            vec!["spec.traffic.stableService", "spec.traffic.canaryService"],
        ),
        (
            pb::traffic_routing::Router::HttpRoute(pb::GatewayHttpRoute { name: "web".into() }),
            "web",
            "web",
            vec!["spec.traffic.canaryService"],
        ),
        (
            pb::traffic_routing::Router::Nginx(pb::NginxIngress {
                ingress: String::new(),
            }),
            "web",
            "web-preview",
            vec!["spec.traffic.nginx.ingress"],
        ),
        (
            pb::traffic_routing::Router::HttpRoute(pb::GatewayHttpRoute {
                name: "x..y".into(),
            }),
            "web",
            "web-preview",
            vec!["spec.traffic.httpRoute.name"],
        ),
        (
            pb::traffic_routing::Router::HttpRoute(pb::GatewayHttpRoute {
                name: "bad name".into(),
            }),
            "web",
            "web-preview",
            vec!["spec.traffic.httpRoute.name"],
        ),
    ] {
        let mut spec = full_spec(router);
        let traffic = spec.traffic.as_mut().unwrap();
        traffic.stable_service = stable.into();
        traffic.canary_service = canary.into();
        let no = refused(&mut world, spec).await;
        assert_eq!(fields(&no), want, "{no:?}");
    }
    // A pod template the Deployment could never take: labels outside its
    // selector, or no PodTemplateSpec at all.
    let template = |labels: serde_json::Value, port: serde_json::Value| {
        let json = json!({
            "metadata": {"labels": labels},
            "spec": {"containers": [{"name": "web", "image": "registry.example/web:2.0",
                                     "ports": [{"containerPort": port}]}]},
        });
        match value(json).kind {
            Some(prost_types::value::Kind::StructValue(s)) => s,
            _ => unreachable!(),
        }
    };
    let mut spec = simple_spec();
    spec.images.clear();
    spec.pod_template = Some(template(json!({"app": "other"}), json!(8080)));
    let no = refused(&mut world, spec).await;
    assert_eq!(fields(&no), ["spec.podTemplate.metadata.labels"], "{no:?}");
    assert!(
        description(&no, "spec.podTemplate.metadata.labels").contains("got app=other"),
        "{no:?}"
    );
    let mut spec = simple_spec();
    spec.images.clear();
    spec.pod_template = Some(template(json!({"app": "web"}), json!("abc")));
    let no = refused(&mut world, spec).await;
    assert_eq!(fields(&no), ["spec.podTemplate"], "{no:?}");
    // Its images are checked as `images` are.
    let mut spec = simple_spec();
    spec.images.clear();
    let mut bad_image = template(json!({"app": "web"}), json!(8080));
    let as_json = sluice_executor::convert::struct_to_json(&bad_image);
    let mut as_json = as_json;
    as_json["spec"]["containers"][0]["image"] = json!("Bad Image");
    bad_image = match value(as_json).kind {
        Some(prost_types::value::Kind::StructValue(s)) => s,
        _ => unreachable!(),
    };
    spec.pod_template = Some(bad_image);
    let no = refused(&mut world, spec).await;
    assert_eq!(
        fields(&no),
        ["spec.podTemplate.spec.containers[0].image"],
        "{no:?}"
    );
    // A ListRollouts phase the proto does not define.
    let list = world
        .api
        .list_rollouts(pb::ListRolloutsRequest {
            namespace: "default".into(),
            phases: vec![pb::RolloutPhase::Pending as i32, 99],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(list.code(), Code::InvalidArgument, "{list:?}");
    assert_eq!(fields(&list), ["phases[1]"], "{list:?}");
}

/// A request naming no namespace is refused, naming the field: a rollout
/// is never made in a namespace the caller did not say.
#[tokio::test(start_paused = true)]
async fn a_start_without_a_namespace_is_refused() {
    let mut world = api_world("healthy").await;
    let refused = world
        .api
        .start_rollout(pb::StartRolloutRequest {
            namespace: String::new(),
            name: "web".into(),
            spec: Some(simple_spec()),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert_eq!(fields(&refused), ["namespace"], "{refused:?}");
    assert!(stored(&world).await.is_empty());
}
