//! One reconcile of a release, whatever the workload: observe, ask the
//! release state machine ([`crate::machine`]) what to do, carry its effects
//! out. What differs between workloads (how pods move, what "handed back"
//! means) is a [`Release`].

use std::time::Duration;

use kube::{Api, ResourceExt};

use super::Action;
use sluice_proto::v1 as pb;

use super::{
    Ctx, Error,
    looks::PodLook,
    plan,
    traffic::{Pins, Router, Traffic, rules},
};
use crate::{
    crd::{ErrorPolicy, Rollout, RolloutStatus},
    keys,
    machine::{self, Controls, Effect, Next, Observed, Progress, Start},
};

/// A workload being released: what the machine observes of it, and the
/// effects that move it. Observations read the snapshot loaded for this
/// reconcile and write nothing; effects are idempotent.
pub(super) trait Release {
    /// Its replicas.
    fn replicas(&self) -> u32;
    /// Its maxSurge as written ("25%", "1"; "0" when it has none).
    fn max_surge(&self) -> String;
    /// The labels that tell stable pods from new ones.
    fn pins(&self, status: &RolloutStatus) -> Pins;
    /// The workload the new pods belong to, when not the released one.
    fn canary_workload(&self) -> Option<String> {
        None
    }
    /// The identity of the release the Rollout asks for
    /// ([`machine::release_id`]; a bound Rollout's includes the workload's
    /// own template).
    fn release_id(&self, rollout: &Rollout) -> String {
        machine::release_id(&rollout.spec)
    }
    /// The workload's own pause, which holds a bound release before its
    /// start (see [`Controls::workload_paused`]).
    fn paused_by_user(&self) -> Option<String> {
        None
    }
    /// The revision every pod runs, all of them ready, when that is one
    /// revision of the workload's own: what STABLE and NEW show once a
    /// release has succeeded (a canary-style release's new pods ran in a
    /// Deployment of its own, whose revision is gone by then).
    fn running_revision(&self) -> Option<String> {
        None
    }
    /// The Rollout whose mark is on the workload, if any.
    fn holder(&self) -> Option<String>;
    /// Whether the release may start.
    fn start_check(&self, rollout: &Rollout, status: &RolloutStatus) -> Start;
    /// How far the workload is towards `batch`; `None` when the release's
    /// revisions are gone.
    fn progress(&self, status: &RolloutStatus, batch: &pb::Batch) -> Option<Progress>;
    /// Whether the workload's own controller has yet to act on a move
    /// already made (it has not seen a set's newest spec, or pods asked to
    /// go still count): its next status brings the next look, moments
    /// away.
    fn settling(&self, _status: &RolloutStatus) -> bool {
        false
    }
    /// Why the new version's pods cannot be made (its ReplicaSet's
    /// `ReplicaFailure` condition), if they cannot.
    fn cannot_create(&self, _status: &RolloutStatus) -> Option<String> {
        None
    }
    /// Whether some new pod asked for is not ready: only then can a look
    /// for pods that cannot run find one (a batch whose new pods are all
    /// ready may still wait, for old pods to go).
    fn unready_new(&self, _status: &RolloutStatus) -> bool {
        true
    }
    /// `Ok` once every replica runs the new version, ready, and the
    /// workload is handed back; else what it waits for.
    fn handed_back(&self, status: &RolloutStatus) -> Result<(), String>;
    /// `Ok` once every pod is stable and ready and the workload is as the
    /// user wrote it; else what it waits for.
    fn rolled_back(&self, status: &RolloutStatus) -> Result<(), String>;
    /// Takes the workload over and records the revisions in `status`; may
    /// ask for the pods of `first`, the first batch, as it does.
    async fn begin(
        &self,
        ctx: &Ctx,
        rollout: &Rollout,
        status: &mut RolloutStatus,
        first: &pb::Batch,
    ) -> Result<(), Error>;
    /// Moves pods towards `batch` (may record the new revision once known).
    /// Returns whether it wrote to the workload: its events then bring the
    /// next look.
    async fn move_pods(&self, status: &mut RolloutStatus, batch: &pb::Batch)
    -> Result<bool, Error>;
    /// Hands the workload back, restoring the traffic objects at the right
    /// moment; the release's marks stay until [`Release::unmark`], so the
    /// workload's events still reach the controller. Returns what the
    /// hand-back waits for next as the objects it wrote show it, when it
    /// can tell (what was observed before is stale once they are written).
    async fn hand_back(
        &self,
        status: &RolloutStatus,
        traffic: Option<&Traffic>,
    ) -> Result<Option<String>, Error>;
    /// Brings every pod back to the stable revision and the workload back
    /// to what the user wrote, but for the release's marks.
    async fn roll_back(&self, status: &RolloutStatus) -> Result<(), Error>;
    /// Removes the release's marks (annotations) from the workload and
    /// what it owns.
    async fn unmark(&self) -> Result<(), Error>;
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

/// Analyses the plan's steps name that the rollout does not define (a
/// Rollout written with kubectl skips the API's check): the release is
/// refused before it starts, not stalled at the step.
fn undefined_analyses(plan: &pb::Plan, defined: &[crate::crd::Analysis]) -> Option<String> {
    let mut missing: Vec<String> = plan
        .batches
        .iter()
        .filter_map(|b| b.gate.as_ref())
        .flat_map(|g| g.analyses.iter().chain(&g.background_analyses))
        .filter(|name| !defined.iter().any(|a| &a.name == *name))
        .cloned()
        .collect();
    missing.sort();
    missing.dedup();
    (!missing.is_empty()).then(|| {
        format!(
            "spec.strategy: analyses {missing:?} are not defined in spec.analyses (defined: {:?})",
            defined.iter().map(|a| a.name.as_str()).collect::<Vec<_>>()
        )
    })
}

/// A plan's batch as the machine reads it.
fn batch_of(b: &pb::Batch) -> machine::Batch {
    let gate = b.gate.clone().unwrap_or_default();
    let mut analyses = gate.analyses.clone();
    analyses.extend(gate.background_analyses.clone());
    let seconds =
        |d: &prost_types::Duration| Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32);
    machine::Batch {
        canary_replicas: b.canary_replicas,
        traffic: b.traffic,
        analyses,
        pause: gate.pause.map(|p| p.duration.as_ref().map(seconds)),
        progress_deadline: gate
            .progress_deadline
            .as_ref()
            .map_or(machine::DEFAULT_PROGRESS_DEADLINE, seconds),
    }
}

/// Waiting reasons that mean a container will not start by itself.
const STUCK: [&str; 6] = [
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// The first new pod that cannot run, as a reason naming it.
async fn failing_pod(
    ctx: &Ctx,
    ns: &str,
    pins: &Pins,
    restart_limit: u32,
) -> Result<Option<String>, Error> {
    let restart_limit = i32::try_from(restart_limit).unwrap_or(i32::MAX);
    let Some(labels) = &pins.canary else {
        return Ok(None);
    };
    let pods = match labels.iter().collect::<Vec<_>>().as_slice() {
        // One label (every style's pin): listed with the other releases'
        // looks of the namespace.
        [(key, value)] => ctx.pod_looks.pods(&ctx.client, ns, key, value).await?,
        _ => {
            let selector = labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            super::looks::list(&ctx.client, ns, &selector)
                .await?
                .items
                .iter()
                .map(|p| PodLook::of(p, &[]))
                .collect()
        }
    };
    for pod in pods.iter().filter(|p| !p.deleting) {
        for c in &pod.containers {
            let waiting = c.waiting.clone().unwrap_or_default();
            let crash_looping = restart_limit > 0 && c.restarts >= restart_limit;
            let stuck = STUCK.contains(&waiting.as_str())
                && (waiting != "CrashLoopBackOff" || crash_looping);
            if stuck || crash_looping {
                let why = if waiting.is_empty() {
                    "restarting".to_owned()
                } else {
                    waiting
                };
                return Ok(Some(format!(
                    "pod {} container {}: {why} ({} restarts)",
                    pod.name, c.name, c.restarts
                )));
            }
        }
    }
    Ok(None)
}

/// What a person asked for, from the Rollout; the annotations read are
/// added to `consumed`, to be removed once the decision is recorded.
fn controls(rollout: &Rollout, consumed: &mut Vec<&'static str>) -> Controls {
    let annotations = rollout.annotations();
    let abort = annotations.get(keys::ABORT).cloned();
    if abort.is_some() {
        consumed.push(keys::ABORT);
    }
    let promote = annotations.get(keys::PROMOTE).and_then(|value| {
        consumed.push(keys::PROMOTE);
        let (how, at) = value.split_once(':').unwrap_or((value.as_str(), ""));
        Some((how == "full", at.parse::<u32>().ok()?))
    });
    Controls {
        paused: rollout.spec.paused,
        promote,
        abort,
        workload_paused: None,
    }
}

/// Takes a release one reconcile further: observes, decides, acts.
pub(super) async fn drive<R: Release>(
    ctx: &Ctx,
    rollout: &Rollout,
    consumed: &mut Vec<&'static str>,
    w: &R,
    status: &mut RolloutStatus,
) -> Result<Action, Error> {
    let ns = rollout.namespace().unwrap_or_default();
    let name = rollout.name_any();
    let traffic = Traffic::new(
        &ctx.client,
        &ns,
        &name,
        rollout.spec.traffic.as_ref(),
        rollout.spec.strategy.style == Some(sluice_model::spec::Style::BlueGreen),
    );
    if w.replicas() == 0 {
        // Nothing runs, so nothing is released in batches: an ended release
        // stays as it ended, and a change waits (held) until the workload
        // is scaled up, which wakes the next look.
        let release = w.release_id(rollout);
        if !(status.release == release && super::partition::ended(status)) {
            waiting(
                status,
                release,
                "the workload has 0 replicas: its release starts once it is scaled up".into(),
            );
        }
        return Ok(Action::await_change());
    }
    let plan = match plan(ctx, rollout, w.replicas(), &w.max_surge()).await {
        Ok(plan) => plan,
        // Shown on the status (not only in the log) until the spec is fixed;
        // nothing moves meanwhile.
        Err(Error::Invalid(why)) => {
            status.message = format!("the strategy cannot be planned: {why}; fix spec.strategy");
            return Ok(Action::requeue(Duration::from_secs(30)));
        }
        Err(e) => return Err(e),
    };
    let batches: Vec<machine::Batch> = plan.batches.iter().map(batch_of).collect();
    let controls = Controls {
        workload_paused: w.paused_by_user(),
        ..controls(rollout, consumed)
    };
    let release = w.release_id(rollout);
    let new_release = status.release != release;

    // Observe what this state needs.
    let mut observed = Observed::default();
    if new_release || status.phase == crate::crd::Phase::Pending {
        observed.start = w.start_check(rollout, status);
        // Only an API-started release's own start puts its mark on the
        // workload (a bound one's is the webhook's, before any start).
        observed.begun = !rollout.spec.bound() && w.holder() == Some(rollout.name_any());
        if matches!(observed.start, Start::Busy(_))
            && let Some(holder) = w.holder().filter(|h| *h != rollout.name_any())
            && let Some(why) = abandoned(ctx, rollout, &holder).await?
        {
            observed.start = Start::Busy(why);
        }
        if matches!(observed.start, Start::Ready | Start::NothingToDo)
            && let Some(other) = releasing_beside(ctx, rollout)
        {
            observed.start = Start::Busy(format!(
                "{:?} {:?} is being released by Rollout {other:?}, whose release must end first",
                rollout.spec.workload.kind, rollout.spec.workload.name
            ));
        }
    }
    observed.progress = plan.batches.iter().map(|b| w.progress(status, b)).collect();
    observed.handed_back = w.handed_back(status);
    observed.rolled_back = w.rolled_back(status);
    if machine::needs_traffic_check(status) {
        observed.traffic_leftovers = Some(match &traffic {
            Some(t) => t.leftovers().await?,
            None => Vec::new(),
        });
    }
    let waiting_for_pods = status.phase == crate::crd::Phase::Progressing
        && status.step_state == crate::crd::StepState::Upgrading
        && !observed
            .progress
            .get(status.current_step as usize)
            .copied()
            .flatten()
            .is_some_and(|p| p.reached);
    let now = ctx.clock.now();
    let waited = machine::waiting_since(status)
        .and_then(|since| now.duration_since(since).ok())
        .unwrap_or_default();
    if waiting_for_pods {
        observed.cannot_create = w.cannot_create(status);
    }
    if waiting_for_pods && !new_release && waited >= machine::POD_GRACE && w.unready_new(status) {
        let limit = rollout.spec.strategy.canary.restart_limit();
        let key = (ns.clone(), rollout.name_any());
        let step = (status.current_step, status.canary_revision.clone());
        observed.failing_pod = match ctx.pod_check(&key, &step) {
            Some(recent) => recent,
            None => {
                let found = failing_pod(ctx, &ns, &w.pins(status), limit).await?;
                ctx.pod_checked(key, step, found.clone());
                found
            }
        };
    }

    let strategy = machine::strategy_digest(&rollout.spec.strategy);
    let input = machine::Input {
        status,
        release: &release,
        plan: &batches,
        strategy: &strategy,
        handback_window: if rollout.spec.strategy.style
            == Some(sluice_model::spec::Style::BlueGreen)
        {
            plan.rollback_window.map_or(Duration::from_secs(600), |d| {
                Duration::from_secs(d.seconds.max(0) as u64)
            })
        } else {
            Duration::ZERO
        },
        routed: traffic.as_ref().is_some_and(Traffic::sets_weight),
        rollback_on_error: rollout.spec.on_analysis_error == ErrorPolicy::Rollback,
        refusal: unroutable(&plan, traffic.as_ref())
            .or_else(|| undefined_analyses(&plan, &rollout.spec.analyses)),
        controls: &controls,
        observed: &observed,
        now,
    };
    let mut out = machine::decide(&input);

    // A release starts only once every traffic object it names exists:
    // begun without one, it would change the workload, then stall at its
    // first route with nothing said.
    if out.effects.iter().any(|e| matches!(e, Effect::Begin))
        && let Some(t) = &traffic
        && let Some(what) = t.missing().await?
    {
        waiting(
            status,
            release,
            format!(
                "waiting for {what} to exist in namespace {ns:?}: the release starts once it does"
            ),
        );
        return Ok(Action::requeue(Duration::from_secs(10)));
    }

    // An API-started release's start is claimed on the Rollout first (see
    // `keys::BEGUN`): a delete that came between its read and now makes
    // the claim fail, and nothing is touched.
    if out.effects.contains(&Effect::Begin)
        && !rollout.spec.bound()
        && !claim_start(ctx, rollout, &release).await?
    {
        return Ok(Action::requeue(Duration::from_millis(500)));
    }

    // Act, in order; the status is written by the caller only after every
    // effect succeeded.
    let mut moved = false;
    for effect in &out.effects {
        match effect {
            Effect::Begin => {
                if let Some(first) = plan.batches.first() {
                    w.begin(ctx, rollout, &mut out.status, first).await?;
                }
            }
            Effect::MovePods { step } => {
                if let Some(batch) = plan.batches.get(*step as usize) {
                    moved |= w.move_pods(&mut out.status, batch).await?;
                }
            }
            Effect::Route { step } => {
                if let (Some(t), Some(batch)) = (&traffic, plan.batches.get(*step as usize)) {
                    t.apply(&w.pins(&out.status), batch.traffic, &batch.matches)
                        .await?;
                }
            }
            Effect::RouteStable => {
                if let Some(t) = &traffic {
                    t.apply(&w.pins(&out.status), 0, &[]).await?;
                }
            }
            Effect::Analyse { step, names } => {
                let analysis = sluice_model::rollout_convert::gate_analysis(
                    &format!("{name}-step-{}", step + 1),
                    names,
                    &rollout.spec.analyses,
                );
                let Some(analysis) = analysis else {
                    return Err(Error::Missing(format!(
                        "step {}: analyses {names:?} are not defined in spec.analyses",
                        step + 1
                    )));
                };
                let context = pb::AnalysisContext {
                    namespace: ns.clone(),
                    workload: rollout.spec.workload.name.clone(),
                    canary_workload: w.canary_workload().unwrap_or_default(),
                    canary_revision: out.status.canary_revision.clone(),
                    stable_revision: out.status.stable_revision.clone(),
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
                    *step,
                    pb::AnalyzeRequest {
                        analysis: Some(analysis),
                        context: Some(context),
                    },
                );
            }
            Effect::StopAnalyses => ctx.analyses.stop(&ns, &name),
            Effect::HandBack => {
                if let Some(waits) = w.hand_back(&out.status, traffic.as_ref()).await? {
                    out.status.message = machine::handing_back(&waits);
                }
            }
            Effect::RollBack => w.roll_back(&out.status).await?,
            Effect::RestoreTraffic => {
                if let Some(t) = &traffic {
                    t.restore().await?;
                }
            }
            Effect::Unmark => w.unmark().await?,
        }
    }
    // An ended release follows what its workload runs, but not while
    // another Rollout's release holds it: that one's unapproved version
    // (every pod of it, at a small scale) is no revision this one released.
    if out.status.phase == crate::crd::Phase::Succeeded
        && w.holder().is_none_or(|h| h == rollout.name_any())
        && let Some(running) = w.running_revision()
    {
        out.status.stable_revision.clone_from(&running);
        out.status.canary_revision = running;
    }
    // A look that moved pods, or whose moves the workload's controller has
    // yet to act on, and that otherwise only saw the batch's pods come
    // along leaves that unrecorded: the moves' own events bring the next
    // look within moments, and it records both at once (usually the batch
    // reached, as old pods go), one status write instead of two. A look
    // with nothing in flight records what it sees.
    if (moved || w.settling(status))
        && let Some(held) = machine::without_progress(status, &out.status, input.routed)
    {
        out.status = held;
        out.next = match out.next {
            Next::After(d) => Next::After(d.min(machine::POLL)),
            Next::Change => Next::After(machine::POLL),
        };
    }
    *status = out.status;
    Ok(match out.next {
        Next::Change => Action::await_change(),
        Next::After(d) => Action::requeue(d),
    })
}

/// Records a release that cannot start yet, and why. A change after an
/// ended release is a release waiting, and is recorded as one (every view
/// then says Pending and why).
fn waiting(status: &mut RolloutStatus, release: String, why: String) {
    if super::partition::ended(status) && status.release != release {
        *status = RolloutStatus {
            release,
            phase: crate::crd::Phase::Pending,
            observed_generation: status.observed_generation,
            conditions: std::mem::take(&mut status.conditions),
            ..RolloutStatus::default()
        };
    }
    status.message = why;
}

/// Writes [`keys::BEGUN`] on `rollout` over the version read; whether it
/// did (false when the Rollout changed or went since: a delete, a new
/// spec, whose own event brings the next look).
async fn claim_start(ctx: &Ctx, rollout: &Rollout, release: &str) -> Result<bool, Error> {
    if rollout.annotations().get(keys::BEGUN).map(String::as_str) == Some(release) {
        return Ok(true);
    }
    let api: Api<Rollout> =
        Api::namespaced(ctx.client.clone(), &rollout.namespace().unwrap_or_default());
    let patch = serde_json::json!({"metadata": {
        "resourceVersion": rollout.resource_version(),
        "annotations": {keys::BEGUN: release},
    }});
    match api
        .patch(
            &rollout.name_any(),
            &crate::writes::patch(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
    {
        Ok(written) => {
            ctx.written.record(written);
            Ok(true)
        }
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Why a start waits on a workload that carries the mark of `holder`, a
/// Rollout that no longer exists (deleted in flight, which leaves the
/// workload as it was; `kubectl delete` of an API-started Rollout does
/// that too): no release will ever end to free it, so the message says
/// what does. `None` while `holder` exists (the cache is asked first, the
/// API server only when the cache does not have it, as a Rollout just
/// made may not be there yet).
async fn abandoned(ctx: &Ctx, rollout: &Rollout, holder: &str) -> Result<Option<String>, Error> {
    let ns = rollout.namespace().unwrap_or_default();
    let cached = ctx.cache().is_some_and(|c| {
        c.rollouts
            .state()
            .iter()
            .any(|r| r.namespace().as_deref() == Some(ns.as_str()) && r.name_any() == holder)
    });
    if cached {
        return Ok(None);
    }
    let rollouts: Api<Rollout> = Api::namespaced(ctx.client.clone(), &ns);
    if rollouts.get_opt(holder).await?.is_some() {
        return Ok(None);
    }
    let workload = &rollout.spec.workload;
    let by_hand = if workload.kind == crate::crd::WorkloadKind::StatefulSet {
        format!(
            "its partition as you wrote it (kept in `{}`)",
            keys::PARTITION_BEFORE
        )
    } else {
        format!(
            "`spec.paused` and `spec.strategy` as you wrote them (the strategy is kept in `{}`)",
            keys::ORIGINAL_STRATEGY
        )
    };
    Ok(Some(format!(
        "{:?} {:?} is still held by Rollout {holder:?}, which no longer exists: it was deleted \
         in flight, which leaves the workload as that release left it. Create Rollout \
         {holder:?} again for this workload to take that release over (then abort or finish \
         it), or undo the hold by hand: the `sluice.dev/` annotations off and {by_hand}",
        workload.kind, workload.name,
    )))
}

/// Another Rollout of the same workload whose release is under way as the
/// controller's store shows it. The workload is free once its holder lets
/// go, a moment before that holder's final status is written; a release
/// starting in that moment would put two under way on one workload for
/// whoever watches the Rollouts, so it waits for the other's end.
fn releasing_beside(ctx: &Ctx, rollout: &Rollout) -> Option<String> {
    releasing_among(&ctx.cache()?.rollouts.state(), rollout)
}

/// [`releasing_beside`] among `rollouts`.
fn releasing_among(rollouts: &[std::sync::Arc<Rollout>], rollout: &Rollout) -> Option<String> {
    use crate::crd::Phase;
    let ns = rollout.namespace().unwrap_or_default();
    let name = rollout.name_any();
    rollouts
        .iter()
        .filter(|r| r.namespace().as_deref() == Some(ns.as_str()) && r.name_any() != name)
        .filter(|r| {
            r.spec.workload.kind == rollout.spec.workload.kind
                && r.spec.workload.name == rollout.spec.workload.name
        })
        .find(|r| {
            r.status.as_ref().is_some_and(|s| {
                s.started.is_some()
                    && s.steps.iter().any(|st| st.started.is_some())
                    && matches!(
                        s.phase,
                        Phase::Progressing | Phase::Paused | Phase::RollingBack
                    )
            })
        })
        .map(|r| r.name_any())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::releasing_among;
    use crate::crd::Rollout;

    fn rollout(name: &str, workload: &str, phase: &str, begun: bool) -> Arc<Rollout> {
        let steps = if begun {
            json!([{"index": 0, "canaryReplicas": 1, "traffic": 0, "state": "Upgrading", "started": "2026-01-01T00:00:00Z"}])
        } else {
            json!([])
        };
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
                "metadata": {"name": name, "namespace": "shop"},
                "spec": {"workload": {"kind": "Deployment", "name": workload},
                         "strategy": {"canary": {"steps": [{"replicas": 1}]}}},
                "status": {"phase": phase, "started": "2026-01-01T00:00:00Z", "steps": steps},
            }))
            .unwrap(),
        )
    }

    #[test]
    fn a_release_waits_while_another_of_its_workload_is_under_way() {
        let me = rollout("b", "web", "Pending", false);
        for phase in ["Progressing", "Paused", "RollingBack"] {
            let other = rollout("a", "web", phase, true);
            assert_eq!(
                releasing_among(&[Arc::clone(&me), other], &me).as_deref(),
                Some("a"),
                "{phase}"
            );
        }
        // Ended, waiting, another workload, or itself: nothing to wait for.
        for other in [
            rollout("a", "web", "Succeeded", true),
            rollout("a", "web", "RolledBack", true),
            rollout("a", "web", "Pending", false),
            rollout("a", "api", "Progressing", true),
            rollout("b", "web", "Progressing", true),
        ] {
            assert_eq!(releasing_among(&[other], &me), None);
        }
    }
}
