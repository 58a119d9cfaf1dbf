//! Strategy validation: every problem, each with its field path and value.
//!
//! [`validate`] turns the user's [`Strategy`] into a [`Checked`] strategy
//! whose values are typed and within range, or returns every
//! [`FieldProblem`] found, not just the first. Risky but legal choices come
//! back as [`Warning`]s.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use serde::Serialize;

use crate::{
    duration::parse_duration,
    quantity::Amount,
    spec::{MatchType, PathMatch, RequestMatch, Strategy, Style, ValueMatch},
};

/// Kubernetes' default progressDeadlineSeconds, 600 s.
pub const DEFAULT_PROGRESS_DEADLINE: Duration = Duration::from_secs(600);
/// How long blue-green keeps the old version by default.
pub const DEFAULT_ROLLBACK_WINDOW: Duration = Duration::from_secs(600);

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldProblem {
    /// Field path, e.g. `strategy.canary.steps[2].traffic`.
    pub field: String,
    /// What is wrong, naming the value.
    pub description: String,
}

impl FieldProblem {
    /// A problem with `field`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

impl std::fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.description)
    }
}

/// A risky but legal choice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// Field path.
    pub field: String,
    /// Why it is risky.
    pub message: String,
}

impl Warning {
    /// A warning about `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// A wait at the end of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseKind {
    /// Until Promote (or Resume) is called.
    UntilPromoted,
    /// For this long, then onwards by itself.
    For(Duration),
}

/// A validated step.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedStep {
    /// New-version pods; `None` keeps the previous step's.
    pub replicas: Option<Amount>,
    /// Traffic percent; `None` follows the replicas.
    pub traffic: Option<u32>,
    /// Matches with every match type filled in.
    pub matches: Arc<[RequestMatch]>,
    /// The pause, if any.
    pub pause: Option<PauseKind>,
    /// Analyses run at this step.
    pub analyses: Arc<[String]>,
}

/// A validated strategy: typed, in range, defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// The release style.
    pub style: Style,
    /// The steps as written (the planner appends the final one).
    pub steps: Vec<CheckedStep>,
    /// Unready pods a batch may have.
    pub failure_threshold: Amount,
    /// How long a batch may take to become ready.
    pub progress_deadline: Duration,
    /// Background analyses and the 0-based step they start at.
    pub background: Option<(Arc<[String]>, usize)>,
    /// Blue-green: how long the old version is kept.
    pub rollback_window: Duration,
}

/// What validation may check beyond the strategy itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct Context<'a> {
    /// The workload's size; size-dependent rules are skipped when `None`.
    pub replicas: Option<u32>,
    /// The analyses the rollout defines; references are not checked when `None`.
    pub known_analyses: Option<&'a [String]>,
}

/// The outcome of a successful validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Validated {
    /// The checked strategy.
    pub strategy: Checked,
    /// Risky but legal choices.
    pub warnings: Vec<Warning>,
}

const ROOT: &str = "strategy";

struct Checker<'a> {
    problems: Vec<FieldProblem>,
    warnings: Vec<Warning>,
    context: Context<'a>,
}

impl Checker<'_> {
    fn problem(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.problems.push(FieldProblem::new(field, description));
    }

    fn warn(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Warning::new(field, message));
    }

    fn duration(
        &mut self,
        field: impl FnOnce() -> String,
        text: &str,
        allow_zero: bool,
    ) -> Option<Duration> {
        match parse_duration(text) {
            Ok(d) if d.is_zero() && !allow_zero => {
                self.problem(field(), format!("must be longer than 0s, got {text:?}"));
                None
            }
            Ok(d) => Some(d),
            Err(why) => {
                self.problem(field(), why);
                None
            }
        }
    }

    fn analyses(&mut self, field: impl Fn() -> String, names: &[String]) -> Vec<String> {
        let mut seen = BTreeSet::new();
        for (i, name) in names.iter().enumerate() {
            let path = || format!("{}[{i}]", field());
            if name.trim().is_empty() {
                self.problem(path(), "must name an analysis, got \"\"");
            } else if !seen.insert(name.as_str()) {
                self.problem(path(), format!("{name:?} is listed twice"));
            } else if let Some(known) = self.context.known_analyses
                && !known.contains(name)
            {
                let list = if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                };
                self.problem(
                    path(),
                    format!("no analysis named {name:?} (defined: {list})"),
                );
            }
        }
        names.to_vec()
    }

    fn value_match(&mut self, field: &str, kind: &str, m: &ValueMatch) -> ValueMatch {
        let match_type = m.match_type.unwrap_or(MatchType::Exact);
        let valid_name = match kind {
            // RFC 9110 token characters.
            "header" => |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c),
            // RFC 6265 cookie names are tokens too; query names allow more.
            "cookie" => |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c),
            _ => |c: char| !c.is_whitespace() && !"&=#".contains(c),
        };
        if m.name.is_empty() {
            self.problem(
                format!("{field}.name"),
                format!("must name a {kind}, got \"\""),
            );
        } else if !m.name.chars().all(valid_name) {
            self.problem(
                format!("{field}.name"),
                format!("not a valid {kind} name, got {:?}", m.name),
            );
        }
        if m.value.is_empty() && match_type != MatchType::RegularExpression {
            self.problem(format!("{field}.value"), "must not be empty, got \"\"");
        }
        if match_type == MatchType::RegularExpression
            && let Err(e) = regex::Regex::new(&m.value)
        {
            self.problem(
                format!("{field}.value"),
                format!("not a valid regular expression {:?}: {e}", m.value),
            );
        }
        ValueMatch {
            name: m.name.clone(),
            match_type: Some(match_type),
            value: m.value.clone(),
        }
    }

    fn request_match(&mut self, field: &str, m: &RequestMatch) -> RequestMatch {
        let mut checked = RequestMatch::default();
        for (i, h) in m.headers.iter().enumerate() {
            checked
                .headers
                .push(self.value_match(&format!("{field}.headers[{i}]"), "header", h));
        }
        for (i, c) in m.cookies.iter().enumerate() {
            checked
                .cookies
                .push(self.value_match(&format!("{field}.cookies[{i}]"), "cookie", c));
        }
        for (i, q) in m.query_params.iter().enumerate() {
            let path = format!("{field}.queryParams[{i}]");
            checked
                .query_params
                .push(self.value_match(&path, "query parameter", q));
        }
        if let Some(path) = &m.path {
            let match_type = path.match_type.unwrap_or(MatchType::Prefix);
            if match_type == MatchType::RegularExpression {
                if let Err(e) = regex::Regex::new(&path.value) {
                    self.problem(
                        format!("{field}.path.value"),
                        format!("not a valid regular expression {:?}: {e}", path.value),
                    );
                }
            } else if !path.value.starts_with('/') {
                self.problem(
                    format!("{field}.path.value"),
                    format!("must start with \"/\", got {:?}", path.value),
                );
            }
            checked.path = Some(PathMatch {
                match_type: Some(match_type),
                value: path.value.clone(),
            });
        }
        if checked == RequestMatch::default() {
            self.problem(
                field,
                "must have at least one header, cookie, query parameter or path",
            );
        }
        checked
    }
}

/// Validates a strategy, reporting every problem.
///
/// # Errors
/// Every [`FieldProblem`] found, in field order.
pub fn validate(strategy: &Strategy, context: Context<'_>) -> Result<Validated, Vec<FieldProblem>> {
    let mut c = Checker {
        problems: Vec::new(),
        warnings: Vec::new(),
        context,
    };
    let style = strategy.style.unwrap_or_default();
    let canary = &strategy.canary;
    let base = format!("{ROOT}.canary");

    let failure_threshold = match &canary.failure_threshold {
        None => Amount::Count(0),
        Some(q) => Amount::parse(&format!("{base}.failureThreshold"), q).unwrap_or_else(|p| {
            c.problems.push(p);
            Amount::Count(0)
        }),
    };
    let progress_deadline = match &canary.progress_deadline {
        None => DEFAULT_PROGRESS_DEADLINE,
        Some(text) => c
            .duration(|| format!("{base}.progressDeadline"), text, false)
            .unwrap_or(DEFAULT_PROGRESS_DEADLINE),
    };

    let mut steps = Vec::with_capacity(canary.steps.len());
    // The previous step's values, for the never-backwards rule.
    let mut previous: Option<(usize, Amount)> = None;
    let mut previous_traffic: Option<(usize, u32)> = None;
    for (i, step) in canary.steps.iter().enumerate() {
        let path = |suffix: &str| format!("{base}.steps[{i}]{suffix}");
        let replicas = step.replicas.as_ref().and_then(|q| match Amount::read(q) {
            Ok(amount) => Some(amount),
            Err(why) => {
                c.problem(path(".replicas"), why);
                None
            }
        });
        if let (Some(now), Some((j, before))) = (replicas, previous) {
            let backwards = match (now, before, context.replicas) {
                (Amount::Count(a), Amount::Count(b), _)
                | (Amount::Percent(a), Amount::Percent(b), _) => a < b,
                (a, b, Some(n)) => a.pods_ceil(n) < b.pods_ceil(n),
                _ => false,
            };
            if backwards {
                c.problem(
                    path(".replicas"),
                    format!("must not be less than steps[{j}].replicas ({before}), got {now}"),
                );
            }
        }
        if let (Some(Amount::Count(count)), Some(n)) = (replicas, context.replicas)
            && count > n
        {
            c.warn(
                path(".replicas"),
                format!("{count} is more than the workload's {n} replicas; capped at {n}"),
            );
        }
        if style == Style::BlueGreen && replicas.is_some() {
            c.warn(
                path(".replicas"),
                "ignored for BlueGreen: the new version runs at full size from the first step",
            );
        }
        let traffic = step.traffic.and_then(|t| match u32::try_from(t.value) {
            Ok(v) if v <= 100 => Some(v),
            _ => {
                c.problem(
                    path(".traffic"),
                    format!("must be between 0 and 100, got {t}"),
                );
                None
            }
        });
        if let (Some(now), Some((j, before))) = (traffic, previous_traffic)
            && now < before
        {
            c.problem(
                path(".traffic"),
                format!("must not be less than steps[{j}].traffic ({before}), got {now}"),
            );
        }
        let no_new_pods = match replicas.or(previous.map(|(_, r)| r)) {
            None | Some(Amount::Count(0) | Amount::Percent(0)) => true,
            Some(_) => false,
        };
        if let Some(t) = traffic
            && t > 0
            && no_new_pods
            && style != Style::BlueGreen
        {
            c.problem(
                path(".traffic"),
                format!("{t}% of traffic with no new pods: set replicas at or before this step"),
            );
        }
        let matches: Vec<RequestMatch> = step
            .matches
            .iter()
            .enumerate()
            .map(|(k, m)| c.request_match(&path(&format!(".matches[{k}]")), m))
            .collect();
        let pause = step.pause.as_ref().map(|p| match &p.duration {
            None => PauseKind::UntilPromoted,
            Some(text) => c
                .duration(|| path(".pause.duration"), text, false)
                .map_or(PauseKind::UntilPromoted, PauseKind::For),
        });
        let analyses = c.analyses(|| path(".analyses"), &step.analyses);
        if let Some(r) = replicas {
            previous = Some((i, r));
        }
        if let Some(t) = traffic {
            previous_traffic = Some((i, t));
        }
        steps.push(CheckedStep {
            replicas,
            traffic,
            matches: matches.into(),
            pause,
            analyses: analyses.into(),
        });
    }

    let background = canary.background_analysis.as_ref().map(|b| {
        let path = format!("{base}.backgroundAnalysis");
        let names = c.analyses(|| format!("{path}.analyses"), &b.analyses);
        if names.is_empty() {
            c.problem(
                format!("{path}.analyses"),
                "must name at least one analysis, got []",
            );
        }
        let last = canary.steps.len().max(1);
        let start = match b.starting_step {
            None => 0,
            Some(s) if s >= 1 && usize::try_from(s).is_ok_and(|s| s <= last) => (s - 1) as usize,
            Some(s) => {
                c.problem(
                    format!("{path}.startingStep"),
                    format!("must be between 1 and {last} (the number of steps), got {s}"),
                );
                0
            }
        };
        (Arc::from(names), start)
    });

    let rollback_window = match strategy
        .blue_green
        .as_ref()
        .and_then(|b| b.rollback_window.as_ref())
    {
        None => DEFAULT_ROLLBACK_WINDOW,
        Some(text) => {
            let field = format!("{ROOT}.blueGreen.rollbackWindow");
            if style != Style::BlueGreen {
                c.warn(&field, format!("ignored for style {style:?}"));
            }
            c.duration(|| field.clone(), text, true)
                .unwrap_or(DEFAULT_ROLLBACK_WINDOW)
        }
    };

    if canary.steps.is_empty() {
        c.warn(
            format!("{base}.steps"),
            "no steps: the release goes to 100% in one batch",
        );
    } else if background.is_none()
        && steps
            .iter()
            .all(|s| s.pause.is_none() && s.analyses.is_empty())
    {
        c.warn(
            format!("{base}.steps"),
            "no step pauses or runs an analysis: each batch advances as soon as its pods are ready",
        );
    }

    if c.problems.is_empty() {
        Ok(Validated {
            strategy: Checked {
                style,
                steps,
                failure_threshold,
                progress_deadline,
                background,
                rollback_window,
            },
            warnings: c.warnings,
        })
    } else {
        Err(c.problems)
    }
}
