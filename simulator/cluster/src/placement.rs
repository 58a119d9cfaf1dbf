//! Which nodes a pod may run on, as kube-scheduler's filters decide it for
//! the fields workloads use: `nodeSelector`, required node affinity
//! (`matchExpressions` with `In`, `NotIn`, `Exists`, `DoesNotExist`, `Gt`,
//! `Lt`, and `matchFields` on `metadata.name`), and taints with the
//! effects `NoSchedule` and `NoExecute` against the pod's tolerations.
//! Preferred affinity and `PreferNoSchedule` only rank nodes there, and
//! are not looked at here; nor are pod (anti-)affinity and topology
//! spread.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, NodeSelectorRequirement, NodeSelectorTerm, Taint, Toleration,
};
use serde::Deserialize;
use serde_json::Value;

/// What a pod asks of its node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Placement {
    /// `spec.nodeSelector`.
    pub selector: BTreeMap<String, String>,
    /// The terms of required node affinity (any one must match; none
    /// means no constraint).
    pub terms: Vec<NodeSelectorTerm>,
    /// `spec.tolerations`.
    pub tolerations: Vec<Toleration>,
    /// What its containers request.
    pub demand: Demand,
}

/// CPU and memory: what a pod requests, or what a node can give.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Demand {
    /// Thousandths of a CPU.
    pub cpu_milli: u64,
    /// Bytes.
    pub memory: u64,
}

impl Demand {
    /// The requests of one container's `resources`.
    pub fn of_resources(resources: &Value) -> Self {
        let requests = &resources["requests"];
        let read = |key: &str, scale: f64| {
            requests[key]
                .as_str()
                .map(str::to_owned)
                .or_else(|| requests[key].as_f64().map(|n| n.to_string()))
                .and_then(|q| quantity(&q))
                .map_or(0, |v| saturate(v * scale))
        };
        Self {
            cpu_milli: read("cpu", 1000.0),
            memory: read("memory", 1.0),
        }
    }

    /// What a node's `status.allocatable` gives; none said is no limit.
    pub fn allocatable(node: &Value) -> Self {
        let allocatable = &node["status"]["allocatable"];
        let read = |key: &str, scale: f64| {
            allocatable[key]
                .as_str()
                .and_then(quantity)
                .map_or(u64::MAX, |v| saturate(v * scale))
        };
        Self {
            cpu_milli: read("cpu", 1000.0),
            memory: read("memory", 1.0),
        }
    }

    /// True when it asks for nothing.
    pub fn is_zero(self) -> bool {
        self == Self::default()
    }

    /// Both parts added (saturating).
    #[must_use]
    pub fn plus(self, other: Self) -> Self {
        Self {
            cpu_milli: self.cpu_milli.saturating_add(other.cpu_milli),
            memory: self.memory.saturating_add(other.memory),
        }
    }

    /// Both parts taken away (down to zero).
    #[must_use]
    pub fn minus(self, other: Self) -> Self {
        Self {
            cpu_milli: self.cpu_milli.saturating_sub(other.cpu_milli),
            memory: self.memory.saturating_sub(other.memory),
        }
    }

    /// The larger of each part.
    #[must_use]
    pub fn max(self, other: Self) -> Self {
        Self {
            cpu_milli: self.cpu_milli.max(other.cpu_milli),
            memory: self.memory.max(other.memory),
        }
    }
}

fn saturate(v: f64) -> u64 {
    if v.is_finite() && v > 0.0 {
        // `as` saturates at u64::MAX.
        v.ceil() as u64
    } else if v.is_infinite() && v > 0.0 {
        u64::MAX
    } else {
        0
    }
}

/// A Kubernetes quantity (`250m`, `0.5`, `128Mi`, `1G`, `1e3`) as a number.
pub fn quantity(text: &str) -> Option<f64> {
    let text = text.trim();
    let suffixes: [(&str, f64); 13] = [
        ("Ki", 1024f64),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("Pi", 1024f64.powi(5)),
        ("Ei", 1024f64.powi(6)),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    for (suffix, scale) in suffixes {
        if let Some(number) = text.strip_suffix(suffix) {
            return number.parse::<f64>().ok().map(|n| n * scale);
        }
    }
    text.parse::<f64>().ok()
}

/// What the scheduler knows of a node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeFacts {
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its taints that keep pods off (`NoSchedule`, `NoExecute`).
    pub taints: Vec<Taint>,
    /// What it can give its pods.
    pub allocatable: Demand,
}

impl NodeFacts {
    /// Reads a Node object.
    pub fn of(node: &Value) -> Self {
        let labels = BTreeMap::deserialize(&node["metadata"]["labels"]).unwrap_or_default();
        let taints: Vec<Taint> = Vec::deserialize(&node["spec"]["taints"]).unwrap_or_default();
        Self {
            labels,
            taints: taints
                .into_iter()
                .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
                .collect(),
            allocatable: Demand::allocatable(node),
        }
    }
}

impl Placement {
    /// Reads a pod's spec entries: `nodeSelector`, `affinity`,
    /// `tolerations` (missing ones as none).
    pub fn of_spec(node_selector: &Value, affinity: &Value, tolerations: &Value) -> Self {
        let affinity = Affinity::deserialize(affinity).unwrap_or_default();
        Self {
            selector: BTreeMap::deserialize(node_selector).unwrap_or_default(),
            terms: affinity
                .node_affinity
                .and_then(|a| a.required_during_scheduling_ignored_during_execution)
                .map(|r| r.node_selector_terms)
                .unwrap_or_default(),
            tolerations: Vec::deserialize(tolerations).unwrap_or_default(),
            demand: Demand::default(),
        }
    }

    /// Whether it narrows the nodes by their labels or names.
    pub fn selects(&self) -> bool {
        !self.selector.is_empty() || !self.terms.is_empty()
    }

    /// Whether the pod may run on node `name`.
    pub fn fits(&self, name: &str, node: &NodeFacts) -> bool {
        self.selector
            .iter()
            .all(|(k, v)| node.labels.get(k) == Some(v))
            && (self.terms.is_empty() || self.terms.iter().any(|t| term_matches(t, name, node)))
            && node
                .taints
                .iter()
                .all(|taint| self.tolerations.iter().any(|t| tolerates(t, taint)))
    }

    /// Why no node fits, for the pod's PodScheduled condition.
    pub fn refusal(&self) -> &'static str {
        if self.selects() {
            "no node matches the pod's node selector or affinity and tolerates its taints"
        } else {
            "no node the pod tolerates the taints of has room for another pod"
        }
    }
}

/// Whether one toleration lets a pod past one taint.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if t.effect
        .as_deref()
        .is_some_and(|e| !e.is_empty() && e != taint.effect)
    {
        return false;
    }
    let key = t.key.as_deref().unwrap_or_default();
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => key.is_empty() || key == taint.key,
        _ => {
            key == taint.key
                && t.value.as_deref().unwrap_or_default()
                    == taint.value.as_deref().unwrap_or_default()
        }
    }
}

fn term_matches(term: &NodeSelectorTerm, name: &str, node: &NodeFacts) -> bool {
    let expressions = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if expressions.is_empty() && fields.is_empty() {
        // An empty term selects nothing, as kube-scheduler reads it.
        return false;
    }
    expressions
        .iter()
        .all(|r| requirement(r, node.labels.get(&r.key).map(String::as_str)))
        && fields
            .iter()
            .all(|r| r.key == "metadata.name" && requirement(r, Some(name)))
}

fn requirement(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let number = |text: &str| text.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(have), Some(bound)) = (
                value.and_then(number),
                values.first().and_then(|b| number(b)),
            ) else {
                return false;
            };
            if r.operator == "Gt" {
                have > bound
            } else {
                have < bound
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn node(labels: Value, taints: Value) -> NodeFacts {
        NodeFacts::of(&json!({"metadata": {"labels": labels}, "spec": {"taints": taints}}))
    }

    fn pod(spec: Value) -> Placement {
        Placement::of_spec(
            &spec["nodeSelector"],
            &spec["affinity"],
            &spec["tolerations"],
        )
    }

    #[test]
    fn selectors_affinity_and_taints_decide_as_the_scheduler_does() {
        let gpu = node(json!({"pool": "gpu", "cores": "64"}), json!([]));
        let tainted = node(
            json!({"pool": "gpu"}),
            json!([{"key": "dedicated", "value": "ml", "effect": "NoSchedule"}]),
        );
        let soft = node(
            json!({"pool": "web"}),
            json!([{"key": "spot", "effect": "PreferNoSchedule"}]),
        );
        let any = pod(json!({}));
        assert!(any.fits("a", &gpu) && any.fits("c", &soft));
        assert!(
            !any.fits("b", &tainted),
            "NoSchedule keeps an intolerant pod off"
        );
        let selected = pod(json!({"nodeSelector": {"pool": "gpu"}}));
        assert!(selected.fits("a", &gpu) && !selected.fits("c", &soft));
        let tolerant = pod(json!({"nodeSelector": {"pool": "gpu"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}]}));
        assert!(tolerant.fits("b", &tainted));
        let wrong_value = pod(json!({"tolerations": [{"key": "dedicated", "value": "web"}]}));
        assert!(!wrong_value.fits("b", &tainted));
        let everything = pod(json!({"tolerations": [{"operator": "Exists"}]}));
        assert!(everything.fits("b", &tainted));
        let affinity = |expressions: Value| {
            pod(
                json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                {"nodeSelectorTerms": [{"matchExpressions": expressions}]}}}}),
            )
        };
        assert!(
            affinity(json!([{"key": "pool", "operator": "In", "values": ["gpu", "x"]}]))
                .fits("a", &gpu)
        );
        assert!(
            !affinity(json!([{"key": "pool", "operator": "NotIn", "values": ["gpu"]}]))
                .fits("a", &gpu)
        );
        assert!(affinity(json!([{"key": "zone", "operator": "DoesNotExist"}])).fits("a", &gpu));
        assert!(
            affinity(json!([{"key": "cores", "operator": "Gt", "values": ["32"]}])).fits("a", &gpu)
        );
        assert!(
            !affinity(json!([{"key": "cores", "operator": "Lt", "values": ["32"]}]))
                .fits("a", &gpu)
        );
        let by_name = pod(
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["c"]}]}]}}}}),
        );
        assert!(by_name.fits("c", &soft) && !by_name.fits("a", &gpu));
        // Terms are ORed; an empty term selects nothing.
        let either = pod(
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [{}, {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["web"]}]}]}}}}),
        );
        assert!(either.fits("c", &soft) && !either.fits("a", &gpu));
    }
}
