//! The Rollout resource to and from the `sluice.v1` messages.

use sluice_proto::v1 as pb;
use sluice_runtime::config::format_duration;

use crate::crd::{
    self, Analysis, Comparison, Direction, ErrorPolicy, ImageUpdate, Metric, MetricCondition,
    NamedRoute, NginxIngress, Phase, Rollout, RolloutSpec, StepState, Threshold, TrafficRouting,
    Verdict, VirtualServiceRef, WorkloadKind, WorkloadRef,
};

fn duration_text(d: &Option<prost_types::Duration>) -> Option<String> {
    d.as_ref().map(|d| {
        format_duration(std::time::Duration::new(
            d.seconds.max(0) as u64,
            d.nanos.max(0) as u32,
        ))
    })
}

fn condition(c: &Option<pb::Condition>) -> Option<MetricCondition> {
    match c.as_ref()?.kind.as_ref()? {
        pb::condition::Kind::Threshold(t) => Some(MetricCondition {
            threshold: Some(Threshold {
                min: t.min,
                max: t.max,
            }),
            comparison: None,
        }),
        pb::condition::Kind::Comparison(c) => Some(MetricCondition {
            threshold: None,
            comparison: Some(Comparison {
                baseline_query: (!c.baseline_query.is_empty()).then(|| c.baseline_query.clone()),
                max_ratio: c.max_ratio,
                slack: c.slack,
                direction: if c.direction == pb::ComparisonDirection::LowerIsWorse as i32 {
                    Direction::LowerIsWorse
                } else {
                    Direction::HigherIsWorse
                },
            }),
        }),
    }
}

fn non_zero(v: u32) -> Option<u32> {
    (v != 0).then_some(v)
}

fn text(v: &str) -> Option<String> {
    (!v.is_empty()).then(|| v.to_owned())
}

/// The proto spec as the resource's spec.
pub fn spec_from_proto(spec: &pb::RolloutSpec) -> RolloutSpec {
    let workload = spec.workload.clone().unwrap_or_default();
    let traffic = spec.traffic.as_ref().map(|t| TrafficRouting {
        stable_service: t.stable_service.clone(),
        canary_service: text(&t.canary_service),
        nginx: match &t.router {
            Some(pb::traffic_routing::Router::Nginx(n)) => Some(NginxIngress {
                ingress: n.ingress.clone(),
            }),
            _ => None,
        },
        http_route: match &t.router {
            Some(pb::traffic_routing::Router::HttpRoute(r)) => Some(NamedRoute {
                name: r.name.clone(),
            }),
            _ => None,
        },
        virtual_service: match &t.router {
            Some(pb::traffic_routing::Router::VirtualService(v)) => Some(VirtualServiceRef {
                name: v.name.clone(),
                routes: v.routes.clone(),
            }),
            _ => None,
        },
    });
    RolloutSpec {
        workload: WorkloadRef {
            kind: if workload.kind == pb::WorkloadKind::StatefulSet as i32 {
                WorkloadKind::StatefulSet
            } else {
                WorkloadKind::Deployment
            },
            name: workload.name,
        },
        template: spec.pod_template.as_ref().map(struct_to_json),
        images: spec
            .images
            .iter()
            .map(|i| ImageUpdate {
                container: i.container.clone(),
                image: i.image.clone(),
            })
            .collect(),
        strategy: sluice_planner::convert::strategy_from_proto(
            &spec.strategy.clone().unwrap_or_default(),
        ),
        traffic,
        analyses: spec
            .analyses
            .iter()
            .map(|a| Analysis {
                name: a.name.clone(),
                args: a.args.clone().into_iter().collect(),
                metrics: a
                    .metrics
                    .iter()
                    .map(|m| Metric {
                        name: m.name.clone(),
                        query: text(&m.query),
                        template: text(&m.template),
                        success_condition: condition(&m.success_condition),
                        failure_condition: condition(&m.failure_condition),
                        interval: duration_text(&m.interval),
                        count: non_zero(m.count),
                        initial_delay: duration_text(&m.initial_delay),
                        failure_limit: non_zero(m.failure_limit),
                        inconclusive_limit: non_zero(m.inconclusive_limit),
                        consecutive_error_limit: non_zero(m.consecutive_error_limit),
                        consecutive_success_limit: non_zero(m.consecutive_success_limit),
                        dry_run: m.dry_run,
                    })
                    .collect(),
            })
            .collect(),
        on_analysis_error: if spec.on_analysis_error == pb::ErrorPolicy::Rollback as i32 {
            ErrorPolicy::Rollback
        } else {
            ErrorPolicy::Pause
        },
        paused: false,
    }
}

fn struct_to_json(s: &prost_types::Struct) -> serde_json::Value {
    serde_json::Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), value_to_json(v)))
            .collect(),
    )
}

fn value_to_json(v: &prost_types::Value) -> serde_json::Value {
    use prost_types::value::Kind;
    match &v.kind {
        Some(Kind::NumberValue(n)) => serde_json::json!(n),
        Some(Kind::StringValue(s)) => serde_json::json!(s),
        Some(Kind::BoolValue(b)) => serde_json::json!(b),
        Some(Kind::StructValue(s)) => struct_to_json(s),
        Some(Kind::ListValue(l)) => {
            serde_json::Value::Array(l.values.iter().map(value_to_json).collect())
        }
        Some(Kind::NullValue(_)) | None => serde_json::Value::Null,
    }
}

fn phase(p: Phase) -> pb::RolloutPhase {
    match p {
        Phase::Pending => pb::RolloutPhase::Pending,
        Phase::Progressing => pb::RolloutPhase::Progressing,
        Phase::Paused => pb::RolloutPhase::Paused,
        Phase::RollingBack => pb::RolloutPhase::RollingBack,
        Phase::Succeeded => pb::RolloutPhase::Succeeded,
        Phase::RolledBack => pb::RolloutPhase::RolledBack,
        Phase::Failed => pb::RolloutPhase::Failed,
    }
}

/// The proto phase of a resource phase.
pub fn proto_phase(p: Phase) -> i32 {
    phase(p) as i32
}

fn step_state(s: StepState) -> i32 {
    (match s {
        StepState::Upgrading => pb::StepState::Upgrading,
        StepState::Routing => pb::StepState::Routing,
        StepState::Analyzing => pb::StepState::Analyzing,
        StepState::Paused => pb::StepState::Paused,
        StepState::Completed => pb::StepState::Completed,
    }) as i32
}

fn verdict(v: Option<Verdict>) -> i32 {
    (match v {
        None => pb::Verdict::Unspecified,
        Some(Verdict::Pass) => pb::Verdict::Pass,
        Some(Verdict::Fail) => pb::Verdict::Fail,
        Some(Verdict::Inconclusive) => pb::Verdict::Inconclusive,
        Some(Verdict::Error) => pb::Verdict::Error,
    }) as i32
}

fn timestamp(text: &Option<String>) -> Option<prost_types::Timestamp> {
    text.as_deref()?.parse().ok()
}

fn evidence(e: &crd::Evidence) -> pb::Measurement {
    let outcome = match e.outcome.as_str() {
        "SUCCESSFUL" => pb::Outcome::Successful,
        "FAILED" => pb::Outcome::Failed,
        "INCONCLUSIVE" => pb::Outcome::Inconclusive,
        "ERROR" => pb::Outcome::Error,
        _ => pb::Outcome::Unspecified,
    };
    pb::Measurement {
        metric: e.metric.clone(),
        outcome: outcome as i32,
        time: e.time.parse().ok(),
        evidence: Some(pb::Evidence {
            query: e.query.clone(),
            values: e
                .value
                .map(|v| pb::Sample {
                    labels: Default::default(),
                    value: v,
                })
                .into_iter()
                .collect(),
            decided_by: e.decided_by.clone(),
            message: e.message.clone(),
            ..Default::default()
        }),
        dry_run: false,
    }
}

/// The resource as the proto message (the spec's strategy and routing
/// included; the pod template is omitted from the summary).
pub fn rollout_to_proto(r: &Rollout) -> pb::Rollout {
    use kube::ResourceExt;
    let s = r.status.clone().unwrap_or_default();
    let spec = &r.spec;
    pb::Rollout {
        namespace: r.namespace().unwrap_or_default(),
        name: r.name_any(),
        uid: r.uid().unwrap_or_default(),
        generation: r.metadata.generation.unwrap_or(0),
        revision: r.resource_version().unwrap_or_default(),
        created: r
            .metadata
            .creation_timestamp
            .as_ref()
            .and_then(|t| t.0.to_string().parse().ok()),
        spec: Some(pb::RolloutSpec {
            workload: Some(pb::WorkloadRef {
                kind: match spec.workload.kind {
                    WorkloadKind::Deployment => pb::WorkloadKind::Deployment,
                    WorkloadKind::StatefulSet => pb::WorkloadKind::StatefulSet,
                } as i32,
                name: spec.workload.name.clone(),
            }),
            images: spec
                .images
                .iter()
                .map(|i| pb::ImageUpdate {
                    container: i.container.clone(),
                    image: i.image.clone(),
                })
                .collect(),
            strategy: sluice_planner::convert::strategy_to_proto(&spec.strategy).ok(),
            on_analysis_error: if spec.on_analysis_error == ErrorPolicy::Rollback {
                pb::ErrorPolicy::Rollback
            } else {
                pb::ErrorPolicy::Pause
            } as i32,
            ..Default::default()
        }),
        status: Some(pb::RolloutStatus {
            phase: proto_phase(s.phase),
            current_step: s.current_step,
            step_state: step_state(s.step_state),
            total_steps: s.total_steps,
            canary_revision: s.canary_revision.clone(),
            stable_revision: s.stable_revision.clone(),
            canary_replicas: s.canary_replicas,
            ready_canary_replicas: s.ready_canary_replicas,
            traffic: s.traffic,
            steps: s
                .steps
                .iter()
                .map(|st| pb::StepRecord {
                    index: st.index,
                    canary_replicas: st.canary_replicas,
                    traffic: st.traffic,
                    state: step_state(st.state),
                    started: timestamp(&st.started),
                    finished: timestamp(&st.finished),
                    verdict: verdict(st.verdict),
                    evidence: st.evidence.iter().map(evidence).collect(),
                })
                .collect(),
            message: s.message.clone(),
            conditions: s
                .conditions
                .iter()
                .map(|c| pb::RolloutCondition {
                    r#type: c.kind.clone(),
                    status: c.status.clone(),
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                    last_transition_time: c.last_transition_time.parse().ok(),
                })
                .collect(),
            observed_generation: s.observed_generation,
            pause_until: timestamp(&s.pause_until),
            elapsed: None,
            analysis: s
                .analysis
                .as_ref()
                .filter(|a| a.step == s.current_step)
                .map(|a| a.evidence.iter().map(evidence).collect())
                .unwrap_or_default(),
        }),
    }
}
