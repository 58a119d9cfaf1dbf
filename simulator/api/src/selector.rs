//! Label selectors (`app=web,tier!=db,env in (a,b),!legacy`) and the field
//! selectors the API server supports.

use std::{collections::BTreeMap, sync::Arc};

use crate::status::ApiError;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

/// Splits on commas that are not inside parentheses.
fn split_top(text: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// The values of `in (a, b)`, which must be in parentheses.
/// A requirement's key and values as kube-apiserver's selector lexer reads
/// them: a key of label-key characters, values of label-value characters
/// (`a===b` is refused, not read as `a == "=b"`).
fn check_requirement(requirement: &Requirement) -> Result<(), ApiError> {
    let (key, values): (&str, Vec<&str>) = match requirement {
        Requirement::Equals(k, v) | Requirement::NotEquals(k, v) => (k, vec![v.as_str()]),
        Requirement::In(k, vs) | Requirement::NotIn(k, vs) => {
            (k, vs.iter().map(String::as_str).collect())
        }
        Requirement::Exists(k) | Requirement::NotExists(k) => (k, Vec::new()),
    };
    let key_char = |c: char| c.is_ascii_alphanumeric() || "-_./".contains(c);
    let value_char = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
    let found = key.chars().find(|c| !key_char(*c)).or_else(|| {
        values
            .iter()
            .flat_map(|v| v.chars())
            .find(|c| !value_char(*c))
    });
    match found {
        None if !key.is_empty() => Ok(()),
        None => Err(ApiError::bad_request(
            "unable to parse requirement: found '', expected: identifier",
        )),
        Some(c) => Err(ApiError::bad_request(format!(
            "unable to parse requirement: found '{c}', expected: identifier"
        ))),
    }
}

fn set(values: &str) -> Result<Vec<String>, ApiError> {
    let inner = values
        .trim()
        .strip_prefix('(')
        .and_then(|v| v.strip_suffix(')'))
        .ok_or_else(|| {
            ApiError::bad_request(
                "unable to parse requirement: found '', expected: ',', ')' or identifier",
            )
        })?;
    Ok(inner.split(',').map(|v| v.trim().to_owned()).collect())
}

impl LabelSelector {
    /// Parses the `labelSelector` query parameter.
    ///
    /// # Errors
    /// 400 naming the selector.
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        let bad = || {
            ApiError::bad_request(format!(
                "unable to parse requirement: invalid label selector {text:?}"
            ))
        };
        let mut requirements = Vec::new();
        for part in split_top(text)
            .into_iter()
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let requirement = if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once("==") {
                Requirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once('=') {
                Requirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once(" notin ") {
                Requirement::NotIn(k.trim().into(), set(v)?)
            } else if let Some((k, v)) = part.split_once(" in ") {
                Requirement::In(k.trim().into(), set(v)?)
            } else if let Some(k) = part.strip_prefix('!') {
                Requirement::NotExists(k.trim().into())
            } else if part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
            {
                Requirement::Exists(part.into())
            } else {
                return Err(bad());
            };
            check_requirement(&requirement)?;
            requirements.push(requirement);
        }
        Ok(Self { requirements })
    }

    /// From a `metav1.LabelSelector` object (`matchLabels`, `matchExpressions`).
    pub fn from_object(selector: &serde_json::Value) -> Self {
        let mut requirements = Vec::new();
        if let Some(labels) = selector["matchLabels"].as_object() {
            for (k, v) in labels {
                requirements.push(Requirement::Equals(
                    k.clone(),
                    v.as_str().unwrap_or_default().into(),
                ));
            }
        }
        if let Some(expressions) = selector["matchExpressions"].as_array() {
            for e in expressions {
                let key = e["key"].as_str().unwrap_or_default().to_owned();
                let values: Vec<String> = e["values"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                requirements.push(match e["operator"].as_str() {
                    Some("In") => Requirement::In(key, values),
                    Some("NotIn") => Requirement::NotIn(key, values),
                    Some("Exists") => Requirement::Exists(key),
                    _ => Requirement::NotExists(key),
                });
            }
        }
        Self { requirements }
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &[(String, String)]) -> bool {
        let get = |key: &str| {
            labels
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        self.requirements.iter().all(|r| match r {
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
        })
    }

    /// The selector as a string (for the scale subresource's status).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

/// Fields that field selectors may name, besides name and namespace: a
/// pod's, and an Event's as `kubectl describe` and `kubectl events` ask
/// for them (`source` is `source.component`); `type` is a Secret's too.
pub const INDEXED_FIELDS: [&str; 13] = [
    "status.phase",
    "spec.nodeName",
    "spec.schedulerName",
    "involvedObject.name",
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.fieldPath",
    "reason",
    "type",
    "reportingComponent",
    "source",
];

/// The value of an indexed field in `object`.
fn field_value<'a>(object: &'a serde_json::Value, field: &str) -> Option<&'a str> {
    match (field, field.split_once('.')) {
        ("source", _) => object["source"]["component"].as_str(),
        (_, Some((a, b))) => object[a][b].as_str(),
        (_, None) => object[field].as_str(),
    }
}

/// A parsed field selector.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<(String, bool, String)>,
}

impl FieldSelector {
    /// Parses the `fieldSelector` query parameter.
    ///
    /// # Errors
    /// 400 for an unsupported field or syntax.
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        let mut terms = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid field selector: {part:?}"
                )));
            };
            let field = field.trim();
            if !(field == "metadata.name"
                || field == "metadata.namespace"
                || INDEXED_FIELDS.contains(&field))
            {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {field}"
                )));
            }
            terms.push((field.to_owned(), equal, value.trim().to_owned()));
        }
        Ok(Self { terms })
    }

    /// Whether an object with these field values matches.
    pub fn matches(&self, namespace: &str, name: &str, fields: &[(&'static str, String)]) -> bool {
        self.terms.iter().all(|(field, equal, value)| {
            let actual = match field.as_str() {
                "metadata.name" => name,
                "metadata.namespace" => namespace,
                other => fields
                    .iter()
                    .find(|(f, _)| *f == other)
                    .map_or("", |(_, v)| v.as_str()),
            };
            (actual == value) == *equal
        })
    }
}

/// The labels of an object, sorted.
pub fn labels_of(object: &serde_json::Value) -> Arc<[(String, String)]> {
    let map: BTreeMap<String, String> = object["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    map.into_iter().collect()
}

/// The indexed field values of an object.
pub fn fields_of(object: &serde_json::Value) -> Arc<[(&'static str, String)]> {
    INDEXED_FIELDS
        .iter()
        .filter_map(|f| field_value(object, f).map(|v| (*f, v.to_owned())))
        .collect()
}

/// `fields` (an object's indexed fields) with those under `part` (`spec`
/// or `status`) taken from `written`, the part's new form, instead.
pub fn fields_with_part(
    fields: &[(&'static str, String)],
    part: &str,
    written: &crate::splice::Written,
) -> Arc<[(&'static str, String)]> {
    INDEXED_FIELDS
        .iter()
        .filter_map(|f| match f.split_once('.') {
            Some((p, key)) if p == part => written.text(key).map(|v| (*f, v)),
            _ => fields.iter().find(|(g, _)| g == f).cloned(),
        })
        .collect()
}

/// The `matchExpressions` of a `metav1.LabelSelector` in JSON, each as
/// its key, operator and values.
pub(crate) fn expressions(selector: &serde_json::Value) -> Vec<(&str, &str, Vec<&str>)> {
    expressions_keyed(selector, "key")
}

/// The `matchExpressions` of a selector in JSON whose requirements name
/// their key in field `key` (`scopeName` in a quota's scope selector).
pub(crate) fn expressions_keyed<'a>(
    selector: &'a serde_json::Value,
    key: &str,
) -> Vec<(&'a str, &'a str, Vec<&'a str>)> {
    selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e[key].as_str().unwrap_or_default(),
                e["operator"].as_str().unwrap_or_default(),
                e["values"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(serde_json::Value::as_str)
                    .collect(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn every_selector_form_matches_as_kubernetes_does() {
        let l = labels(&[("app", "web"), ("tier", "front"), ("env", "prod")]);
        for (selector, expected) in [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app=web,tier=back", false),
            ("env in (prod,staging)", true),
            ("env notin (prod)", false),
            ("missing notin (x)", true),
            ("tier", true),
            ("!legacy", true),
            ("!app", false),
        ] {
            assert_eq!(
                LabelSelector::parse(selector).unwrap().matches(&l),
                expected,
                "{selector}"
            );
        }
    }

    #[test]
    fn unsupported_fields_are_refused() {
        assert_eq!(
            FieldSelector::parse("spec.color=red").unwrap_err().code,
            400
        );
        let f = FieldSelector::parse("status.phase=Running,metadata.name!=a").unwrap();
        assert!(f.matches("ns", "b", &[("status.phase", "Running".into())]));
        assert!(!f.matches("ns", "a", &[("status.phase", "Running".into())]));
    }
}
