//! Function calls, as Prometheus evaluates them. Every function drops the
//! metric name from its result but `last_over_time`, `sort`, `sort_desc`,
//! `label_replace` and `label_join`, which select or relabel a series.

use std::collections::BTreeMap;

use promql_parser::parser::{self, Expr};

use super::{
    Ctx, EvalError, LabelSet, Sample, Value, aggregate, drop_name, equality, eval, instant_samples,
    range_arg, unsupported,
};

/// The increase over `points`, corrected for counter resets.
fn raw_increase(points: &[(i64, f64)]) -> f64 {
    let mut total = points.last().map_or(0.0, |p| p.1) - points.first().map_or(0.0, |p| p.1);
    for pair in points.windows(2) {
        if pair[1].1 < pair[0].1 {
            total += pair[0].1;
        }
    }
    total
}

/// Prometheus's extrapolated delta over a window ending at `end`.
fn extrapolated(
    points: &[(i64, f64)],
    end: i64,
    window_ms: i64,
    is_counter: bool,
    is_rate: bool,
) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let (first_t, first_v) = points[0];
    let (last_t, last_v) = points[points.len() - 1];
    let mut delta = if is_counter {
        raw_increase(points)
    } else {
        last_v - first_v
    };
    let range_start = end - window_ms;
    let sampled = (last_t - first_t) as f64 / 1000.0;
    let average_step = sampled / (points.len() - 1) as f64;
    let mut to_start = (first_t - range_start) as f64 / 1000.0;
    let to_end = (end - last_t) as f64 / 1000.0;
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

/// The least-squares slope and intercept of `points` against time in
/// seconds relative to `origin` (ms).
fn regression(points: &[(i64, f64)], origin: i64) -> (f64, f64) {
    let n = points.len() as f64;
    let (mut sx, mut sy, mut sxy, mut sxx) = (0.0, 0.0, 0.0, 0.0);
    for (t, v) in points {
        let x = (*t - origin) as f64 / 1000.0;
        sx += x;
        sy += v;
        sxy += x * v;
        sxx += x * x;
    }
    let covariance = sxy - sx * sy / n;
    let variance = sxx - sx * sx / n;
    let slope = covariance / variance;
    (slope, sy / n - slope * sx / n)
}

/// A function of a range argument: each series' points to one value (or
/// none), the name dropped unless `keep_name`.
fn over_range(
    ctx: Ctx<'_>,
    arg: &Expr,
    at: i64,
    keep_name: bool,
    f: impl Fn(&[(i64, f64)], i64, i64) -> Option<f64>,
) -> Result<Value, EvalError> {
    let range = range_arg(ctx, arg, at)?;
    let mut out = Vec::new();
    for (labels, points) in range.series {
        if let Some(value) = f(&points, range.end, range.window) {
            let labels = if keep_name { labels } else { drop_name(labels) };
            out.push(Sample { labels, value });
        }
    }
    Ok(Value::Vector(out))
}

fn values(points: &[(i64, f64)]) -> Vec<f64> {
    points.iter().map(|p| p.1).collect()
}

fn vector_arg(ctx: Ctx<'_>, arg: &Expr, at: i64, name: &str) -> Result<Vec<Sample>, EvalError> {
    match eval(ctx, arg, at)? {
        Value::Vector(v) => Ok(v),
        _ => Err(EvalError::bad(format!(
            "expected type instant vector in call to function \"{name}\""
        ))),
    }
}

fn scalar_arg(ctx: Ctx<'_>, arg: &Expr, at: i64, name: &str) -> Result<f64, EvalError> {
    match eval(ctx, arg, at)? {
        Value::Scalar(v) => Ok(v),
        _ => Err(EvalError::bad(format!(
            "expected type scalar in call to function \"{name}\""
        ))),
    }
}

fn string_arg<'a>(arg: &'a Expr, name: &str) -> Result<&'a str, EvalError> {
    match arg {
        Expr::StringLiteral(s) => Ok(&s.val),
        Expr::Paren(p) => string_arg(&p.expr, name),
        _ => Err(EvalError::bad(format!(
            "expected type string in call to function \"{name}\""
        ))),
    }
}

/// Each sample's value mapped by `f`, the name dropped.
fn map_values(samples: Vec<Sample>, f: impl Fn(f64) -> f64) -> Value {
    Value::Vector(
        samples
            .into_iter()
            .map(|s| Sample {
                labels: drop_name(s.labels),
                value: f(s.value),
            })
            .collect(),
    )
}

/// Civil date and time of a Unix time in seconds: (year, month 1-12, day
/// 1-31, hour, minute, weekday 0 = Sunday, day of year 1-366, days in the
/// month).
fn civil(seconds: f64) -> (i64, i64, i64, i64, i64, i64, i64, i64) {
    let secs = seconds.floor() as i64;
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (year, month, day) = sluice_sim_api::time::civil_date(days);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let before = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334][(month - 1) as usize];
    let day_of_year = before + day + i64::from(leap && month > 2);
    let lengths = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let in_month = lengths[(month - 1) as usize] + i64::from(leap && month == 2);
    let weekday = (days + 4).rem_euclid(7);
    (
        year,
        month,
        day,
        of_day / 3600,
        of_day % 3600 / 60,
        weekday,
        day_of_year,
        in_month,
    )
}

/// Go's regexp replacement template (`$1`, `${name}`) expanded for
/// `captures`.
fn expand(template: &str, captures: &regex::Captures<'_>) -> String {
    let mut out = String::new();
    captures.expand(template, &mut out);
    out
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn label_replace(ctx: Ctx<'_>, args: &[Box<Expr>], at: i64) -> Result<Value, EvalError> {
    let samples = vector_arg(ctx, &args[0], at, "label_replace")?;
    let dst = string_arg(&args[1], "label_replace")?;
    let replacement = string_arg(&args[2], "label_replace")?;
    let src = string_arg(&args[3], "label_replace")?;
    let pattern = string_arg(&args[4], "label_replace")?;
    let re = regex::Regex::new(&format!("^(?s:{pattern})$")).map_err(|_| {
        EvalError::bad(format!(
            "invalid regular expression in label_replace(): {pattern}"
        ))
    })?;
    if !is_label_name(dst) {
        return Err(EvalError::bad(format!(
            "invalid destination label name in label_replace(): {dst}"
        )));
    }
    Ok(Value::Vector(
        samples
            .into_iter()
            .map(|mut s| {
                let value = s.labels.get(src).cloned().unwrap_or_default();
                if let Some(captures) = re.captures(&value) {
                    let new = expand(replacement, &captures);
                    if new.is_empty() {
                        s.labels.remove(dst);
                    } else {
                        s.labels.insert(dst.to_owned(), new);
                    }
                }
                s
            })
            .collect(),
    ))
}

fn label_join(ctx: Ctx<'_>, args: &[Box<Expr>], at: i64) -> Result<Value, EvalError> {
    let samples = vector_arg(ctx, &args[0], at, "label_join")?;
    let dst = string_arg(&args[1], "label_join")?;
    let separator = string_arg(&args[2], "label_join")?;
    let sources: Vec<&str> = args[3..]
        .iter()
        .map(|a| string_arg(a, "label_join"))
        .collect::<Result<_, _>>()?;
    if !is_label_name(dst) {
        return Err(EvalError::bad(format!(
            "invalid destination label name in label_join(): {dst}"
        )));
    }
    Ok(Value::Vector(
        samples
            .into_iter()
            .map(|mut s| {
                let joined: Vec<String> = sources
                    .iter()
                    .map(|src| s.labels.get(*src).cloned().unwrap_or_default())
                    .collect();
                let joined = joined.join(separator);
                if joined.is_empty() {
                    s.labels.remove(dst);
                } else {
                    s.labels.insert(dst.to_owned(), joined);
                }
                s
            })
            .collect(),
    ))
}

/// `absent` and `absent_over_time`: one sample of value 1 when `arg` has
/// none, labelled by the selector's equality matchers (a name given twice
/// is left out).
fn absent(present: bool, arg: &Expr) -> Value {
    if present {
        return Value::Vector(Vec::new());
    }
    let matchers = match arg {
        Expr::VectorSelector(vs) => Some(&vs.matchers.matchers),
        Expr::MatrixSelector(ms) => Some(&ms.vs.matchers.matchers),
        _ => None,
    };
    let mut labels = LabelSet::new();
    let mut twice = Vec::new();
    for (name, value) in matchers.into_iter().flatten().filter_map(equality) {
        if labels.insert(name.to_owned(), value.to_owned()).is_some() {
            twice.push(name.to_owned());
        }
    }
    for name in twice {
        labels.remove(&name);
    }
    Value::Vector(vec![Sample { labels, value: 1.0 }])
}

fn histogram_quantile(q: f64, buckets: Vec<Sample>) -> Value {
    let mut groups: BTreeMap<LabelSet, Vec<(f64, f64)>> = BTreeMap::new();
    for s in buckets {
        let mut labels = drop_name(s.labels);
        let Some(le) = labels.remove("le") else {
            continue;
        };
        let bound = match le.as_str() {
            "+Inf" | "Inf" | "+inf" | "inf" => f64::INFINITY,
            other => other.parse().unwrap_or(f64::NAN),
        };
        groups.entry(labels).or_default().push((bound, s.value));
    }
    Value::Vector(
        groups
            .into_iter()
            .map(|(labels, b)| Sample {
                labels,
                value: bucket_quantile(q, b),
            })
            .collect(),
    )
}

/// Prometheus's bucket quantile: linear interpolation inside the bucket.
fn bucket_quantile(q: f64, mut buckets: Vec<(f64, f64)>) -> f64 {
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

/// A function of one instant vector that maps values one by one.
fn math(name: &str) -> Option<fn(f64) -> f64> {
    Some(match name {
        "abs" => f64::abs,
        "ceil" => f64::ceil,
        "floor" => f64::floor,
        "sqrt" => f64::sqrt,
        "exp" => f64::exp,
        "ln" => f64::ln,
        "log2" => f64::log2,
        "log10" => f64::log10,
        "sgn" => |v: f64| {
            if v > 0.0 {
                1.0
            } else if v < 0.0 {
                -1.0
            } else {
                v
            }
        },
        "sin" => f64::sin,
        "cos" => f64::cos,
        "tan" => f64::tan,
        "asin" => f64::asin,
        "acos" => f64::acos,
        "atan" => f64::atan,
        "sinh" => f64::sinh,
        "cosh" => f64::cosh,
        "tanh" => f64::tanh,
        "asinh" => f64::asinh,
        "acosh" => f64::acosh,
        "atanh" => f64::atanh,
        "deg" => f64::to_degrees,
        "rad" => f64::to_radians,
        _ => return None,
    })
}

pub(super) fn call(ctx: Ctx<'_>, c: &parser::Call, at: i64) -> Result<Value, EvalError> {
    let name = c.func.name;
    let args = &c.args.args;
    let arg = |i: usize| -> Result<&Expr, EvalError> {
        args.get(i)
            .map(AsRef::as_ref)
            .ok_or_else(|| EvalError::bad(format!("missing argument {} of {name}()", i + 1)))
    };
    if let Some(f) = math(name) {
        return Ok(map_values(vector_arg(ctx, arg(0)?, at, name)?, f));
    }
    match name {
        "time" => Ok(Value::Scalar(at as f64 / 1000.0)),
        "pi" => Ok(Value::Scalar(std::f64::consts::PI)),
        "vector" => Ok(Value::Vector(vec![Sample {
            labels: LabelSet::new(),
            value: scalar_arg(ctx, arg(0)?, at, name)?,
        }])),
        "scalar" => {
            let v = vector_arg(ctx, arg(0)?, at, name)?;
            Ok(Value::Scalar(if v.len() == 1 {
                v[0].value
            } else {
                f64::NAN
            }))
        }
        "rate" | "increase" | "delta" => over_range(ctx, arg(0)?, at, false, |p, end, window| {
            extrapolated(p, end, window, name != "delta", name == "rate")
        }),
        "irate" | "idelta" => over_range(ctx, arg(0)?, at, false, |p, _, _| {
            let [.., a, b] = p else { return None };
            let diff = if name == "irate" && b.1 < a.1 {
                b.1
            } else {
                b.1 - a.1
            };
            if name == "idelta" {
                return Some(diff);
            }
            let seconds = (b.0 - a.0) as f64 / 1000.0;
            (seconds > 0.0).then(|| diff / seconds)
        }),
        "changes" | "resets" => over_range(ctx, arg(0)?, at, false, |p, _, _| {
            Some(
                p.windows(2)
                    .filter(|w| {
                        if name == "changes" {
                            w[0].1 != w[1].1 && !(w[0].1.is_nan() && w[1].1.is_nan())
                        } else {
                            w[1].1 < w[0].1
                        }
                    })
                    .count() as f64,
            )
        }),
        "deriv" => over_range(ctx, arg(0)?, at, false, |p, _, _| {
            (p.len() >= 2).then(|| regression(p, p[0].0).0)
        }),
        "predict_linear" => {
            let ahead = scalar_arg(ctx, arg(1)?, at, name)?;
            over_range(ctx, arg(0)?, at, false, |p, end, _| {
                (p.len() >= 2).then(|| {
                    let (slope, intercept) = regression(p, end);
                    slope * ahead + intercept
                })
            })
        }
        "avg_over_time" => over_range(ctx, arg(0)?, at, false, |p, _, _| {
            Some(aggregate::average(&values(p)))
        }),
        "sum_over_time" => over_range(ctx, arg(0)?, at, false, |p, _, _| {
            Some(p.iter().map(|x| x.1).sum())
        }),
        "min_over_time" | "max_over_time" => over_range(ctx, arg(0)?, at, false, |p, _, _| {
            Some(aggregate::extreme(&values(p), name == "max_over_time"))
        }),
        "count_over_time" => over_range(ctx, arg(0)?, at, false, |p, _, _| Some(p.len() as f64)),
        "present_over_time" => over_range(ctx, arg(0)?, at, false, |_, _, _| Some(1.0)),
        "last_over_time" => over_range(ctx, arg(0)?, at, true, |p, _, _| p.last().map(|x| x.1)),
        "stddev_over_time" | "stdvar_over_time" => {
            over_range(ctx, arg(0)?, at, false, |p, _, _| {
                let variance = aggregate::mean_variance(&values(p)).1;
                Some(if name == "stddev_over_time" {
                    variance.sqrt()
                } else {
                    variance
                })
            })
        }
        "quantile_over_time" => {
            let q = scalar_arg(ctx, arg(0)?, at, name)?;
            over_range(ctx, arg(1)?, at, false, |p, _, _| {
                Some(aggregate::quantile(q, &values(p)))
            })
        }
        "absent_over_time" => {
            let present = !range_arg(ctx, arg(0)?, at)?.series.is_empty();
            Ok(absent(present, arg(0)?))
        }
        "absent" => {
            let present = !vector_arg(ctx, arg(0)?, at, name)?.is_empty();
            Ok(absent(present, arg(0)?))
        }
        "timestamp" => match arg(0)? {
            Expr::VectorSelector(vs) => Ok(Value::Vector(
                instant_samples(ctx, vs, at)?
                    .into_iter()
                    .map(|(labels, t, _)| Sample {
                        labels: drop_name(labels),
                        value: t as f64 / 1000.0,
                    })
                    .collect(),
            )),
            other => {
                let v = vector_arg(ctx, other, at, name)?;
                Ok(map_values(v, |_| at as f64 / 1000.0))
            }
        },
        "round" => {
            let to = match args.get(1) {
                Some(a) => scalar_arg(ctx, a, at, name)?,
                None => 1.0,
            };
            let inverse = 1.0 / to;
            // Halves round up, as Prometheus rounds them.
            Ok(map_values(vector_arg(ctx, arg(0)?, at, name)?, |v| {
                (v * inverse + 0.5).floor() / inverse
            }))
        }
        "clamp" | "clamp_min" | "clamp_max" => {
            let v = vector_arg(ctx, arg(0)?, at, name)?;
            let (low, high) = match name {
                "clamp" => (
                    scalar_arg(ctx, arg(1)?, at, name)?,
                    scalar_arg(ctx, arg(2)?, at, name)?,
                ),
                "clamp_min" => (scalar_arg(ctx, arg(1)?, at, name)?, f64::INFINITY),
                _ => (f64::NEG_INFINITY, scalar_arg(ctx, arg(1)?, at, name)?),
            };
            if name == "clamp" && low > high {
                return Ok(Value::Vector(Vec::new()));
            }
            // Go's math.Max and math.Min: a NaN on either side wins.
            let go_max = |a: f64, b: f64| {
                if a.is_nan() || b.is_nan() {
                    f64::NAN
                } else {
                    a.max(b)
                }
            };
            let go_min = |a: f64, b: f64| {
                if a.is_nan() || b.is_nan() {
                    f64::NAN
                } else {
                    a.min(b)
                }
            };
            Ok(map_values(v, |x| go_max(low, go_min(high, x))))
        }
        "sort" | "sort_desc" => {
            let mut v = vector_arg(ctx, arg(0)?, at, name)?;
            v.sort_by(|a, b| {
                if name == "sort" {
                    a.value.total_cmp(&b.value)
                } else {
                    b.value.total_cmp(&a.value)
                }
            });
            Ok(Value::Vector(v))
        }
        "label_replace" => label_replace(ctx, args, at),
        "label_join" => label_join(ctx, args, at),
        "histogram_quantile" => {
            let q = scalar_arg(ctx, arg(0)?, at, name)?;
            Ok(histogram_quantile(q, vector_arg(ctx, arg(1)?, at, name)?))
        }
        "hour" | "minute" | "month" | "year" | "day_of_month" | "day_of_week" | "day_of_year"
        | "days_in_month" => {
            let samples = match args.first() {
                Some(a) => vector_arg(ctx, a, at, name)?,
                None => vec![Sample {
                    labels: LabelSet::new(),
                    value: at as f64 / 1000.0,
                }],
            };
            Ok(map_values(samples, |v| {
                if !v.is_finite() {
                    return f64::NAN;
                }
                let (year, month, day, hour, minute, weekday, day_of_year, in_month) = civil(v);
                (match name {
                    "hour" => hour,
                    "minute" => minute,
                    "month" => month,
                    "year" => year,
                    "day_of_month" => day,
                    "day_of_week" => weekday,
                    "day_of_year" => day_of_year,
                    _ => in_month,
                }) as f64
            }))
        }
        other => Err(unsupported(format!("function {other}()"))),
    }
}

#[cfg(test)]
mod tests {
    use super::civil;

    #[test]
    fn calendar_fields_of_known_instants() {
        // 2024-02-29T13:45:00Z, a Thursday, the 60th day of a leap year.
        assert_eq!(civil(1_709_214_300.0), (2024, 2, 29, 13, 45, 4, 60, 29));
        // 1970-01-01T00:00:00Z, a Thursday.
        assert_eq!(civil(0.0), (1970, 1, 1, 0, 0, 4, 1, 31));
        // 2023-12-31T23:59:59Z, a Sunday, day 365.
        assert_eq!(civil(1_704_067_199.0), (2023, 12, 31, 23, 59, 0, 365, 31));
    }
}
