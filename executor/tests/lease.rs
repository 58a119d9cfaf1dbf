//! The executor's leader election on the simulated API server: one holder
//! at a time, a clean hand-over on shutdown, a take-over after a crash.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests stop at the first failed step

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use kube::Client;
use sluice_executor::lease::{self, Election};
use sluice_runtime::server::CancellationToken;

/// Counts how many of the replicas lead right now.
#[derive(Clone, Default)]
struct Leaders(Arc<AtomicUsize>);

fn replica(
    client: &Client,
    name: &str,
    leaders: &Leaders,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let election = Election {
        lease_duration: Duration::from_secs(4),
        renew_deadline: Duration::from_millis(1200),
        renew_every: Duration::from_millis(200),
        ..Election::new("default", "sluice-executor", name)
    };
    let stop = CancellationToken::new();
    let leaders = leaders.clone();
    let task = tokio::spawn(lease::run(
        client.clone(),
        election,
        stop.clone(),
        move |leading| {
            let leaders = leaders.clone();
            leaders.0.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                leading.cancelled().await;
                leaders.0.fetch_sub(1, Ordering::SeqCst);
            });
        },
    ));
    (stop, task)
}

async fn holder(client: &Client) -> Option<String> {
    let api: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::default_namespaced(client.clone());
    api.get_opt("sluice-executor")
        .await
        .unwrap()
        .and_then(|l| l.spec?.holder_identity)
}

async fn wait_for_holder(client: &Client, name: &str) {
    for _ in 0..100 {
        if holder(client).await.as_deref() == Some(name) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{name} never held the lease; holder is {:?}",
        holder(client).await
    );
}

#[tokio::test(start_paused = true)]
async fn one_replica_leads_and_another_takes_over_on_shutdown_and_on_a_crash() {
    let sim = sluice_sim::scenario::Simulation::start(
        sluice_sim::scenario::Scenario::load("healthy").unwrap(),
    )
    .unwrap();
    let client = Client::new(sim.api.router(), "default");
    let leaders = Leaders::default();

    let (a_stop, a_task) = replica(&client, "a", &leaders);
    wait_for_holder(&client, "a").await;
    let (b_stop, b_task) = replica(&client, "b", &leaders);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        holder(&client).await.as_deref(),
        Some("a"),
        "a keeps renewing"
    );
    assert_eq!(
        leaders.0.load(Ordering::SeqCst),
        1,
        "only one replica leads"
    );

    // a shuts down: it releases, and b takes over at its next attempt.
    a_stop.cancel();
    a_task.await.unwrap();
    wait_for_holder(&client, "b").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(leaders.0.load(Ordering::SeqCst), 1);

    // b dies without releasing: c waits for the lease to expire.
    let (c_stop, c_task) = replica(&client, "c", &leaders);
    b_task.abort();
    let _ = b_task.await;
    drop(b_stop);
    leaders.0.fetch_sub(1, Ordering::SeqCst); // b's leadership died with it
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        holder(&client).await.as_deref(),
        Some("b"),
        "not before it expires"
    );
    wait_for_holder(&client, "c").await;
    assert_eq!(leaders.0.load(Ordering::SeqCst), 1);
    c_stop.cancel();
    c_task.await.unwrap();
    // The count falls in a task of its own once leadership ends.
    tokio::time::timeout(Duration::from_secs(5), async {
        while leaders.0.load(Ordering::SeqCst) != 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("c stops leading once stopped");
}
