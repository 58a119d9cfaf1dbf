//! Judging measurements and metrics: the analysis semantics, with no I/O.
//!
//! # One measurement
//! 1. No value at all (an empty result) is **inconclusive**, never a pass.
//! 2. A NaN value (typically 0/0: no requests in the window) is
//!    **inconclusive**.
//! 3. If the failure condition holds, the measurement **failed**.
//! 4. Else if the success condition holds, it was **successful**.
//! 5. Else: with both conditions set it is **inconclusive** (neither held);
//!    with only a success condition it **failed** (the contract was not
//!    met); with only a failure condition it was **successful**.
//!
//! A query that could not be made or read is an **error**, decided before
//! any of this (see [`crate::measure`]); an error is never a failure and
//! never a success.
//!
//! A threshold `[min, max]` (either bound may be open) holds as a success
//! condition when *every* value is within it, and as a failure condition
//! when *any* value is within it. A comparison holds as a success condition
//! when the canary is no worse than `baseline * maxRatio + slack` (higher is
//! worse) or `baseline / maxRatio - slack` (lower is worse), and as a
//! failure condition when it is worse than that; it needs exactly one value
//! from each side.
//!
//! # One metric, over its measurements
//! Checked in this order after every measurement:
//! - **Fail** when failed measurements exceed `failureLimit`: with the
//!   default 0 the first failure fails; with 3, the 4th does.
//! - **Error** when consecutive errors exceed `consecutiveErrorLimit`
//!   (default 4: the 5th error in a row). A success, failure or
//!   inconclusive measurement resets the run.
//! - **Inconclusive** when inconclusive measurements exceed
//!   `inconclusiveLimit` (default 0: the first).
//! - **Pass** when the last `consecutiveSuccessLimit` measurements (if set)
//!   were all successful.
//! - When `count` measurements were taken: **Pass** if at least one was
//!   successful, else **Inconclusive** (errors and missing data alone never
//!   pass).
//! - Otherwise still **Running**.
//!
//! # An analysis, over its metrics
//! Dry-run metrics never decide (the analysis still waits for them to
//! finish). Otherwise the first metric to **Fail**
//! fails the analysis; else one in **Error** makes it Error; else one
//! **Inconclusive** makes it Inconclusive; when every metric passed it
//! **Passes**; else it is Running.

use crate::spec::{Condition, Direction, MetricSpec};

/// The outcome of one measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The success condition held.
    Successful,
    /// The failure condition held (or the success condition alone did not).
    Failed,
    /// No data, NaN, or neither condition held.
    Inconclusive,
    /// The query could not be made or read.
    Error,
}

/// The verdict on a metric or an analysis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Still measuring.
    Running,
    /// Healthy.
    Pass,
    /// A condition was breached past the limit.
    Fail,
    /// Not enough evidence either way.
    Inconclusive,
    /// The data could not be had.
    Error,
}

/// A judged measurement: outcome and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    /// The outcome.
    pub outcome: Outcome,
    /// The condition that decided, e.g. `failureCondition.threshold.max=0.05`.
    pub decided_by: String,
    /// For humans, e.g. `0.071 > max 0.05`.
    pub message: String,
}

impl Judgement {
    fn new(outcome: Outcome, decided_by: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            outcome,
            decided_by: decided_by.into(),
            message: message.into(),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Success,
    Failure,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Self::Success => "successCondition",
            Self::Failure => "failureCondition",
        }
    }
}

/// Whether `condition` holds in `role`, and a description of why.
fn holds(
    condition: &Condition,
    role: Role,
    values: &[f64],
    baseline: &[f64],
) -> Result<(bool, String, String), Judgement> {
    match condition {
        Condition::Threshold { min, max } => {
            let within = |v: f64| min.is_none_or(|m| v >= m) && max.is_none_or(|m| v <= m);
            let bounds = match (min, max) {
                (Some(lo), Some(hi)) => format!("min={lo},max={hi}"),
                (Some(lo), None) => format!("min={lo}"),
                (None, Some(hi)) => format!("max={hi}"),
                (None, None) => "open".into(),
            };
            let held = match role {
                Role::Success => values.iter().all(|&v| within(v)),
                Role::Failure => values.iter().any(|&v| within(v)),
            };
            let shown: Vec<String> = values.iter().map(|v| format!("{v}")).collect();
            let message = format!(
                "{} {} [{}, {}]",
                shown.join(", "),
                if held == (role == Role::Success) {
                    "within"
                } else {
                    "outside"
                },
                min.map_or("-inf".into(), |m| m.to_string()),
                max.map_or("+inf".into(), |m| m.to_string()),
            );
            let message = match role {
                Role::Failure if held => {
                    let inside: Vec<String> = values
                        .iter()
                        .filter(|&&v| within(v))
                        .map(|v| v.to_string())
                        .collect();
                    format!(
                        "{} within failure band [{}, {}]",
                        inside.join(", "),
                        min.map_or("-inf".into(), |m| m.to_string()),
                        max.map_or("+inf".into(), |m| m.to_string())
                    )
                }
                _ => message,
            };
            Ok((held, format!("{}.threshold.{bounds}", role.name()), message))
        }
        Condition::Comparison {
            max_ratio,
            slack,
            direction,
            ..
        } => {
            let decided_by = format!("{}.comparison", role.name());
            let (canary, base) = match (values, baseline) {
                (_, []) => {
                    return Err(Judgement::new(
                        Outcome::Inconclusive,
                        decided_by,
                        "no baseline data: the stable version has no samples",
                    ));
                }
                ([c], [b]) => (*c, *b),
                _ => {
                    return Err(Judgement::new(
                        Outcome::Error,
                        decided_by,
                        format!(
                            "a comparison needs one value from each query, got {} canary and {} baseline",
                            values.len(),
                            baseline.len()
                        ),
                    ));
                }
            };
            if base.is_nan() {
                return Err(Judgement::new(
                    Outcome::Inconclusive,
                    decided_by,
                    "baseline is NaN: the stable version had no requests",
                ));
            }
            let (worse, allowed, op) = match direction {
                Direction::HigherIsWorse => {
                    let allowed = base * max_ratio + slack;
                    (canary > allowed, allowed, ">")
                }
                Direction::LowerIsWorse => {
                    let allowed = base / max_ratio - slack;
                    (canary < allowed, allowed, "<")
                }
            };
            let held = match role {
                Role::Success => !worse,
                Role::Failure => worse,
            };
            let message = if worse {
                format!(
                    "canary {canary} {op} allowed {allowed} (baseline {base} x{max_ratio} {} {slack})",
                    if op == ">" { "+" } else { "-" }
                )
            } else {
                format!("canary {canary} within allowed {allowed} (baseline {base})")
            };
            Ok((held, decided_by, message))
        }
    }
}

/// Judges one measurement's values (and the baseline's, for comparisons).
pub fn judge(spec: &MetricSpec, values: &[f64], baseline: &[f64]) -> Judgement {
    if values.is_empty() {
        return Judgement::new(
            Outcome::Inconclusive,
            "noData",
            "no data: the query returned no series",
        );
    }
    if values.iter().any(|v| v.is_nan()) {
        return Judgement::new(
            Outcome::Inconclusive,
            "noData",
            "NaN: no requests in the window",
        );
    }
    if let Some(failure) = &spec.failure {
        match holds(failure, Role::Failure, values, baseline) {
            Err(judgement) => return judgement,
            Ok((true, by, message)) => return Judgement::new(Outcome::Failed, by, message),
            Ok((false, ..)) => {}
        }
    }
    match &spec.success {
        Some(success) => match holds(success, Role::Success, values, baseline) {
            Err(judgement) => judgement,
            Ok((true, by, message)) => Judgement::new(Outcome::Successful, by, message),
            Ok((false, by, message)) if spec.failure.is_none() => {
                Judgement::new(Outcome::Failed, by, message)
            }
            Ok((false, _, message)) => Judgement::new(
                Outcome::Inconclusive,
                "neither",
                format!("neither condition held: {message}"),
            ),
        },
        None => Judgement::new(
            Outcome::Successful,
            "failureCondition",
            "the failure condition did not hold",
        ),
    }
}

/// The running counts of one metric's measurements.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Measurements taken.
    pub measured: u32,
    /// Of which successful.
    pub successful: u32,
    /// Of which failed.
    pub failed: u32,
    /// Of which inconclusive.
    pub inconclusive: u32,
    /// Of which errors.
    pub errors: u32,
    /// Errors in a row, up to now.
    pub consecutive_errors: u32,
    /// Successes in a row, up to now.
    pub consecutive_successes: u32,
}

impl Tally {
    /// Counts one measurement.
    pub fn record(&mut self, outcome: Outcome) {
        self.measured += 1;
        match outcome {
            Outcome::Successful => {
                self.successful += 1;
                self.consecutive_successes += 1;
                self.consecutive_errors = 0;
            }
            Outcome::Failed => {
                self.failed += 1;
                self.consecutive_successes = 0;
                self.consecutive_errors = 0;
            }
            Outcome::Inconclusive => {
                self.inconclusive += 1;
                self.consecutive_successes = 0;
                self.consecutive_errors = 0;
            }
            Outcome::Error => {
                self.errors += 1;
                self.consecutive_errors += 1;
                self.consecutive_successes = 0;
            }
        }
    }

    /// The metric's verdict so far, and why.
    pub fn verdict(&self, spec: &MetricSpec) -> (Verdict, String) {
        if self.failed > spec.failure_limit {
            return (
                Verdict::Fail,
                format!(
                    "{} failed measurements, more than failureLimit {}",
                    self.failed, spec.failure_limit
                ),
            );
        }
        if self.consecutive_errors > spec.consecutive_error_limit {
            return (
                Verdict::Error,
                format!(
                    "{} errors in a row, more than consecutiveErrorLimit {}",
                    self.consecutive_errors, spec.consecutive_error_limit
                ),
            );
        }
        if self.inconclusive > spec.inconclusive_limit {
            return (
                Verdict::Inconclusive,
                format!(
                    "{} inconclusive measurements, more than inconclusiveLimit {}",
                    self.inconclusive, spec.inconclusive_limit
                ),
            );
        }
        if spec.consecutive_success_limit > 0
            && self.consecutive_successes >= spec.consecutive_success_limit
        {
            return (
                Verdict::Pass,
                format!("{} successes in a row", self.consecutive_successes),
            );
        }
        if spec.count > 0 && self.measured >= spec.count {
            return if self.successful > 0 {
                (
                    Verdict::Pass,
                    format!(
                        "{} of {} measurements successful",
                        self.successful, self.measured
                    ),
                )
            } else {
                (
                    Verdict::Inconclusive,
                    format!("none of {} measurements was successful", self.measured),
                )
            };
        }
        (Verdict::Running, String::new())
    }
}

/// Combines metric verdicts into the analysis verdict; returns the verdict
/// and the metric that decided it (for Fail, Error, Inconclusive).
pub fn combine<'a>(
    metrics: impl IntoIterator<Item = (&'a str, Verdict, bool)>,
) -> (Verdict, Option<&'a str>) {
    let mut worst: Option<(u8, Verdict, &str)> = None;
    let mut all_passed = true;
    for (name, verdict, dry_run) in metrics {
        if dry_run {
            // Never decides, but the analysis waits for it to finish.
            all_passed &= verdict != Verdict::Running;
            continue;
        }
        let rank = match verdict {
            Verdict::Fail => 3,
            Verdict::Error => 2,
            Verdict::Inconclusive => 1,
            Verdict::Pass => 0,
            Verdict::Running => {
                all_passed = false;
                0
            }
        };
        if rank > 0 && worst.is_none_or(|(r, ..)| rank > r) {
            worst = Some((rank, verdict, name));
        }
    }
    match worst {
        Some((_, verdict, name)) => (verdict, Some(name)),
        None if all_passed => (Verdict::Pass, None),
        None => (Verdict::Running, None),
    }
}
