//! What the executor checks in a StartRollout beyond the planner's
//! validation of the strategy: what this executor can actually do with it
//! ([`release_problems`]), and what could never be stored or run whatever
//! the cluster holds ([`spec_problems`]: limits, names given twice, unknown
//! metric templates). Every problem is `(field path, message)`, the message
//! naming the value.

use std::collections::BTreeSet;

use sluice_proto::{METRIC_TEMPLATES, v1 as pb};

use crate::controller::traffic::rules::{self, Router};

/// Steps a strategy may have.
pub const MAX_STEPS: usize = 100;
/// Bytes an image reference may have (registries allow far less).
pub const MAX_IMAGE_BYTES: usize = 1024;
/// Bytes a whole StartRollout request may have: a Rollout must fit in one
/// etcd value (1.5 MiB) once written as JSON.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;
/// Bytes of a value quoted in a message before it is cut.
const QUOTED_BYTES: usize = 64;

/// A value quoted for a message, cut when long.
fn quoted(value: &str) -> String {
    if value.len() <= QUOTED_BYTES {
        return format!("{value:?}");
    }
    let mut end = QUOTED_BYTES;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}… ({} bytes)", &value[..end], value.len())
}

/// True for a container name: an RFC 1123 label.
fn is_container_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// What a pod template needs before any API server sees it: containers,
/// each with a name (an RFC 1123 label, unique) and an image.
fn pod_template_problems(template: &serde_json::Value) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let containers = template["spec"]["containers"].as_array();
    let Some(containers) = containers.filter(|c| !c.is_empty()) else {
        return vec![(
            "spec.podTemplate.spec.containers".into(),
            "must list at least one container".into(),
        )];
    };
    let mut names = BTreeSet::new();
    for (i, c) in containers.iter().enumerate() {
        let field = format!("spec.podTemplate.spec.containers[{i}]");
        let name = c["name"].as_str().unwrap_or_default();
        if !is_container_name(name) {
            problems.push((
                format!("{field}.name"),
                format!(
                    "must be a container name (an RFC 1123 label), got {}",
                    quoted(name)
                ),
            ));
        } else if !names.insert(name) {
            problems.push((
                format!("{field}.name"),
                format!("{} names another container too", quoted(name)),
            ));
        }
        let image = c["image"].as_str().unwrap_or_default();
        if image.trim().is_empty() {
            problems.push((
                format!("{field}.image"),
                "must name an image, got \"\"".into(),
            ));
        } else if image.len() > MAX_IMAGE_BYTES {
            problems.push((
                format!("{field}.image"),
                format!(
                    "must be at most {MAX_IMAGE_BYTES} bytes, got {}",
                    quoted(image)
                ),
            ));
        } else if let Some(why) = image_reference_problem(image) {
            problems.push((
                format!("{field}.image"),
                format!("{why}, got {}", quoted(image)),
            ));
        }
    }
    problems
}

/// Problems no cluster could fix: too many steps, images that are too long
/// or empty or given twice, analyses and metrics named twice, metrics
/// without a query or with an unknown template, steps naming an analysis
/// the spec does not define.
pub fn spec_problems(spec: &pb::RolloutSpec) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let steps = spec
        .strategy
        .as_ref()
        .and_then(|s| s.canary.as_ref())
        .map_or(0, |c| c.steps.len());
    if steps > MAX_STEPS {
        problems.push((
            "spec.strategy.canary.steps".into(),
            format!("at most {MAX_STEPS} steps, got {steps}"),
        ));
    }
    if let Some(template) = &spec.pod_template {
        if !spec.images.is_empty() {
            problems.push((
                "spec.podTemplate".into(),
                "set podTemplate or images, not both (images would be ignored)".into(),
            ));
        }
        problems.extend(pod_template_problems(
            &sluice_model::rollout_convert::struct_to_json(template),
        ));
    }
    let mut containers = BTreeSet::new();
    for (i, update) in spec.images.iter().enumerate() {
        let field = format!("spec.images[{i}]");
        if !is_container_name(&update.container) {
            problems.push((
                format!("{field}.container"),
                format!(
                    "must be a container name (an RFC 1123 label), got {}",
                    quoted(&update.container)
                ),
            ));
        } else if !containers.insert(update.container.as_str()) {
            problems.push((
                format!("{field}.container"),
                format!("{} is given a new image twice", quoted(&update.container)),
            ));
        }
        if update.image.trim().is_empty() {
            problems.push((
                format!("{field}.image"),
                "must name the new image, got \"\"".into(),
            ));
        } else if update.image.len() > MAX_IMAGE_BYTES {
            problems.push((
                format!("{field}.image"),
                format!(
                    "must be at most {MAX_IMAGE_BYTES} bytes, got {}",
                    quoted(&update.image)
                ),
            ));
        } else if let Some(why) = image_reference_problem(&update.image) {
            problems.push((
                format!("{field}.image"),
                format!("{why}, got {}", quoted(&update.image)),
            ));
        }
    }
    let mut analyses = BTreeSet::new();
    for (i, analysis) in spec.analyses.iter().enumerate() {
        let field = format!("spec.analyses[{i}]");
        if analysis.name.trim().is_empty() {
            problems.push((
                format!("{field}.name"),
                "must not be empty, got \"\"".into(),
            ));
        } else if !analyses.insert(analysis.name.as_str()) {
            problems.push((
                format!("{field}.name"),
                format!("{} names another analysis too", quoted(&analysis.name)),
            ));
        }
        if analysis.metrics.is_empty() {
            problems.push((
                format!("{field}.metrics"),
                "must have at least one metric, got []".into(),
            ));
        }
        let mut metrics = BTreeSet::new();
        for (j, metric) in analysis.metrics.iter().enumerate() {
            let field = format!("{field}.metrics[{j}]");
            if metric.name.trim().is_empty() {
                problems.push((
                    format!("{field}.name"),
                    "must not be empty, got \"\"".into(),
                ));
            } else if !metrics.insert(metric.name.as_str()) {
                problems.push((
                    format!("{field}.name"),
                    format!(
                        "{} names another metric of this analysis too",
                        quoted(&metric.name)
                    ),
                ));
            }
            problems.extend(query_problem(&field, metric));
            problems.extend(timing_problems(&field, metric));
            if metric.success_condition.is_none() && metric.failure_condition.is_none() {
                // The gate would refuse it when its step comes, with the
                // release's pods already moved.
                problems.push((
                    field.clone(),
                    "must set successCondition, failureCondition or both".into(),
                ));
            }
        }
    }
    // Every analysis a step or the background names must be defined: one
    // found missing only when its step comes would stall the release with
    // its new pods already up.
    let defined = |name: &str| spec.analyses.iter().any(|a| a.name == name);
    let canary = spec.strategy.as_ref().and_then(|s| s.canary.as_ref());
    let mut undefined = |field: String, name: &str| {
        if !defined(name) {
            let known: Vec<&str> = spec.analyses.iter().map(|a| a.name.as_str()).collect();
            problems.push((
                field,
                format!(
                    "names no analysis of spec.analyses, got {} (defined: {})",
                    quoted(name),
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        }
    };
    for (i, step) in canary.map_or(&[][..], |c| &c.steps[..]).iter().enumerate() {
        for (j, name) in step.analyses.iter().enumerate() {
            undefined(
                format!("spec.strategy.canary.steps[{i}].analyses[{j}]"),
                name,
            );
        }
    }
    if let Some(background) = canary.and_then(|c| c.background_analysis.as_ref()) {
        for (j, name) in background.analyses.iter().enumerate() {
            undefined(
                format!("spec.strategy.canary.backgroundAnalysis.analyses[{j}]"),
                name,
            );
        }
    }
    problems
}

/// Why `image` is no image reference a node could pull (kube-apiserver
/// refuses only surrounding whitespace; the container runtime refuses the
/// rest when the pod starts, after the release has moved pods): the
/// reference grammar, `[registry[:port]/]path[:tag][@algorithm:hex]`, with
/// a lowercase path.
fn image_reference_problem(image: &str) -> Option<&'static str> {
    if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("must be an image reference, with no whitespace or control characters");
    }
    let (name, digest) = match image.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (image, None),
    };
    if let Some(digest) = digest {
        let ok = digest.split_once(':').is_some_and(|(algorithm, hex)| {
            !algorithm.is_empty()
                && algorithm
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+._-".contains(c))
                && hex.len() >= 32
                && hex.chars().all(|c| c.is_ascii_hexdigit())
        });
        if !ok {
            return Some(
                "must be an image reference: a digest is algorithm:hex, such as sha256: and 64 hex digits",
            );
        }
    }
    // A tag follows the last ':' after the last '/'.
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let (path, tag) = match name[last_slash..].rfind(':') {
        Some(i) => (&name[..last_slash + i], Some(&name[last_slash + i + 1..])),
        None => (name, None),
    };
    if let Some(tag) = tag {
        let ok = !tag.is_empty()
            && tag.len() <= 128
            && !tag.starts_with(['.', '-'])
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !ok {
            return Some(
                "must be an image reference: a tag is at most 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
            );
        }
    }
    let mut parts: Vec<&str> = path.split('/').collect();
    // The first part is a registry when it looks like a host.
    if parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost") {
        let host = parts.remove(0);
        let (domain, port) = host.split_once(':').unwrap_or((host, "0"));
        let ok = !domain.is_empty()
            && domain
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-".contains(c))
            && !port.is_empty()
            && port.chars().all(|c| c.is_ascii_digit());
        if !ok {
            return Some(
                "must be an image reference: its registry is a host name with an optional :port",
            );
        }
    }
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.starts_with(|x: char| x.is_ascii_lowercase() || x.is_ascii_digit())
            && c.ends_with(|x: char| x.is_ascii_lowercase() || x.is_ascii_digit())
            && c.chars()
                .all(|x| x.is_ascii_lowercase() || x.is_ascii_digit() || "._-".contains(x))
    };
    if !parts.iter().all(|c| component_ok(c)) {
        return Some(
            "must be an image reference: its repository path is lowercase letters, digits and '.', '_' or '-' between them, in parts separated by '/'",
        );
    }
    None
}

/// An enum number the proto does not define, as a problem naming the field
/// and the values it takes.
fn undefined_enum<E: TryFrom<i32>>(
    field: String,
    number: i32,
    names: &str,
) -> Option<(String, String)> {
    (number != 0 && E::try_from(number).is_err())
        .then(|| (field, format!("must be {names}, got the number {number}")))
}

/// A metric's interval that is not above zero, or an initial delay below
/// it, as the gate would refuse them.
fn timing_problems(field: &str, metric: &pb::Metric) -> Vec<(String, String)> {
    let text = |d: &prost_types::Duration| {
        if d.nanos == 0 {
            format!("{}s", d.seconds)
        } else {
            format!("{}s", d.seconds as f64 + f64::from(d.nanos) / 1e9)
        }
    };
    let mut problems = Vec::new();
    if let Some(d) = &metric.interval
        && (d.seconds < 0 || d.nanos < 0 || (d.seconds == 0 && d.nanos == 0))
    {
        problems.push((
            format!("{field}.interval"),
            format!("must be longer than 0s, got {}", text(d)),
        ));
    }
    if let Some(d) = &metric.initial_delay
        && (d.seconds < 0 || d.nanos < 0)
    {
        problems.push((
            format!("{field}.initialDelay"),
            format!("must not be negative, got {}", text(d)),
        ));
    }
    problems
}

/// What is wrong with a metric's query or template, if anything.
fn query_problem(field: &str, metric: &pb::Metric) -> Option<(String, String)> {
    let template = metric.template.trim();
    match (metric.query.trim().is_empty(), template.is_empty()) {
        (true, true) => Some((
            format!("{field}.query"),
            "set query or template, got neither".into(),
        )),
        (false, false) => Some((
            format!("{field}.template"),
            format!(
                "set query or template, not both (template {})",
                quoted(&metric.template)
            ),
        )),
        (true, false) if !METRIC_TEMPLATES.contains(&template) => Some((
            format!("{field}.template"),
            format!(
                "no built-in template {} (known: {})",
                quoted(&metric.template),
                METRIC_TEMPLATES.join(", ")
            ),
        )),
        // A query that cannot parse would only fail when its step came.
        (false, true) => sluice_gate::template::Template::parse(&metric.query)
            .and_then(|t| t.check_syntax())
            .err()
            .map(|why| {
                (
                    format!("{field}.query"),
                    format!("{why} (query {})", quoted(&metric.query)),
                )
            }),
        _ => None,
    }
}

/// Problems as `(field path, message)`: matches the router cannot express,
/// a style the workload kind does not take, traffic with no stable Service.
pub fn release_problems(spec: &pb::RolloutSpec) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    // Enum numbers the proto does not define (a newer client's, or a
    // mistake) are refused, not read as the default.
    if let Some(w) = &spec.workload
        && pb::WorkloadKind::try_from(w.kind).is_err()
    {
        problems.push((
            "spec.workload.kind".into(),
            format!(
                "must be WORKLOAD_KIND_DEPLOYMENT or WORKLOAD_KIND_STATEFUL_SET, got the number {}",
                w.kind
            ),
        ));
    }
    if let Some(s) = &spec.strategy
        && pb::ReleaseStyle::try_from(s.style).is_err()
    {
        problems.push((
            "spec.strategy.style".into(),
            format!(
                "must be RELEASE_STYLE_PARTITION, RELEASE_STYLE_CANARY or RELEASE_STYLE_BLUE_GREEN, got the number {}",
                s.style
            ),
        ));
    }
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
            problems.extend(traffic_name_problems(t));
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
    problems.extend(number_problems(spec));
    problems
}

/// A Service's name: an RFC 1035 label (a letter first).
fn is_service_name(name: &str) -> bool {
    crate::api::is_dns_label(name) && name.starts_with(|c: char| c.is_ascii_lowercase())
}

/// Names of traffic objects no such object can have, and a canary Service
/// that is the stable one (the release pins that one to the stable pods).
fn traffic_name_problems(t: &pb::TrafficRouting) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    for (field, name) in [
        ("spec.traffic.stableService", &t.stable_service),
        ("spec.traffic.canaryService", &t.canary_service),
    ] {
        if !name.is_empty() && !is_service_name(name) {
            problems.push((
                field.to_owned(),
                format!(
                    "must be a Service name (an RFC 1035 label: lowercase letters, digits and '-', \
                     a letter first, at most 63), got {}",
                    quoted(name)
                ),
            ));
        }
    }
    if !t.canary_service.is_empty() && t.canary_service == t.stable_service {
        problems.push((
            "spec.traffic.canaryService".into(),
            format!(
                "must differ from stableService, which the release pins to the stable pods, got {}",
                quoted(&t.canary_service)
            ),
        ));
    }
    let (field, name) = match &t.router {
        None => return problems,
        Some(pb::traffic_routing::Router::Nginx(n)) => ("spec.traffic.nginx.ingress", &n.ingress),
        Some(pb::traffic_routing::Router::HttpRoute(r)) => ("spec.traffic.httpRoute.name", &r.name),
        Some(pb::traffic_routing::Router::VirtualService(v)) => {
            ("spec.traffic.virtualService.name", &v.name)
        }
    };
    if !crate::api::is_dns_subdomain(name) {
        problems.push((
            field.to_owned(),
            format!(
                "must name the object (lowercase letters, digits, '-' and '.'), got {}",
                quoted(name)
            ),
        ));
    }
    problems
}

use sluice_model::convert::MAX_DURATION_SECONDS;

/// What a protobuf Duration cannot be: out of its range, nanoseconds past
/// a second, or seconds and nanoseconds of opposite signs.
fn duration_problem(field: String, d: Option<&prost_types::Duration>) -> Option<(String, String)> {
    let d = d?;
    let bad = d.seconds.abs() > MAX_DURATION_SECONDS
        || d.nanos.abs() >= 1_000_000_000
        || (d.seconds > 0 && d.nanos < 0)
        || (d.seconds < 0 && d.nanos > 0);
    bad.then(|| {
        (
            field,
            format!(
                "must be a protobuf Duration (seconds within ±{MAX_DURATION_SECONDS}, nanos within \
                 ±999,999,999 and of the same sign), got seconds {} nanos {}",
                d.seconds, d.nanos
            ),
        )
    })
}

/// Enum numbers the proto does not define, durations a Duration cannot
/// hold, and condition numbers that could never judge anything: each read
/// as something else before (a default, a wrapped duration, an empty
/// condition), now refused.
fn number_problems(spec: &pb::RolloutSpec) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    problems.extend(undefined_enum::<pb::ErrorPolicy>(
        "spec.onAnalysisError".into(),
        spec.on_analysis_error,
        "ERROR_POLICY_PAUSE or ERROR_POLICY_ROLLBACK",
    ));
    let strategy = spec.strategy.as_ref();
    let canary = strategy.and_then(|s| s.canary.as_ref());
    problems.extend(duration_problem(
        "spec.strategy.canary.progressDeadline".into(),
        canary.and_then(|c| c.progress_deadline.as_ref()),
    ));
    problems.extend(duration_problem(
        "spec.strategy.blueGreen.rollbackWindow".into(),
        strategy
            .and_then(|s| s.blue_green.as_ref())
            .and_then(|b| b.rollback_window.as_ref()),
    ));
    const MATCH_TYPES: &str =
        "MATCH_TYPE_EXACT, MATCH_TYPE_PREFIX or MATCH_TYPE_REGULAR_EXPRESSION";
    for (i, step) in canary.map_or(&[][..], |c| &c.steps[..]).iter().enumerate() {
        let field = format!("spec.strategy.canary.steps[{i}]");
        problems.extend(duration_problem(
            format!("{field}.pause.duration"),
            step.pause.as_ref().and_then(|p| p.duration.as_ref()),
        ));
        for (j, m) in step.matches.iter().enumerate() {
            let field = format!("{field}.matches[{j}]");
            for (what, values) in [
                ("headers", &m.headers),
                ("cookies", &m.cookies),
                ("queryParams", &m.query_params),
            ] {
                for (k, v) in values.iter().enumerate() {
                    problems.extend(undefined_enum::<pb::MatchType>(
                        format!("{field}.{what}[{k}].type"),
                        v.r#type,
                        MATCH_TYPES,
                    ));
                }
            }
            if let Some(path) = &m.path {
                problems.extend(undefined_enum::<pb::MatchType>(
                    format!("{field}.path.type"),
                    path.r#type,
                    MATCH_TYPES,
                ));
            }
        }
    }
    for (i, analysis) in spec.analyses.iter().enumerate() {
        for (j, metric) in analysis.metrics.iter().enumerate() {
            let field = format!("spec.analyses[{i}].metrics[{j}]");
            problems.extend(duration_problem(
                format!("{field}.interval"),
                metric.interval.as_ref(),
            ));
            problems.extend(duration_problem(
                format!("{field}.initialDelay"),
                metric.initial_delay.as_ref(),
            ));
            for (which, condition) in [
                ("successCondition", &metric.success_condition),
                ("failureCondition", &metric.failure_condition),
            ] {
                let Some(kind) = condition.as_ref().and_then(|c| c.kind.as_ref()) else {
                    continue;
                };
                let field = format!("{field}.{which}");
                problems.extend(condition_problems(&field, kind));
            }
        }
    }
    problems
}

/// A threshold or comparison that could never judge a value as written.
fn condition_problems(field: &str, kind: &pb::condition::Kind) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    match kind {
        pb::condition::Kind::Threshold(t) => {
            for (bound, value) in [("min", t.min), ("max", t.max)] {
                if let Some(v) = value
                    && !v.is_finite()
                {
                    problems.push((
                        format!("{field}.threshold.{bound}"),
                        format!("must be a finite number, got {v}"),
                    ));
                }
            }
            if let (Some(min), Some(max)) = (t.min, t.max)
                && min > max
            {
                problems.push((
                    format!("{field}.threshold"),
                    format!("min must not be above max (no value is within [{min}, {max}])"),
                ));
            }
        }
        pb::condition::Kind::Comparison(c) => {
            problems.extend(undefined_enum::<pb::ComparisonDirection>(
                format!("{field}.comparison.direction"),
                c.direction,
                "COMPARISON_DIRECTION_HIGHER_IS_WORSE or COMPARISON_DIRECTION_LOWER_IS_WORSE",
            ));
            for (name, value) in [("maxRatio", c.max_ratio), ("slack", c.slack)] {
                if !value.is_finite() || value < 0.0 {
                    problems.push((
                        format!("{field}.comparison.{name}"),
                        format!("must be a finite number, 0 or more, got {value}"),
                    ));
                }
            }
        }
    }
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
    fn enum_numbers_the_proto_does_not_define_are_named() {
        let mut bad = spec(
            pb::WorkloadKind::Deployment,
            pb::ReleaseStyle::Partition,
            None,
        );
        bad.strategy
            .as_mut()
            .unwrap()
            .canary
            .as_mut()
            .unwrap()
            .steps[1]
            .matches
            .clear();
        assert!(release_problems(&bad).is_empty());
        bad.workload.as_mut().unwrap().kind = 99;
        bad.strategy.as_mut().unwrap().style = 7;
        let problems = release_problems(&bad);
        assert_eq!(
            fields(&problems),
            ["spec.workload.kind", "spec.strategy.style"]
        );
        assert!(problems[0].1.contains("got the number 99"), "{problems:?}");
        assert!(problems[1].1.contains("got the number 7"), "{problems:?}");
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

    fn metric(name: &str, template: &str) -> pb::Metric {
        pb::Metric {
            name: name.into(),
            template: template.into(),
            failure_condition: Some(pb::Condition {
                kind: Some(pb::condition::Kind::Threshold(pb::Threshold {
                    min: None,
                    max: Some(0.1),
                })),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_metric_the_gate_would_refuse_when_its_step_comes_is_refused_first() {
        let mut spec = spec(
            pb::WorkloadKind::Deployment,
            pb::ReleaseStyle::Partition,
            None,
        );
        let mut judged_by_nothing = metric("errors", "request-error-rate");
        judged_by_nothing.failure_condition = None;
        let mut never = metric("latency", "request-error-rate");
        never.interval = Some(prost_types::Duration {
            seconds: -1,
            nanos: 0,
        });
        never.initial_delay = Some(prost_types::Duration {
            seconds: 0,
            nanos: -500_000_000,
        });
        let mut zero = metric("slow", "request-latency-p99");
        zero.interval = Some(prost_types::Duration::default());
        spec.analyses = vec![pb::Analysis {
            name: "health".into(),
            metrics: vec![judged_by_nothing, never, zero],
            ..Default::default()
        }];
        let problems = spec_problems(&spec);
        assert_eq!(
            problems,
            [
                (
                    "spec.analyses[0].metrics[0]".to_owned(),
                    "must set successCondition, failureCondition or both".to_owned()
                ),
                (
                    "spec.analyses[0].metrics[1].interval".to_owned(),
                    "must be longer than 0s, got -1s".to_owned()
                ),
                (
                    "spec.analyses[0].metrics[1].initialDelay".to_owned(),
                    "must not be negative, got -0.5s".to_owned()
                ),
                (
                    "spec.analyses[0].metrics[2].interval".to_owned(),
                    "must be longer than 0s, got 0s".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn more_than_a_hundred_steps_are_refused_with_the_count() {
        let mut spec = spec(
            pb::WorkloadKind::Deployment,
            pb::ReleaseStyle::Partition,
            None,
        );
        let canary = spec.strategy.as_mut().unwrap().canary.as_mut().unwrap();
        canary.steps = vec![pb::CanaryStep::default(); 101];
        let problems = spec_problems(&spec);
        assert_eq!(fields(&problems), ["spec.strategy.canary.steps"]);
        assert_eq!(problems[0].1, "at most 100 steps, got 101");
        canary_steps(&mut spec, 100);
        assert!(spec_problems(&spec).is_empty());
    }

    fn canary_steps(spec: &mut pb::RolloutSpec, n: usize) {
        let canary = spec.strategy.as_mut().unwrap().canary.as_mut().unwrap();
        canary.steps = vec![pb::CanaryStep::default(); n];
    }

    #[test]
    fn analyses_and_metrics_named_twice_and_unknown_templates_are_named() {
        let mut spec = spec(
            pb::WorkloadKind::Deployment,
            pb::ReleaseStyle::Partition,
            None,
        );
        spec.analyses = vec![
            pb::Analysis {
                name: "health".into(),
                metrics: vec![
                    metric("errors", "request-error-rate"),
                    metric("errors", "request-saturation"),
                ],
                ..Default::default()
            },
            pb::Analysis {
                name: "health".into(),
                metrics: vec![metric("latency", "")],
                ..Default::default()
            },
        ];
        let problems = spec_problems(&spec);
        assert_eq!(
            fields(&problems),
            [
                "spec.analyses[0].metrics[1].name",
                "spec.analyses[0].metrics[1].template",
                "spec.analyses[1].name",
                "spec.analyses[1].metrics[0].query",
            ]
        );
        assert!(
            problems[1].1.contains("\"request-saturation\""),
            "{problems:?}"
        );
        assert!(
            problems[1].1.contains("request-latency-p99"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_query_that_does_not_parse_is_named_and_placeholders_do_not_count_against_it() {
        let mut spec = spec(
            pb::WorkloadKind::Deployment,
            pb::ReleaseStyle::Partition,
            None,
        );
        let query = |name: &str, text: &str| pb::Metric {
            query: text.into(),
            template: String::new(),
            ..metric(name, "")
        };
        spec.analyses = vec![pb::Analysis {
            name: "health".into(),
            metrics: vec![
                query("broken", "sum(rate(http_requests_total[{{window}}]) by"),
                query(
                    "threshold",
                    r#"sum(rate(http_requests_total{namespace="{{namespace}}"}[{{window}}])) > {{args.floor}}"#,
                ),
                query("named", "sum(rate({{args.metric}}[{{window}}]))"),
            ],
            ..Default::default()
        }];
        let problems = spec_problems(&spec);
        assert_eq!(fields(&problems), ["spec.analyses[0].metrics[0].query"]);
        assert!(
            problems[0].1.contains("does not parse as PromQL"),
            "{problems:?}"
        );
    }

    #[test]
    fn steps_and_background_naming_undefined_analyses_are_named() {
        let mut spec = spec(
            pb::WorkloadKind::Deployment,
            pb::ReleaseStyle::Partition,
            None,
        );
        spec.analyses = vec![pb::Analysis {
            name: "health".into(),
            metrics: vec![metric("errors", "request-error-rate")],
            ..Default::default()
        }];
        spec.strategy = Some(pb::Strategy {
            canary: Some(pb::CanaryStrategy {
                steps: vec![pb::CanaryStep {
                    replicas: "1".into(),
                    analyses: vec!["health".into(), "latency".into()],
                    ..Default::default()
                }],
                background_analysis: Some(pb::BackgroundAnalysis {
                    analyses: vec!["missing".into()],
                    starting_step: 1,
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        let problems = spec_problems(&spec);
        assert_eq!(
            fields(&problems),
            [
                "spec.strategy.canary.steps[0].analyses[1]",
                "spec.strategy.canary.backgroundAnalysis.analyses[0]",
            ]
        );
        assert!(
            problems[0].1.contains("\"latency\"") && problems[0].1.contains("defined: health"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_pod_template_needs_named_containers_with_images_and_excludes_images() {
        let template = |containers: serde_json::Value| {
            sluice_model::rollout_convert::json_to_struct(
                &serde_json::json!({"spec": {"containers": containers}}),
            )
        };
        let mut spec = pb::RolloutSpec {
            pod_template: template(serde_json::json!([{"name": "web", "image": "web:2"}])),
            ..Default::default()
        };
        assert!(
            spec_problems(&spec).is_empty(),
            "{:?}",
            spec_problems(&spec)
        );
        let fields = |spec: &pb::RolloutSpec| -> Vec<String> {
            spec_problems(spec).into_iter().map(|(f, _)| f).collect()
        };
        spec.pod_template = template(serde_json::json!([{"image": "y:1"}, {"name": "b"}]));
        assert_eq!(
            fields(&spec),
            [
                "spec.podTemplate.spec.containers[0].name",
                "spec.podTemplate.spec.containers[1].image"
            ]
        );
        spec.pod_template = template(serde_json::json!([]));
        assert_eq!(fields(&spec), ["spec.podTemplate.spec.containers"]);
        spec.pod_template = template(serde_json::json!([{"name": "web", "image": "y:1"}]));
        spec.images = vec![pb::ImageUpdate {
            container: "web".into(),
            image: "z:9".into(),
        }];
        assert_eq!(fields(&spec), ["spec.podTemplate"]);
    }

    #[test]
    fn images_too_long_empty_or_given_twice_are_named_with_their_value() {
        let mut spec = spec(
            pb::WorkloadKind::Deployment,
            pb::ReleaseStyle::Partition,
            None,
        );
        let image = |container: &str, image: String| pb::ImageUpdate {
            container: container.into(),
            image,
        };
        spec.images = vec![
            image("web", "x".repeat(3 << 20)),
            image("web", "web:2".into()),
            image("Side Car", String::new()),
        ];
        let problems = spec_problems(&spec);
        assert_eq!(
            fields(&problems),
            [
                "spec.images[0].image",
                "spec.images[1].container",
                "spec.images[2].container",
                "spec.images[2].image",
            ]
        );
        assert!(problems[0].1.contains("at most 1024 bytes"), "{problems:?}");
        assert!(
            problems[0].1.len() < 200,
            "the value is cut: {}",
            problems[0].1
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
