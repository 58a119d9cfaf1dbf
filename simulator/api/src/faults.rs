//! Faults the API server can be told to inject: error rates and latency per
//! verb and resource, late watch events, and dropped watches. The scenario engine drives them.

use std::{
    sync::{Mutex, RwLock},
    time::Duration,
};

use tokio::sync::broadcast;

/// One fault rule. Empty `verb` or `resource` matches all.
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    /// Fail this share of matching requests with this HTTP code.
    Errors {
        /// Caller's id, to clear it later.
        id: String,
        /// e.g. `list`, `patch`; empty for all.
        verb: String,
        /// e.g. `pods`; empty for all.
        resource: String,
        /// 0 to 1.
        rate: f64,
        /// e.g. 500 or 429.
        code: u16,
    },
    /// Delay matching requests.
    Latency {
        /// Caller's id.
        id: String,
        /// Verb, or empty.
        verb: String,
        /// Resource, or empty.
        resource: String,
        /// The delay.
        latency: Duration,
    },
    /// Deliver the live events of matching watches this late.
    WatchLag {
        /// Caller's id.
        id: String,
        /// Resource, or empty.
        resource: String,
        /// How late.
        lag: Duration,
    },
}

impl Rule {
    fn id(&self) -> &str {
        match self {
            Self::Errors { id, .. } | Self::Latency { id, .. } | Self::WatchLag { id, .. } => id,
        }
    }
}

/// The active faults.
#[derive(Debug)]
pub struct Faults {
    rules: RwLock<Vec<Rule>>,
    rng: Mutex<u64>,
    drops: broadcast::Sender<String>,
}

impl Faults {
    /// No faults; `seed` drives the error-rate draws.
    pub fn new(seed: u64) -> Self {
        Self {
            rules: RwLock::new(Vec::new()),
            rng: Mutex::new(seed | 1),
            drops: broadcast::channel(64).0,
        }
    }

    /// Adds a rule, replacing one with the same id.
    pub fn add(&self, rule: Rule) {
        let mut rules = self.rules.write().unwrap_or_else(|p| p.into_inner());
        rules.retain(|r| r.id() != rule.id());
        rules.push(rule);
    }

    /// Removes rules by id (all when `ids` is empty); returns the ids removed.
    pub fn clear(&self, ids: &[String]) -> Vec<String> {
        let mut rules = self.rules.write().unwrap_or_else(|p| p.into_inner());
        let (gone, kept): (Vec<Rule>, Vec<Rule>) = rules
            .drain(..)
            .partition(|r| ids.is_empty() || ids.iter().any(|i| i == r.id()));
        *rules = kept;
        gone.iter().map(|r| r.id().to_owned()).collect()
    }

    /// Closes every open watch on `resource` (empty: all).
    pub fn drop_watches(&self, resource: &str) {
        let _ = self.drops.send(resource.to_owned());
    }

    /// Signals for dropped watches.
    pub fn drop_signals(&self) -> broadcast::Receiver<String> {
        self.drops.subscribe()
    }

    fn draw(&self) -> f64 {
        let mut state = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        // xorshift64*: deterministic for a seed, good enough for rates.
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// How late the live events of a watch of `resource` are delivered.
    pub fn watch_lag(&self, resource: &str) -> Duration {
        let rules = self.rules.read().unwrap_or_else(|p| p.into_inner());
        rules
            .iter()
            .map(|rule| match rule {
                Rule::WatchLag {
                    resource: r, lag, ..
                } if r.is_empty() || r == resource => *lag,
                _ => Duration::ZERO,
            })
            .sum()
    }

    /// The delay and the error code (if any) for a request.
    pub fn judge(&self, verb: &str, resource: &str) -> (Duration, Option<u16>) {
        let rules = self.rules.read().unwrap_or_else(|p| p.into_inner());
        let matches =
            |v: &str, r: &str| (v.is_empty() || v == verb) && (r.is_empty() || r == resource);
        let mut delay = Duration::ZERO;
        let mut code = None;
        for rule in rules.iter() {
            match rule {
                Rule::Latency {
                    verb: v,
                    resource: r,
                    latency,
                    ..
                } if matches(v, r) => delay += *latency,
                Rule::Errors {
                    verb: v,
                    resource: r,
                    rate,
                    code: c,
                    ..
                } if matches(v, r) && code.is_none() && self.draw() < *rate => {
                    code = Some(*c);
                }
                _ => {}
            }
        }
        (delay, code)
    }
}
