//! gRPC health driven by dependency probes.
//!
//! A server is SERVING once every dependency it was given answers its probe,
//! and NOT_SERVING until then, with a log line naming what is missing. Probes
//! run every second while something is missing and every five seconds after,
//! so a dependency that goes away is noticed too.

use std::{sync::Arc, time::Duration};

use futures::future::{BoxFuture, join_all};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic_health::{ServingStatus, pb::health_client::HealthClient, server::HealthReporter};

/// How long one probe may take before it counts as failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Time between probes while a dependency is missing.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// Time between probes while every dependency answers.
const RECHECK_INTERVAL: Duration = Duration::from_secs(5);

type Probe = dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync;

/// Something a server needs before it can serve.
#[derive(Clone)]
pub struct Dependency {
    name: String,
    probe: Arc<Probe>,
}

impl std::fmt::Debug for Dependency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dependency")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Dependency {
    /// A dependency checked by `probe`, which returns why it is not available.
    pub fn new<F, Fut>(name: impl Into<String>, probe: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        Self {
            name: name.into(),
            probe: Arc::new(move || Box::pin(probe())),
        }
    }

    /// A Sluice service reached through `channel`, available when its
    /// standard health check says SERVING for `service`.
    pub fn grpc(name: impl Into<String>, channel: Channel, service: &'static str) -> Self {
        Self::new(name, move || {
            let mut client = HealthClient::new(channel.clone());
            async move {
                let request = tonic_health::pb::HealthCheckRequest {
                    service: service.into(),
                };
                let reply = client
                    .check(request)
                    .await
                    .map_err(|s| s.message().to_owned())?;
                match reply.into_inner().status() {
                    tonic_health::pb::health_check_response::ServingStatus::Serving => Ok(()),
                    other => Err(format!("reports {}", other.as_str_name())),
                }
            }
        })
    }

    /// The dependency's name, as logs show it.
    pub fn name(&self) -> &str {
        &self.name
    }

    async fn check(&self) -> Result<(), String> {
        match tokio::time::timeout(PROBE_TIMEOUT, (self.probe)()).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
        }
    }
}

/// Keeps the health reporter in step with the dependencies until `stop`.
///
/// `services` are the gRPC services whose status follows the dependencies
/// (the empty name, the server as a whole, is always included). `ready`
/// carries the same state for the admin server's `/readyz`.
pub(crate) async fn monitor(
    dependencies: Vec<Dependency>,
    reporter: HealthReporter,
    services: Vec<&'static str>,
    ready: watch::Sender<bool>,
    stop: CancellationToken,
) {
    let set_all = |status: ServingStatus| {
        let reporter = reporter.clone();
        let services = services.clone();
        async move {
            reporter.set_service_status("", status).await;
            for service in services {
                reporter.set_service_status(service, status).await;
            }
        }
    };
    let mut last_missing: Option<Vec<String>> = None;
    loop {
        let results = join_all(dependencies.iter().map(|d| d.check())).await;
        let missing: Vec<String> = dependencies
            .iter()
            .zip(results)
            .filter_map(|(d, r)| r.err().map(|why| format!("{} ({why})", d.name)))
            .collect();
        if last_missing.as_ref() != Some(&missing) {
            // The status is set before it is logged, so whoever reads the
            // log line finds the health check already saying so.
            if missing.is_empty() {
                set_all(ServingStatus::Serving).await;
                tracing::info!("every dependency is reachable; SERVING");
            } else {
                set_all(ServingStatus::NotServing).await;
                tracing::warn!(missing = %missing.join(", "), "NOT_SERVING until these are reachable");
            }
            ready.send_replace(missing.is_empty());
            last_missing = Some(missing);
        }
        let wait = if ready.borrow().to_owned() {
            RECHECK_INTERVAL
        } else {
            RETRY_INTERVAL
        };
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(wait) => {}
        }
    }
    ready.send_replace(false);
    set_all(ServingStatus::NotServing).await;
}
