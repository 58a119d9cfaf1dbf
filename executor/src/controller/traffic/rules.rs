//! What each router should say for a weight and a set of request matches:
//! pure functions from the user's original object to the one the executor
//! writes, so a reconcile can compare, write only what differs, and restore
//! the original exactly.
//!
//! - NGINX Ingress: a canary Ingress beside the stable one. NGINX can route
//!   on one header (exact value, or a pattern) or one cookie (whose value
//!   must be `always`), besides the weight.
//! - Gateway API HTTPRoute: every backendRef to the stable Service becomes
//!   two weighted refs (stable, canary); each match adds a rule sending
//!   matched requests to the canary only. A rule with header matches takes
//!   precedence over one without, as the Gateway API specifies.
//! - Istio VirtualService: every destination to the stable Service becomes
//!   two weighted destinations; each match adds a route, placed before the
//!   route it copies, since Istio takes the first route that matches.

use serde_json::{Map, Value, json};
use sluice_proto::v1 as pb;

/// NGINX's annotation prefix.
pub const NGINX: &str = "nginx.ingress.kubernetes.io/";

/// The canary-routing problems a strategy has on a router, each as
/// `(field path, message)`: matches the router cannot express.
pub fn check(router: Router, steps: &[(usize, &[pb::RequestMatch])]) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    for &(step, matches) in steps {
        let field = format!("strategy.canary.steps[{step}].matches");
        if matches.is_empty() {
            continue;
        }
        match router {
            Router::None => problems.push((
                field,
                "request matches need a router (nginx, httpRoute or virtualService) in traffic"
                    .into(),
            )),
            Router::Nginx => {
                if let Err(message) = nginx_match(matches) {
                    problems.push((field, message));
                }
            }
            Router::Gateway | Router::Istio => {}
        }
    }
    problems
}

/// Which router a rollout uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Router {
    /// Services only: traffic follows the pods.
    None,
    /// An NGINX canary Ingress.
    Nginx,
    /// A Gateway API HTTPRoute.
    Gateway,
    /// An Istio VirtualService.
    Istio,
}

fn kind(t: i32) -> pb::MatchType {
    pb::MatchType::try_from(t).unwrap_or(pb::MatchType::Unspecified)
}

fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A value match as a regular expression over the whole value.
fn as_regex(m: &pb::ValueMatch) -> String {
    match kind(m.r#type) {
        pb::MatchType::RegularExpression => m.value.clone(),
        pb::MatchType::Prefix => format!("{}.*", regex_escape(&m.value)),
        _ => regex_escape(&m.value),
    }
}

/// A cookie match as a regular expression over the `Cookie` header.
fn cookie_regex(m: &pb::ValueMatch) -> String {
    format!(
        "(^|.*;\\s*){}=({})(;.*|$)",
        regex_escape(&m.name),
        as_regex(m)
    )
}

/// The NGINX canary annotations for the matches (besides the weight).
///
/// # Errors
/// Matches NGINX cannot express, said plainly.
pub fn nginx_match(matches: &[pb::RequestMatch]) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    let [m] = matches else {
        if matches.is_empty() {
            return Ok(out);
        }
        return Err(format!(
            "NGINX Ingress canaries route on one header or one cookie; got {} alternative matches",
            matches.len()
        ));
    };
    if !m.query_params.is_empty() || m.path.is_some() {
        return Err("NGINX Ingress canaries cannot match on query parameters or paths".into());
    }
    match (m.headers.as_slice(), m.cookies.as_slice()) {
        ([h], []) => {
            out.insert(format!("{NGINX}canary-by-header"), json!(h.name));
            match kind(h.r#type) {
                pb::MatchType::Exact | pb::MatchType::Unspecified => {
                    out.insert(format!("{NGINX}canary-by-header-value"), json!(h.value));
                }
                _ => {
                    out.insert(
                        format!("{NGINX}canary-by-header-pattern"),
                        json!(as_regex(h)),
                    );
                }
            }
        }
        ([], [c]) => {
            let exact = matches!(
                kind(c.r#type),
                pb::MatchType::Exact | pb::MatchType::Unspecified
            );
            if !exact || c.value != "always" {
                return Err(format!(
                    "NGINX Ingress canaries route by cookie only when its value is \"always\"; got cookie {:?} = {:?}",
                    c.name, c.value
                ));
            }
            out.insert(format!("{NGINX}canary-by-cookie"), json!(c.name));
        }
        (headers, cookies) => {
            return Err(format!(
                "NGINX Ingress canaries route on one header or one cookie; got {} headers and {} cookies in one match",
                headers.len(),
                cookies.len()
            ));
        }
    }
    Ok(out)
}

/// The canary Ingress's annotations: canary on, the weight, the matches.
pub fn nginx_annotations(weight: u32, matches: &[pb::RequestMatch]) -> Map<String, Value> {
    let mut out = nginx_match(matches).unwrap_or_default();
    out.insert(format!("{NGINX}canary"), json!("true"));
    out.insert(format!("{NGINX}canary-weight"), json!(weight.to_string()));
    out
}

/// The canary Ingress's spec: the stable one's, with every backend on the
/// stable Service moved to the canary Service (same port).
pub fn nginx_canary_spec(stable_spec: &Value, stable: &str, canary: &str) -> Value {
    let mut spec = stable_spec.clone();
    if let Some(map) = spec.as_object_mut() {
        map.remove("tls");
    }
    if spec["defaultBackend"]["service"]["name"] == stable {
        spec["defaultBackend"]["service"]["name"] = json!(canary);
    }
    for rule in spec["rules"].as_array_mut().into_iter().flatten() {
        for path in rule["http"]["paths"].as_array_mut().into_iter().flatten() {
            if path["backend"]["service"]["name"] == stable {
                path["backend"]["service"]["name"] = json!(canary);
            }
        }
    }
    spec
}

fn gateway_value(m: &pb::ValueMatch) -> Value {
    match kind(m.r#type) {
        pb::MatchType::Exact | pb::MatchType::Unspecified => {
            json!({"type": "Exact", "name": m.name, "value": m.value})
        }
        _ => json!({"type": "RegularExpression", "name": m.name, "value": as_regex(m)}),
    }
}

/// One HTTPRoute match: the rule's own conditions and ours, ANDed.
fn gateway_match(original: &Value, m: &pb::RequestMatch) -> Value {
    let mut out = original.clone();
    if !out.is_object() {
        out = json!({});
    }
    let mut headers = out["headers"].as_array().cloned().unwrap_or_default();
    headers.extend(m.headers.iter().map(gateway_value));
    headers.extend(
        m.cookies.iter().map(
            |c| json!({"type": "RegularExpression", "name": "Cookie", "value": cookie_regex(c)}),
        ),
    );
    if !headers.is_empty() {
        out["headers"] = Value::Array(headers);
    }
    let mut query = out["queryParams"].as_array().cloned().unwrap_or_default();
    query.extend(m.query_params.iter().map(gateway_value));
    if !query.is_empty() {
        out["queryParams"] = Value::Array(query);
    }
    if let Some(p) = &m.path {
        let kind = match kind(p.r#type) {
            pb::MatchType::Exact => "Exact",
            pb::MatchType::RegularExpression => "RegularExpression",
            _ => "PathPrefix",
        };
        out["path"] = json!({"type": kind, "value": p.value});
    }
    out
}

fn is_service_ref(backend: &Value, service: &str) -> bool {
    backend["name"] == service
        && backend["kind"].as_str().is_none_or(|k| k == "Service")
        && backend["group"].as_str().is_none_or(str::is_empty)
}

/// The HTTPRoute spec for a weight (percent to the canary) and matches,
/// made from the user's original spec.
pub fn http_route_spec(
    original: &Value,
    stable: &str,
    canary: &str,
    weight: u32,
    matches: &[pb::RequestMatch],
) -> Value {
    let mut spec = original.clone();
    let mut rules = Vec::new();
    for rule in original["rules"].as_array().into_iter().flatten() {
        let Some(backend) = rule["backendRefs"]
            .as_array()
            .and_then(|b| b.iter().find(|b| is_service_ref(b, stable)))
        else {
            rules.push(rule.clone());
            continue;
        };
        let mut to_canary = backend.clone();
        to_canary["name"] = json!(canary);
        // Matched requests first, to the canary only.
        if !matches.is_empty() {
            let own = rule["matches"]
                .as_array()
                .cloned()
                .unwrap_or_else(|| vec![json!({})]);
            let mut matched = rule.clone();
            matched["matches"] = Value::Array(
                own.iter()
                    .flat_map(|o| matches.iter().map(|m| gateway_match(o, m)))
                    .collect(),
            );
            let mut only = to_canary.clone();
            only["weight"] = json!(1);
            matched["backendRefs"] = json!([only]);
            if let Some(map) = matched.as_object_mut() {
                map.remove("name");
            }
            rules.push(matched);
        }
        let mut weighted = rule.clone();
        let mut refs = Vec::new();
        for b in rule["backendRefs"].as_array().into_iter().flatten() {
            if is_service_ref(b, stable) {
                let mut s = b.clone();
                s["weight"] = json!(100 - weight.min(100));
                let mut c = to_canary.clone();
                c["weight"] = json!(weight.min(100));
                refs.push(s);
                refs.push(c);
            } else {
                refs.push(b.clone());
            }
        }
        weighted["backendRefs"] = Value::Array(refs);
        rules.push(weighted);
    }
    spec["rules"] = Value::Array(rules);
    spec
}

fn istio_value(m: &pb::ValueMatch) -> Value {
    match kind(m.r#type) {
        pb::MatchType::Prefix => json!({"prefix": m.value}),
        pb::MatchType::RegularExpression => json!({"regex": m.value}),
        _ => json!({"exact": m.value}),
    }
}

fn istio_match(original: &Value, m: &pb::RequestMatch) -> Value {
    let mut out = original.clone();
    if !out.is_object() {
        out = json!({});
    }
    for h in &m.headers {
        out["headers"][h.name.to_ascii_lowercase()] = istio_value(h);
    }
    for c in &m.cookies {
        out["headers"]["cookie"] = json!({"regex": cookie_regex(c)});
    }
    for q in &m.query_params {
        out["queryParams"][&q.name] = istio_value(q);
    }
    if let Some(p) = &m.path {
        out["uri"] = match kind(p.r#type) {
            pb::MatchType::Exact => json!({"exact": p.value}),
            pb::MatchType::RegularExpression => json!({"regex": p.value}),
            _ => json!({"prefix": p.value}),
        };
    }
    out
}

/// The Service a VirtualService destination host names (`web`,
/// `web.shop`, `web.shop.svc.cluster.local`).
fn host_service(host: &str) -> &str {
    host.split('.').next().unwrap_or_default()
}

/// The canary's host, written in the same form as the stable one.
fn canary_host(host: &str, canary: &str) -> String {
    match host.split_once('.') {
        Some((_, rest)) => format!("{canary}.{rest}"),
        None => canary.to_owned(),
    }
}

/// The VirtualService spec for a weight and matches, made from the user's
/// original; only the HTTP routes named in `managed` (all when empty).
pub fn virtual_service_spec(
    original: &Value,
    stable: &str,
    canary: &str,
    managed: &[String],
    weight: u32,
    matches: &[pb::RequestMatch],
) -> Value {
    let mut spec = original.clone();
    let mut http = Vec::new();
    for route in original["http"].as_array().into_iter().flatten() {
        let is_managed = managed.is_empty()
            || route["name"]
                .as_str()
                .is_some_and(|n| managed.iter().any(|m| m == n));
        let Some(dest) = route["route"].as_array().and_then(|r| {
            r.iter().find(|d| {
                host_service(d["destination"]["host"].as_str().unwrap_or_default()) == stable
            })
        }) else {
            http.push(route.clone());
            continue;
        };
        if !is_managed {
            http.push(route.clone());
            continue;
        }
        let mut to_canary = dest.clone();
        let host = dest["destination"]["host"].as_str().unwrap_or_default();
        to_canary["destination"]["host"] = json!(canary_host(host, canary));
        if !matches.is_empty() {
            let own = route["match"]
                .as_array()
                .cloned()
                .unwrap_or_else(|| vec![json!({})]);
            let mut matched = route.clone();
            matched["match"] = Value::Array(
                own.iter()
                    .flat_map(|o| matches.iter().map(|m| istio_match(o, m)))
                    .collect(),
            );
            let mut only = to_canary.clone();
            only["weight"] = json!(100);
            matched["route"] = json!([only]);
            let name = route["name"].as_str().unwrap_or("route");
            matched["name"] = json!(format!("{name}-sluice-canary"));
            http.push(matched);
        }
        let mut weighted = route.clone();
        let mut dests = Vec::new();
        for d in route["route"].as_array().into_iter().flatten() {
            if host_service(d["destination"]["host"].as_str().unwrap_or_default()) == stable {
                let mut s = d.clone();
                s["weight"] = json!(100 - weight.min(100));
                let mut c = to_canary.clone();
                c["weight"] = json!(weight.min(100));
                dests.push(s);
                dests.push(c);
            } else {
                dests.push(d.clone());
            }
        }
        weighted["route"] = Value::Array(dests);
        http.push(weighted);
    }
    spec["http"] = Value::Array(http);
    spec
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, value: &str, t: pb::MatchType) -> pb::RequestMatch {
        pb::RequestMatch {
            headers: vec![pb::ValueMatch {
                name: name.into(),
                r#type: t as i32,
                value: value.into(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn nginx_takes_one_exact_header_as_a_value_and_others_as_a_pattern() {
        let a = nginx_annotations(20, &[header("x-canary", "yes", pb::MatchType::Exact)]);
        assert_eq!(a[&format!("{NGINX}canary")], "true");
        assert_eq!(a[&format!("{NGINX}canary-weight")], "20");
        assert_eq!(a[&format!("{NGINX}canary-by-header")], "x-canary");
        assert_eq!(a[&format!("{NGINX}canary-by-header-value")], "yes");
        let a = nginx_annotations(0, &[header("x-user", "beta.", pb::MatchType::Prefix)]);
        assert_eq!(a[&format!("{NGINX}canary-by-header-pattern")], "beta\\..*");
    }

    #[test]
    fn nginx_refuses_what_it_cannot_route_and_says_why() {
        let two = [
            header("a", "1", pb::MatchType::Exact),
            header("b", "2", pb::MatchType::Exact),
        ];
        assert!(nginx_match(&two).unwrap_err().contains("2 alternative"));
        let cookie = pb::RequestMatch {
            cookies: vec![pb::ValueMatch {
                name: "beta".into(),
                r#type: 0,
                value: "yes".into(),
            }],
            ..Default::default()
        };
        let err = nginx_match(&[cookie]).unwrap_err();
        assert!(err.contains("\"always\"") && err.contains("beta"), "{err}");
        let problems = check(Router::Nginx, &[(0, &[]), (2, &two)]);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].0, "strategy.canary.steps[2].matches");
        assert_eq!(
            check(Router::None, &[(1, &two[..1])])[0].0,
            "strategy.canary.steps[1].matches"
        );
    }

    #[test]
    fn the_canary_ingress_points_at_the_canary_service_without_tls() {
        let stable = json!({"ingressClassName": "nginx", "tls": [{"hosts": ["a"]}], "rules": [
            {"host": "a", "http": {"paths": [
                {"path": "/", "backend": {"service": {"name": "web", "port": {"number": 80}}}},
                {"path": "/x", "backend": {"service": {"name": "other", "port": {"number": 80}}}}]}}]});
        let spec = nginx_canary_spec(&stable, "web", "web-canary");
        assert_eq!(
            spec["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"],
            "web-canary"
        );
        assert_eq!(
            spec["rules"][0]["http"]["paths"][1]["backend"]["service"]["name"],
            "other"
        );
        assert!(spec.get("tls").is_none());
        assert_eq!(spec["ingressClassName"], "nginx");
    }

    #[test]
    fn an_http_route_gets_weights_and_a_matched_rule_first() {
        let original = json!({"parentRefs": [{"name": "gw"}], "rules": [
            {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
             "backendRefs": [{"name": "web", "port": 80}]}]});
        let spec = http_route_spec(
            &original,
            "web",
            "web-canary",
            30,
            &[header("x-canary", "yes", pb::MatchType::Exact)],
        );
        let rules = spec["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(
            rules[0]["matches"][0],
            json!({"path": {"type": "PathPrefix", "value": "/"},
                   "headers": [{"type": "Exact", "name": "x-canary", "value": "yes"}]})
        );
        assert_eq!(
            rules[0]["backendRefs"],
            json!([{"name": "web-canary", "port": 80, "weight": 1}])
        );
        assert_eq!(
            rules[1]["backendRefs"],
            json!([{"name": "web", "port": 80, "weight": 70},
                   {"name": "web-canary", "port": 80, "weight": 30}])
        );
        assert_eq!(spec["parentRefs"], original["parentRefs"]);
        // Weight 0 with no matches is the original plus a zero-weight canary.
        let zero = http_route_spec(&original, "web", "web-canary", 0, &[]);
        assert_eq!(zero["rules"].as_array().unwrap().len(), 1);
        assert_eq!(zero["rules"][0]["backendRefs"][1]["weight"], 0);
    }

    #[test]
    fn a_virtual_service_gets_weights_and_a_matched_route_before_its_own() {
        let original = json!({"hosts": ["web"], "http": [
            {"name": "admin", "match": [{"uri": {"prefix": "/admin"}}],
             "route": [{"destination": {"host": "admin"}}]},
            {"name": "main", "route": [{"destination": {"host": "web.shop.svc.cluster.local", "port": {"number": 80}}}]}]});
        let cookie = pb::RequestMatch {
            cookies: vec![pb::ValueMatch {
                name: "beta".into(),
                r#type: 0,
                value: "1".into(),
            }],
            ..Default::default()
        };
        let spec = virtual_service_spec(&original, "web", "web-canary", &[], 10, &[cookie]);
        let http = spec["http"].as_array().unwrap();
        assert_eq!(http.len(), 3);
        assert_eq!(http[0], original["http"][0]);
        assert_eq!(http[1]["name"], "main-sluice-canary");
        assert_eq!(
            http[1]["match"][0]["headers"]["cookie"]["regex"],
            "(^|.*;\\s*)beta=(1)(;.*|$)"
        );
        assert_eq!(
            http[1]["route"][0]["destination"]["host"],
            "web-canary.shop.svc.cluster.local"
        );
        assert_eq!(http[2]["route"][0]["weight"], 90);
        assert_eq!(http[2]["route"][1]["weight"], 10);
        // Unmanaged routes are left alone.
        let spec = virtual_service_spec(&original, "web", "web-canary", &["other".into()], 10, &[]);
        assert_eq!(spec, original);
    }
}
