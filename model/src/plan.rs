//! Planning: a checked strategy and a workload size in, batches out.
//!
//! # Rules, exactly
//! - Replicas come from the step's count or percent (see [`crate::quantity`]
//!   for rounding); a step without replicas keeps the previous step's.
//! - Traffic comes from the step; a step without traffic follows the
//!   replicas (`floor(100 * new pods / N)`, what a plain Service gives),
//!   except in BlueGreen and on steps with request matches, where it keeps
//!   the previous step's traffic (so a header-only step sends nothing but
//!   the matched requests to the new version).
//! - Neither replicas nor traffic ever go backwards from one batch to the
//!   next, and neither exceeds N or 100%.
//! - When the last step leaves old pods or old traffic, a final batch with
//!   every pod and all traffic on the new version is appended.
//! - Pods per batch, by style:
//!   - Partition: new pods replace old ones; the peak is N plus the pods
//!     moved in this batch, capped at maxSurge.
//!   - Canary: the stable workload stays at N beside the new pods until the
//!     final batch, where it is rolled to the new version (peak: N, plus the
//!     canary pods, plus maxSurge).
//!   - BlueGreen: the new version runs at N from the first batch beside the
//!     old at N; the old is kept for the rollback window after the end.
//! - A batch may have `floor(failureThreshold% * new pods)` (or the count,
//!   capped at the new pods) unready pods and still count as ready.
//!
//! # Re-planning
//! When N changes mid-rollout, the plan is made again for the new N, then
//! every batch from the current one on is raised to at least the replicas
//! and traffic already reached, so nothing done is undone; `current_batch`
//! says which batch the rollout is in.

use std::{sync::Arc, time::Duration};

use serde::{Serialize, Serializer};

use crate::{
    quantity::Amount,
    spec::{RequestMatch, Style},
    validate::{Checked, PauseKind, Warning},
};

/// The size of the workload a plan is made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizing {
    /// Replicas of the workload, at least 1.
    pub replicas: u32,
    /// The workload's maxSurge (Kubernetes' default is 25%).
    pub max_surge: Amount,
}

/// Where a rollout in progress stands, for re-planning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// New-version pods already running.
    pub canary_replicas: u32,
    /// Traffic already on the new version.
    pub traffic: u32,
    /// Batches done under the previous plan.
    pub completed_batches: u32,
}

/// A concrete plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// The size planned for.
    pub replicas: u32,
    /// The release style.
    pub style: Style,
    /// The batches in order; never empty.
    pub batches: Vec<Batch>,
    /// Risky but legal choices.
    pub warnings: Vec<Warning>,
    /// After a re-plan: the batch the rollout is in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_batch: Option<usize>,
    /// BlueGreen: how long the old version is kept after the last batch.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "opt_duration"
    )]
    pub rollback_window: Option<Duration>,
}

/// One batch, in absolute numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Batch {
    /// 0-based position.
    pub index: usize,
    /// Pods on the new version.
    pub canary_replicas: u32,
    /// Pods on the old version.
    pub stable_replicas: u32,
    /// Percent of traffic to the new version.
    pub traffic: u32,
    /// Requests always sent to the new version.
    #[serde(skip_serializing_if = "is_empty")]
    pub matches: Arc<[RequestMatch]>,
    /// Unready pods the batch may have and still count as ready.
    pub max_unready: u32,
    /// Pods expected at the peak of the batch.
    pub expected_total_pods: u32,
    /// What must happen before the next batch.
    pub gate: Gate,
    /// The 0-based strategy step, `None` for the appended final batch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<usize>,
}

/// What holds a batch before the next one.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Gate {
    /// The pause after the batch.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "opt_pause")]
    pub pause: Option<PauseKind>,
    /// Analyses of this step.
    #[serde(skip_serializing_if = "is_empty")]
    pub analyses: Arc<[String]>,
    /// Background analyses running during the batch.
    #[serde(skip_serializing_if = "is_empty")]
    pub background_analyses: Arc<[String]>,
    /// How long the batch may take to become ready.
    #[serde(serialize_with = "duration")]
    pub progress_deadline: Duration,
}

fn is_empty<T>(list: &Arc<[T]>) -> bool {
    list.is_empty()
}

fn duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::duration::format_duration(*d))
}

fn opt_duration<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => duration(d, s),
        None => s.serialize_none(),
    }
}

fn opt_pause<S: Serializer>(p: &Option<PauseKind>, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(None)?;
    if let Some(PauseKind::For(d)) = p {
        map.serialize_entry("duration", &crate::duration::format_duration(*d))?;
    }
    map.end()
}

/// Traffic share that more than this many times the pod share draws a warning.
const OVERLOAD_FACTOR: u64 = 4;
/// Traffic below this percent never draws an overload warning.
const OVERLOAD_MIN_TRAFFIC: u32 = 20;

/// Makes the plan for `strategy` at `sizing`, re-planning from `progress`
/// when given. Pure and deterministic.
pub fn plan(strategy: &Checked, sizing: Sizing, progress: Option<Progress>) -> Plan {
    let n = sizing.replicas;
    let style = strategy.style;
    let surge = match style {
        Style::Partition => sizing.max_surge.pods_ceil(n),
        Style::Canary | Style::BlueGreen => 0,
    };
    let none: Arc<[String]> = Arc::from([]);
    let background = |index: usize| match &strategy.background {
        Some((names, start)) if index >= *start => Arc::clone(names),
        _ => Arc::clone(&none),
    };

    // Targets first: (canary, traffic, step) per batch, never backwards.
    let mut targets: Vec<(u32, u32, Option<usize>)> = Vec::with_capacity(strategy.steps.len() + 1);
    let (mut canary, mut traffic) = (0u32, 0u32);
    for (i, step) in strategy.steps.iter().enumerate() {
        let wanted = match style {
            Style::BlueGreen => n,
            _ => step.replicas.map_or(canary, |r| r.pods_ceil(n)),
        };
        canary = canary.max(wanted);
        let follow = match style {
            Style::BlueGreen => traffic,
            // Matched requests only: the weight stays where it was.
            _ if !step.matches.is_empty() => traffic,
            _ => (u64::from(canary) * 100 / u64::from(n.max(1))) as u32,
        };
        traffic = traffic.max(step.traffic.unwrap_or(follow)).min(100);
        targets.push((canary, traffic, Some(i)));
    }
    if targets.is_empty() || canary < n || traffic < 100 {
        targets.push((n, 100, None));
    }

    let mut current_batch = None;
    if let Some(p) = progress {
        let current = (p.completed_batches as usize).min(targets.len() - 1);
        for target in &mut targets[current..] {
            target.0 = target.0.max(p.canary_replicas.min(n));
            target.1 = target.1.max(p.traffic.min(100));
        }
        current_batch = Some(current);
    }

    let mut warnings = Vec::new();
    let mut batches = Vec::with_capacity(targets.len());
    let mut previous = 0;
    for (index, &(canary, traffic, step)) in targets.iter().enumerate() {
        if let (Some(current), Some(p)) = (current_batch, progress)
            && index == current
        {
            previous = previous.max(p.canary_replicas.min(n));
        }
        let source = step.map(|s| &strategy.steps[s]);
        let is_final = step.is_none();
        let (stable, total) = match style {
            Style::Partition => (n - canary, n + surge.min(canary.saturating_sub(previous))),
            Style::Canary if is_final => (0, n + previous + sizing.max_surge.pods_ceil(n)),
            Style::Canary => (n, n + canary),
            Style::BlueGreen => (n, 2 * n),
        };
        if let Some(s) = step {
            let pods_share = u64::from(canary) * 100;
            if traffic >= OVERLOAD_MIN_TRAFFIC
                && canary < n
                && u64::from(traffic) * u64::from(n) > OVERLOAD_FACTOR * pods_share
            {
                warnings.push(Warning::new(
                    format!("strategy.canary.steps[{s}].traffic"),
                    format!(
                        "{traffic}% of traffic onto {canary} of {n} pods: each new pod takes {:.1}x the load of an old one",
                        f64::from(traffic) * f64::from(n - canary)
                            / (f64::from(100 - traffic).max(1.0) * f64::from(canary.max(1)))
                    ),
                ));
            }
        }
        batches.push(Batch {
            index,
            canary_replicas: canary,
            stable_replicas: stable,
            traffic,
            matches: source.map_or_else(|| Arc::from([]), |s| Arc::clone(&s.matches)),
            max_unready: strategy.failure_threshold.pods_floor(canary),
            expected_total_pods: total,
            gate: Gate {
                pause: source.and_then(|s| s.pause),
                analyses: source.map_or_else(|| Arc::clone(&none), |s| Arc::clone(&s.analyses)),
                background_analyses: background(step.unwrap_or(strategy.steps.len())),
                progress_deadline: strategy.progress_deadline,
            },
            step,
        });
        previous = canary;
    }

    Plan {
        replicas: n,
        style,
        batches,
        warnings,
        current_batch,
        rollback_window: (style == Style::BlueGreen).then_some(strategy.rollback_window),
    }
}
