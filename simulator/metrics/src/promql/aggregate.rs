//! Aggregations: `sum`, `avg`, `min`, `max`, `count`, `group`, `stddev`,
//! `stdvar`, `quantile`, `topk`, `bottomk` and `count_values`, `by` or
//! `without` labels, as Prometheus computes them.

use std::collections::BTreeMap;

use promql_parser::parser::{self, Expr, LabelModifier};

use super::{Ctx, EvalError, LabelSet, Sample, Value, eval, unsupported};

/// The labels a sample is grouped by.
fn group_key(labels: &LabelSet, modifier: Option<&LabelModifier>) -> LabelSet {
    match modifier {
        None => LabelSet::new(),
        Some(LabelModifier::Include(by)) => labels
            .iter()
            .filter(|(k, _)| by.labels.iter().any(|l| l == *k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        Some(LabelModifier::Exclude(without)) => labels
            .iter()
            .filter(|(k, _)| *k != "__name__" && !without.labels.iter().any(|l| l == *k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// Prometheus's φ-quantile of `values` (linear between closest ranks).
pub(super) fn quantile(q: f64, values: &[f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    sorted[lower as usize] * (1.0 - weight) + sorted[upper as usize] * weight
}

/// The mean and population variance, computed as Prometheus does
/// (Welford's running form).
pub(super) fn mean_variance(values: &[f64]) -> (f64, f64) {
    let (mut count, mut mean, mut m2) = (0.0, 0.0_f64, 0.0);
    for v in values {
        count += 1.0;
        let delta = v - mean;
        mean += delta / count;
        m2 += delta * (v - mean);
    }
    (mean, m2 / count)
}

/// The minimum or maximum, a NaN losing to any number.
pub(super) fn extreme(values: &[f64], max: bool) -> f64 {
    values.iter().copied().fold(f64::NAN, |a, b| {
        if a.is_nan() || (max && b > a) || (!max && b < a) {
            b
        } else {
            a
        }
    })
}

/// An incremental mean, as Prometheus's `avg` takes it.
pub(super) fn average(values: &[f64]) -> f64 {
    let (mut count, mut mean) = (0.0, 0.0_f64);
    for v in values {
        count += 1.0;
        if v.is_infinite() || mean.is_infinite() {
            // Past infinity, the plain sum decides.
            return values.iter().sum::<f64>() / values.len() as f64;
        }
        mean += v / count - mean / count;
    }
    mean
}

fn scalar_param(ctx: Ctx<'_>, param: Option<&Expr>, at: i64, op: &str) -> Result<f64, EvalError> {
    match param.map(|p| eval(ctx, p, at)).transpose()? {
        Some(Value::Scalar(v)) => Ok(v),
        _ => Err(EvalError::bad(format!(
            "expected type scalar in aggregation parameter of \"{op}\""
        ))),
    }
}

pub(super) fn aggregate(
    ctx: Ctx<'_>,
    a: &parser::AggregateExpr,
    at: i64,
) -> Result<Value, EvalError> {
    let op = a.op.to_string().to_lowercase();
    let Value::Vector(input) = eval(ctx, &a.expr, at)? else {
        return Err(EvalError::bad(format!(
            "expected type instant vector in aggregation expression, got range vector ({op})"
        )));
    };
    let modifier = a.modifier.as_ref();
    let param = a.param.as_deref();
    match op.as_str() {
        "topk" | "bottomk" => {
            let k = scalar_param(ctx, param, at, &op)?;
            if !(-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&k) {
                return Err(EvalError::execution(format!(
                    "Scalar value {k} overflows int64"
                )));
            }
            let k = k as i64;
            let mut groups: BTreeMap<LabelSet, Vec<Sample>> = BTreeMap::new();
            for s in input {
                groups
                    .entry(group_key(&s.labels, modifier))
                    .or_default()
                    .push(s);
            }
            let top = op == "topk";
            let mut out = Vec::new();
            for (_, mut members) in groups {
                // NaN sorts last either way, as Prometheus ranks it.
                members.sort_by(|x, y| match (x.value.is_nan(), y.value.is_nan()) {
                    (true, true) => std::cmp::Ordering::Equal,
                    (true, false) => std::cmp::Ordering::Greater,
                    (false, true) => std::cmp::Ordering::Less,
                    _ if top => y.value.total_cmp(&x.value),
                    _ => x.value.total_cmp(&y.value),
                });
                out.extend(members.into_iter().take(k.max(0) as usize));
            }
            Ok(Value::Vector(out))
        }
        "count_values" => {
            let Some(Expr::StringLiteral(label)) = param else {
                return Err(EvalError::bad(
                    "expected type string in aggregation parameter of \"count_values\"",
                ));
            };
            let mut counts: BTreeMap<LabelSet, f64> = BTreeMap::new();
            for s in input {
                let mut key = group_key(&s.labels, modifier);
                key.insert(label.val.clone(), format_value(s.value));
                *counts.entry(key).or_default() += 1.0;
            }
            Ok(Value::Vector(
                counts
                    .into_iter()
                    .map(|(labels, value)| Sample { labels, value })
                    .collect(),
            ))
        }
        "sum" | "avg" | "min" | "max" | "count" | "group" | "stddev" | "stdvar" | "quantile" => {
            let q = if op == "quantile" {
                scalar_param(ctx, param, at, &op)?
            } else {
                0.0
            };
            let mut groups: BTreeMap<LabelSet, Vec<f64>> = BTreeMap::new();
            for s in input {
                groups
                    .entry(group_key(&s.labels, modifier))
                    .or_default()
                    .push(s.value);
            }
            Ok(Value::Vector(
                groups
                    .into_iter()
                    .map(|(labels, values)| {
                        let value = match op.as_str() {
                            "sum" => values.iter().sum(),
                            "avg" => average(&values),
                            "min" => extreme(&values, false),
                            "max" => extreme(&values, true),
                            "count" => values.len() as f64,
                            "group" => 1.0,
                            "stddev" => mean_variance(&values).1.sqrt(),
                            "stdvar" => mean_variance(&values).1,
                            _ => quantile(q, &values),
                        };
                        Sample { labels, value }
                    })
                    .collect(),
            ))
        }
        other => Err(unsupported(format!("aggregation {other}"))),
    }
}

/// A value as Prometheus writes it, in a label or an answer (Go's
/// shortest form; `NaN`, `+Inf`, `-Inf`).
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        v.to_string()
    }
}
