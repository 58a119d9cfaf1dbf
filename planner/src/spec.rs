//! The strategy as a user writes it: in a Rollout's `spec.strategy`, in a
//! YAML file for the CLI, or as the `sluice.v1.Strategy` message.
//!
//! These types keep the user's words (quantities and durations as text,
//! numbers wide enough to hold a mistake) so that [`crate::validate`] can
//! report every problem with its field path and value. Nothing here is
//! trusted until validated.
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
//!       traffic: 20
//!       analyses: [success-rate]
//!       pause: {duration: 5m} # a timed pause
//!     - replicas: 50%
//!       traffic: 50
//! blueGreen:
//!   rollbackWindow: 10m       # BlueGreen only
//! ```

use serde::{Deserialize, Serialize};

/// A release strategy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
}

/// One step of a release.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Step {
    /// Pods on the new version: a count or a percent. Unset keeps the
    /// previous step's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<Quantity>,
    /// Percent of traffic to the new version. Unset follows the replicas
    /// (keeps the previous step's on steps with matches, and in BlueGreen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<i64>,
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Quantity {
    /// A number as YAML or JSON wrote it.
    Number(i64),
    /// Text such as `"20%"` or `"3"`.
    Text(String),
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for Quantity {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "IntOrPercent".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        // Kubernetes' structural schema for int-or-string fields.
        schemars::json_schema!({"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]})
    }
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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pause {
    /// How long; unset waits for approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
}

/// Conditions on a request that must all hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum MatchType {
    /// Equal.
    Exact,
    /// Starts with.
    Prefix,
    /// Matches a regular expression (RE2 syntax, as the routers use).
    RegularExpression,
}

/// A named header, cookie or query parameter and its expected value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathMatch {
    /// Prefix when unset.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub match_type: Option<MatchType>,
    /// The path, starting with `/`.
    pub value: String,
}

/// Analyses that run from a given step to the end.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BlueGreenStrategy {
    /// How long the old version is kept after the switch, e.g. `10m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_window: Option<String>,
}
