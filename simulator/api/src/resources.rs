//! The resources the API server knows: the built-in kinds, and whatever
//! CustomResourceDefinitions add.

use std::{collections::BTreeMap, sync::Arc};

use serde_json::Value;

/// Paths of the replica count for the `scale` subresource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalePaths {
    /// e.g. `.spec.replicas`.
    pub spec_replicas: String,
    /// e.g. `.status.replicas`.
    pub status_replicas: String,
    /// e.g. `.status.selector`, when the resource has one.
    pub label_selector: Option<String>,
}

/// One resource of one group, with the versions it is served at.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// API group; empty for core.
    pub group: String,
    /// Served versions; the first is preferred.
    pub versions: Vec<String>,
    /// Plural, as in the URL.
    pub plural: String,
    /// Singular.
    pub singular: String,
    /// Kind.
    pub kind: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Short names for kubectl.
    pub short_names: Vec<String>,
    /// Categories (e.g. `all`).
    pub categories: Vec<String>,
    /// Has a `status` subresource.
    pub status: bool,
    /// Has a `scale` subresource.
    pub scale: Option<ScalePaths>,
    /// Columns for `kubectl get`, as CRDs declare them.
    pub printer_columns: Vec<Value>,
    /// A CRD's OpenAPI schema (of its storage version), whose `default`s
    /// are filled in on every write as a real API server does.
    pub schema: Option<std::sync::Arc<Value>>,
}

impl Resource {
    /// `group/version` or `version` for core.
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_owned()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    /// Whether Kubernetes itself defines it (so strategic merge patches
    /// apply), rather than a CRD: a CRD's resource has its schema, even
    /// in a `*.k8s.io` group such as the Gateway API's.
    pub fn builtin(&self) -> bool {
        self.schema.is_none()
    }

    /// Whether its objects count generations (`metadata.generation`, 1 at
    /// creation and one more at each change of their spec): custom
    /// resources and the built-in kinds kube-apiserver counts them for.
    pub fn counts_generations(&self) -> bool {
        !self.builtin()
            || matches!(
                (self.group.as_str(), self.plural.as_str()),
                ("apps" | "batch" | "admissionregistration.k8s.io", _)
                    | ("flowcontrol.apiserver.k8s.io", _)
                    | ("", "pods")
                    | ("policy", "poddisruptionbudgets")
                    | (
                        "networking.k8s.io",
                        "ingresses" | "ingressclasses" | "networkpolicies"
                    )
                    | ("discovery.k8s.io", "endpointslices")
                    | ("scheduling.k8s.io", "priorityclasses")
                    | ("apiextensions.k8s.io", "customresourcedefinitions")
            )
    }

    /// Whether `version` is served.
    pub fn serves(&self, version: &str) -> bool {
        self.versions.iter().any(|v| v == version)
    }
}

type Row = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    bool,
    &'static [&'static str],
    bool,
    bool,
);

// group, version, plural, kind, namespaced, short names, status, scale
const BUILTIN: &[Row] = &[
    (
        "",
        "v1",
        "namespaces",
        "Namespace",
        false,
        &["ns"],
        true,
        false,
    ),
    ("", "v1", "nodes", "Node", false, &["no"], true, false),
    ("", "v1", "pods", "Pod", true, &["po"], true, false),
    ("", "v1", "services", "Service", true, &["svc"], true, false),
    (
        "",
        "v1",
        "endpoints",
        "Endpoints",
        true,
        &["ep"],
        false,
        false,
    ),
    (
        "",
        "v1",
        "configmaps",
        "ConfigMap",
        true,
        &["cm"],
        false,
        false,
    ),
    ("", "v1", "secrets", "Secret", true, &[], false, false),
    ("", "v1", "events", "Event", true, &["ev"], false, false),
    (
        "",
        "v1",
        "serviceaccounts",
        "ServiceAccount",
        true,
        &["sa"],
        false,
        false,
    ),
    (
        "apps",
        "v1",
        "deployments",
        "Deployment",
        true,
        &["deploy"],
        true,
        true,
    ),
    (
        "apps",
        "v1",
        "replicasets",
        "ReplicaSet",
        true,
        &["rs"],
        true,
        true,
    ),
    (
        "apps",
        "v1",
        "statefulsets",
        "StatefulSet",
        true,
        &["sts"],
        true,
        true,
    ),
    (
        "apps",
        "v1",
        "controllerrevisions",
        "ControllerRevision",
        true,
        &[],
        false,
        false,
    ),
    (
        "apps",
        "v1",
        "daemonsets",
        "DaemonSet",
        true,
        &["ds"],
        true,
        false,
    ),
    (
        "networking.k8s.io",
        "v1",
        "ingresses",
        "Ingress",
        true,
        &["ing"],
        true,
        false,
    ),
    (
        "networking.k8s.io",
        "v1",
        "ingressclasses",
        "IngressClass",
        false,
        &[],
        false,
        false,
    ),
    (
        "discovery.k8s.io",
        "v1",
        "endpointslices",
        "EndpointSlice",
        true,
        &[],
        false,
        false,
    ),
    (
        "coordination.k8s.io",
        "v1",
        "leases",
        "Lease",
        true,
        &[],
        false,
        false,
    ),
    (
        "events.k8s.io",
        "v1",
        "events",
        "Event",
        true,
        &["ev"],
        false,
        false,
    ),
    (
        "admissionregistration.k8s.io",
        "v1",
        "mutatingwebhookconfigurations",
        "MutatingWebhookConfiguration",
        false,
        &[],
        false,
        false,
    ),
    (
        "admissionregistration.k8s.io",
        "v1",
        "validatingwebhookconfigurations",
        "ValidatingWebhookConfiguration",
        false,
        &[],
        false,
        false,
    ),
    (
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        false,
        &["crd", "crds"],
        true,
        false,
    ),
    // Stored (with their defaults and the checks every object gets) but
    // acted on by no controller: what charts ship beside their workloads.
    (
        "",
        "v1",
        "limitranges",
        "LimitRange",
        true,
        &["limits"],
        false,
        false,
    ),
    (
        "",
        "v1",
        "persistentvolumeclaims",
        "PersistentVolumeClaim",
        true,
        &["pvc"],
        true,
        false,
    ),
    (
        "",
        "v1",
        "persistentvolumes",
        "PersistentVolume",
        false,
        &["pv"],
        true,
        false,
    ),
    (
        "",
        "v1",
        "podtemplates",
        "PodTemplate",
        true,
        &[],
        false,
        false,
    ),
    (
        "",
        "v1",
        "replicationcontrollers",
        "ReplicationController",
        true,
        &["rc"],
        true,
        false,
    ),
    (
        "",
        "v1",
        "resourcequotas",
        "ResourceQuota",
        true,
        &["quota"],
        true,
        false,
    ),
    (
        "autoscaling",
        "v2",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        true,
        &["hpa"],
        true,
        false,
    ),
    ("batch", "v1", "jobs", "Job", true, &[], true, false),
    (
        "batch",
        "v1",
        "cronjobs",
        "CronJob",
        true,
        &["cj"],
        true,
        false,
    ),
    (
        "certificates.k8s.io",
        "v1",
        "certificatesigningrequests",
        "CertificateSigningRequest",
        false,
        &["csr"],
        true,
        false,
    ),
    (
        "networking.k8s.io",
        "v1",
        "networkpolicies",
        "NetworkPolicy",
        true,
        &["netpol"],
        false,
        false,
    ),
    (
        "node.k8s.io",
        "v1",
        "runtimeclasses",
        "RuntimeClass",
        false,
        &[],
        false,
        false,
    ),
    (
        "policy",
        "v1",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        true,
        &["pdb"],
        true,
        false,
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        false,
        &[],
        false,
        false,
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "ClusterRole",
        false,
        &[],
        false,
        false,
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "RoleBinding",
        true,
        &[],
        false,
        false,
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "roles",
        "Role",
        true,
        &[],
        false,
        false,
    ),
    (
        "scheduling.k8s.io",
        "v1",
        "priorityclasses",
        "PriorityClass",
        false,
        &["pc"],
        false,
        false,
    ),
    (
        "storage.k8s.io",
        "v1",
        "csidrivers",
        "CSIDriver",
        false,
        &[],
        false,
        false,
    ),
    (
        "storage.k8s.io",
        "v1",
        "storageclasses",
        "StorageClass",
        false,
        &["sc"],
        false,
        false,
    ),
    (
        "storage.k8s.io",
        "v1",
        "volumeattachments",
        "VolumeAttachment",
        false,
        &[],
        true,
        false,
    ),
];

/// Resources that `kubectl get all` lists.
const IN_ALL: &[&str] = &[
    "pods",
    "services",
    "deployments",
    "replicasets",
    "statefulsets",
    "daemonsets",
    "replicationcontrollers",
    "jobs",
    "cronjobs",
    "horizontalpodautoscalers",
];

/// The set of known resources, keyed by (group, plural).
#[derive(Debug, Clone, Default)]
pub struct Registry {
    by_plural: BTreeMap<(String, String), Arc<Resource>>,
}

impl Registry {
    /// The built-in kinds.
    pub fn builtin() -> Self {
        let mut registry = Self::default();
        for &(group, version, plural, kind, namespaced, short, status, scale) in BUILTIN {
            registry.insert(Resource {
                group: group.into(),
                versions: vec![version.into()],
                plural: plural.into(),
                singular: kind.to_lowercase(),
                kind: kind.into(),
                namespaced,
                short_names: short.iter().map(|s| (*s).to_owned()).collect(),
                categories: if IN_ALL.contains(&plural) {
                    vec!["all".into()]
                } else {
                    Vec::new()
                },
                status,
                scale: scale.then(|| ScalePaths {
                    spec_replicas: ".spec.replicas".into(),
                    status_replicas: ".status.replicas".into(),
                    label_selector: Some(".status.selector".into()),
                }),
                printer_columns: Vec::new(),
                schema: None,
            });
        }
        registry
    }

    /// Adds or replaces a resource.
    pub fn insert(&mut self, resource: Resource) {
        self.by_plural.insert(
            (resource.group.clone(), resource.plural.clone()),
            Arc::new(resource),
        );
    }

    /// Removes a resource.
    pub fn remove(&mut self, group: &str, plural: &str) {
        self.by_plural
            .remove(&(group.to_owned(), plural.to_owned()));
    }

    /// A resource by group and plural.
    pub fn get(&self, group: &str, plural: &str) -> Option<Arc<Resource>> {
        self.by_plural
            .get(&(group.to_owned(), plural.to_owned()))
            .cloned()
    }

    /// A resource by group and kind.
    pub fn by_kind(&self, group: &str, kind: &str) -> Option<Arc<Resource>> {
        self.by_plural
            .values()
            .find(|r| r.group == group && r.kind == kind)
            .cloned()
    }

    /// Every resource.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Resource>> {
        self.by_plural.values()
    }

    /// Groups and their versions, core first, in a stable order.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in self.by_plural.values() {
            let versions = groups.entry(r.group.clone()).or_default();
            for v in &r.versions {
                if !versions.contains(v) {
                    versions.push(v.clone());
                }
            }
        }
        groups.into_iter().collect()
    }
}

/// The resource a CustomResourceDefinition defines, or why it defines none.
///
/// # Errors
/// Causes (field, message) for a CRD that is not well formed.
pub fn from_crd(crd: &Value) -> Result<Resource, Vec<(String, String)>> {
    let spec = &crd["spec"];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let mut causes = Vec::new();
    let group = text(&spec["group"]);
    let names = &spec["names"];
    let plural = text(&names["plural"]);
    let kind = text(&names["kind"]);
    if group.is_empty() {
        causes.push(("spec.group".into(), "Required value".into()));
    }
    if plural.is_empty() {
        causes.push(("spec.names.plural".into(), "Required value".into()));
    }
    if kind.is_empty() {
        causes.push(("spec.names.kind".into(), "Required value".into()));
    }
    let expected = format!("{plural}.{group}");
    let name = text(&crd["metadata"]["name"]);
    if !plural.is_empty() && !group.is_empty() && name != expected {
        causes.push((
            "metadata.name".into(),
            format!("must be spec.names.plural+\".\"+spec.group: {expected:?}"),
        ));
    }
    let versions: Vec<&Value> = spec["versions"]
        .as_array()
        .map(|v| v.iter().collect())
        .unwrap_or_default();
    let served: Vec<&Value> = versions
        .iter()
        .copied()
        .filter(|v| v["served"].as_bool().unwrap_or(false))
        .collect();
    if served.is_empty() {
        causes.push((
            "spec.versions".into(),
            "must have at least one served version".into(),
        ));
    }
    if !causes.is_empty() {
        return Err(causes);
    }
    // The storage version first: it is the preferred one.
    let mut ordered = served.clone();
    ordered.sort_by_key(|v| !v["storage"].as_bool().unwrap_or(false));
    let first = ordered[0];
    let subresources = &first["subresources"];
    let scale = subresources.get("scale").map(|s| ScalePaths {
        spec_replicas: s["specReplicasPath"]
            .as_str()
            .unwrap_or(".spec.replicas")
            .to_owned(),
        status_replicas: s["statusReplicasPath"]
            .as_str()
            .unwrap_or(".status.replicas")
            .to_owned(),
        label_selector: s["labelSelectorPath"].as_str().map(str::to_owned),
    });
    let list = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(Resource {
        singular: names["singular"]
            .as_str()
            .map_or_else(|| kind.to_lowercase(), str::to_owned),
        group,
        versions: ordered.iter().map(|v| text(&v["name"])).collect(),
        plural,
        kind,
        namespaced: spec["scope"].as_str() != Some("Cluster"),
        short_names: list(&names["shortNames"]),
        categories: list(&names["categories"]),
        status: subresources.get("status").is_some(),
        scale,
        printer_columns: first["additionalPrinterColumns"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
        schema: first["schema"]
            .get("openAPIV3Schema")
            .cloned()
            .map(std::sync::Arc::new),
    })
}
