//! Per-RPC counters and latencies, recorded by a tower layer.
//!
//! An RPC ends when its response body ends: for a unary call that is right
//! after the reply, for a stream when the server sends its trailers, or when
//! the client goes away (recorded as `Cancelled`). The status code is read
//! from `grpc-status`, in the headers for a trailers-only reply or in the
//! trailers otherwise.
//!
//! Metric names:
//! - `sluice_grpc_requests_total{method, code}`: finished RPCs.
//! - `sluice_grpc_request_duration_seconds{method}`: time until the RPC ended.
//! - `sluice_grpc_requests_in_flight{method}`: RPCs started and not ended.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Instant,
};

use http_body::{Body, Frame};
use pin_project_lite::pin_project;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use tonic::Code;
use tower::{Layer, Service};

/// Latency buckets in seconds, from half a millisecond to ten seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    method: String,
    code: String,
}

/// The RPC metrics of one server.
#[derive(Debug)]
pub struct GrpcMetrics {
    requests: Family<CodeLabels, Counter>,
    latency: Family<MethodLabels, Histogram, fn() -> Histogram>,
    in_flight: Family<MethodLabels, Gauge>,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

impl GrpcMetrics {
    /// Creates the metrics and registers them under the `sluice_grpc` prefix.
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let metrics = Arc::new(Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            in_flight: Family::default(),
        });
        let sub = registry.sub_registry_with_prefix("sluice_grpc");
        sub.register(
            "requests",
            "Finished RPCs by method and status code",
            metrics.requests.clone(),
        );
        sub.register(
            "request_duration_seconds",
            "Time from request to the end of the response, per method",
            metrics.latency.clone(),
        );
        sub.register(
            "requests_in_flight",
            "RPCs started and not ended",
            metrics.in_flight.clone(),
        );
        metrics
    }

    /// A layer recording into these metrics.
    pub fn layer(self: &Arc<Self>) -> GrpcMetricsLayer {
        GrpcMetricsLayer {
            metrics: Arc::clone(self),
        }
    }
}

/// Records one RPC; whatever way the RPC ends, it is recorded exactly once.
struct Recorder {
    metrics: Arc<GrpcMetrics>,
    method: String,
    start: Instant,
    done: bool,
}

impl Recorder {
    fn start(metrics: Arc<GrpcMetrics>, method: String) -> Self {
        metrics
            .in_flight
            .get_or_create(&MethodLabels {
                method: method.clone(),
            })
            .inc();
        Self {
            metrics,
            method,
            start: Instant::now(),
            done: false,
        }
    }

    fn finish(&mut self, code: Code) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let method = MethodLabels {
            method: self.method.clone(),
        };
        self.metrics.in_flight.get_or_create(&method).dec();
        self.metrics
            .latency
            .get_or_create(&method)
            .observe(self.start.elapsed().as_secs_f64());
        let labels = CodeLabels {
            method: self.method.clone(),
            code: format!("{code:?}"),
        };
        self.metrics.requests.get_or_create(&labels).inc();
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        // The body was dropped before its trailers: the client went away.
        self.finish(Code::Cancelled);
    }
}

fn status_of(headers: &http::HeaderMap) -> Option<Code> {
    let value = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    Some(Code::from_i32(value))
}

/// Tower layer for [`GrpcMetrics`].
#[derive(Debug, Clone)]
pub struct GrpcMetricsLayer {
    metrics: Arc<GrpcMetrics>,
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService {
            inner,
            metrics: Arc::clone(&self.metrics),
        }
    }
}

/// The service made by [`GrpcMetricsLayer`].
#[derive(Debug, Clone)]
pub struct GrpcMetricsService<S> {
    inner: S,
    metrics: Arc<GrpcMetrics>,
}

impl<S, B, RB> Service<http::Request<B>> for GrpcMetricsService<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
{
    type Response = http::Response<MeteredBody<RB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let recorder = Recorder::start(Arc::clone(&self.metrics), request.uri().path().to_owned());
        ResponseFuture {
            inner: self.inner.call(request),
            recorder: Some(recorder),
        }
    }
}

pin_project! {
    /// The response future of [`GrpcMetricsService`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        recorder: Option<Recorder>,
    }
}

impl<F, RB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<RB>, E>>,
{
    type Output = Result<http::Response<MeteredBody<RB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let mut recorder = this.recorder.take();
        Poll::Ready(match result {
            Ok(response) => {
                if let (Some(code), Some(recorder)) = (status_of(response.headers()), &mut recorder)
                {
                    recorder.finish(code);
                }
                Ok(response.map(|inner| MeteredBody { inner, recorder }))
            }
            Err(error) => {
                if let Some(mut recorder) = recorder {
                    recorder.finish(Code::Unknown);
                }
                Err(error)
            }
        })
    }
}

pin_project! {
    /// A response body that records the RPC when it ends.
    pub struct MeteredBody<B> {
        #[pin]
        inner: B,
        recorder: Option<Recorder>,
    }
}

impl<B: Body> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(recorder) = this.recorder {
            match &frame {
                Some(Ok(frame)) => {
                    if let Some(trailers) = frame.trailers_ref() {
                        recorder.finish(status_of(trailers).unwrap_or(Code::Unknown));
                    }
                }
                Some(Err(_)) => recorder.finish(Code::Unknown),
                None => recorder.finish(Code::Unknown),
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
