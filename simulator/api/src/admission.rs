//! Admission webhooks, called as kube-apiserver calls them: for each
//! create, update or patch of an object (not its status or scale), every
//! registered MutatingWebhookConfiguration's webhooks in name order whose
//! rules, namespace selector and object selector match get an
//! `admission.k8s.io/v1` AdmissionReview (the object after defaulting, the
//! old object, the operation's options with its field manager, the user)
//! over HTTPS, and their JSON Patches are applied in turn; then the
//! ValidatingWebhookConfigurations' webhooks see the result. A denial is a
//! 403 naming the webhook; a call that fails or passes `timeoutSeconds`
//! (default 10) is a 500 under `failurePolicy: Fail` (the default) and is
//! skipped under `Ignore`. Only `clientConfig.url` is supported (no
//! in-cluster Services here); `reinvocationPolicy` is not.

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};

use crate::{resources::Resource, status::ApiError, store::Store};

/// Who the simulator takes every client for (it authorizes everything).
pub(crate) const USER: &str = "system:admin";
/// That user's groups.
pub(crate) const GROUPS: [&str; 2] = ["system:masters", "system:authenticated"];

/// The admission configuration resources, and whether any was ever made.
#[derive(Default)]
pub(crate) struct Admission {
    /// Set once a webhook configuration is written: until then no write
    /// pays for a lookup.
    registered: AtomicBool,
    /// HTTPS clients by webhook URL and CA bundle.
    clients: Mutex<HashMap<(String, String), kube::Client>>,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("registered", &self.registered.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// The group of the webhook configurations.
pub(crate) const GROUP: &str = "admissionregistration.k8s.io";

/// One write under admission.
#[derive(Debug)]
pub(crate) struct Attempt<'a> {
    /// The resource written.
    pub resource: &'a Resource,
    /// Its version in the request path.
    pub version: &'a str,
    /// `CREATE` or `UPDATE`.
    pub operation: &'static str,
    /// The namespace ("" for cluster-scoped).
    pub namespace: &'a str,
    /// The object's name.
    pub name: &'a str,
    /// The object as it would be stored, defaulted.
    pub object: Value,
    /// The object stored now (updates).
    pub old: Option<Value>,
    /// The request's field manager, if any.
    pub field_manager: Option<&'a str>,
    /// Whether the request is a dry run.
    pub dry_run: bool,
}

impl Admission {
    /// Notes a write to `resource`: a webhook configuration turns admission on.
    pub(crate) fn wrote(&self, resource: &Resource) {
        if resource.group == GROUP {
            self.registered.store(true, Ordering::Relaxed);
        }
    }

    /// Whether any webhook could apply to a write of `resource`.
    pub(crate) fn active(&self, resource: &Resource) -> bool {
        self.registered.load(Ordering::Relaxed) && resource.group != GROUP
    }

    /// The object after every matching mutating webhook, once every
    /// matching validating webhook allowed it.
    ///
    /// # Errors
    /// 403 for a denial, 500 for a failed call under `failurePolicy: Fail`.
    pub(crate) async fn admit(
        &self,
        store: &Store,
        mut attempt: Attempt<'_>,
    ) -> Result<Value, ApiError> {
        for (plural, mutating) in [
            ("mutatingwebhookconfigurations", true),
            ("validatingwebhookconfigurations", false),
        ] {
            if !mutating {
                // As kube-apiserver: the object, as the mutating webhooks
                // left it, is checked (its schema, the built-in rules)
                // before any validating webhook is called.
                let problems = crate::validation::problems(attempt.resource, &attempt.object);
                if !problems.is_empty() {
                    return Err(ApiError::invalid(
                        &attempt.resource.group,
                        &attempt.resource.kind,
                        attempt.name,
                        &problems,
                    ));
                }
            }
            let Some(res) = store.resource(GROUP, plural) else {
                continue;
            };
            let page = store.list(
                &res,
                None,
                &crate::selector::LabelSelector::default(),
                &crate::selector::FieldSelector::default(),
                None,
                None,
            )?;
            let mut configs: Vec<Value> = page
                .items
                .iter()
                .filter_map(|bytes| serde_json::from_slice(bytes).ok())
                .collect();
            configs.sort_by(|a, b| {
                a["metadata"]["name"]
                    .as_str()
                    .cmp(&b["metadata"]["name"].as_str())
            });
            for config in configs {
                for hook in config["webhooks"].as_array().into_iter().flatten() {
                    if !matches(store, hook, &attempt) {
                        continue;
                    }
                    let name = hook["name"].as_str().unwrap_or_default().to_owned();
                    match self.call(hook, &attempt).await {
                        Ok(response) => {
                            if response["allowed"] != true {
                                let message =
                                    response["status"]["message"].as_str().unwrap_or_default();
                                return Err(ApiError::forbidden(format!(
                                    "admission webhook \"{name}\" denied the request: {message}"
                                )));
                            }
                            if mutating && let Some(patch) = response["patch"].as_str() {
                                let bytes: k8s_openapi::ByteString =
                                    serde_json::from_value(json!(patch)).map_err(|e| {
                                        ApiError::internal(format!(
                                            "webhook \"{name}\": its patch is not base64: {e}"
                                        ))
                                    })?;
                                let ops: json_patch::Patch = serde_json::from_slice(&bytes.0)
                                    .map_err(|e| {
                                        ApiError::internal(format!(
                                            "webhook \"{name}\": its patch is not a JSON Patch: {e}"
                                        ))
                                    })?;
                                json_patch::patch(&mut attempt.object, &ops).map_err(|e| {
                                    ApiError::internal(format!(
                                        "webhook \"{name}\": its patch does not apply: {e}"
                                    ))
                                })?;
                            }
                        }
                        Err(why) if hook["failurePolicy"] == "Ignore" => {
                            tracing::debug!(webhook = %name, %why, "webhook failed; ignored");
                        }
                        Err(why) => {
                            return Err(ApiError::internal(format!(
                                "Internal error occurred: failed calling webhook \"{name}\": {why}"
                            )));
                        }
                    }
                }
            }
        }
        Ok(attempt.object)
    }

    /// Sends one review; the response part of the answer.
    async fn call(&self, hook: &Value, attempt: &Attempt<'_>) -> Result<Value, String> {
        let Some(url) = hook["clientConfig"]["url"].as_str() else {
            return Err("only clientConfig.url is supported by the simulator".into());
        };
        let url: url::Url = url.parse().map_err(|e| format!("clientConfig.url: {e}"))?;
        let ca = hook["clientConfig"]["caBundle"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let timeout =
            Duration::from_secs(hook["timeoutSeconds"].as_u64().unwrap_or(10).clamp(1, 30));
        let client = self.client(&url, &ca)?;
        let uid = format!("{:x}", rand_uid());
        let review = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": uid,
                "kind": {"group": attempt.resource.group, "version": attempt.version, "kind": attempt.resource.kind},
                "resource": {"group": attempt.resource.group, "version": attempt.version, "resource": attempt.resource.plural},
                "requestKind": {"group": attempt.resource.group, "version": attempt.version, "kind": attempt.resource.kind},
                "requestResource": {"group": attempt.resource.group, "version": attempt.version, "resource": attempt.resource.plural},
                "name": attempt.name,
                "namespace": attempt.namespace,
                "operation": attempt.operation,
                "userInfo": {"username": USER, "groups": GROUPS},
                "object": attempt.object,
                "oldObject": attempt.old,
                "dryRun": attempt.dry_run,
                "options": {
                    "apiVersion": "meta.k8s.io/v1",
                    "kind": if attempt.operation == "CREATE" { "CreateOptions" } else { "UpdateOptions" },
                    "fieldManager": attempt.field_manager,
                },
            },
        });
        let mut path = url.path().to_owned();
        if let Some(q) = url.query() {
            path = format!("{path}?{q}");
        }
        let request = axum::http::Request::post(path)
            .header(axum::http::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&review).unwrap_or_default())
            .map_err(|e| e.to_string())?;
        let text = tokio::time::timeout(timeout, client.request_text(request))
            .await
            .map_err(|_| format!("context deadline exceeded ({}s)", timeout.as_secs()))?
            .map_err(|e| e.to_string())?;
        let answer: Value =
            serde_json::from_str(&text).map_err(|e| format!("the answer is not JSON: {e}"))?;
        let response = answer["response"].clone();
        if response["uid"] != json!(uid) {
            return Err(format!(
                "the answer's uid {} is not the request's {uid}",
                response["uid"]
            ));
        }
        Ok(response)
    }

    /// A client for one webhook's server, trusting its CA bundle.
    fn client(&self, url: &url::Url, ca: &str) -> Result<kube::Client, String> {
        let base = format!("{}://{}", url.scheme(), url.authority());
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = clients.get(&(base.clone(), ca.to_owned())) {
            return Ok(c.clone());
        }
        let mut config = kube::Config::new(base.parse().map_err(|e| format!("{e}"))?);
        if !ca.is_empty() {
            let pem: k8s_openapi::ByteString = serde_json::from_value(json!(ca))
                .map_err(|e| format!("caBundle is not base64: {e}"))?;
            let ders = rustls_pki_types::CertificateDer::pem_slice_iter(&pem.0)
                .map(|c| c.map(|c| c.to_vec()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("caBundle is not PEM: {e}"))?;
            config.root_cert = Some(ders);
        }
        let client = kube::Client::try_from(config).map_err(|e| e.to_string())?;
        clients.insert((base, ca.to_owned()), client.clone());
        Ok(client)
    }
}

/// A request identifier for one review.
fn rand_uid() -> u128 {
    use std::sync::atomic::AtomicU64;
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    u128::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)
}

/// Whether a list in a rule holds `value` or `*`.
fn listed(list: &Value, value: &str) -> bool {
    list.as_array()
        .is_some_and(|l| l.iter().any(|v| v == "*" || v == value))
}

/// Whether `hook` applies to `attempt`: a rule names its group, version,
/// resource and operation, and its selectors match.
fn matches(store: &Store, hook: &Value, attempt: &Attempt<'_>) -> bool {
    let res = attempt.resource;
    let ruled = hook["rules"].as_array().into_iter().flatten().any(|rule| {
        listed(&rule["apiGroups"], &res.group)
            && listed(&rule["apiVersions"], attempt.version)
            && listed(&rule["resources"], &res.plural)
            && listed(&rule["operations"], attempt.operation)
            && match rule["scope"].as_str() {
                Some("Namespaced") => res.namespaced,
                Some("Cluster") => !res.namespaced,
                _ => true,
            }
    });
    if !ruled {
        return false;
    }
    let labels = |object: &Value| object["metadata"]["labels"].clone();
    let object_labels = labels(&attempt.object);
    if !selects(&hook["objectSelector"], &object_labels) {
        return false;
    }
    if res.namespaced && !hook["namespaceSelector"].is_null() {
        let mut ns_labels = store
            .resource("", "namespaces")
            .and_then(|r| store.get_value(&r, "", attempt.namespace).ok())
            .map(|n| labels(&n))
            .unwrap_or(Value::Null);
        if !ns_labels.is_object() {
            ns_labels = json!({});
        }
        ns_labels["kubernetes.io/metadata.name"] = json!(attempt.namespace);
        if !selects(&hook["namespaceSelector"], &ns_labels) {
            return false;
        }
    }
    true
}

/// Whether a `metav1.LabelSelector` (JSON; null or empty selects all)
/// selects `labels`.
pub(crate) fn selects(selector: &Value, labels: &Value) -> bool {
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    let exact = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| get(k) == v.as_str());
    exact
        && crate::selector::expressions(selector)
            .iter()
            .all(|(key, operator, values)| match *operator {
                "In" => get(key).is_some_and(|v| values.contains(&v)),
                "NotIn" => get(key).is_none_or(|v| !values.contains(&v)),
                "Exists" => get(key).is_some(),
                "DoesNotExist" => get(key).is_none(),
                _ => false,
            })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_selectors_select_as_kubernetes_does() {
        let labels = json!({"kubernetes.io/metadata.name": "shop", "tier": "web"});
        assert!(selects(&Value::Null, &labels));
        assert!(selects(&json!({}), &labels));
        assert!(selects(&json!({"matchLabels": {"tier": "web"}}), &labels));
        assert!(!selects(&json!({"matchLabels": {"tier": "db"}}), &labels));
        let not_system = json!({"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", "sluice-system"]}]});
        assert!(selects(&not_system, &labels));
        assert!(!selects(
            &not_system,
            &json!({"kubernetes.io/metadata.name": "kube-system"})
        ));
        assert!(selects(
            &json!({"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]}),
            &labels
        ));
        assert!(!selects(
            &json!({"matchExpressions": [{"key": "team", "operator": "Exists"}]}),
            &labels
        ));
    }
}
