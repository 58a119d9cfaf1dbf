//! A PromQL evaluator over the simulator's own series, answering as
//! Prometheus does for what canary analyses and dashboards ask: selectors
//! (`=`, `!=`, `=~`, `!~`, `offset`, `@`), range selectors and subqueries;
//! the range functions (`rate`, `increase`, `irate`, `delta`, `idelta`,
//! `changes`, `resets`, `deriv`, `*_over_time`, `absent_over_time`); the
//! instant functions (math, `round`, `clamp*`, `absent`, `label_replace`,
//! `label_join`, `time`, `timestamp`, the calendar functions, `sort*`,
//! `histogram_quantile`, `scalar`, `vector`); every aggregation but the
//! native-histogram ones; arithmetic, comparison and set operators with
//! `on` / `ignoring`, `group_left` / `group_right` and `bool`.
//!
//! Parsing is `promql-parser`'s. What is left (native histograms, fill
//! modifiers, string results) is refused with a message naming it.
//!
//! Semantics follow Prometheus 3: an instant selector takes the newest
//! sample within the 5-minute lookback unless it is a staleness marker (a
//! series that ended); range windows are open at their start; `rate`
//! extrapolates to the window's edges as Prometheus does; errors a query
//! meets while it runs (many-to-many matching, duplicate label sets) are
//! execution errors (HTTP 422), everything else bad data (400).
//!
//! # Layout
//! - this file: values, errors, selectors, subqueries, the evaluator;
//! - `functions`: function calls;
//! - `aggregate`: aggregations;
//! - `binary`: operators between scalars and vectors.

mod aggregate;
mod binary;

pub use aggregate::format_value;
mod functions;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use promql_parser::{
    label::{MatchOp, Matcher},
    parser::{self, AtModifier, Expr, Offset, VectorSelector},
};

use crate::tsdb::{Labels, Tsdb, is_stale};

/// Samples an instant selector may look back for.
pub const LOOKBACK_MS: i64 = 5 * 60 * 1000;

/// A subquery's step when it names none: Prometheus's default global
/// evaluation interval.
pub const SUBQUERY_STEP_MS: i64 = 60 * 1000;

/// A label set, sorted by name.
pub type LabelSet = BTreeMap<String, String>;

/// One element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Labels, sorted, without `__name__` after most functions.
    pub labels: LabelSet,
    /// The value.
    pub value: f64,
}

/// One series' labels and (milliseconds, value) samples over a range.
pub type RangeSeries = (LabelSet, Vec<(i64, f64)>);

/// A query result.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A number.
    Scalar(f64),
    /// One value per series.
    Vector(Vec<Sample>),
    /// A range of samples per series.
    Matrix(Vec<RangeSeries>),
    /// A string literal, the one place a query may have one on its own.
    String(String),
}

/// An evaluation error, worded as Prometheus words it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalError {
    /// What went wrong.
    pub message: String,
    /// Met while the query ran (Prometheus's `execution`, HTTP 422) rather
    /// than a query that could never run (`bad_data`, 400).
    pub execution: bool,
    /// The query ran past its deadline (Prometheus's `timeout`, HTTP 503).
    pub timeout: bool,
}

impl EvalError {
    /// A query that cannot run.
    pub fn bad(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            execution: false,
            timeout: false,
        }
    }

    /// An error met while running.
    pub fn execution(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            execution: true,
            timeout: false,
        }
    }

    /// The query's time ran out.
    pub fn timeout() -> Self {
        Self {
            message: "query timed out in expression evaluation".to_owned(),
            execution: false,
            timeout: true,
        }
    }
}

impl std::fmt::Display for EvalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

pub(crate) fn unsupported(what: impl std::fmt::Display) -> EvalError {
    EvalError::bad(format!(
        "unsupported by the simulator's query engine: {what}"
    ))
}

/// What an evaluation runs in: the store, and the range a range query
/// covers (`@ start()` and `@ end()`; both the evaluation time in an
/// instant query).
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    /// The samples.
    pub db: &'a Tsdb,
    /// The range's start (ms).
    pub start: i64,
    /// The range's end (ms).
    pub end: i64,
    /// When the evaluation gives up (a query's `timeout`), if ever.
    pub deadline: Option<std::time::Instant>,
    /// Set when whoever asked has gone: the evaluation gives up too.
    pub cancelled: Option<&'a std::sync::atomic::AtomicBool>,
}

fn label_map(labels: &Labels) -> LabelSet {
    labels.iter().cloned().collect()
}

pub(crate) fn drop_name(mut labels: LabelSet) -> LabelSet {
    labels.remove("__name__");
    labels
}

fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The time a selector reads at: its `@` time (else `at`), less its offset.
fn selector_time(
    ctx: Ctx<'_>,
    at_modifier: Option<&AtModifier>,
    offset: Option<&Offset>,
    at: i64,
) -> i64 {
    let base = match at_modifier {
        None => at,
        Some(AtModifier::Start) => ctx.start,
        Some(AtModifier::End) => ctx.end,
        Some(AtModifier::At(t)) => match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => millis(d),
            Err(e) => -millis(e.duration()),
        },
    };
    match offset {
        None => base,
        Some(Offset::Pos(d)) => base - millis(*d),
        Some(Offset::Neg(d)) => base + millis(*d),
    }
}

fn select<'a>(
    db: &'a Tsdb,
    vs: &'a VectorSelector,
) -> Result<impl Iterator<Item = &'a crate::tsdb::Series>, EvalError> {
    if !vs.matchers.or_matchers.is_empty() {
        return Err(unsupported("`or` label matchers"));
    }
    let name = vs.name.as_deref();
    let matchers: &'a [Matcher] = &vs.matchers.matchers;
    Ok(db
        .series
        .iter()
        .map(AsRef::as_ref)
        .filter(move |s: &&crate::tsdb::Series| {
            let get = |k: &str| {
                s.labels
                    .iter()
                    .find(|(n, _)| n == k)
                    .map_or("", |(_, v)| v.as_str())
            };
            name.is_none_or(|n| get("__name__") == n)
                && matchers.iter().all(|m| m.is_match(get(&m.name)))
        }))
}

/// Each selected series' newest sample at `at` within the lookback, with
/// its time; a series whose newest sample is a staleness marker has none.
fn instant_samples(
    ctx: Ctx<'_>,
    vs: &VectorSelector,
    at: i64,
) -> Result<Vec<(LabelSet, i64, f64)>, EvalError> {
    let t = selector_time(ctx, vs.at.as_ref(), vs.offset.as_ref(), at);
    let mut out = Vec::new();
    for series in select(ctx.db, vs)? {
        if let Some((when, v)) = series.samples.iter().rev().find(|(when, _)| *when <= t)
            && *when > t - LOOKBACK_MS
            && !is_stale(*v)
        {
            out.push((label_map(&series.labels), *when, *v));
        }
    }
    Ok(out)
}

fn instant(ctx: Ctx<'_>, vs: &VectorSelector, at: i64) -> Result<Value, EvalError> {
    Ok(Value::Vector(
        instant_samples(ctx, vs, at)?
            .into_iter()
            .map(|(labels, _, value)| Sample { labels, value })
            .collect(),
    ))
}

/// The samples of a range argument, with the window they were taken over.
pub(crate) struct Range {
    pub series: Vec<RangeSeries>,
    /// The window's end (ms), offset and `@` applied.
    pub end: i64,
    /// Its length (ms).
    pub window: i64,
}

fn matrix(
    ctx: Ctx<'_>,
    vs: &VectorSelector,
    end: i64,
    window: i64,
) -> Result<Vec<RangeSeries>, EvalError> {
    let mut out = Vec::new();
    for series in select(ctx.db, vs)? {
        let points: Vec<(i64, f64)> = series
            .samples
            .iter()
            .filter(|(t, v)| *t > end - window && *t <= end && !is_stale(*v))
            .copied()
            .collect();
        if !points.is_empty() {
            out.push((label_map(&series.labels), points));
        }
    }
    Ok(out)
}

/// A range selector's or a subquery's samples, for a function.
pub(crate) fn range_arg(ctx: Ctx<'_>, expr: &Expr, at: i64) -> Result<Range, EvalError> {
    match expr {
        Expr::Paren(p) => range_arg(ctx, &p.expr, at),
        Expr::MatrixSelector(ms) => {
            let end = selector_time(ctx, ms.vs.at.as_ref(), ms.vs.offset.as_ref(), at);
            let window = millis(ms.range);
            Ok(Range {
                series: matrix(ctx, &ms.vs, end, window)?,
                end,
                window,
            })
        }
        Expr::Subquery(sq) => {
            let end = selector_time(ctx, sq.at.as_ref(), sq.offset.as_ref(), at);
            let window = millis(sq.range);
            let step = sq.step.map_or(SUBQUERY_STEP_MS, millis).max(1);
            // The first step-aligned time inside the window (open at its start).
            let mut t = (end - window).div_euclid(step) * step;
            if t <= end - window {
                t += step;
            }
            let mut series: BTreeMap<LabelSet, Vec<(i64, f64)>> = BTreeMap::new();
            while t <= end {
                match eval(ctx, &sq.expr, t)? {
                    Value::Vector(samples) => {
                        for s in samples {
                            series.entry(s.labels).or_default().push((t, s.value));
                        }
                    }
                    Value::Scalar(v) => series.entry(LabelSet::new()).or_default().push((t, v)),
                    Value::Matrix(_) => {
                        return Err(EvalError::bad(
                            "subquery is only allowed on instant vector, got range vector",
                        ));
                    }
                    Value::String(_) => {
                        return Err(EvalError::bad(
                            "subquery is only allowed on instant vector, got string",
                        ));
                    }
                }
                t += step;
            }
            Ok(Range {
                series: series.into_iter().collect(),
                end,
                window,
            })
        }
        _ => Err(EvalError::bad(
            "expected type range vector in call to function, got instant vector",
        )),
    }
}

/// A vector with two elements of one label set is refused, as Prometheus
/// refuses it (say `rate` over two metrics that differ only by name).
fn distinct(value: Value) -> Result<Value, EvalError> {
    if let Value::Vector(samples) = &value {
        let mut seen = std::collections::BTreeSet::new();
        for s in samples {
            if !seen.insert(&s.labels) {
                return Err(EvalError::execution(
                    "vector cannot contain metrics with the same labelset",
                ));
            }
        }
    }
    Ok(value)
}

/// Evaluates `expr` at `at` (milliseconds since the epoch).
///
/// # Errors
/// An unsupported construct, a type error, or an execution error.
pub fn eval(ctx: Ctx<'_>, expr: &Expr, at: i64) -> Result<Value, EvalError> {
    // Every step of a subquery or a range query comes through here: a
    // query that would run for minutes stops at its deadline.
    if ctx
        .deadline
        .is_some_and(|deadline| std::time::Instant::now() >= deadline)
        || ctx
            .cancelled
            .is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed))
    {
        return Err(EvalError::timeout());
    }
    match expr {
        Expr::NumberLiteral(n) => Ok(Value::Scalar(n.val)),
        Expr::Paren(p) => eval(ctx, &p.expr, at),
        Expr::Unary(u) => match eval(ctx, &u.expr, at)? {
            Value::Scalar(v) => Ok(Value::Scalar(-v)),
            Value::Vector(v) => distinct(Value::Vector(
                v.into_iter()
                    .map(|s| Sample {
                        labels: drop_name(s.labels),
                        value: -s.value,
                    })
                    .collect(),
            )),
            Value::Matrix(_) | Value::String(_) => {
                Err(EvalError::bad("unary minus needs an instant vector"))
            }
        },
        Expr::VectorSelector(vs) => instant(ctx, vs, at),
        Expr::MatrixSelector(_) | Expr::Subquery(_) => {
            let range = range_arg(ctx, expr, at)?;
            Ok(Value::Matrix(range.series))
        }
        Expr::Call(c) => distinct(functions::call(ctx, c, at)?),
        Expr::Aggregate(a) => aggregate::aggregate(ctx, a, at),
        Expr::Binary(b) => distinct(binary::binary(ctx, b, at)?),
        Expr::StringLiteral(s) => Ok(Value::String(s.val.clone())),
        Expr::Extension(_) => Err(unsupported("extensions")),
    }
}

/// Parses a query as Prometheus's API does, naming the parameter.
///
/// # Errors
/// The parse error.
pub fn parse(text: &str) -> Result<Expr, EvalError> {
    parser::parse(text).map_err(|e| EvalError::bad(format!("invalid parameter \"query\": {e}")))
}

/// Parses and evaluates an instant query.
///
/// # Errors
/// A parse error (as Prometheus reports it) or an evaluation error.
pub fn query(db: &Tsdb, text: &str, at: i64) -> Result<Value, EvalError> {
    let expr = parse(text)?;
    eval(
        Ctx {
            db,
            start: at,
            end: at,
            deadline: None,
            cancelled: None,
        },
        &expr,
        at,
    )
}

/// Whether a matcher selects `value` (for the matchers `absent` reads).
pub(crate) fn equality(m: &Matcher) -> Option<(&str, &str)> {
    (m.op == MatchOp::Equal && m.name != "__name__").then_some((m.name.as_str(), m.value.as_str()))
}
