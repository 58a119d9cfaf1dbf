//! The release's last write to a workload (`writes::disown`) on a
//! simulated API server: from the object as last read, or, when that read
//! is stale, from a fresh one.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests stop at the first failed step

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use sluice_sim::scenario::{Scenario, Simulation};

/// Whether `manager` has an entry in `d`'s managedFields.
fn manages(d: &Deployment, manager: &str) -> bool {
    d.metadata
        .managed_fields
        .iter()
        .flatten()
        .any(|f| f.manager.as_deref() == Some(manager))
}

/// Whether `d` is as a release's end leaves it: unmarked, no `sluice`
/// entry in its managedFields.
fn given_back(d: &Deployment) -> bool {
    !manages(d, "sluice")
        && !d
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key("sluice.dev/rollout"))
}

#[tokio::test]
async fn disowning_works_from_a_fresh_read_and_from_a_stale_one() {
    let sim = Simulation::start(Scenario::load("healthy").unwrap()).unwrap();
    let client = kube::Client::new(sim.api.router(), "default");
    let api: Api<Deployment> = Api::default_namespaced(client);
    let unmark = json!({"metadata": {"annotations": {"sluice.dev/rollout": null}}});
    let mark = |api: Api<Deployment>| async move {
        api.patch(
            "web",
            &sluice_executor::writes::patch(),
            &Patch::Merge(json!({"metadata": {"annotations": {"sluice.dev/rollout": "web"}}})),
        )
        .await
        .unwrap()
    };

    // From the object as the write returned it.
    let known = mark(api.clone()).await;
    assert!(
        manages(&known, "sluice"),
        "{:?}",
        known.metadata.managed_fields
    );
    sluice_executor::writes::disown(&api, "web", Some(&known), unmark.clone())
        .await
        .unwrap();
    let after = api.get("web").await.unwrap();
    assert!(given_back(&after));

    // From a read another writer has moved past: the write conflicts, and
    // it is done again from a fresh read, keeping the other writer's change.
    let stale = mark(api.clone()).await;
    api.patch(
        "web",
        &PatchParams::apply("kubectl").force(),
        &Patch::Apply(json!({"apiVersion": "apps/v1", "kind": "Deployment",
                             "metadata": {"name": "web", "labels": {"team": "shop"}}})),
    )
    .await
    .unwrap();
    sluice_executor::writes::disown(&api, "web", Some(&stale), unmark)
        .await
        .unwrap();
    let after = api.get("web").await.unwrap();
    assert!(given_back(&after));
    assert!(manages(&after, "kubectl"));
    assert_eq!(after.metadata.labels.unwrap()["team"], "shop");
}
