//! The executor's election on the simulated API server: one holder of a
//! shard at a time, the shards shared evenly, a clean hand-over on
//! shutdown, a take-over after a crash, and no shard driven while the
//! replicas disagree on how many there are.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests stop at the first failed step

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use kube::Client;
use sluice_executor::{
    controller::Clock,
    lease::{self, Election, Held, Leading},
};
use sluice_runtime::server::CancellationToken;
use tokio::sync::watch;

const LEASE: Duration = Duration::from_secs(4);
const EVERY: Duration = Duration::from_millis(200);

/// What each replica drives now, as its controller would see it: the
/// shards whose tokens are live. A crashed replica is taken out, as its
/// process would be gone.
///
/// It also holds the one clock every replica reads, as replicas whose
/// clocks agree would.
#[derive(Clone, Default)]
struct Driving(Arc<Mutex<BTreeMap<String, watch::Receiver<Held>>>>, Clock);

impl Driving {
    fn holders(&self, shard: u32) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, held)| held.borrow().holds(shard))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Shards each replica drives.
    fn counts(&self, shards: u32) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for shard in 0..shards {
            for name in self.holders(shard) {
                *counts.entry(name).or_default() += 1;
            }
        }
        counts
    }
}

struct Replica {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn replica(client: &Client, name: &str, shards: u32, driving: &Driving) -> Replica {
    let election = Election {
        lease_duration: LEASE,
        renew_deadline: Duration::from_millis(2_600),
        renew_every: EVERY,
        shards,
        clock: driving.1,
        ..Election::new("default", "sluice-executor", name)
    };
    let stop = CancellationToken::new();
    let driving = driving.clone();
    let name = name.to_owned();
    let task = tokio::spawn(lease::run(
        client.clone(),
        election,
        stop.clone(),
        move |leading: Leading| {
            driving.0.lock().unwrap().insert(name.clone(), leading.held);
        },
    ));
    Replica { stop, task }
}

/// Samples every 20 ms that no shard has two replicas driving it, until
/// the returned token is cancelled.
fn never_two(driving: &Driving, shards: u32) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let done = CancellationToken::new();
    let driving = driving.clone();
    let stop = done.clone();
    let task = tokio::spawn(async move {
        while !stop.is_cancelled() {
            for shard in 0..shards {
                let holders = driving.holders(shard);
                assert!(holders.len() <= 1, "shard {shard} driven by {holders:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    (done, task)
}

/// Waits (paused time) until `check` holds, for at most `within`; returns
/// how long it took.
async fn until(within: Duration, what: &str, check: impl Fn() -> bool) -> Duration {
    let start = tokio::time::Instant::now();
    while !check() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

fn sim() -> (sluice_sim::scenario::Simulation, Client) {
    let sim = sluice_sim::scenario::Simulation::start(
        sluice_sim::scenario::Scenario::load("healthy").unwrap(),
    )
    .unwrap();
    let client = Client::new(sim.api.router(), "default");
    (sim, client)
}

/// The names of the Leases in `default`, sorted, that `pick` picks.
async fn lease_names(client: &Client, pick: impl Fn(&str) -> bool) -> Vec<String> {
    let api: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::default_namespaced(client.clone());
    let mut names: Vec<String> = api
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|l| l.metadata.name)
        .filter(|n| pick(n))
        .collect();
    names.sort();
    names
}

async fn holder(client: &Client, lease: &str) -> Option<String> {
    let api: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::default_namespaced(client.clone());
    api.get_opt(lease)
        .await
        .unwrap()
        .and_then(|l| l.spec?.holder_identity)
}

#[tokio::test(start_paused = true)]
async fn one_replica_leads_and_another_takes_over_on_shutdown_and_on_a_crash() {
    let (_sim, client) = sim();
    let driving = Driving::default();
    let (checked, checker) = never_two(&driving, 1);
    let a = replica(&client, "a", 1, &driving);
    until(LEASE, "a leads", || driving.holders(0) == ["a"]).await;
    assert_eq!(
        holder(&client, "sluice-executor").await.as_deref(),
        Some("a")
    );
    let b = replica(&client, "b", 1, &driving);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(driving.holders(0), ["a"], "a keeps the one shard");

    // a shuts down: it gives the shard up, and b takes over at its next
    // attempt, long before the Lease would have expired.
    a.stop.cancel();
    a.task.await.unwrap();
    let took = until(LEASE, "b takes over", || driving.holders(0) == ["b"]).await;
    assert!(took <= EVERY * 2, "{took:?}");
    assert_eq!(
        holder(&client, "sluice-executor").await.as_deref(),
        Some("b")
    );

    // b dies without giving anything up: c waits for the Lease to expire.
    let c = replica(&client, "c", 1, &driving);
    tokio::time::sleep(EVERY * 2).await;
    b.task.abort();
    let _ = b.task.await;
    driving.0.lock().unwrap().remove("b");
    let took = until(LEASE * 2, "c takes over", || driving.holders(0) == ["c"]).await;
    assert!(took >= LEASE - EVERY * 3, "not before it expires: {took:?}");
    c.stop.cancel();
    c.task.await.unwrap();
    assert!(driving.holders(0).is_empty(), "c stops once stopped");
    checked.cancel();
    checker.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn shards_are_shared_evenly_and_taken_over_when_a_replica_leaves_or_dies() {
    const SHARDS: u32 = 6;
    let (_sim, client) = sim();
    let driving = Driving::default();
    let (checked, checker) = never_two(&driving, SHARDS);
    let all_held = |d: &Driving| (0..SHARDS).all(|s| d.holders(s).len() == 1);

    // Alone, a replica drives every shard.
    let a = replica(&client, "a", SHARDS, &driving);
    until(LEASE, "a holds all", || {
        driving.counts(SHARDS).get("a") == Some(&6)
    })
    .await;

    // Two more join: a gives the excess up at once, and each ends with
    // its fair share of two, every shard driven.
    let b = replica(&client, "b", SHARDS, &driving);
    let c = replica(&client, "c", SHARDS, &driving);
    until(LEASE, "shared evenly", || {
        all_held(&driving) && driving.counts(SHARDS).values().all(|n| *n == 2)
    })
    .await;
    // And it stays so: nothing moves while nothing changes.
    let before: Vec<_> = (0..SHARDS).map(|s| driving.holders(s)).collect();
    tokio::time::sleep(LEASE * 3).await;
    let after: Vec<_> = (0..SHARDS).map(|s| driving.holders(s)).collect();
    assert_eq!(before, after, "shards moved with nothing changed");

    // a leaves: b and c take its two shards at their next attempts.
    a.stop.cancel();
    a.task.await.unwrap();
    driving.0.lock().unwrap().remove("a");
    let took = until(LEASE, "a's shards taken", || {
        all_held(&driving) && driving.counts(SHARDS).values().all(|n| *n == 3)
    })
    .await;
    assert!(took <= EVERY * 3, "after a clean leave: {took:?}");

    // c dies holding three: b takes them once their Leases expire.
    c.task.abort();
    let _ = c.task.await;
    drop(c.stop);
    driving.0.lock().unwrap().remove("c");
    let took = until(LEASE * 2, "c's shards taken", || {
        all_held(&driving) && driving.counts(SHARDS).get("b") == Some(&6)
    })
    .await;
    assert!(
        took >= LEASE - EVERY * 3,
        "not before they expire: {took:?}"
    );
    assert!(
        took <= LEASE + EVERY * 3,
        "within the Lease's duration: {took:?}"
    );

    // A replica with another shard count joins: nobody drives anything
    // while it is there, and b takes every shard back once it is gone.
    let d = replica(&client, "d", 3, &driving);
    until(LEASE, "b stops", || {
        driving.counts(SHARDS).is_empty() && driving.counts(3).is_empty()
    })
    .await;
    tokio::time::sleep(LEASE).await;
    assert!(
        driving.counts(SHARDS).is_empty(),
        "driven during disagreement"
    );
    d.stop.cancel();
    d.task.await.unwrap();
    until(LEASE, "b holds all again", || {
        driving.counts(SHARDS).get("b") == Some(&6)
    })
    .await;
    b.stop.cancel();
    b.task.await.unwrap();
    checked.cancel();
    checker.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn four_shards_over_three_replicas_are_held_two_one_one_and_a_dead_members_lease_goes() {
    let (_sim, client) = sim();
    let driving = Driving::default();
    let (checked, checker) = never_two(&driving, 4);
    // The first to come holds everything, then gives up what is not its
    // share as the others join.
    let a = replica(&client, "a", 4, &driving);
    until(LEASE, "a holds all", || {
        driving.counts(4).get("a") == Some(&4)
    })
    .await;
    let b = replica(&client, "b", 4, &driving);
    let c = replica(&client, "c", 4, &driving);
    until(LEASE, "two, one and one", || {
        let counts = driving.counts(4);
        let mut n: Vec<usize> = counts.values().copied().collect();
        n.sort_unstable();
        n == [1, 1, 2] && (0..4).all(|s| driving.holders(s).len() == 1)
    })
    .await;
    // The first by identity holds the extra one.
    assert_eq!(driving.counts(4).get("a"), Some(&2));

    // c dies: its member Lease is deleted by the others once it has been
    // expired for a whole duration.
    c.task.abort();
    let _ = c.task.await;
    driving.0.lock().unwrap().remove("c");
    let members = || async { lease_names(&client, |n| n.contains("-member-")).await.len() };
    assert_eq!(members().await, 3);
    tokio::time::sleep(LEASE * 3).await;
    assert_eq!(members().await, 2, "the dead member's Lease is gone");
    assert_eq!(driving.counts(4).values().sum::<usize>(), 4);
    for r in [a, b] {
        r.stop.cancel();
        r.task.await.unwrap();
    }
    checked.cancel();
    checker.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn two_processes_with_one_identity_drive_nothing_until_one_is_gone() {
    let (_sim, client) = sim();
    let driving = Driving::default();
    let first = replica(&client, "twin", 2, &driving);
    until(LEASE, "it holds both", || {
        driving.counts(2).get("twin") == Some(&2)
    })
    .await;
    // A second process under the same name: the view of "twin" is now the
    // second's, and the first's is checked through its Leases.
    let first_view = driving.0.lock().unwrap().remove("twin").unwrap();
    let second = replica(&client, "twin", 2, &driving);
    // A third replica, and the twins standing aside: it takes both shards.
    let other = replica(&client, "other", 2, &driving);
    until(
        LEASE * 2,
        "neither twin drives, the other drives both",
        || {
            first_view.borrow().shards().count() == 0
                && driving
                    .0
                    .lock()
                    .unwrap()
                    .get("twin")
                    .is_none_or(|h| h.borrow().shards().count() == 0)
                && driving.counts(2).get("other") == Some(&2)
        },
    )
    .await;
    tokio::time::sleep(LEASE).await;
    assert_eq!(first_view.borrow().shards().count(), 0, "still none");
    other.stop.cancel();
    other.task.await.unwrap();
    first.stop.cancel();
    first.task.await.unwrap();
    until(LEASE * 3, "the one left drives both", || {
        driving.counts(2).get("twin") == Some(&2)
    })
    .await;
    second.stop.cancel();
    second.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_leases_of_an_earlier_shard_count_go_once_nobody_holds_them() {
    let (_sim, client) = sim();
    let driving = Driving::default();
    let shard_leases = || {
        lease_names(&client, |n| {
            n.starts_with("sluice-executor") && !n.contains("-member-")
        })
    };
    let eight = replica(&client, "a", 8, &driving);
    until(LEASE, "all eight held", || {
        driving.counts(8).get("a") == Some(&8)
    })
    .await;
    eight.stop.cancel();
    eight.task.await.unwrap();
    assert_eq!(shard_leases().await.len(), 8);
    let four = replica(&client, "b", 4, &driving);
    until(LEASE, "four held", || {
        driving.counts(4).get("b") == Some(&4)
    })
    .await;
    tokio::time::sleep(LEASE * 3).await;
    assert_eq!(
        shard_leases().await,
        (0..4)
            .map(|i| format!("sluice-executor-{i}"))
            .collect::<Vec<_>>()
    );
    four.stop.cancel();
    four.task.await.unwrap();
}
