//! The controller loop: triggers in, reconciles out, in the order of
//! [`Queue`].
//!
//! *Guarantees*:
//! - the triggers are read as they come, whatever runs, so the caches they
//!   feed never wait for a reconcile slot;
//! - nothing runs before the store of objects has listed; each run reads
//!   the object as the store has it when the run starts, and a key the
//!   store no longer has is dropped;
//! - at most `concurrency` runs at once (0: no bound), never two of one
//!   key; the runs are polled by the loop's own task, as kube-runtime's
//!   are (a task of its own for each measured no better);
//! - a run that panics is logged and run again after [`PANIC_RETRY`];
//! - only keys `owner` gives a token for are queued and run (the shards
//!   this replica holds); a run whose token is cancelled is dropped at
//!   once, wherever it was (as a killed process would be), and its key is
//!   not run again until it is asked for with a token;
//! - on shutdown no new run starts and the loop returns once the running
//!   ones end.
//!
//! It stands in for kube-runtime's `Controller::run`, whose runner took
//! waiting keys in hash order under a backlog and knew no urgency.

use std::{future::Future, panic::AssertUnwindSafe, pin::Pin, sync::Arc, time::Duration};

use futures::{FutureExt, Stream, StreamExt, stream::FuturesUnordered};
use kube::{
    Resource,
    runtime::reflector::{ObjectRef, Store},
};
use sluice_runtime::server::CancellationToken;
use tokio::time::Instant;

pub(crate) use super::queue::Lane;
use super::queue::Queue;

/// What a reconcile asks for after it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    requeue_after: Option<Duration>,
}

impl Action {
    /// Run again after `after`, unless a trigger comes sooner.
    #[must_use]
    pub const fn requeue(after: Duration) -> Self {
        Self {
            requeue_after: Some(after),
        }
    }

    /// Run again only on a trigger.
    #[must_use]
    pub const fn await_change() -> Self {
        Self {
            requeue_after: None,
        }
    }

    /// How long until the reconcile runs again without a trigger.
    pub fn requeue_after(&self) -> Option<Duration> {
        self.requeue_after
    }
}

/// How long after a panicked run its key runs again.
pub(crate) const PANIC_RETRY: Duration = Duration::from_secs(5);

/// The queue's depth, reported after every change (keys waiting per lane,
/// in [`Lane`]'s order, and keys running), and how long a key that starts
/// waited.
pub(crate) trait Report: Send + 'static {
    fn depth(&self, waiting: [usize; 3], running: usize);
    fn waited(&self, waited: Duration);
}

impl Report for () {
    fn depth(&self, _: [usize; 3], _: usize) {}
    fn waited(&self, _: Duration) {}
}

impl Report for Arc<crate::metrics::Metrics> {
    fn depth(&self, waiting: [usize; 3], running: usize) {
        self.queued(waiting, running);
    }
    fn waited(&self, waited: Duration) {
        self.dequeued(waited);
    }
}

/// What the loop is given.
pub(crate) struct Loop<K: Resource<DynamicType = ()> + 'static, L, R, O> {
    /// Where objects are read when their run starts.
    pub(crate) store: Store<K>,
    /// The lane an object's trigger queues in.
    pub(crate) lane: L,
    /// One run.
    pub(crate) reconcile: R,
    /// Runs at once, at most (0: no bound).
    pub(crate) concurrency: usize,
    /// The token a key's run holds, when this replica may run it.
    pub(crate) owner: O,
}

impl<K, L, R, O, F> Loop<K, L, R, O>
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    L: Fn(&Arc<K>) -> Lane,
    R: Fn(Arc<K>) -> F,
    O: Fn(&ObjectRef<K>) -> Option<CancellationToken>,
    F: Future<Output = Action> + Send + 'static,
{
    /// Runs until `triggers` ends or `shutdown` completes, then until the
    /// running reconciles end.
    pub(crate) async fn run(
        self,
        triggers: impl Stream<Item = ObjectRef<K>> + Send,
        shutdown: impl Future<Output = ()>,
        report: impl Report,
    ) {
        let Self {
            store,
            lane,
            reconcile,
            concurrency,
            owner,
        } = self;
        let mut queue: Queue<ObjectRef<K>> = Queue::default();
        let mut runs = FuturesUnordered::<Run<K>>::new();
        let triggers = triggers.fuse();
        let ready = store.wait_until_ready();
        tokio::pin!(triggers, shutdown, ready);
        let (mut listed, mut stopping) = (false, false);
        // A key asked for, in the lane its object says.
        let ask = |queue: &mut Queue<ObjectRef<K>>, key: ObjectRef<K>, now: Instant| {
            if owner(&key).is_none() {
                return;
            }
            let lane = store.get(&key).map_or(Lane::Other, |o| lane(&o));
            queue.push(key, lane, now);
        };
        let ended = |queue: &mut Queue<ObjectRef<K>>, key: ObjectRef<K>, action: Option<Action>| {
            let now = Instant::now();
            let next = match action {
                Some(action) => action.requeue_after.map(|after| now + after),
                None => {
                    tracing::error!(object = %key, "a reconcile panicked; it runs again later");
                    Some(now + PANIC_RETRY)
                }
            };
            queue.done(key, next, now);
        };
        loop {
            // Everything the watches and the runs have ready goes into the
            // queue before the next run is chosen: a change waiting to be
            // read would leave the caches behind and the choice blind.
            for _ in 0..INGEST {
                if stopping {
                    break;
                }
                match triggers.next().now_or_never() {
                    Some(Some(key)) => ask(&mut queue, key, Instant::now()),
                    Some(None) => stopping = true,
                    None => break,
                }
            }
            while let Some(Some((key, action))) = runs.next().now_or_never() {
                ended(&mut queue, key, action);
            }
            while listed && !stopping && (concurrency == 0 || runs.len() < concurrency) {
                let Some((key, since)) = queue.pop() else {
                    break;
                };
                let now = Instant::now();
                let (Some(object), Some(token)) = (store.get(&key), owner(&key)) else {
                    queue.done(key, None, now);
                    continue;
                };
                report.waited(now.saturating_duration_since(since));
                // Boxed at once: a reconcile's future is large, and each
                // move of it unboxed costs its size in stack.
                let run = Box::pin(AssertUnwindSafe(reconcile(object)).catch_unwind());
                runs.push(Box::pin(async move {
                    tokio::select! {
                        biased;
                        // Not this replica's any more: dropped, not retried.
                        () = token.cancelled() => (key, Some(Action::await_change())),
                        ended = run => (key, ended.ok()),
                    }
                }));
            }
            let (waiting, busy) = queue.depth();
            report.depth(waiting, busy);
            if stopping && runs.is_empty() {
                return;
            }
            let due = queue.next_due();
            tokio::select! {
                () = &mut shutdown, if !stopping => stopping = true,
                Some((key, action)) = runs.next(), if !runs.is_empty() => {
                    ended(&mut queue, key, action);
                }
                result = &mut ready, if !listed => {
                    if result.is_err() {
                        // The store's writer is gone: nothing would ever
                        // list, and nothing can run.
                        stopping = true;
                    }
                    listed = true;
                }
                () = until(due), if due.is_some() && !stopping => {
                    let now = Instant::now();
                    for key in queue.due(now) {
                        ask(&mut queue, key, now);
                    }
                }
                trigger = triggers.next(), if !stopping => match trigger {
                    Some(key) => ask(&mut queue, key, Instant::now()),
                    None => stopping = true,
                },
            }
        }
    }
}

/// Triggers read at most before the next run is chosen, so a storm of
/// watch events cannot hold the runs up.
const INGEST: usize = 1024;

/// A reconcile under way: its key, and its action once it ends (`None`
/// when it panicked).
type Run<K> = Pin<Box<dyn Future<Output = (ObjectRef<K>, Option<Action>)> + Send>>;

/// Completes at `due`.
async fn until(due: Option<Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::{reflector, watcher};

    use super::*;

    fn map(name: &str, urgent: bool) -> ConfigMap {
        let mut m = ConfigMap::default();
        m.metadata.name = Some(name.into());
        m.metadata.namespace = Some("ns".into());
        if urgent {
            m.metadata.labels = Some([("urgent".to_owned(), "yes".to_owned())].into());
        }
        m
    }

    fn key(name: &str) -> ObjectRef<ConfigMap> {
        ObjectRef::new(name).within("ns")
    }

    /// A store listing `objects`.
    fn listed(objects: &[ConfigMap]) -> Store<ConfigMap> {
        let (reader, mut writer) = reflector::store();
        writer.apply_watcher_event(&watcher::Event::Init);
        for o in objects {
            writer.apply_watcher_event(&watcher::Event::InitApply(o.clone()));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        // The reader's readiness lives as long as a writer does.
        std::mem::forget(writer);
        reader
    }

    /// Every key may run, none is ever taken away.
    #[allow(clippy::unnecessary_wraps)] // the owner's signature
    fn anyone(_: &ObjectRef<ConfigMap>) -> Option<CancellationToken> {
        Some(CancellationToken::new())
    }

    fn urgent(o: &Arc<ConfigMap>) -> Lane {
        if o.metadata.labels.is_some() {
            Lane::Urgent
        } else {
            Lane::Moving
        }
    }

    /// Runs the loop over `triggers` with one slot; each run takes a
    /// second and returns `action`. Returns the runs' order.
    async fn order(
        objects: &[ConfigMap],
        triggers: Vec<&str>,
        action: Action,
        stop_after: Duration,
    ) -> Vec<(String, u64)> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let start = Instant::now();
        let triggers: Vec<_> = triggers.into_iter().map(key).collect();
        Loop {
            store: listed(objects),
            lane: urgent,
            reconcile: {
                let seen = Arc::clone(&seen);
                move |o: Arc<ConfigMap>| {
                    let seen = Arc::clone(&seen);
                    async move {
                        seen.lock()
                            .unwrap()
                            .push((o.metadata.name.clone().unwrap(), start.elapsed().as_secs()));
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        action
                    }
                }
            },
            concurrency: 1,
            owner: anyone,
        }
        .run(
            futures::stream::iter(triggers).chain(futures::stream::pending()),
            tokio::time::sleep(stop_after),
            (),
        )
        .await;
        seen.lock().unwrap().clone()
    }

    #[tokio::test(start_paused = true)]
    async fn runs_urgent_first_then_in_arrival_order_once_each_and_skips_the_gone() {
        let objects = [map("a", false), map("b", false), map("c", true)];
        let runs = order(
            &objects,
            vec!["a", "b", "gone", "b", "c", "a"],
            Action::await_change(),
            Duration::from_secs(30),
        )
        .await;
        // All are read before the first run: `c` is urgent, then `a` and
        // `b` in the order they first asked; each once.
        let names: Vec<_> = runs.iter().map(|(n, t)| (n.as_str(), *t)).collect();
        assert_eq!(names, vec![("c", 0), ("a", 1), ("b", 2)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_requeue_runs_again_when_due_and_shutdown_waits_for_the_run() {
        let runs = order(
            &[map("a", false)],
            vec!["a"],
            Action::requeue(Duration::from_secs(10)),
            Duration::from_secs(25),
        )
        .await;
        // Runs at 0 s (ends at 1 s, due at 11 s), at 11 s and at 22 s; the
        // next would be at 33 s, after the shutdown at 25 s.
        assert_eq!(
            runs,
            vec![("a".into(), 0), ("a".into(), 11), ("a".into(), 22)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_runs_before_the_store_has_listed() {
        let (reader, mut writer) = reflector::store::<ConfigMap>();
        let ran = Arc::new(Mutex::new(Vec::new()));
        let run = Loop {
            store: reader,
            lane: urgent,
            reconcile: {
                let ran = Arc::clone(&ran);
                move |o: Arc<ConfigMap>| {
                    ran.lock().unwrap().push(o.metadata.name.clone().unwrap());
                    async { Action::await_change() }
                }
            },
            concurrency: 0,
            owner: anyone,
        }
        .run(
            futures::stream::iter([key("a")]).chain(futures::stream::pending()),
            tokio::time::sleep(Duration::from_secs(5)),
            (),
        );
        let list = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert!(ran.lock().unwrap().is_empty(), "ran before the list");
            writer.apply_watcher_event(&watcher::Event::Init);
            writer.apply_watcher_event(&watcher::Event::InitApply(map("a", false)));
            writer.apply_watcher_event(&watcher::Event::InitDone);
        };
        tokio::join!(run, list);
        assert_eq!(*ran.lock().unwrap(), vec!["a".to_owned()]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_run_is_retried_and_the_others_go_on() {
        let tries = Arc::new(Mutex::new(Vec::new()));
        Loop {
            store: listed(&[map("bad", false), map("good", false)]),
            lane: urgent,
            reconcile: {
                let tries = Arc::clone(&tries);
                move |o: Arc<ConfigMap>| {
                    let tries = Arc::clone(&tries);
                    async move {
                        let name = o.metadata.name.clone().unwrap();
                        tries.lock().unwrap().push(name.clone());
                        assert_ne!(name, "bad", "a reconcile that panics");
                        Action::await_change()
                    }
                }
            },
            concurrency: 1,
            owner: anyone,
        }
        .run(
            futures::stream::iter([key("bad"), key("good")]).chain(futures::stream::pending()),
            tokio::time::sleep(PANIC_RETRY + Duration::from_secs(1)),
            (),
        )
        .await;
        assert_eq!(*tries.lock().unwrap(), vec!["bad", "good", "bad"]);
    }

    #[tokio::test(start_paused = true)]
    async fn only_owned_keys_run_and_a_run_taken_away_stops_at_once() {
        // `a` is owned until 2.5 s; `b` never is; `c` always is.
        let a_token = CancellationToken::new();
        let events = Arc::new(Mutex::new(Vec::new()));
        let start = Instant::now();
        Loop {
            store: listed(&[map("a", false), map("b", false), map("c", false)]),
            lane: urgent,
            reconcile: {
                let events = Arc::clone(&events);
                move |o: Arc<ConfigMap>| {
                    let events = Arc::clone(&events);
                    async move {
                        let name = o.metadata.name.clone().unwrap();
                        // Three one-second steps, each recorded when done.
                        for step in 1..=3 {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            events.lock().unwrap().push((
                                name.clone(),
                                step,
                                start.elapsed().as_secs(),
                            ));
                        }
                        Action::requeue(Duration::from_secs(1))
                    }
                }
            },
            concurrency: 0,
            owner: {
                let a_token = a_token.clone();
                move |k: &ObjectRef<ConfigMap>| match k.name.as_str() {
                    "a" => Some(a_token.clone()).filter(|t| !t.is_cancelled()),
                    "c" => Some(CancellationToken::new()),
                    _ => None,
                }
            },
        }
        .run(
            futures::stream::iter([key("a"), key("b"), key("c")]).chain(futures::stream::pending()),
            async {
                tokio::time::sleep(Duration::from_millis(2_500)).await;
                a_token.cancel();
                tokio::time::sleep(Duration::from_millis(5_000)).await;
            },
            (),
        )
        .await;
        let events = events.lock().unwrap().clone();
        let of = |n: &str| -> Vec<(u32, u64)> {
            events
                .iter()
                .filter(|(name, _, _)| name == n)
                .map(|(_, step, at)| (*step, *at))
                .collect()
        };
        // `a` did two steps and stopped in its third; it did not run again.
        assert_eq!(of("a"), vec![(1, 1), (2, 2)]);
        assert_eq!(of("b"), vec![], "never owned, never run");
        // `c` ran its whole reconcile, then again a second after.
        assert_eq!(of("c")[..3], [(1, 1), (2, 2), (3, 3)]);
        assert_eq!(of("c")[3], (1, 5));
    }
}
