//! The release state machine: a pure function from what is known about a
//! release to what it should do next.
//!
//! [`decide`] takes the recorded status, the plan, the controls a person
//! asked for, what the controller observed in the cluster and the time, and
//! returns the next status, the [`Effect`]s to carry out (in order) and when
//! to look again. It reads no cluster, no clock and no network; the
//! controller observes, calls it, carries the effects out (each idempotent,
//! so a crash between two of them is safe: the next reconcile decides the
//! same effects again from the same recorded status) and writes the status
//! only once every effect succeeded.
//!
//! # States
//!
//! `status.phase` with, while a release runs, `status.step_state`:
//!
//! ```text
//! Pending ──start──▶ Progressing{Upgrading ▶ Analyzing ▶ Paused ▶ Completed}×steps ──hand back──▶ Succeeded
//!    │                   │  ▲ Pause/Resume (phase Paused, step state kept)
//!    │ busy past         │ failed analysis, missed deadline, failing pods, Abort
//!    ▼ the deadline      ▼
//!  Failed            RollingBack ──traffic on stable, pods back, objects gone──▶ RolledBack
//! ```
//!
//! # Guarantees
//!
//! - `Succeeded` is decided only when the workload is observed handed back
//!   ([`Observed::handed_back`]: every replica new and ready, the workload as
//!   the user wrote it) and no traffic object carries a trace of the release.
//! - `RolledBack` is decided only when the pods are observed back on the
//!   stable revision ([`Observed::rolled_back`]) and every traffic object is
//!   restored and every object the release made is gone.
//! - After a rollback decision no effect routes traffic to the new version.
//! - Pause, Resume and Promote never restart a release or lose its progress:
//!   a release is identified by [`Input::release`], not by the Rollout's
//!   generation. Pause emits no effect at all.

mod conditions;
#[cfg(test)]
mod tests;

use std::time::{Duration, SystemTime};

pub use conditions::{
    AWAITING_EXECUTOR, awaiting_release, condition_types, reasons, set_blocked, set_conditions,
    set_refused,
};

use crate::crd::{Phase, RolloutStatus, StepRecord, StepState, Verdict};

/// One batch of the plan, as the machine needs it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Batch {
    /// New pods wanted.
    pub canary_replicas: u32,
    /// Traffic percent to the new pods (routers only).
    pub traffic: u32,
    /// Analyses to run once the batch is ready (steps and background).
    pub analyses: Vec<String>,
    /// `None`: no pause; `Some(None)`: until promoted; `Some(Some(d))`: for `d`.
    pub pause: Option<Option<Duration>>,
    /// How long the batch's pods may take to become ready.
    pub progress_deadline: Duration,
}

/// The progress deadline when the plan gives none.
pub const DEFAULT_PROGRESS_DEADLINE: Duration = Duration::from_secs(600);

/// How far the workload is towards a batch, observed in one snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Ready pods of the new version.
    pub ready_new: u32,
    /// The batch is in place: its pods exist and enough are ready.
    pub reached: bool,
    /// The share of traffic the new pods take when nothing routes it.
    pub pod_share: u32,
    /// Pods run where the batch does not want them (a StatefulSet's new
    /// pods left below its partition by a scale-up; a Deployment's new set
    /// sized past the batch by its own controller): moved again at each
    /// look, a step's pause included, until none is.
    pub misplaced: bool,
}

/// Whether a release may start, observed on the workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Its own controller is still rolling it out, or it is not ready.
    Busy(String),
    /// It already runs exactly this version, every replica ready.
    NothingToDo,
    /// It can start.
    Ready,
    /// It can never start (the workload is missing, or cannot be released
    /// this way); the reason.
    Refused(String),
}

/// What the controller saw in the cluster for this reconcile.
#[derive(Debug, Clone)]
pub struct Observed {
    /// At `Pending`: whether the release may start.
    pub start: Start,
    /// Progress towards each batch of the plan, by index; `None` when the
    /// release's revisions are gone.
    pub progress: Vec<Option<Progress>>,
    /// `Ok` once the workload is handed back: every replica runs the new
    /// revision and is ready, and the workload is as the user wrote it with
    /// the new version but for the release's marks, which [`Effect::Unmark`]
    /// removes; otherwise what it waits for.
    pub handed_back: Result<(), String>,
    /// `Ok` once every pod is back on the stable revision and ready and the
    /// workload is as the user wrote it but for the release's marks;
    /// otherwise what it waits for.
    pub rolled_back: Result<(), String>,
    /// Traces of the release left on traffic objects (canary Services and
    /// Ingresses, pinned selectors, saved routes); empty when clean, `None`
    /// when not looked at (the controller looks only when
    /// [`needs_traffic_check`] says so).
    pub traffic_leftovers: Option<Vec<String>>,
    /// A new pod that cannot run (crash loop, image pull, bad config): the
    /// reason naming the pod and container.
    pub failing_pod: Option<String>,
    /// Why new pods cannot be made at all (a quota, a missing
    /// ServiceAccount, a webhook's refusal), as the new ReplicaSet's
    /// `ReplicaFailure` condition says: told while the step waits, and in
    /// the rollback its progress deadline brings.
    pub cannot_create: Option<String>,
    /// At `Pending`: the release has begun already, though its status does
    /// not say so (an API-started rollout's own hold is on the workload: its
    /// start was made and the status write recording it was lost, as to a
    /// Pause written meanwhile). A pause then holds it where it is, begun.
    pub begun: bool,
}

impl Default for Observed {
    /// Nothing seen: not startable, no progress, nothing handed back or
    /// rolled back, traffic not looked at.
    fn default() -> Self {
        Self {
            start: Start::Busy("not observed".into()),
            progress: Vec::new(),
            handed_back: Err("not observed".into()),
            rolled_back: Err("not observed".into()),
            traffic_leftovers: None,
            failing_pod: None,
            cannot_create: None,
            begun: false,
        }
    }
}

/// What a person asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Controls {
    /// Held by Pause until Resume.
    pub paused: bool,
    /// A promotion: whether to the end, and the step it was asked at.
    pub promote: Option<(bool, u32)>,
    /// An abort, with its reason.
    pub abort: Option<String>,
    /// The workload's own pause (a bound Deployment its user paused with
    /// `kubectl rollout pause` before changing it): the release does not
    /// start while it holds; the text says how to lift it.
    pub workload_paused: Option<String>,
}

/// Everything [`decide`] reads.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    /// The status as recorded in the cluster.
    pub status: &'a RolloutStatus,
    /// The identity of what the spec asks to release (see
    /// [`release_id`](crate::machine::release_id)).
    pub release: &'a str,
    /// The plan's batches.
    pub plan: &'a [Batch],
    /// A digest of the strategy the plan was made from ([`strategy_digest`]).
    pub strategy: &'a str,
    /// How long the old version is kept after the last step (blue-green).
    pub handback_window: Duration,
    /// Whether traffic weight is set by a router or switch (otherwise
    /// traffic follows the ready pods).
    pub routed: bool,
    /// Whether an analysis error past its limit rolls back (else pauses).
    pub rollback_on_error: bool,
    /// A reason the spec can never work, found before the start.
    pub refusal: Option<String>,
    /// Controls.
    pub controls: &'a Controls,
    /// The cluster.
    pub observed: &'a Observed,
    /// The time.
    pub now: SystemTime,
}

/// One thing the controller carries out. Every effect is idempotent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Takes the workload over: holds its controller back, records the
    /// revisions, makes what the release needs.
    Begin,
    /// Moves pods towards batch `step` (never past replicas + surge).
    MovePods {
        /// The batch.
        step: u32,
    },
    /// Sets the traffic objects for batch `step`: its weight and matches.
    Route {
        /// The batch.
        step: u32,
    },
    /// Sends all traffic to the stable pods (no weight, no matches).
    RouteStable,
    /// Makes sure the analyses of batch `step` run.
    Analyse {
        /// The batch.
        step: u32,
        /// The analyses by name.
        names: Vec<String>,
    },
    /// Stops every analysis of the rollout.
    StopAnalyses,
    /// Hands the workload back to its controller with the new version.
    HandBack,
    /// Brings every pod back to the stable revision and the workload back
    /// to what the user wrote.
    RollBack,
    /// Puts every traffic object back as it was and deletes what the
    /// release made.
    RestoreTraffic,
    /// Removes the release's marks from the workload (its last trace);
    /// carried out just before a terminal phase is written.
    Unmark,
}

/// When to look again, besides any watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Only on a change.
    Change,
    /// After this long at the latest.
    After(Duration),
}

/// What [`decide`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// The next status.
    pub status: RolloutStatus,
    /// What to carry out, in order, before the status is written.
    pub effects: Vec<Effect>,
    /// When to look again.
    pub next: Next,
}

/// How often to look while waiting for something no watch reports
/// (a workload's own rollout, a traffic object's deletion).
pub const POLL: Duration = Duration::from_secs(2);

/// How often new pods are looked at while a batch waits for them, to find
/// those that cannot run (their failures change no workload's status).
pub const POD_CHECK: Duration = Duration::from_secs(5);

/// How long a batch waits for its pods before their states are read for
/// failures: no crash loop or image pull error shows sooner, and a batch
/// that is ready by then costs no pod list at all.
pub const POD_GRACE: Duration = Duration::from_secs(3);

/// Since when the current batch has waited for its pods: the last Resume,
/// else the step's start.
pub fn waiting_since(status: &RolloutStatus) -> Option<SystemTime> {
    status
        .progress_since
        .as_deref()
        .or_else(|| {
            status
                .steps
                .iter()
                .find(|s| s.index == status.current_step)
                .and_then(|s| s.started.as_deref())
        })
        .and_then(parse_time)
}

/// Steps one decision may pass through before it returns.
const MAX_HOPS: u32 = 4;

/// A short digest of what a spec releases: the workload and the new
/// template or images. A Rollout whose digest changes asks for a new
/// release; any other change is a control of the one in flight.
pub fn release_id(spec: &crate::crd::RolloutSpec) -> String {
    crate::digest::hex(
        &serde_json::to_string(&(
            &spec.workload.kind,
            &spec.workload.name,
            &spec.template,
            &spec.images,
        ))
        .unwrap_or_default(),
    )
}

/// The release a bound Rollout asks for: the workload and its own pod
/// template as last changed (`template`). Any other change of the binding
/// is a control of the release in flight.
pub fn bound_release_id(spec: &crate::crd::RolloutSpec, template: &serde_json::Value) -> String {
    crate::digest::hex(
        &serde_json::to_string(&(
            &spec.workload.kind,
            &spec.workload.name,
            Some(template),
            &spec.images,
        ))
        .unwrap_or_default(),
    )
}

/// A digest of a strategy: what its steps are made from, whatever the
/// workload's size.
pub fn strategy_digest(strategy: &crate::spec::Strategy) -> String {
    crate::digest::hex(&serde_json::to_string(strategy).unwrap_or_default())
}

/// A time as RFC 3339, to the second.
pub fn time_text(at: SystemTime) -> String {
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    prost_types::Timestamp {
        seconds: secs as i64,
        nanos: 0,
    }
    .to_string()
}

/// An RFC 3339 time, to the second.
pub fn parse_time(text: &str) -> Option<SystemTime> {
    let ts: prost_types::Timestamp = text.parse().ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(ts.seconds.max(0) as u64))
}

/// Whether the traffic objects' state is an input of the next decision
/// (the controller looks them up only then).
pub fn needs_traffic_check(status: &RolloutStatus) -> bool {
    match status.phase {
        Phase::RollingBack => true,
        Phase::Progressing => {
            status.step_state == StepState::Completed
                && status.total_steps > 0
                && status.current_step + 1 >= status.total_steps
        }
        _ => false,
    }
}

/// A decision in the making.
struct Decision<'a> {
    input: &'a Input<'a>,
    status: RolloutStatus,
    effects: Vec<Effect>,
}

/// How the message of a rollback asked for by Abort begins.
const ABORTED: &str = "aborted";

/// How the message of a rollback to the version the workload ran before
/// (a revert of the new version) begins.
const REVERTED: &str = "reverted";

/// Whether a rollback was asked for (Abort, or a revert to the stable
/// version) rather than forced by a failure: the new pods then are healthy
/// and go only as fast as the workload's own strategy allows; after a
/// failure they go at once.
pub fn rollback_requested(status: &RolloutStatus) -> bool {
    status.message.starts_with(ABORTED) || status.message.starts_with(REVERTED)
}

/// The message of a release held by Pause.
const PAUSED_BY_REQUEST: &str = "paused on request; Resume continues";

/// Said once an abort came after the workload was given back.
const TOO_LATE: &str =
    "; an abort asked during the hand-back came too late: the workload was already given back";
/// Said once a promotion came while the release rolled back.
const NOT_PROMOTED: &str =
    "; a promotion asked during the rollback was not carried out: the release is rolled back";
/// What a step's message gains when the workload is scaled while the step
/// waits, before the batch's new count.
const SCALED: &str = "; the workload was scaled, so this step's batch is now ";

/// What a release handing its workload back says while it waits for
/// `what`.
pub fn handing_back(what: &str) -> String {
    format!("handing back: {what}")
}

/// `after` with what it records of the current batch's pods (how many new
/// ones are ready, the share of traffic they take when nothing routes it,
/// the message saying so) taken back to `before`'s, when that is all that
/// differs; `None` when anything else changed (the phase, the step or its
/// state, a control's mark in the message, anything a later decision
/// reads). What is taken back is observed again at the next look: holding
/// it back loses nothing.
pub fn without_progress(
    before: &RolloutStatus,
    after: &RolloutStatus,
    routed: bool,
) -> Option<RolloutStatus> {
    let told = |s: &RolloutStatus| {
        let prefix = format!("step {}: ", s.current_step + 1);
        s.message
            .strip_prefix(&prefix)
            .is_some_and(|rest| rest.ends_with(" new pods ready"))
    };
    if after == before || !told(before) || !told(after) {
        return None;
    }
    let mut held = after.clone();
    held.ready_canary_replicas = before.ready_canary_replicas;
    held.message.clone_from(&before.message);
    if !routed {
        held.traffic = before.traffic;
    }
    (held == *before).then_some(held)
}

/// What a step waiting for its new pods says.
fn pods_ready(step: u32, ready: u32, wanted: u32) -> String {
    format!("step {}: {ready} of {wanted} new pods ready", step + 1)
}

/// Decides the next status, effects and look for a release.
pub fn decide(input: &Input<'_>) -> Output {
    let mut d = Decision {
        input,
        status: input.status.clone(),
        effects: Vec::new(),
    };
    if d.status.release.is_empty()
        && matches!(
            d.status.phase,
            Phase::Progressing | Phase::Paused | Phase::RollingBack
        )
    {
        // Recorded before releases were identified: adopt it.
        d.status.release = input.release.to_owned();
    } else if d.status.release != input.release {
        d.new_release();
    }
    let next = d.run();
    // The record of the step under way says the state the status says.
    if matches!(d.status.phase, Phase::Progressing | Phase::Paused) {
        let (index, state) = (d.status.current_step, d.status.step_state);
        if let Some(record) = d
            .status
            .steps
            .iter_mut()
            .find(|s| s.index == index && s.finished.is_none())
        {
            record.state = state;
        }
    }
    Output {
        status: d.status,
        effects: d.effects,
        next,
    }
}

impl Decision<'_> {
    fn now(&self) -> SystemTime {
        self.input.now
    }

    fn last(&self) -> u32 {
        self.input.plan.len().saturating_sub(1) as u32
    }

    fn batch(&self) -> &Batch {
        static EMPTY: Batch = Batch {
            canary_replicas: 0,
            traffic: 0,
            analyses: Vec::new(),
            pause: None,
            progress_deadline: DEFAULT_PROGRESS_DEADLINE,
        };
        self.input
            .plan
            .get(self.status.current_step as usize)
            .unwrap_or(&EMPTY)
    }

    fn effect(&mut self, effect: Effect) {
        if !self.effects.contains(&effect) {
            self.effects.push(effect);
        }
    }

    /// A spec asking for something else than the recorded release: start
    /// over. While the old release is in flight its stable revision stays
    /// the stable one (the workload never fully ran the old new version).
    fn new_release(&mut self) {
        let old = std::mem::take(&mut self.status);
        let in_flight = matches!(
            old.phase,
            Phase::Progressing | Phase::Paused | Phase::RollingBack
        ) || (old.phase == Phase::Pending && !old.stable_revision.is_empty());
        if in_flight {
            self.effects.push(Effect::StopAnalyses);
        }
        self.status = RolloutStatus {
            release: self.input.release.to_owned(),
            observed_generation: old.observed_generation,
            conditions: old.conditions,
            stable_revision: if in_flight {
                old.stable_revision
            } else {
                String::new()
            },
            ..RolloutStatus::default()
        };
    }

    fn run(&mut self) -> Next {
        let mut hops = 0;
        loop {
            hops += 1;
            let step = match self.status.phase {
                Phase::Pending => self.pending(),
                Phase::Progressing | Phase::Paused => self.running(),
                Phase::RollingBack => return self.rolling_back(),
                Phase::Succeeded | Phase::RolledBack | Phase::Failed => return Next::Change,
            };
            match step {
                Hop::Return(next) => return next,
                Hop::Again if hops < MAX_HOPS => {}
                Hop::Again => return Next::After(Duration::ZERO),
            }
        }
    }

    fn end(&mut self, phase: Phase, message: impl Into<String>) -> Hop {
        self.status.phase = phase;
        self.status.message = message.into();
        self.status.pause_until = None;
        self.status.finished = Some(time_text(self.now()));
        if phase == Phase::Succeeded {
            // Nothing is left to do in any step.
            self.status.step_state = StepState::Completed;
        }
        if phase != Phase::Failed {
            self.close_step();
        }
        self.effect(Effect::StopAnalyses);
        Hop::Return(Next::Change)
    }

    fn pending(&mut self) -> Hop {
        let input = self.input;
        if let Some(problem) = &input.refusal {
            return self.end(Phase::Failed, problem.clone());
        }
        if let Some(reason) = &input.controls.abort {
            // An earlier release of this rollout may have left the workload
            // half-way: that is rolled back; otherwise nothing was done.
            if !self.status.stable_revision.is_empty() {
                return self.roll_back(format!("{ABORTED}: {reason}"));
            }
            return self.end(
                Phase::RolledBack,
                format!("{ABORTED} before the start: {reason}"),
            );
        }
        if input.controls.paused && !input.observed.begun {
            // Time held by a person does not count against the wait.
            self.status.started = None;
            self.status.message = "paused on request before the start; Resume starts it".into();
            return Hop::Return(Next::Change);
        }
        if let Some(how) = &input.controls.workload_paused {
            self.status.started = None;
            self.status.message = how.clone();
            return Hop::Return(Next::Change);
        }
        match &input.observed.start {
            Start::Refused(reason) => self.end(Phase::Failed, reason.clone()),
            Start::NothingToDo if !self.status.stable_revision.is_empty() => {
                // A new spec in flight asks for the version the workload ran
                // before: what the old release changed is undone.
                self.roll_back(format!(
                    "{REVERTED}: the version asked for now is the one the workload ran before \
                     the release; back to it without analysis"
                ))
            }
            Start::NothingToDo => {
                self.status
                    .started
                    .get_or_insert_with(|| time_text(input.now));
                // A hold left on a workload that runs this version already
                // (a bound workload changed back after a rollback) goes.
                self.effect(Effect::Unmark);
                self.end(
                    Phase::Succeeded,
                    "nothing to release: every replica already runs this version",
                )
            }
            Start::Busy(reason) => {
                let since = self
                    .status
                    .started
                    .get_or_insert_with(|| time_text(input.now))
                    .clone();
                let deadline = input
                    .plan
                    .first()
                    .map_or(DEFAULT_PROGRESS_DEADLINE, |b| b.progress_deadline);
                let waited = parse_time(&since)
                    .and_then(|t| input.now.duration_since(t).ok())
                    .unwrap_or_default();
                if waited >= deadline {
                    return self.end(
                        Phase::Failed,
                        format!(
                            "the release could not start within {}s: {reason}",
                            deadline.as_secs()
                        ),
                    );
                }
                // The moment it gives up, not a countdown: a message that
                // stays the same is not written again at every look.
                let until = parse_time(&since).map_or_else(
                    || format!("at most {}s", deadline.as_secs()),
                    |t| format!("until {}", time_text(t + deadline)),
                );
                self.status.message = format!("waiting to start ({until}): {reason}");
                Hop::Return(Next::After(POLL.min(deadline - waited)))
            }
            Start::Ready => {
                if input.plan.is_empty() {
                    return self.end(Phase::Failed, "the plan has no steps");
                }
                self.effect(Effect::Begin);
                self.effect(Effect::RouteStable);
                self.status.phase = Phase::Progressing;
                self.status.started = Some(time_text(input.now));
                self.status.strategy_digest = input.strategy.to_owned();
                self.status.total_steps = input.plan.len() as u32;
                self.status.current_step = 0;
                self.status.step_state = StepState::Upgrading;
                // Said as the first batch's look says it once its pods are
                // asked for (a partition release asks for them as it
                // begins): that look then has nothing new to record.
                let wanted = self.batch().canary_replicas;
                self.status.canary_replicas = wanted;
                self.status.message = pods_ready(0, 0, wanted);
                self.record();
                // The workload just changed: its next events bring the
                // next look.
                Hop::Return(Next::After(POLL))
            }
        }
    }

    fn roll_back(&mut self, message: String) -> Hop {
        // Nothing decided before in this decision moves the release on.
        self.effects.retain(|e| {
            !matches!(
                e,
                Effect::MovePods { .. } | Effect::Route { .. } | Effect::HandBack | Effect::Begin
            )
        });
        self.status.phase = Phase::RollingBack;
        self.status.message = message;
        self.status.pause_until = None;
        self.effect(Effect::StopAnalyses);
        Hop::Again
    }

    fn running(&mut self) -> Hop {
        let input = self.input;
        if self.status.handing_back() {
            // Given back: the workload's own controller is replacing the
            // old version's pods, so no step, pause, abort or strategy of
            // the release applies any more; it only waits for the end.
            self.status.phase = Phase::Progressing;
            self.status.strategy_digest = input.strategy.to_owned();
            let late = input.controls.abort.is_some() || self.status.message.ends_with(TOO_LATE);
            return self.hand_back(late);
        }
        if self.status.strategy_digest.is_empty() {
            // Recorded before strategies were: adopt this one.
            self.status.strategy_digest = input.strategy.to_owned();
        } else if self.status.strategy_digest != input.strategy {
            // The strategy changed mid-release: its steps are not the ones
            // the release is at, so it starts over from the first of the
            // new ones (its pods move to that batch; a step only goes on as
            // the new strategy says).
            self.status.strategy_digest = input.strategy.to_owned();
            self.effect(Effect::StopAnalyses);
            self.status.steps.clear();
            self.status.total_steps = input.plan.len() as u32;
            self.status.current_step = 0;
            self.status.step_state = StepState::Upgrading;
            self.status.pause_until = None;
            self.status.analysis = None;
            if self.status.phase == Phase::Paused {
                self.status.phase = Phase::Progressing;
            }
            self.status.message = format!(
                "the strategy changed: starting over from step 1 of {}",
                input.plan.len()
            );
            self.record();
            return Hop::Again;
        }
        self.status.total_steps = input.plan.len() as u32;
        self.status.current_step = self.status.current_step.min(self.last());
        if let Some(reason) = &input.controls.abort {
            return self.roll_back(format!("{ABORTED}: {reason}"));
        }
        if let Some(failure) = &input.observed.failing_pod
            && self.status.step_state == StepState::Upgrading
        {
            return self.roll_back(format!("step {}: {failure}", self.status.current_step + 1));
        }
        if input.controls.paused {
            // A failed verdict still rolls back: a person's pause holds the
            // release, not its safety.
            if self.status.step_state == StepState::Analyzing
                && let Some((Verdict::Fail, message)) = self.verdict()
            {
                return self.roll_back(format!(
                    "step {}: analysis failed: {message}",
                    self.status.current_step + 1
                ));
            }
            self.status.phase = Phase::Paused;
            // Held, but still said as it is: moves made before the pause
            // (a batch already under way) go on landing, and the status
            // shows the pods and the share of traffic they have.
            self.show_progress();
            if !self.status.message.starts_with(PAUSED_BY_REQUEST) {
                // A step's own pause keeps its message for after Resume.
                self.status.message = if self.status.step_state == StepState::Paused
                    && !self.status.message.is_empty()
                {
                    format!("{PAUSED_BY_REQUEST}; then: {}", self.status.message)
                } else {
                    PAUSED_BY_REQUEST.into()
                };
            }
            return Hop::Return(Next::Change);
        }
        if let Some(held) = self.status.message.strip_prefix(PAUSED_BY_REQUEST) {
            // Resumed: the step's own message again, or a plain note.
            self.status.message = held
                .strip_prefix("; then: ")
                .unwrap_or("resumed")
                .to_owned();
        }
        if self.status.phase == Phase::Paused && self.status.step_state != StepState::Paused {
            // Resumed: time held by a person does not count against the
            // batch's progress deadline.
            self.status.phase = Phase::Progressing;
            self.status.progress_since = Some(time_text(input.now));
        }
        // A promotion names the step it was asked at, so a stale one is
        // ignored.
        let promotion = input
            .controls
            .promote
            .filter(|(_, at)| *at == self.status.current_step)
            .map(|(full, _)| full);
        if promotion == Some(true) && self.status.current_step < self.last() {
            self.close_step();
            self.status.current_step = self.last();
            self.status.step_state = StepState::Upgrading;
            self.status.phase = Phase::Progressing;
            self.status.pause_until = None;
            self.status.message = "promoted to the end".into();
            self.record();
            return Hop::Again;
        }
        match self.status.step_state {
            StepState::Upgrading | StepState::Routing => self.upgrading(),
            StepState::Analyzing => self.analysing(),
            StepState::Paused => {
                // The workload was scaled (kubectl scale, an autoscaler)
                // while the step waits: its batch follows the new replica
                // count, and nothing else moves.
                if promotion.is_none() {
                    self.follow_replicas();
                }
                self.show_progress();
                let over = promotion.is_some()
                    || match self.status.pause_until.as_deref().and_then(parse_time) {
                        Some(until) => match until.duration_since(self.now()) {
                            Ok(left) if !left.is_zero() => return Hop::Return(Next::After(left)),
                            _ => true,
                        },
                        None => false,
                    };
                if !over {
                    return Hop::Return(Next::Change);
                }
                self.status.step_state = StepState::Completed;
                self.status.phase = Phase::Progressing;
                self.status.pause_until = None;
                Hop::Again
            }
            StepState::Completed => self.completed(),
        }
    }

    fn upgrading(&mut self) -> Hop {
        let input = self.input;
        let step = self.status.current_step;
        let batch = self.batch().clone();
        let Some(progress) = input
            .observed
            .progress
            .get(step as usize)
            .copied()
            .flatten()
        else {
            return self.end(Phase::Failed, "the release's workload revisions are gone");
        };
        self.status.canary_replicas = batch.canary_replicas;
        self.status.ready_canary_replicas = progress.ready_new;
        if !input.routed {
            self.status.traffic = progress.pod_share;
        }
        if progress.reached {
            self.effect(Effect::Route { step });
            if input.routed {
                self.status.traffic = batch.traffic;
            }
            if batch.analyses.is_empty() {
                self.after_checks();
            } else {
                self.status.step_state = StepState::Analyzing;
                self.status.analysis = None;
                self.status.message =
                    format!("step {}: analysing {}", step + 1, batch.analyses.join(", "));
            }
            return Hop::Again;
        }
        let started = waiting_since(&self.status);
        let elapsed = started
            .and_then(|t| self.now().duration_since(t).ok())
            .unwrap_or_default();
        let deadline = batch.progress_deadline;
        let why = input
            .observed
            .cannot_create
            .as_ref()
            .map(|why| format!("; new pods cannot be made: {why}"))
            .unwrap_or_default();
        if elapsed >= deadline {
            return self.roll_back(format!(
                "step {}: {} of {} new pods ready after the progress deadline of {}s{why}",
                step + 1,
                progress.ready_new,
                batch.canary_replicas,
                deadline.as_secs()
            ));
        }
        if input.routed && batch.traffic < self.status.traffic {
            // A smaller batch than the pods there (a changed strategy):
            // traffic leaves the new pods before they go, as in a rollback.
            self.effect(Effect::Route { step });
            self.status.traffic = batch.traffic;
        }
        self.effect(Effect::MovePods { step });
        self.status.message = format!(
            "{}{why}",
            pods_ready(step, progress.ready_new, batch.canary_replicas)
        );
        // Pods that fail change no workload status: no event says so.
        Hop::Return(Next::After(POD_CHECK.min(deadline - elapsed)))
    }

    fn verdict(&self) -> Option<(Verdict, String)> {
        let a = self
            .status
            .analysis
            .as_ref()
            .filter(|a| a.step == self.status.current_step)?;
        Some((a.verdict?, a.message.clone()))
    }

    fn analysing(&mut self) -> Hop {
        let step = self.status.current_step;
        let names = self.batch().analyses.clone();
        match self.verdict() {
            None if names.is_empty() => {
                self.after_checks();
                Hop::Again
            }
            None => {
                self.effect(Effect::Analyse { step, names });
                self.follow_replicas();
                Hop::Return(Next::Change)
            }
            Some((Verdict::Pass, _)) => {
                self.after_checks();
                Hop::Again
            }
            Some((Verdict::Fail, message)) => {
                self.roll_back(format!("step {}: analysis failed: {message}", step + 1))
            }
            Some((Verdict::Error, message)) if self.input.rollback_on_error => self.roll_back(
                format!("step {}: analysis could not get data: {message}", step + 1),
            ),
            Some((v, message)) => {
                self.status.phase = Phase::Paused;
                self.status.step_state = StepState::Paused;
                self.status.pause_until = None;
                self.status.message = format!(
                    "step {}: analysis {v:?}: {message}; Promote to continue, Abort to roll back",
                    step + 1
                );
                Hop::Return(Next::Change)
            }
        }
    }

    /// Moves a step on after its batch is ready or its analysis passed.
    fn after_checks(&mut self) {
        let step = self.status.current_step + 1;
        match self.batch().pause {
            Some(duration) => {
                self.status.step_state = StepState::Paused;
                self.status.phase = Phase::Paused;
                self.status.pause_until = duration.map(|d| time_text(self.now() + d));
                self.status.message = match &self.status.pause_until {
                    Some(until) => format!("step {step} paused until {until}"),
                    None => format!("step {step} waits for promotion"),
                };
            }
            None => self.status.step_state = StepState::Completed,
        }
    }

    fn completed(&mut self) -> Hop {
        let input = self.input;
        self.close_step();
        self.status.pause_until = None;
        self.status.phase = Phase::Progressing;
        if self.status.current_step < self.last() {
            self.status.current_step += 1;
            self.status.step_state = StepState::Upgrading;
            self.record();
            return Hop::Again;
        }
        // Every step done: the old version is kept for the hand-back window
        // (blue-green), then the workload is handed back.
        let after = match self.status.handback_after.as_deref().and_then(parse_time) {
            Some(t) => t,
            None => {
                let at = input.now + input.handback_window;
                self.status.handback_after = Some(time_text(at));
                at
            }
        };
        if let Ok(left) = after.duration_since(input.now)
            && !left.is_zero()
        {
            self.status.message = format!(
                "all traffic on the new version; the old version is kept until {}",
                self.status.handback_after.clone().unwrap_or_default()
            );
            return Hop::Return(Next::After(left));
        }
        self.hand_back(false)
    }

    /// Gives the workload back (or waits for its controller to finish
    /// with it) and ends the release once it has. `late`: an abort came
    /// after the workload was given back, which the messages say.
    fn hand_back(&mut self, late: bool) -> Hop {
        let input = self.input;
        let note = if late { TOO_LATE } else { "" };
        let clean = input
            .observed
            .traffic_leftovers
            .as_ref()
            .is_some_and(Vec::is_empty);
        match (&input.observed.handed_back, clean) {
            (Ok(()), true) => {
                self.status.traffic = 100;
                self.status.handback_after = None;
                self.status.handing_back_since = None;
                // Every pod runs the new version now: it is the stable one,
                // as `kubectl get rollouts` should show.
                self.status.stable_revision = self.status.canary_revision.clone();
                self.effect(Effect::Unmark);
                self.end(
                    Phase::Succeeded,
                    format!(
                        "released: all {} replicas run the new version{note}",
                        self.batch().canary_replicas
                    ),
                )
            }
            (waiting, _) => {
                self.effect(Effect::HandBack);
                self.status
                    .handing_back_since
                    .get_or_insert_with(|| time_text(input.now));
                self.status.message = match waiting {
                    Err(what) => handing_back(what),
                    Ok(()) => format!(
                        "handing back: restoring {}",
                        input
                            .observed
                            .traffic_leftovers
                            .as_deref()
                            .unwrap_or_default()
                            .join(", ")
                    ),
                } + note;
                Hop::Return(Next::After(POLL))
            }
        }
    }

    fn rolling_back(&mut self) -> Next {
        let observed = self.input.observed;
        // A promotion that lost the race to a failed check (or came after
        // an abort) is answered, not dropped unsaid.
        if self.input.controls.promote.is_some() && !self.status.message.ends_with(NOT_PROMOTED) {
            self.status.message.push_str(NOT_PROMOTED);
        }
        self.status.traffic = 0;
        self.status.canary_replicas = 0;
        self.effect(Effect::StopAnalyses);
        let clean = observed
            .traffic_leftovers
            .as_ref()
            .is_some_and(Vec::is_empty);
        match (&observed.rolled_back, clean) {
            (Ok(()), true) => {
                let message = self.status.message.clone();
                // The workload is back on stable: no new pod is wanted or
                // counted any more.
                self.status.ready_canary_replicas = 0;
                self.effect(Effect::Unmark);
                self.end(Phase::RolledBack, message);
                Next::Change
            }
            (Ok(()), false) => {
                self.effect(Effect::RestoreTraffic);
                Next::After(POLL)
            }
            (Err(_), _) => {
                // Traffic to stable first, then the pods.
                self.effect(Effect::RouteStable);
                self.effect(Effect::RollBack);
                Next::After(POLL)
            }
        }
    }

    /// While a step waits (its pause, its analysis): when the workload was
    /// scaled, the plan's batch for the step is no longer the one recorded
    /// at its start; the record takes the new count and the pods move to
    /// it. Only a change of the plan moves them, never what a possibly
    /// stale status says of the pods (a lagging read of an earlier step
    /// must not move a later step's pods back).
    /// The new pods ready for the current step, and (when nothing routes
    /// traffic) the share they take, as observed.
    fn show_progress(&mut self) {
        let input = self.input;
        if let Some(progress) = input
            .observed
            .progress
            .get(self.status.current_step as usize)
            .copied()
            .flatten()
        {
            self.status.ready_canary_replicas = progress.ready_new;
            if !input.routed {
                self.status.traffic = progress.pod_share;
            }
        }
    }

    fn follow_replicas(&mut self) {
        let step = self.status.current_step;
        let wanted = self.batch().canary_replicas;
        let Some(record) = self.status.steps.iter_mut().find(|s| s.index == step) else {
            return;
        };
        if record.canary_replicas != wanted {
            record.canary_replicas = wanted;
            self.status.canary_replicas = wanted;
            // Said after what the step says of itself (its pause, its
            // analysis), replacing an earlier rescale's words.
            let base = self
                .status
                .message
                .split(SCALED)
                .next()
                .unwrap_or_default()
                .to_owned();
            self.status.message = format!("{base}{SCALED}{wanted} new pods");
            self.effect(Effect::MovePods { step });
        }
        // More new pods ready than the batch, or pods where the batch
        // does not want them (which a move replaces only within the
        // availability budget): moved again at each look until the batch
        // is what runs. A read that shows fewer pods moves nothing: it may
        // lag.
        let over = self
            .input
            .observed
            .progress
            .get(step as usize)
            .and_then(Option::as_ref)
            .is_some_and(|p| p.ready_new > wanted || p.misplaced);
        if over {
            self.effect(Effect::MovePods { step });
        }
    }

    fn record(&mut self) {
        let index = self.status.current_step;
        self.status.progress_since = None;
        let batch = self.batch().clone();
        self.status.steps.retain(|s| s.index != index);
        self.status.steps.push(StepRecord {
            index,
            canary_replicas: batch.canary_replicas,
            traffic: batch.traffic,
            state: StepState::Upgrading,
            started: Some(time_text(self.now())),
            ..StepRecord::default()
        });
    }

    fn close_step(&mut self) {
        let index = self.status.current_step;
        let now = time_text(self.now());
        let (state, analysis) = (
            self.status.step_state,
            self.status.analysis.clone().filter(|a| a.step == index),
        );
        if let Some(step) = self.status.steps.iter_mut().find(|s| s.index == index) {
            step.state = state;
            if step.finished.is_none() {
                step.finished = Some(now);
            }
            if let Some(a) = analysis {
                step.verdict = a.verdict;
                step.evidence = a.evidence;
            }
        }
    }
}

/// What one stage of a decision leads to.
enum Hop {
    /// Decide again from the new state (no new observation needed).
    Again,
    /// Done: look again then.
    Return(Next),
}
