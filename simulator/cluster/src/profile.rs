//! How each version of an application behaves: how its pods start, whether
//! they crash or never become ready, and how they answer requests.

use std::{collections::HashMap, time::Duration};

use serde::{Deserialize, Serialize};

/// A seeded random number generator (xorshift64*): same seed, same run.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// An independent generator for one key (say a pod's namespace and
    /// name), fixed by this generator's state and the key alone: what a
    /// pod draws does not depend on which other pods drew first.
    pub fn fork(&self, key: &[&str]) -> Self {
        // FNV-1a over the key's parts, each followed by a separator.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for part in key {
            for byte in part.bytes().chain([0xff]) {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        }
        Self((self.0 ^ hash).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A number in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A duration uniformly between `min` and `max`.
    pub fn between(&mut self, min: Duration, max: Duration) -> Duration {
        if max <= min {
            return min;
        }
        min + (max - min).mul_f64(self.next_f64())
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

/// A change in behaviour at a given time after the version's first pod started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Change {
    /// Seconds after the version first served.
    pub after_seconds: f64,
    /// New error ratio.
    #[serde(default)]
    pub error_ratio: Option<f64>,
    /// New median latency, milliseconds.
    #[serde(default)]
    pub latency_p50_ms: Option<f64>,
    /// New 99th percentile latency, milliseconds.
    #[serde(default)]
    pub latency_p99_ms: Option<f64>,
}

/// The behaviour of one version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Profile {
    /// Shortest time from scheduled to Running, seconds.
    pub start_min_seconds: f64,
    /// Longest time from scheduled to Running, seconds.
    pub start_max_seconds: f64,
    /// Time from Running to Ready, seconds.
    pub ready_after_seconds: f64,
    /// Time the container takes to exit once asked to stop (at most the
    /// pod's grace period), seconds.
    pub stop_seconds: f64,
    /// The container exits soon after starting, again and again.
    pub crash_loop: bool,
    /// The container runs but its readiness probe never passes.
    pub never_ready: bool,
    /// Share of requests answered 5xx.
    pub error_ratio: f64,
    /// Median latency, milliseconds.
    pub latency_p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub latency_p99_ms: f64,
    /// Extra latency per request per second a pod receives, milliseconds.
    pub latency_per_rps_ms: f64,
    /// Behaviour changes over time.
    pub changes: Vec<Change>,
}

impl Default for Profile {
    fn default() -> Self {
        Self {
            start_min_seconds: 1.0,
            start_max_seconds: 3.0,
            ready_after_seconds: 1.0,
            stop_seconds: 1.0,
            crash_loop: false,
            never_ready: false,
            error_ratio: 0.001,
            latency_p50_ms: 20.0,
            latency_p99_ms: 80.0,
            latency_per_rps_ms: 0.0,
            changes: Vec::new(),
        }
    }
}

impl Profile {
    /// Time from scheduled to Running.
    pub fn start_delay(&self, rng: &mut Rng) -> Duration {
        rng.between(secs(self.start_min_seconds), secs(self.start_max_seconds))
    }

    /// Time from Running to Ready.
    pub fn ready_delay(&self) -> Duration {
        secs(self.ready_after_seconds)
    }

    /// Time from the stop signal to the container's exit, within `grace`.
    pub fn stop_delay(&self, grace: Duration) -> Duration {
        secs(self.stop_seconds).min(grace)
    }

    /// (error ratio, p50 ms, p99 ms) at `elapsed` since the version started.
    pub fn at(&self, elapsed: Duration) -> (f64, f64, f64) {
        let mut now = (self.error_ratio, self.latency_p50_ms, self.latency_p99_ms);
        for change in &self.changes {
            if elapsed.as_secs_f64() >= change.after_seconds {
                now.0 = change.error_ratio.unwrap_or(now.0);
                now.1 = change.latency_p50_ms.unwrap_or(now.1);
                now.2 = change.latency_p99_ms.unwrap_or(now.2);
            }
        }
        now
    }
}

/// Profiles by container image; images without one get the default.
#[derive(Debug, Clone, Default)]
pub struct Profiles {
    /// By image.
    pub by_image: HashMap<String, Profile>,
    /// For any other image.
    pub default: Profile,
}

impl Profiles {
    /// The profile of a pod running `image`.
    pub fn of(&self, image: &str) -> &Profile {
        self.by_image.get(image).unwrap_or(&self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forked_stream_depends_on_its_key_alone() {
        let root = Rng::new(7);
        let first = root.fork(&["default", "web-1"]).next_f64();
        let _ = root.fork(&["default", "web-2"]).next_f64();
        assert_eq!(root.fork(&["default", "web-1"]).next_f64(), first);
        assert_ne!(root.fork(&["default", "web-2"]).next_f64(), first);
        assert_ne!(
            root.fork(&["default-web", "1"]).next_f64(),
            root.fork(&["default", "web-1"]).next_f64(),
            "parts are kept apart"
        );
        assert_ne!(Rng::new(8).fork(&["default", "web-1"]).next_f64(), first);
    }
}
