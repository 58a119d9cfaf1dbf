//! Never fall over: objects of every built-in kind with generated bad
//! values (wrong types, negatives, huge numbers, nulls, nonsense strings)
//! are written to a running simulated cluster, changed and deleted; the
//! API answers each write (accepting or refusing it), and afterwards the
//! controllers still run: a fresh Deployment comes up ready behind its
//! Service. A controller that panicked on one object would stop the rest,
//! and the last step would not be reached.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests stop at the first failure

use std::time::Duration;

use k8s_openapi::api::{apps::v1::Deployment, discovery::v1::EndpointSlice};
use kube::{
    Api, Client,
    api::{
        ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
    },
};
use proptest::prelude::*;
use serde_json::{Value, json};
use sluice_sim::{
    api::{ApiServer, Options},
    cluster::{Cluster, ClusterOptions},
};
use tokio_util::sync::CancellationToken;

/// (group, version, kind, plural, a valid object's body).
fn kinds() -> Vec<(
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Value,
)> {
    let template = json!({"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "i:1", "ports": [{"containerPort": 80, "name": "web"}], "readinessProbe": {"httpGet": {"path": "/", "port": 80}}}]}});
    let workload =
        json!({"replicas": 2, "selector": {"matchLabels": {"app": "x"}}, "template": template});
    vec![
        (
            "apps",
            "v1",
            "Deployment",
            "deployments",
            json!({"spec": workload.clone()}),
        ),
        (
            "apps",
            "v1",
            "ReplicaSet",
            "replicasets",
            json!({"spec": workload.clone()}),
        ),
        (
            "apps",
            "v1",
            "StatefulSet",
            "statefulsets",
            json!({"spec": workload.clone()}),
        ),
        (
            "apps",
            "v1",
            "DaemonSet",
            "daemonsets",
            json!({"spec": {"selector": {"matchLabels": {"app": "x"}}, "template": template}}),
        ),
        (
            "",
            "v1",
            "Pod",
            "pods",
            json!({"metadata": {"labels": {"app": "x"}}, "spec": template["spec"].clone()}),
        ),
        (
            "",
            "v1",
            "Service",
            "services",
            json!({"spec": {"selector": {"app": "x"}, "ports": [{"port": 80, "targetPort": "web"}]}}),
        ),
        (
            "",
            "v1",
            "ConfigMap",
            "configmaps",
            json!({"data": {"k": "v"}}),
        ),
        (
            "",
            "v1",
            "Secret",
            "secrets",
            json!({"stringData": {"k": "v"}}),
        ),
        (
            "",
            "v1",
            "Node",
            "nodes",
            json!({"status": {"capacity": {"pods": "10"}}}),
        ),
        (
            "networking.k8s.io",
            "v1",
            "Ingress",
            "ingresses",
            json!({"spec": {"rules": [{"http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "x", "port": {"number": 80}}}}]}}]}}),
        ),
        (
            "discovery.k8s.io",
            "v1",
            "EndpointSlice",
            "endpointslices",
            json!({"addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"]}], "ports": [{"port": 80}]}),
        ),
        (
            "coordination.k8s.io",
            "v1",
            "Lease",
            "leases",
            json!({"spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}}),
        ),
        (
            "policy",
            "v1",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
            json!({"spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "x"}}}}),
        ),
        (
            "autoscaling",
            "v2",
            "HorizontalPodAutoscaler",
            "horizontalpodautoscalers",
            json!({"spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "x"}, "maxReplicas": 3}}),
        ),
        (
            "batch",
            "v1",
            "Job",
            "jobs",
            json!({"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i:1"}]}}}}),
        ),
    ]
}

/// Where generated values go (created on the way when missing).
const PATHS: &[&str] = &[
    "/spec/replicas",
    "/spec/selector",
    "/spec/selector/matchLabels",
    "/spec/selector/matchLabels/app",
    "/spec/template",
    "/spec/template/metadata/labels/app",
    "/spec/template/spec/containers",
    "/spec/template/spec/containers/0/image",
    "/spec/template/spec/containers/0/ports/0/containerPort",
    "/spec/template/spec/containers/0/readinessProbe/periodSeconds",
    "/spec/strategy",
    "/spec/strategy/type",
    "/spec/strategy/rollingUpdate/maxSurge",
    "/spec/strategy/rollingUpdate/maxUnavailable",
    "/spec/updateStrategy/rollingUpdate/partition",
    "/spec/updateStrategy/rollingUpdate/maxUnavailable",
    "/spec/minReadySeconds",
    "/spec/progressDeadlineSeconds",
    "/spec/revisionHistoryLimit",
    "/spec/paused",
    "/spec/ports",
    "/spec/ports/0/port",
    "/spec/ports/0/targetPort",
    "/spec/selector/app",
    "/spec/type",
    "/spec/containers",
    "/spec/containers/0/image",
    "/spec/nodeName",
    "/status",
    "/status/replicas",
    "/metadata/labels",
    "/metadata/ownerReferences",
    "/metadata/finalizers",
    "/metadata/deletionGracePeriodSeconds",
    "/data",
    "/endpoints",
    "/endpoints/0/addresses",
    "/spec/leaseDurationSeconds",
    "/spec/minAvailable",
    "/spec/maxReplicas",
    "/spec/rules",
];

fn values() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        Just(json!(-1)),
        Just(json!(0)),
        Just(json!(i64::MAX)),
        Just(json!(i64::from(i32::MIN))),
        Just(json!(u64::MAX)),
        Just(json!(1.5)),
        Just(json!("")),
        Just(json!("x")),
        Just(json!("150%")),
        Just(json!("-5%")),
        Just(json!("99999999999999999999%")),
        Just(json!(true)),
        Just(json!([])),
        Just(json!([null])),
        Just(json!({})),
        Just(json!({"app": 7})),
        Just(json!([{"apiVersion": "v1", "kind": "Pod", "name": "nope", "uid": "u"}])),
    ]
}

/// Sets `path` (a JSON pointer) in `object`, making objects on the way.
fn set(object: &mut Value, path: &str, value: Value) {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mut at = object;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let index = part
            .parse::<usize>()
            .ok()
            .filter(|n| at.as_array().is_some_and(|items| *n < items.len()));
        if let Some(n) = index {
            if last {
                at[n] = value;
                return;
            }
            at = &mut at[n];
            continue;
        }
        if !at.is_object() {
            *at = json!({});
        }
        if last {
            at[*part] = value;
            return;
        }
        at = at
            .as_object_mut()
            .unwrap()
            .entry((*part).to_owned())
            .or_insert(json!({}));
    }
}

#[derive(Debug, Clone)]
struct Write {
    kind: usize,
    changes: Vec<(usize, Value)>,
    then: Vec<(usize, Value)>,
    delete: bool,
}

fn writes() -> impl Strategy<Value = Vec<Write>> {
    let n = kinds().len();
    let change = || (0..PATHS.len(), values());
    prop::collection::vec(
        (
            0..n,
            prop::collection::vec(change(), 1..4),
            prop::collection::vec(change(), 0..3),
            any::<bool>(),
        )
            .prop_map(|(kind, changes, then, delete)| Write {
                kind,
                changes,
                then,
                delete,
            }),
        1..6,
    )
}

async fn run(writes: Vec<Write>) {
    let api = ApiServer::new(Options::tokio_clock(1.0));
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let _cluster = Cluster::start(api.clone(), ClusterOptions::default(), stop.clone()).unwrap();
    let client = Client::new(api.router(), "default");
    let kinds = kinds();
    for (i, write) in writes.iter().enumerate() {
        let (group, version, kind, plural, body) = &kinds[write.kind];
        let resource =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
        let namespaced = *kind != "Node";
        let dynamic: Api<DynamicObject> = if namespaced {
            Api::namespaced_with(client.clone(), "default", &resource)
        } else {
            Api::all_with(client.clone(), &resource)
        };
        let name = format!("x{i}");
        let mut object = body.clone();
        object["apiVersion"] = json!(resource.api_version);
        object["kind"] = json!(kind);
        set(&mut object, "/metadata/name", json!(name));
        for (path, value) in &write.changes {
            set(&mut object, PATHS[*path], value.clone());
        }
        // Refused or accepted, every write is answered.
        let Ok(object) = serde_json::from_value::<DynamicObject>(object) else {
            continue;
        };
        let _ = dynamic.create(&PostParams::default(), &object).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        if !write.then.is_empty() {
            let mut patch = json!({});
            for (path, value) in &write.then {
                set(&mut patch, PATHS[*path], value.clone());
            }
            let _ = dynamic
                .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        if write.delete {
            let _ = dynamic.delete(&name, &DeleteParams::default()).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(30)).await;

    // The controllers still run: a new Deployment comes up behind its
    // Service, in its own labels so the objects above do not take its pods.
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    deployments
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "alive"},
                "spec": {"replicas": 2, "selector": {"matchLabels": {"probe": "alive"}},
                    "template": {"metadata": {"labels": {"probe": "alive"}}, "spec": {"containers": [{"name": "c", "image": "alive:1"}]}}}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    Api::<k8s_openapi::api::core::v1::Service>::default_namespaced(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "alive"}, "spec": {"selector": {"probe": "alive"}, "ports": [{"port": 80}]}})).unwrap(),
        )
        .await
        .unwrap();
    let slices: Api<EndpointSlice> = Api::default_namespaced(client.clone());
    for _ in 0..600 {
        let ready = deployments
            .get("alive")
            .await
            .unwrap()
            .status
            .and_then(|s| s.ready_replicas)
            == Some(2);
        let endpoints = slices
            .get_opt("alive-sim")
            .await
            .unwrap()
            .is_some_and(|s| s.endpoints.len() == 2);
        if ready && endpoints {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("the controllers stopped after {writes:#?}");
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        // Seeded, so every run tries the same objects.
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x5_1ce_0b1),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn no_object_stops_the_controllers(writes in writes()) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(run(writes));
    }
}
