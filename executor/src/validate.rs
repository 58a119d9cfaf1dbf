//! What the executor checks in a StartRollout beyond the planner's
//! validation of the strategy: what this executor can actually do with it.

use sluice_proto::v1 as pb;

use crate::controller::traffic::rules::{self, Router};

/// Problems as `(field path, message)`: matches the router cannot express,
/// a style the workload kind does not take, traffic with no stable Service.
pub fn release_problems(spec: &pb::RolloutSpec) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let style = spec
        .strategy
        .as_ref()
        .map_or(pb::ReleaseStyle::Unspecified, |s| s.style());
    let kind = spec
        .workload
        .as_ref()
        .map_or(pb::WorkloadKind::Unspecified, |w| w.kind());
    if kind == pb::WorkloadKind::StatefulSet
        && matches!(
            style,
            pb::ReleaseStyle::Canary | pb::ReleaseStyle::BlueGreen
        )
    {
        problems.push((
            "spec.strategy.style".into(),
            format!(
                "a StatefulSet is released partition-style only, got {}",
                style.as_str_name()
            ),
        ));
    }
    let router = match spec.traffic.as_ref() {
        None => Router::None,
        Some(t) => {
            if t.stable_service.is_empty() {
                problems.push((
                    "spec.traffic.stableService".into(),
                    "names the Service clients use; it is required with traffic".into(),
                ));
            }
            match &t.router {
                None => Router::None,
                Some(pb::traffic_routing::Router::Nginx(_)) => Router::Nginx,
                Some(pb::traffic_routing::Router::HttpRoute(_)) => Router::Gateway,
                Some(pb::traffic_routing::Router::VirtualService(_)) => Router::Istio,
            }
        }
    };
    if style == pb::ReleaseStyle::BlueGreen && spec.traffic.is_none() {
        problems.push((
            "spec.traffic".into(),
            "blue-green switches traffic: give at least traffic.stableService".into(),
        ));
    }
    let steps: Vec<(usize, &[pb::RequestMatch])> = spec
        .strategy
        .as_ref()
        .and_then(|s| s.canary.as_ref())
        .map(|c| {
            c.steps
                .iter()
                .enumerate()
                .map(|(i, s)| (i, s.matches.as_slice()))
                .collect()
        })
        .unwrap_or_default();
    problems.extend(
        rules::check(router, &steps)
            .into_iter()
            .map(|(field, message)| (format!("spec.{field}"), message)),
    );
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(
        kind: pb::WorkloadKind,
        style: pb::ReleaseStyle,
        traffic: Option<pb::TrafficRouting>,
    ) -> pb::RolloutSpec {
        let header = pb::RequestMatch {
            headers: vec![
                pb::ValueMatch {
                    name: "a".into(),
                    r#type: 0,
                    value: "1".into(),
                },
                pb::ValueMatch {
                    name: "b".into(),
                    r#type: 0,
                    value: "2".into(),
                },
            ],
            ..Default::default()
        };
        pb::RolloutSpec {
            workload: Some(pb::WorkloadRef {
                kind: kind as i32,
                name: "web".into(),
            }),
            strategy: Some(pb::Strategy {
                style: style as i32,
                canary: Some(pb::CanaryStrategy {
                    steps: vec![
                        pb::CanaryStep {
                            replicas: "1".into(),
                            ..Default::default()
                        },
                        pb::CanaryStep {
                            replicas: "2".into(),
                            matches: vec![header],
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            traffic,
            ..Default::default()
        }
    }

    fn fields(problems: &[(String, String)]) -> Vec<&str> {
        problems.iter().map(|(f, _)| f.as_str()).collect()
    }

    #[test]
    fn matches_need_a_router_that_can_express_them() {
        let none = release_problems(&spec(
            pb::WorkloadKind::Deployment,
            pb::ReleaseStyle::Canary,
            None,
        ));
        assert_eq!(fields(&none), ["spec.strategy.canary.steps[1].matches"]);
        let nginx = pb::TrafficRouting {
            stable_service: "web".into(),
            router: Some(pb::traffic_routing::Router::Nginx(pb::NginxIngress {
                ingress: "web".into(),
            })),
            ..Default::default()
        };
        let problems = release_problems(&spec(
            pb::WorkloadKind::Deployment,
            pb::ReleaseStyle::Canary,
            Some(nginx),
        ));
        assert_eq!(fields(&problems), ["spec.strategy.canary.steps[1].matches"]);
        assert!(problems[0].1.contains("2 headers"), "{problems:?}");
        let route = pb::TrafficRouting {
            stable_service: "web".into(),
            router: Some(pb::traffic_routing::Router::HttpRoute(
                pb::GatewayHttpRoute { name: "web".into() },
            )),
            ..Default::default()
        };
        assert!(
            release_problems(&spec(
                pb::WorkloadKind::Deployment,
                pb::ReleaseStyle::Canary,
                Some(route)
            ))
            .is_empty()
        );
    }

    #[test]
    fn styles_a_workload_cannot_take_and_missing_services_are_named() {
        let route = pb::TrafficRouting {
            router: Some(pb::traffic_routing::Router::HttpRoute(
                pb::GatewayHttpRoute { name: "web".into() },
            )),
            ..Default::default()
        };
        let problems = release_problems(&spec(
            pb::WorkloadKind::StatefulSet,
            pb::ReleaseStyle::BlueGreen,
            Some(route),
        ));
        assert_eq!(
            fields(&problems),
            ["spec.strategy.style", "spec.traffic.stableService"]
        );
        let problems = release_problems(&spec(
            pb::WorkloadKind::Deployment,
            pb::ReleaseStyle::BlueGreen,
            None,
        ));
        assert!(fields(&problems).contains(&"spec.traffic"), "{problems:?}");
    }
}
