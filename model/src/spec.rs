//! The strategy as a user writes it: in a Rollout's `spec.strategy`, in a
//! YAML file for the CLI, or as the `sluice.v1.Strategy` message.
//!
//! These types keep the user's words (quantities and durations as text,
//! numbers wide enough to hold a mistake) so that [`crate::validate`] can
//! report every problem with its field path and value. Nothing here is
//! trusted until validated. Reading refuses only a value of the wrong kind
//! (a list for a count, `"abc"` for a percent); [`crate::load`] names its
//! field path, line and column.
//!
//! ```yaml
//! style: Partition            # Partition (default) | Canary | BlueGreen
//! canary:
//!   failureThreshold: 10%     # unready pods a batch may have: "1" or "10%"
//!   progressDeadline: 10m     # how long a batch may take to become ready
//!   backgroundAnalysis:
//!     analyses: [error-rate]
//!     startingStep: 2         # 1-based
//!   steps:
//!     - replicas: 1           # a count ...
//!       matches:              # ... serving only requests that match
//!         - headers: [{name: x-canary, value: "true"}]
//!       pause: {}             # wait for approval
//!     - replicas: 20%         # ... or a percent of the workload
//!       traffic: 20           # percent of requests: 20, 20% or "20%"
//!       analyses: [success-rate]
//!       pause: {duration: 5m} # a timed pause
//!     - replicas: 50%
//!       traffic: 50
//! blueGreen:
//!   rollbackWindow: 10m       # BlueGreen only
//! ```

use serde::{Deserialize, Serialize};

/// A release strategy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Strategy {
    /// How the new version reaches the pods; Partition when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub style: Option<Style>,
    /// The steps and the rules shared by every step.
    #[serde(default)]
    pub canary: CanaryStrategy,
    /// Blue-green specifics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue_green: Option<BlueGreenStrategy>,
}

/// How the new version reaches the workload's pods.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum Style {
    /// The workload is updated batch by batch; no pods beyond its surge.
    #[default]
    Partition,
    /// An extra canary workload beside the whole stable one.
    Canary,
    /// The new version at full size beside the old; traffic switched.
    BlueGreen,
}

/// The steps of a release and the rules they share.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CanaryStrategy {
    /// The steps in order.
    #[serde(default)]
    pub steps: Vec<Step>,
    /// Unready pods a batch may have and still count as ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<Quantity>,
    /// How long a batch may take to become ready, e.g. `10m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline: Option<String>,
    /// Analyses that run from a given step to the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background_analysis: Option<BackgroundAnalysis>,
    /// Restarts of a new pod's container past which the pod counts as
    /// crash-looping and the release rolls back at once (default 2; 0 never
    /// rolls back for restarts alone). A new pod that cannot start
    /// (`ImagePullBackOff`, `ErrImagePull`, `CreateContainerConfigError`)
    /// rolls the release back whatever this says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_limit: Option<u32>,
}

impl CanaryStrategy {
    /// The restart limit, defaulted.
    pub fn restart_limit(&self) -> u32 {
        self.restart_limit.unwrap_or(DEFAULT_RESTART_LIMIT)
    }
}

/// Restarts past which a new pod counts as crash-looping, unless the
/// strategy says otherwise.
pub const DEFAULT_RESTART_LIMIT: u32 = 2;

/// One step of a release.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Step {
    /// Pods on the new version: a count or a percent. Unset keeps the
    /// previous step's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<Quantity>,
    /// Percent of traffic to the new version: `20` or `20%`. Unset
    /// follows the replicas (keeps the previous step's on steps with
    /// matches, and in BlueGreen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<Percent>,
    /// Requests always sent to the new version.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<RequestMatch>,
    /// A wait after the step: `{}` for approval, `{duration: 5m}` timed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<Pause>,
    /// Names of analyses run at this step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub analyses: Vec<String>,
}

/// A count (`3`) or a percent (`"20%"`), kept as written.
///
/// Any number or text is taken as it is, for [`crate::validate`] to judge;
/// only other kinds (a list, a map, `true`) are refused when read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Quantity {
    /// A number as YAML or JSON wrote it.
    Number(i64),
    /// Text such as `"20%"` or `"3"`.
    Text(String),
}

impl schemars::JsonSchema for Quantity {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "IntOrPercent".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        // Kubernetes' structural schema for int-or-string fields.
        schemars::json_schema!({"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]})
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(QuantityVisitor)
    }
}

struct QuantityVisitor;

impl serde::de::Visitor<'_> for QuantityVisitor {
    type Value = Quantity;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(r#"a count such as 3 or a percent such as "20%""#)
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Quantity, E> {
        Ok(Quantity::Number(v))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Quantity, E> {
        i64::try_from(v)
            .map(Quantity::Number)
            .map_err(|_| got(&self, v))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Quantity, E> {
        whole(v).map(Quantity::Number).ok_or_else(|| got(&self, v))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Quantity, E> {
        Ok(Quantity::Text(v.to_owned()))
    }
}

/// A percent of traffic, kept as written: `20`, or `20%` (YAML's plain
/// `20%` and JSON's `"20%"` alike).
///
/// Reading takes any whole number, with or without a `%` sign, so that
/// [`crate::validate`] can name one outside 0-100 (`120%`, `-5`); anything
/// else (`"abc"`, `12.5`, a list) is refused when read, saying what was
/// expected. Written back as read: a number, or text with its sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Percent {
    /// The number written, in any range.
    pub value: i64,
    /// Written with a `%` sign.
    pub sign: bool,
}

/// What a [`Percent`] field takes, as its errors say.
pub const PERCENT_EXPECTED: &str = r#"a percentage 0-100 such as 20 or "20%""#;

/// The pattern a [`Percent`] written as text matches: a whole number (18
/// digits at most, so that it fits an `i64`), then an optional `%`, with
/// spaces around. The Rollout CRD carries it, so the API server refuses
/// text the executor could not read.
pub const PERCENT_PATTERN: &str = r"^\s*[-+]?[0-9]{1,18}\s*%?\s*$";

impl Percent {
    /// `value` percent, written as a number.
    pub fn number(value: i64) -> Self {
        Self { value, sign: false }
    }

    /// Reads text such as `"20%"`, `" 20 % "` or `"20"`.
    ///
    /// # Errors
    /// What was expected and the text, when it is not a whole number with
    /// an optional `%`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        let (number, sign) = match trimmed.strip_suffix('%') {
            Some(number) => (number.trim_end(), true),
            None => (trimmed, false),
        };
        number
            .parse()
            .map(|value| Self { value, sign })
            .map_err(|_| format!("expected {PERCENT_EXPECTED}, got {text:?}"))
    }
}

impl From<u32> for Percent {
    fn from(value: u32) -> Self {
        Self::number(i64::from(value))
    }
}

impl std::fmt::Display for Percent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = if self.sign { "%" } else { "" };
        write!(f, "{}{sign}", self.value)
    }
}

impl Serialize for Percent {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.sign {
            serializer.collect_str(self)
        } else {
            serializer.serialize_i64(self.value)
        }
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PercentVisitor)
    }
}

struct PercentVisitor;

impl serde::de::Visitor<'_> for PercentVisitor {
    type Value = Percent;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(PERCENT_EXPECTED)
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Percent, E> {
        Ok(Percent::number(v))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Percent, E> {
        i64::try_from(v)
            .map(Percent::number)
            .map_err(|_| got(&self, v))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Percent, E> {
        whole(v).map(Percent::number).ok_or_else(|| got(&self, v))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Percent, E> {
        Percent::parse(v).map_err(E::custom)
    }
}

impl schemars::JsonSchema for Percent {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Percent".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        // Int-or-string as Kubernetes wants it; the pattern applies to text
        // only, so numbers out of range still reach validation by name.
        schemars::json_schema!({
            "x-kubernetes-int-or-string": true,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": PERCENT_PATTERN,
        })
    }
}

/// `v` as an `i64` when it is whole and in range: `20.0` is 20.
fn whole(v: f64) -> Option<i64> {
    // i64::MAX rounds up to 2^63 as an f64, so the upper bound is exclusive.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    (v.fract() == 0.0 && (-LIMIT..LIMIT).contains(&v)).then_some(v as i64)
}

/// A number a visitor cannot take, with what it expected.
fn got<E: serde::de::Error>(expected: &dyn serde::de::Expected, v: impl std::fmt::Display) -> E {
    E::custom(format!("expected {expected}, got {v}"))
}

impl std::fmt::Display for Quantity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::Text(t) => write!(f, "{t}"),
        }
    }
}

impl From<&str> for Quantity {
    fn from(text: &str) -> Self {
        Self::Text(text.to_owned())
    }
}

/// A wait at the end of a step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pause {
    /// How long; unset waits for approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
}

/// Conditions on a request that must all hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestMatch {
    /// Header conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<ValueMatch>,
    /// Cookie conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cookies: Vec<ValueMatch>,
    /// Query parameter conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<ValueMatch>,
    /// A path condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
}

/// How a value is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum MatchType {
    /// Equal.
    Exact,
    /// Starts with.
    Prefix,
    /// Matches a regular expression (RE2 syntax, as the routers use).
    RegularExpression,
}

/// A named header, cookie or query parameter and its expected value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ValueMatch {
    /// The header, cookie or parameter name.
    pub name: String,
    /// Exact when unset.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub match_type: Option<MatchType>,
    /// The value to compare with.
    pub value: String,
}

/// A condition on the request path.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathMatch {
    /// Prefix when unset.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub match_type: Option<MatchType>,
    /// The path, starting with `/`.
    pub value: String,
}

/// Analyses that run from a given step to the end.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackgroundAnalysis {
    /// Names of analyses.
    #[serde(default)]
    pub analyses: Vec<String>,
    /// The 1-based step they start at; 1 when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_step: Option<i64>,
}

/// Blue-green specifics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BlueGreenStrategy {
    /// How long the old version is kept after the switch, e.g. `10m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_window: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_percent_is_written_back_as_it_was_read() {
        let steps: Vec<Step> =
            serde_yaml::from_str("[{traffic: 20}, {traffic: 30%}, {traffic: \"+40 %\"}]").unwrap();
        let traffic: Vec<Percent> = steps.iter().filter_map(|s| s.traffic).collect();
        assert_eq!(
            traffic,
            [
                Percent::number(20),
                Percent {
                    value: 30,
                    sign: true
                },
                Percent {
                    value: 40,
                    sign: true
                }
            ]
        );
        assert_eq!(
            serde_json::to_string(&steps).unwrap(),
            r#"[{"traffic":20},{"traffic":"30%"},{"traffic":"40%"}]"#
        );
    }

    #[test]
    fn whole_numbers_written_as_decimals_are_taken() {
        let step: Step = serde_json::from_str(r#"{"replicas": 3.0, "traffic": 20.0}"#).unwrap();
        assert_eq!(step.replicas, Some(Quantity::Number(3)));
        assert_eq!(step.traffic, Some(Percent::number(20)));
    }

    #[test]
    fn a_percent_takes_only_whole_numbers() {
        for bad in ["abc", "12.5%", "%", "", "- 5", "99999999999999999999%"] {
            assert_eq!(
                Percent::parse(bad),
                Err(format!(
                    r#"expected a percentage 0-100 such as 20 or "20%", got {bad:?}"#
                ))
            );
        }
    }
}
