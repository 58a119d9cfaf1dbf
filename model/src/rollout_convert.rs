//! The Rollout resource to and from the `sluice.v1` messages.

use std::time::SystemTime;

use sluice_proto::v1 as pb;

use crate::crd::{
    self, Analysis, Comparison, Direction, ErrorPolicy, ImageUpdate, Metric, MetricCondition,
    NamedRoute, NginxIngress, Phase, Rollout, RolloutSpec, StepState, Threshold, TrafficRouting,
    Verdict, VirtualServiceRef, WorkloadKind, WorkloadRef,
};
use crate::duration::format_duration;

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
        strategy: crate::convert::strategy_from_proto(&spec.strategy.clone().unwrap_or_default()),
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

/// A protobuf Struct as the JSON object it carries.
pub fn struct_to_json(s: &prost_types::Struct) -> serde_json::Value {
    serde_json::Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), value_to_json(v)))
            .collect(),
    )
}

/// A protobuf number as JSON: whole numbers as integers, since Kubernetes
/// reads ports, replicas and the like as integers and refuses `8080.0`.
/// NaN and infinities, which JSON cannot carry, become null.
fn number_to_json(n: f64) -> serde_json::Value {
    // 2^53: past it an f64 no longer holds every integer.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if n.fract() == 0.0 && n.abs() <= EXACT {
        serde_json::json!(n as i64)
    } else {
        serde_json::Number::from_f64(n).map_or(serde_json::Value::Null, serde_json::Value::Number)
    }
}

/// A JSON object as a protobuf Struct; `None` for anything but an object.
pub fn json_to_struct(v: &serde_json::Value) -> Option<prost_types::Struct> {
    match json_to_value(v).kind {
        Some(prost_types::value::Kind::StructValue(s)) => Some(s),
        _ => None,
    }
}

fn json_to_value(v: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(json_to_value).collect(),
        }),
        serde_json::Value::Object(o) => Kind::StructValue(prost_types::Struct {
            fields: o
                .iter()
                .map(|(k, v)| (k.clone(), json_to_value(v)))
                .collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

fn value_to_json(v: &prost_types::Value) -> serde_json::Value {
    use prost_types::value::Kind;
    match &v.kind {
        Some(Kind::NumberValue(n)) => number_to_json(*n),
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

/// The resource's spec as the proto message: every field, as stored.
pub fn spec_to_proto(spec: &RolloutSpec) -> pb::RolloutSpec {
    let traffic = spec.traffic.as_ref().map(|t| pb::TrafficRouting {
        stable_service: t.stable_service.clone(),
        canary_service: t.canary_service.clone().unwrap_or_default(),
        router: if let Some(n) = &t.nginx {
            Some(pb::traffic_routing::Router::Nginx(pb::NginxIngress {
                ingress: n.ingress.clone(),
            }))
        } else if let Some(r) = &t.http_route {
            Some(pb::traffic_routing::Router::HttpRoute(
                pb::GatewayHttpRoute {
                    name: r.name.clone(),
                },
            ))
        } else {
            t.virtual_service.as_ref().map(|v| {
                pb::traffic_routing::Router::VirtualService(pb::IstioVirtualService {
                    name: v.name.clone(),
                    routes: v.routes.clone(),
                })
            })
        },
    });
    pb::RolloutSpec {
        workload: Some(pb::WorkloadRef {
            kind: match spec.workload.kind {
                WorkloadKind::Deployment => pb::WorkloadKind::Deployment,
                WorkloadKind::StatefulSet => pb::WorkloadKind::StatefulSet,
            } as i32,
            name: spec.workload.name.clone(),
        }),
        pod_template: spec.template.as_ref().and_then(json_to_struct),
        images: spec
            .images
            .iter()
            .map(|i| pb::ImageUpdate {
                container: i.container.clone(),
                image: i.image.clone(),
            })
            .collect(),
        strategy: crate::convert::strategy_to_proto(&spec.strategy).ok(),
        traffic,
        analyses: spec
            .analyses
            .iter()
            .map(|a| pb::Analysis {
                name: a.name.clone(),
                args: a.args.clone().into_iter().collect(),
                metrics: a.metrics.iter().map(metric_to_proto).collect(),
            })
            .collect(),
        on_analysis_error: match spec.on_analysis_error {
            ErrorPolicy::Rollback => pb::ErrorPolicy::Rollback,
            ErrorPolicy::Pause => pb::ErrorPolicy::Pause,
        } as i32,
    }
}

fn proto_duration(text: &Option<String>) -> Option<prost_types::Duration> {
    let d = crate::duration::parse_duration(text.as_deref()?).ok()?;
    Some(crate::convert::proto_duration(d))
}

fn condition_to_proto(c: &Option<MetricCondition>) -> Option<pb::Condition> {
    let c = c.as_ref()?;
    let kind = if let Some(t) = &c.threshold {
        pb::condition::Kind::Threshold(pb::Threshold {
            min: t.min,
            max: t.max,
        })
    } else {
        let c = c.comparison.as_ref()?;
        pb::condition::Kind::Comparison(pb::Comparison {
            baseline_query: c.baseline_query.clone().unwrap_or_default(),
            max_ratio: c.max_ratio,
            slack: c.slack,
            direction: match c.direction {
                Direction::HigherIsWorse => pb::ComparisonDirection::HigherIsWorse,
                Direction::LowerIsWorse => pb::ComparisonDirection::LowerIsWorse,
            } as i32,
        })
    };
    Some(pb::Condition { kind: Some(kind) })
}

fn metric_to_proto(m: &Metric) -> pb::Metric {
    pb::Metric {
        name: m.name.clone(),
        query: m.query.clone().unwrap_or_default(),
        template: m.template.clone().unwrap_or_default(),
        success_condition: condition_to_proto(&m.success_condition),
        failure_condition: condition_to_proto(&m.failure_condition),
        interval: proto_duration(&m.interval),
        count: m.count.unwrap_or(0),
        initial_delay: proto_duration(&m.initial_delay),
        failure_limit: m.failure_limit.unwrap_or(0),
        inconclusive_limit: m.inconclusive_limit.unwrap_or(0),
        consecutive_error_limit: m.consecutive_error_limit.unwrap_or(0),
        consecutive_success_limit: m.consecutive_success_limit.unwrap_or(0),
        dry_run: m.dry_run,
    }
}

/// One gate analysis of every metric of the named analyses (metric names
/// prefixed with their analysis' name, arguments merged), or `None` when
/// none of them is defined.
pub fn gate_analysis(label: &str, names: &[String], defined: &[Analysis]) -> Option<pb::Analysis> {
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
            .flat_map(|a| {
                a.metrics.iter().map(|m| pb::Metric {
                    name: format!("{}/{}", a.name, m.name),
                    ..metric_to_proto(m)
                })
            })
            .collect(),
        args,
    })
}

/// How long a release has taken: from `started` to `finished`, or to `now`
/// while it runs; `None` before it started. A clock behind `started` gives
/// zero, never a negative duration.
pub fn elapsed(
    started: Option<&str>,
    finished: Option<&str>,
    now: SystemTime,
) -> Option<prost_types::Duration> {
    let started = SystemTime::try_from(started?.parse::<prost_types::Timestamp>().ok()?).ok()?;
    let end = finished
        .and_then(|f| f.parse::<prost_types::Timestamp>().ok())
        .and_then(|t| SystemTime::try_from(t).ok())
        .unwrap_or(now);
    let taken = end.duration_since(started).unwrap_or_default();
    Some(crate::convert::proto_duration(taken))
}

/// The resource as the proto message, with `elapsed` measured at `now`.
pub fn rollout_at(r: &Rollout, now: SystemTime) -> pb::Rollout {
    use kube::ResourceExt;
    let s = r.status.clone().unwrap_or_default();
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
        spec: Some(spec_to_proto(&r.spec)),
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
                    observed_generation: c.observed_generation,
                })
                .collect(),
            observed_generation: s.observed_generation,
            pause_until: timestamp(&s.pause_until),
            handing_back_since: timestamp(&s.handing_back_since),
            elapsed: elapsed(s.started.as_deref(), s.finished.as_deref(), now),
            analysis: s
                .analysis
                .as_ref()
                .filter(|a| a.step == s.current_step)
                .map(|a| a.evidence.iter().map(evidence).collect())
                .unwrap_or_default(),
            paused: r.spec.paused,
            abort_requested: r
                .annotations()
                .get(crate::keys::ABORT)
                .cloned()
                .unwrap_or_default(),
            promote_requested: r
                .annotations()
                .get(crate::keys::PROMOTE)
                .map(|v| v.split_once(':').map_or(v.as_str(), |(how, _)| how))
                .unwrap_or_default()
                .to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> SystemTime {
        SystemTime::try_from(text.parse::<prost_types::Timestamp>().unwrap()).unwrap()
    }

    #[test]
    fn elapsed_runs_from_start_to_the_end_or_to_now() {
        let now = at("2026-01-01T10:05:00Z");
        let ended = elapsed(
            Some("2026-01-01T10:00:00Z"),
            Some("2026-01-01T10:02:30Z"),
            now,
        );
        assert_eq!(ended.map(|d| d.seconds), Some(150));
        let running = elapsed(Some("2026-01-01T10:00:00Z"), None, now);
        assert_eq!(running.map(|d| d.seconds), Some(300));
        assert_eq!(elapsed(None, None, now), None, "unset before the start");
        let skewed = elapsed(Some("2026-01-01T11:00:00Z"), None, now);
        assert_eq!(skewed.map(|d| d.seconds), Some(0), "never negative");
    }

    #[test]
    fn a_pod_template_keeps_whole_numbers_as_integers_for_kubernetes() {
        let template: prost_types::Struct = json_to_struct(&serde_json::json!({
            "spec": {"containers": [{"name": "web", "ports": [{"containerPort": 8080}]}]},
            "ratio": 0.5,
        }))
        .unwrap();
        let json = struct_to_json(&template);
        assert_eq!(
            json["spec"]["containers"][0]["ports"][0]["containerPort"],
            8080
        );
        assert!(json["spec"]["containers"][0]["ports"][0]["containerPort"].is_i64());
        assert_eq!(json["ratio"], 0.5);
        assert_eq!(
            json_to_struct(&json),
            Some(template),
            "and reads back the same"
        );
    }

    #[test]
    fn a_promote_or_abort_not_yet_acted_on_is_shown_until_the_controller_takes_it() {
        let mut r: Rollout = serde_json::from_value(serde_json::json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "web", "namespace": "shop", "annotations": {
                crate::keys::ABORT: "bad latency", crate::keys::PROMOTE: "full:2"}},
            "spec": {"workload": {"kind": "Deployment", "name": "web"}},
        }))
        .unwrap();
        let now = at("2026-01-01T10:00:00Z");
        let asked = rollout_at(&r, now).status.unwrap();
        assert_eq!(
            (
                asked.abort_requested.as_str(),
                asked.promote_requested.as_str()
            ),
            ("bad latency", "full")
        );
        // The controller removes the annotations once it has decided.
        r.metadata.annotations = None;
        let taken = rollout_at(&r, now).status.unwrap();
        assert_eq!(
            (
                taken.abort_requested.as_str(),
                taken.promote_requested.as_str()
            ),
            ("", "")
        );
    }
}
