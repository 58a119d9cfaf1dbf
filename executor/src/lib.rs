//! The executor: the rollout controller and the public `sluice.v1.Rollouts`
//! API that deploy platforms call.
//!
//! # Layout
//! - [`config`]: flags and environment.
//! - [`controller`]: the rollout controller.
//! - [`api`]: the Rollouts gRPC service (authentication, request checks).
//! - [`admission`]: the admission webhook that holds a bound workload's
//!   change for the controller to release.
//! - [`serve`]: wiring: the API, its dependencies (planner, gate), health;
//!   [`bind`] the same with the cluster given.
//! - [`writes`]: the field manager every write names.
//! - [`stack`]: planner, gate and executor in one process, wired as
//!   [`serve`] wires them (the demo, the tests).
//!
//! What has no I/O lives in `sluice-model` and is re-exported here under
//! its old paths: [`crd`] (the Rollout custom resource), [`keys`]
//! (annotation and label keys), [`machine`] (the release state machine)
//! and [`convert`] (the Rollout to and from the `sluice.v1` messages).

pub mod admission;
pub mod api;
pub mod config;
pub mod controller;
pub mod kubeconfig;
pub mod lease;
pub mod metrics;
pub mod ownership;
pub mod stack;
pub mod tokens;
pub mod validate;
mod watch;
pub mod writes;

pub use sluice_model::{crd, keys, machine};

/// The Rollout resource to and from the `sluice.v1` messages
/// (`sluice_model::rollout_convert`), and the one conversion that reads the
/// clock.
pub mod convert {
    use std::time::SystemTime;

    use sluice_proto::v1 as pb;

    pub use sluice_model::rollout_convert::*;

    use crate::crd::Rollout;

    /// The resource as the proto message, the whole spec included.
    pub fn rollout_to_proto(r: &Rollout) -> pb::Rollout {
        rollout_at(r, SystemTime::now())
    }
}

pub use config::Config;

use std::sync::Arc;

use sluice_proto::{
    services,
    v1::{
        metrics_gate_client::MetricsGateClient, planner_client::PlannerClient,
        rollouts_server::RolloutsServer,
    },
};
use sluice_runtime::{
    Error,
    auth::Authenticator,
    health::Dependency,
    server::{BoundServer, GrpcServer},
    shutdown::Signal,
    tls::channel,
};

/// A client for the configured cluster, or why there is none. Its calls
/// are counted in `metrics`, and retried with exponential back-off on 429,
/// 503 and 504 (honouring `Retry-After`), as kube's default stack does.
async fn cluster_client(
    config: &Config,
    metrics: &Arc<metrics::Metrics>,
) -> Result<kube::Client, kubeconfig::Unreadable> {
    let kube_config = kubeconfig::read(config).await?;
    Ok(kube::client::ClientBuilder::try_from(kube_config)
        .map_err(|e| kubeconfig::Unreadable::Broken {
            flag: "--kubeconfig",
            why: e.to_string(),
        })?
        .with_layer(&metrics.kube_layer())
        .build())
}

/// The namespaces of `--namespace` (none: every namespace).
///
/// # Errors
/// [`Error::Config`] naming a value that is not a namespace name.
fn scope(namespaces: &[String]) -> Result<sluice_runtime::auth::Scope, Error> {
    use sluice_runtime::auth::Scope;
    // An empty value (`SLUICE_WATCH_NAMESPACES=`) is no value.
    if namespaces.iter().all(String::is_empty) {
        return Ok(Scope::All);
    }
    if let Some(bad) = namespaces.iter().find(|ns| !api::is_dns_label(ns)) {
        return Err(Error::config(
            "--namespace",
            format!("must be namespace names (lowercase RFC 1123 labels), got {bad:?}"),
        ));
    }
    let mut names = namespaces.to_vec();
    names.sort();
    names.dedup();
    Ok(if names.is_empty() {
        Scope::All
    } else {
        Scope::Namespaces(names)
    })
}

/// A client over an in-process service (the embedded simulator), with the
/// same retries and counting as [`serve`] gives a client over HTTP.
pub fn client_over<S, B>(
    service: S,
    namespace: &str,
    metrics: &Arc<metrics::Metrics>,
) -> kube::Client
where
    S: tower::Service<http::Request<kube::client::Body>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<tower::BoxError>,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<tower::BoxError>,
{
    let service = tower::ServiceBuilder::new()
        .layer(metrics.kube_layer())
        .layer(tower::retry::RetryLayer::new(
            kube::client::retry::RetryPolicy::server_retry(),
        ))
        .map_err(Into::<tower::BoxError>::into)
        .service(service);
    kube::Client::new(service, namespace.to_owned())
}

/// Serves the executor until `shutdown` completes: the Rollouts API and the
/// rollout controller. It reports SERVING once the planner, the gate and
/// the Kubernetes API answer.
///
/// # Errors
/// [`Error::Config`] for a bad token file or address; otherwise see
/// [`sluice_runtime::server::BoundServer::serve`].
pub async fn serve(config: Config, shutdown: Signal) -> Result<(), Error> {
    bind(config, Cluster::Configured)
        .await?
        .serve(shutdown)
        .await
}

/// The cluster the executor releases on.
pub enum Cluster {
    /// The one `--kubeconfig`, `KUBECONFIG` or the in-cluster service
    /// account names, over HTTP.
    Configured,
    /// A client the caller makes, given the executor's call counters (an
    /// in-process simulator through [`client_over`]).
    Given(MakeClient),
}

/// Makes a Kubernetes client whose calls the given counters count.
pub type MakeClient = Box<dyn FnOnce(&Arc<metrics::Metrics>) -> kube::Client + Send>;

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Configured => "Configured",
            Self::Given(_) => "Given",
        })
    }
}

/// The executor as [`serve`] runs it, its listeners bound: the Rollouts API
/// (with health on the planner, the gate and the Kubernetes API), and the
/// rollout controller under the Lease, started at once; serving the result
/// drains on shutdown.
///
/// # Errors
/// [`Error::Config`] for a bad token file or address; [`Error::Bind`].
pub async fn bind(config: Config, cluster: Cluster) -> Result<BoundServer, Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let auth = match &config.token_file {
        Some(path) => Authenticator::from_file("--token-file", path)?,
        None => Authenticator::open(),
    };
    let scope = scope(&config.namespace)?;
    match &scope {
        sluice_runtime::auth::Scope::All => tracing::info!("releasing in every namespace"),
        sluice_runtime::auth::Scope::Namespaces(names) => {
            tracing::info!(namespaces = %names.join(","), "releasing only in these namespaces");
        }
    }
    let token_secret = match &config.token_secret {
        None => None,
        Some(at) => Some(
            at.split_once('/')
                .filter(|(ns, name)| {
                    api::is_dns_label(ns) && !name.is_empty() && !name.contains('/')
                })
                .ok_or_else(|| {
                    Error::config(
                        "--token-secret",
                        format!("must be namespace/name, got {at:?}"),
                    )
                })?,
        ),
    };
    // The election's names, checked before anything is served: a bad one
    // would leave every replica serving and none driving.
    if !api::is_dns_label(&config.lease_namespace) {
        return Err(Error::config(
            "--lease-namespace",
            format!(
                "must be a namespace's name (a DNS label), got {:?}",
                config.lease_namespace
            ),
        ));
    }
    // The member Leases add up to 58 characters to it.
    if !api::is_dns_subdomain(&config.lease_name) || config.lease_name.len() > 190 {
        return Err(Error::config(
            "--lease-name",
            format!(
                "must be a Lease's name (lower-case letters, digits, '-' and '.'; at most 190 characters), got {:?}",
                config.lease_name
            ),
        ));
    }
    if config
        .identity
        .as_deref()
        .is_some_and(|i| i.trim().is_empty())
    {
        return Err(Error::config("--identity", "must not be empty"));
    }
    let tls = &config.server.tls;
    let planner = channel("--planner-addr", &config.planner_addr, tls)?;
    let gate = channel("--gate-addr", &config.gate_addr, tls)?;
    let mut server = GrpcServer::new("executor", config.server.clone());
    let metrics = metrics::Metrics::register(server.registry_mut());
    let client = match cluster {
        Cluster::Configured => cluster_client(&config, &metrics).await,
        Cluster::Given(make) => Ok(make(&metrics)),
    };
    let client = match client {
        Ok(client) => Some(client),
        Err(kubeconfig::Unreadable::Unconfigured(why)) => {
            tracing::warn!(%why, "no Kubernetes cluster; the Rollouts API answers UNAVAILABLE");
            None
        }
        Err(kubeconfig::Unreadable::Broken { flag, why }) => return Err(Error::config(flag, why)),
    };
    let auth = match (token_secret, &client) {
        (None, _) => auth,
        (Some((namespace, name)), Some(client)) => tokens::from_secret(client, namespace, name)
            .await
            .map_err(|why| Error::config("--token-secret", why))?,
        (Some(_), None) => {
            return Err(Error::config(
                "--token-secret",
                "the tokens' Secret needs a cluster (--kubeconfig or a pod's service account)",
            ));
        }
    };
    // Confined to some namespaces: so is every caller of the API.
    let auth = auth.within(scope.clone());
    let stop = server.shutdown_token();
    // The API's controls reach this process's controller without waiting
    // for its watch (see `controller::written`).
    let written = std::sync::Arc::new(controller::written::Written::default());
    let api = api::RolloutsApi::within(
        client.clone(),
        scope.clone(),
        PlannerClient::new(planner.clone()),
        stop.clone(),
    )
    .with_written(std::sync::Arc::clone(&written));
    let kubernetes = {
        let client = client.clone();
        Dependency::new("the Kubernetes API", move || {
            let client = client.clone();
            async move {
                match client {
                    Some(c) => c
                        .apiserver_version()
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                    None => Err("no cluster configured (--kubeconfig)".into()),
                }
            }
        })
    };
    if let (Some(addr), Some(bindings), Some(client)) =
        (config.webhook_addr, api.bindings(), client.as_ref())
    {
        let webhook = match (
            &config.webhook_secret,
            &config.webhook_cert,
            &config.webhook_key,
        ) {
            (Some(secret), _, _) => {
                let Some((namespace, name)) = secret.split_once('/') else {
                    return Err(Error::config(
                        "--webhook-secret",
                        format!("must be namespace/name, got {secret:?}"),
                    ));
                };
                let managed = admission::certs::Managed {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                    hosts: config.webhook_host.clone(),
                    configurations: config.webhook_configuration.clone(),
                    renew_before: admission::certs::RENEW_BEFORE,
                };
                let current = Arc::new(admission::certs::Current::default());
                tokio::spawn(managed.run(client.clone(), Arc::clone(&current), stop.clone()));
                admission::Bound::bind_with(addr, current).await?
            }
            (None, Some(cert), Some(key)) => admission::Bound::bind(addr, cert, key).await?,
            _ => {
                return Err(Error::config(
                    "--webhook-cert",
                    "the webhook serves HTTPS only: give --webhook-cert and --webhook-key, or --webhook-secret, with --webhook-addr",
                ));
            }
        };
        tokio::spawn(webhook.serve(bindings, Arc::clone(&metrics), stop.clone()));
    }
    if let Some(client) = client {
        let ctx = Arc::new(
            controller::Ctx::new(
                client,
                PlannerClient::new(planner.clone()),
                MetricsGateClient::new(gate.clone()),
            )
            .with_written(written)
            .with_metrics(metrics)
            .with_concurrency(config.max_concurrent_reconciles)
            .with_identity(config.identity())
            .keeping_all_workloads(config.keep_all_workloads)
            .within(scope),
        );
        // Every replica serves the API; the Lease's holder drives.
        let lease_duration = std::time::Duration::from_secs(config.lease_seconds);
        let election = lease::Election {
            lease_duration,
            renew_deadline: lease_duration * 2 / 3,
            renew_every: lease_duration / 7,
            shards: config.shards,
            ..lease::Election::new(
                &config.lease_namespace,
                &config.lease_name,
                &config.identity(),
            )
        };
        // Waited for at shutdown: it gives the Lease up, so another
        // replica (or this one, restarted) leads at its next attempt rather
        // than after the Lease expires.
        let election = tokio::spawn(lease::run(
            ctx.client.clone(),
            election,
            stop.clone(),
            move |leading: lease::Leading| {
                let ctx = Arc::clone(&ctx);
                tokio::spawn(controller::run(ctx, leading.held, async move {
                    leading.stopped.cancelled().await;
                }));
            },
        ));
        server = server.finishes_with(election);
    }
    server
        .add_service(RolloutsServer::with_interceptor(api, auth.interceptor()))
        .depends_on(Dependency::grpc(
            format!("planner at {}", config.planner_addr),
            planner,
            services::PLANNER,
        ))
        .depends_on(Dependency::grpc(
            format!("gate at {}", config.gate_addr),
            gate,
            services::METRICS_GATE,
        ))
        .depends_on(kubernetes)
        .bind()
        .await
}
