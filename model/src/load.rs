//! A strategy from YAML or JSON text, a value of the wrong kind named by
//! its field path, line and column, with what was expected:
//!
//! ```text
//! canary.steps[1].traffic (line 7, column 18): expected a percentage 0-100 such as 20 or "20%", got "abc"
//! ```
//!
//! Reading refuses only what the types cannot hold (text for a number, an
//! unknown field, a misspelt style); values of the right kind but out of
//! range are [`crate::validate`]'s, which names them by their path from the
//! strategy (`strategy.canary.steps[1].traffic`). The path here is the one
//! in the text read, from its root.

use std::fmt::Display;

use serde::{Deserialize, de::DeserializeOwned};

use crate::spec::Strategy;

/// A text that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct LoadError {
    /// The field's path from the root of the text, e.g.
    /// `canary.steps[1].traffic`; empty for the text as a whole (a syntax
    /// error, an empty file).
    pub field: String,
    /// Where in the text, 1-based `(line, column)`, when known.
    pub location: Option<(usize, usize)>,
    /// What was expected and what was there.
    pub message: String,
}

impl LoadError {
    fn describe(&self) -> String {
        let place = self
            .location
            .map(|(line, column)| format!("line {line}, column {column}"));
        match (self.field.as_str(), place) {
            ("", None) => self.message.clone(),
            ("", Some(place)) => format!("{place}: {}", self.message),
            (field, None) => format!("{field}: {}", self.message),
            (field, Some(place)) => format!("{field} ({place}): {}", self.message),
        }
    }
}

/// Reads a YAML (or JSON, which YAML includes) text as a `T`.
///
/// # Errors
/// A [`LoadError`] naming the first value that could not be read.
pub fn from_yaml<T: DeserializeOwned>(text: &str) -> Result<T, LoadError> {
    serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(text)).map_err(|e| {
        let location = e.inner().location().map(|l| (l.line(), l.column()));
        load_error(&e.path().to_string(), e.inner(), location)
    })
}

/// Reads a JSON text as a `T`.
///
/// # Errors
/// A [`LoadError`] naming the first value that could not be read.
pub fn from_json<T: DeserializeOwned>(text: &str) -> Result<T, LoadError> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let inner = e.inner();
        let location = (inner.line() > 0).then(|| (inner.line(), inner.column()));
        load_error(&e.path().to_string(), inner, location)
    })?;
    deserializer
        .end()
        .map_err(|e| load_error(".", &e, Some((e.line(), e.column()))))?;
    Ok(value)
}

/// Reads a strategy from YAML (or JSON): the whole text, or the value of
/// its top-level `strategy` key when it has one (the rest is ignored), as
/// `sluice plan -f` takes it.
///
/// # Errors
/// A [`LoadError`] naming the first value that could not be read; under a
/// `strategy` key, its path starts with `strategy.`.
pub fn strategy_from_yaml(text: &str) -> Result<Strategy, LoadError> {
    /// Anything with a strategy in it; other keys are not ours to judge.
    #[derive(Deserialize)]
    struct Holder {
        strategy: Strategy,
    }
    let held = serde_yaml::from_str::<serde_yaml::Value>(text)
        .is_ok_and(|value| value.get("strategy").is_some());
    if held {
        from_yaml::<Holder>(text).map(|h| h.strategy)
    } else {
        from_yaml(text)
    }
}

/// `path` as serde_path_to_error writes it: `.` for the root.
fn load_error(path: &str, inner: &impl Display, location: Option<(usize, usize)>) -> LoadError {
    let field = if path == "." { "" } else { path }.to_owned();
    let mut message = inner.to_string();
    // Both parsers write the place into the message, and serde_norway its
    // own path (the field's, or its parent's) before it; they are fields of
    // the error here.
    if let Some((line, column)) = location {
        message = message.replacen(&format!(" at line {line} column {column}"), "", 1);
    }
    let ancestors = field
        .match_indices(['.', '['])
        .map(|(end, _)| &field[..end])
        .chain([field.as_str()]);
    for path in ancestors.filter(|p| !p.is_empty()) {
        if let Some(bare) = message.strip_prefix(&format!("{path}: ")) {
            message = bare.to_owned();
            break;
        }
    }
    LoadError {
        field,
        location,
        message: plain(&message),
    }
}

/// serde's `invalid type: string "x", expected a number` as `expected a
/// number, got string "x"`, the form the strategy's own types write.
fn plain(message: &str) -> String {
    ["invalid type: ", "invalid value: "]
        .iter()
        .find_map(|prefix| {
            let (got, expected) = message.strip_prefix(prefix)?.rsplit_once(", expected ")?;
            Some(format!("expected {expected}, got {got}"))
        })
        .unwrap_or_else(|| message.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml_error(text: &str) -> String {
        strategy_from_yaml(text).unwrap_err().to_string()
    }

    #[test]
    fn traffic_of_the_wrong_kind_names_its_path_and_place() {
        let text = "\
canary:
  steps:
    - replicas: 1
    - replicas: 20%
      traffic: abc
";
        let error = strategy_from_yaml(text).unwrap_err();
        assert_eq!(error.field, "canary.steps[1].traffic");
        assert_eq!(error.location, Some((5, 16)));
        assert_eq!(
            error.to_string(),
            r#"canary.steps[1].traffic (line 5, column 16): expected a percentage 0-100 such as 20 or "20%", got "abc""#
        );
    }

    #[test]
    fn a_fraction_of_a_percent_is_refused_when_read() {
        assert_eq!(
            yaml_error("canary: {steps: [{replicas: 1, traffic: 12.5}]}"),
            r#"canary.steps[0].traffic (line 1, column 41): expected a percentage 0-100 such as 20 or "20%", got 12.5"#
        );
        assert_eq!(
            yaml_error("canary: {steps: [{replicas: 1, traffic: \"12.5%\"}]}"),
            r#"canary.steps[0].traffic (line 1, column 41): expected a percentage 0-100 such as 20 or "20%", got "12.5%""#
        );
    }

    #[test]
    fn serdes_own_type_errors_say_what_was_expected_then_what_was_there() {
        assert_eq!(
            yaml_error("canary:\n  progressDeadline: [5m]\n"),
            "canary.progressDeadline (line 2, column 21): expected a string, got sequence"
        );
        assert_eq!(
            yaml_error("canary:\n  steps:\n    - replicas: {count: 3}\n"),
            r#"canary.steps[0].replicas (line 3, column 17): expected a count such as 3 or a percent such as "20%", got map"#
        );
    }

    #[test]
    fn an_unknown_field_is_named_with_the_fields_there_are() {
        assert_eq!(
            yaml_error("canary:\n  steps:\n    - trafic: 20\n"),
            "canary.steps[0].trafic (line 3, column 7): unknown field `trafic`, \
             expected one of `replicas`, `traffic`, `matches`, `pause`, `analyses`"
        );
    }

    #[test]
    fn a_misspelt_style_lists_the_styles() {
        assert_eq!(
            yaml_error("style: Blue\n"),
            "style (line 1, column 8): unknown variant `Blue`, expected one of `Partition`, `Canary`, `BlueGreen`"
        );
    }

    #[test]
    fn a_strategy_under_a_strategy_key_is_named_from_the_root() {
        let text = "name: web\nstrategy:\n  canary:\n    steps: [{replicas: 1, traffic: x}]\n";
        assert_eq!(
            yaml_error(text),
            r#"strategy.canary.steps[0].traffic (line 4, column 36): expected a percentage 0-100 such as 20 or "20%", got "x""#
        );
    }

    #[test]
    fn a_syntax_error_is_placed_in_the_field_it_broke() {
        assert_eq!(
            yaml_error("canary:\n  steps: [\n"),
            "canary.steps (line 3, column 1): did not find expected node content, while parsing a flow node"
        );
    }

    #[test]
    fn an_empty_text_is_the_default_strategy() {
        assert_eq!(strategy_from_yaml("").unwrap(), Strategy::default());
    }

    #[test]
    fn json_errors_name_the_path_and_place_too() {
        let text = "{\"canary\": {\"steps\": [\n  {\"replicas\": 1, \"traffic\": true}\n]}}";
        assert_eq!(
            from_json::<Strategy>(text).unwrap_err().to_string(),
            r#"canary.steps[0].traffic (line 2, column 33): expected a percentage 0-100 such as 20 or "20%", got boolean `true`"#
        );
        let trailing = from_json::<Strategy>("{} x").unwrap_err();
        assert_eq!(trailing.field, "");
        assert_eq!(trailing.location, Some((1, 4)));
    }

    #[test]
    fn percents_read_with_or_without_a_sign() {
        let text = "canary:\n  steps:\n    - {replicas: 1, traffic: 20}\n    - {replicas: 2, traffic: 30%}\n    - {replicas: 3, traffic: \"40%\"}\n    - {replicas: 4, traffic: \" 50 % \"}\n";
        let strategy = strategy_from_yaml(text).unwrap();
        let traffic: Vec<String> = strategy
            .canary
            .steps
            .iter()
            .map(|s| s.traffic.unwrap().to_string())
            .collect();
        assert_eq!(traffic, ["20", "30%", "40%", "50%"]);
        let json = from_json::<Strategy>(
            r#"{"canary": {"steps": [{"traffic": "60%"}, {"traffic": 70}]}}"#,
        )
        .unwrap();
        assert_eq!(json.canary.steps[0].traffic.unwrap().to_string(), "60%");
        assert_eq!(json.canary.steps[1].traffic.unwrap().to_string(), "70");
    }
}
