//! The controller's work queue: which Rollout is reconciled next.
//!
//! *Guarantees*:
//! - each key waits at most once and is never handed out twice at once: a
//!   key asked for while it runs waits until it is done, then queues;
//! - lanes are served in strict order, [`Lane::Urgent`] (a release being
//!   taken back), then [`Lane::Moving`] (a release under way), then
//!   [`Lane::Other`] (a release to start, or nothing under way); within a
//!   lane keys leave in the order they entered it; a key asked for in a
//!   more urgent lane than the one it waits in moves there, never back;
//! - a key has at most one timer; asking for it now (or handing it out)
//!   cancels the timer, since the reconcile sets its own next one;
//! - every operation is O(1) amortized, but for timers (O(log n)).
//!
//! Why these lanes: kube-runtime's runner kept waiting keys in a hash set
//! once at its bound and took them in the set's order, so under a backlog
//! most keys were served at once and some waited for all the others (a
//! 33-60 s tail at 10,000 rollouts started at once), and a rollback waited
//! behind advances. One queue in arrival order ended the tail but spread
//! the backlog over every release: each waited a whole turn of it between
//! two steps (2.6 s at the median). Releases under way before releases to
//! start admits new ones only as fast as those under way leave room, so
//! the turn stays short; a start waits instead, while the cluster is busy.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    hash::Hash,
};

use tokio::time::Instant;

/// How soon a key is wanted, most urgent first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Lane {
    /// A rollback or an abort: a release taking pods or traffic back.
    Urgent,
    /// A release under way.
    Moving,
    /// Anything else: a release to start, or none under way.
    Other,
}

impl Lane {
    const ALL: [Self; 3] = [Self::Urgent, Self::Moving, Self::Other];

    fn index(self) -> usize {
        self as usize
    }
}

/// Keys waiting, running and timed; see the module's guarantees.
pub(crate) struct Queue<K> {
    /// Per lane, keys with the ticket they entered it with; an entry whose
    /// ticket no longer matches `waiting` moved lanes and is skipped.
    lanes: [VecDeque<(K, u64)>; 3],
    /// Keys waiting, with their lane, ticket and when they first asked.
    waiting: HashMap<K, (Lane, u64, Instant)>,
    /// How many keys wait in each lane.
    counts: [usize; 3],
    /// Keys handed out and not done, with the most urgent lane they were
    /// asked for in again while they ran.
    running: HashMap<K, Option<Lane>>,
    /// Timers by deadline (then by when they were set).
    timers: BTreeMap<(Instant, u64), K>,
    /// Each timed key's timer.
    timed: HashMap<K, (Instant, u64)>,
    /// The next ticket.
    ticket: u64,
}

impl<K> Default for Queue<K> {
    fn default() -> Self {
        Self {
            lanes: Default::default(),
            waiting: HashMap::new(),
            counts: [0; 3],
            running: HashMap::new(),
            timers: BTreeMap::new(),
            timed: HashMap::new(),
            ticket: 0,
        }
    }
}

impl<K: Hash + Eq + Clone> Queue<K> {
    fn next_ticket(&mut self) -> u64 {
        self.ticket += 1;
        self.ticket
    }

    /// Asks for `key` in `lane` at `now`.
    pub(crate) fn push(&mut self, key: K, lane: Lane, now: Instant) {
        if let Some(again) = self.running.get_mut(&key) {
            *again = Some(again.map_or(lane, |was| was.min(lane)));
            return;
        }
        self.cancel(&key);
        let since = match self.waiting.get(&key) {
            Some(&(was, _, _)) if was <= lane => return,
            Some(&(was, _, since)) => {
                self.counts[was.index()] -= 1;
                since
            }
            None => now,
        };
        let ticket = self.next_ticket();
        self.counts[lane.index()] += 1;
        self.waiting.insert(key.clone(), (lane, ticket, since));
        self.lanes[lane.index()].push_back((key, ticket));
    }

    /// Asks for `key` at `at`, unless it waits or runs (it then sets its
    /// own next timer when done) or a timer for it fires sooner.
    pub(crate) fn later(&mut self, key: K, at: Instant) {
        if self.waiting.contains_key(&key) || self.running.contains_key(&key) {
            return;
        }
        if let Some(&(due, _)) = self.timed.get(&key) {
            if due <= at {
                return;
            }
            self.cancel(&key);
        }
        let ticket = self.next_ticket();
        self.timers.insert((at, ticket), key.clone());
        self.timed.insert(key, (at, ticket));
    }

    fn cancel(&mut self, key: &K) {
        if let Some(timer) = self.timed.remove(key) {
            self.timers.remove(&timer);
        }
    }

    /// The next key to run, now marked running, with when it first asked.
    pub(crate) fn pop(&mut self) -> Option<(K, Instant)> {
        for lane in Lane::ALL {
            while let Some((key, ticket)) = self.lanes[lane.index()].pop_front() {
                let Some(&(at, held, since)) = self.waiting.get(&key) else {
                    continue;
                };
                if (at, held) != (lane, ticket) {
                    continue;
                }
                self.waiting.remove(&key);
                self.counts[lane.index()] -= 1;
                self.running.insert(key.clone(), None);
                return Some((key, since));
            }
        }
        None
    }

    /// `key`'s run ended at `now`; `next` is when its reconcile asked to
    /// run again. A key asked for while it ran queues now instead.
    pub(crate) fn done(&mut self, key: K, next: Option<Instant>, now: Instant) {
        match self.running.remove(&key) {
            Some(Some(lane)) => self.push(key, lane, now),
            _ => {
                if let Some(at) = next {
                    self.later(key, at);
                }
            }
        }
    }

    /// Takes the keys whose timers are due at `now`.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<K> {
        let mut out = Vec::new();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            self.timed.remove(&key);
            out.push(key);
        }
        out
    }

    /// When the next timer fires.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.timers.keys().next().map(|(at, _)| *at)
    }

    /// Keys waiting, by lane, and running.
    pub(crate) fn depth(&self) -> ([usize; 3], usize) {
        (self.counts, self.running.len())
    }

    /// Whether `key` runs now.
    #[cfg(test)]
    pub(crate) fn is_running(&self, key: &K) -> bool {
        self.running.contains_key(key)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    fn drain(q: &mut Queue<u32>) -> Vec<u32> {
        let mut out = Vec::new();
        while let Some((k, _)) = q.pop() {
            out.push(k);
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn keys_leave_once_in_the_order_they_asked() {
        let (mut q, now) = (Queue::default(), Instant::now());
        for k in [5, 3, 9, 3, 5, 1] {
            q.push(k, Lane::Moving, now);
        }
        assert_eq!(drain(&mut q), vec![5, 3, 9, 1]);
    }

    #[tokio::test(start_paused = true)]
    async fn lanes_are_served_in_order_and_a_key_moves_only_forward() {
        let (mut q, start) = (Queue::default(), Instant::now());
        q.push(1, Lane::Other, start);
        q.push(2, Lane::Other, start);
        q.push(3, Lane::Moving, start);
        q.push(4, Lane::Urgent, start);
        let later = start + Duration::from_secs(1);
        q.push(2, Lane::Urgent, later);
        // Asked for in a less urgent lane again, 2 stays where it is.
        q.push(2, Lane::Other, later);
        assert_eq!(q.depth(), ([2, 1, 1], 0));
        assert_eq!(q.pop(), Some((4, start)));
        // A key keeps the time it first asked through a move.
        assert_eq!(q.pop(), Some((2, start)));
        assert_eq!(drain(&mut q), vec![3, 1]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_asked_for_while_it_runs_waits_until_it_is_done() {
        let (mut q, now) = (Queue::default(), Instant::now());
        q.push(1, Lane::Moving, now);
        q.push(2, Lane::Moving, now);
        assert_eq!(q.pop().map(|(k, _)| k), Some(1));
        q.push(1, Lane::Other, now);
        q.push(1, Lane::Urgent, now);
        assert!(q.is_running(&1));
        assert_eq!(q.pop().map(|(k, _)| k), Some(2));
        assert!(q.pop().is_none());
        assert_eq!(q.depth(), ([0, 0, 0], 2));
        q.done(1, None, now);
        assert_eq!(q.depth(), ([1, 0, 0], 1));
        assert_eq!(q.pop().map(|(k, _)| k), Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn an_upgraded_key_does_not_keep_its_old_place_after_it_runs() {
        let (mut q, now) = (Queue::default(), Instant::now());
        q.push(1, Lane::Moving, now);
        q.push(2, Lane::Moving, now);
        q.push(1, Lane::Urgent, now);
        assert_eq!(q.pop().map(|(k, _)| k), Some(1));
        q.done(1, None, now);
        q.push(1, Lane::Moving, now);
        // 1's first entry in the moving lane is stale: it queues behind 2.
        assert_eq!(drain(&mut q), vec![2, 1]);
    }

    #[tokio::test(start_paused = true)]
    async fn timers_fire_earliest_first_and_a_push_cancels_them() {
        let (mut q, now) = (Queue::default(), Instant::now());
        q.push(1, Lane::Moving, now);
        assert_eq!(q.pop().map(|(k, _)| k), Some(1));
        q.done(1, Some(now + Duration::from_secs(5)), now);
        q.later(1, now + Duration::from_secs(9));
        q.later(2, now + Duration::from_secs(3));
        q.later(3, now + Duration::from_secs(4));
        assert_eq!(q.next_due(), Some(now + Duration::from_secs(3)));
        q.push(3, Lane::Moving, now);
        assert_eq!(q.due(now + Duration::from_secs(10)), vec![2, 1]);
        assert_eq!(q.next_due(), None);
        // A waiting key takes no timer.
        q.later(3, now);
        assert_eq!(q.due(now + Duration::from_secs(10)), Vec::<u32>::new());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(u8, u8),
        Later(u8, u8),
        Pop,
        Done(u8, Option<u8>),
        Due(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..8, 0u8..3).prop_map(|(k, l)| Op::Push(k, l)),
            1 => (0u8..8, 0u8..20).prop_map(|(k, s)| Op::Later(k, s)),
            2 => Just(Op::Pop),
            2 => (0u8..8, proptest::option::of(0u8..20)).prop_map(|(i, s)| Op::Done(i, s)),
            1 => (0u8..20).prop_map(Op::Due),
        ]
    }

    /// The model: waiting keys in one list in the order they entered their
    /// lane, the running keys, and timers by key.
    #[derive(Default)]
    struct Model {
        waiting: Vec<(u8, Lane)>,
        running: HashMap<u8, Option<Lane>>,
        timers: HashMap<u8, (u64, u64)>,
        seq: u64,
    }

    impl Model {
        fn push(&mut self, k: u8, lane: Lane) {
            if let Some(again) = self.running.get_mut(&k) {
                *again = Some(again.map_or(lane, |w| w.min(lane)));
                return;
            }
            self.timers.remove(&k);
            match self.waiting.iter().position(|(w, _)| *w == k) {
                Some(i) if self.waiting[i].1 <= lane => {}
                Some(i) => {
                    self.waiting.remove(i);
                    self.waiting.push((k, lane));
                }
                None => self.waiting.push((k, lane)),
            }
        }
        fn later(&mut self, k: u8, at: u64) {
            if self.waiting.iter().any(|(w, _)| *w == k) || self.running.contains_key(&k) {
                return;
            }
            if self.timers.get(&k).is_some_and(|(due, _)| *due <= at) {
                return;
            }
            self.seq += 1;
            self.timers.insert(k, (at, self.seq));
        }
        fn pop(&mut self) -> Option<u8> {
            let lane = self.waiting.iter().map(|(_, l)| *l).min()?;
            let i = self.waiting.iter().position(|(_, l)| *l == lane)?;
            let (k, _) = self.waiting.remove(i);
            self.running.insert(k, None);
            Some(k)
        }
    }

    proptest! {
        #[test]
        fn the_queue_behaves_as_its_model(ops in proptest::collection::vec(op(), 0..150)) {
            let base = Instant::now();
            let at = |s: u8| base + Duration::from_secs(u64::from(s));
            let mut q = Queue::default();
            let mut m = Model::default();
            for op in ops {
                match op {
                    Op::Push(k, l) => {
                        let lane = Lane::ALL[usize::from(l)];
                        q.push(k, lane, base);
                        m.push(k, lane);
                    }
                    Op::Later(k, s) => {
                        q.later(k, at(s));
                        m.later(k, u64::from(s));
                    }
                    Op::Pop => prop_assert_eq!(q.pop().map(|(k, _)| k), m.pop()),
                    Op::Done(i, s) => {
                        // The i-th running key, if any runs.
                        let mut running: Vec<u8> = m.running.keys().copied().collect();
                        running.sort_unstable();
                        if let Some(&k) = running.get(usize::from(i) % running.len().max(1)) {
                            q.done(k, s.map(at), base);
                            match m.running.remove(&k) {
                                Some(Some(lane)) => m.push(k, lane),
                                _ => if let Some(s) = s { m.later(k, u64::from(s)) },
                            }
                        }
                    }
                    Op::Due(s) => {
                        let mut due: Vec<_> = m
                            .timers
                            .iter()
                            .filter(|(_, (t, _))| *t <= u64::from(s))
                            .map(|(k, t)| (*t, *k))
                            .collect();
                        due.sort_unstable();
                        for (_, k) in &due {
                            m.timers.remove(k);
                        }
                        let want: Vec<u8> = due.into_iter().map(|(_, k)| k).collect();
                        prop_assert_eq!(q.due(at(s)), want);
                    }
                }
                let mut counts = [0; 3];
                for (_, l) in &m.waiting {
                    counts[l.index()] += 1;
                }
                prop_assert_eq!(q.depth(), (counts, m.running.len()));
            }
        }
    }
}
