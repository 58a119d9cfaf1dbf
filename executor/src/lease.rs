//! Which executor replica drives which rollouts: the holders of
//! `coordination.k8s.io/v1` Leases, one per *shard*. Every replica serves
//! the Rollouts API (it only writes Rollout objects); a replica runs the
//! controller for the rollouts of the shards it holds, and only for them.
//!
//! A rollout's shard is [`shard_of`] its namespace and name: a fixed hash,
//! so every replica (and every version) agrees. With one shard (the
//! default) the Lease is named `name`, as before shards existed; with `n`
//! shards they are `name-0` … `name-{n-1}`. Each replica also keeps a
//! *member* Lease of its own (`name-member-…`), renewed like the others:
//! the live members are the replicas taking part. Their shares are even:
//! with `m` members, the first `shards mod m` of them by identity hold
//! `ceil(shards / m)`, the others `floor(shards / m)`.
//!
//! *Guarantees*:
//! - a shard has at most one holder driving it at a time, as long as
//!   clocks agree within the margin: a holder renews every `renew_every`,
//!   and stops driving a shard as soon as another replica holds its Lease,
//!   or when it could not renew it for `renew_deadline`, which is shorter
//!   than the Lease's duration;
//! - a shard's token is cancelled *before* its Lease is given up, so the
//!   controller stops that shard's runs before another replica can take it;
//! - a replica that dies loses its shards when their Leases expire (one
//!   `lease_duration` after its last renewal) to the replicas under their
//!   fair share, which try every `renew_every`;
//! - a replica over its fair share (a member joined) gives the excess up at
//!   once, so the newcomer takes it at its next attempt; shards are
//!   otherwise kept where they are (no reshuffle when nothing changed);
//! - a replica shutting down gives its shards and its membership up, so the
//!   others take over at their next attempt rather than after the Leases
//!   expire;
//! - replicas that disagree on the number of shards (a change of
//!   `--shards` rolling out, or a replica from before shards) would drive
//!   one rollout under two shard layouts: while a live member or a held
//!   Lease of this family says another count, a replica holds nothing.
//!   Releases pause until every replica runs with one count; every
//!   replica says so in its log every 30 s while it lasts;
//! - two processes with one identity would both take its shards: each
//!   marks its member Lease with an instance of its own, and a replica
//!   that finds its member Lease renewed by another instance holds nothing
//!   and says so, until the other is gone; it marks its member Lease idle,
//!   so the other replicas count it out and take its share;
//! - a member Lease left by a replica that died is deleted by the others
//!   once it has been expired for a whole Lease duration, and so is a
//!   shard Lease of another count (an earlier `--shards`) nobody holds;
//! - replicas find each other only through the Leases of one namespace
//!   and name: replicas given different `--lease-namespace` or
//!   `--lease-name` are separate groups and would both drive every
//!   rollout (the install gives every replica the same).
//!
//! Since the cluster is the only state, a new holder resumes every rollout
//! of a shard at its step.
//!
//! *Assumptions*: the replicas' clocks are within a second or so; the
//! Lease namespace holds no other Leases named `name-…`.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, SystemTime},
};

use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, ResourceExt},
};
use serde_json::{Value, json};
use sluice_runtime::server::CancellationToken;
use tokio::{sync::watch, time::Instant};

/// The annotation on every Lease of the family saying how many shards the
/// replica that wrote it runs with.
pub const SHARDS_ANNOTATION: &str = "sluice.dev/shards";

/// The annotation on a member Lease naming the process that renews it.
pub const INSTANCE_ANNOTATION: &str = "sluice.dev/instance";

/// The annotation on a member Lease whose replica stands aside (another
/// process runs with its identity): the others count it out.
pub const IDLE_ANNOTATION: &str = "sluice.dev/idle";

/// How often a lasting fault of the election is said again.
const SAY_AGAIN: Duration = Duration::from_secs(30);

/// How a replica takes part in the election.
#[derive(Debug, Clone)]
pub struct Election {
    /// The Leases' namespace.
    pub namespace: String,
    /// The Leases' name (with one shard), or their prefix.
    pub name: String,
    /// This replica, as written in `holderIdentity`.
    pub identity: String,
    /// How long a holder's claim lasts without renewal.
    pub lease_duration: Duration,
    /// How long a holder keeps a shard while its renewals fail.
    pub renew_deadline: Duration,
    /// Time between attempts.
    pub renew_every: Duration,
    /// How many shards the rollouts are split into (at least 1).
    pub shards: u32,
    /// This process, told apart from another with the same identity.
    pub instance: String,
    /// What the Lease's times are read and written with: the wall clock
    /// moved on by tokio's, so tests on paused time expire Leases too.
    pub clock: crate::controller::Clock,
}

impl Election {
    /// Defaults in the spirit of client-go's leader election (15 s lease,
    /// 10 s renew deadline, 2 s between attempts), with one shard.
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            renew_every: Duration::from_secs(2),
            shards: 1,
            instance: instance(),
            clock: crate::controller::Clock::default(),
        }
    }

    fn count(&self) -> u32 {
        self.shards.max(1)
    }

    /// The Lease of shard `shard`.
    pub fn shard_lease(&self, shard: u32) -> String {
        if self.count() == 1 {
            self.name.clone()
        } else {
            format!("{}-{shard}", self.name)
        }
    }

    /// This replica's member Lease: its identity made a valid name, with a
    /// hash of the identity so two identities never share one.
    pub fn member_lease(&self) -> String {
        let mut clean: String = self
            .identity
            .chars()
            .map(|c| c.to_ascii_lowercase())
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(40)
            .collect();
        clean = clean.trim_matches('-').to_owned();
        format!(
            "{}-member-{clean}-{:08x}",
            self.name,
            fnv1a(self.identity.as_bytes()) & 0xffff_ffff
        )
    }

    /// What a Lease of the family is: a shard's (its index) or a member's.
    fn role(&self, name: &str) -> Option<Role> {
        if name == self.name {
            return Some(Role::Shard(0, Some(1)));
        }
        let rest = name.strip_prefix(&self.name)?.strip_prefix('-')?;
        if rest.starts_with("member-") {
            return Some(Role::Member);
        }
        rest.parse().ok().map(|i| Role::Shard(i, None))
    }
}

/// A name for this process that another will not have: its id and the
/// moment it asked, hashed with the standard library's random keys.
fn instance() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    format!(
        "process {} on {}, instance {:08x}",
        std::process::id(),
        crate::config::host_name().unwrap_or_else(|| "an unknown host".into()),
        h.finish() & 0xffff_ffff
    )
}

/// A Lease of the family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Shard `.0` of a layout of `.1` shards when the name alone says so.
    Shard(u32, Option<u32>),
    Member,
}

/// FNV-1a, 64 bits: small, fixed and the same on every platform, so the
/// shard of a rollout never depends on the build.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The shard of the rollout `namespace/name` among `count` shards.
pub fn shard_of(namespace: &str, name: &str, count: u32) -> u32 {
    let key = format!("{namespace}/{name}");
    u32::try_from(fnv1a(key.as_bytes()) % u64::from(count.max(1))).unwrap_or(0)
}

/// The shards a replica holds now, each with a token cancelled when it is
/// lost or given up.
#[derive(Debug, Clone)]
pub struct Held {
    count: u32,
    tokens: BTreeMap<u32, CancellationToken>,
}

impl Held {
    /// No shard held, out of `count`.
    pub fn none(count: u32) -> Self {
        Self {
            count: count.max(1),
            tokens: BTreeMap::new(),
        }
    }

    /// Every shard of `count`, held until `token` is cancelled: a
    /// controller run without an election (tests, a single process).
    pub fn all(count: u32, token: &CancellationToken) -> Self {
        let count = count.max(1);
        Self {
            count,
            tokens: (0..count).map(|i| (i, token.child_token())).collect(),
        }
    }

    /// The same, without the shards `drop` picks (their tokens cancelled).
    pub fn without(mut self, drop: impl Fn(u32) -> bool) -> Self {
        self.tokens.retain(|shard, token| {
            let keep = !drop(*shard);
            if !keep {
                token.cancel();
            }
            keep
        });
        self
    }

    /// How many shards the rollouts are split into.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The shards held, in order.
    pub fn shards(&self) -> impl Iterator<Item = u32> + '_ {
        self.tokens.keys().copied()
    }

    /// Whether shard `shard` is held (and its token not cancelled).
    pub fn holds(&self, shard: u32) -> bool {
        self.tokens.get(&shard).is_some_and(|t| !t.is_cancelled())
    }

    /// Whether any shard is held.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The token of the shard the rollout `namespace/name` falls in, when
    /// this replica holds it.
    pub fn of(&self, namespace: &str, name: &str) -> Option<&CancellationToken> {
        self.tokens
            .get(&shard_of(namespace, name, self.count))
            .filter(|t| !t.is_cancelled())
    }
}

fn micro_time(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let whole = prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: 0,
    }
    .to_string();
    // Lease times are MicroTime: RFC 3339 with exactly six fraction digits.
    format!("{}.{:06}Z", whole.trim_end_matches('Z'), d.subsec_micros())
}

fn parse_time(text: &str) -> Option<SystemTime> {
    let ts: prost_types::Timestamp = text.parse().ok()?;
    SystemTime::try_from(ts).ok()
}

/// What a Lease says, read once.
#[derive(Debug, Clone)]
struct Claim {
    lease: Lease,
    holder: String,
    /// Holder set and its claim not lapsed at the time of reading.
    live: bool,
    /// The shard count its writer ran with, from the annotation.
    shards: Option<u32>,
    /// The process that renews it (member Leases).
    instance: Option<String>,
    /// When its claim lapses.
    lapses: Option<SystemTime>,
    /// Its replica stands aside (member Leases).
    idle: bool,
}

impl Claim {
    /// Its claim lapsed over a whole `duration` before `now` (or never had
    /// a renewal): whoever wrote it is gone.
    fn long_lapsed(&self, now: SystemTime, duration: Duration) -> bool {
        self.lapses.is_none_or(|t| t + duration < now)
    }

    fn read(lease: Lease, now: SystemTime, default_seconds: u64) -> Self {
        let spec = serde_json::to_value(&lease.spec).unwrap_or(Value::Null);
        let holder = spec["holderIdentity"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let renewed = spec["renewTime"].as_str().and_then(parse_time);
        let duration = Duration::from_secs(
            spec["leaseDurationSeconds"]
                .as_u64()
                .unwrap_or(default_seconds),
        );
        let lapses = renewed.map(|t| t + duration);
        let live = !holder.is_empty() && lapses.is_some_and(|t| t > now);
        let shards = lease
            .annotations()
            .get(SHARDS_ANNOTATION)
            .and_then(|s| s.parse().ok());
        let instance = lease.annotations().get(INSTANCE_ANNOTATION).cloned();
        let idle = lease.annotations().contains_key(IDLE_ANNOTATION);
        Self {
            lease,
            holder,
            live,
            shards,
            instance,
            lapses,
            idle,
        }
    }
}

/// How a write of a Lease ended.
#[derive(Debug)]
enum Wrote {
    Done,
    /// Somebody else wrote it first (409): it is theirs.
    Lost,
    Failed(kube::Error),
}

/// Writes the Lease `name` as held by this replica now: created when
/// `current` is `None`, else replaced over the version read, so a
/// concurrent writer loses. `holding` is false to give it up.
async fn claim(
    api: &Api<Lease>,
    e: &Election,
    name: &str,
    current: Option<&Lease>,
    holding: bool,
    idle: bool,
) -> Wrote {
    let now = micro_time(e.clock.now());
    let seconds = e.lease_duration.as_secs().max(1);
    let result = match current {
        None => {
            let mut annotations = json!({SHARDS_ANNOTATION: e.count().to_string(),
                                         INSTANCE_ANNOTATION: e.instance});
            if idle {
                annotations[IDLE_ANNOTATION] = json!("true");
            }
            let lease = serde_json::from_value::<Lease>(json!({
                "metadata": {"name": name, "namespace": e.namespace,
                             "annotations": annotations},
                "spec": {"holderIdentity": e.identity, "leaseDurationSeconds": seconds,
                         "acquireTime": now, "renewTime": now, "leaseTransitions": 0},
            }));
            match lease {
                Ok(lease) => api.create(&crate::writes::post(), &lease).await.map(|_| ()),
                Err(err) => Err(kube::Error::SerdeError(err)),
            }
        }
        Some(lease) => {
            let spec = serde_json::to_value(&lease.spec).unwrap_or(Value::Null);
            let before = spec["holderIdentity"].as_str().unwrap_or_default();
            let mut next = spec.clone();
            if holding {
                next["holderIdentity"] = json!(e.identity);
                next["leaseDurationSeconds"] = json!(seconds);
                next["renewTime"] = json!(now);
                if before != e.identity {
                    next["acquireTime"] = json!(now);
                    next["leaseTransitions"] =
                        json!(spec["leaseTransitions"].as_i64().unwrap_or(0) + 1);
                }
            } else {
                next["holderIdentity"] = Value::Null;
            }
            let mut updated = lease.clone();
            updated
                .annotations_mut()
                .insert(SHARDS_ANNOTATION.into(), e.count().to_string());
            updated
                .annotations_mut()
                .insert(INSTANCE_ANNOTATION.into(), e.instance.clone());
            if idle {
                updated
                    .annotations_mut()
                    .insert(IDLE_ANNOTATION.into(), "true".into());
            } else {
                updated.annotations_mut().remove(IDLE_ANNOTATION);
            }
            match serde_json::from_value(next) {
                Ok(spec) => {
                    updated.spec = spec;
                    api.replace(name, &crate::writes::post(), &updated)
                        .await
                        .map(|_| ())
                }
                Err(err) => Err(kube::Error::SerdeError(err)),
            }
        }
    };
    match result {
        Ok(()) => Wrote::Done,
        Err(kube::Error::Api(s)) if s.code == 409 => Wrote::Lost,
        Err(err) => Wrote::Failed(err),
    }
}

/// Deletes Lease `name` if it is still as `read` (a replica that came
/// back meanwhile keeps it).
async fn delete_unchanged(api: &Api<Lease>, name: &str, read: &Lease) {
    let params = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            resource_version: read.resource_version(),
            uid: None,
        }),
        ..DeleteParams::default()
    };
    let _ = api.delete(name, &params).await;
}

/// A shard this replica holds.
#[derive(Debug)]
struct Holding {
    token: CancellationToken,
    /// The last successful renewal.
    renewed: Instant,
}

/// What `lead` is given when this replica goes from holding no shard to
/// holding some.
#[derive(Debug, Clone)]
pub struct Leading {
    /// Cancelled once this replica holds no shard again (or shuts down).
    pub stopped: CancellationToken,
    /// The shards held, as they change.
    pub held: watch::Receiver<Held>,
}

/// One replica's part in the election, between attempts.
struct Replica {
    api: Api<Lease>,
    e: Election,
    holding: BTreeMap<u32, Holding>,
    /// The Leases as last listed, by name.
    seen: BTreeMap<String, Claim>,
    /// The faults of the election said lately, and when.
    said: BTreeMap<String, Instant>,
    /// This replica has written its member Lease since it started.
    joined: bool,
}

impl Replica {
    /// Says a fault of the election as a warning: at once when it is new,
    /// else every [`SAY_AGAIN`].
    fn warn(&mut self, fault: String) {
        self.said.retain(|_, at| at.elapsed() < SAY_AGAIN);
        if !self.said.contains_key(&fault) {
            tracing::warn!(identity = %self.e.identity, lease = %self.e.name, "{fault}");
            self.said.insert(fault, Instant::now());
        }
    }

    /// Stops driving shard `shard`: its runs are dropped at once.
    fn stop(&mut self, shard: u32) {
        if let Some(h) = self.holding.remove(&shard) {
            h.token.cancel();
        }
    }

    /// Gives shard `shard` up: its token first, then its Lease.
    async fn give_up(&mut self, shard: u32) {
        self.stop(shard);
        // Read again: this attempt may have renewed it since the list.
        let name = self.e.shard_lease(shard);
        if let Ok(Some(lease)) = self.api.get_opt(&name).await {
            let spec = serde_json::to_value(&lease.spec).unwrap_or(Value::Null);
            if spec["holderIdentity"].as_str() == Some(self.e.identity.as_str()) {
                let _ = claim(&self.api, &self.e, &name, Some(&lease), false, false).await;
            }
        }
    }

    /// Drops the shards whose renewals failed for `renew_deadline`.
    fn lapse(&mut self) {
        let deadline = self.e.renew_deadline;
        let lapsed: Vec<u32> = self
            .holding
            .iter()
            .filter(|(_, h)| h.renewed.elapsed() >= deadline)
            .map(|(i, _)| *i)
            .collect();
        for shard in lapsed {
            tracing::warn!(
                shard,
                "could not renew the shard's lease in time; stopping it"
            );
            self.stop(shard);
        }
    }

    /// One attempt: list, renew membership, keep, give up, renew and take
    /// shards.
    async fn attempt(&mut self) {
        let now = self.e.clock.now();
        let seconds = self.e.lease_duration.as_secs().max(1);
        let listed = match self.api.list(&ListParams::default()).await {
            Ok(list) => list,
            Err(error) => {
                self.warn(format!(
                    "cannot list the Leases of namespace {:?}, so this replica drives no rollout: {error}",
                    self.e.namespace
                ));
                self.lapse();
                return;
            }
        };
        self.seen = listed
            .items
            .into_iter()
            .filter(|l| self.e.role(&l.name_any()).is_some())
            .map(|l| (l.name_any(), Claim::read(l, now, seconds)))
            .collect();

        // Membership first, so the others count this replica.
        let member = self.e.member_lease();
        let mine = self.seen.get(&member);
        // Renewed since this replica's last write by another process with
        // its identity.
        // (Before its first write, what it finds is a predecessor's under
        // the same name, a crashed process restarted, not a twin.)
        let twin = mine
            .filter(|c| {
                self.joined && c.live && c.instance.as_deref() != Some(self.e.instance.as_str())
            })
            .map(|c| c.instance.clone().unwrap_or_default());
        let current = mine.map(|c| c.lease.clone());
        let idle = twin.is_some();
        let mut refused = false;
        match claim(&self.api, &self.e, &member, current.as_ref(), true, idle).await {
            Wrote::Failed(kube::Error::Api(answer)) => {
                refused = true;
                self.warn(format!(
                    "cannot write this replica's member Lease {member:?} in namespace {:?}, so it drives no rollout: {} ({})",
                    self.e.namespace, answer.message, answer.code
                ));
            }
            Wrote::Failed(error) => tracing::debug!(%error, "membership renewal failed"),
            Wrote::Done => self.joined = true,
            Wrote::Lost => {}
        }
        // Members whose claim lapsed a whole duration ago are gone.
        for (name, c) in &self.seen {
            let dead = c.long_lapsed(now, self.e.lease_duration);
            if self.e.role(name) == Some(Role::Member) && *name != member && dead {
                delete_unchanged(&self.api, name, &c.lease).await;
            }
        }
        let count = self.e.count();
        let mut members = BTreeSet::from([self.e.identity.clone()]);
        let mut disagree: Option<String> = None;
        for (name, c) in &self.seen {
            if !c.live || c.holder == self.e.identity {
                continue;
            }
            let says = match self.e.role(name) {
                // One standing aside takes no share.
                Some(Role::Member) if c.idle => continue,
                Some(Role::Member) => {
                    members.insert(c.holder.clone());
                    c.shards
                }
                Some(Role::Shard(_, by_name)) => c.shards.or(by_name),
                None => continue,
            };
            if says != Some(count) {
                let says = says.map_or_else(|| "another number of".to_owned(), |n| n.to_string());
                disagree.get_or_insert_with(|| {
                    format!("{name} (held by {}) says {says} shards", c.holder)
                });
            }
        }
        // Shard Leases of another count that nobody has held for a whole
        // duration (left by an earlier --shards) are gone.
        if disagree.is_none() && !refused {
            for (name, c) in &self.seen {
                let Some(Role::Shard(index, _)) = self.e.role(name) else {
                    continue;
                };
                let ours = index < count && self.e.shard_lease(index) == *name;
                let dead = !c.live && c.long_lapsed(now, self.e.lease_duration);
                if !ours && dead {
                    delete_unchanged(&self.api, name, &c.lease).await;
                }
            }
        }
        // This replica's share: the first `count mod m` members by
        // identity hold one more than the others.
        let rank = members
            .iter()
            .position(|m| *m == self.e.identity)
            .unwrap_or(0);
        let m = members.len().max(1);
        let even = count as usize / m + usize::from(rank < count as usize % m);
        let fair = if refused {
            0
        } else if let Some(why) = disagree {
            self.warn(format!(
                "replicas disagree on the shard count (this one runs with {count}; {why}): none drives any rollout until every replica runs with one count"
            ));
            0
        } else if let Some(other) = twin {
            self.warn(format!(
                "another process ({other}) runs with this replica's identity {:?}: neither drives any rollout until one is gone; give every replica its own --identity",
                self.e.identity
            ));
            0
        } else {
            even
        };

        // Shards another replica took meanwhile are lost.
        let taken: Vec<u32> = self
            .holding
            .keys()
            .copied()
            .filter(|i| {
                self.seen
                    .get(&self.e.shard_lease(*i))
                    .is_none_or(|c| c.holder != self.e.identity)
            })
            .collect();
        for shard in taken {
            tracing::warn!(shard, "another replica holds the shard; stopping it");
            self.stop(shard);
        }
        // Over the fair share: the highest shards go.
        while self.holding.len() > fair {
            let Some(shard) = self.holding.keys().next_back().copied() else {
                break;
            };
            tracing::info!(shard, share = fair, "giving the shard up");
            self.give_up(shard).await;
        }
        // Renew what is kept.
        let kept: Vec<u32> = self.holding.keys().copied().collect();
        for shard in kept {
            let name = self.e.shard_lease(shard);
            let current = self.seen.get(&name).map(|c| c.lease.clone());
            match claim(&self.api, &self.e, &name, current.as_ref(), true, false).await {
                Wrote::Done => {
                    if let Some(h) = self.holding.get_mut(&shard) {
                        h.renewed = Instant::now();
                    }
                }
                Wrote::Lost => {
                    tracing::warn!(shard, "another replica holds the shard; stopping it");
                    self.stop(shard);
                }
                Wrote::Failed(error) => tracing::debug!(%error, shard, "shard renewal failed"),
            }
        }
        self.lapse();
        // Under the fair share: take free shards, starting at a place of
        // this replica's own so that replicas seldom race for one.
        let start =
            u32::try_from(fnv1a(self.e.identity.as_bytes()) % u64::from(count)).unwrap_or(0);
        for shard in (0..count).map(|k| (start + k) % count) {
            if self.holding.len() >= fair {
                break;
            }
            if self.holding.contains_key(&shard) {
                continue;
            }
            let name = self.e.shard_lease(shard);
            let current = self.seen.get(&name);
            if current.is_some_and(|c| c.live && c.holder != self.e.identity) {
                continue;
            }
            let current = current.map(|c| c.lease.clone());
            match claim(&self.api, &self.e, &name, current.as_ref(), true, false).await {
                Wrote::Done => {
                    tracing::info!(identity = %self.e.identity, lease = %name, shard, "leading");
                    self.holding.insert(
                        shard,
                        Holding {
                            token: CancellationToken::new(),
                            renewed: Instant::now(),
                        },
                    );
                }
                Wrote::Lost => {}
                Wrote::Failed(kube::Error::Api(answer)) => self.warn(format!(
                    "cannot take the Lease {name:?} in namespace {:?}: {} ({})",
                    self.e.namespace, answer.message, answer.code
                )),
                Wrote::Failed(error) => tracing::debug!(%error, shard, "shard take failed"),
            }
        }
    }

    fn held(&self) -> Held {
        Held {
            count: self.e.count(),
            tokens: self
                .holding
                .iter()
                .map(|(i, h)| (*i, h.token.clone()))
                .collect(),
        }
    }

    /// Gives every shard and the membership up.
    async fn leave(&mut self) {
        let shards: Vec<u32> = self.holding.keys().copied().collect();
        for shard in shards {
            self.give_up(shard).await;
        }
        let _ = self
            .api
            .delete(&self.e.member_lease(), &DeleteParams::default())
            .await;
    }
}

/// Takes part in the election until `shutdown`, calling `lead` each time
/// this replica goes from holding no shard to holding some; the
/// [`Leading`] it is given says which, as that changes, and ends when none
/// is held.
pub async fn run<F>(client: Client, election: Election, shutdown: CancellationToken, lead: F)
where
    F: Fn(Leading),
{
    let api: Api<Lease> = Api::namespaced(client, &election.namespace);
    let (publish, held) = watch::channel(Held::none(election.count()));
    let mut replica = Replica {
        api,
        e: election,
        holding: BTreeMap::new(),
        seen: BTreeMap::new(),
        said: BTreeMap::new(),
        joined: false,
    };
    let mut leading: Option<CancellationToken> = None;
    loop {
        replica.attempt().await;
        let now = replica.held();
        let changed = now.tokens.keys().ne(publish.borrow().tokens.keys());
        if changed {
            publish.send_replace(now.clone());
        }
        match (&leading, now.is_empty()) {
            (None, false) => {
                let stopped = shutdown.child_token();
                lead(Leading {
                    stopped: stopped.clone(),
                    held: held.clone(),
                });
                leading = Some(stopped);
            }
            (Some(stopped), true) => {
                stopped.cancel();
                leading = None;
            }
            _ => {}
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(replica.e.renew_every) => {}
        }
    }
    for h in replica.holding.values() {
        h.token.cancel();
    }
    if let Some(stopped) = leading {
        stopped.cancel();
    }
    replica.leave().await;
    publish.send_replace(Held::none(replica.e.count()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micro_times_have_six_fraction_digits() {
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        assert_eq!(micro_time(t), "2023-11-14T22:13:20.123456Z");
        let whole = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(micro_time(whole), "2023-11-14T22:13:20.000000Z");
        assert_eq!(
            parse_time(&micro_time(t)).unwrap(),
            SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_000)
        );
    }

    #[test]
    fn shards_are_a_fixed_hash_of_namespace_and_name() {
        // Fixed values: a change here moves rollouts between shards of
        // replicas of different versions.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(shard_of("default", "web", 1), 0);
        let spread: BTreeSet<u32> = (0..64)
            .map(|i| shard_of("default", &format!("app-{i}"), 4))
            .collect();
        assert_eq!(spread, BTreeSet::from([0, 1, 2, 3]));
        assert!((0..100).all(|i| shard_of("ns", &format!("r{i}"), 7) < 7));
        // The namespace counts: a/bc and ab/c are different rollouts.
        assert_ne!(
            fnv1a(b"a/bc"),
            fnv1a(b"ab/c"),
            "the separator keeps them apart"
        );
    }

    #[test]
    fn lease_names_say_their_role() {
        let mut e = Election::new("ns", "sluice-executor", "Host_1:42");
        assert_eq!(e.shard_lease(0), "sluice-executor");
        assert_eq!(e.role("sluice-executor"), Some(Role::Shard(0, Some(1))));
        e.shards = 3;
        assert_eq!(e.shard_lease(2), "sluice-executor-2");
        assert_eq!(e.role("sluice-executor-2"), Some(Role::Shard(2, None)));
        let member = e.member_lease();
        assert!(
            member.starts_with("sluice-executor-member-host-1-42-"),
            "{member}"
        );
        assert_eq!(e.role(&member), Some(Role::Member));
        assert_eq!(e.role("sluice-executorx"), None);
        assert_eq!(e.role("other"), None);
        let other = Election::new("ns", "sluice-executor", "host-1-42");
        assert_ne!(other.member_lease(), member, "one name per identity");
    }
}
