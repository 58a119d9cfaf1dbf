//! A PromQL evaluator over the simulator's own series, for what gates use:
//! selectors with `=`, `!=`, `=~`, `!~`; range selectors; `rate`, `irate`,
//! `increase`; `sum`, `avg`, `min`, `max`, `count` with `by` / `without`;
//! `histogram_quantile`; arithmetic and comparison between vectors and
//! scalars (one-to-one matching, `on` / `ignoring`, `bool`); parentheses and
//! unary minus. Parsing is `promql-parser`'s; anything else is refused with
//! a Prometheus-style error naming what is unsupported.
//!
//! Semantics follow Prometheus: an instant selector takes the newest sample
//! within the 5-minute lookback; `rate` extrapolates the increase over the
//! window to its edges as Prometheus does (capped at the series' first and
//! last sample plus half an average step); `histogram_quantile`
//! interpolates linearly within the bucket that holds the quantile.

use std::collections::BTreeMap;

use promql_parser::{
    label::{MatchOp, Matcher},
    parser::{self, Expr, LabelModifier, VectorSelector},
};

use crate::metrics::tsdb::{Labels, Tsdb};

/// Samples an instant selector may look back for.
pub const LOOKBACK_MS: i64 = 5 * 60 * 1000;

/// One element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Labels, sorted, without `__name__` after most functions.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

/// One series' labels and (milliseconds, value) samples over a range.
pub type RangeSeries = (BTreeMap<String, String>, Vec<(i64, f64)>);

/// A query result.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A number.
    Scalar(f64),
    /// One value per series.
    Vector(Vec<Sample>),
    /// A range of samples per series (only as a function argument).
    Matrix(Vec<RangeSeries>),
}

/// An evaluation error, as Prometheus words its `bad_data` errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalError(pub String);

fn unsupported(what: impl std::fmt::Display) -> EvalError {
    EvalError(format!(
        "unsupported by the simulator's query engine: {what}"
    ))
}

fn matches(m: &Matcher, value: &str) -> bool {
    match &m.op {
        MatchOp::Equal => value == m.value,
        MatchOp::NotEqual => value != m.value,
        MatchOp::Re(_) | MatchOp::NotRe(_) => m.is_match(value),
    }
}

fn label_map(labels: &Labels) -> BTreeMap<String, String> {
    labels.iter().cloned().collect()
}

fn select<'a>(
    db: &'a Tsdb,
    vs: &VectorSelector,
) -> Result<impl Iterator<Item = &'a crate::metrics::tsdb::Series>, EvalError> {
    if vs.offset.is_some() || vs.at.is_some() {
        return Err(unsupported("offset and @ modifiers"));
    }
    if !vs.matchers.or_matchers.is_empty() {
        return Err(unsupported("`or` label matchers"));
    }
    let name = vs.name.clone();
    let matchers = vs.matchers.matchers.clone();
    Ok(db.series.iter().filter(move |s| {
        let get = |k: &str| {
            s.labels
                .iter()
                .find(|(n, _)| n == k)
                .map_or("", |(_, v)| v.as_str())
        };
        name.as_ref().is_none_or(|n| get("__name__") == n)
            && matchers.iter().all(|m| matches(m, get(&m.name)))
    }))
}

fn instant(db: &Tsdb, vs: &VectorSelector, at: i64) -> Result<Value, EvalError> {
    let mut out = Vec::new();
    for series in select(db, vs)? {
        if let Some((t, v)) = series.samples.iter().rev().find(|(t, _)| *t <= at)
            && *t > at - LOOKBACK_MS
        {
            out.push(Sample {
                labels: label_map(&series.labels),
                value: *v,
            });
        }
    }
    Ok(Value::Vector(out))
}

fn range(db: &Tsdb, vs: &VectorSelector, at: i64, window_ms: i64) -> Result<Value, EvalError> {
    let mut out = Vec::new();
    for series in select(db, vs)? {
        let points: Vec<(i64, f64)> = series
            .samples
            .iter()
            .filter(|(t, _)| *t > at - window_ms && *t <= at)
            .copied()
            .collect();
        if !points.is_empty() {
            out.push((label_map(&series.labels), points));
        }
    }
    Ok(Value::Matrix(out))
}

/// The increase over `points`, corrected for counter resets.
fn raw_increase(points: &[(i64, f64)]) -> f64 {
    let mut total = 0.0;
    for pair in points.windows(2) {
        let (prev, next) = (pair[0].1, pair[1].1);
        total += if next < prev { next } else { next - prev };
    }
    total
}

/// Prometheus's extrapolated increase over a window ending at `at`.
fn extrapolated(
    points: &[(i64, f64)],
    at: i64,
    window_ms: i64,
    is_counter: bool,
    is_rate: bool,
) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let (first_t, first_v) = points[0];
    let (last_t, _) = points[points.len() - 1];
    let mut delta = raw_increase(points);
    let range_start = at - window_ms;
    let sampled = (last_t - first_t) as f64 / 1000.0;
    let average_step = sampled / (points.len() - 1) as f64;
    let mut to_start = (first_t - range_start) as f64 / 1000.0;
    let to_end = (at - last_t) as f64 / 1000.0;
    if is_counter && delta > 0.0 && first_v >= 0.0 {
        let to_zero = sampled * (first_v / delta);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    let threshold = average_step * 1.1;
    let mut extrapolate_to = sampled;
    extrapolate_to += if to_start < threshold {
        to_start
    } else {
        average_step / 2.0
    };
    extrapolate_to += if to_end < threshold {
        to_end
    } else {
        average_step / 2.0
    };
    delta *= extrapolate_to / sampled;
    if is_rate {
        delta /= window_ms as f64 / 1000.0;
    }
    Some(delta)
}

fn drop_name(mut labels: BTreeMap<String, String>) -> BTreeMap<String, String> {
    labels.remove("__name__");
    labels
}

fn call(db: &Tsdb, c: &parser::Call, at: i64) -> Result<Value, EvalError> {
    let name = c.func.name;
    let args = &c.args.args;
    match name {
        "rate" | "increase" | "irate" => {
            let Some(Expr::MatrixSelector(ms)) = args.first().map(|a| a.as_ref()) else {
                return Err(EvalError(format!(
                    "expected a range vector in call to function \"{name}\""
                )));
            };
            let window = ms.range.as_millis() as i64;
            let Value::Matrix(series) = range(db, &ms.vs, at, window)? else {
                unreachable!("range gives a matrix")
            };
            let mut out = Vec::new();
            for (labels, points) in series {
                let value = if name == "irate" {
                    if points.len() < 2 {
                        continue;
                    }
                    let (a, b) = (points[points.len() - 2], points[points.len() - 1]);
                    let diff = if b.1 < a.1 { b.1 } else { b.1 - a.1 };
                    diff / ((b.0 - a.0) as f64 / 1000.0)
                } else {
                    match extrapolated(&points, at, window, true, name == "rate") {
                        Some(v) => v,
                        None => continue,
                    }
                };
                out.push(Sample {
                    labels: drop_name(labels),
                    value,
                });
            }
            Ok(Value::Vector(out))
        }
        "histogram_quantile" => {
            let q = match eval(db, &args[0], at)? {
                Value::Scalar(q) => q,
                _ => {
                    return Err(EvalError(
                        "expected a scalar quantile in histogram_quantile".into(),
                    ));
                }
            };
            let Value::Vector(buckets) = eval(db, &args[1], at)? else {
                return Err(EvalError(
                    "expected an instant vector in histogram_quantile".into(),
                ));
            };
            let mut groups: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
            for s in buckets {
                let mut labels = drop_name(s.labels);
                let Some(le) = labels.remove("le") else {
                    continue;
                };
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap_or(f64::NAN)
                };
                groups.entry(labels).or_default().push((bound, s.value));
            }
            Ok(Value::Vector(
                groups
                    .into_iter()
                    .map(|(labels, b)| Sample {
                        labels,
                        value: quantile(q, b),
                    })
                    .collect(),
            ))
        }
        "scalar" => match eval(db, &args[0], at)? {
            Value::Vector(v) if v.len() == 1 => Ok(Value::Scalar(v[0].value)),
            _ => Ok(Value::Scalar(f64::NAN)),
        },
        "vector" => match eval(db, &args[0], at)? {
            Value::Scalar(v) => Ok(Value::Vector(vec![Sample {
                labels: BTreeMap::new(),
                value: v,
            }])),
            other => Ok(other),
        },
        "abs" | "ceil" | "floor" | "sqrt" | "exp" | "ln" => {
            let Value::Vector(v) = eval(db, &args[0], at)? else {
                return Err(EvalError(format!("expected an instant vector in {name}")));
            };
            let f: fn(f64) -> f64 = match name {
                "abs" => f64::abs,
                "ceil" => f64::ceil,
                "floor" => f64::floor,
                "sqrt" => f64::sqrt,
                "exp" => f64::exp,
                _ => f64::ln,
            };
            Ok(Value::Vector(
                v.into_iter()
                    .map(|s| Sample {
                        labels: drop_name(s.labels),
                        value: f(s.value),
                    })
                    .collect(),
            ))
        }
        other => Err(unsupported(format!("function {other}()"))),
    }
}

/// Prometheus's bucket quantile: linear interpolation inside the bucket.
fn quantile(q: f64, mut buckets: Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if buckets.len() < 2 || buckets.last().is_none_or(|b| !b.0.is_infinite()) {
        return f64::NAN;
    }
    // Counts must not decrease.
    for i in 1..buckets.len() {
        if buckets[i].1 < buckets[i - 1].1 {
            buckets[i].1 = buckets[i - 1].1;
        }
    }
    let total = buckets[buckets.len() - 1].1;
    if total == 0.0 {
        return f64::NAN;
    }
    let rank = q * total;
    let index = buckets
        .iter()
        .position(|b| b.1 >= rank)
        .unwrap_or(buckets.len() - 1);
    if index == buckets.len() - 1 {
        return buckets[buckets.len() - 2].0;
    }
    if index == 0 && buckets[0].0 <= 0.0 {
        return buckets[0].0;
    }
    let (start, count_before) = if index == 0 {
        (0.0, 0.0)
    } else {
        (buckets[index - 1].0, buckets[index - 1].1)
    };
    let (end, count) = buckets[index];
    let in_bucket = count - count_before;
    if in_bucket == 0.0 {
        return end;
    }
    start + (end - start) * ((rank - count_before) / in_bucket)
}

fn group_key(
    labels: &BTreeMap<String, String>,
    modifier: Option<&LabelModifier>,
) -> BTreeMap<String, String> {
    match modifier {
        None => BTreeMap::new(),
        Some(LabelModifier::Include(keep)) => labels
            .iter()
            .filter(|(k, _)| keep.labels.iter().any(|l| l == *k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        Some(LabelModifier::Exclude(drop)) => labels
            .iter()
            .filter(|(k, _)| *k != "__name__" && !drop.labels.iter().any(|l| l == *k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

fn aggregate(db: &Tsdb, a: &parser::AggregateExpr, at: i64) -> Result<Value, EvalError> {
    let op = a.op.to_string();
    let Value::Vector(input) = eval(db, &a.expr, at)? else {
        return Err(EvalError(format!(
            "expected an instant vector in aggregation {op}"
        )));
    };
    let mut groups: BTreeMap<BTreeMap<String, String>, Vec<f64>> = BTreeMap::new();
    for s in input {
        groups
            .entry(group_key(&s.labels, a.modifier.as_ref()))
            .or_default()
            .push(s.value);
    }
    let reduce: fn(&[f64]) -> f64 = match op.as_str() {
        "sum" => |v| v.iter().sum(),
        "avg" => |v| v.iter().sum::<f64>() / v.len() as f64,
        "min" => |v| {
            v.iter().copied().fold(
                f64::INFINITY,
                |a, b| if b < a || a.is_nan() { b } else { a },
            )
        },
        "max" => |v| {
            v.iter().copied().fold(
                f64::NEG_INFINITY,
                |a, b| if b > a || a.is_nan() { b } else { a },
            )
        },
        "count" => |v| v.len() as f64,
        other => return Err(unsupported(format!("aggregation {other}"))),
    };
    Ok(Value::Vector(
        groups
            .into_iter()
            .map(|(labels, values)| Sample {
                labels,
                value: reduce(&values),
            })
            .collect(),
    ))
}

fn apply(op: &str, a: f64, b: f64) -> Result<(f64, bool), EvalError> {
    Ok(match op {
        "+" => (a + b, true),
        "-" => (a - b, true),
        "*" => (a * b, true),
        "/" => (a / b, true),
        "%" => (a % b, true),
        "^" => (a.powf(b), true),
        "==" => (a, a == b),
        "!=" => (a, a != b),
        ">" => (a, a > b),
        "<" => (a, a < b),
        ">=" => (a, a >= b),
        "<=" => (a, a <= b),
        other => return Err(unsupported(format!("operator {other}"))),
    })
}

fn is_comparison(op: &str) -> bool {
    matches!(op, "==" | "!=" | ">" | "<" | ">=" | "<=")
}

fn binary(db: &Tsdb, b: &parser::BinaryExpr, at: i64) -> Result<Value, EvalError> {
    let op = b.op.to_string();
    if matches!(op.as_str(), "and" | "or" | "unless") {
        return Err(unsupported(format!("set operator {op}")));
    }
    let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
    let lhs = eval(db, &b.lhs, at)?;
    let rhs = eval(db, &b.rhs, at)?;
    let finish = |value: f64, keep: bool, a: f64| -> Option<f64> {
        if is_comparison(&op) {
            if return_bool {
                Some(if keep { 1.0 } else { 0.0 })
            } else if keep {
                Some(a)
            } else {
                None
            }
        } else {
            Some(value)
        }
    };
    match (lhs, rhs) {
        (Value::Scalar(a), Value::Scalar(c)) => {
            let (v, keep) = apply(&op, a, c)?;
            Ok(Value::Scalar(if is_comparison(&op) {
                if keep { 1.0 } else { 0.0 }
            } else {
                v
            }))
        }
        (Value::Vector(v), Value::Scalar(c)) => with_scalar(
            v,
            |x| apply(&op, x, c),
            &finish,
            is_comparison(&op) && !return_bool,
        ),
        (Value::Scalar(c), Value::Vector(v)) => with_scalar(
            v,
            |x| apply(&op, c, x),
            &finish,
            is_comparison(&op) && !return_bool,
        ),
        (Value::Vector(l), Value::Vector(r)) => {
            let modifier = b.modifier.as_ref();
            if let Some(m) = modifier
                && !matches!(m.card, parser::VectorMatchCardinality::OneToOne)
            {
                return Err(unsupported("group_left / group_right"));
            }
            let matching = modifier.and_then(|m| m.matching.as_ref());
            let key = |labels: &BTreeMap<String, String>| -> BTreeMap<String, String> {
                match matching {
                    Some(LabelModifier::Include(on)) => labels
                        .iter()
                        .filter(|(k, _)| on.labels.iter().any(|l| l == *k))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    Some(LabelModifier::Exclude(ignoring)) => labels
                        .iter()
                        .filter(|(k, _)| {
                            *k != "__name__" && !ignoring.labels.iter().any(|l| l == *k)
                        })
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    None => drop_name(labels.clone()),
                }
            };
            let right: BTreeMap<BTreeMap<String, String>, f64> =
                r.iter().map(|s| (key(&s.labels), s.value)).collect();
            let mut out = Vec::new();
            for s in l {
                let k = key(&s.labels);
                let Some(other) = right.get(&k) else { continue };
                let (value, keep) = apply(&op, s.value, *other)?;
                if let Some(value) = finish(value, keep, s.value) {
                    let labels = if matching.is_some_and(LabelModifier::is_include) {
                        k
                    } else {
                        drop_name(s.labels)
                    };
                    out.push(Sample { labels, value });
                }
            }
            Ok(Value::Vector(out))
        }
        _ => Err(EvalError(
            "binary operations need instant vectors or scalars".into(),
        )),
    }
}

/// A vector against a scalar: `apply` sees each sample's value; a filtering
/// comparison keeps the sample's labels, anything else drops the name.
fn with_scalar(
    samples: Vec<Sample>,
    apply: impl Fn(f64) -> Result<(f64, bool), EvalError>,
    finish: &impl Fn(f64, bool, f64) -> Option<f64>,
    keep_labels: bool,
) -> Result<Value, EvalError> {
    let mut out = Vec::new();
    for s in samples {
        let (value, keep) = apply(s.value)?;
        if let Some(value) = finish(value, keep, s.value) {
            let labels = if keep_labels {
                s.labels
            } else {
                drop_name(s.labels)
            };
            out.push(Sample { labels, value });
        }
    }
    Ok(Value::Vector(out))
}

/// Evaluates `expr` at `at` (milliseconds since the epoch).
///
/// # Errors
/// An unsupported construct, or a type error.
pub fn eval(db: &Tsdb, expr: &Expr, at: i64) -> Result<Value, EvalError> {
    match expr {
        Expr::NumberLiteral(n) => Ok(Value::Scalar(n.val)),
        Expr::Paren(p) => eval(db, &p.expr, at),
        Expr::Unary(u) => match eval(db, &u.expr, at)? {
            Value::Scalar(v) => Ok(Value::Scalar(-v)),
            Value::Vector(v) => Ok(Value::Vector(
                v.into_iter()
                    .map(|s| Sample {
                        labels: drop_name(s.labels),
                        value: -s.value,
                    })
                    .collect(),
            )),
            Value::Matrix(_) => Err(EvalError("unary minus needs an instant vector".into())),
        },
        Expr::VectorSelector(vs) => instant(db, vs, at),
        Expr::MatrixSelector(ms) => range(db, &ms.vs, at, ms.range.as_millis() as i64),
        Expr::Call(c) => call(db, c, at),
        Expr::Aggregate(a) => aggregate(db, a, at),
        Expr::Binary(b) => binary(db, b, at),
        Expr::StringLiteral(_) => Err(unsupported("string literals")),
        Expr::Subquery(_) => Err(unsupported("subqueries")),
        Expr::Extension(_) => Err(unsupported("extensions")),
    }
}

/// Parses and evaluates a query.
///
/// # Errors
/// A parse error (as Prometheus reports it) or an evaluation error.
pub fn query(db: &Tsdb, text: &str, at: i64) -> Result<Value, EvalError> {
    let expr =
        parser::parse(text).map_err(|e| EvalError(format!("invalid parameter \"query\": {e}")))?;
    eval(db, &expr, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Tsdb {
        let mut db = Tsdb::new(600_000);
        let ok = Tsdb::labels(
            "http_requests_total",
            &[("code", "200"), ("revision", "v2")],
        );
        let bad = Tsdb::labels(
            "http_requests_total",
            &[("code", "500"), ("revision", "v2")],
        );
        for i in 0..=60 {
            let t = i * 1000;
            db.append(&ok, t, 99.0 * i as f64);
            db.append(&bad, t, i as f64);
        }
        for (le, count) in [
            ("0.05", 50.0),
            ("0.1", 90.0),
            ("0.5", 99.0),
            ("+Inf", 100.0),
        ] {
            let b = Tsdb::labels("latency_bucket", &[("le", le), ("revision", "v2")]);
            db.append(&b, 0, 0.0);
            db.append(&b, 60_000, count);
        }
        db
    }

    fn scalar_of(v: Value) -> f64 {
        match v {
            Value::Vector(v) if v.len() == 1 => v[0].value,
            Value::Scalar(s) => s,
            other => panic!("one value expected, got {other:?}"),
        }
    }

    #[test]
    fn success_rate_from_counters() {
        let q = r#"sum(rate(http_requests_total{code!~"5.."}[30s])) / sum(rate(http_requests_total[30s]))"#;
        let v = scalar_of(query(&db(), q, 60_000).unwrap());
        assert!((v - 0.99).abs() < 1e-9, "{v}");
    }

    #[test]
    fn rate_matches_a_steady_counter() {
        let v = scalar_of(
            query(
                &db(),
                r#"sum(rate(http_requests_total{code="500"}[30s]))"#,
                60_000,
            )
            .unwrap(),
        );
        assert!((v - 1.0).abs() < 1e-9, "{v}");
    }

    #[test]
    fn histogram_quantile_interpolates_inside_the_bucket() {
        let v = scalar_of(
            query(
                &db(),
                "histogram_quantile(0.95, sum by (le) (rate(latency_bucket[2m])))",
                60_000,
            )
            .unwrap(),
        );
        // Rank 95 of 100 lies in (0.1, 0.5]: 0.1 + 0.4 * (95 - 90) / 9.
        assert!((v - (0.1 + 0.4 * 5.0 / 9.0)).abs() < 1e-9, "{v}");
    }

    #[test]
    fn comparisons_filter_and_bool_keeps() {
        let db = db();
        let Value::Vector(v) = query(&db, "http_requests_total > 1000", 60_000).unwrap() else {
            panic!()
        };
        assert_eq!(v.len(), 1);
        let Value::Vector(v) = query(&db, "http_requests_total > bool 1000", 60_000).unwrap()
        else {
            panic!()
        };
        assert_eq!(v.len(), 2);
    }

    #[test]
    fn no_samples_means_an_empty_vector() {
        let v = query(
            &db(),
            "sum(rate(http_requests_total{revision=\"v9\"}[30s]))",
            60_000,
        )
        .unwrap();
        assert_eq!(v, Value::Vector(vec![]));
    }

    #[test]
    fn unsupported_constructs_are_named() {
        let e = query(&db(), "predict_linear(http_requests_total[1m], 60)", 60_000).unwrap_err();
        assert!(e.0.contains("function predict_linear()"), "{}", e.0);
        assert!(
            query(&db(), "sum(", 0)
                .unwrap_err()
                .0
                .starts_with("invalid parameter \"query\"")
        );
    }
}
