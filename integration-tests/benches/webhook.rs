//! What the admission webhook adds to a workload update on the real
//! control plane: the same merge patch of a Deployment's pod template,
//! timed from the client, alternately on a Deployment the webhook holds
//! (namespace `default`, a bound Rollout) and on one the API server does
//! not call it for (namespace `sluice-system`, left out by
//! `deploy/base/webhook.yaml`'s namespace selector), in the same run. Reports
//! p50 and p99 of each and their difference, and the webhook's own answer
//! time. No controller runs, so no release starts: only admission is
//! measured.
//!
//! Target: under 5 ms added at p99 on loopback.
//!
//! `cargo bench -p sluice-integration-tests --bench webhook -- 1000`

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark stops at the first failure

use std::{sync::Arc, time::Instant};

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Namespace};
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;
use sluice_executor::{
    admission::{Bindings, Bound},
    crd::Rollout,
};
use sluice_integration_tests::{controlplane::ControlPlane, pki::Authority};
use tokio_util::sync::CancellationToken;

fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let plane = ControlPlane::start().await;
    let client = plane.client().await;
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let (ok, out) = plane.kubectl(&[
        "apply",
        "--server-side",
        "-f",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/crds/rollouts.yaml"),
    ]);
    assert!(ok, "{out}");
    plane.kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/rollouts.sluice.dev",
    ]);

    // The webhook, registered as deploy/base/webhook.yaml says, at a loopback URL.
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new(dir.path(), "ca");
    let pair = ca.issue("webhook");
    let bound = Bound::bind("127.0.0.1:0".parse().unwrap(), &pair.cert, &pair.key)
        .await
        .unwrap();
    let addr = bound.addr();
    let bindings = Bindings::start(client.clone(), stop.clone());
    let metrics = Arc::new(sluice_executor::metrics::Metrics::default());
    tokio::spawn(bound.serve(bindings.clone(), metrics.clone(), stop.clone()));
    for manifest in
        sluice_executor::admission::registration(addr, &std::fs::read(&ca.cert).unwrap())
    {
        let file = dir.path().join("hook.json");
        std::fs::write(&file, manifest.to_string()).unwrap();
        let (ok, out) = plane.kubectl(&["apply", "-f", file.to_str().unwrap()]);
        assert!(ok, "{out}");
    }

    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "sluice-system"}})).unwrap(),
        )
        .await
        .unwrap();
    let web = |ns: &str| -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": ns},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "registry.example/web:0"}]}}}
        }))
        .unwrap()
    };
    let held: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let plain: Api<Deployment> = Api::namespaced(client.clone(), "sluice-system");
    held.create(&PostParams::default(), &web("default"))
        .await
        .unwrap();
    plain
        .create(&PostParams::default(), &web("sluice-system"))
        .await
        .unwrap();
    let binding: Rollout = serde_yaml::from_str(
        "apiVersion: sluice.dev/v1alpha1\nkind: Rollout\nmetadata: {name: web, namespace: default}\nspec:\n  workload: {kind: Deployment, name: web}\n",
    )
    .unwrap();
    Api::<Rollout>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    bindings.wait_for("default", "web").await;

    let update = |api: Api<Deployment>, i: usize| async move {
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": format!("registry.example/web:{i}")}]}}}});
        let started = Instant::now();
        api.patch("web", &PatchParams::default(), &Patch::Strategic(patch))
            .await
            .unwrap();
        started.elapsed().as_secs_f64() * 1000.0
    };
    // The webhook configuration reaches the API server's cache a moment
    // after it is written: wait until an update is held.
    for i in 0.. {
        update(held.clone(), i).await;
        if metrics.admissions("held") > 0 {
            break;
        }
        assert!(i < 1000, "the API server never called the webhook");
    }
    // Warm-up, then the measured, alternating rounds.
    for i in 0..50 {
        update(held.clone(), i).await;
        update(plain.clone(), i).await;
    }
    let (mut with, mut without) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        with.push(update(held.clone(), 1000 + i).await);
        without.push(update(plain.clone(), 1000 + i).await);
    }
    with.sort_by(f64::total_cmp);
    without.sort_by(f64::total_cmp);
    let row = |name: &str, v: &[f64]| {
        println!(
            "{name:<28} p50 {:6.2} ms   p99 {:6.2} ms",
            quantile(v, 0.5),
            quantile(v, 0.99)
        );
    };
    println!("{n} updates each, alternating, on kube-apiserver over loopback:");
    row("no webhook (baseline)", &without);
    row("through the webhook", &with);
    println!(
        "{:<28} p50 {:6.2} ms   p99 {:6.2} ms   ({:.2}x / {:.2}x the baseline)",
        "added",
        quantile(&with, 0.5) - quantile(&without, 0.5),
        quantile(&with, 0.99) - quantile(&without, 0.99),
        quantile(&with, 0.5) / quantile(&without, 0.5),
        quantile(&with, 0.99) / quantile(&without, 0.99),
    );
    println!(
        "webhook reviews answered: {} held, {} allowed",
        metrics.admissions("held"),
        metrics.admissions("allowed")
    );
}
