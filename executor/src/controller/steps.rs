//! The steps of a release, whatever the workload: wait for the batch,
//! analyse it, pause, promote, advance, finish. What differs between
//! workloads (how pods move, how the workload is handed back) is a
//! [`Release`].

use std::time::{Duration, SystemTime};

use kube::{ResourceExt, runtime::controller::Action};
use sluice_proto::v1 as pb;

use super::{
    Ctx, Error, after_checks, convert, fail, finish_step, on_error_policy, parse_time, plan,
    record,
    traffic::{Pins, Router, Traffic, rules},
    verdict,
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
    /// The share of traffic the new pods take when nothing routes it: one
    /// Service over every pod.
    fn pod_share(&self, ready_new: u32) -> u32 {
        (100 * ready_new.min(self.replicas()))
            .checked_div(self.replicas())
            .unwrap_or(0)
    }
    /// The labels that tell stable pods from new ones.
    fn pins(&self, status: &RolloutStatus) -> Pins;
    /// The workload the new pods belong to, when not the released one.
    fn canary_workload(&self) -> Option<String> {
        None
    }
    /// Moves pods towards the batch; true when the batch is ready.
    async fn advance(&self, status: &mut RolloutStatus, batch: &pb::Batch) -> Result<bool, Error>;
    /// Hands the workload back with every trace removed, restoring the
    /// traffic objects at the right moment. `Some(action)` while it waits.
    async fn finish(
        &self,
        status: &mut RolloutStatus,
        rollout: &str,
        traffic: Option<&Traffic>,
        plan: &pb::Plan,
    ) -> Result<Option<Action>, Error>;
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

/// The request matches of a plan the router cannot express, as one
/// message naming each field.
fn unroutable(plan: &pb::Plan, traffic: Option<&Traffic>) -> Option<String> {
    let router = traffic.map_or(Router::None, Traffic::router);
    let steps: Vec<(usize, &[pb::RequestMatch])> = plan
        .batches
        .iter()
        .filter_map(|b| Some((b.step? as usize, b.matches.as_slice())))
        .collect();
    let problems = rules::check(router, &steps);
    (!problems.is_empty()).then(|| {
        problems
            .iter()
            .map(|(field, message)| format!("{field}: {message}"))
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// State changes one reconcile may chain before it returns.
const MAX_HOPS: u32 = 3;

/// Takes a release one reconcile further, by its phase.
pub(super) async fn drive<R: Release>(
    ctx: &Ctx,
    rollout: &Rollout,
    consumed: &mut Vec<&'static str>,
    w: &R,
    status: &mut RolloutStatus,
) -> Result<Action, Error> {
    take_abort(ctx, rollout, consumed, status);
    let traffic = Traffic::new(
        &ctx.client,
        &rollout.namespace().unwrap_or_default(),
        &rollout.name_any(),
        rollout.spec.traffic.as_ref(),
        rollout.spec.strategy.style == Some(sluice_planner::spec::Style::BlueGreen),
    );
    match status.phase {
        Phase::Pending => {
            let plan = plan(ctx, rollout, w.replicas(), &w.max_surge()).await?;
            if let Some(problem) = unroutable(&plan, traffic.as_ref()) {
                return Ok(fail(status, problem));
            }
            let action = w.start(ctx, rollout, status).await?;
            if status.phase == Phase::Progressing
                && let Some(t) = &traffic
            {
                t.apply(&w.pins(status), 0, &[]).await?;
            }
            Ok(action)
        }
        Phase::Progressing | Phase::Paused => {
            step(ctx, rollout, consumed, w, traffic.as_ref(), status).await
        }
        Phase::RollingBack => {
            // Traffic to stable first, then the pods.
            if let Some(t) = &traffic {
                t.apply(&w.pins(status), 0, &[]).await?;
            }
            let action = w.rollback(status).await?;
            if status.phase == Phase::RolledBack
                && let Some(t) = &traffic
            {
                t.restore().await?;
            }
            Ok(action)
        }
        Phase::Succeeded | Phase::RolledBack | Phase::Failed => Ok(Action::await_change()),
    }
}

async fn step<R: Release>(
    ctx: &Ctx,
    rollout: &Rollout,
    consumed: &mut Vec<&'static str>,
    w: &R,
    traffic: Option<&Traffic>,
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
    // A batch that needs no wait goes on to the next in the same
    // reconcile: ready, no analysis, no pause, next batch's first patch.
    // The workload read at the start is still current, since a ready batch
    // writes nothing to it.
    let mut hops = 0;
    loop {
        hops += 1;
        let batch = plan.batches[status.current_step as usize].clone();
        let Some(ready_new) = w.ready_new(status) else {
            return Ok(fail(status, "the release's workload revisions are gone"));
        };
        status.canary_replicas = batch.canary_replicas;
        status.ready_canary_replicas = ready_new;
        let gate = batch.gate.clone().unwrap_or_default();
        return match status.step_state {
            StepState::Upgrading | StepState::Routing => {
                let done = w.advance(status, &batch).await?;
                let routed = traffic.is_some_and(Traffic::sets_weight);
                // Without a router, traffic follows the ready pods.
                if !routed {
                    status.traffic = w.pod_share(ready_new);
                }
                if done {
                    if let Some(t) = traffic {
                        t.apply(&w.pins(status), batch.traffic, &batch.matches)
                            .await?;
                    }
                    if routed {
                        status.traffic = batch.traffic;
                    }
                    let mut names = gate.analyses.clone();
                    names.extend(gate.background_analyses.clone());
                    if names.is_empty() {
                        after_checks(status, &batch);
                        if status.step_state == StepState::Completed && hops < MAX_HOPS {
                            continue;
                        }
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
                            if status.step_state == StepState::Completed && hops < MAX_HOPS {
                                continue;
                            }
                            return Ok(Action::requeue(Duration::ZERO));
                        };
                        let context = pb::AnalysisContext {
                            namespace: ns.clone(),
                            workload: rollout.spec.workload.name.clone(),
                            canary_workload: w.canary_workload().unwrap_or_default(),
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
                        // Passed with no pause: the next batch's first
                        // patch goes out now, not after a trip through
                        // the watch.
                        after_checks(status, &batch);
                        if status.step_state == StepState::Completed && hops < MAX_HOPS {
                            continue;
                        }
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
                // Taken, so that a promotion moves one step however far
                // this reconcile goes on.
                let over = promotion.take() == Some(false)
                    || match status.pause_until.as_deref().and_then(parse_time) {
                        Some(until) => match until.duration_since(SystemTime::now()) {
                            Ok(remaining) if !remaining.is_zero() => {
                                return Ok(Action::requeue(remaining));
                            }
                            _ => true,
                        },
                        None => false,
                    };
                if !over {
                    return Ok(Action::await_change());
                }
                status.step_state = StepState::Completed;
                if hops < MAX_HOPS {
                    continue;
                }
                Ok(Action::requeue(Duration::ZERO))
            }
            StepState::Completed => {
                finish_step(status);
                status.pause_until = None;
                status.phase = Phase::Progressing;
                if status.current_step < last {
                    status.current_step += 1;
                    status.step_state = StepState::Upgrading;
                    record(status, &plan.batches[status.current_step as usize]);
                    if hops < MAX_HOPS {
                        continue;
                    }
                    return Ok(Action::requeue(Duration::ZERO));
                }
                if let Some(wait) = w.finish(status, &name, traffic, &plan).await? {
                    return Ok(wait);
                }
                ctx.analyses.stop(&ns, &name);
                status.handback_after = None;
                status.phase = Phase::Succeeded;
                status.traffic = 100;
                status.message = format!(
                    "released: all {} replicas run the new version",
                    w.replicas()
                );
                tracing::info!(rollout = %name, "release succeeded");
                Ok(Action::await_change())
            }
        };
    }
}
