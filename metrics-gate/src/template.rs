//! Query templates: PromQL with placeholders, and the built-in SLI queries.
//!
//! Placeholders: `{{namespace}}`, `{{workload}}` (also `{{stableWorkload}}`),
//! `{{canaryWorkload}}` (the workload running the canary pods: the released
//! one, or a canary-style release's own Deployment), `{{canaryRevision}}`,
//! `{{stableRevision}}`, `{{window}}` (a Prometheus duration such as `1m`)
//! and `{{args.NAME}}`. Values are escaped for use inside a double-quoted
//! PromQL string (`\` and `"`), so a label value cannot break the query.
//!
//! # Built-in templates
//! They read the metrics the simulator exposes, named as most HTTP
//! instrumentation names them:
//! - `http_requests_total{namespace, workload, revision, pod, code}`:
//!   a counter of requests by status code;
//! - `http_request_duration_seconds_bucket{namespace, workload, revision, pod, le}`:
//!   a latency histogram.
//!
//! | name | value |
//! |---|---|
//! | `request-success-rate` | share of the canary's requests that were not 5xx, over `{{window}}` |
//! | `request-error-rate` | share of the canary's requests that were 5xx |
//! | `request-latency-p99` | the canary's 99th percentile latency in seconds |
//!
//! With no requests in the window each gives no data or NaN, which the gate
//! judges inconclusive, never a pass.

use crate::spec::Context;

/// Names of the built-in templates: the contract's list, which
/// [`builtin`] must answer for (a test checks it).
pub const BUILTINS: [&str; 3] = sluice_proto::METRIC_TEMPLATES;

const SELECTOR: &str =
    r#"namespace="{{namespace}}",workload="{{canaryWorkload}}",revision="{{canaryRevision}}""#;

/// A built-in template by name.
pub fn builtin(name: &str) -> Option<Template> {
    let text = match name {
        "request-success-rate" => format!(
            r#"sum(rate(http_requests_total{{{SELECTOR},code!~"5.."}}[{{{{window}}}}])) / sum(rate(http_requests_total{{{SELECTOR}}}[{{{{window}}}}]))"#
        ),
        "request-error-rate" => format!(
            r#"sum(rate(http_requests_total{{{SELECTOR},code=~"5.."}}[{{{{window}}}}])) / sum(rate(http_requests_total{{{SELECTOR}}}[{{{{window}}}}]))"#
        ),
        "request-latency-p99" => format!(
            r#"histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{{{SELECTOR}}}[{{{{window}}}}])))"#
        ),
        _ => return None,
    };
    Template::parse(&text).ok()
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Namespace,
    Workload,
    CanaryWorkload,
    CanaryRevision,
    StableRevision,
    Window,
    Arg(String),
}

/// A parsed query template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// A template with no placeholders.
    pub fn literal(text: &str) -> Self {
        Self {
            parts: vec![Part::Text(text.to_owned())],
        }
    }

    /// Parses `text`.
    ///
    /// # Errors
    /// An unclosed `{{` or an unknown placeholder, named.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| format!("unclosed `{{{{` in {text:?}"))?;
            let name = after[..end].trim();
            parts.push(match name {
                "namespace" => Part::Namespace,
                "workload" | "stableWorkload" => Part::Workload,
                "canaryWorkload" => Part::CanaryWorkload,
                "canaryRevision" => Part::CanaryRevision,
                "stableRevision" => Part::StableRevision,
                "window" => Part::Window,
                _ => match name.strip_prefix("args.") {
                    Some(arg) if !arg.is_empty() => Part::Arg(arg.to_owned()),
                    _ => {
                        return Err(format!(
                            "unknown placeholder {{{{{name}}}}} (known: namespace, workload, stableWorkload, canaryWorkload, canaryRevision, stableRevision, window, args.NAME)"
                        ));
                    }
                },
            });
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    /// Whether the query is PromQL Prometheus would parse, whatever its
    /// placeholders are filled with: each is tried with a sample value
    /// (an argument both as a number and as a name, since either may
    /// stand in a query), and the query is refused only when no filling
    /// parses.
    ///
    /// # Errors
    /// The parser's complaint about the query as first filled.
    pub fn check_syntax(&self) -> Result<(), String> {
        let mut first = None;
        for arg in ["1", "x"] {
            let mut out = String::new();
            for part in &self.parts {
                out.push_str(match part {
                    Part::Text(t) => t,
                    Part::Window => "1m",
                    Part::Arg(_) => arg,
                    _ => "x",
                });
            }
            match promql_parser::parser::parse(&out) {
                Ok(_) => return Ok(()),
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        Err(format!(
            "does not parse as PromQL: {}",
            first.unwrap_or_default()
        ))
    }

    /// Fills the placeholders from `context`.
    ///
    /// # Errors
    /// An `{{args.NAME}}` that the context does not define.
    pub fn render(&self, context: &Context) -> Result<String, String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Namespace => escape_into(&mut out, &context.namespace),
                Part::Workload => escape_into(&mut out, &context.workload),
                Part::CanaryWorkload => escape_into(&mut out, &context.canary_workload),
                Part::CanaryRevision => escape_into(&mut out, &context.canary_revision),
                Part::StableRevision => escape_into(&mut out, &context.stable_revision),
                Part::Window => out.push_str(&prometheus_duration(context.window)),
                Part::Arg(name) => match context.args.get(name) {
                    Some(value) => escape_into(&mut out, value),
                    None => {
                        return Err(format!(
                            "the query uses {{{{args.{name}}}}}, which is not set"
                        ));
                    }
                },
            }
        }
        Ok(out)
    }
}

fn escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        if matches!(c, '\\' | '"') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// A duration as PromQL writes it: `1m30s`, `250ms`.
pub fn prometheus_duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut rest = ms;
    for (unit, size) in [("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)] {
        if rest >= size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_query_is_checked_as_promql_with_its_placeholders_filled() {
        for good in [
            "up",
            r#"sum(rate(http_requests_total{workload="{{workload}}"}[{{window}}])) > {{args.floor}}"#,
            "sum(rate({{args.metric}}[{{window}}]))",
        ] {
            assert_eq!(
                Template::parse(good).unwrap().check_syntax(),
                Ok(()),
                "{good}"
            );
        }
        for name in BUILTINS {
            assert_eq!(builtin(name).unwrap().check_syntax(), Ok(()), "{name}");
        }
        for bad in ["sum(rate(x[{{window}}]) by", "up{", "rate(x[5q])"] {
            let why = Template::parse(bad).unwrap().check_syntax().unwrap_err();
            assert!(why.starts_with("does not parse as PromQL"), "{bad}: {why}");
        }
    }

    fn context() -> Context {
        Context {
            namespace: "shop".into(),
            workload: "web".into(),
            canary_workload: "web-canary".into(),
            canary_revision: "7d9f".into(),
            stable_revision: "5c4b".into(),
            window: Duration::from_secs(90),
            args: [("team".to_owned(), "pay\"ments".to_owned())]
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn every_template_the_contract_names_has_a_query() {
        for name in sluice_proto::METRIC_TEMPLATES {
            assert!(builtin(name).is_some(), "no query for {name}");
        }
        assert!(builtin("request-saturation").is_none());
    }

    #[test]
    fn placeholders_are_filled_and_escaped() {
        let t = Template::parse(
            r#"up{ns="{{namespace}}",rev="{{ canaryRevision }}",team="{{args.team}}"}[{{window}}]"#,
        )
        .unwrap();
        assert_eq!(
            t.render(&context()).unwrap(),
            r#"up{ns="shop",rev="7d9f",team="pay\"ments"}[1m30s]"#
        );
    }

    #[test]
    fn the_baseline_context_swaps_revisions_and_workloads() {
        let t = Template::parse(
            "{{canaryWorkload}}@{{canaryRevision}}/{{stableWorkload}}@{{stableRevision}}",
        )
        .unwrap();
        assert_eq!(t.render(&context()).unwrap(), "web-canary@7d9f/web@5c4b");
        assert_eq!(
            t.render(&context().baseline()).unwrap(),
            "web@5c4b/web-canary@7d9f"
        );
    }

    #[test]
    fn unknown_placeholders_and_missing_args_are_named() {
        assert!(
            Template::parse("{{pod}}")
                .unwrap_err()
                .contains("unknown placeholder {{pod}}")
        );
        assert!(
            Template::parse("x{{window")
                .unwrap_err()
                .contains("unclosed")
        );
        let err = Template::parse("{{args.region}}")
            .unwrap()
            .render(&context())
            .unwrap_err();
        assert!(err.contains("{{args.region}}"), "{err}");
    }

    #[test]
    fn builtins_read_the_canary_revision() {
        for name in BUILTINS {
            let query = builtin(name).unwrap().render(&context()).unwrap();
            assert!(
                query.contains(r#"revision="7d9f""#) && query.contains("[1m30s]"),
                "{name}: {query}"
            );
        }
        assert_eq!(prometheus_duration(Duration::from_millis(1500)), "1s500ms");
    }
}
