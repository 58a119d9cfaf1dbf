//! `sluice.v1` messages to and from the planner's types.
//!
//! Proto to spec never fails: the spec keeps the user's words and
//! [`crate::validate`] judges them. Spec to proto fails only for values the
//! proto cannot carry (a negative traffic, a malformed duration), each
//! reported with its field path.

use std::time::Duration;

use sluice_proto::v1 as pb;

use crate::{
    duration::{format_duration, parse_duration},
    plan::{Batch, Plan, Progress},
    spec::{
        BackgroundAnalysis, BlueGreenStrategy, CanaryStrategy, MatchType, PathMatch, Pause,
        Percent, Quantity, RequestMatch, Step, Strategy, Style, ValueMatch,
    },
    validate::{FieldProblem, PauseKind, Warning},
};

/// The largest protobuf Duration, in seconds (10,000 years).
pub const MAX_DURATION_SECONDS: i64 = 315_576_000_000;

/// Writes a protobuf duration as text, keeping a negative sign so that
/// validation can name it.
fn duration_text(d: &prost_types::Duration) -> String {
    // Past the protobuf range (refused as such): written as sent rather
    // than wrapped into another number.
    if d.seconds.abs() > MAX_DURATION_SECONDS {
        return format!("{}s", d.seconds);
    }
    let nanos = i128::from(d.seconds) * 1_000_000_000 + i128::from(d.nanos);
    let magnitude = Duration::from_nanos(u64::try_from(nanos.unsigned_abs()).unwrap_or(u64::MAX));
    // A negative one below a millisecond would read "-0s" (for -5ns): it
    // is refused anyway, so it is shown as sent.
    let text = if nanos < 0 && magnitude < Duration::from_millis(1) {
        format!("{}ns", magnitude.as_nanos())
    } else {
        format_duration(magnitude)
    };
    if nanos < 0 { format!("-{text}") } else { text }
}

/// A std duration as a protobuf duration.
pub fn proto_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos() as i32,
    }
}

fn text(q: &str) -> Option<Quantity> {
    (!q.trim().is_empty()).then(|| Quantity::Text(q.to_owned()))
}

fn match_type(t: i32) -> Option<MatchType> {
    match pb::MatchType::try_from(t).unwrap_or_default() {
        pb::MatchType::Unspecified => None,
        pb::MatchType::Exact => Some(MatchType::Exact),
        pb::MatchType::Prefix => Some(MatchType::Prefix),
        pb::MatchType::RegularExpression => Some(MatchType::RegularExpression),
    }
}

fn proto_match_type(t: Option<MatchType>) -> i32 {
    (match t {
        None => pb::MatchType::Unspecified,
        Some(MatchType::Exact) => pb::MatchType::Exact,
        Some(MatchType::Prefix) => pb::MatchType::Prefix,
        Some(MatchType::RegularExpression) => pb::MatchType::RegularExpression,
    }) as i32
}

fn value_match(m: &pb::ValueMatch) -> ValueMatch {
    ValueMatch {
        name: m.name.clone(),
        match_type: match_type(m.r#type),
        value: m.value.clone(),
    }
}

fn proto_value_match(m: &ValueMatch) -> pb::ValueMatch {
    pb::ValueMatch {
        name: m.name.clone(),
        r#type: proto_match_type(m.match_type),
        value: m.value.clone(),
    }
}

fn request_match(m: &pb::RequestMatch) -> RequestMatch {
    RequestMatch {
        headers: m.headers.iter().map(value_match).collect(),
        cookies: m.cookies.iter().map(value_match).collect(),
        query_params: m.query_params.iter().map(value_match).collect(),
        path: m.path.as_ref().map(|p| PathMatch {
            match_type: match_type(p.r#type),
            value: p.value.clone(),
        }),
    }
}

/// A planner request match as a proto match.
pub fn proto_request_match(m: &RequestMatch) -> pb::RequestMatch {
    pb::RequestMatch {
        headers: m.headers.iter().map(proto_value_match).collect(),
        cookies: m.cookies.iter().map(proto_value_match).collect(),
        query_params: m.query_params.iter().map(proto_value_match).collect(),
        path: m.path.as_ref().map(|p| pb::PathMatch {
            r#type: proto_match_type(p.match_type),
            value: p.value.clone(),
        }),
    }
}

/// The proto strategy in the planner's words.
pub fn strategy_from_proto(s: &pb::Strategy) -> Strategy {
    let style = match pb::ReleaseStyle::try_from(s.style).unwrap_or_default() {
        pb::ReleaseStyle::Unspecified => None,
        pb::ReleaseStyle::Partition => Some(Style::Partition),
        pb::ReleaseStyle::Canary => Some(Style::Canary),
        pb::ReleaseStyle::BlueGreen => Some(Style::BlueGreen),
    };
    let canary = s.canary.as_ref().map(|c| CanaryStrategy {
        steps: c
            .steps
            .iter()
            .map(|step| Step {
                replicas: text(&step.replicas),
                traffic: step.traffic.map(Percent::from),
                matches: step.matches.iter().map(request_match).collect(),
                pause: step.pause.as_ref().map(|p| Pause {
                    duration: p.duration.as_ref().map(duration_text),
                }),
                analyses: step.analyses.clone(),
            })
            .collect(),
        failure_threshold: text(&c.failure_threshold),
        progress_deadline: c.progress_deadline.as_ref().map(duration_text),
        background_analysis: c.background_analysis.as_ref().map(|b| BackgroundAnalysis {
            analyses: b.analyses.clone(),
            starting_step: (b.starting_step > 0).then_some(i64::from(b.starting_step)),
        }),
        restart_limit: c.restart_limit,
    });
    Strategy {
        style,
        canary: canary.unwrap_or_default(),
        blue_green: s.blue_green.as_ref().map(|b| BlueGreenStrategy {
            rollback_window: b.rollback_window.as_ref().map(duration_text),
        }),
    }
}

struct Converter {
    problems: Vec<FieldProblem>,
}

impl Converter {
    fn duration(&mut self, field: String, text: &Option<String>) -> Option<prost_types::Duration> {
        let text = text.as_ref()?;
        match parse_duration(text) {
            Ok(d) => Some(proto_duration(d)),
            Err(why) => {
                self.problems.push(FieldProblem::new(field, why));
                None
            }
        }
    }

    fn percent(&mut self, field: String, percent: Percent) -> u32 {
        u32::try_from(percent.value).unwrap_or_else(|_| {
            self.problems.push(FieldProblem::new(
                field,
                format!("must be between 0 and 100, got {percent}"),
            ));
            0
        })
    }
}

/// The planner's strategy as a proto message.
///
/// # Errors
/// Values the proto cannot carry, each with its field path.
pub fn strategy_to_proto(s: &Strategy) -> Result<pb::Strategy, Vec<FieldProblem>> {
    let mut c = Converter {
        problems: Vec::new(),
    };
    let base = "strategy.canary";
    let canary = &s.canary;
    let steps = canary
        .steps
        .iter()
        .enumerate()
        .map(|(i, step)| pb::CanaryStep {
            replicas: step
                .replicas
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            traffic: step
                .traffic
                .map(|t| c.percent(format!("{base}.steps[{i}].traffic"), t)),
            matches: step.matches.iter().map(proto_request_match).collect(),
            pause: step.pause.as_ref().map(|p| pb::Pause {
                duration: c.duration(format!("{base}.steps[{i}].pause.duration"), &p.duration),
            }),
            analyses: step.analyses.clone(),
        })
        .collect();
    let style = match s.style {
        None => pb::ReleaseStyle::Unspecified,
        Some(Style::Partition) => pb::ReleaseStyle::Partition,
        Some(Style::Canary) => pb::ReleaseStyle::Canary,
        Some(Style::BlueGreen) => pb::ReleaseStyle::BlueGreen,
    };
    let background_analysis = canary
        .background_analysis
        .as_ref()
        .map(|b| pb::BackgroundAnalysis {
            analyses: b.analyses.clone(),
            starting_step: b.starting_step.map_or(0, |s| {
                u32::try_from(s).unwrap_or_else(|_| {
                    c.problems.push(FieldProblem::new(
                        format!("{base}.backgroundAnalysis.startingStep"),
                        format!("must be 1 or more, got {s}"),
                    ));
                    0
                })
            }),
        });
    let proto = pb::Strategy {
        style: style as i32,
        canary: Some(pb::CanaryStrategy {
            steps,
            failure_threshold: canary
                .failure_threshold
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            progress_deadline: c.duration(
                format!("{base}.progressDeadline"),
                &canary.progress_deadline,
            ),
            background_analysis,
            restart_limit: canary.restart_limit,
        }),
        blue_green: s.blue_green.as_ref().map(|b| pb::BlueGreenStrategy {
            rollback_window: c.duration(
                "strategy.blueGreen.rollbackWindow".into(),
                &b.rollback_window,
            ),
        }),
    };
    if c.problems.is_empty() {
        Ok(proto)
    } else {
        Err(c.problems)
    }
}

/// A proto progress as the planner's.
pub fn progress_from_proto(p: &pb::Progress) -> Progress {
    Progress {
        canary_replicas: p.canary_replicas,
        traffic: p.traffic,
        completed_batches: p.completed_batches,
    }
}

fn proto_warning(w: &Warning) -> pb::PlanWarning {
    pb::PlanWarning {
        field: w.field.clone(),
        message: w.message.clone(),
    }
}

/// Warnings as proto messages.
pub fn proto_warnings(warnings: &[Warning]) -> Vec<pb::PlanWarning> {
    warnings.iter().map(proto_warning).collect()
}

fn proto_batch(b: &Batch) -> pb::Batch {
    pb::Batch {
        index: b.index as u32,
        canary_replicas: b.canary_replicas,
        stable_replicas: b.stable_replicas,
        traffic: b.traffic,
        matches: b.matches.iter().map(proto_request_match).collect(),
        max_unready: b.max_unready,
        expected_total_pods: b.expected_total_pods,
        gate: Some(pb::Gate {
            pause: b.gate.pause.map(|p| pb::Pause {
                duration: match p {
                    PauseKind::UntilPromoted => None,
                    PauseKind::For(d) => Some(proto_duration(d)),
                },
            }),
            analyses: b.gate.analyses.to_vec(),
            background_analyses: b.gate.background_analyses.to_vec(),
            progress_deadline: Some(proto_duration(b.gate.progress_deadline)),
        }),
        step: b.step.map(|s| s as u32),
    }
}

/// A plan as a proto message.
pub fn plan_to_proto(plan: &Plan) -> pb::Plan {
    let style = match plan.style {
        Style::Partition => pb::ReleaseStyle::Partition,
        Style::Canary => pb::ReleaseStyle::Canary,
        Style::BlueGreen => pb::ReleaseStyle::BlueGreen,
    };
    pb::Plan {
        replicas: plan.replicas,
        style: style as i32,
        batches: plan.batches.iter().map(proto_batch).collect(),
        warnings: proto_warnings(&plan.warnings),
        current_batch: plan.current_batch.map(|c| c as u32),
        rollback_window: plan.rollback_window.map(proto_duration),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_negative_duration_is_written_as_sent() {
        let d = |seconds, nanos| duration_text(&prost_types::Duration { seconds, nanos });
        assert_eq!(d(0, -5), "-5ns");
        assert_eq!(d(-1, 0), "-1s");
        assert_eq!(d(0, -2_000_000), "-2ms");
        assert_eq!(d(90, 0), "1m30s");
        assert_eq!(d(0, 5), "0s");
    }

    fn steps_with_traffic(traffic: &[Percent]) -> Strategy {
        let steps = traffic
            .iter()
            .map(|t| Step {
                replicas: Some(Quantity::Number(1)),
                traffic: Some(*t),
                ..Default::default()
            })
            .collect();
        Strategy {
            canary: CanaryStrategy {
                steps,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn traffic_written_as_a_percent_reaches_the_proto_as_its_number() {
        let strategy = steps_with_traffic(&[Percent::number(10), Percent::parse("20%").unwrap()]);
        let proto = strategy_to_proto(&strategy).unwrap();
        let traffic: Vec<Option<u32>> = proto
            .canary
            .as_ref()
            .unwrap()
            .steps
            .iter()
            .map(|s| s.traffic)
            .collect();
        assert_eq!(traffic, [Some(10), Some(20)]);
        let back = strategy_from_proto(&proto);
        assert_eq!(back.canary.steps[1].traffic, Some(Percent::number(20)));
    }

    #[test]
    fn negative_traffic_cannot_reach_the_proto_and_is_named_as_written() {
        let strategy = steps_with_traffic(&[Percent::parse("-5%").unwrap()]);
        assert_eq!(
            strategy_to_proto(&strategy).unwrap_err(),
            [FieldProblem::new(
                "strategy.canary.steps[0].traffic",
                "must be between 0 and 100, got -5%"
            )]
        );
    }
}
