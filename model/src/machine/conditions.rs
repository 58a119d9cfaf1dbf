//! The Rollout's Kubernetes conditions, derived from its status after every
//! decision, so that `kubectl wait --for=condition=Completed` and GitOps
//! health checks can read a release without knowing its phases.
//!
//! | type | True when | reasons |
//! |---|---|---|
//! | `Progressing` | the release runs (Pending, Progressing, Paused, RollingBack) | `Waiting`, `Releasing`, `HandingBack`, `Paused`, `RollingBack`; False: `Succeeded`, `RolledBack`, `Failed`, and `Forbidden` while the API server refuses the executor a request the release needs ([`set_blocked`]) |
//! | `Paused` | held by a person or by a step | `PausedByRequest`, `StepPause`, `AnalysisInconclusive`; False: `NotPaused` |
//! | `Completed` | every replica runs the new version, handed back | `Succeeded`; False: `InProgress`, `RolledBack`, `Failed` |
//!
//! A condition's `lastTransitionTime` changes only when its status does.

use std::time::SystemTime;

use super::time_text;
use crate::crd::{Phase, RolloutCondition, RolloutStatus, Verdict};

/// Condition types.
pub mod condition_types {
    /// The release runs.
    pub const PROGRESSING: &str = "Progressing";
    /// The release is held.
    pub const PAUSED: &str = "Paused";
    /// The release succeeded and the workload is handed back.
    pub const COMPLETED: &str = "Completed";
}

/// Condition reasons.
pub mod reasons {
    /// Waiting for the workload before the start.
    pub const WAITING: &str = "Waiting";
    /// Moving through the steps.
    pub const RELEASING: &str = "Releasing";
    /// Every step done; the workload is being handed back.
    pub const HANDING_BACK: &str = "HandingBack";
    /// Held (see the `Paused` condition for why).
    pub const PAUSED: &str = "Paused";
    /// Bringing traffic and pods back to stable.
    pub const ROLLING_BACK: &str = "RollingBack";
    /// Released and handed back.
    pub const SUCCEEDED: &str = "Succeeded";
    /// Rolled back and restored.
    pub const ROLLED_BACK: &str = "RolledBack";
    /// Could neither proceed nor roll back.
    pub const FAILED: &str = "Failed";
    /// Held by Pause.
    pub const PAUSED_BY_REQUEST: &str = "PausedByRequest";
    /// Held by a step's pause.
    pub const STEP_PAUSE: &str = "StepPause";
    /// Held because an analysis could not decide.
    pub const ANALYSIS_INCONCLUSIVE: &str = "AnalysisInconclusive";
    /// Not held.
    pub const NOT_PAUSED: &str = "NotPaused";
    /// Not finished.
    pub const IN_PROGRESS: &str = "InProgress";
    /// The executor may not make a request the release needs.
    pub const FORBIDDEN: &str = "Forbidden";
    /// The API server refused a write the release needs as invalid (the
    /// workload with the new template breaks its own rules).
    pub const INVALID: &str = "Invalid";
}

fn flag(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

/// Writes the conditions that `status` implies, for `generation`.
pub fn set_conditions(
    status: &mut RolloutStatus,
    paused_by_request: bool,
    generation: i64,
    now: SystemTime,
) {
    use condition_types as t;
    use reasons as r;
    let phase = status.phase;
    let running = matches!(
        phase,
        Phase::Pending | Phase::Progressing | Phase::Paused | Phase::RollingBack
    );
    // Only once the workload is given back: a blue-green release keeping
    // its old version for the rollback window still releases (Pause and
    // Abort still apply there).
    let handing_back = phase == Phase::Progressing && status.handing_back();
    let progressing_reason = match phase {
        Phase::Pending => r::WAITING,
        Phase::Progressing if handing_back => r::HANDING_BACK,
        Phase::Progressing => r::RELEASING,
        Phase::Paused => r::PAUSED,
        Phase::RollingBack => r::ROLLING_BACK,
        Phase::Succeeded => r::SUCCEEDED,
        Phase::RolledBack => r::ROLLED_BACK,
        Phase::Failed => r::FAILED,
    };
    // Nothing holds a rollback or a workload already given back.
    let paused = running
        && phase != Phase::RollingBack
        && !status.handing_back()
        && (paused_by_request || phase == Phase::Paused);
    let inconclusive = status.analysis.as_ref().is_some_and(|a| {
        a.step == status.current_step
            && matches!(a.verdict, Some(Verdict::Inconclusive | Verdict::Error))
    });
    let paused_reason = if !paused {
        r::NOT_PAUSED
    } else if paused_by_request {
        r::PAUSED_BY_REQUEST
    } else if inconclusive {
        r::ANALYSIS_INCONCLUSIVE
    } else {
        r::STEP_PAUSE
    };
    let completed_reason = match phase {
        Phase::Succeeded => r::SUCCEEDED,
        Phase::RolledBack => r::ROLLED_BACK,
        Phase::Failed => r::FAILED,
        _ => r::IN_PROGRESS,
    };
    let wanted = [
        (t::PROGRESSING, running, progressing_reason),
        (t::PAUSED, paused, paused_reason),
        (t::COMPLETED, phase == Phase::Succeeded, completed_reason),
    ];
    let now = time_text(now);
    let mut next = Vec::with_capacity(wanted.len());
    for (kind, value, reason) in wanted {
        let value = flag(value);
        let old = status.conditions.iter().find(|c| c.kind == kind);
        let last_transition_time = match old {
            Some(c) if c.status == value => c.last_transition_time.clone(),
            _ => now.clone(),
        };
        next.push(RolloutCondition {
            kind: kind.to_owned(),
            status: value.to_owned(),
            reason: reason.to_owned(),
            message: status.message.clone(),
            last_transition_time,
            observed_generation: generation,
        });
    }
    status.conditions = next;
}

/// Marks a release that cannot go on because the API server refused the
/// executor a request (`why`, its answer, which names the verb and the
/// resource): the message says so and `Progressing` turns False with the
/// reason `Forbidden`. A running release keeps its phase and steps; the
/// next decision that goes through writes the conditions afresh. An ended
/// release's status describes that release, and a refusal after it is the
/// next one's, refused its first write: it becomes a Pending release that
/// has done nothing (no revisions, no steps; the next look takes it from
/// there as a new release), so nothing reads as the old outcome.
pub fn set_blocked(status: &mut RolloutStatus, why: &str, generation: i64, now: SystemTime) {
    set_stalled(
        status,
        format!("blocked by permissions: {why}"),
        reasons::FORBIDDEN,
        generation,
        now,
    );
}

/// Marks a release whose write the API server refused as invalid (422:
/// the workload with the new template, say, breaks its own rules; `why`
/// names the field), as [`set_blocked`] marks a refused permission, with
/// the reason `Invalid`: the release goes on once the spec or the workload
/// is fixed.
pub fn set_refused(status: &mut RolloutStatus, why: &str, generation: i64, now: SystemTime) {
    set_stalled(
        status,
        format!("the API server refused a write of this release: {why}"),
        reasons::INVALID,
        generation,
        now,
    );
}

fn set_stalled(
    status: &mut RolloutStatus,
    message: String,
    reason: &str,
    generation: i64,
    now: SystemTime,
) {
    if matches!(
        status.phase,
        Phase::Succeeded | Phase::RolledBack | Phase::Failed
    ) {
        *status = RolloutStatus {
            observed_generation: status.observed_generation,
            conditions: std::mem::take(&mut status.conditions)
                .into_iter()
                .filter(|c| c.kind == condition_types::PROGRESSING)
                .collect(),
            ..RolloutStatus::default()
        };
    }
    status.message.clone_from(&message);
    let now = time_text(now);
    let condition = RolloutCondition {
        kind: condition_types::PROGRESSING.to_owned(),
        status: flag(false).to_owned(),
        reason: reason.to_owned(),
        message,
        last_transition_time: now,
        observed_generation: generation,
    };
    match status
        .conditions
        .iter_mut()
        .find(|c| c.kind == condition_types::PROGRESSING)
    {
        Some(old) => {
            let time = if old.status == condition.status {
                old.last_transition_time.clone()
            } else {
                condition.last_transition_time.clone()
            };
            *old = RolloutCondition {
                last_transition_time: time,
                ..condition
            };
        }
        None => status.conditions.push(condition),
    }
}

/// The message of a bound release the workload's own change asked for
/// and the executor has not taken up yet.
pub const AWAITING_EXECUTOR: &str =
    "the workload's pod template changed and is held; its release has not begun yet";

/// How a bound Rollout reads once its workload's pod template changed
/// again (the admission webhook held the change) and before the executor
/// recorded the new release, whose identity is `release`
/// ([`super::bound_release_id`] of the workload's template now): Pending,
/// having done nothing, as the executor is about to record it, so that
/// nobody reads the last release's outcome as this change's, nor promotes
/// a step of a release the change replaces. A release in flight keeps its
/// stable revision, which the new one starts from. `None` when the status
/// already describes that release, or one rolling back.
pub fn awaiting_release(
    status: &RolloutStatus,
    release: &str,
    paused_by_request: bool,
    generation: i64,
    now: SystemTime,
) -> Option<RolloutStatus> {
    let in_flight = matches!(status.phase, Phase::Progressing | Phase::Paused);
    let ended = matches!(
        status.phase,
        Phase::Succeeded | Phase::RolledBack | Phase::Failed
    );
    if !(ended || in_flight) || status.release.is_empty() || status.release == release {
        return None;
    }
    let mut next = RolloutStatus {
        release: release.to_owned(),
        observed_generation: status.observed_generation,
        conditions: status.conditions.clone(),
        message: AWAITING_EXECUTOR.to_owned(),
        stable_revision: if in_flight {
            status.stable_revision.clone()
        } else {
            String::new()
        },
        ..RolloutStatus::default()
    };
    set_conditions(&mut next, paused_by_request, generation, now);
    Some(next)
}

#[cfg(test)]
mod blocked_tests {
    use super::*;

    #[test]
    fn an_ended_release_whose_workload_changed_again_reads_as_pending() {
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000);
        let mut ended = RolloutStatus {
            phase: Phase::Succeeded,
            release: "r1".into(),
            canary_revision: "new".into(),
            stable_revision: "new".into(),
            current_step: 1,
            total_steps: 2,
            traffic: 100,
            canary_replicas: 4,
            finished: Some(time_text(at)),
            ..RolloutStatus::default()
        };
        set_conditions(&mut ended, false, 3, at);
        // The same release reads as recorded.
        assert_eq!(awaiting_release(&ended, "r1", false, 3, at), None);
        // One in flight whose workload changed again (a newer template
        // mid-release) reads as the new release, from the same stable
        // revision; one rolling back reads as recorded.
        let running = RolloutStatus {
            phase: Phase::Paused,
            stable_revision: "old".into(),
            ..ended.clone()
        };
        assert_eq!(awaiting_release(&running, "r1", false, 3, at), None);
        let replaced = awaiting_release(&running, "r2", false, 3, at).expect("a newer template");
        assert_eq!(
            (
                replaced.phase,
                replaced.stable_revision.as_str(),
                replaced.current_step
            ),
            (Phase::Pending, "old", 0)
        );
        let rolling_back = RolloutStatus {
            phase: Phase::RollingBack,
            ..running.clone()
        };
        assert_eq!(awaiting_release(&rolling_back, "r2", false, 3, at), None);
        let later = at + std::time::Duration::from_secs(5);
        let shown = awaiting_release(&ended, "r2", false, 3, later).expect("a new change");
        assert_eq!(shown.phase, Phase::Pending);
        assert_eq!(shown.release, "r2");
        assert!(shown.stable_revision.is_empty() && shown.canary_revision.is_empty());
        assert_eq!(
            (shown.current_step, shown.total_steps, shown.traffic),
            (0, 0, 0)
        );
        assert_eq!(shown.finished, None);
        let of = |kind: &str| shown.conditions.iter().find(|c| c.kind == kind).unwrap();
        assert_eq!(of(condition_types::COMPLETED).status, "False");
        assert_eq!(of(condition_types::PROGRESSING).status, "True");
        assert_eq!(of(condition_types::PROGRESSING).reason, reasons::WAITING);
        assert_eq!(
            of(condition_types::PROGRESSING).last_transition_time,
            time_text(later)
        );
        // A binding paused by a person shows it.
        let paused = awaiting_release(&ended, "r2", true, 3, later).unwrap();
        let paused_condition = paused
            .conditions
            .iter()
            .find(|c| c.kind == condition_types::PAUSED)
            .unwrap();
        assert_eq!(paused_condition.status, "True");
    }

    #[test]
    fn a_refused_request_turns_progressing_false_and_back_on_the_next_decision() {
        let mut status = RolloutStatus {
            phase: Phase::Progressing,
            total_steps: 2,
            ..RolloutStatus::default()
        };
        let t0 = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000);
        set_conditions(&mut status, false, 1, t0);
        let why = r#"replicasets.apps is forbidden: User "system:serviceaccount:sluice-system:sluice-executor" cannot create resource "replicasets""#;
        set_blocked(&mut status, why, 1, t0 + std::time::Duration::from_secs(5));
        let progressing = &status.conditions[0];
        assert_eq!(
            (progressing.status.as_str(), progressing.reason.as_str()),
            ("False", reasons::FORBIDDEN)
        );
        assert!(
            status.message.starts_with("blocked by permissions: ")
                && status.message.contains("cannot create")
        );
        assert_eq!(status.phase, Phase::Progressing, "the phase stays");
        assert_eq!(status.conditions.len(), 3, "the others stay");
        set_conditions(
            &mut status,
            false,
            1,
            t0 + std::time::Duration::from_secs(9),
        );
        assert_eq!(status.conditions[0].status, "True");
        assert_eq!(status.conditions[0].reason, reasons::RELEASING);
    }

    #[test]
    fn a_refusal_after_an_ended_release_is_a_new_release_that_has_not_begun() {
        let t0 = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000);
        let mut status = RolloutStatus {
            phase: Phase::RolledBack,
            release: "old".into(),
            stable_revision: "a".into(),
            canary_revision: "b".into(),
            current_step: 1,
            total_steps: 2,
            message: "aborted: by hand".into(),
            observed_generation: 4,
            ..RolloutStatus::default()
        };
        set_conditions(&mut status, false, 4, t0);
        set_blocked(&mut status, "cannot patch resource \"replicasets\"", 4, t0);
        assert_eq!(status.phase, Phase::Pending);
        assert_eq!(
            (
                status.release.as_str(),
                status.stable_revision.as_str(),
                status.canary_revision.as_str(),
                status.total_steps
            ),
            ("", "", "", 0),
            "nothing of the ended release: {status:#?}"
        );
        let kinds: Vec<&str> = status.conditions.iter().map(|c| c.kind.as_str()).collect();
        assert_eq!(kinds, [condition_types::PROGRESSING], "no stale Completed");
        assert_eq!(status.conditions[0].reason, reasons::FORBIDDEN);
        assert_eq!(status.observed_generation, 4);
    }
}
