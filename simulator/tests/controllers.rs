//! The simulated cluster's controllers, against what a real cluster does
//! (expectations from the Kubernetes documentation for Deployments,
//! StatefulSets and pods), on paused tokio time.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests stop at the first failed step

use std::time::Duration;

use k8s_openapi::api::{
    apps::v1::{Deployment, ReplicaSet, StatefulSet},
    core::v1::{Node, Pod},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use sluice_sim::{
    api::{ApiServer, Options},
    cluster::{Cluster, ClusterOptions, engine::Share, profile::Profile},
};
use tokio_util::sync::CancellationToken;

struct Sim {
    client: Client,
    /// The controllers; they run while it is held.
    _cluster: Cluster,
    _stop: tokio_util::sync::DropGuard,
}

/// A cluster whose clock runs at `options.speed` times tokio's.
fn sim(options: ClusterOptions) -> Sim {
    let api = ApiServer::new(Options::tokio_clock(options.speed));
    let stop = CancellationToken::new();
    let cluster = Cluster::start(api.clone(), options, stop.clone()).unwrap();
    Sim {
        client: Client::new(api.router(), "default"),
        _cluster: cluster,
        _stop: stop.drop_guard(),
    }
}

fn deployment(name: &str, replicas: i32, image: &str, strategy: serde_json::Value) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas, "strategy": strategy,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "app", "image": image}]}}
        }
    }))
    .unwrap()
}

fn rolling(surge: i32, unavailable: i32) -> serde_json::Value {
    json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}})
}

/// Waits (in virtual time) until `done` holds, checking `invariant` at every step.
async fn until<F, I>(what: &str, mut done: F, mut invariant: I)
where
    F: AsyncFnMut() -> bool,
    I: AsyncFnMut(),
{
    for _ in 0..6000 {
        invariant().await;
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not reached within 10 virtual minutes");
}

async fn set_image(deployments: &Api<Deployment>, name: &str, image: &str) {
    let patch =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}});
    deployments
        .patch(name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .unwrap();
}

/// The image of a ReplicaSet's first container.
fn image_of(rs: &ReplicaSet) -> Option<&str> {
    let template = rs.spec.as_ref()?.template.as_ref()?;
    template.spec.as_ref()?.containers[0].image.as_deref()
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Exactly `n` pods, every one Ready.
async fn all_ready(pods: &Api<Pod>, n: usize) -> bool {
    let list = pods.list(&ListParams::default()).await.unwrap().items;
    list.len() == n && list.iter().all(ready)
}

/// Deployment `web` (image web:1) behind Service `web` (port 80 to 8080),
/// with the handles the endpoint tests read.
async fn web_behind_a_service(
    s: &Sim,
    replicas: i32,
    strategy: serde_json::Value,
) -> (Api<EndpointSlice>, Api<Pod>) {
    let deployments: Api<Deployment> = Api::default_namespaced(s.client.clone());
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::default_namespaced(s.client.clone());
    services.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}})).unwrap()).await.unwrap();
    deployments
        .create(
            &PostParams::default(),
            &deployment("web", replicas, "web:1", strategy),
        )
        .await
        .unwrap();
    (
        Api::default_namespaced(s.client.clone()),
        Api::default_namespaced(s.client.clone()),
    )
}

#[tokio::test(start_paused = true)]
async fn a_rolling_update_never_exceeds_surge_nor_drops_below_availability() {
    let s = sim(ClusterOptions::default());
    let deployments: Api<Deployment> = Api::default_namespaced(s.client.clone());
    let pods: Api<Pod> = Api::default_namespaced(s.client.clone());
    let rss: Api<ReplicaSet> = Api::default_namespaced(s.client.clone());
    deployments
        .create(
            &PostParams::default(),
            &deployment("web", 4, "web:1", rolling(1, 1)),
        )
        .await
        .unwrap();
    let settled = async || {
        let d = deployments.get("web").await.unwrap();
        let st = d.status.unwrap_or_default();
        st.ready_replicas == Some(4) && st.updated_replicas == Some(4) && st.replicas == Some(4)
    };
    until("first version ready", settled, async || {}).await;
    let first = deployments.get("web").await.unwrap();
    assert_eq!(
        first.metadata.annotations.unwrap()["deployment.kubernetes.io/revision"],
        "1"
    );

    set_image(&deployments, "web", "web:2").await;
    let bounds = async || {
        let all = pods.list(&ListParams::default()).await.unwrap().items;
        let live: Vec<&Pod> = all
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        assert!(
            live.len() <= 5,
            "more than replicas + maxSurge pods: {}",
            live.len()
        );
        let available = live.iter().filter(|p| ready(p)).count();
        assert!(
            available >= 3 || live.len() < 4,
            "fewer than replicas - maxUnavailable available: {available}"
        );
    };
    let rolled = async || {
        let d = deployments.get("web").await.unwrap();
        let st = d.status.unwrap_or_default();
        st.updated_replicas == Some(4) && st.ready_replicas == Some(4) && st.replicas == Some(4)
    };
    until("second version rolled out", rolled, bounds).await;
    let sets = rss.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(sets.len(), 2);
    let new = sets.iter().find(|r| image_of(r) == Some("web:2")).unwrap();
    let hash = &new.metadata.labels.as_ref().unwrap()["pod-template-hash"];
    assert_eq!(
        new.metadata.name.as_deref(),
        Some(format!("web-{hash}").as_str()),
        "named by pod-template-hash"
    );
    assert_eq!(
        new.metadata.annotations.as_ref().unwrap()["deployment.kubernetes.io/revision"],
        "2"
    );
    let old = sets
        .iter()
        .find(|r| r.metadata.name != new.metadata.name)
        .unwrap();
    assert_eq!(old.spec.as_ref().unwrap().replicas, Some(0));
    let d = deployments.get("web").await.unwrap();
    let progressing = d
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Progressing")
        .unwrap();
    assert_eq!(
        progressing.reason.as_deref(),
        Some("NewReplicaSetAvailable")
    );
}

#[tokio::test(start_paused = true)]
async fn pods_bound_to_the_nodes_of_every_kubelet_share_start_and_become_ready() {
    let s = sim(ClusterOptions {
        nodes: 8,
        node_capacity: 3,
        kubelet_shares: 3,
        ..ClusterOptions::default()
    });
    let deployments: Api<Deployment> = Api::default_namespaced(s.client.clone());
    let pods: Api<Pod> = Api::default_namespaced(s.client.clone());
    let web = deployment("web", 24, "web:1", rolling(1, 0));
    deployments
        .create(&PostParams::default(), &web)
        .await
        .unwrap();
    until(
        "all 24 ready",
        async || all_ready(&pods, 24).await,
        async || {},
    )
    .await;
    // The nodes are full: every share's kubelets took pods.
    let list = pods.list(&ListParams::default()).await.unwrap().items;
    let shares: std::collections::BTreeSet<u32> = list
        .iter()
        .map(|p| p.spec.as_ref().unwrap().node_name.clone().unwrap())
        .map(|node| {
            (0..3)
                .find(|&index| Share { index, of: 3 }.has_node(&node))
                .unwrap()
        })
        .collect();
    assert_eq!(shares.len(), 3, "pods on the nodes of every share");
}

#[tokio::test(start_paused = true)]
async fn rolling_back_to_an_old_template_reuses_its_replicaset_as_the_newest_revision() {
    let s = sim(ClusterOptions::default());
    let deployments: Api<Deployment> = Api::default_namespaced(s.client.clone());
    let rss: Api<ReplicaSet> = Api::default_namespaced(s.client.clone());
    let web = deployment("web", 2, "web:1", rolling(1, 0));
    deployments
        .create(&PostParams::default(), &web)
        .await
        .unwrap();
    let on = |image: &'static str| {
        let deployments = deployments.clone();
        let rss = rss.clone();
        async move || {
            let d = deployments.get("web").await.unwrap();
            let st = d.status.unwrap_or_default();
            let sets = rss.list(&ListParams::default()).await.unwrap().items;
            let current = sets.iter().find(|r| image_of(r) == Some(image));
            st.updated_replicas == Some(2)
                && st.ready_replicas == Some(2)
                && st.replicas == Some(2)
                && current.is_some_and(|r| r.status.as_ref().unwrap().ready_replicas == Some(2))
        }
    };
    until("first version ready", on("web:1"), async || {}).await;
    let first = rss.list(&ListParams::default()).await.unwrap().items[0].clone();
    set_image(&deployments, "web", "web:2").await;
    until("second version rolled out", on("web:2"), async || {}).await;
    set_image(&deployments, "web", "web:1").await;
    until("first version back", on("web:1"), async || {}).await;

    let sets = rss.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(
        sets.len(),
        2,
        "no third ReplicaSet for a template seen before"
    );
    let back = sets
        .iter()
        .find(|r| r.metadata.uid == first.metadata.uid)
        .expect("the first ReplicaSet is the new one again");
    assert_eq!(back.spec.as_ref().unwrap().replicas, Some(2));
    let revision = |annotations: Option<&std::collections::BTreeMap<String, String>>| {
        annotations.unwrap()["deployment.kubernetes.io/revision"].clone()
    };
    assert_eq!(revision(back.metadata.annotations.as_ref()), "3");
    let d = deployments.get("web").await.unwrap();
    assert_eq!(revision(d.metadata.annotations.as_ref()), "3");
    let other = sets
        .iter()
        .find(|r| r.metadata.uid != first.metadata.uid)
        .unwrap();
    assert_eq!(other.spec.as_ref().unwrap().replicas, Some(0));
}

#[tokio::test(start_paused = true)]
async fn recreate_removes_every_old_pod_before_the_first_new_one() {
    let s = sim(ClusterOptions::default());
    let deployments: Api<Deployment> = Api::default_namespaced(s.client.clone());
    let pods: Api<Pod> = Api::default_namespaced(s.client.clone());
    deployments
        .create(
            &PostParams::default(),
            &deployment("web", 3, "web:1", json!({"type": "Recreate"})),
        )
        .await
        .unwrap();
    until(
        "ready",
        async || {
            deployments
                .get("web")
                .await
                .unwrap()
                .status
                .unwrap_or_default()
                .ready_replicas
                == Some(3)
        },
        async || {},
    )
    .await;
    set_image(&deployments, "web", "web:2").await;
    let never_mixed = async || {
        let images: Vec<String> = pods
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|p| {
                p.spec.as_ref().unwrap().containers[0]
                    .image
                    .clone()
                    .unwrap()
            })
            .collect();
        assert!(
            !(images.iter().any(|i| i == "web:1") && images.iter().any(|i| i == "web:2")),
            "old and new pods together: {images:?}"
        );
    };
    let done = async || {
        let st = deployments
            .get("web")
            .await
            .unwrap()
            .status
            .unwrap_or_default();
        st.updated_replicas == Some(3) && st.ready_replicas == Some(3)
    };
    until("recreated", done, never_mixed).await;
}

#[tokio::test(start_paused = true)]
async fn a_paused_deployment_starts_no_rollout() {
    let s = sim(ClusterOptions::default());
    let deployments: Api<Deployment> = Api::default_namespaced(s.client.clone());
    let rss: Api<ReplicaSet> = Api::default_namespaced(s.client.clone());
    deployments
        .create(
            &PostParams::default(),
            &deployment("web", 2, "web:1", rolling(1, 0)),
        )
        .await
        .unwrap();
    until(
        "ready",
        async || {
            deployments
                .get("web")
                .await
                .unwrap()
                .status
                .unwrap_or_default()
                .ready_replicas
                == Some(2)
        },
        async || {},
    )
    .await;
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": true}})),
        )
        .await
        .unwrap();
    set_image(&deployments, "web", "web:2").await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(
        rss.list(&ListParams::default()).await.unwrap().items.len(),
        1,
        "no new ReplicaSet while paused"
    );
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": false}})),
        )
        .await
        .unwrap();
    until(
        "rolled after resume",
        async || {
            deployments
                .get("web")
                .await
                .unwrap()
                .status
                .unwrap_or_default()
                .updated_replicas
                == Some(2)
        },
        async || {},
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn at_ten_times_speed_the_progress_deadline_passes_ten_times_sooner() {
    let mut options = ClusterOptions {
        speed: 10.0,
        ..ClusterOptions::default()
    };
    options.profiles.by_image.insert(
        "web:broken".into(),
        Profile {
            never_ready: true,
            ..Profile::default()
        },
    );
    // The cluster's clock runs ten times faster than (virtual) real time.
    let s = sim(options);
    let deployments: Api<Deployment> = Api::default_namespaced(s.client.clone());
    let mut d = deployment("web", 1, "web:broken", rolling(1, 0));
    d.spec.as_mut().unwrap().progress_deadline_seconds = Some(600);
    deployments
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    let began = tokio::time::Instant::now();
    let exceeded = async || {
        deployments
            .get("web")
            .await
            .unwrap()
            .status
            .unwrap_or_default()
            .conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded"))
    };
    until("deadline exceeded", exceeded, async || {}).await;
    // 600 s on the cluster's clock is 60 s of real time, not 600.
    let waited = began.elapsed();
    assert!(
        waited >= Duration::from_secs(55) && waited < Duration::from_secs(90),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_crash_looping_version_misses_the_progress_deadline() {
    let mut options = ClusterOptions::default();
    options.profiles.by_image.insert(
        "web:broken".into(),
        Profile {
            crash_loop: true,
            ..Profile::default()
        },
    );
    let s = sim(options);
    let deployments: Api<Deployment> = Api::default_namespaced(s.client.clone());
    let pods: Api<Pod> = Api::default_namespaced(s.client.clone());
    let mut d = deployment("web", 2, "web:1", rolling(1, 0));
    d.spec.as_mut().unwrap().progress_deadline_seconds = Some(60);
    deployments
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    until(
        "ready",
        async || {
            deployments
                .get("web")
                .await
                .unwrap()
                .status
                .unwrap_or_default()
                .ready_replicas
                == Some(2)
        },
        async || {},
    )
    .await;
    set_image(&deployments, "web", "web:broken").await;
    let exceeded = async || {
        let d = deployments.get("web").await.unwrap();
        d.status
            .unwrap_or_default()
            .conditions
            .unwrap_or_default()
            .iter()
            .any(|c| {
                c.type_ == "Progressing"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
            })
    };
    until("deadline exceeded", exceeded, async || {}).await;
    let broken = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|p| p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some("web:broken"))
        .unwrap();
    let status = &broken.status.unwrap().container_statuses.unwrap()[0];
    assert!(status.restart_count >= 1, "restarts counted");
    assert_eq!(
        status
            .state
            .as_ref()
            .unwrap()
            .waiting
            .as_ref()
            .unwrap()
            .reason
            .as_deref(),
        Some("CrashLoopBackOff")
    );
    assert_eq!(
        deployments
            .get("web")
            .await
            .unwrap()
            .status
            .unwrap()
            .available_replicas,
        Some(2),
        "the old pods still serve"
    );
}

fn statefulset(replicas: i32, image: &str, partition: i32, policy: &str) -> StatefulSet {
    serde_json::from_value(json!({
        "metadata": {"name": "db"},
        "spec": {
            "replicas": replicas, "serviceName": "db", "podManagementPolicy": policy,
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": partition}},
            "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "app", "image": image}]}}
        }
    }))
    .unwrap()
}

async fn images(pods: &Api<Pod>) -> Vec<(String, String)> {
    let mut list: Vec<(String, String)> = pods
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
    list.sort();
    list
}

#[tokio::test(start_paused = true)]
async fn ordered_ready_creates_statefulset_pods_one_at_a_time_in_order() {
    let s = sim(ClusterOptions::default());
    let sets: Api<StatefulSet> = Api::default_namespaced(s.client.clone());
    let pods: Api<Pod> = Api::default_namespaced(s.client.clone());
    sets.create(
        &PostParams::default(),
        &statefulset(3, "db:1", 0, "OrderedReady"),
    )
    .await
    .unwrap();
    let one_unready_at_most = async || {
        let list = pods
            .list(&ListParams::default().labels("app=db"))
            .await
            .unwrap()
            .items;
        let unready = list.iter().filter(|p| !ready(p)).count();
        assert!(
            unready <= 1,
            "OrderedReady waits for each pod: {unready} not ready"
        );
        let mut ords: Vec<i32> = list
            .iter()
            .map(|p| {
                p.metadata
                    .name
                    .as_ref()
                    .unwrap()
                    .rsplit('-')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        ords.sort_unstable();
        assert_eq!(
            ords,
            (0..ords.len() as i32).collect::<Vec<_>>(),
            "ordinals in order"
        );
    };
    until(
        "three ready",
        async || {
            sets.get("db")
                .await
                .unwrap()
                .status
                .unwrap_or_default()
                .ready_replicas
                == Some(3)
        },
        one_unready_at_most,
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_partition_keeps_lower_ordinals_on_the_current_revision() {
    let s = sim(ClusterOptions::default());
    let sets: Api<StatefulSet> = Api::default_namespaced(s.client.clone());
    let pods: Api<Pod> = Api::default_namespaced(s.client.clone());
    sets.create(
        &PostParams::default(),
        &statefulset(4, "db:1", 2, "Parallel"),
    )
    .await
    .unwrap();
    until(
        "ready",
        async || {
            sets.get("db")
                .await
                .unwrap()
                .status
                .unwrap_or_default()
                .ready_replicas
                == Some(4)
        },
        async || {},
    )
    .await;
    let first = sets.get("db").await.unwrap().status.unwrap();
    let patch =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "db:2"}]}}}});
    sets.patch("db", &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .unwrap();
    let split = async || {
        let st = sets.get("db").await.unwrap().status.unwrap_or_default();
        st.updated_replicas == Some(2) && st.ready_replicas == Some(4)
    };
    until("partition honoured", split, async || {}).await;
    assert_eq!(
        images(&pods).await,
        [
            ("db-0".into(), "db:1".into()),
            ("db-1".into(), "db:1".into()),
            ("db-2".into(), "db:2".into()),
            ("db-3".into(), "db:2".into())
        ]
    );
    let mid = sets.get("db").await.unwrap().status.unwrap();
    assert_eq!(
        mid.current_revision, first.current_revision,
        "current revision stays while partitioned"
    );
    assert_ne!(mid.update_revision, first.update_revision);

    sets.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"updateStrategy": {"rollingUpdate": {"partition": 0}}}})),
    )
    .await
    .unwrap();
    let all = async || {
        let st = sets.get("db").await.unwrap().status.unwrap_or_default();
        st.updated_replicas == Some(4) && st.ready_replicas == Some(4)
    };
    until("all updated", all, async || {}).await;
    let done = sets.get("db").await.unwrap().status.unwrap();
    assert_eq!(
        done.current_revision, done.update_revision,
        "the update revision becomes current"
    );
}

#[tokio::test(start_paused = true)]
async fn endpoint_slices_list_ready_pods_and_node_loss_evicts() {
    let s = sim(ClusterOptions {
        nodes: 2,
        ..ClusterOptions::default()
    });
    let (slices, pods) = web_behind_a_service(&s, 4, rolling(1, 1)).await;
    let ready_endpoints = async || {
        slices.get_opt("web-sim").await.unwrap().is_some_and(|s| {
            s.endpoints
                .iter()
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
                .count()
                == 4
        })
    };
    until("four ready endpoints", ready_endpoints, async || {}).await;
    let slice = slices.get("web-sim").await.unwrap();
    assert_eq!(slice.ports.unwrap()[0].port, Some(8080));

    let nodes: Api<Node> = Api::all(s.client.clone());
    nodes
        .delete("sim-node-0", &DeleteParams::default())
        .await
        .unwrap();
    let moved = async || {
        let list = pods.list(&ListParams::default()).await.unwrap().items;
        list.len() == 4
            && list.iter().all(|p| {
                p.spec.as_ref().unwrap().node_name.as_deref() == Some("sim-node-1") && ready(p)
            })
    };
    until("pods moved to the remaining node", moved, async || {}).await;
}

#[tokio::test(start_paused = true)]
async fn a_deleted_pod_stops_within_its_grace_period_and_is_replaced_at_once() {
    let s = sim(ClusterOptions::default());
    let (slices, pods) = web_behind_a_service(&s, 2, rolling(1, 0)).await;
    until(
        "two ready pods",
        async || all_ready(&pods, 2).await,
        async || {},
    )
    .await;
    let victim = pods.list(&ListParams::default()).await.unwrap().items[0]
        .metadata
        .name
        .clone()
        .unwrap();

    // Deleted with the default grace: still there, marked, 30 s to stop.
    pods.delete(&victim, &DeleteParams::default())
        .await
        .unwrap();
    let marked = pods.get(&victim).await.unwrap();
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(marked.metadata.deletion_grace_period_seconds, Some(30));
    // A second delete changes nothing while it stops.
    pods.delete(&victim, &DeleteParams::default())
        .await
        .unwrap();
    assert!(pods.get_opt(&victim).await.unwrap().is_some());
    // Its endpoint says terminating, not ready, still serving; the
    // ReplicaSet does not count it and starts a replacement at once.
    let terminating = async || {
        slices.get_opt("web-sim").await.unwrap().is_some_and(|s| {
            s.endpoints.iter().any(|e| {
                e.target_ref.as_ref().and_then(|r| r.name.as_deref()) == Some(victim.as_str())
                    && e.conditions.as_ref().is_some_and(|c| {
                        c.terminating == Some(true)
                            && c.ready == Some(false)
                            && c.serving == Some(true)
                    })
            })
        })
    };
    until("a terminating endpoint", terminating, async || {}).await;
    let replaced = async || pods.list(&ListParams::default()).await.unwrap().items.len() == 3;
    until(
        "a replacement beside the stopping pod",
        replaced,
        async || {},
    )
    .await;
    // The version stops in a second (the default profile): gone then.
    let gone = async || pods.get_opt(&victim).await.unwrap().is_none();
    until("the stopped pod removed", gone, async || {}).await;

    // Grace 0 removes a pod at once.
    let other = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|p| p.metadata.deletion_timestamp.is_none())
        .and_then(|p| p.metadata.name)
        .unwrap();
    pods.delete(&other, &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    assert!(pods.get_opt(&other).await.unwrap().is_none());
}

#[tokio::test(start_paused = true)]
async fn a_pod_waiting_for_room_is_scheduled_when_a_pod_leaves_its_node() {
    // One node with room for two pods: the surge pod of a rolling update
    // waits until an old pod has stopped and gone.
    let s = sim(ClusterOptions {
        nodes: 1,
        node_capacity: 2,
        ..ClusterOptions::default()
    });
    let deployments: Api<Deployment> = Api::default_namespaced(s.client.clone());
    let pods: Api<Pod> = Api::default_namespaced(s.client.clone());
    deployments
        .create(
            &PostParams::default(),
            &deployment("web", 2, "web:1", rolling(1, 1)),
        )
        .await
        .unwrap();
    until(
        "two ready pods",
        async || all_ready(&pods, 2).await,
        async || {},
    )
    .await;
    set_image(&deployments, "web", "web:2").await;
    let rolled = async || {
        let list = pods.list(&ListParams::default()).await.unwrap().items;
        list.len() == 2
            && list.iter().all(|p| {
                ready(p) && p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some("web:2")
            })
    };
    until("both pods on web:2", rolled, async || {}).await;
}

#[tokio::test(start_paused = true)]
async fn a_named_target_port_is_the_port_the_pods_declare_under_that_name() {
    let s = sim(ClusterOptions::default());
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::default_namespaced(s.client.clone());
    services.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "api"}, "spec": {"selector": {"app": "api"}, "ports": [{"name": "http", "port": 80, "targetPort": "web"}, {"name": "admin", "port": 9000, "targetPort": "nowhere"}]}})).unwrap()).await.unwrap();
    let mut d = deployment("api", 2, "api:1", rolling(1, 0));
    d.spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .containers[0]
        .ports = Some(vec![
        serde_json::from_value(json!({"name": "web", "containerPort": 8443})).unwrap(),
    ]);
    Api::<Deployment>::default_namespaced(s.client.clone())
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    let slices: Api<EndpointSlice> = Api::default_namespaced(s.client.clone());
    let filled = async || {
        slices
            .get_opt("api-sim")
            .await
            .unwrap()
            .is_some_and(|s| s.endpoints.len() == 2)
    };
    until("two endpoints", filled, async || {}).await;
    let ports = slices.get("api-sim").await.unwrap().ports.unwrap();
    // The named port resolves to the container's 8443; a name no container
    // declares gives no port.
    assert_eq!(ports.len(), 1, "{ports:?}");
    assert_eq!(
        (ports[0].name.as_deref(), ports[0].port),
        (Some("http"), Some(8443))
    );
}

#[tokio::test(start_paused = true)]
async fn pods_and_daemonsets_go_only_where_selectors_affinity_and_taints_allow() {
    let s = sim(ClusterOptions {
        nodes: 3,
        node_capacity: 10,
        ..ClusterOptions::default()
    });
    let nodes: Api<Node> = Api::all(s.client.clone());
    // sim-node-0: pool=web; sim-node-1: pool=gpu, tainted; sim-node-2: pool=web, spot (a soft taint).
    for (name, patch) in [
        (
            "sim-node-0",
            json!({"metadata": {"labels": {"pool": "web"}}}),
        ),
        (
            "sim-node-1",
            json!({"metadata": {"labels": {"pool": "gpu"}},
            "spec": {"taints": [{"key": "dedicated", "value": "ml", "effect": "NoSchedule"}]}}),
        ),
        (
            "sim-node-2",
            json!({"metadata": {"labels": {"pool": "web"}},
            "spec": {"taints": [{"key": "spot", "effect": "PreferNoSchedule"}]}}),
        ),
    ] {
        nodes
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .unwrap();
    }
    let deployments: Api<Deployment> = Api::default_namespaced(s.client.clone());
    let pods: Api<Pod> = Api::default_namespaced(s.client.clone());
    let node_of = |p: &Pod| {
        p.spec
            .as_ref()
            .unwrap()
            .node_name
            .clone()
            .unwrap_or_default()
    };
    let mut any = deployment("any", 6, "web:1", rolling(1, 0));
    any.spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .tolerations = None;
    deployments
        .create(&PostParams::default(), &any)
        .await
        .unwrap();
    let mut ml = deployment("ml", 2, "ml:1", rolling(1, 0));
    let spec = ml.spec.as_mut().unwrap().template.spec.as_mut().unwrap();
    spec.node_selector = Some([("pool".to_owned(), "gpu".to_owned())].into());
    spec.tolerations =
        Some(vec![serde_json::from_value(
        json!({"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}),
    )
    .unwrap()]);
    deployments
        .create(&PostParams::default(), &ml)
        .await
        .unwrap();
    let mut nowhere = deployment("nowhere", 1, "web:1", rolling(1, 0));
    let spec = nowhere
        .spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap();
    spec.affinity = Some(serde_json::from_value(json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
        {"nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["db"]}]}]}}}))
    .unwrap());
    deployments
        .create(&PostParams::default(), &nowhere)
        .await
        .unwrap();
    let daemons: Api<k8s_openapi::api::apps::v1::DaemonSet> =
        Api::default_namespaced(s.client.clone());
    let agent = |name: &str, selector: Option<serde_json::Value>| {
        serde_json::from_value::<k8s_openapi::api::apps::v1::DaemonSet>(json!({
            "metadata": {"name": name},
            "spec": {"selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}},
                    "spec": {"nodeSelector": selector, "containers": [{"name": "agent", "image": "agent:1"}]}}}
        }))
        .unwrap()
    };
    daemons
        .create(&PostParams::default(), &agent("logs", None))
        .await
        .unwrap();
    daemons
        .create(
            &PostParams::default(),
            &agent("web-agent", Some(json!({"pool": "web"}))),
        )
        .await
        .unwrap();
    let ready_count = async || {
        let list = pods.list(&ListParams::default()).await.unwrap().items;
        list.iter().filter(|p| ready(p)).count()
    };
    until(
        "every placeable pod ready",
        async || ready_count().await == 6 + 2 + 2 + 2,
        async || {},
    )
    .await;
    let all = pods.list(&ListParams::default()).await.unwrap().items;
    let on = |app: &str| {
        let mut nodes: Vec<String> = all
            .iter()
            .filter(|p| p.metadata.labels.as_ref().unwrap()["app"] == app)
            .map(node_of)
            .collect();
        nodes.sort();
        nodes
    };
    assert!(
        on("any").iter().all(|n| n != "sim-node-1"),
        "an intolerant pod stays off the tainted node: {:?}",
        on("any")
    );
    assert_eq!(on("ml"), ["sim-node-1", "sim-node-1"]);
    assert_eq!(on("web-agent"), ["sim-node-0", "sim-node-2"]);
    assert_eq!(
        on("logs"),
        ["sim-node-0", "sim-node-2"],
        "a NoSchedule taint keeps a DaemonSet off too"
    );
    let waiting = all
        .iter()
        .find(|p| p.metadata.labels.as_ref().unwrap()["app"] == "nowhere")
        .unwrap();
    assert_eq!(node_of(waiting), "");
    let condition = &waiting
        .status
        .as_ref()
        .unwrap()
        .conditions
        .as_ref()
        .unwrap()[0];
    assert_eq!(condition.reason.as_deref(), Some("Unschedulable"));
    assert!(
        condition
            .message
            .as_deref()
            .unwrap()
            .starts_with("0/3 nodes are available"),
        "{condition:?}"
    );
    let logs = daemons.get("logs").await.unwrap().status.unwrap();
    assert_eq!((logs.desired_number_scheduled, logs.number_ready), (2, 2));
    // A node labelled into the pool gets the web agent; untainting the gpu
    // node lets the logs agent on.
    nodes
        .patch(
            "sim-node-1",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"labels": {"pool": "web"}}, "spec": {"taints": null}}),
            ),
        )
        .await
        .unwrap();
    until(
        "agents on the relabelled node",
        async || ready_count().await == 6 + 2 + 3 + 3,
        async || {},
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn the_built_in_controllers_record_events_as_kubectl_describe_reads_them_and_they_expire() {
    let s = sim(ClusterOptions {
        nodes: 2,
        node_capacity: 4,
        ..ClusterOptions::default()
    });
    let deployments: Api<Deployment> = Api::default_namespaced(s.client.clone());
    let pods: Api<Pod> = Api::default_namespaced(s.client.clone());
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::default_namespaced(s.client.clone());
    let web = deployment("web", 2, "web:1", rolling(1, 0));
    let created = deployments
        .create(&PostParams::default(), &web)
        .await
        .unwrap();
    until("2 ready", async || all_ready(&pods, 2).await, async || {}).await;
    // kubectl describe finds an object's Events by kind, name and uid.
    let about = |kind: &str, name: &str, uid: &str| {
        ListParams::default().fields(&format!(
            "involvedObject.kind={kind},involvedObject.name={name},involvedObject.uid={uid}"
        ))
    };
    let reasons = async |params: ListParams| -> Vec<(String, String, String)> {
        events
            .list(&params)
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|e| {
                (
                    e.type_.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    e.message.unwrap_or_default(),
                )
            })
            .collect()
    };
    let on_deployment = reasons(about(
        "Deployment",
        "web",
        created.metadata.uid.as_deref().unwrap(),
    ))
    .await;
    assert_eq!(on_deployment.len(), 1, "{on_deployment:?}");
    assert_eq!(on_deployment[0].1, "ScalingReplicaSet");
    assert!(
        on_deployment[0].2.starts_with("Scaled up replica set web-")
            && on_deployment[0].2.ends_with(" from 0 to 2"),
        "{on_deployment:?}"
    );
    let rs: Api<ReplicaSet> = Api::default_namespaced(s.client.clone());
    let set = rs
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .remove(0);
    let on_set = reasons(about(
        "ReplicaSet",
        &set.metadata.name.clone().unwrap(),
        set.metadata.uid.as_deref().unwrap(),
    ))
    .await;
    let pod_list = pods.list(&ListParams::default()).await.unwrap().items;
    let mut expected: Vec<String> = pod_list
        .iter()
        .map(|p| format!("Created pod: {}", p.metadata.name.clone().unwrap()))
        .collect();
    expected.sort();
    let mut made: Vec<String> = on_set.iter().map(|(_, _, m)| m.clone()).collect();
    made.sort();
    assert_eq!(made, expected);
    let pod = &pod_list[0];
    let on_pod = reasons(about(
        "Pod",
        &pod.metadata.name.clone().unwrap(),
        pod.metadata.uid.as_deref().unwrap(),
    ))
    .await;
    // The scheduler's, then the kubelet's, in order, as kubectl describe
    // pod lists them.
    let normal = |reason: &str, message: String| ("Normal".to_owned(), reason.to_owned(), message);
    assert_eq!(
        on_pod,
        [
            normal(
                "Scheduled",
                format!(
                    "Successfully assigned default/{} to {}",
                    pod.metadata.name.clone().unwrap(),
                    pod.spec.as_ref().unwrap().node_name.clone().unwrap()
                )
            ),
            normal(
                "Pulled",
                "Container image \"web:1\" already present on machine".to_owned()
            ),
            normal("Created", "Created container: app".to_owned()),
            normal("Started", "Started container app".to_owned()),
        ]
    );
    // A pod no node has room for: one Warning, however often it is tried.
    let big = deployment("big", 9, "web:1", rolling(1, 0));
    deployments
        .create(&PostParams::default(), &big)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let warnings: Vec<_> = reasons(ListParams::default().fields("reason=FailedScheduling"))
        .await
        .into_iter()
        .collect();
    assert_eq!(
        warnings.len(),
        3,
        "one per pod left without a node: {warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .all(|(kind, _, m)| kind == "Warning" && m.starts_with("0/2 nodes are available"))
    );
    // Scaled down: the ReplicaSet deletes pods and says so.
    deployments
        .patch(
            "big",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let deleted = reasons(ListParams::default().fields("reason=SuccessfulDelete")).await;
    assert_eq!(deleted.len(), 8, "{deleted:?}");
    // The kubelet stops the containers of the deleted pods that had a node.
    let killed = reasons(ListParams::default().fields("reason=Killing")).await;
    assert_eq!(killed.len(), 5, "{killed:?}");
    assert!(
        killed
            .iter()
            .all(|(kind, _, m)| kind == "Normal" && m == "Stopping container app"),
        "{killed:?}"
    );
    // An hour on, they are gone, as kube-apiserver's event TTL removes them.
    tokio::time::sleep(Duration::from_secs(3600 + 120)).await;
    let left = events.list(&ListParams::default()).await.unwrap().items;
    assert!(left.is_empty(), "{} events left", left.len());
}

#[tokio::test(start_paused = true)]
async fn pods_run_under_their_service_account_and_wait_for_a_missing_one() {
    use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, ServiceAccount};
    let s = sim(ClusterOptions::default());
    let namespaces: Api<Namespace> = Api::all(s.client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "shop"}})).unwrap(),
        )
        .await
        .unwrap();
    // Each namespace gets its default account and the CA's ConfigMap, and
    // gets them back when they are removed.
    let accounts: Api<ServiceAccount> = Api::namespaced(s.client.clone(), "shop");
    let maps: Api<ConfigMap> = Api::namespaced(s.client.clone(), "shop");
    let present = async || {
        accounts.get_opt("default").await.unwrap().is_some()
            && maps.get_opt("kube-root-ca.crt").await.unwrap().is_some()
    };
    until("the namespace's account and CA", present, async || {}).await;
    accounts
        .delete("default", &DeleteParams::default())
        .await
        .unwrap();
    maps.delete("kube-root-ca.crt", &DeleteParams::default())
        .await
        .unwrap();
    until("both made again", present, async || {}).await;

    // A Deployment whose account is missing makes no pod, and says why.
    let deployments: Api<Deployment> = Api::namespaced(s.client.clone(), "shop");
    let mut web = deployment("web", 2, "registry.example/web:1.0", rolling(1, 0));
    let spec = web.spec.as_mut().unwrap().template.spec.as_mut().unwrap();
    spec.service_account_name = Some("web".to_owned());
    deployments
        .create(&PostParams::default(), &web)
        .await
        .unwrap();
    let events: Api<Event> = Api::namespaced(s.client.clone(), "shop");
    until(
        "a FailedCreate naming the account",
        async || {
            events
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some("FailedCreate")
                        && e.message.as_deref().is_some_and(|m| {
                            m.contains("error looking up service account shop/web")
                        })
                })
        },
        async || {},
    )
    .await;
    // It tries again, and the repeats are counted on one Event, as
    // client-go's recorder aggregates them.
    until(
        "the repeats counted on one Event",
        async || {
            let failed: Vec<_> = events
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some("FailedCreate"))
                .collect();
            failed.len() == 1 && failed[0].count.is_some_and(|n| n >= 3)
        },
        async || {},
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), "shop");
    assert!(
        pods.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    // Its ReplicaSet says so too, as kube-controller-manager's does: a
    // `ReplicaFailure` condition with the error, kept as first seen.
    let sets: Api<ReplicaSet> = Api::namespaced(s.client.clone(), "shop");
    let failure = || {
        let sets = sets.clone();
        async move {
            sets.list(&ListParams::default())
                .await
                .unwrap()
                .items
                .first()
                .and_then(|rs| rs.status.clone())
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.type_ == "ReplicaFailure")
        }
    };
    let first = failure().await.expect("a ReplicaFailure condition");
    assert_eq!(
        (first.status.as_str(), first.reason.as_deref()),
        ("True", Some("FailedCreate"))
    );
    assert!(
        first
            .message
            .as_deref()
            .is_some_and(|m| m.contains("error looking up service account shop/web")),
        "{first:?}"
    );
    assert!(first.last_transition_time.is_some());
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(failure().await, Some(first), "kept as first seen");

    // Once it exists, the pods come, under it, with its token mounted.
    accounts
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "web"}})).unwrap(),
        )
        .await
        .unwrap();
    until(
        "both pods ready",
        async || all_ready(&pods, 2).await,
        async || {},
    )
    .await;
    assert_eq!(failure().await, None, "the condition goes with the failure");
    for pod in pods.list(&ListParams::default()).await.unwrap().items {
        let spec = pod.spec.unwrap();
        assert_eq!(spec.service_account_name.as_deref(), Some("web"));
        let volume = &spec.volumes.unwrap()[0];
        assert!(volume.name.starts_with("kube-api-access-"), "{volume:?}");
        let mounts = spec.containers[0].volume_mounts.clone().unwrap();
        assert_eq!(mounts[0].name, volume.name);
        assert_eq!(
            mounts[0].mount_path,
            "/var/run/secrets/kubernetes.io/serviceaccount"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_pod_is_placed_only_where_its_requests_fit() {
    let s = sim(ClusterOptions {
        nodes: 1,
        ..ClusterOptions::default()
    });
    let pods: Api<Pod> = Api::default_namespaced(s.client.clone());
    let asking = |name: &str, cpu: &str, memory: &str| -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"containers": [{
            "name": "app", "image": "app:1",
            "resources": {"requests": {"cpu": cpu, "memory": memory}}}]}}))
        .unwrap()
    };
    let node_of = async |name: &str| {
        pods.get(name)
            .await
            .unwrap()
            .spec
            .unwrap()
            .node_name
            .filter(|n| !n.is_empty())
    };
    // The node gives 16 CPUs and 64Gi.
    pods.create(&PostParams::default(), &asking("big", "10", "1Gi"))
        .await
        .unwrap();
    until(
        "the first placed",
        async || node_of("big").await.is_some(),
        async || {},
    )
    .await;
    pods.create(&PostParams::default(), &asking("second", "8000m", "1Gi"))
        .await
        .unwrap();
    pods.create(
        &PostParams::default(),
        &asking("huge", "1", "99999999999999999999999999999Ei"),
    )
    .await
    .unwrap();
    let pending = async |name: &str| {
        let pod = pods.get(name).await.unwrap();
        pod.status
            .and_then(|s| s.conditions)
            .into_iter()
            .flatten()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")
            .and_then(|c| c.message)
    };
    until(
        "both refused for want of room",
        async || {
            pending("second")
                .await
                .is_some_and(|m| m.contains("1 Insufficient cpu"))
                && pending("huge")
                    .await
                    .is_some_and(|m| m.contains("1 Insufficient memory"))
        },
        async || {},
    )
    .await;
    // Once the first goes, the second fits.
    pods.delete("big", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    until(
        "the second placed",
        async || node_of("second").await.is_some(),
        async || {},
    )
    .await;
    assert_eq!(node_of("huge").await, None);
}

#[tokio::test(start_paused = true)]
async fn a_cluster_role_aggregates_the_rules_of_the_roles_its_selectors_match() {
    use k8s_openapi::api::rbac::v1::ClusterRole;
    let s = sim(ClusterOptions::default());
    let roles: Api<ClusterRole> = Api::all(s.client.clone());
    let role = |value: serde_json::Value| -> ClusterRole { serde_json::from_value(value).unwrap() };
    roles
        .create(
            &PostParams::default(),
            &role(json!({"metadata": {"name": "monitoring"}, "aggregationRule": {"clusterRoleSelectors": [
                {"matchLabels": {"example.com/aggregate-to-monitoring": "true"}}]}})),
        )
        .await
        .unwrap();
    let child = |name: &str, resource: &str| {
        role(
            json!({"metadata": {"name": name, "labels": {"example.com/aggregate-to-monitoring": "true"}},
            "rules": [{"apiGroups": [""], "resources": [resource], "verbs": ["get", "list"]}]}),
        )
    };
    roles
        .create(&PostParams::default(), &child("pods-reader", "pods"))
        .await
        .unwrap();
    roles
        .create(&PostParams::default(), &child("nodes-reader", "nodes"))
        .await
        .unwrap();
    let resources = async || -> Vec<String> {
        roles
            .get("monitoring")
            .await
            .unwrap()
            .rules
            .unwrap_or_default()
            .into_iter()
            .flat_map(|r| r.resources.unwrap_or_default())
            .collect()
    };
    // By the children's names: nodes-reader's rule first.
    until(
        "both children's rules",
        async || resources().await == ["nodes", "pods"],
        async || {},
    )
    .await;
    roles
        .patch(
            "nodes-reader",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"labels": {"example.com/aggregate-to-monitoring": null}}}),
            ),
        )
        .await
        .unwrap();
    until(
        "a child that leaves takes its rules",
        async || resources().await == ["pods"],
        async || {},
    )
    .await;
}

/// kube-controller-manager copies a Deployment's annotations onto its new
/// ReplicaSet (a change-cause, which `kubectl rollout history` shows; the
/// marks of tools that hold the Deployment), also while it is paused, but
/// never its own bookkeeping nor kubectl's last applied configuration, and
/// never removes one: nor does this one.
#[tokio::test(start_paused = true)]
async fn a_deployments_annotations_are_copied_onto_its_new_replicaset() {
    let s = sim(ClusterOptions::default());
    let deployments: Api<Deployment> = Api::default_namespaced(s.client.clone());
    let rss: Api<ReplicaSet> = Api::default_namespaced(s.client.clone());
    let mut d = deployment("web", 2, "web:1", rolling(1, 0));
    d.metadata.annotations = Some(
        [
            ("kubernetes.io/change-cause", "first"),
            (
                "kubectl.kubernetes.io/last-applied-configuration",
                "{\"kind\":\"Deployment\"}",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
    );
    deployments
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    let annotations_of = |image: &'static str| {
        let rss = rss.clone();
        async move {
            rss.list(&ListParams::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .find(|rs| image_of(rs) == Some(image))
                .and_then(|rs| rs.metadata.annotations)
                .unwrap_or_default()
        }
    };
    let annotation = |image: &'static str, key: &'static str| {
        let of = annotations_of(image);
        async move { of.await.get(key).cloned() }
    };
    until(
        "the first ReplicaSet",
        async || !annotations_of("web:1").await.is_empty(),
        async || {},
    )
    .await;
    let first = annotations_of("web:1").await;
    assert_eq!(
        first.get("kubernetes.io/change-cause").map(String::as_str),
        Some("first")
    );
    assert!(!first.contains_key("kubectl.kubernetes.io/last-applied-configuration"));
    assert_eq!(
        first
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("1")
    );
    let annotate = |patch: serde_json::Value| {
        let deployments = deployments.clone();
        async move {
            deployments
                .patch(
                    "web",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"annotations": patch}})),
                )
                .await
                .unwrap();
        }
    };
    // A new version with its own cause, in one write: the old set keeps
    // the old one (a cause written first would reach the old set too, as
    // it is the new one until the template changes).
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(json!({
                "metadata": {"annotations": {"kubernetes.io/change-cause": "second"}},
                "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "web:2"}]}}}
            })),
        )
        .await
        .unwrap();
    until(
        "the second ReplicaSet's cause",
        async || {
            annotation("web:2", "kubernetes.io/change-cause")
                .await
                .as_deref()
                == Some("second")
        },
        async || {},
    )
    .await;
    assert_eq!(
        annotation("web:1", "kubernetes.io/change-cause")
            .await
            .as_deref(),
        Some("first")
    );
    // Paused, an annotation added reaches the new set; one taken off the
    // Deployment stays on it.
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": true}})),
        )
        .await
        .unwrap();
    annotate(json!({"example.com/held-by": "a-tool"})).await;
    until(
        "the mark copied while paused",
        async || annotation("web:2", "example.com/held-by").await.as_deref() == Some("a-tool"),
        async || {},
    )
    .await;
    annotate(json!({"example.com/held-by": null})).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        annotation("web:2", "example.com/held-by").await.as_deref(),
        Some("a-tool")
    );
}
