//! Whose reconcile runs next when the controller is at its bound.
//!
//! kube-runtime's runner, at its concurrency bound, takes waiting requests
//! in its map's hash order: under a burst (10,000 rollouts at once) a
//! request could wait behind many that came after it, and a rollback as
//! long as any advance. So the runner is left unbounded and every
//! reconcile takes a turn here first: at most `bound` run at once, the
//! others wait in order of arrival, and a release that must go back (an
//! abort asked, a failed verdict on its step, a rollback under way) goes
//! before every advance.
//!
//! A turn is handed from the reconcile that ends straight to the next in
//! line; a reconcile dropped while it waits gives back a turn it was
//! handed meanwhile.

use std::{
    cmp::Ordering,
    collections::BinaryHeap,
    sync::{Arc, Mutex},
};

use tokio::sync::oneshot;

/// The turns of the controller's reconciles.
#[derive(Debug)]
pub struct Turns {
    bound: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    running: usize,
    arrivals: u64,
    waiting: BinaryHeap<Waiter>,
}

#[derive(Debug)]
struct Waiter {
    urgent: bool,
    arrival: u64,
    wake: oneshot::Sender<()>,
}

impl PartialEq for Waiter {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Waiter {}

impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Waiter {
    /// The greatest goes first: urgent, then the earliest arrival.
    fn cmp(&self, other: &Self) -> Ordering {
        self.urgent
            .cmp(&other.urgent)
            .then_with(|| other.arrival.cmp(&self.arrival))
    }
}

/// A reconcile's turn; the next in line gets it when this drops.
#[derive(Debug)]
pub struct Turn {
    turns: Arc<Turns>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.turns.release();
    }
}

/// A turn being waited for; one handed to it after it was dropped is
/// passed on.
struct Waiting {
    turns: Arc<Turns>,
    handed: Option<oneshot::Receiver<()>>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(mut rx) = self.handed.take() {
            rx.close();
            if rx.try_recv().is_ok() {
                self.turns.release();
            }
        }
    }
}

impl Turns {
    /// At most `bound` turns at once (at least one).
    pub fn new(bound: usize) -> Arc<Self> {
        Arc::new(Self {
            bound: bound.max(1),
            state: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits for a turn; `urgent` ones go before the others.
    pub async fn take(self: &Arc<Self>, urgent: bool) -> Turn {
        let rx = {
            let mut state = self.lock();
            if state.running < self.bound {
                state.running += 1;
                return Turn {
                    turns: Arc::clone(self),
                };
            }
            let (wake, rx) = oneshot::channel();
            state.arrivals += 1;
            let arrival = state.arrivals;
            state.waiting.push(Waiter {
                urgent,
                arrival,
                wake,
            });
            rx
        };
        let mut waiting = Waiting {
            turns: Arc::clone(self),
            handed: Some(rx),
        };
        if let Some(rx) = waiting.handed.as_mut() {
            // The sender is only dropped by a hand-over or by `Turns`
            // going away with the controller; either way, go on.
            let _ = rx.await;
        }
        waiting.handed = None;
        Turn {
            turns: Arc::clone(self),
        }
    }

    /// A turn ends: handed to the next waiter still waiting, or freed.
    fn release(&self) {
        let mut state = self.lock();
        while let Some(next) = state.waiting.pop() {
            if next.wake.send(()).is_ok() {
                return;
            }
        }
        state.running = state.running.saturating_sub(1);
    }

    /// Reconciles running or waiting (for tests and metrics).
    pub fn load(&self) -> (usize, usize) {
        let state = self.lock();
        (state.running, state.waiting.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waiters_go_in_arrival_order_with_the_urgent_first() {
        let turns = Turns::new(1);
        let first = turns.take(false).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (name, urgent) in [("a", false), ("b", false), ("rollback", true), ("c", false)] {
            let (turns, order) = (Arc::clone(&turns), Arc::clone(&order));
            tasks.push(tokio::spawn(async move {
                let _turn = turns.take(urgent).await;
                order.lock().unwrap().push(name);
                tokio::task::yield_now().await;
            }));
            // Each arrives before the next.
            tokio::task::yield_now().await;
        }
        assert_eq!(turns.load(), (1, 4));
        drop(first);
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["rollback", "a", "b", "c"]);
        assert_eq!(turns.load(), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_dropped_gives_back_the_turn_it_was_handed() {
        let turns = Turns::new(1);
        let first = turns.take(false).await;
        let gone = {
            let turns = Arc::clone(&turns);
            tokio::spawn(async move {
                let _turn = turns.take(false).await;
                std::future::pending::<()>().await;
            })
        };
        tokio::task::yield_now().await;
        let later = {
            let turns = Arc::clone(&turns);
            tokio::spawn(async move { drop(turns.take(false).await) })
        };
        tokio::task::yield_now().await;
        // The turn is handed to the first waiter, which is cancelled
        // before it runs: the turn goes on to the next.
        drop(first);
        gone.abort();
        let _ = gone.await;
        tokio::time::timeout(std::time::Duration::from_secs(60), later)
            .await
            .expect("the turn handed to the cancelled waiter was lost")
            .unwrap();
        assert_eq!(turns.load(), (0, 0), "no turn lost");
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_the_bound_run_at_once() {
        let turns = Turns::new(3);
        let held: Vec<Turn> = futures::future::join_all((0..3).map(|_| turns.take(false))).await;
        let waiting = {
            let turns = Arc::clone(&turns);
            tokio::spawn(async move { drop(turns.take(false).await) })
        };
        tokio::task::yield_now().await;
        assert_eq!(turns.load(), (3, 1));
        drop(held);
        waiting.await.unwrap();
        assert_eq!(turns.load(), (0, 0));
    }
}
