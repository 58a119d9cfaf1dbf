//! The admission webhook the API server calls (HTTPS, `admission.k8s.io/v1`
//! AdmissionReview): it holds a bound workload back in the same request
//! that changes its pod template, so that its own controller never rolls
//! the change out, and refuses a second binding of one workload.
//!
//! - `POST /mutate`: Deployment updates. A change of the pod template of a
//!   Deployment a Rollout is bound to gets the hold ([`hold`]); everything
//!   else passes as it is, and so do Sluice's own writes (field manager
//!   `sluice`, as every executor write names it).
//! - `POST /validate`: Rollout creates and updates. A workload takes one
//!   bound Rollout and no other Rollout beside it.
//!
//! Answers read only an in-memory copy of the Rollouts (a watch), never
//! the API server, so a slow API server does not slow them; until that
//! copy has listed, requests are refused with a reason rather than let
//! through unheld. A review that cannot be read gets a well-formed denial.
//! The serving certificate is read from files and read again when they
//! change (a Secret mounted by cert-manager, say), so a rotation fails no
//! request.

pub mod certs;
pub mod hold;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use axum::{
    Router,
    extract::{DefaultBodyLimit, State},
    http::header,
    response::IntoResponse,
    routing::post,
};
use futures::StreamExt;
use kube::{
    ResourceExt,
    runtime::{WatchStreamExt, reflector},
};
use rustls::{
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde_json::{Value, json};
use sluice_runtime::{Error, auth::Scope};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::{crd::Rollout, crd::WorkloadKind, metrics::Metrics};
use hold::Answer;

/// The largest review read: two objects at the API server's limit (3 MiB
/// each) and the rest of the request.
pub const MAX_REVIEW_BYTES: usize = 8 << 20;

/// How long a review waits for the first list of Rollouts before it is
/// refused (well within the API server's default webhook timeout, 10 s).
const SYNC_WAIT: Duration = Duration::from_secs(3);

/// The cluster's Rollouts as a watch last saw them (without their status),
/// for the questions a review or a start asks: which Rollout is bound to a
/// workload, which other Rollouts name it.
#[derive(Clone)]
pub struct Bindings {
    rollouts: reflector::Store<Rollout>,
    unlisted: crate::watch::Unlisted,
}

impl std::fmt::Debug for Bindings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bindings").finish_non_exhaustive()
    }
}

impl Bindings {
    /// Starts watching the Rollouts through `client`, until `stop`.
    pub fn start(client: kube::Client, stop: CancellationToken) -> Self {
        Self::start_in(client, &Scope::All, stop)
    }

    /// Starts watching the Rollouts of the namespaces of `scope`.
    pub fn start_in(client: kube::Client, scope: &Scope, stop: CancellationToken) -> Self {
        let (rollouts, writer) = reflector::store();
        let (events, unlisted) = crate::watch::tracked::<Rollout>(&client, scope, rollouts.clone());
        let watch = reflector::reflector(
            writer,
            events.modify(|r: &mut Rollout| {
                r.metadata.managed_fields = None;
                r.status = None;
            }),
        );
        tokio::spawn(async move {
            let run = watch.for_each(|event| async move {
                if let Err(error) = event {
                    tracing::debug!(%error, "the Rollout watch of the bindings");
                }
            });
            tokio::select! {
                () = run => {}
                () = stop.cancelled() => {}
            }
        });
        Self { rollouts, unlisted }
    }

    /// Waits (a bounded time) for the watch's first list, and says
    /// whether `namespace`'s Rollouts are in it.
    ///
    /// # Errors
    /// Why no answer can be given yet.
    pub async fn synced(&self, namespace: &str) -> Result<(), String> {
        match tokio::time::timeout(SYNC_WAIT, self.rollouts.wait_until_ready()).await {
            Ok(Ok(())) if self.unlisted.contains(namespace) => Err(format!(
                "Sluice cannot read the Rollouts of namespace {namespace:?} yet (the API server \
                 refuses the list: is the executor's Role there?); retry once it can"
            )),
            Ok(Ok(())) => Ok(()),
            _ => Err("Sluice has not read the cluster's Rollouts yet; retry in a moment".into()),
        }
    }

    /// Waits until the watch has seen Rollout `namespace/name` (for tests
    /// that write one and then ask about it).
    pub async fn wait_for(&self, namespace: &str, name: &str) {
        let key = reflector::ObjectRef::new(name).within(namespace);
        while self.rollouts.get(&key).is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The Rollouts of `namespace` naming `workload`, other than `except`:
    /// each with its name and whether it is bound, oldest first (by
    /// creation, then name), so that when two bindings of one workload got
    /// past the webhook at once, the first made is the one that holds it.
    pub fn naming(
        &self,
        namespace: &str,
        workload: &crate::crd::WorkloadRef,
        except: &str,
    ) -> Vec<(String, bool)> {
        let mut found = self.rollouts.state_filter(|r| {
            r.metadata.namespace.as_deref() == Some(namespace)
                && r.spec.workload == *workload
                && r.metadata.name.as_deref() != Some(except)
        });
        found.sort_by(|a, b| {
            let age = |r: &Rollout| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
            age(a)
                .cmp(&age(b))
                .then_with(|| a.name_any().cmp(&b.name_any()))
        });
        found
            .iter()
            .map(|r| (r.name_any(), r.spec.bound()))
            .collect()
    }
}

/// The webhook configurations of `deploy/base/webhook.yaml`, each webhook's
/// `clientConfig` pointed at `https://{addr}{path}` and trusting `ca_pem`
/// (for a webhook served outside the cluster: tests, the demo, a
/// development machine).
///
/// # Panics
/// Never: the file is part of this build and a test reads it.
pub fn registration(addr: SocketAddr, ca_pem: &[u8]) -> Vec<Value> {
    use serde::Deserialize as _;
    let ca_bundle =
        serde_json::to_value(k8s_openapi::ByteString(ca_pem.to_vec())).unwrap_or(Value::Null);
    serde_yaml::Deserializer::from_str(include_str!("../../../deploy/base/webhook.yaml"))
        .filter_map(|doc| Value::deserialize(doc).ok())
        .map(|mut manifest| {
            for hook in manifest["webhooks"].as_array_mut().into_iter().flatten() {
                let path = hook["clientConfig"]["service"]["path"]
                    .as_str()
                    .unwrap_or("/mutate")
                    .to_owned();
                hook["clientConfig"] =
                    json!({"url": format!("https://{addr}{path}"), "caBundle": ca_bundle});
            }
            manifest
        })
        .collect()
}

/// The webhook's state.
struct Webhook {
    bindings: Bindings,
    metrics: Arc<Metrics>,
}

/// A listener bound for the webhook.
pub struct Bound {
    listener: TcpListener,
    tls: TlsAcceptor,
    addr: SocketAddr,
}

impl Bound {
    /// Binds `addr` (flag `--webhook-addr`) with the certificate files.
    ///
    /// # Errors
    /// [`Error::Bind`], or [`Error::Config`] naming the flag whose file is
    /// unreadable or not PEM.
    pub async fn bind(addr: SocketAddr, cert: &Path, key: &Path) -> Result<Self, Error> {
        Self::bind_with(addr, Arc::new(CertFiles::load(cert, key)?)).await
    }

    /// Binds `addr` serving the certificate `resolver` gives (the one the
    /// executor manages, [`certs::Current`]).
    ///
    /// # Errors
    /// [`Error::Bind`].
    pub async fn bind_with(
        addr: SocketAddr,
        resolver: Arc<dyn ResolvesServerCert>,
    ) -> Result<Self, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::config("--webhook-cert", e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(resolver);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind {
                flag: "--webhook-addr",
                addr,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Io {
            context: "reading the webhook's bound address",
            source,
        })?;
        tracing::info!(webhook_addr = %addr, "webhook listening");
        Ok(Self {
            listener,
            tls: TlsAcceptor::from(Arc::new(config)),
            addr,
        })
    }

    /// The address bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves reviews until `stop`, answering from `bindings`.
    pub async fn serve(self, bindings: Bindings, metrics: Arc<Metrics>, stop: CancellationToken) {
        let app = router(Arc::new(Webhook { bindings, metrics }));
        if let Err(error) =
            sluice_runtime::http::serve(self.listener, Some(self.tls), app, stop).await
        {
            tracing::error!(%error, "the webhook stopped");
        }
    }
}

fn router(webhook: Arc<Webhook>) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/validate", post(validate))
        .layer(DefaultBodyLimit::max(MAX_REVIEW_BYTES))
        .with_state(webhook)
}

/// Answers one AdmissionReview sent to the mutating webhook.
async fn mutate(State(webhook): State<Arc<Webhook>>, body: axum::body::Body) -> impl IntoResponse {
    review(webhook, body, true).await
}

/// Answers one AdmissionReview sent to the validating webhook: allowed or
/// denied, never a patch (a change a validating webhook cannot make).
async fn validate(
    State(webhook): State<Arc<Webhook>>,
    body: axum::body::Body,
) -> impl IntoResponse {
    review(webhook, body, false).await
}

/// Answers one AdmissionReview.
async fn review(
    webhook: Arc<Webhook>,
    body: axum::body::Body,
    may_patch: bool,
) -> impl IntoResponse {
    let start = Instant::now();
    let (kind, result, answer) = match read_review(body).await {
        Ok(body) => webhook.answer(&body, may_patch).await,
        // Too large (or cut off): still a well-formed answer with the
        // reason, under the request's uid when its start names it (the API
        // server takes an answer without it for a failed call).
        Err((why, head)) => (
            String::new(),
            "invalid",
            response(
                "admission.k8s.io/v1",
                &request_uid(&head).unwrap_or_default(),
                &Answer::Deny(format!(
                    "the review could not be read ({why}); at most {MAX_REVIEW_BYTES} bytes are read"
                )),
            ),
        ),
    };
    // The kind comes from the request's body: only the kinds the webhook
    // is registered for are labels, so a caller cannot grow the series.
    let kind = match kind.as_str() {
        "Deployment" | "StatefulSet" | "Rollout" | "" => kind.as_str(),
        _ => "other",
    };
    webhook.metrics.admitted(kind, result, start.elapsed());
    (
        [(header::CONTENT_TYPE, "application/json")],
        answer.to_string(),
    )
}

/// How much of a review too large to read is kept to find its uid.
const HEAD_BYTES: usize = 64 << 10;

/// Reads a review of at most [`MAX_REVIEW_BYTES`]; past that, or when the
/// body breaks off, stops reading and gives the reason and the first
/// [`HEAD_BYTES`] read.
async fn read_review(body: axum::body::Body) -> Result<Vec<u8>, (String, Vec<u8>)> {
    let mut stream = body.into_data_stream();
    let mut read = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => return Err((e.to_string(), head(read))),
        };
        if read.len() + chunk.len() > MAX_REVIEW_BYTES {
            read.extend_from_slice(
                &chunk[..HEAD_BYTES.saturating_sub(read.len()).min(chunk.len())],
            );
            return Err(("the body is too large".into(), head(read)));
        }
        read.extend_from_slice(&chunk);
    }
    Ok(read)
}

fn head(mut bytes: Vec<u8>) -> Vec<u8> {
    bytes.truncate(HEAD_BYTES);
    bytes
}

/// The `request.uid` of a review from its first bytes: kube-apiserver
/// writes `request` with its `uid` first, before the objects.
fn request_uid(head: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(head);
    let request = text.find("\"request\"")?;
    let after = &text[request..];
    let key = after.find("\"uid\"")?;
    let rest = after[key + 5..]
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    let rest = rest.strip_prefix('"')?;
    let uid = &rest[..rest.find('"')?];
    (!uid.is_empty() && uid.len() <= 128 && !uid.contains('\\')).then(|| uid.to_owned())
}

/// A review's answer: `allowed`, with a base64 JSON Patch, or denied with
/// a reason and code 403.
fn response(api_version: &str, uid: &str, answer: &Answer) -> Value {
    let mut response = json!({"uid": uid, "allowed": true});
    match answer {
        Answer::Allow => {}
        Answer::Patch(ops) => {
            let bytes = serde_json::to_vec(ops).unwrap_or_default();
            response["patchType"] = json!("JSONPatch");
            response["patch"] =
                serde_json::to_value(k8s_openapi::ByteString(bytes)).unwrap_or(Value::Null);
        }
        Answer::Deny(reason) => {
            response["allowed"] = json!(false);
            response["status"] = json!({"code": 403, "reason": "Forbidden", "message": reason});
        }
    }
    json!({"apiVersion": api_version, "kind": "AdmissionReview", "response": response})
}

impl Webhook {
    /// The review's answer, with the kind it concerned and the result for
    /// the metrics.
    async fn answer(&self, body: &[u8], may_patch: bool) -> (String, &'static str, Value) {
        let invalid = |why: String| {
            (
                String::new(),
                "invalid",
                response(
                    "admission.k8s.io/v1",
                    "",
                    &Answer::Deny(format!("not an AdmissionReview: {why}")),
                ),
            )
        };
        let review: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return invalid(e.to_string()),
        };
        let request = &review["request"];
        let Some(uid) = request["uid"].as_str() else {
            return invalid("request.uid is missing".into());
        };
        let api_version = match review["apiVersion"].as_str() {
            Some(v @ ("admission.k8s.io/v1" | "admission.k8s.io/v1beta1")) => v,
            other => {
                return invalid(format!(
                    "apiVersion must be admission.k8s.io/v1, got {other:?}"
                ));
            }
        };
        let kind = request["kind"]["kind"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let group = request["kind"]["group"].as_str().unwrap_or_default();
        let operation = request["operation"].as_str().unwrap_or_default();
        let namespace = request["namespace"].as_str().unwrap_or_default();
        let answer = match (group, kind.as_str(), operation) {
            // Sluice's own writes (the release's begin, hand-back, rollback)
            // pass as they are: the hold is theirs to set and take off.
            ("apps", "Deployment" | "StatefulSet", "UPDATE")
                if request["options"]["fieldManager"] == crate::keys::FIELD_MANAGER =>
            {
                Answer::Allow
            }
            ("apps", workload @ ("Deployment" | "StatefulSet"), "UPDATE") => {
                let (kind, update): (_, fn(&Value, &Value, &str) -> Answer) =
                    if workload == "Deployment" {
                        (WorkloadKind::Deployment, hold::deployment_update)
                    } else {
                        (WorkloadKind::StatefulSet, hold::statefulset_update)
                    };
                let name = request["name"].as_str().unwrap_or_default();
                match self.binding(namespace, kind, name).await {
                    Err(why) => Answer::Deny(why),
                    Ok(None) => Answer::Allow,
                    Ok(Some(binding)) => {
                        update(&request["oldObject"], &request["object"], &binding)
                    }
                }
            }
            ("sluice.dev", "Rollout", operation @ ("CREATE" | "UPDATE")) => {
                let old = (operation == "UPDATE")
                    .then(|| serde_json::from_value::<Rollout>(request["oldObject"].clone()).ok())
                    .flatten();
                let rollout = serde_json::from_value::<Rollout>(request["object"].clone());
                let update = match (&old, &rollout) {
                    (Some(old), Ok(new)) => hold::rollout_update(old, new),
                    _ => None,
                };
                match (rollout, update) {
                    // The API server's schema refuses what does not parse.
                    (Err(_), _) => Answer::Allow,
                    (Ok(_), Some(answer)) => answer,
                    (Ok(rollout), None) => match self.bindings.synced(namespace).await {
                        Err(why) => Answer::Deny(why),
                        Ok(()) => {
                            let others: Vec<_> = self
                                .bindings
                                .naming(namespace, &rollout.spec.workload, &rollout.name_any())
                                .into_iter()
                                .map(|(name, bound)| (name, bound, rollout.spec.workload.clone()))
                                .collect();
                            hold::rollout_admission(&rollout.name_any(), &rollout.spec, &others)
                        }
                    },
                }
            }
            _ => Answer::Allow,
        };
        let answer = match answer {
            Answer::Patch(_) if !may_patch => Answer::Allow,
            other => other,
        };
        let result = match &answer {
            Answer::Allow => "allowed",
            Answer::Patch(_) => "held",
            Answer::Deny(_) => "denied",
        };
        if let Answer::Deny(reason) = &answer {
            tracing::info!(%kind, %namespace, name = request["name"].as_str().unwrap_or_default(), %reason, "admission denied");
        }
        (kind, result, response(api_version, uid, &answer))
    }

    /// The Rollout bound to a workload, if any.
    async fn binding(
        &self,
        namespace: &str,
        kind: WorkloadKind,
        name: &str,
    ) -> Result<Option<String>, String> {
        self.bindings.synced(namespace).await?;
        let workload = crate::crd::WorkloadRef {
            kind,
            name: name.to_owned(),
        };
        Ok(self
            .bindings
            .naming(namespace, &workload, "")
            .into_iter()
            .find_map(|(name, bound)| bound.then_some(name)))
    }
}

/// The serving certificate, from files read again when they change.
#[derive(Debug)]
struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
    current: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    /// The files' modification times when read.
    stamp: (Option<SystemTime>, Option<SystemTime>),
    /// When the files were last looked at.
    checked: Instant,
}

/// How often the files are looked at for a change, at most.
const RECHECK: Duration = Duration::from_secs(1);

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl CertFiles {
    fn load(cert: &Path, key: &Path) -> Result<Self, Error> {
        let loaded = Self::read(cert, key)?;
        Ok(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: Mutex::new(loaded),
        })
    }

    fn read(cert: &Path, key: &Path) -> Result<Loaded, Error> {
        let stamp = (modified(cert), modified(key));
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| Error::config("--webhook-cert", format!("{}: {e}", cert.display())))?;
        if chain.is_empty() {
            return Err(Error::config(
                "--webhook-cert",
                format!("{}: no certificate in it", cert.display()),
            ));
        }
        let private = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| Error::config("--webhook-key", format!("{}: {e}", key.display())))?;
        let signing = rustls::crypto::ring::sign::any_supported_type(&private)
            .map_err(|e| Error::config("--webhook-key", format!("{}: {e}", key.display())))?;
        Ok(Loaded {
            key: Arc::new(CertifiedKey::new(chain, signing)),
            stamp,
            checked: Instant::now(),
        })
    }
}

impl ResolvesServerCert for CertFiles {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.checked.elapsed() >= RECHECK {
            current.checked = Instant::now();
            let stamp = (modified(&self.cert), modified(&self.key));
            if stamp != current.stamp {
                // A half-written pair fails to read or to match: the old
                // one serves until both files agree.
                // Looked at once per change of the files: a bad pair is
                // reported once, and read again when either file changes.
                current.stamp = stamp;
                match Self::read(&self.cert, &self.key) {
                    Ok(loaded) if loaded.key.keys_match().is_ok() => {
                        tracing::info!(cert = %self.cert.display(), "webhook certificate reloaded");
                        *current = loaded;
                    }
                    Ok(_) => tracing::warn!(
                        cert = %self.cert.display(),
                        "the webhook certificate and key do not match (yet); the previous pair serves"
                    ),
                    Err(error) => tracing::warn!(
                        %error,
                        "the webhook certificate could not be read; the previous pair serves"
                    ),
                }
            }
        }
        Some(Arc::clone(&current.key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::watcher;
    use tower::ServiceExt;

    fn binding(name: &str, workload: &str) -> Rollout {
        serde_json::from_value(json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"workload": {"kind": "Deployment", "name": workload}},
        }))
        .unwrap()
    }

    /// A webhook answering from a copy holding `rollouts` (`None`: a copy
    /// that never listed).
    fn webhook(
        rollouts: Option<Vec<Rollout>>,
    ) -> (Router, Arc<Metrics>, reflector::store::Writer<Rollout>) {
        let (store, mut writer) = reflector::store();
        if let Some(rollouts) = rollouts {
            writer.apply_watcher_event(&watcher::Event::Init);
            for r in rollouts {
                writer.apply_watcher_event(&watcher::Event::InitApply(r));
            }
            writer.apply_watcher_event(&watcher::Event::InitDone);
        }
        let metrics = Arc::new(Metrics::default());
        let app = router(Arc::new(Webhook {
            bindings: Bindings {
                rollouts: store,
                unlisted: crate::watch::Unlisted::default(),
            },
            metrics: Arc::clone(&metrics),
        }));
        (app, metrics, writer)
    }

    async fn post(app: &Router, path: &str, body: Vec<u8>) -> (u16, Value) {
        let response = app
            .clone()
            .oneshot(
                axum::http::Request::post(path)
                    .header("content-type", "application/json")
                    .body(axum::body::Body::from(body))
                    .unwrap(),
            )
            .await
            .unwrap();
        let code = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    fn deployment(image: &str, padding: usize) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "annotations": {"big": "x".repeat(padding)}},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "app", "image": image}]}},
            },
        })
    }

    fn review(kind: (&str, &str), operation: &str, object: Value, old: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "kind": {"group": kind.0, "version": "v1", "kind": kind.1},
                "operation": operation, "namespace": "shop", "name": "web",
                "object": object, "oldObject": old,
                "options": {"fieldManager": "kubectl-set"},
            },
        }))
        .unwrap()
    }

    #[test]
    fn the_shipped_configurations_point_where_they_are_told() {
        let configs = registration("127.0.0.1:8443".parse().unwrap(), b"PEM");
        let kinds: Vec<&str> = configs
            .iter()
            .map(|c| c["kind"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "MutatingWebhookConfiguration",
                "ValidatingWebhookConfiguration"
            ]
        );
        assert_eq!(
            configs[0]["webhooks"][0]["clientConfig"]["url"],
            "https://127.0.0.1:8443/mutate"
        );
        assert_eq!(
            configs[1]["webhooks"][0]["clientConfig"]["url"],
            "https://127.0.0.1:8443/validate"
        );
        assert_eq!(
            configs[0]["webhooks"][0]["clientConfig"]["caBundle"],
            "UEVN"
        );
        assert_eq!(configs[0]["webhooks"][0]["failurePolicy"], "Fail");
    }

    #[tokio::test]
    async fn what_cannot_be_read_gets_a_well_formed_denial() {
        let (app, metrics, _w) = webhook(Some(vec![]));
        for body in [
            b"not json".to_vec(),
            b"{}".to_vec(),
            br#"{"apiVersion":"admission.k8s.io/v1","request":{}}"#.to_vec(),
            br#"{"apiVersion":"v9","request":{"uid":"u"}}"#.to_vec(),
            vec![0xff, 0xfe, 0x00],
        ] {
            let (code, answer) = post(&app, "/mutate", body).await;
            assert_eq!(code, 200);
            assert_eq!(answer["kind"], "AdmissionReview", "{answer}");
            assert_eq!(answer["response"]["allowed"], false, "{answer}");
            assert!(
                answer["response"]["status"]["message"]
                    .as_str()
                    .unwrap()
                    .starts_with("not an AdmissionReview"),
                "{answer}"
            );
        }
        assert_eq!(metrics.admissions("invalid"), 5);
    }

    #[tokio::test]
    async fn other_kinds_and_unbound_workloads_pass_untouched() {
        let (app, _, _w) = webhook(Some(vec![binding("api", "api")]));
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web"}});
        let (_, answer) = post(
            &app,
            "/mutate",
            review(("", "ConfigMap"), "UPDATE", cm.clone(), cm),
        )
        .await;
        assert_eq!(answer["response"], json!({"uid": "u-1", "allowed": true}));
        let (_, answer) = post(
            &app,
            "/mutate",
            review(
                ("apps", "Deployment"),
                "UPDATE",
                deployment("v2", 0),
                deployment("v1", 0),
            ),
        )
        .await;
        assert_eq!(
            answer["response"],
            json!({"uid": "u-1", "allowed": true}),
            "web is not bound"
        );
        // Objects that are no Deployments: for an unbound name not even
        // read; for a bound one, denied with a reason.
        let broken = |name: &str| {
            let mut r: Value = serde_json::from_slice(&review(
                ("apps", "Deployment"),
                "UPDATE",
                json!({"spec": 7}),
                json!([]),
            ))
            .unwrap();
            r["request"]["name"] = json!(name);
            serde_json::to_vec(&r).unwrap()
        };
        let (_, answer) = post(&app, "/mutate", broken("web")).await;
        assert_eq!(answer["response"]["allowed"], true);
        let (_, answer) = post(&app, "/mutate", broken("api")).await;
        assert_eq!(answer["response"]["allowed"], false, "{answer}");
        assert!(
            answer["response"]["status"]["message"]
                .as_str()
                .unwrap()
                .contains("not a Deployment")
        );
    }

    #[tokio::test]
    async fn a_bound_change_of_several_mebibytes_is_held() {
        let (app, metrics, _w) = webhook(Some(vec![binding("web", "web")]));
        let big = 3 << 20;
        let (code, answer) = post(
            &app,
            "/mutate",
            review(
                ("apps", "Deployment"),
                "UPDATE",
                deployment("v2", big),
                deployment("v1", big),
            ),
        )
        .await;
        assert_eq!(code, 200);
        assert_eq!(answer["response"]["uid"], "u-1");
        assert_eq!(answer["response"]["patchType"], "JSONPatch");
        let patch: k8s_openapi::ByteString =
            serde_json::from_value(answer["response"]["patch"].clone()).unwrap();
        let ops: Vec<Value> = serde_json::from_slice(&patch.0).unwrap();
        assert!(
            ops.iter()
                .any(|o| o["path"] == "/spec/paused" && o["value"] == true),
            "{ops:?}"
        );
        assert_eq!(metrics.admissions("held"), 1);
        // The validating webhook never patches: the same change is allowed.
        let (code, answer) = post(
            &app,
            "/validate",
            review(
                ("apps", "Deployment"),
                "UPDATE",
                deployment("v2", 10),
                deployment("v1", 10),
            ),
        )
        .await;
        assert_eq!(code, 200);
        assert_eq!(answer["response"]["allowed"], true, "{answer}");
        assert!(answer["response"].get("patch").is_none(), "{answer}");
        // Past the limit: not read into memory, and still answered with a
        // well-formed denial giving the reason.
        let mut huge = br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":"big-1","object":{"a":""#.to_vec();
        huge.resize(MAX_REVIEW_BYTES + 1, b'x');
        let (code, answer) = post(&app, "/mutate", huge).await;
        assert_eq!(code, 200);
        assert_eq!(answer["response"]["allowed"], false);
        assert_eq!(answer["response"]["uid"], "big-1", "answered under its uid");
        assert!(
            answer["response"]["status"]["message"]
                .as_str()
                .unwrap()
                .contains("at most"),
            "{answer}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn before_the_rollouts_are_read_a_change_is_refused_in_time_not_let_through() {
        let (app, metrics, _w) = webhook(None);
        let started = tokio::time::Instant::now();
        let (_, answer) = post(
            &app,
            "/mutate",
            review(
                ("apps", "Deployment"),
                "UPDATE",
                deployment("v2", 0),
                deployment("v1", 0),
            ),
        )
        .await;
        assert_eq!(answer["response"]["allowed"], false);
        assert!(
            answer["response"]["status"]["message"]
                .as_str()
                .unwrap()
                .contains("retry")
        );
        assert!(
            started.elapsed() <= SYNC_WAIT,
            "answered within the API server's timeout"
        );
        assert_eq!(metrics.admissions("denied"), 1);
    }

    /// A CA, and a certificate for 127.0.0.1 it signs, as PEM files.
    fn issue(dir: &Path, ca: &rcgen::Issuer<'_, rcgen::KeyPair>, name: &str) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, ca)
            .unwrap();
        let (c, k) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    /// The certificate a TLS handshake with `addr` presents, trusting `roots`.
    async fn presented(addr: SocketAddr, roots: &rustls::RootCertStore) -> Result<Vec<u8>, String> {
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        Ok(tls.get_ref().1.peer_certificates().unwrap()[0].to_vec())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rotated_certificate_is_served_without_a_failed_handshake() {
        let dir = tempfile::tempdir().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca_cert = params.self_signed(&ca_key).unwrap();
        let ca = rcgen::Issuer::new(params, ca_key);
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_cert.der().clone()).unwrap();
        let (cert, key) = issue(dir.path(), &ca, "serving");
        let bound = Bound::bind("127.0.0.1:0".parse().unwrap(), &cert, &key)
            .await
            .unwrap();
        let addr = bound.addr();
        let (app_store, _w) = reflector::store::<Rollout>();
        let stop = CancellationToken::new();
        let app = router(Arc::new(Webhook {
            bindings: Bindings {
                rollouts: app_store,
                unlisted: crate::watch::Unlisted::default(),
            },
            metrics: Arc::default(),
        }));
        tokio::spawn(sluice_runtime::http::serve(
            bound.listener,
            Some(bound.tls),
            app,
            stop.clone(),
        ));
        let first = presented(addr, &roots).await.unwrap();
        // The files are replaced one after the other, as a Secret update
        // lands: every handshake meanwhile succeeds, with the old pair
        // until the new one is whole, then with the new one.
        let (next_cert, next_key) = issue(dir.path(), &ca, "next");
        std::fs::copy(&next_cert, &cert).unwrap();
        assert!(
            presented(addr, &roots).await.is_ok(),
            "a half-written pair fails nothing"
        );
        std::fs::copy(&next_key, &key).unwrap();
        let mut served = first.clone();
        for _ in 0..300 {
            served = presented(addr, &roots)
                .await
                .expect("no handshake fails during a rotation");
            if served != first {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_ne!(served, first, "the new certificate is served");
        assert_eq!(
            served,
            std::fs::read(&next_cert)
                .map(|pem| {
                    CertificateDer::pem_slice_iter(&pem)
                        .next()
                        .unwrap()
                        .unwrap()
                        .to_vec()
                })
                .unwrap()
        );
        stop.cancel();
    }
}
