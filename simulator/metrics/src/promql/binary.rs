//! Operators: arithmetic, comparison (filtering or `bool`) and set
//! operators, between scalars and instant vectors, with Prometheus's
//! vector matching (`on` / `ignoring`, `group_left` / `group_right`) and
//! its label rules for results.

use std::collections::{BTreeMap, BTreeSet};

use promql_parser::parser::{self, LabelModifier, VectorMatchCardinality};

use super::{Ctx, EvalError, LabelSet, Sample, Value, drop_name, eval, unsupported};

fn is_comparison(op: &str) -> bool {
    matches!(op, "==" | "!=" | ">" | "<" | ">=" | "<=")
}

/// Arithmetic drops the metric name; a filtering comparison keeps it.
fn drops_name(op: &str) -> bool {
    matches!(op, "+" | "-" | "*" | "/" | "%" | "^" | "atan2")
}

/// `a op b`: the value, and whether a comparison holds.
fn apply(op: &str, a: f64, b: f64) -> Result<(f64, bool), EvalError> {
    Ok(match op {
        "+" => (a + b, true),
        "-" => (a - b, true),
        "*" => (a * b, true),
        "/" => (a / b, true),
        "%" => (a % b, true),
        "^" => (a.powf(b), true),
        "atan2" => (a.atan2(b), true),
        "==" => (a, a == b),
        "!=" => (a, a != b),
        ">" => (a, a > b),
        "<" => (a, a < b),
        ">=" => (a, a >= b),
        "<=" => (a, a <= b),
        other => return Err(unsupported(format!("operator {other}"))),
    })
}

/// The labels two vectors are matched on.
fn signature(labels: &LabelSet, matching: Option<&LabelModifier>) -> LabelSet {
    match matching {
        Some(LabelModifier::Include(on)) => labels
            .iter()
            .filter(|(k, _)| on.labels.iter().any(|l| l == *k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        Some(LabelModifier::Exclude(ignoring)) => labels
            .iter()
            .filter(|(k, _)| *k != "__name__" && !ignoring.labels.iter().any(|l| l == *k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        None => drop_name(labels.clone()),
    }
}

fn show(labels: &LabelSet) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(", "))
}

pub(super) fn binary(ctx: Ctx<'_>, b: &parser::BinaryExpr, at: i64) -> Result<Value, EvalError> {
    let op = b.op.to_string();
    let modifier = b.modifier.as_ref();
    if modifier.is_some_and(|m| m.fill_values.lhs.is_some() || m.fill_values.rhs.is_some()) {
        return Err(unsupported("fill modifiers"));
    }
    let return_bool = modifier.is_some_and(|m| m.return_bool);
    let lhs = eval(ctx, &b.lhs, at)?;
    let rhs = eval(ctx, &b.rhs, at)?;
    if matches!(op.as_str(), "and" | "or" | "unless") {
        let (Value::Vector(l), Value::Vector(r)) = (lhs, rhs) else {
            return Err(EvalError::bad(format!(
                "set operator \"{op}\" not allowed in binary scalar expression"
            )));
        };
        return Ok(Value::Vector(set(
            &op,
            l,
            r,
            modifier.and_then(|m| m.matching.as_ref()),
        )));
    }
    let comparison = is_comparison(&op);
    match (lhs, rhs) {
        (Value::Scalar(a), Value::Scalar(c)) => {
            let (v, keep) = apply(&op, a, c)?;
            Ok(Value::Scalar(if comparison {
                if keep { 1.0 } else { 0.0 }
            } else {
                v
            }))
        }
        (Value::Vector(v), Value::Scalar(c)) => with_scalar(&op, v, c, false, return_bool),
        (Value::Scalar(c), Value::Vector(v)) => with_scalar(&op, v, c, true, return_bool),
        (Value::Vector(l), Value::Vector(r)) => {
            let card = modifier.map_or(&VectorMatchCardinality::OneToOne, |m| &m.card);
            vectors(
                &op,
                l,
                r,
                card,
                modifier.and_then(|m| m.matching.as_ref()),
                return_bool,
            )
        }
        _ => Err(EvalError::bad(
            "binary operations need instant vectors or scalars",
        )),
    }
}

/// `and`, `or`, `unless`: the left side's samples whose signature the
/// right side has (or lacks), and for `or` the right side's others.
fn set(op: &str, l: Vec<Sample>, r: Vec<Sample>, matching: Option<&LabelModifier>) -> Vec<Sample> {
    let right: BTreeSet<LabelSet> = r.iter().map(|s| signature(&s.labels, matching)).collect();
    match op {
        "and" => l
            .into_iter()
            .filter(|s| right.contains(&signature(&s.labels, matching)))
            .collect(),
        "unless" => l
            .into_iter()
            .filter(|s| !right.contains(&signature(&s.labels, matching)))
            .collect(),
        _ => {
            let left: BTreeSet<LabelSet> =
                l.iter().map(|s| signature(&s.labels, matching)).collect();
            let mut out = l;
            out.extend(
                r.into_iter()
                    .filter(|s| !left.contains(&signature(&s.labels, matching))),
            );
            out
        }
    }
}

/// A vector against a scalar (`swapped`: the scalar is on the left). A
/// filtering comparison keeps the vector's value and labels.
fn with_scalar(
    op: &str,
    samples: Vec<Sample>,
    c: f64,
    swapped: bool,
    return_bool: bool,
) -> Result<Value, EvalError> {
    let mut out = Vec::new();
    for s in samples {
        let (l, r) = if swapped { (c, s.value) } else { (s.value, c) };
        let (mut value, keep) = apply(op, l, r)?;
        if is_comparison(op) {
            value = s.value;
            if return_bool {
                value = if keep { 1.0 } else { 0.0 };
            } else if !keep {
                continue;
            }
        }
        let labels = if drops_name(op) || return_bool {
            drop_name(s.labels)
        } else {
            s.labels
        };
        out.push(Sample { labels, value });
    }
    Ok(Value::Vector(out))
}

/// Two vectors, matched as Prometheus matches them.
fn vectors(
    op: &str,
    l: Vec<Sample>,
    r: Vec<Sample>,
    card: &VectorMatchCardinality,
    matching: Option<&LabelModifier>,
    return_bool: bool,
) -> Result<Value, EvalError> {
    // The "one" side is looked up by signature; group_right swaps sides.
    let (many, one, one_to_many) = match card {
        VectorMatchCardinality::OneToMany(_) => (r, l, true),
        _ => (l, r, false),
    };
    let include: Vec<String> = card
        .labels()
        .map(|ls| ls.labels.clone())
        .unwrap_or_default();
    let mut by_signature: BTreeMap<LabelSet, Sample> = BTreeMap::new();
    for s in one {
        let sig = signature(&s.labels, matching);
        if let Some(first) = by_signature.get(&sig) {
            let side = if one_to_many { "left" } else { "right" };
            return Err(EvalError::execution(format!(
                "found duplicate series for the match group {} on the {side} hand-side of the \
                 operation: [{}, {}];many-to-many matching not allowed: matching labels must be \
                 unique on one side",
                show(&sig),
                show(&s.labels),
                show(&first.labels)
            )));
        }
        by_signature.insert(sig, s);
    }
    let one_to_one = matches!(card, VectorMatchCardinality::OneToOne);
    let mut matched: BTreeMap<LabelSet, BTreeSet<LabelSet>> = BTreeMap::new();
    let mut out = Vec::new();
    for s in many {
        let sig = signature(&s.labels, matching);
        let Some(other) = by_signature.get(&sig) else {
            continue;
        };
        let (vl, vr) = if one_to_many {
            (other.value, s.value)
        } else {
            (s.value, other.value)
        };
        let (mut value, keep) = apply(op, vl, vr)?;
        if is_comparison(op) {
            if return_bool {
                value = if keep { 1.0 } else { 0.0 };
            } else if !keep {
                continue;
            }
        }
        let mut labels = s.labels.clone();
        if drops_name(op) || return_bool {
            labels.remove("__name__");
        }
        if one_to_one {
            match matching {
                Some(LabelModifier::Include(on)) => {
                    labels.retain(|k, _| on.labels.iter().any(|l| l == k));
                }
                Some(LabelModifier::Exclude(ignoring)) => {
                    labels.retain(|k, _| !ignoring.labels.iter().any(|l| l == k));
                }
                None => {}
            }
        }
        for name in &include {
            match other.labels.get(name) {
                Some(v) if !v.is_empty() => {
                    labels.insert(name.clone(), v.clone());
                }
                _ => {
                    labels.remove(name);
                }
            }
        }
        let seen = matched.entry(sig).or_default();
        if one_to_one {
            if !seen.is_empty() {
                return Err(EvalError::execution(
                    "multiple matches for labels: many-to-one matching must be explicit \
                     (group_left/group_right)",
                ));
            }
        } else if seen.contains(&labels) {
            return Err(EvalError::execution(
                "multiple matches for labels: grouping labels must ensure unique matches",
            ));
        }
        seen.insert(labels.clone());
        out.push(Sample { labels, value });
    }
    Ok(Value::Vector(out))
}
