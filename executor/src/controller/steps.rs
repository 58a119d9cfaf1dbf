//! The steps of a release, whatever the workload: wait for the batch,
//! analyse it, pause, promote, advance, finish. What differs between
//! workloads (how pods move, how the workload is handed back) is a
//! [`Release`].

use std::time::{Duration, SystemTime};

use kube::{ResourceExt, runtime::controller::Action};
use sluice_proto::v1 as pb;

use super::{
    Ctx, Error, after_checks, convert, fail, finish_step, on_error_policy, parse_time, plan,
    record, verdict,
};
use crate::{
    crd::{Phase, Rollout, RolloutStatus, StepState, Verdict},
    keys,
};

/// Acts on an abort asked for: a running release starts rolling back.
fn take_abort(
    ctx: &Ctx,
    rollout: &Rollout,
    consumed: &mut Vec<&'static str>,
    status: &mut RolloutStatus,
) {
    let Some(reason) = rollout.annotations().get(keys::ABORT).cloned() else {
        return;
    };
    if matches!(status.phase, Phase::Progressing | Phase::Paused) {
        status.phase = Phase::RollingBack;
        status.message = format!("aborted: {reason}");
        ctx.analyses.stop(
            &rollout.namespace().unwrap_or_default(),
            &rollout.name_any(),
        );
    }
    consumed.push(keys::ABORT);
}

/// A workload being released.
pub(super) trait Release {
    /// Its replicas.
    fn replicas(&self) -> u32;
    /// Its maxSurge as written ("25%", "1"; "0" when it has none).
    fn max_surge(&self) -> String;
    /// Ready pods of the new version; `None` when the release's revisions
    /// are gone.
    fn ready_new(&self, status: &RolloutStatus) -> Option<u32>;
    /// Moves pods towards the batch; true when the batch is ready.
    async fn advance(&self, status: &mut RolloutStatus, batch: &pb::Batch) -> Result<bool, Error>;
    /// Hands the workload back with every trace removed.
    async fn finish(&self, status: &RolloutStatus, rollout: &str) -> Result<(), Error>;
    /// Records the revisions and begins the first batch.
    async fn start(
        &self,
        ctx: &Ctx,
        rollout: &Rollout,
        status: &mut RolloutStatus,
    ) -> Result<Action, Error>;
    /// Brings every pod back to the stable revision.
    async fn rollback(&self, status: &mut RolloutStatus) -> Result<Action, Error>;
}

/// Takes a release one reconcile further, by its phase.
pub(super) async fn drive<R: Release>(
    ctx: &Ctx,
    rollout: &Rollout,
    consumed: &mut Vec<&'static str>,
    w: &R,
    status: &mut RolloutStatus,
) -> Result<Action, Error> {
    take_abort(ctx, rollout, consumed, status);
    match status.phase {
        Phase::Pending => w.start(ctx, rollout, status).await,
        Phase::Progressing | Phase::Paused => step(ctx, rollout, consumed, w, status).await,
        Phase::RollingBack => w.rollback(status).await,
        Phase::Succeeded | Phase::RolledBack | Phase::Failed => Ok(Action::await_change()),
    }
}

async fn step<R: Release>(
    ctx: &Ctx,
    rollout: &Rollout,
    consumed: &mut Vec<&'static str>,
    w: &R,
    status: &mut RolloutStatus,
) -> Result<Action, Error> {
    let ns = rollout.namespace().unwrap_or_default();
    let name = rollout.name_any();
    if rollout.spec.paused {
        if status.phase != Phase::Paused || status.step_state != StepState::Paused {
            status.phase = Phase::Paused;
            status.message = "paused on request; Resume continues".into();
        }
        return Ok(Action::await_change());
    }
    if status.phase == Phase::Paused && status.step_state != StepState::Paused {
        status.phase = Phase::Progressing;
    }
    let plan = plan(ctx, rollout, w.replicas(), &w.max_surge()).await?;
    status.total_steps = plan.batches.len() as u32;
    let last = plan.batches.len().saturating_sub(1) as u32;
    status.current_step = status.current_step.min(last);
    // A promotion names the step it was asked at, so a stale one (the
    // controller acted, then restarted before removing it) is ignored.
    let mut promotion = None;
    if let Some(value) = rollout.annotations().get(keys::PROMOTE) {
        consumed.push(keys::PROMOTE);
        let (how, at) = value.split_once(':').unwrap_or((value.as_str(), ""));
        if at.parse::<u32>().ok() == Some(status.current_step) {
            promotion = Some(how == "full");
        }
    }
    if promotion == Some(true) && status.current_step < last {
        finish_step(status);
        status.current_step = last;
        record(status, &plan.batches[last as usize]);
        status.step_state = StepState::Upgrading;
        status.phase = Phase::Progressing;
        status.pause_until = None;
        status.message = "promoted to the end".into();
        return Ok(Action::requeue(Duration::ZERO));
    }
    let batch = plan.batches[status.current_step as usize].clone();
    let Some(ready_new) = w.ready_new(status) else {
        return Ok(fail(status, "the release's workload revisions are gone"));
    };
    status.canary_replicas = batch.canary_replicas;
    status.ready_canary_replicas = ready_new;
    let gate = batch.gate.clone().unwrap_or_default();
    match status.step_state {
        StepState::Upgrading | StepState::Routing => {
            let done = w.advance(status, &batch).await?;
            // Without a router, traffic follows the ready pods.
            status.traffic = (100 * ready_new.min(w.replicas()))
                .checked_div(w.replicas())
                .unwrap_or(0);
            if done {
                status.traffic = batch
                    .traffic
                    .max(status.traffic)
                    .min(100 * batch.canary_replicas / w.replicas().max(1));
                let mut names = gate.analyses.clone();
                names.extend(gate.background_analyses.clone());
                if names.is_empty() {
                    after_checks(status, &batch);
                } else {
                    status.step_state = StepState::Analyzing;
                    status.analysis = None;
                    status.message = format!(
                        "step {}: analysing {}",
                        status.current_step + 1,
                        names.join(", ")
                    );
                }
                return Ok(Action::requeue(Duration::ZERO));
            }
            let deadline = gate
                .progress_deadline
                .map_or(Duration::from_secs(600), |d| {
                    Duration::from_secs(d.seconds.max(0) as u64)
                });
            let started = status
                .steps
                .iter()
                .find(|s| s.index == status.current_step)
                .and_then(|s| s.started.as_deref())
                .and_then(parse_time);
            let elapsed = started
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .unwrap_or_default();
            if elapsed >= deadline {
                status.phase = Phase::RollingBack;
                status.message = format!(
                    "step {}: {} of {} new pods ready after the progress deadline of {}s",
                    status.current_step + 1,
                    ready_new,
                    batch.canary_replicas,
                    deadline.as_secs()
                );
                return Ok(Action::requeue(Duration::ZERO));
            }
            status.message = format!(
                "step {}: {} of {} new pods ready",
                status.current_step + 1,
                ready_new,
                batch.canary_replicas
            );
            Ok(Action::requeue(deadline - elapsed))
        }
        StepState::Analyzing => {
            let mut names = gate.analyses.clone();
            names.extend(gate.background_analyses.clone());
            match verdict(status) {
                None => {
                    let Some(analysis) = convert::analysis(
                        &format!("{name}-step-{}", status.current_step + 1),
                        &names,
                        &rollout.spec.analyses,
                    ) else {
                        after_checks(status, &batch);
                        return Ok(Action::requeue(Duration::ZERO));
                    };
                    let context = pb::AnalysisContext {
                        namespace: ns.clone(),
                        workload: rollout.spec.workload.name.clone(),
                        canary_revision: status.canary_revision.clone(),
                        stable_revision: status.stable_revision.clone(),
                        window: Some(prost_types::Duration {
                            seconds: 30,
                            nanos: 0,
                        }),
                        args: Default::default(),
                    };
                    ctx.analyses.ensure(
                        &ctx.client,
                        &ctx.gate,
                        rollout,
                        status.current_step,
                        pb::AnalyzeRequest {
                            analysis: Some(analysis),
                            context: Some(context),
                        },
                    );
                    Ok(Action::await_change())
                }
                Some((Verdict::Pass, _)) => {
                    after_checks(status, &batch);
                    Ok(Action::requeue(Duration::ZERO))
                }
                Some((Verdict::Fail, message)) => {
                    status.phase = Phase::RollingBack;
                    status.message = format!(
                        "step {}: analysis failed: {message}",
                        status.current_step + 1
                    );
                    Ok(Action::requeue(Duration::ZERO))
                }
                Some((Verdict::Error, message))
                    if on_error_policy(rollout.spec.on_analysis_error) =>
                {
                    status.phase = Phase::RollingBack;
                    status.message = format!(
                        "step {}: analysis could not get data: {message}",
                        status.current_step + 1
                    );
                    Ok(Action::requeue(Duration::ZERO))
                }
                Some((v, message)) => {
                    status.phase = Phase::Paused;
                    status.step_state = StepState::Paused;
                    status.pause_until = None;
                    status.message = format!(
                        "step {}: analysis {v:?}: {message}; Promote to continue, Abort to roll back",
                        status.current_step + 1
                    );
                    Ok(Action::await_change())
                }
            }
        }
        StepState::Paused => {
            if promotion == Some(false) {
                status.step_state = StepState::Completed;
                return Ok(Action::requeue(Duration::ZERO));
            }
            match status.pause_until.as_deref().and_then(parse_time) {
                Some(until) => match until.duration_since(SystemTime::now()) {
                    Ok(remaining) if !remaining.is_zero() => Ok(Action::requeue(remaining)),
                    _ => {
                        status.step_state = StepState::Completed;
                        Ok(Action::requeue(Duration::ZERO))
                    }
                },
                None => Ok(Action::await_change()),
            }
        }
        StepState::Completed => {
            finish_step(status);
            status.pause_until = None;
            status.phase = Phase::Progressing;
            if status.current_step < last {
                status.current_step += 1;
                status.step_state = StepState::Upgrading;
                record(status, &plan.batches[status.current_step as usize]);
                return Ok(Action::requeue(Duration::ZERO));
            }
            w.finish(status, &name).await?;
            ctx.analyses.stop(&ns, &name);
            status.phase = Phase::Succeeded;
            status.traffic = 100;
            status.message = format!(
                "released: all {} replicas run the new version",
                w.replicas()
            );
            tracing::info!(rollout = %name, "release succeeded");
            Ok(Action::await_change())
        }
    }
}
