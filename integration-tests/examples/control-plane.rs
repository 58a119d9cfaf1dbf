//! A real control plane (kube-apiserver with `Node,RBAC` and ServiceAccount
//! admission, kube-controller-manager, etcd) for trying Sluice by hand:
//! writes an admin kubeconfig to the path given and runs until Ctrl-C or
//! SIGTERM.
//!
//! `cargo run -p sluice-integration-tests --example control-plane -- /tmp/plane.kubeconfig`
//!
//! It has no nodes: `sluice-sim --agent-kubeconfig FILE` is one (its pods
//! run by the simulator's kubelets).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a tool for people: stop at the first failure

use sluice_integration_tests::controlplane::ControlPlane;

#[tokio::main]
async fn main() {
    let usage = "usage: control-plane KUBECONFIG_OUT (set SLUICE_CONTROL_PLANE to the folder scripts/build-control-plane prints)";
    let out = match std::env::args().nth(1) {
        Some(flag) if flag.starts_with('-') => {
            eprintln!("{usage}");
            std::process::exit(if flag == "-h" || flag == "--help" {
                0
            } else {
                2
            });
        }
        Some(out) => out,
        None => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    };
    let plane = ControlPlane::start_with_service_accounts().await;
    std::fs::copy(&plane.kubeconfig, &out).expect("writing the kubeconfig");
    println!("ready: KUBECONFIG={out} (Ctrl-C or SIGTERM stops it)");
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    // Dropping the plane stops etcd, kube-apiserver and
    // kube-controller-manager.
    drop(plane);
}
