//! The Rollout's YAML-shaped models to the planner's and gate's messages.

use sluice_proto::v1 as pb;
use sluice_runtime::config::parse_duration;

use crate::crd::{self, Analysis, Direction, MetricCondition};

fn duration(text: &Option<String>) -> Option<prost_types::Duration> {
    let d = parse_duration(text.as_deref()?).ok()?;
    Some(prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    })
}

fn condition(c: &Option<MetricCondition>) -> Option<pb::Condition> {
    let c = c.as_ref()?;
    let kind = if let Some(t) = &c.threshold {
        pb::condition::Kind::Threshold(pb::Threshold {
            min: t.min,
            max: t.max,
        })
    } else {
        let cmp = c.comparison.as_ref()?;
        pb::condition::Kind::Comparison(pb::Comparison {
            baseline_query: cmp.baseline_query.clone().unwrap_or_default(),
            max_ratio: cmp.max_ratio,
            slack: cmp.slack,
            direction: match cmp.direction {
                Direction::HigherIsWorse => pb::ComparisonDirection::HigherIsWorse,
                Direction::LowerIsWorse => pb::ComparisonDirection::LowerIsWorse,
            } as i32,
        })
    };
    Some(pb::Condition { kind: Some(kind) })
}

fn metric(prefix: &str, m: &crd::Metric) -> pb::Metric {
    pb::Metric {
        name: format!("{prefix}/{}", m.name),
        query: m.query.clone().unwrap_or_default(),
        template: m.template.clone().unwrap_or_default(),
        success_condition: condition(&m.success_condition),
        failure_condition: condition(&m.failure_condition),
        interval: duration(&m.interval),
        count: m.count.unwrap_or(0),
        initial_delay: duration(&m.initial_delay),
        failure_limit: m.failure_limit.unwrap_or(0),
        inconclusive_limit: m.inconclusive_limit.unwrap_or(0),
        consecutive_error_limit: m.consecutive_error_limit.unwrap_or(0),
        consecutive_success_limit: m.consecutive_success_limit.unwrap_or(0),
        dry_run: m.dry_run,
    }
}

/// One gate analysis of every metric of the named analyses (metric names
/// prefixed with their analysis' name), or `None` when none is named.
pub(super) fn analysis(
    label: &str,
    names: &[String],
    defined: &[Analysis],
) -> Option<pb::Analysis> {
    let chosen: Vec<&Analysis> = defined.iter().filter(|a| names.contains(&a.name)).collect();
    if chosen.is_empty() {
        return None;
    }
    let mut args = std::collections::HashMap::new();
    for a in &chosen {
        args.extend(a.args.clone());
    }
    Some(pb::Analysis {
        name: label.to_owned(),
        metrics: chosen
            .iter()
            .flat_map(|a| a.metrics.iter().map(|m| metric(&a.name, m)))
            .collect(),
        args,
    })
}
