//! An analysis as the gate runs it: validated, defaults applied.
//!
//! Built from the `sluice.v1.Analysis` message by [`AnalysisSpec::from_proto`],
//! which reports every problem with its field path.

use std::{collections::BTreeMap, time::Duration};

use sluice_proto::v1 as pb;

use crate::template::{self, Template};

/// Time between measurements when a metric does not say.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// Consecutive errors tolerated when a metric does not say (as Argo Rollouts).
pub const DEFAULT_CONSECUTIVE_ERROR_LIMIT: u32 = 4;
/// The rate window when the context does not say.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);

/// One problem with one field of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    /// Field path, e.g. `analysis.metrics[0].interval`.
    pub field: String,
    /// What is wrong, naming the value.
    pub description: String,
}

impl std::fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.description)
    }
}

/// Which way a comparison's value gets worse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Errors, latency.
    HigherIsWorse,
    /// Success rate, throughput.
    LowerIsWorse,
}

/// A condition on a measured value.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// Every (success) or any (failure) value within `[min, max]`.
    Threshold {
        /// Lower bound, inclusive.
        min: Option<f64>,
        /// Upper bound, inclusive.
        max: Option<f64>,
    },
    /// Canary against a baseline (the stable version).
    Comparison {
        /// The baseline query.
        baseline: Template,
        /// Allowed ratio.
        max_ratio: f64,
        /// Allowed absolute slack.
        slack: f64,
        /// Which way is worse.
        direction: Direction,
    },
}

/// A metric, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSpec {
    /// Name, unique in the analysis.
    pub name: String,
    /// The query.
    pub query: Template,
    /// Passes when this holds.
    pub success: Option<Condition>,
    /// Fails when this holds.
    pub failure: Option<Condition>,
    /// Time between measurements.
    pub interval: Duration,
    /// Measurements to take; 0 until the step ends.
    pub count: u32,
    /// Wait before the first.
    pub initial_delay: Duration,
    /// Failed measurements tolerated.
    pub failure_limit: u32,
    /// Inconclusive measurements tolerated.
    pub inconclusive_limit: u32,
    /// Consecutive errors tolerated.
    pub consecutive_error_limit: u32,
    /// Consecutive successes that pass early; 0 never early.
    pub consecutive_success_limit: u32,
    /// Recorded, never decides.
    pub dry_run: bool,
}

/// An analysis, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalysisSpec {
    /// Its name.
    pub name: String,
    /// Its metrics.
    pub metrics: Vec<MetricSpec>,
}

/// The values placeholders are filled with.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Context {
    /// `{{namespace}}`.
    pub namespace: String,
    /// `{{workload}}`, also `{{stableWorkload}}`: the released workload.
    pub workload: String,
    /// `{{canaryWorkload}}`: the workload running the canary pods (the
    /// released one, or a canary-style release's own Deployment).
    pub canary_workload: String,
    /// `{{canaryRevision}}`.
    pub canary_revision: String,
    /// `{{stableRevision}}`.
    pub stable_revision: String,
    /// `{{window}}`.
    pub window: Duration,
    /// `{{args.NAME}}`: the analysis' args overridden by the context's.
    pub args: BTreeMap<String, String>,
}

impl Context {
    /// The same context seen from the stable side: revisions swapped.
    pub fn baseline(&self) -> Self {
        Self {
            canary_revision: self.stable_revision.clone(),
            stable_revision: self.canary_revision.clone(),
            canary_workload: self.workload.clone(),
            workload: self.canary_workload.clone(),
            ..self.clone()
        }
    }
}

struct Checker {
    problems: Vec<FieldProblem>,
}

impl Checker {
    fn problem(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.problems.push(FieldProblem {
            field: field.into(),
            description: description.into(),
        });
    }

    fn duration(
        &mut self,
        field: String,
        d: Option<&prost_types::Duration>,
        default: Duration,
    ) -> Duration {
        match d {
            None => default,
            Some(d) if d.seconds < 0 || d.nanos < 0 => {
                self.problem(field, format!("must not be negative, got {}s", d.seconds));
                default
            }
            Some(d) => Duration::new(d.seconds as u64, d.nanos as u32),
        }
    }

    fn number(&mut self, field: String, value: Option<f64>) -> Option<f64> {
        match value {
            Some(v) if v.is_nan() => {
                self.problem(field, "must be a number, got NaN");
                None
            }
            other => other,
        }
    }

    fn condition(
        &mut self,
        field: &str,
        c: Option<&pb::Condition>,
        query: &Template,
    ) -> Option<Condition> {
        let kind = c?.kind.as_ref();
        match kind {
            None => {
                self.problem(field, "must set threshold or comparison");
                None
            }
            Some(pb::condition::Kind::Threshold(t)) => {
                let min = self.number(format!("{field}.threshold.min"), t.min);
                let max = self.number(format!("{field}.threshold.max"), t.max);
                match (min, max) {
                    (None, None) => {
                        self.problem(format!("{field}.threshold"), "must set min, max or both")
                    }
                    (Some(lo), Some(hi)) if lo > hi => self.problem(
                        format!("{field}.threshold"),
                        format!("min must not exceed max, got min {lo} and max {hi}"),
                    ),
                    _ => {}
                }
                Some(Condition::Threshold { min, max })
            }
            Some(pb::condition::Kind::Comparison(c)) => {
                let path = format!("{field}.comparison");
                if !(c.max_ratio.is_finite() && c.max_ratio >= 1.0) {
                    self.problem(
                        format!("{path}.maxRatio"),
                        format!("must be 1 or more, got {}", c.max_ratio),
                    );
                }
                if !(c.slack.is_finite() && c.slack >= 0.0) {
                    self.problem(
                        format!("{path}.slack"),
                        format!("must be 0 or more, got {}", c.slack),
                    );
                }
                let direction =
                    match pb::ComparisonDirection::try_from(c.direction).unwrap_or_default() {
                        pb::ComparisonDirection::LowerIsWorse => Direction::LowerIsWorse,
                        _ => Direction::HigherIsWorse,
                    };
                let baseline = if c.baseline_query.trim().is_empty() {
                    query.clone()
                } else {
                    match Template::parse(&c.baseline_query) {
                        Ok(t) => t,
                        Err(e) => {
                            self.problem(format!("{path}.baselineQuery"), e);
                            query.clone()
                        }
                    }
                };
                Some(Condition::Comparison {
                    baseline,
                    max_ratio: c.max_ratio,
                    slack: c.slack,
                    direction,
                })
            }
        }
    }
}

impl AnalysisSpec {
    /// Validates an analysis message; `root` prefixes field paths.
    ///
    /// # Errors
    /// Every problem found.
    pub fn from_proto(root: &str, analysis: &pb::Analysis) -> Result<Self, Vec<FieldProblem>> {
        let mut c = Checker {
            problems: Vec::new(),
        };
        if analysis.metrics.is_empty() {
            c.problem(
                format!("{root}.metrics"),
                "must have at least one metric, got []",
            );
        }
        let mut names = std::collections::BTreeSet::new();
        let mut metrics = Vec::new();
        for (i, m) in analysis.metrics.iter().enumerate() {
            let path = format!("{root}.metrics[{i}]");
            if m.name.trim().is_empty() {
                c.problem(format!("{path}.name"), "must not be empty, got \"\"");
            } else if !names.insert(m.name.as_str()) {
                c.problem(
                    format!("{path}.name"),
                    format!("{:?} is used by another metric", m.name),
                );
            }
            let query = match (m.query.trim().is_empty(), m.template.trim().is_empty()) {
                (false, true) => Template::parse(&m.query)
                    .and_then(|t| t.check_syntax().map(|()| t))
                    .map_err(|e| (format!("{path}.query"), e)),
                (true, false) => template::builtin(&m.template).ok_or_else(|| {
                    (
                        format!("{path}.template"),
                        format!(
                            "no built-in template {:?} (known: {})",
                            m.template,
                            template::BUILTINS.join(", ")
                        ),
                    )
                }),
                (false, false) => Err((
                    format!("{path}.template"),
                    "set query or template, not both".to_owned(),
                )),
                (true, true) => Err((
                    format!("{path}.query"),
                    "set query or template, got neither".to_owned(),
                )),
            };
            let query = query.unwrap_or_else(|(field, e)| {
                c.problem(field, e);
                Template::literal("")
            });
            let success = c.condition(
                &format!("{path}.successCondition"),
                m.success_condition.as_ref(),
                &query,
            );
            let failure = c.condition(
                &format!("{path}.failureCondition"),
                m.failure_condition.as_ref(),
                &query,
            );
            if success.is_none()
                && failure.is_none()
                && m.success_condition.is_none()
                && m.failure_condition.is_none()
            {
                c.problem(&path, "must set successCondition, failureCondition or both");
            }
            let interval = c.duration(
                format!("{path}.interval"),
                m.interval.as_ref(),
                DEFAULT_INTERVAL,
            );
            if interval.is_zero() {
                c.problem(format!("{path}.interval"), "must be longer than 0s, got 0s");
            }
            let initial_delay = c.duration(
                format!("{path}.initialDelay"),
                m.initial_delay.as_ref(),
                Duration::ZERO,
            );
            metrics.push(MetricSpec {
                name: m.name.clone(),
                query,
                success,
                failure,
                interval,
                count: m.count,
                initial_delay,
                failure_limit: m.failure_limit,
                inconclusive_limit: m.inconclusive_limit,
                consecutive_error_limit: if m.consecutive_error_limit == 0 {
                    DEFAULT_CONSECUTIVE_ERROR_LIMIT
                } else {
                    m.consecutive_error_limit
                },
                consecutive_success_limit: m.consecutive_success_limit,
                dry_run: m.dry_run,
            });
        }
        if c.problems.is_empty() {
            Ok(Self {
                name: analysis.name.clone(),
                metrics,
            })
        } else {
            Err(c.problems)
        }
    }
}

/// The placeholder values of a request: the context message over the
/// analysis' own args.
///
/// # Errors
/// A problem for a negative window.
pub fn context_from_proto(
    analysis: &pb::Analysis,
    context: Option<&pb::AnalysisContext>,
) -> Result<Context, Vec<FieldProblem>> {
    let default = pb::AnalysisContext::default();
    let ctx = context.unwrap_or(&default);
    let mut c = Checker {
        problems: Vec::new(),
    };
    let window = c.duration("context.window".into(), ctx.window.as_ref(), DEFAULT_WINDOW);
    if window < Duration::from_secs(1) {
        c.problem("context.window", "must be at least 1s");
    }
    let mut args: BTreeMap<String, String> = analysis.args.clone().into_iter().collect();
    args.extend(ctx.args.clone());
    if !c.problems.is_empty() {
        return Err(c.problems);
    }
    Ok(Context {
        namespace: ctx.namespace.clone(),
        workload: ctx.workload.clone(),
        canary_workload: if ctx.canary_workload.is_empty() {
            ctx.workload.clone()
        } else {
            ctx.canary_workload.clone()
        },
        canary_revision: ctx.canary_revision.clone(),
        stable_revision: ctx.stable_revision.clone(),
        window,
        args,
    })
}
