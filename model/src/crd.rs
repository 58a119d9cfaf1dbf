//! The Rollout custom resource, `sluice.dev/v1alpha1`: one release of one
//! workload, and the only place its state lives.
//!
//! The CRD manifest in `deploy/crds/rollouts.yaml` is generated from these
//! types; a test fails when it is stale (`SLUICE_UPDATE_CRD=1 cargo test -p
//! sluice-model crd` writes it again).

use std::collections::BTreeMap;

use crate::spec::Strategy;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

fn is_false(b: &bool) -> bool {
    !*b
}

fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

/// What a deploy platform asks for: a new version of one workload.
#[derive(CustomResource, Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "Rollout",
    namespaced,
    shortname = "ro",
    category = "sluice",
    status = "RolloutStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Step","type":"string","jsonPath":".status.stepLabel"}"#,
    printcolumn = r#"{"name":"Traffic","type":"integer","jsonPath":".status.traffic"}"#,
    printcolumn = r#"{"name":"Stable","type":"string","jsonPath":".status.stableRevision"}"#,
    printcolumn = r#"{"name":"New","type":"string","jsonPath":".status.canaryRevision"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// The existing workload to release, in the rollout's namespace.
    pub workload: WorkloadRef,
    /// The new pod template; either this or `images`. With neither, the
    /// Rollout is *bound* to the workload: it starts a release each time
    /// the workload's own pod template changes (`kubectl apply`, a GitOps
    /// sync), held back by the executor's admission webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub template: Option<serde_json::Value>,
    /// New images for named containers of the current template.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageUpdate>,
    /// How to release: the planner's strategy model.
    #[serde(default)]
    pub strategy: Strategy,
    /// How traffic reaches the workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<TrafficRouting>,
    /// Analyses the strategy's steps refer to by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub analyses: Vec<Analysis>,
    /// What an analysis error past its limit does.
    #[serde(default)]
    pub on_analysis_error: ErrorPolicy,
    /// Held by a person (Pause / Resume).
    #[serde(default, skip_serializing_if = "is_false")]
    pub paused: bool,
}

impl RolloutSpec {
    /// Whether the Rollout is bound to its workload: it names no new
    /// version, and releases each change of the workload's own template.
    pub fn bound(&self) -> bool {
        self.template.is_none() && self.images.is_empty()
    }
}

/// The kind of workload released.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Serialize,
    Deserialize,
    JsonSchema,
)]
pub enum WorkloadKind {
    /// apps/v1 Deployment.
    #[default]
    Deployment,
    /// apps/v1 StatefulSet.
    StatefulSet,
}

/// The workload a rollout releases.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRef {
    /// Deployment or StatefulSet.
    pub kind: WorkloadKind,
    /// Its name.
    pub name: String,
}

impl WorkloadRef {
    /// `Deployment` or `StatefulSet`.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
        }
    }
}

/// A new image for one container.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageUpdate {
    /// The container's name.
    pub container: String,
    /// The new image.
    pub image: String,
}

/// How traffic reaches the workload.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficRouting {
    /// The Service clients use, pinned to the stable pods during a release.
    pub stable_service: String,
    /// The Service selecting new pods; created when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_service: Option<String>,
    /// An NGINX Ingress routing to the stable Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nginx: Option<NginxIngress>,
    /// A Gateway API HTTPRoute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_route: Option<NamedRoute>,
    /// An Istio VirtualService.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_service: Option<VirtualServiceRef>,
}

/// An NGINX Ingress.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NginxIngress {
    /// The stable Ingress's name.
    pub ingress: String,
}

/// A routing object by name.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamedRoute {
    /// Its name.
    pub name: String,
}

/// An Istio VirtualService.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualServiceRef {
    /// Its name.
    pub name: String,
    /// HTTP routes to manage, by name; empty manages all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
}

/// What an analysis error past its limit does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum ErrorPolicy {
    /// Pause for a person.
    #[default]
    Pause,
    /// Roll back.
    Rollback,
}

/// A named set of metrics (the gate's model, as YAML).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Analysis {
    /// Unique in the rollout.
    pub name: String,
    /// The metrics.
    pub metrics: Vec<Metric>,
    /// Arguments for `{{args.NAME}}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, String>,
}

/// One metric; see the gate's documentation for the semantics.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Metric {
    /// Unique in the analysis.
    pub name: String,
    /// A PromQL template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// A built-in template instead of `query`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Passes when this holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_condition: Option<MetricCondition>,
    /// Fails when this holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_condition: Option<MetricCondition>,
    /// Time between measurements, e.g. `1m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Measurements to take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// Wait before the first, e.g. `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay: Option<String>,
    /// Failed measurements tolerated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_limit: Option<u32>,
    /// Inconclusive measurements tolerated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inconclusive_limit: Option<u32>,
    /// Consecutive errors tolerated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_error_limit: Option<u32>,
    /// Consecutive successes that pass early.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_success_limit: Option<u32>,
    /// Recorded, never decides.
    #[serde(default, skip_serializing_if = "is_false")]
    pub dry_run: bool,
}

/// A threshold or a comparison.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricCondition {
    /// Every (success) or any (failure) value within `[min, max]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<Threshold>,
    /// Canary against stable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comparison: Option<Comparison>,
}

/// Bounds, inclusive; unset is open.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Threshold {
    /// Lower bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Upper bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

/// Canary against stable.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Comparison {
    /// The stable side's query; the metric's with revisions swapped when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_query: Option<String>,
    /// Allowed ratio.
    pub max_ratio: f64,
    /// Allowed absolute slack.
    #[serde(default)]
    pub slack: f64,
    /// Which way is worse.
    #[serde(default)]
    pub direction: Direction,
}

/// Which way a compared value gets worse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum Direction {
    /// Errors, latency.
    #[default]
    HigherIsWorse,
    /// Success rate.
    LowerIsWorse,
}

/// Where a rollout is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// Accepted, not started.
    #[default]
    Pending,
    /// Moving through its steps.
    Progressing,
    /// Waiting for Promote or Resume, or a timed pause.
    Paused,
    /// Bringing traffic and pods back to stable.
    RollingBack,
    /// Every step done.
    Succeeded,
    /// Rolled back; Retry starts again.
    RolledBack,
    /// Could neither proceed nor roll back by itself.
    Failed,
}

/// Where the current step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum StepState {
    /// Workload patched; waiting for pods.
    #[default]
    Upgrading,
    /// Moving traffic.
    Routing,
    /// Running analyses.
    Analyzing,
    /// In the step's pause.
    Paused,
    /// Done.
    Completed,
}

/// A verdict, as the gate gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Verdict {
    /// Healthy.
    Pass,
    /// A condition breached.
    Fail,
    /// Not enough evidence.
    Inconclusive,
    /// No data could be had.
    Error,
}

/// One measurement kept as evidence.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    /// The metric.
    pub metric: String,
    /// Successful, Failed, Inconclusive or Error.
    pub outcome: String,
    /// The query sent.
    pub query: String,
    /// The first value returned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The condition that decided.
    pub decided_by: String,
    /// For humans.
    pub message: String,
    /// When (RFC 3339).
    pub time: String,
}

/// What happened at one step.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepRecord {
    /// 0-based batch.
    pub index: u32,
    /// New pods.
    pub canary_replicas: u32,
    /// Traffic percent.
    pub traffic: u32,
    /// Where it got to.
    pub state: StepState,
    /// Started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    /// Finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    /// The analyses' verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// The measurements that decided it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<Evidence>,
}

/// A standard condition.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutCondition {
    /// e.g. `Progressing`, `Healthy`.
    #[serde(rename = "type")]
    pub kind: String,
    /// True, False or Unknown.
    pub status: String,
    /// CamelCase reason.
    pub reason: String,
    /// For humans.
    pub message: String,
    /// RFC 3339.
    pub last_transition_time: String,
    /// The Rollout's `metadata.generation` the condition was set from.
    #[serde(default)]
    pub observed_generation: i64,
}

/// What the executor observed and did.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// The phase.
    #[serde(default)]
    pub phase: Phase,
    /// 0-based current batch.
    #[serde(default)]
    pub current_step: u32,
    /// Where it is.
    #[serde(default)]
    pub step_state: StepState,
    /// Batches in the plan.
    #[serde(default)]
    pub total_steps: u32,
    /// `current/total`, for kubectl.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub step_label: String,
    /// Revision of the new pods.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub canary_revision: String,
    /// Revision of the old pods; once a release succeeded, the released one
    /// (the same as `canaryRevision`: every pod runs it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stable_revision: String,
    /// New pods wanted now.
    #[serde(default)]
    pub canary_replicas: u32,
    /// New pods ready.
    #[serde(default)]
    pub ready_canary_replicas: u32,
    /// Traffic on the new version.
    #[serde(default)]
    pub traffic: u32,
    /// Per-step history.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepRecord>,
    /// For humans.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Standard conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<RolloutCondition>,
    /// The generation last acted on.
    #[serde(default)]
    pub observed_generation: i64,
    /// When a timed pause ends (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_until: Option<String>,
    /// The verdict of the current step's analysis, once the gate gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisResult>,
    /// When handing the workload back began or may begin (RFC 3339): after
    /// the last step (blue-green: after its rollback window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handback_after: Option<String>,
    /// When the workload was given back to its own controller (RFC 3339).
    /// From then on the release only waits for that controller to finish:
    /// Pause and Abort no longer apply (the old version's pods are already
    /// going), and it ends `Succeeded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handing_back_since: Option<String>,
    /// What this status releases: a digest of the workload and the new
    /// template or images it asks for. A spec whose digest differs is a new
    /// release; any other change (pause, strategy, analyses) is a control
    /// of the release in flight.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub release: String,
    /// When the release began (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    /// When the current batch's progress deadline started counting (RFC
    /// 3339): the step's start, or the last Resume, since time held by a
    /// person does not count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_since: Option<String>,
    /// When it reached a terminal phase (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    /// Revisions of earlier new versions this release supersedes (a new
    /// spec arrived mid-release): their pods go first, and none is left
    /// when the release ends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired_revisions: Vec<String>,
    /// A digest of the strategy the release's steps were made from: when
    /// the strategy changes mid-release, the release starts over from its
    /// first step with the new one (its pods move to that step's batch).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub strategy_digest: String,
}

impl RolloutStatus {
    /// Whether the release has given its workload back and only waits for
    /// the workload's own controller to finish: too late to pause or abort.
    #[must_use]
    pub fn handing_back(&self) -> bool {
        matches!(self.phase, Phase::Progressing | Phase::Paused)
            && self.handing_back_since.is_some()
    }
}

/// The gate's verdict on one step.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisResult {
    /// The step it judged.
    pub step: u32,
    /// The verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// Why.
    #[serde(default)]
    pub message: String,
    /// The last measurement of each metric.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<Evidence>,
}

/// The CRD manifest as YAML.
///
/// # Errors
/// Serialization failure (not expected for these types).
pub fn manifest() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;
    let header = "# Generated from model/src/crd.rs; do not edit.\n# Regenerate: SLUICE_UPDATE_CRD=1 cargo test -p sluice-model crd\n";
    Ok(format!(
        "{header}{}",
        serde_yaml::to_string(&Rollout::crd())?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/crds/rollouts.yaml");

    #[test]
    fn crd_manifest_is_up_to_date() {
        let fresh = manifest().unwrap();
        if std::env::var_os("SLUICE_UPDATE_CRD").is_some() {
            std::fs::write(PATH, &fresh).unwrap();
        }
        let stored = std::fs::read_to_string(PATH).unwrap_or_default();
        assert!(
            stored == fresh,
            "deploy/crds/rollouts.yaml is stale: run SLUICE_UPDATE_CRD=1 cargo test -p sluice-model crd"
        );
    }

    #[test]
    fn a_rollout_reads_from_yaml_with_the_planners_strategy() {
        let yaml = r#"
apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata: {name: web, namespace: shop}
spec:
  workload: {kind: Deployment, name: web}
  images: [{container: web, image: "web:2"}]
  strategy:
    canary:
      steps: [{replicas: 1, pause: {}}, {replicas: "50%", traffic: 50, analyses: [health]}]
  traffic: {stableService: web}
  analyses:
    - name: health
      metrics:
        - name: success-rate
          template: request-success-rate
          successCondition: {threshold: {min: 0.99}}
"#;
        let rollout: Rollout = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(rollout.spec.strategy.canary.steps.len(), 2);
        assert_eq!(
            rollout.spec.analyses[0].metrics[0]
                .success_condition
                .as_ref()
                .unwrap()
                .threshold
                .as_ref()
                .unwrap()
                .min,
            Some(0.99)
        );
    }
}
