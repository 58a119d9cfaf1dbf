//! Releases started by a change of the workload itself, end to end on the
//! simulated cluster: its API server calls the executor's admission
//! webhook (registered from `deploy/base/webhook.yaml`) over HTTPS as
//! kube-apiserver does, and the controller releases what the webhook held.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests stop at the first failed step

use std::sync::Arc;

use k8s_openapi::api::{
    apps::v1::{Deployment, ReplicaSet},
    events::v1::Event,
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use sluice_executor::{
    admission::{Bindings, Bound},
    crd::{Phase, Rollout},
};

mod common;

use common::{World, ready_workload, wait_phase, world};

/// Serves the webhook over HTTPS with a fresh CA, and registers
/// `deploy/base/webhook.yaml` with its clientConfig pointed at it.
async fn register_webhook(
    world: &World,
    dir: &std::path::Path,
) -> Arc<sluice_executor::metrics::Metrics> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let (cert_file, key_file) = (dir.join("webhook.crt"), dir.join("webhook.key"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();

    let bound = Bound::bind("127.0.0.1:0".parse().unwrap(), &cert_file, &key_file)
        .await
        .unwrap();
    let addr = bound.addr();
    let stop = tokio_util::sync::CancellationToken::new();
    let bindings = Bindings::start(world.client.clone(), stop.clone());
    let metrics = Arc::new(sluice_executor::metrics::Metrics::default());
    tokio::spawn(bound.serve(bindings, metrics.clone(), stop.clone()));
    std::mem::forget(stop.drop_guard());

    for manifest in sluice_executor::admission::registration(addr, ca_cert.pem().as_bytes()) {
        let kind = manifest["kind"].as_str().unwrap();
        let plural = if kind.starts_with("Mutating") {
            "mutatingwebhookconfigurations"
        } else {
            "validatingwebhookconfigurations"
        };
        let resource = kube::api::ApiResource {
            group: "admissionregistration.k8s.io".into(),
            version: "v1".into(),
            api_version: "admissionregistration.k8s.io/v1".into(),
            kind: kind.into(),
            plural: plural.into(),
        };
        let api: Api<kube::api::DynamicObject> = Api::all_with(world.client.clone(), &resource);
        let object: kube::api::DynamicObject = serde_json::from_value(manifest).unwrap();
        api.create(&PostParams::default(), &object).await.unwrap();
    }
    metrics
}

/// A binding of `web`: two batches, each checked by `health`.
fn binding() -> Rollout {
    serde_yaml::from_str(
        r#"
apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata: {name: web}
spec:
  workload: {kind: Deployment, name: web}
  strategy:
    canary:
      progressDeadline: 60s
      steps:
        - {replicas: "20%", analyses: [health]}
        - {replicas: "50%", analyses: [health]}
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
"#,
    )
    .unwrap()
}

/// A binding of `web` with these steps (YAML flow, as in a manifest).
fn binding_with(steps: &str) -> Rollout {
    serde_yaml::from_str(&format!(
        "apiVersion: sluice.dev/v1alpha1\nkind: Rollout\nmetadata: {{name: web}}\nspec:\n  \
         workload: {{kind: Deployment, name: web}}\n  strategy: {{canary: {{steps: [{steps}]}}}}\n"
    ))
    .unwrap()
}

/// The status of Rollout `name` once `done` holds of it; panics, naming
/// `what`, when it never does.
async fn wait_status(
    rollouts: &Api<Rollout>,
    name: &str,
    what: &str,
    done: impl Fn(&sluice_executor::crd::RolloutStatus) -> bool,
) -> sluice_executor::crd::RolloutStatus {
    let mut last = None;
    for _ in 0..600 {
        let s = rollouts.get(name).await.unwrap().status.unwrap_or_default();
        if done(&s) {
            return s;
        }
        last = Some(s);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{name} never {what}: {last:#?}");
}

/// Promotes Rollout `web` past its first step, as `sluice rollout promote`
/// does through its annotation.
async fn promote_first_step(rollouts: &Api<Rollout>) {
    rollouts
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"sluice.dev/promote": "step:0"}}})),
        )
        .await
        .unwrap();
}

/// Changes the image of container `name` of workload `name` as
/// `kubectl set image` does.
async fn set_image_of<K>(api: &Api<K>, name: &str, image: &str) -> Result<K, kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch =
        json!({"spec": {"template": {"spec": {"containers": [{"name": name, "image": image}]}}}});
    api.patch(
        name,
        &PatchParams {
            field_manager: Some("kubectl-set".into()),
            ..Default::default()
        },
        &Patch::Strategic(patch),
    )
    .await
}

/// Changes `web`'s image as `kubectl set image` does.
async fn set_image(deployments: &Api<Deployment>, image: &str) -> Result<Deployment, kube::Error> {
    set_image_of(deployments, "web", image).await
}

fn image_of(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .image
        .clone()
        .unwrap()
}

fn sluice_marks(d: &Deployment) -> Vec<String> {
    d.metadata
        .annotations
        .clone()
        .unwrap_or_default()
        .into_keys()
        .filter(|k| k.starts_with("sluice.dev/"))
        .collect()
}

/// Waits for the next terminal phase after `after` (the status's release
/// changed from it).
async fn wait_release(rollouts: &Api<Rollout>, after: &str) -> Rollout {
    wait_phase(rollouts, |_| true).await;
    for _ in 0..1200 {
        let r = rollouts.get("web").await.unwrap();
        let s = r.status.clone().unwrap_or_default();
        if s.release != after
            && matches!(
                s.phase,
                Phase::Succeeded | Phase::RolledBack | Phase::Failed
            )
        {
            return r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!(
        "no new release ended: {:#?}",
        rollouts.get("web").await.unwrap().status
    );
}

#[tokio::test(start_paused = true)]
async fn a_bad_change_is_rolled_back_and_held_until_a_revert_or_a_fix_and_an_unheld_change_is_reported()
 {
    let world = world("bad-canary").await;
    ready_workload(&world).await;
    let dir = tempfile::tempdir().unwrap();
    let metrics = register_webhook(&world, dir.path()).await;
    let deployments: Api<Deployment> = Api::default_namespaced(world.client.clone());
    let rollouts: Api<Rollout> = Api::default_namespaced(world.client.clone());
    rollouts
        .create(&PostParams::default(), &binding())
        .await
        .unwrap();
    let idle = wait_release(&rollouts, "").await.status.unwrap();
    assert_eq!(idle.phase, Phase::Succeeded, "{idle:#?}");

    // A bad version: held in the request, released, rolled back by its analysis.
    let held = set_image(&deployments, "registry.example/web:2.0")
        .await
        .unwrap();
    assert_eq!(held.spec.as_ref().unwrap().paused, Some(true));
    let failed = wait_release(&rollouts, &idle.release).await.status.unwrap();
    assert_eq!(failed.phase, Phase::RolledBack, "{failed:#?}");
    assert!(
        failed.message.contains("analysis failed"),
        "{}",
        failed.message
    );
    // The Deployment keeps the version applied (it is what git says), held:
    // every pod is stable, and its own controller makes none of 2.0.
    let d = deployments.get("web").await.unwrap();
    assert_eq!(image_of(&d), "registry.example/web:2.0");
    assert_eq!(
        d.spec.as_ref().unwrap().paused,
        Some(true),
        "held on the rejected template"
    );
    assert!(sluice_marks(&d).contains(&"sluice.dev/rollout".to_owned()));
    let sets = Api::<ReplicaSet>::default_namespaced(world.client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    let replicas = |image: &str| -> i32 {
        sets.items
            .iter()
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
            .map(|rs| rs.spec.as_ref().unwrap().replicas.unwrap_or(0))
            .sum()
    };
    assert_eq!(
        (
            replicas("registry.example/web:1.0"),
            replicas("registry.example/web:2.0")
        ),
        (10, 0)
    );

    // A revert gives the Deployment back at once, as the user wrote it.
    set_image(&deployments, "registry.example/web:1.0")
        .await
        .unwrap();
    let reverted = wait_release(&rollouts, &failed.release)
        .await
        .status
        .unwrap();
    assert_eq!(reverted.phase, Phase::Succeeded, "{reverted:#?}");
    let d = deployments.get("web").await.unwrap();
    assert_ne!(d.spec.as_ref().unwrap().paused, Some(true));
    assert_eq!(sluice_marks(&d), Vec::<String>::new());

    // A fix goes out in batches and ends handed back.
    set_image(&deployments, "registry.example/web:3.0")
        .await
        .unwrap();
    let fixed = wait_release(&rollouts, &reverted.release)
        .await
        .status
        .unwrap();
    assert_eq!(fixed.phase, Phase::Succeeded, "{fixed:#?}");
    assert_eq!(
        fixed.steps.len(),
        3,
        "released in its two batches and the last: {fixed:#?}"
    );
    let d = deployments.get("web").await.unwrap();
    assert_eq!(
        (
            image_of(&d),
            d.spec.as_ref().unwrap().paused,
            sluice_marks(&d)
        ),
        ("registry.example/web:3.0".to_owned(), None, vec![])
    );
    assert_eq!(
        metrics.admissions("held"),
        2,
        "2.0 and 3.0 held; the revert passed as it was"
    );

    // StartRollout's rule: the binding takes no version from the API.
    // (The API's refusal is tested in api.rs; here the webhook's: a second
    // Rollout for the bound Deployment is refused by the API server.)
    let mut second = common::rollout("registry.example/web:4.0");
    second.metadata.name = Some("web-platform".into());
    let refused = rollouts
        .create(&PostParams::default(), &second)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, kube::Error::Api(e) if e.code == 403 && e.message.contains("is bound to Rollout \"web\"")),
        "{refused:?}"
    );

    // Without the webhook, a change reaches the Deployment unheld: it is
    // reported on the binding and as a Warning Event, never silently.
    for plural in [
        "mutatingwebhookconfigurations",
        "validatingwebhookconfigurations",
    ] {
        let resource = kube::api::ApiResource {
            group: "admissionregistration.k8s.io".into(),
            version: "v1".into(),
            api_version: "admissionregistration.k8s.io/v1".into(),
            kind: String::new(),
            plural: plural.into(),
        };
        Api::<kube::api::DynamicObject>::all_with(world.client.clone(), &resource)
            .delete("sluice", &DeleteParams::default())
            .await
            .unwrap();
    }
    let unheld = set_image(&deployments, "registry.example/web:4.0")
        .await
        .unwrap();
    assert_ne!(unheld.spec.as_ref().unwrap().paused, Some(true));
    let reported = wait_release(&rollouts, &fixed.release)
        .await
        .status
        .unwrap();
    assert_eq!(reported.phase, Phase::Failed, "{reported:#?}");
    assert!(
        reported.message.contains("without Sluice holding it"),
        "{}",
        reported.message
    );
    let events: Api<Event> = Api::default_namespaced(world.client.clone());
    let mut warned = false;
    for _ in 0..100 {
        let list = events.list(&ListParams::default()).await.unwrap();
        warned = list.items.iter().any(|e| {
            e.type_.as_deref() == Some("Warning")
                && e.note
                    .as_deref()
                    .unwrap_or_default()
                    .contains("without Sluice holding it")
                // The replica that made it, by its --identity.
                && e.reporting_instance.as_deref() == Some("executor-0")
                && e.reporting_controller.as_deref() == Some("sluice-executor")
        });
        if warned {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(warned, "a Warning Event tells of the unheld change");
}

#[tokio::test(start_paused = true)]
async fn a_binding_deleted_mid_release_hands_the_deployment_back_whole() {
    let world = world("healthy").await;
    ready_workload(&world).await;
    let dir = tempfile::tempdir().unwrap();
    register_webhook(&world, dir.path()).await;
    let deployments: Api<Deployment> = Api::default_namespaced(world.client.clone());
    let rollouts: Api<Rollout> = Api::default_namespaced(world.client.clone());
    let paused_binding: Rollout = binding_with("{replicas: 30%, pause: {}}");
    rollouts
        .create(&PostParams::default(), &paused_binding)
        .await
        .unwrap();
    let idle = wait_release(&rollouts, "").await;
    assert_eq!(
        idle.finalizers(),
        ["sluice.dev/release"],
        "a binding carries its finalizer"
    );
    let before = deployments.get("web").await.unwrap();

    set_image(&deployments, "registry.example/web:2.0")
        .await
        .unwrap();
    let at_pause = wait_phase(&rollouts, |p| p == Phase::Paused)
        .await
        .status
        .unwrap();
    assert_eq!(at_pause.current_step, 0);
    rollouts
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    for _ in 0..300 {
        if rollouts.get_opt("web").await.unwrap().is_none() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        rollouts.get_opt("web").await.unwrap().is_none(),
        "the binding is gone"
    );
    // The Deployment is its own controller's again, as the user wrote it:
    // not paused, its strategy back, no mark; that controller rolls the
    // new template out itself.
    let d = deployments.get("web").await.unwrap();
    assert_eq!(d.spec.as_ref().unwrap().paused, None);
    assert_eq!(
        d.spec.as_ref().unwrap().strategy,
        before.spec.as_ref().unwrap().strategy
    );
    assert_eq!(sluice_marks(&d), Vec::<String>::new());
    assert_eq!(image_of(&d), "registry.example/web:2.0");
    for _ in 0..300 {
        let d = deployments.get("web").await.unwrap();
        let s = d.status.unwrap_or_default();
        if s.updated_replicas == Some(10) && s.ready_replicas == Some(10) && s.replicas == Some(10)
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!(
        "its own controller never rolled the template out: {:?}",
        deployments.get("web").await.unwrap().status
    );
}

/// Ready, not terminating pods of `db` running `image`.
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

/// Changes `db`'s image as `kubectl set image` does.
async fn set_db_image(
    sets: &Api<k8s_openapi::api::apps::v1::StatefulSet>,
    image: &str,
) -> k8s_openapi::api::apps::v1::StatefulSet {
    set_image_of(sets, "db", image).await.unwrap()
}

/// StatefulSet `db` (4 pods of db:1.0, ready) and Rollout `web` bound to
/// it with `steps`, idle.
async fn bound_db(
    world: &World,
    steps: &str,
) -> (
    Api<k8s_openapi::api::apps::v1::StatefulSet>,
    Api<Rollout>,
    sluice_executor::crd::RolloutStatus,
) {
    use k8s_openapi::api::apps::v1::StatefulSet;
    let sets: Api<StatefulSet> = Api::default_namespaced(world.client.clone());
    let db: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "db"},
        "spec": {"replicas": 4, "serviceName": "db", "podManagementPolicy": "Parallel", "selector": {"matchLabels": {"app": "db"}},
            "updateStrategy": {"type": "RollingUpdate"},
            "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db", "image": "registry.example/db:1.0"}]}}}
    }))
    .unwrap();
    sets.create(&PostParams::default(), &db).await.unwrap();
    for _ in 0..300 {
        if db_ready_with(world, "registry.example/db:1.0").await == 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let rollouts: Api<Rollout> = Api::default_namespaced(world.client.clone());
    let binding: Rollout = serde_yaml::from_str(
        &format!("apiVersion: sluice.dev/v1alpha1\nkind: Rollout\nmetadata: {{name: web}}\nspec:\n  workload: {{kind: StatefulSet, name: db}}\n  strategy: {{canary: {{steps: [{steps}]}}}}\n"),
    )
    .unwrap();
    rollouts
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let idle = wait_release(&rollouts, "").await.status.unwrap();
    assert_eq!(idle.phase, Phase::Succeeded, "{idle:#?}");
    (sets, rollouts, idle)
}

#[tokio::test(start_paused = true)]
async fn a_bound_statefulset_is_held_by_its_partition_released_aborted_and_reverted() {
    use k8s_openapi::api::apps::v1::StatefulSet;
    let world = world("healthy").await;
    let dir = tempfile::tempdir().unwrap();
    register_webhook(&world, dir.path()).await;
    let (sets, rollouts, idle) = bound_db(
        &world,
        "{replicas: 1, pause: {}}, {replicas: 50%, pause: {}}",
    )
    .await;

    let partition = |s: &StatefulSet| {
        s.spec
            .as_ref()
            .unwrap()
            .update_strategy
            .as_ref()
            .and_then(|u| u.rolling_update.as_ref())
            .and_then(|r| r.partition)
    };
    let held = set_db_image(&sets, "registry.example/db:2.0").await;
    assert_eq!(
        partition(&held),
        Some(4),
        "held by its partition in the same request"
    );
    let paused = wait_phase(&rollouts, |p| p == Phase::Paused)
        .await
        .status
        .unwrap();
    assert_eq!(paused.current_step, 0);
    assert_eq!(
        db_ready_with(&world, "registry.example/db:2.0").await,
        1,
        "one pod in the first batch"
    );

    // On to the second batch: two new pods.
    promote_first_step(&rollouts).await;
    for _ in 0..600 {
        let s = rollouts.get("web").await.unwrap().status.unwrap();
        if s.phase == Phase::Paused && s.current_step == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(db_ready_with(&world, "registry.example/db:2.0").await, 2);

    // Aborted: every pod back on 1.0, the StatefulSet held on 2.0, and
    // never more than its maxUnavailable (1) pod missing on the way.
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let fewest = {
        let (watching, world_client) = (watching.clone(), world.client.clone());
        tokio::spawn(async move {
            use k8s_openapi::api::core::v1::Pod;
            let pods: Api<Pod> = Api::default_namespaced(world_client);
            let mut fewest = usize::MAX;
            while watching.load(std::sync::atomic::Ordering::SeqCst) {
                let ready = pods
                    .list(&ListParams::default().labels("app=db"))
                    .await
                    .unwrap()
                    .items
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .filter(|p| {
                        p.status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|c| {
                                c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                            })
                    })
                    .count();
                fewest = fewest.min(ready);
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            fewest
        })
    };
    rollouts
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"sluice.dev/abort": "testing"}}})),
        )
        .await
        .unwrap();
    let aborted = wait_release(&rollouts, &idle.release).await.status.unwrap();
    watching.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(aborted.phase, Phase::RolledBack, "{aborted:#?}");
    assert_eq!(db_ready_with(&world, "registry.example/db:1.0").await, 4);
    assert_eq!(fewest.await.unwrap(), 3, "one pod at a time");
    let s = sets.get("db").await.unwrap();
    assert_eq!(partition(&s), Some(4), "held on the rejected template");
    assert_eq!(
        s.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .image
            .as_deref(),
        Some("registry.example/db:2.0")
    );

    // A revert gives it back: partition as the user had it, no mark.
    set_db_image(&sets, "registry.example/db:1.0").await;
    let reverted = wait_release(&rollouts, &aborted.release)
        .await
        .status
        .unwrap();
    assert_eq!(reverted.phase, Phase::Succeeded, "{reverted:#?}");
    let s = sets.get("db").await.unwrap();
    assert_eq!(partition(&s).unwrap_or(0), 0);
    assert_eq!(
        s.spec
            .as_ref()
            .unwrap()
            .update_strategy
            .as_ref()
            .unwrap()
            .rolling_update,
        None,
        "no partition was written, and none is left"
    );
    assert!(
        s.metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .keys()
            .all(|k| !k.starts_with("sluice.dev/"))
    );
    assert_eq!(db_ready_with(&world, "registry.example/db:1.0").await, 4);

    // Made OnDelete and changed: not held, refused as a release; made
    // RollingUpdate again with its pods behind, it is held and released
    // in batches, not all at once.
    let strategy = |kind: &str| {
        let sets = sets.clone();
        // As a manifest that says only the type: a partition the release
        // left behind would make OnDelete invalid.
        let patch = json!({"spec": {"updateStrategy": {"type": kind}}});
        async move {
            sets.patch("db", &PatchParams::default(), &Patch::Merge(patch))
                .await
                .unwrap()
        }
    };
    strategy("OnDelete").await;
    // Made OnDelete alone: nothing to release, nothing refused.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let on_delete = rollouts.get("web").await.unwrap().status.unwrap();
    assert_eq!(on_delete.phase, Phase::Succeeded, "{on_delete:#?}");
    set_db_image(&sets, "registry.example/db:3.0").await;
    let refused = wait_release(&rollouts, &on_delete.release)
        .await
        .status
        .unwrap();
    assert_eq!(refused.phase, Phase::Failed, "{refused:#?}");
    assert!(refused.message.contains("OnDelete"), "{}", refused.message);
    let held = strategy("RollingUpdate").await;
    assert_eq!(partition(&held), Some(4), "held when it leaves OnDelete");
    let paused = wait_status(&rollouts, "web", "released the change in batches", |s| {
        s.phase == Phase::Paused && s.current_step == 0 && s.release != refused.release
    })
    .await;
    assert_eq!(paused.ready_canary_replicas, 1, "{paused:#?}");
    assert_eq!(db_ready_with(&world, "registry.example/db:3.0").await, 1);
}

#[tokio::test(start_paused = true)]
async fn a_bound_statefulset_keeps_its_batch_through_a_scale_up_and_a_newer_template() {
    let world = world("healthy").await;
    let dir = tempfile::tempdir().unwrap();
    register_webhook(&world, dir.path()).await;
    let (sets, rollouts, _) = bound_db(
        &world,
        "{replicas: 25%, pause: {}}, {replicas: 50%, pause: {}}, {replicas: 100%}",
    )
    .await;
    set_db_image(&sets, "registry.example/db:2.0").await;
    wait_status(&rollouts, "web", "paused at its first batch", |s| {
        s.phase == Phase::Paused && s.current_step == 0 && s.ready_canary_replicas == 1
    })
    .await;
    // Scaled to 8 through its scale subresource: the batch is 2 of 8, and
    // no more than 2 pods run the new version once it settles.
    sets.patch_scale(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 8}})),
    )
    .await
    .unwrap();
    let mut counts = (0, 0);
    for _ in 0..600 {
        counts = (
            db_ready_with(&world, "registry.example/db:2.0").await,
            db_ready_with(&world, "registry.example/db:1.0").await,
        );
        if counts == (2, 6) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(counts, (2, 6), "new and stable pods after the scale-up");
    let s = rollouts.get("web").await.unwrap().status.unwrap();
    assert_eq!(
        (s.canary_replicas, s.ready_canary_replicas),
        (2, 2),
        "{s:#?}"
    );

    // On to 50% (4 of 8), then a newer template: the middle version's pods
    // go back to stable, and the newest starts over at its first batch.
    promote_first_step(&rollouts).await;
    wait_status(&rollouts, "web", "paused at its second batch", |s| {
        s.phase == Phase::Paused && s.current_step == 1 && s.ready_canary_replicas == 4
    })
    .await;
    set_db_image(&sets, "registry.example/db:3.0").await;
    let mut counts = (0, 0, 0);
    for _ in 0..600 {
        counts = (
            db_ready_with(&world, "registry.example/db:3.0").await,
            db_ready_with(&world, "registry.example/db:2.0").await,
            db_ready_with(&world, "registry.example/db:1.0").await,
        );
        if counts == (2, 0, 6) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(counts, (2, 0, 6), "newest, middle and stable pods");
}

#[tokio::test(start_paused = true)]
async fn a_bound_deployment_released_canary_style_beside_its_own_pods() {
    let world = world("healthy").await;
    ready_workload(&world).await;
    let dir = tempfile::tempdir().unwrap();
    register_webhook(&world, dir.path()).await;
    let deployments: Api<Deployment> = Api::default_namespaced(world.client.clone());
    let rollouts: Api<Rollout> = Api::default_namespaced(world.client.clone());
    let binding: Rollout = serde_yaml::from_str(
        "apiVersion: sluice.dev/v1alpha1\nkind: Rollout\nmetadata: {name: web}\nspec:\n  workload: {kind: Deployment, name: web}\n  traffic: {stableService: web}\n  strategy: {style: Canary, canary: {steps: [{replicas: 2, pause: {}}]}}\n",
    )
    .unwrap();
    rollouts
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let idle = wait_release(&rollouts, "").await.status.unwrap();
    assert_eq!(idle.phase, Phase::Succeeded, "{idle:#?}");
    let before = deployments.get("web").await.unwrap();
    let promote = |at: u32| {
        let rollouts = rollouts.clone();
        async move {
            rollouts
                .patch("web", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"annotations": {"sluice.dev/promote": format!("step:{at}")}}})))
                .await
                .unwrap();
        }
    };

    set_image(&deployments, "registry.example/web:2.0")
        .await
        .unwrap();
    let paused = wait_phase(&rollouts, |p| p == Phase::Paused)
        .await
        .status
        .unwrap();
    assert_eq!(paused.current_step, 0, "{paused:#?}");
    // The new version runs beside the user's pods, which are untouched.
    let canary = deployments.get("web-canary").await.unwrap();
    assert_eq!(image_of(&canary), "registry.example/web:2.0");
    assert_eq!(canary.spec.as_ref().unwrap().replicas, Some(2));
    let d = deployments.get("web").await.unwrap();
    assert_eq!(
        (image_of(&d), d.spec.as_ref().unwrap().paused),
        ("registry.example/web:2.0".to_owned(), Some(true))
    );
    assert_eq!(
        d.status.as_ref().unwrap().ready_replicas,
        Some(10),
        "its old pods serve on"
    );
    promote(0).await;
    let done = wait_release(&rollouts, &idle.release).await.status.unwrap();
    assert_eq!(done.phase, Phase::Succeeded, "{done:#?}");
    let d = deployments.get("web").await.unwrap();
    assert_eq!(
        (
            image_of(&d),
            d.spec.as_ref().unwrap().paused,
            d.spec.as_ref().unwrap().strategy.clone(),
            sluice_marks(&d)
        ),
        (
            "registry.example/web:2.0".to_owned(),
            None,
            before.spec.as_ref().unwrap().strategy.clone(),
            vec![]
        )
    );
    assert_eq!(d.status.as_ref().unwrap().updated_replicas, Some(10));
    assert!(
        deployments.get_opt("web-canary").await.unwrap().is_none(),
        "the canary is gone"
    );
    // STABLE and NEW name the revision the Deployment's own pods run now,
    // not the canary's, which is gone.
    let sets: Api<k8s_openapi::api::apps::v1::ReplicaSet> =
        Api::default_namespaced(world.client.clone());
    let running = sets
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|rs| {
            rs.spec.as_ref().and_then(|s| s.replicas) == Some(10)
                && rs
                    .metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| !n.contains("canary"))
        })
        .and_then(|rs| rs.metadata.labels?.get("pod-template-hash").cloned())
        .expect("the Deployment's own ReplicaSet runs every pod");
    let shown = wait_status(&rollouts, "web", "named the running revision", |s| {
        s.stable_revision == running
    })
    .await;
    assert_eq!(shown.canary_revision, running);

    // Reverted mid-release: the canary goes, the Deployment is given back.
    set_image(&deployments, "registry.example/web:4.0")
        .await
        .unwrap();
    wait_phase(&rollouts, |p| p == Phase::Paused).await;
    set_image(&deployments, "registry.example/web:2.0")
        .await
        .unwrap();
    // (A revert names the release it goes back to: wait for its phase.)
    let reverted = wait_phase(&rollouts, |p| p == Phase::RolledBack)
        .await
        .status
        .unwrap();
    assert!(
        reverted.message.starts_with("reverted"),
        "{}",
        reverted.message
    );
    assert!(deployments.get_opt("web-canary").await.unwrap().is_none());
    let d = deployments.get("web").await.unwrap();
    assert_eq!(
        (d.spec.as_ref().unwrap().paused, sluice_marks(&d)),
        (None, vec![])
    );
    let done = reverted;

    // Aborted: the canary goes, the user's pods were never touched, the
    // Deployment stays held on what was applied until it is reverted.
    set_image(&deployments, "registry.example/web:3.0")
        .await
        .unwrap();
    let paused = wait_phase(&rollouts, |p| p == Phase::Paused)
        .await
        .status
        .unwrap();
    rollouts
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"sluice.dev/abort": "testing"}}})),
        )
        .await
        .unwrap();
    let aborted = wait_release(&rollouts, &done.release).await.status.unwrap();
    assert_eq!(
        aborted.phase,
        Phase::RolledBack,
        "{aborted:#?} (from {paused:#?})"
    );
    assert!(deployments.get_opt("web-canary").await.unwrap().is_none());
    let d = deployments.get("web").await.unwrap();
    assert_eq!(
        (image_of(&d), d.spec.as_ref().unwrap().paused),
        ("registry.example/web:3.0".to_owned(), Some(true))
    );
    set_image(&deployments, "registry.example/web:2.0")
        .await
        .unwrap();
    let reverted = wait_release(&rollouts, &aborted.release)
        .await
        .status
        .unwrap();
    assert_eq!(reverted.phase, Phase::Succeeded, "{reverted:#?}");
    let d = deployments.get("web").await.unwrap();
    assert_eq!(
        (d.spec.as_ref().unwrap().paused, sluice_marks(&d)),
        (None, vec![])
    );
}

#[tokio::test(start_paused = true)]
async fn a_deployment_scaled_during_a_steps_pause_keeps_its_batch_share() {
    let world = world("healthy").await;
    ready_workload(&world).await;
    let dir = tempfile::tempdir().unwrap();
    register_webhook(&world, dir.path()).await;
    let deployments: Api<Deployment> = Api::default_namespaced(world.client.clone());
    let rollouts: Api<Rollout> = Api::default_namespaced(world.client.clone());
    let binding: Rollout = binding_with("{replicas: 30%, pause: {}}");
    rollouts
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    wait_release(&rollouts, "").await;
    set_image(&deployments, "registry.example/web:2.0")
        .await
        .unwrap();
    wait_phase(&rollouts, |p| p == Phase::Paused).await;
    // As `kubectl scale` (or an autoscaler) does: through the scale subresource.
    deployments
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 20}})),
        )
        .await
        .unwrap();
    let sets: Api<ReplicaSet> = Api::default_namespaced(world.client.clone());
    let mut seen = (0, 0);
    for _ in 0..300 {
        let list = sets.list(&ListParams::default()).await.unwrap();
        let wanted = |image: &str| -> i32 {
            list.items
                .iter()
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
                .map(|rs| rs.spec.as_ref().unwrap().replicas.unwrap_or(0))
                .sum()
        };
        seen = (
            wanted("registry.example/web:1.0"),
            wanted("registry.example/web:2.0"),
        );
        if seen == (14, 6) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        seen,
        (14, 6),
        "30% of 20 new, the rest stable, while the step waits"
    );
    let mut status = rollouts.get("web").await.unwrap().status.unwrap();
    for _ in 0..100 {
        if status.ready_canary_replicas == 6 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        status = rollouts.get("web").await.unwrap().status.unwrap();
    }
    assert_eq!(
        (
            status.phase,
            status.current_step,
            status.canary_replicas,
            status.ready_canary_replicas
        ),
        (Phase::Paused, 0, 6, 6),
        "{status:#?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_executor_keeps_the_webhook_certificate_and_its_ca_bundle_itself() {
    use k8s_openapi::api::core::v1::Secret;
    use sluice_executor::admission::certs::{Current, Managed, RENEW_BEFORE, SERVING_LIFETIME};
    let world = world("healthy").await;
    ready_workload(&world).await;
    let current = Arc::new(Current::default());
    let bound = Bound::bind_with("127.0.0.1:0".parse().unwrap(), current.clone())
        .await
        .unwrap();
    let addr = bound.addr();
    let stop = tokio_util::sync::CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let bindings = Bindings::start(world.client.clone(), stop.clone());
    tokio::spawn(bound.serve(bindings, Arc::default(), stop.clone()));
    // The configurations as installed: no CA bundle yet.
    for manifest in sluice_executor::admission::registration(addr, b"") {
        let kind = manifest["kind"].as_str().unwrap().to_owned();
        let resource = kube::api::ApiResource {
            group: "admissionregistration.k8s.io".into(),
            version: "v1".into(),
            api_version: "admissionregistration.k8s.io/v1".into(),
            plural: format!("{}s", kind.to_lowercase()),
            kind,
        };
        let object: kube::api::DynamicObject = serde_json::from_value(manifest).unwrap();
        Api::<kube::api::DynamicObject>::all_with(world.client.clone(), &resource)
            .create(&PostParams::default(), &object)
            .await
            .unwrap();
    }
    let managed = Managed {
        namespace: "default".into(),
        name: "sluice-webhook".into(),
        hosts: vec!["127.0.0.1".into()],
        configurations: vec!["sluice".into()],
        renew_before: RENEW_BEFORE,
    };
    let now = std::time::SystemTime::now();
    current.set(managed.ensure(&world.client, now).await.unwrap());
    let secrets: Api<Secret> = Api::default_namespaced(world.client.clone());
    let first = secrets.get("sluice-webhook").await.unwrap().data.unwrap();
    // A second replica starting finds the same CA and certificate.
    managed.ensure(&world.client, now).await.unwrap();
    assert_eq!(
        secrets.get("sluice-webhook").await.unwrap().data.unwrap(),
        first
    );

    // The API server trusts it: a bound change is held.
    let deployments: Api<Deployment> = Api::default_namespaced(world.client.clone());
    let rollouts: Api<Rollout> = Api::default_namespaced(world.client.clone());
    rollouts
        .create(&PostParams::default(), &binding())
        .await
        .unwrap();
    wait_release(&rollouts, "").await;
    let held = set_image(&deployments, "registry.example/web:2.0")
        .await
        .unwrap();
    assert_eq!(
        held.spec.as_ref().unwrap().paused,
        Some(true),
        "held through the managed certificate"
    );

    // Near its end the serving certificate is issued again from the same
    // CA: the bundle the API server trusts does not change.
    let renewing = Managed {
        renew_before: SERVING_LIFETIME * 2,
        ..managed.clone()
    };
    current.set(renewing.ensure(&world.client, now).await.unwrap());
    let second = secrets.get("sluice-webhook").await.unwrap().data.unwrap();
    assert_eq!(second["ca.crt"], first["ca.crt"]);
    assert_ne!(second["tls.crt"], first["tls.crt"]);
    let held = set_image(&deployments, "registry.example/web:3.0")
        .await
        .unwrap();
    assert_eq!(held.spec.as_ref().unwrap().paused, Some(true));

    // Running, it also fills a configuration installed after it started
    // (here: deleted and made again without a bundle) within half a minute.
    tokio::spawn(
        managed
            .clone()
            .run(world.client.clone(), current.clone(), stop.clone()),
    );
    // (Its first check done before the configuration changes.)
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let resource = kube::api::ApiResource {
        group: "admissionregistration.k8s.io".into(),
        version: "v1".into(),
        api_version: "admissionregistration.k8s.io/v1".into(),
        plural: "validatingwebhookconfigurations".into(),
        kind: "ValidatingWebhookConfiguration".into(),
    };
    let configurations: Api<kube::api::DynamicObject> =
        Api::all_with(world.client.clone(), &resource);
    configurations
        .delete("sluice", &DeleteParams::default())
        .await
        .unwrap();
    let bare = sluice_executor::admission::registration(addr, b"")
        .into_iter()
        .find(|m| m["kind"] == "ValidatingWebhookConfiguration")
        .unwrap();
    configurations
        .create(
            &PostParams::default(),
            &serde_json::from_value(bare).unwrap(),
        )
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(31)).await;
    let filled = configurations.get("sluice").await.unwrap();
    assert_eq!(
        filled.data["webhooks"][0]["clientConfig"]["caBundle"],
        json!(first["ca.crt"]),
        "{:?}",
        filled.data["webhooks"][0]["clientConfig"]
    );
}

#[tokio::test(start_paused = true)]
async fn going_back_to_an_earlier_version_after_a_release_is_a_release_of_its_own() {
    let world = world("healthy").await;
    ready_workload(&world).await;
    let dir = tempfile::tempdir().unwrap();
    register_webhook(&world, dir.path()).await;
    let deployments: Api<Deployment> = Api::default_namespaced(world.client.clone());
    let rollouts: Api<Rollout> = Api::default_namespaced(world.client.clone());
    let binding: Rollout = binding_with("{replicas: 50%}");
    rollouts
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let idle = wait_release(&rollouts, "").await.status.unwrap();
    set_image(&deployments, "registry.example/web:2.0")
        .await
        .unwrap();
    let first = wait_release(&rollouts, &idle.release).await.status.unwrap();
    assert_eq!(first.phase, Phase::Succeeded, "{first:#?}");
    // Every pod runs the released version: STABLE shows it too.
    assert_eq!(first.stable_revision, first.canary_revision, "{first:#?}");
    assert!(!first.stable_revision.is_empty(), "{first:#?}");
    // Back to 1.0 (a revert in git, after the release ended): released in
    // batches too, on the ReplicaSet that ran 1.0 before.
    set_image(&deployments, "registry.example/web:1.0")
        .await
        .unwrap();
    let back = wait_release(&rollouts, &first.release)
        .await
        .status
        .unwrap();
    assert_eq!(back.phase, Phase::Succeeded, "{back:#?}");
    assert_eq!(back.steps.len(), 2, "{back:#?}");
    let d = deployments.get("web").await.unwrap();
    assert_eq!(
        (
            image_of(&d),
            d.spec.as_ref().unwrap().paused,
            sluice_marks(&d)
        ),
        ("registry.example/web:1.0".to_owned(), None, vec![])
    );
    for _ in 0..100 {
        let s = deployments.get("web").await.unwrap().status.unwrap();
        if s.updated_replicas == Some(10) && s.replicas == Some(10) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let s = deployments.get("web").await.unwrap().status.unwrap();
    assert_eq!((s.updated_replicas, s.ready_replicas), (Some(10), Some(10)));
    let sets = Api::<ReplicaSet>::default_namespaced(world.client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(
        sets.items.len(),
        2,
        "1.0's ReplicaSet was used again, not doubled"
    );
}

#[tokio::test(start_paused = true)]
async fn a_deployment_paused_by_its_user_is_released_only_once_resumed() {
    let world = world("healthy").await;
    ready_workload(&world).await;
    let dir = tempfile::tempdir().unwrap();
    register_webhook(&world, dir.path()).await;
    let deployments: Api<Deployment> = Api::default_namespaced(world.client.clone());
    let rollouts: Api<Rollout> = Api::default_namespaced(world.client.clone());
    rollouts
        .create(&PostParams::default(), &binding())
        .await
        .unwrap();
    let idle = wait_release(&rollouts, "").await.status.unwrap();

    // `kubectl rollout pause`, then a change: held, and not released.
    let patch = |paused: bool| Patch::Merge(json!({"spec": {"paused": paused}}));
    deployments
        .patch("web", &PatchParams::default(), &patch(true))
        .await
        .unwrap();
    set_image(&deployments, "registry.example/web:2.0")
        .await
        .unwrap();
    for _ in 0..50 {
        let s = rollouts.get("web").await.unwrap().status.unwrap();
        if s.release != idle.release {
            assert_eq!(s.phase, Phase::Pending, "{s:#?}");
            assert!(
                s.message.contains("kubectl rollout resume"),
                "{}",
                s.message
            );
        }
        let sets = Api::<ReplicaSet>::default_namespaced(world.client.clone())
            .list(&ListParams::default())
            .await
            .unwrap();
        assert_eq!(sets.items.len(), 1, "no ReplicaSet of the new version yet");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let waiting = rollouts.get("web").await.unwrap().status.unwrap();
    assert_eq!(waiting.phase, Phase::Pending, "{waiting:#?}");

    // `kubectl rollout resume`: the release goes out in batches and the
    // Deployment is handed back unpaused.
    deployments
        .patch("web", &PatchParams::default(), &patch(false))
        .await
        .unwrap();
    let d = deployments.get("web").await.unwrap();
    assert_eq!(d.spec.as_ref().unwrap().paused, Some(true), "still held");
    let done = wait_release(&rollouts, &idle.release).await.status.unwrap();
    assert_eq!(done.phase, Phase::Succeeded, "{done:#?}");
    assert!(done.current_step >= 1, "released in its steps: {done:#?}");
    let d = deployments.get("web").await.unwrap();
    assert_ne!(d.spec.as_ref().unwrap().paused, Some(true));
    assert_eq!(image_of(&d), "registry.example/web:2.0");
    assert_eq!(sluice_marks(&d), Vec::<String>::new());
}

#[tokio::test(start_paused = true)]
async fn a_bound_deployment_released_blue_green_switches_its_service_and_is_handed_back() {
    use k8s_openapi::api::core::v1::Service;
    let world = world("healthy").await;
    ready_workload(&world).await;
    let dir = tempfile::tempdir().unwrap();
    register_webhook(&world, dir.path()).await;
    let deployments: Api<Deployment> = Api::default_namespaced(world.client.clone());
    let services: Api<Service> = Api::default_namespaced(world.client.clone());
    let rollouts: Api<Rollout> = Api::default_namespaced(world.client.clone());
    let binding: Rollout = serde_yaml::from_str(
        "apiVersion: sluice.dev/v1alpha1\nkind: Rollout\nmetadata: {name: web}\nspec:\n  workload: {kind: Deployment, name: web}\n  traffic: {stableService: web}\n  strategy: {style: BlueGreen, blueGreen: {rollbackWindow: 2s}, canary: {steps: [{traffic: 0, pause: {}}, {traffic: 100}]}}\n",
    )
    .unwrap();
    rollouts
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let idle = wait_release(&rollouts, "").await.status.unwrap();
    assert_eq!(idle.phase, Phase::Succeeded, "{idle:#?}");
    let before = deployments.get("web").await.unwrap();
    let selector = |s: Service| s.spec.unwrap().selector.unwrap_or_default();
    let user_selector = selector(services.get("web").await.unwrap());

    set_image(&deployments, "registry.example/web:2.0")
        .await
        .unwrap();
    let paused = wait_phase(&rollouts, |p| p == Phase::Paused)
        .await
        .status
        .unwrap();
    assert_eq!(paused.current_step, 0, "{paused:#?}");
    // Green runs at full size beside blue; the Service still selects blue,
    // and the user's Deployment, held, keeps its pods.
    let green = deployments.get("web-canary").await.unwrap();
    assert_eq!(image_of(&green), "registry.example/web:2.0");
    assert_eq!(green.status.unwrap().ready_replicas, Some(10));
    assert_eq!(
        selector(services.get("web").await.unwrap()).get("pod-template-hash"),
        Some(&paused.stable_revision)
    );
    let d = deployments.get("web").await.unwrap();
    assert_eq!(d.spec.as_ref().unwrap().paused, Some(true));
    assert_eq!(d.status.as_ref().unwrap().ready_replicas, Some(10));

    promote_first_step(&rollouts).await;
    let done = wait_release(&rollouts, &idle.release).await.status.unwrap();
    assert_eq!(done.phase, Phase::Succeeded, "{done:#?}");
    let d = deployments.get("web").await.unwrap();
    assert_eq!(
        (
            image_of(&d),
            d.spec.as_ref().unwrap().paused,
            d.spec.as_ref().unwrap().strategy.clone(),
            sluice_marks(&d)
        ),
        (
            "registry.example/web:2.0".to_owned(),
            None,
            before.spec.as_ref().unwrap().strategy.clone(),
            vec![]
        )
    );
    assert_eq!(d.status.as_ref().unwrap().updated_replicas, Some(10));
    assert!(deployments.get_opt("web-canary").await.unwrap().is_none());
    assert_eq!(
        selector(services.get("web").await.unwrap()),
        user_selector,
        "the Service selects as the user wrote it"
    );
}

/// Ready pods of `web` (not terminating), tracked from a watch, so that no
/// moment between two looks is missed; the fewest seen after the first
/// list, until `stop`.
fn fewest_ready(
    world: &World,
) -> (
    tokio::task::JoinHandle<usize>,
    tokio::sync::oneshot::Sender<()>,
) {
    use futures::StreamExt as _;
    use k8s_openapi::api::core::v1::Pod;
    use kube::runtime::watcher;
    let pods: Api<Pod> = Api::default_namespaced(world.client.clone());
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut ready = std::collections::HashMap::<String, bool>::new();
        let mut fewest = usize::MAX;
        let mut listed = false;
        let mut events = watcher(pods, watcher::Config::default().labels("app=web")).boxed();
        loop {
            let pod = tokio::select! {
                _ = &mut stopped => return fewest,
                Some(Ok(event)) = events.next() => match event {
                    watcher::Event::InitDone => {
                        listed = true;
                        None
                    }
                    watcher::Event::Init => None,
                    watcher::Event::InitApply(pod) | watcher::Event::Apply(pod) => Some((pod, true)),
                    watcher::Event::Delete(pod) => Some((pod, false)),
                },
            };
            let Some((pod, present)) = pod else { continue };
            let is_ready = present
                && pod.metadata.deletion_timestamp.is_none()
                && pod
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            ready.insert(pod.name_any(), is_ready);
            if listed {
                fewest = fewest.min(ready.values().filter(|r| **r).count());
            }
        }
    });
    (task, stop)
}

#[tokio::test(start_paused = true)]
async fn a_revert_keeps_replicas_minus_max_unavailable_available() {
    let world = world("healthy").await;
    ready_workload(&world).await;
    let dir = tempfile::tempdir().unwrap();
    register_webhook(&world, dir.path()).await;
    let deployments: Api<Deployment> = Api::default_namespaced(world.client.clone());
    let rollouts: Api<Rollout> = Api::default_namespaced(world.client.clone());
    let binding: Rollout = binding_with("{replicas: 60%, pause: {}}");
    rollouts
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    wait_release(&rollouts, "").await;
    set_image(&deployments, "registry.example/web:2.0")
        .await
        .unwrap();
    wait_status(&rollouts, "web", "waited with 6 new pods ready", |s| {
        s.phase == Phase::Paused && s.ready_canary_replicas == 6
    })
    .await;
    let (fewest, stop) = fewest_ready(&world);
    // The stable template again (a `git revert`): 4 stable pods must come
    // back while 6 new ones go, never more than maxUnavailable (25% of 10,
    // so 2) missing at once. (A set's ready count lagging its scale-down,
    // which a real cluster shows for longer than the simulator does, is
    // covered by `rollback_targets`' unit test.)
    set_image(&deployments, "registry.example/web:1.0")
        .await
        .unwrap();
    let done = wait_status(&rollouts, "web", "ended the revert", |s| {
        matches!(s.phase, Phase::RolledBack | Phase::Succeeded)
    })
    .await;
    assert_eq!(done.phase, Phase::RolledBack, "{done:#?}");
    assert!(done.message.starts_with("reverted"), "{}", done.message);
    stop.send(()).unwrap();
    let fewest = fewest.await.unwrap();
    assert!(
        fewest >= 8,
        "only {fewest} of 10 pods ready during the revert"
    );
}

#[tokio::test(start_paused = true)]
async fn a_second_binding_that_got_past_the_webhook_is_refused_and_touches_nothing() {
    let world = world("healthy").await;
    ready_workload(&world).await;
    let deployments: Api<Deployment> = Api::default_namespaced(world.client.clone());
    let rollouts: Api<Rollout> = Api::default_namespaced(world.client.clone());
    // Two bindings of one Deployment, as two creates at the same moment can
    // both pass the webhook (here: made before it is registered).
    let binding: Rollout = binding_with("{replicas: 30%}");
    rollouts
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let mut second = binding.clone();
    second.metadata.name = Some("zz-second".into());
    rollouts
        .create(&PostParams::default(), &second)
        .await
        .unwrap();
    let idle = wait_release(&rollouts, "").await.status.unwrap();
    let dir = tempfile::tempdir().unwrap();
    register_webhook(&world, dir.path()).await;

    // The change is held for the first made, and released by it.
    let held = set_image(&deployments, "registry.example/web:2.0")
        .await
        .unwrap();
    assert_eq!(
        held.annotations()
            .get("sluice.dev/rollout")
            .map(String::as_str),
        Some("web")
    );
    let done = wait_release(&rollouts, &idle.release).await.status.unwrap();
    assert_eq!(done.phase, Phase::Succeeded, "{done:#?}");
    // The second says why it does nothing.
    let refused = wait_status(&rollouts, "zz-second", "was refused", |s| {
        s.phase == Phase::Failed
    })
    .await;
    assert!(
        refused.message.contains("is bound to Rollout \"web\""),
        "{}",
        refused.message
    );
    // An update that keeps the workload passes the webhook (a control, a
    // finalizer): deleting the second completes and leaves the Deployment
    // as the first gave it back.
    rollouts
        .delete("zz-second", &DeleteParams::default())
        .await
        .unwrap();
    for _ in 0..100 {
        if rollouts.get_opt("zz-second").await.unwrap().is_none() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(rollouts.get_opt("zz-second").await.unwrap().is_none());
    let d = deployments.get("web").await.unwrap();
    assert_eq!(image_of(&d), "registry.example/web:2.0");
    assert_ne!(d.spec.as_ref().unwrap().paused, Some(true));
    assert_eq!(sluice_marks(&d), Vec::<String>::new());
    // A binding's workload cannot be changed, nor a binding turned into a
    // release of a version.
    let moved = rollouts
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"workload": {"name": "other"}}})),
        )
        .await
        .unwrap_err();
    assert!(
        moved.to_string().contains("spec.workload") && moved.to_string().contains("cannot change"),
        "{moved}"
    );
    let versioned = rollouts
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"images": [{"container": "web", "image": "registry.example/web:9"}]}})),
        )
        .await
        .unwrap_err();
    assert!(versioned.to_string().contains("spec.images"), "{versioned}");
}

#[tokio::test(start_paused = true)]
async fn a_deployment_scaled_to_zero_keeps_its_outcome_and_releases_once_scaled_up() {
    let world = world("healthy").await;
    ready_workload(&world).await;
    let dir = tempfile::tempdir().unwrap();
    register_webhook(&world, dir.path()).await;
    let deployments: Api<Deployment> = Api::default_namespaced(world.client.clone());
    let rollouts: Api<Rollout> = Api::default_namespaced(world.client.clone());
    let binding: Rollout = binding_with("{replicas: 50%}");
    rollouts
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let idle = wait_release(&rollouts, "").await.status.unwrap();
    // Before any release, STABLE and NEW name what runs.
    assert!(!idle.stable_revision.is_empty(), "{idle:#?}");
    assert_eq!(idle.canary_revision, idle.stable_revision);
    assert_eq!(idle.step_state, sluice_executor::crd::StepState::Completed);
    let scale = |n: i32| {
        let deployments = deployments.clone();
        async move {
            deployments
                .patch_scale(
                    "web",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"replicas": n}})),
                )
                .await
                .unwrap();
        }
    };
    scale(0).await;
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let s = rollouts.get("web").await.unwrap().status.unwrap();
    assert_eq!(
        (s.phase, s.message.as_str()),
        (idle.phase, idle.message.as_str())
    );
    // A change at 0 replicas is held and waits, saying why.
    let held = set_image(&deployments, "registry.example/web:2.0")
        .await
        .unwrap();
    assert_eq!(held.spec.as_ref().unwrap().paused, Some(true));
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let s = rollouts.get("web").await.unwrap().status.unwrap();
    assert!(s.message.contains("0 replicas"), "{s:#?}");
    assert_eq!(
        s.phase,
        Phase::Pending,
        "recorded as a release waiting: {s:#?}"
    );
    // Scaled up, it is released.
    scale(4).await;
    let done = wait_release(&rollouts, &idle.release).await.status.unwrap();
    assert_eq!(done.phase, Phase::Succeeded, "{done:#?}");
    let d = deployments.get("web").await.unwrap();
    assert_eq!(image_of(&d), "registry.example/web:2.0");
    assert_ne!(d.spec.as_ref().unwrap().paused, Some(true));
}

#[tokio::test(start_paused = true)]
async fn a_smaller_batch_after_a_changed_strategy_keeps_pods_available() {
    let world = world("healthy").await;
    ready_workload(&world).await;
    let dir = tempfile::tempdir().unwrap();
    register_webhook(&world, dir.path()).await;
    let deployments: Api<Deployment> = Api::default_namespaced(world.client.clone());
    let rollouts: Api<Rollout> = Api::default_namespaced(world.client.clone());
    rollouts
        .create(
            &PostParams::default(),
            &binding_with("{replicas: 60%, pause: {}}, {replicas: 100%}"),
        )
        .await
        .unwrap();
    wait_release(&rollouts, "").await;
    set_image(&deployments, "registry.example/web:2.0")
        .await
        .unwrap();
    wait_status(&rollouts, "web", "waited with 6 new pods ready", |s| {
        s.phase == Phase::Paused && s.ready_canary_replicas == 6
    })
    .await;
    let (fewest, stop) = fewest_ready(&world);
    // The strategy changes to a first step of 10%: the release starts over
    // there, 5 new pods go, and never more than 2 of 10 are missing.
    rollouts
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"strategy": {"canary": {"steps": [
                {"replicas": "10%", "pause": {}}, {"replicas": "100%"}]}}}})),
        )
        .await
        .unwrap();
    let settled = wait_status(&rollouts, "web", "waited at the new first step", |s| {
        s.phase == Phase::Paused && s.current_step == 0 && s.ready_canary_replicas == 1
    })
    .await;
    assert_eq!((settled.canary_replicas, settled.total_steps), (1, 2));
    stop.send(()).unwrap();
    let fewest = fewest.await.unwrap();
    assert!(
        fewest >= 8,
        "only {fewest} of 10 pods ready while the batch shrank"
    );
}
