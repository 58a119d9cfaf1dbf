//! kube-rs clients against the simulated API server, in process: the same
//! `Api`, `watcher` and `reflector` the executor uses against real clusters.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests stop at the first failed step

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Namespace, Pod},
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy},
    runtime::{WatchStreamExt, reflector, watcher},
};
use serde_json::json;
use sluice_sim::api::{ApiServer, Options};

fn cluster() -> (ApiServer, Client) {
    let api = ApiServer::new(Options::default());
    let client = Client::new(api.router(), "default");
    (api, client)
}

fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "app", "image": "app:1"}]}}
        }
    }))
    .unwrap()
}

fn config_map(name: &str) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": {"team": "a"}}, "data": {"k": "v"}}),
    )
    .unwrap()
}

fn status_code(error: &kube::Error) -> u16 {
    match error {
        kube::Error::Api(status) => status.code,
        other => panic!("not an API error: {other:?}"),
    }
}

#[tokio::test]
async fn objects_get_identity_defaults_and_a_global_resource_version() {
    let (_, client) = cluster();
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let created = deployments
        .create(&PostParams::default(), &deployment("web", 3))
        .await
        .unwrap();
    let meta = &created.metadata;
    assert!(meta.uid.is_some() && meta.creation_timestamp.is_some());
    assert_eq!(meta.generation, Some(1));
    let spec = created.spec.unwrap();
    assert_eq!(spec.progress_deadline_seconds, Some(600));
    assert_eq!(
        spec.strategy.unwrap().type_.as_deref(),
        Some("RollingUpdate")
    );

    let maps: Api<ConfigMap> = Api::default_namespaced(client);
    let map = maps
        .create(&PostParams::default(), &config_map("settings"))
        .await
        .unwrap();
    let rv = |v: &Option<String>| v.as_ref().unwrap().parse::<u64>().unwrap();
    assert!(
        rv(&map.metadata.resource_version) > rv(&meta.resource_version),
        "one counter across resources"
    );

    let again = deployments
        .create(&PostParams::default(), &deployment("web", 3))
        .await
        .unwrap_err();
    assert_eq!(status_code(&again), 409);
}

#[tokio::test]
async fn generation_moves_on_spec_changes_only() {
    let (_, client) = cluster();
    let deployments: Api<Deployment> = Api::default_namespaced(client);
    deployments
        .create(&PostParams::default(), &deployment("web", 3))
        .await
        .unwrap();
    let labelled = deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(labelled.metadata.generation, Some(1));
    let status = deployments
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 3}})),
        )
        .await
        .unwrap();
    assert_eq!(status.metadata.generation, Some(1));
    let scaled = deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await
        .unwrap();
    assert_eq!(scaled.metadata.generation, Some(2));
    assert_eq!(
        scaled.status.unwrap().replicas,
        Some(3),
        "a main-resource write keeps the status"
    );
}

#[tokio::test]
async fn stale_updates_conflict_and_fresh_ones_win() {
    let (_, client) = cluster();
    let deployments: Api<Deployment> = Api::default_namespaced(client);
    let created = deployments
        .create(&PostParams::default(), &deployment("web", 3))
        .await
        .unwrap();
    let mut fresh = created.clone();
    fresh.spec.as_mut().unwrap().replicas = Some(4);
    deployments
        .replace("web", &PostParams::default(), &fresh)
        .await
        .unwrap();
    let mut stale = created;
    stale.spec.as_mut().unwrap().replicas = Some(9);
    let conflict = deployments
        .replace("web", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert_eq!(status_code(&conflict), 409);
    assert_eq!(
        deployments.get("web").await.unwrap().spec.unwrap().replicas,
        Some(4)
    );
}

#[tokio::test]
async fn every_patch_type_works() {
    let (_, client) = cluster();
    let deployments: Api<Deployment> = Api::default_namespaced(client);
    deployments
        .create(&PostParams::default(), &deployment("web", 3))
        .await
        .unwrap();
    let strategic = json!({"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": "proxy:1"}]}}}});
    let d = deployments
        .patch("web", &PatchParams::default(), &Patch::Strategic(strategic))
        .await
        .unwrap();
    let names: Vec<String> = d
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .containers
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["app", "sidecar"], "strategic merge adds by name");

    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/spec/replicas", "value": 3},
        {"op": "replace", "path": "/spec/replicas", "value": 2}
    ]))
    .unwrap();
    let d = deployments
        .patch("web", &PatchParams::default(), &Patch::<()>::Json(ops))
        .await
        .unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(2));

    let applied = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api"},
        "spec": {"selector": {"matchLabels": {"app": "api"}}, "template": {"metadata": {"labels": {"app": "api"}}, "spec": {"containers": [{"name": "api", "image": "api:1"}]}}}});
    let params = PatchParams::apply("sluice").force();
    let created = deployments
        .patch("api", &params, &Patch::Apply(applied))
        .await
        .unwrap();
    assert_eq!(
        created.spec.unwrap().replicas,
        Some(1),
        "apply creates, with defaults"
    );
}

#[tokio::test]
async fn generate_name_makes_unique_names() {
    let (_, client) = cluster();
    let maps: Api<ConfigMap> = Api::default_namespaced(client);
    let mut map = config_map("");
    map.metadata.name = None;
    map.metadata.generate_name = Some("run-".into());
    let a = maps
        .create(&PostParams::default(), &map)
        .await
        .unwrap()
        .metadata
        .name
        .unwrap();
    let b = maps
        .create(&PostParams::default(), &map)
        .await
        .unwrap()
        .metadata
        .name
        .unwrap();
    assert!(a.starts_with("run-") && a.len() == 9 && a != b, "{a} {b}");
}

#[tokio::test]
async fn selectors_and_pages() {
    let (_, client) = cluster();
    let maps: Api<ConfigMap> = Api::default_namespaced(client);
    for i in 0..7 {
        let mut m = config_map(&format!("m{i}"));
        if i % 2 == 0 {
            m.metadata.labels = Some([("team".to_owned(), "b".to_owned())].into());
        }
        maps.create(&PostParams::default(), &m).await.unwrap();
    }
    let b = maps
        .list(&ListParams::default().labels("team=b"))
        .await
        .unwrap();
    assert_eq!(b.items.len(), 4);
    let by_name = maps
        .list(&ListParams::default().fields("metadata.name=m3"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);

    let mut seen = Vec::new();
    let mut params = ListParams::default().limit(3);
    loop {
        let page = maps.list(&params).await.unwrap();
        seen.extend(page.items.into_iter().map(|m| m.metadata.name.unwrap()));
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => break,
        }
    }
    assert_eq!(seen, ["m0", "m1", "m2", "m3", "m4", "m5", "m6"]);
}

#[tokio::test]
async fn a_change_made_while_a_client_pages_reaches_its_watch() {
    use futures::StreamExt;
    let (_, client) = cluster();
    let maps: Api<ConfigMap> = Api::default_namespaced(client);
    for i in 0..4 {
        maps.create(&PostParams::default(), &config_map(&format!("m{i}")))
            .await
            .unwrap();
    }
    let first = maps.list(&ListParams::default().limit(2)).await.unwrap();
    // m0 changes after its page was served.
    let mut changed = config_map("m0");
    changed.data = Some([("k".to_owned(), "v2".to_owned())].into());
    maps.replace("m0", &PostParams::default(), &changed)
        .await
        .unwrap();
    let token = first.metadata.continue_.clone().unwrap();
    let second = maps
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(
        second.metadata.resource_version, first.metadata.resource_version,
        "every page reports the first page's resourceVersion"
    );
    // Watching from there replays the change the pages missed.
    let rv = second.metadata.resource_version.unwrap();
    let mut events = maps
        .watch(&kube::api::WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match events.next().await.unwrap().unwrap() {
        kube::api::WatchEvent::Modified(m) => {
            assert_eq!(m.metadata.name.as_deref(), Some("m0"));
            assert_eq!(m.data.unwrap()["k"], "v2");
        }
        other => panic!("expected m0 modified, got {other:?}"),
    }
}

#[tokio::test]
async fn deleting_an_owner_deletes_its_dependents() {
    let (_, client) = cluster();
    let maps: Api<ConfigMap> = Api::default_namespaced(client.clone());
    for policy in [
        PropagationPolicy::Background,
        PropagationPolicy::Foreground,
        PropagationPolicy::Orphan,
    ] {
        let owner = maps
            .create(&PostParams::default(), &config_map("owner"))
            .await
            .unwrap();
        let mut child = config_map("child");
        child.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                name: "owner".into(),
                uid: owner.metadata.uid.clone().unwrap(),
                ..Default::default()
            },
        ]);
        maps.create(&PostParams::default(), &child).await.unwrap();
        let params = DeleteParams {
            propagation_policy: Some(policy.clone()),
            ..Default::default()
        };
        maps.delete("owner", &params).await.unwrap();
        assert!(
            maps.get_opt("owner").await.unwrap().is_none(),
            "{policy:?}: owner gone"
        );
        let child = maps.get_opt("child").await.unwrap();
        match policy {
            PropagationPolicy::Orphan => {
                let child = child.expect("an orphaned child stays");
                // Its last owner gone, the emptied list goes too, as
                // kube-apiserver stores it.
                assert_eq!(child.metadata.owner_references, None);
                maps.delete("child", &DeleteParams::default())
                    .await
                    .unwrap();
            }
            _ => assert!(child.is_none(), "{policy:?}: child deleted"),
        }
    }
}

#[tokio::test]
async fn finalizers_hold_an_object_until_they_are_removed() {
    let (_, client) = cluster();
    let maps: Api<ConfigMap> = Api::default_namespaced(client);
    let mut m = config_map("held");
    m.metadata.finalizers = Some(vec!["sluice.dev/cleanup".into()]);
    maps.create(&PostParams::default(), &m).await.unwrap();
    maps.delete("held", &DeleteParams::default()).await.unwrap();
    let pending = maps.get("held").await.unwrap();
    assert!(pending.metadata.deletion_timestamp.is_some());
    maps.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(maps.get_opt("held").await.unwrap().is_none());
}

#[tokio::test]
async fn deleting_a_namespace_deletes_what_is_in_it() {
    let (_, client) = cluster();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "team"}})).unwrap(),
        )
        .await
        .unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "team");
    maps.create(&PostParams::default(), &config_map("a"))
        .await
        .unwrap();
    let missing: Api<ConfigMap> = Api::namespaced(client, "nowhere");
    assert_eq!(
        status_code(
            &missing
                .create(&PostParams::default(), &config_map("a"))
                .await
                .unwrap_err()
        ),
        404
    );
    namespaces
        .delete("team", &DeleteParams::default())
        .await
        .unwrap();
    assert!(maps.get_opt("a").await.unwrap().is_none());
    assert!(namespaces.get_opt("team").await.unwrap().is_none());
}

#[tokio::test]
async fn status_and_scale_subresources() {
    let (_, client) = cluster();
    let deployments: Api<Deployment> = Api::default_namespaced(client);
    deployments
        .create(&PostParams::default(), &deployment("web", 3))
        .await
        .unwrap();
    let scale = deployments.get_scale("web").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(3));
    assert_eq!(scale.status.unwrap().selector.as_deref(), Some("app=web"));
    deployments
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 7}})),
        )
        .await
        .unwrap();
    assert_eq!(
        deployments.get("web").await.unwrap().spec.unwrap().replicas,
        Some(7)
    );
    // A status write ignores the spec.
    let status = json!({"spec": {"replicas": 1}, "status": {"readyReplicas": 2}});
    let d = deployments
        .patch_status("web", &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(7));
    assert_eq!(d.status.unwrap().ready_replicas, Some(2));
}

#[tokio::test]
async fn watcher_and_reflector_follow_every_change() {
    let (_, client) = cluster();
    let maps: Api<ConfigMap> = Api::default_namespaced(client.clone());
    maps.create(&PostParams::default(), &config_map("first"))
        .await
        .unwrap();
    let (reader, writer) = reflector::store();
    let stream =
        reflector(writer, watcher(maps.clone(), watcher::Config::default())).applied_objects();
    let mut stream = Box::pin(stream);
    assert_eq!(
        stream
            .try_next()
            .await
            .unwrap()
            .unwrap()
            .metadata
            .name
            .as_deref(),
        Some("first")
    );
    maps.create(&PostParams::default(), &config_map("second"))
        .await
        .unwrap();
    assert_eq!(
        stream
            .try_next()
            .await
            .unwrap()
            .unwrap()
            .metadata
            .name
            .as_deref(),
        Some("second")
    );
    maps.patch(
        "first",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "changed"}})),
    )
    .await
    .unwrap();
    let changed = stream.try_next().await.unwrap().unwrap();
    assert_eq!(changed.data.unwrap()["k"], "changed");
    maps.delete("second", &DeleteParams::default())
        .await
        .unwrap();
    maps.create(&PostParams::default(), &config_map("third"))
        .await
        .unwrap();
    assert_eq!(
        stream
            .try_next()
            .await
            .unwrap()
            .unwrap()
            .metadata
            .name
            .as_deref(),
        Some("third")
    );
    let mut names: Vec<String> = reader
        .state()
        .iter()
        .map(|m| m.metadata.name.clone().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["first", "third"]);
}

#[tokio::test]
async fn a_watch_resumes_after_a_version_and_an_expired_one_is_gone() {
    let api = ApiServer::new(Options {
        history: 5,
        ..Options::default()
    });
    let client = Client::new(api.router(), "default");
    let pods: Api<Pod> = Api::default_namespaced(client);
    let pod = |name: &str| -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "i"}]}})).unwrap()
    };
    let first = pods
        .create(&PostParams::default(), &pod("p0"))
        .await
        .unwrap();
    let after = first.metadata.resource_version.unwrap();
    pods.create(&PostParams::default(), &pod("p1"))
        .await
        .unwrap();
    let events: Vec<_> = pods
        .watch(&kube::api::WatchParams::default().timeout(1), &after)
        .await
        .unwrap()
        .take(1)
        .try_collect()
        .await
        .unwrap();
    assert!(
        matches!(&events[0], kube::api::WatchEvent::Added(p) if p.metadata.name.as_deref() == Some("p1")),
        "{events:?}"
    );
    for i in 2..10 {
        pods.create(&PostParams::default(), &pod(&format!("p{i}")))
            .await
            .unwrap();
    }
    let mut expired = pods
        .watch(&kube::api::WatchParams::default().timeout(1), &after)
        .await
        .unwrap()
        .boxed();
    match expired.next().await {
        Some(Ok(kube::api::WatchEvent::Error(e))) => assert_eq!(e.code, 410),
        other => panic!("expected 410 Gone, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn watches_send_bookmarks_when_asked() {
    let api = ApiServer::new(Options {
        bookmark_interval: Duration::from_secs(5),
        ..Options::default()
    });
    let client = Client::new(api.router(), "default");
    let maps: Api<ConfigMap> = Api::default_namespaced(client);
    let rv = maps
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let params = kube::api::WatchParams::default().timeout(30);
    let mut stream = maps.watch(&params, &rv).await.unwrap().boxed();
    match stream.next().await {
        Some(Ok(kube::api::WatchEvent::Bookmark(b))) => assert_eq!(b.metadata.resource_version, rv),
        other => panic!("expected a bookmark, got {other:?}"),
    }
}

#[tokio::test]
async fn custom_resources_appear_once_their_crd_exists() {
    let (_api, client) = cluster();
    let crd = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/gateway-api-v1.6.1/httproutes.yaml"
    ))
    .unwrap();
    let crd: serde_json::Value = serde_yaml::from_str(&crd).unwrap();
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> = Api::all(client.clone());
    crds.create(
        &PostParams::default(),
        &serde_json::from_value(crd).unwrap(),
    )
    .await
    .unwrap();
    let discovery = kube::Discovery::new(client.clone()).run().await.unwrap();
    let (resource, _) = discovery
        .resolve_gvk(&kube::api::GroupVersionKind::gvk(
            "gateway.networking.k8s.io",
            "v1",
            "HTTPRoute",
        ))
        .expect("HTTPRoute discovered");
    let routes: Api<kube::api::DynamicObject> = Api::namespaced_with(client, "default", &resource);
    // A status written with the route is dropped: HTTPRoute's status has
    // its own subresource, so kube-apiserver creates it without one.
    let route: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "web"},
        "spec": {"rules": [{"backendRefs": [{"name": "web", "port": 80}]}]},
        "status": {"parents": []}
    })).unwrap();
    let made = routes.create(&PostParams::default(), &route).await.unwrap();
    assert!(made.data.get("status").is_none(), "{:?}", made.data);
    assert_eq!(
        routes
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
}

#[tokio::test]
async fn the_version_is_a_release_that_version_checks_accept() {
    let (_, client) = cluster();
    let info = client.apiserver_version().await.unwrap();
    assert_eq!((info.major.as_str(), info.minor.as_str()), ("1", "34"));
    // A release with build metadata (v1.34.4+sluice), as k3s says
    // v1.34.4+k3s1: a constraint such as a chart's `>=1.30.0` holds for it,
    // where a pre-release (v1.34.0-sluice) would fail it.
    let version = info.git_version.strip_prefix('v').unwrap();
    let (release, build) = version.split_once('+').unwrap();
    assert!(!release.contains('-'), "not a pre-release: {version}");
    assert_eq!(build, "sluice");
    let parts: Vec<u32> = release.split('.').map(|p| p.parse().unwrap()).collect();
    assert_eq!(parts.len(), 3, "{version}");
    assert!(parts[..2] >= [1, 30][..], "{version}");
}

#[tokio::test]
async fn a_label_filtered_watch_sees_objects_arrive_and_leave_as_added_and_deleted() {
    let (_, client) = cluster();
    let maps: Api<ConfigMap> = Api::default_namespaced(client);
    let created = maps
        .create(&PostParams::default(), &config_map("c"))
        .await
        .unwrap();
    let from = created.metadata.resource_version.unwrap();
    let relabel = |team: &str| Patch::Merge(json!({"metadata": {"labels": {"team": team}}}));
    maps.patch("c", &PatchParams::default(), &relabel("b"))
        .await
        .unwrap();
    maps.patch("c", &PatchParams::default(), &relabel("a"))
        .await
        .unwrap();
    maps.patch(
        "c",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "w"}})),
    )
    .await
    .unwrap();
    // Out of the selection, changed, and back: nothing between.
    maps.patch("c", &PatchParams::default(), &relabel("b"))
        .await
        .unwrap();
    maps.patch(
        "c",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "x"}})),
    )
    .await
    .unwrap();
    let events: Vec<_> = maps
        .watch(
            &kube::api::WatchParams::default()
                .labels("team=a")
                .timeout(1),
            &from,
        )
        .await
        .unwrap()
        .take(4)
        .try_collect()
        .await
        .unwrap();
    // A DELETED carries the object as it was while it matched (its labels
    // and data), under the version of the change that took it out, as
    // kube-apiserver's watch cache sends it.
    let seen: Vec<(&str, String, String)> = events
        .iter()
        .map(|e| {
            let (kind, c) = match e {
                kube::api::WatchEvent::Added(c) => ("ADDED", c),
                kube::api::WatchEvent::Modified(c) => ("MODIFIED", c),
                kube::api::WatchEvent::Deleted(c) => ("DELETED", c),
                other => panic!("unexpected event {other:?}"),
            };
            let data = c.data.as_ref().and_then(|d| d.get("k")).cloned();
            (
                kind,
                kube::ResourceExt::labels(c)["team"].clone(),
                data.unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("DELETED", "a".to_owned(), "v".to_owned()),
            ("ADDED", "a".to_owned(), "v".to_owned()),
            ("MODIFIED", "a".to_owned(), "w".to_owned()),
            ("DELETED", "a".to_owned(), "w".to_owned()),
        ]
    );
    let versions: Vec<u64> = events
        .iter()
        .map(|e| match e {
            kube::api::WatchEvent::Added(c)
            | kube::api::WatchEvent::Modified(c)
            | kube::api::WatchEvent::Deleted(c) => c
                .metadata
                .resource_version
                .as_ref()
                .unwrap()
                .parse()
                .unwrap(),
            other => panic!("unexpected event {other:?}"),
        })
        .collect();
    assert!(
        versions.windows(2).all(|w| w[0] < w[1]),
        "each event under the version of its own change: {versions:?}"
    );
}

#[tokio::test]
async fn events_written_through_either_api_are_read_and_watched_through_the_other() {
    use k8s_openapi::api::{core::v1::Event as CoreEvent, events::v1::Event};
    let (_, client) = cluster();
    let new: Api<Event> = Api::default_namespaced(client.clone());
    let core: Api<CoreEvent> = Api::default_namespaced(client);
    let mut watch = new
        .watch(&kube::api::WatchParams::default().timeout(5), "0")
        .await
        .unwrap()
        .boxed();
    // kube-rs' recorder writes events.k8s.io/v1; kubectl reads core v1.
    let written: Event = serde_json::from_value(json!({
        "metadata": {"name": "web.1"},
        "regarding": {"kind": "Deployment", "name": "web", "namespace": "default"},
        "reason": "BatchStarted", "note": "batch 1", "type": "Normal",
        "eventTime": "2026-01-02T03:04:05.000006Z", "reportingController": "sluice",
        "reportingInstance": "sluice-0", "action": "Release",
    }))
    .unwrap();
    new.create(&PostParams::default(), &written).await.unwrap();
    let read = core.get("web.1").await.unwrap();
    assert_eq!(read.message.as_deref(), Some("batch 1"));
    assert_eq!(read.involved_object.name.as_deref(), Some("web"));
    assert_eq!(read.reporting_component.as_deref(), Some("sluice"));
    let listed = core.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);

    // A core Event (the built-in controllers' recorder) is watched as an
    // events.k8s.io/v1 one.
    let legacy: CoreEvent = serde_json::from_value(json!({
        "metadata": {"name": "web.2"},
        "involvedObject": {"kind": "Deployment", "name": "web", "namespace": "default"},
        "reason": "ScalingReplicaSet", "message": "Scaled up", "type": "Normal",
        "source": {"component": "deployment-controller"}, "count": 1,
    }))
    .unwrap();
    core.create(&PostParams::default(), &legacy).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match watch.try_next().await.unwrap().unwrap() {
            kube::api::WatchEvent::Added(e) => seen.push(e),
            kube::api::WatchEvent::Bookmark(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen[1].note.as_deref(), Some("Scaled up"));
    assert_eq!(seen[1].deprecated_count, Some(1));
    assert_eq!(
        seen[1]
            .deprecated_source
            .as_ref()
            .and_then(|s| s.component.as_deref()),
        Some("deployment-controller")
    );
    assert_eq!(
        seen[1].regarding.as_ref().unwrap().name.as_deref(),
        Some("web")
    );
}
