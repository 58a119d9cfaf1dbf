//! The `sluice.v1.MetricsGate` gRPC service.

use std::{pin::Pin, sync::Arc};

use sluice_proto::v1::{
    self as pb,
    metrics_gate_server::{MetricsGate, MetricsGateServer},
};
use sluice_runtime::{Error, health::Dependency, server::GrpcServer, shutdown::Signal};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::{
    Config,
    judge::{Outcome, Verdict},
    measure::{Measurement, measure},
    prometheus::{Prometheus, Sample},
    runner::{self, Event},
    spec::{self, AnalysisSpec, Context, FieldProblem},
};

/// Serves the gate until `shutdown` completes. It reports SERVING once
/// Prometheus answers its readiness endpoint.
///
/// # Errors
/// See [`sluice_runtime::server::BoundServer::serve`].
pub async fn serve(config: Config, shutdown: Signal) -> Result<(), Error> {
    let options = config.prometheus()?;
    let prometheus = Prometheus::new(options).map_err(|message| Error::Config {
        flag: "--prometheus-url",
        message,
    })?;
    let server = GrpcServer::new("gate", config.server.clone());
    let service = GateService::new(prometheus.clone(), server.shutdown_token());
    server
        .add_service(MetricsGateServer::new(service))
        .depends_on(prometheus_ready(prometheus))
        .bind()
        .await?
        .serve(shutdown)
        .await
}

/// Prometheus is ready when `/-/ready` answers 2xx.
fn prometheus_ready(prometheus: Prometheus) -> Dependency {
    let name = format!("prometheus at {}", prometheus.url());
    let http = reqwest::Client::new();
    Dependency::new(name, move || {
        let url = prometheus.url().join("-/ready");
        let http = http.clone();
        async move {
            let url = url.map_err(|e| e.to_string())?;
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
    })
}

/// The gate service.
#[derive(Debug, Clone)]
pub struct GateService {
    prometheus: Prometheus,
    /// Cancelled at shutdown; open Analyze streams end on it.
    shutdown: CancellationToken,
}

impl GateService {
    /// A service querying `prometheus` whose streams end when `shutdown` is cancelled.
    pub fn new(prometheus: Prometheus, shutdown: CancellationToken) -> Self {
        Self {
            prometheus,
            shutdown,
        }
    }
}

fn invalid(problems: &[FieldProblem]) -> Status {
    let mut details = ErrorDetails::new();
    for p in problems {
        details.add_bad_request_violation(p.field.clone(), p.description.clone());
    }
    let summary = problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    Status::with_error_details(Code::InvalidArgument, summary, details)
}

fn parse(
    analysis: Option<&pb::Analysis>,
    context: Option<&pb::AnalysisContext>,
) -> Result<(AnalysisSpec, Context), Status> {
    let Some(analysis) = analysis else {
        return Err(invalid(&[FieldProblem {
            field: "analysis".into(),
            description: "is required".into(),
        }]));
    };
    let spec = AnalysisSpec::from_proto("analysis", analysis);
    let context = spec::context_from_proto(analysis, context);
    match (spec, context) {
        (Ok(spec), Ok(context)) => Ok((spec, context)),
        (spec, context) => {
            let mut problems = spec.err().unwrap_or_default();
            problems.extend(context.err().unwrap_or_default());
            Err(invalid(&problems))
        }
    }
}

fn proto_outcome(o: Outcome) -> pb::Outcome {
    match o {
        Outcome::Successful => pb::Outcome::Successful,
        Outcome::Failed => pb::Outcome::Failed,
        Outcome::Inconclusive => pb::Outcome::Inconclusive,
        Outcome::Error => pb::Outcome::Error,
    }
}

/// A verdict as its proto enum.
pub fn proto_verdict(v: Verdict) -> pb::Verdict {
    match v {
        Verdict::Running => pb::Verdict::Running,
        Verdict::Pass => pb::Verdict::Pass,
        Verdict::Fail => pb::Verdict::Fail,
        Verdict::Inconclusive => pb::Verdict::Inconclusive,
        Verdict::Error => pb::Verdict::Error,
    }
}

fn proto_samples(samples: &[Sample]) -> Vec<pb::Sample> {
    samples
        .iter()
        .map(|s| pb::Sample {
            labels: s.labels.clone().into_iter().collect(),
            value: s.value,
        })
        .collect()
}

/// A measurement as its proto message.
pub fn proto_measurement(m: &Measurement) -> pb::Measurement {
    pb::Measurement {
        metric: m.metric.clone(),
        outcome: proto_outcome(m.outcome) as i32,
        time: Some(prost_types::Timestamp::from(m.time)),
        evidence: Some(pb::Evidence {
            query: m.query.clone(),
            values: proto_samples(&m.values),
            baseline_query: m.baseline_query.clone(),
            baseline_values: proto_samples(&m.baseline_values),
            decided_by: m.decided_by.clone(),
            message: m.message.clone(),
        }),
        dry_run: m.dry_run,
    }
}

/// The verdict of one round of measurements, limits not applied.
pub fn round_verdict(measurements: &[Measurement]) -> Verdict {
    let deciding: Vec<Outcome> = measurements
        .iter()
        .filter(|m| !m.dry_run)
        .map(|m| m.outcome)
        .collect();
    if deciding.contains(&Outcome::Failed) {
        Verdict::Fail
    } else if deciding.contains(&Outcome::Error) {
        Verdict::Error
    } else if deciding.contains(&Outcome::Inconclusive) {
        Verdict::Inconclusive
    } else {
        Verdict::Pass
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::AnalyzeEvent, Status>> + Send>>;

fn proto_event(event: Event) -> pb::AnalyzeEvent {
    use pb::analyze_event::Event as E;
    let event = match event {
        Event::Measurement(m) => E::Measurement(proto_measurement(&m)),
        Event::MetricVerdict {
            metric,
            verdict,
            message,
        } => E::MetricVerdict(pb::MetricVerdict {
            metric,
            verdict: proto_verdict(verdict) as i32,
            message,
        }),
        Event::Verdict {
            verdict,
            decided_by,
            message,
        } => E::Verdict(pb::AnalysisVerdict {
            verdict: proto_verdict(verdict) as i32,
            decided_by: decided_by.unwrap_or_default(),
            message,
        }),
    };
    pb::AnalyzeEvent { event: Some(event) }
}

#[tonic::async_trait]
impl MetricsGate for GateService {
    type AnalyzeStream = EventStream;

    #[tracing::instrument(skip_all, fields(analysis))]
    async fn evaluate(
        &self,
        request: Request<pb::EvaluateRequest>,
    ) -> Result<Response<pb::EvaluateResponse>, Status> {
        let request = request.into_inner();
        let (spec, context) = parse(request.analysis.as_ref(), request.context.as_ref())?;
        tracing::Span::current().record("analysis", spec.name.as_str());
        let measurements = futures::future::join_all(
            spec.metrics
                .iter()
                .map(|m| measure(&self.prometheus, m, &context)),
        )
        .await;
        let verdict = round_verdict(&measurements);
        Ok(Response::new(pb::EvaluateResponse {
            measurements: measurements.iter().map(proto_measurement).collect(),
            verdict: proto_verdict(verdict) as i32,
        }))
    }

    async fn analyze(
        &self,
        request: Request<pb::AnalyzeRequest>,
    ) -> Result<Response<Self::AnalyzeStream>, Status> {
        let request = request.into_inner();
        let (spec, context) = parse(request.analysis.as_ref(), request.context.as_ref())?;
        let (events_tx, events_rx) = tokio::sync::mpsc::channel(64);
        let (out_tx, out_rx) = tokio::sync::mpsc::channel(64);
        let stop = self.shutdown.child_token();
        let name = spec.name.clone();
        let span = tracing::info_span!("analyze", analysis = %name);
        tokio::spawn(tracing::Instrument::instrument(
            runner::run(
                self.prometheus.clone(),
                Arc::new(spec),
                Arc::new(context),
                events_tx,
                stop.clone(),
            ),
            span.clone(),
        ));
        // Forward events; at shutdown tell the client to retry elsewhere.
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let mut events = events_rx;
                loop {
                    tokio::select! {
                        event = events.recv() => match event {
                            Some(event) => {
                                if out_tx.send(Ok(proto_event(event))).await.is_err() {
                                    stop.cancel();
                                    return;
                                }
                            }
                            None => {
                                if stop.is_cancelled() {
                                    let _ = out_tx.send(Err(Status::unavailable("the gate is shutting down; analyze again"))).await;
                                }
                                return;
                            }
                        },
                        () = out_tx.closed() => {
                            stop.cancel();
                            return;
                        }
                    }
                }
            },
            span,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }
}
