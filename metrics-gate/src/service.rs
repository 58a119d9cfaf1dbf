//! The `sluice.v1.MetricsGate` gRPC service.

use std::pin::Pin;

use sluice_proto::v1::{
    self as pb,
    metrics_gate_server::{MetricsGate, MetricsGateServer},
};
use sluice_runtime::{Error, health::Dependency, server::GrpcServer, shutdown::Signal};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::Config;

/// Serves the gate until `shutdown` completes. It reports SERVING once
/// Prometheus answers its readiness endpoint.
///
/// # Errors
/// See [`sluice_runtime::server::BoundServer::serve`].
pub async fn serve(config: Config, shutdown: Signal) -> Result<(), Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .timeout(config.prometheus_timeout)
        .build()
        .map_err(|e| Error::Config {
            flag: "--prometheus-url",
            message: e.to_string(),
        })?;
    let ready_url = config
        .prometheus_url
        .join("-/ready")
        .map_err(|e| Error::Config {
            flag: "--prometheus-url",
            message: e.to_string(),
        })?;
    let prometheus = Dependency::new(
        format!("prometheus at {}", config.prometheus_url),
        move || {
            let (http, url) = (http.clone(), ready_url.clone());
            async move {
                let response = http
                    .get(url)
                    .send()
                    .await
                    .map_err(|e| sluice_runtime::error_chain(&e))?;
                if response.status().is_success() {
                    Ok(())
                } else {
                    Err(format!("answers {}", response.status()))
                }
            }
        },
    );
    GrpcServer::new("gate", config.server)
        .add_service(MetricsGateServer::new(GateService))
        .depends_on(prometheus)
        .bind()
        .await?
        .serve(shutdown)
        .await
}

/// The gate service.
#[derive(Debug, Clone, Default)]
pub struct GateService;

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::AnalyzeEvent, Status>> + Send>>;

#[tonic::async_trait]
impl MetricsGate for GateService {
    type AnalyzeStream = EventStream;

    async fn evaluate(
        &self,
        _request: Request<pb::EvaluateRequest>,
    ) -> Result<Response<pb::EvaluateResponse>, Status> {
        Err(Status::unimplemented(
            "analysis is not implemented yet (issue 4)",
        ))
    }

    async fn analyze(
        &self,
        _request: Request<pb::AnalyzeRequest>,
    ) -> Result<Response<Self::AnalyzeStream>, Status> {
        Err(Status::unimplemented(
            "analysis is not implemented yet (issue 4)",
        ))
    }
}
