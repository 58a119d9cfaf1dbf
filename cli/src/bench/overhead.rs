//! Per-call cost of the planner and the gate against the least a call could
//! cost, measured in the same run on the same loopback: a Plan RPC against
//! a bare tonic unary call (the gRPC health Check), and a gate measurement
//! against the raw Prometheus HTTP query it makes.

use std::time::Instant;

use serde::Serialize;
use sluice_proto::v1::{
    self as pb, metrics_gate_client::MetricsGateClient, metrics_gate_server::MetricsGateServer,
    planner_client::PlannerClient, planner_server::PlannerServer,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// Mean microseconds per call.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Overheads {
    /// Calls per figure.
    pub calls: usize,
    /// The planner's Plan RPC.
    pub plan_us: f64,
    /// The gRPC health Check on the same server: the baseline.
    pub tonic_us: f64,
    /// One gate measurement (Evaluate).
    pub evaluate_us: f64,
    /// The raw HTTP query the gate makes: the baseline.
    pub query_us: f64,
}

impl Overheads {
    /// Plan RPC over bare tonic.
    pub(crate) fn plan_ratio(&self) -> f64 {
        self.plan_us / self.tonic_us
    }

    /// A gate measurement over the least a remote measurement costs: one
    /// bare gRPC call plus the raw query.
    pub(crate) fn gate_ratio(&self) -> f64 {
        self.evaluate_us / (self.tonic_us + self.query_us)
    }
}

async fn mean_us<F, Fut>(calls: usize, mut call: F) -> anyhow::Result<f64>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    for _ in 0..calls.div_ceil(10) {
        call().await?;
    }
    let start = Instant::now();
    for _ in 0..calls {
        call().await?;
    }
    Ok(start.elapsed().as_secs_f64() * 1e6 / calls as f64)
}

fn strategy() -> pb::Strategy {
    let steps = (1..=10)
        .map(|i| pb::CanaryStep {
            replicas: format!("{}%", i * 10),
            ..Default::default()
        })
        .collect();
    pb::Strategy {
        canary: Some(pb::CanaryStrategy {
            steps,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Measures both comparisons, `calls` calls each, alternating rounds so
/// that a noisy neighbour hits both sides alike.
pub(crate) async fn measure(calls: usize) -> anyhow::Result<Overheads> {
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    // A simulated cluster with traffic, for the gate's query.
    let sim =
        sluice_sim::scenario::Simulation::start(sluice_sim::scenario::Scenario::load("healthy")?)
            .map_err(|e| anyhow::anyhow!("starting the simulator: {}", e.message))?;
    let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let metrics_addr = metrics_listener.local_addr()?;
    tokio::spawn(
        axum::serve(
            metrics_listener,
            sluice_sim::metrics::http::router(sim.metrics.clone()),
        )
        .with_graceful_shutdown(stop.clone().cancelled_owned())
        .into_future(),
    );
    let prometheus = sluice_gate::prometheus::Prometheus::new(
        sluice_gate::prometheus::ClientOptions::new(format!("http://{metrics_addr}").parse()?),
    )
    .map_err(|e| anyhow::anyhow!("gate: {e}"))?;
    // Served as everywhere else; each server also answers gRPC health.
    let services = sluice_executor::stack::services(
        PlannerServer::new(sluice_planner::service::PlannerService),
        MetricsGateServer::new(sluice_gate::service::GateService::new(
            prometheus,
            stop.clone(),
        )),
        stop.clone(),
    )
    .await?;
    let connect = |addr: std::net::SocketAddr| async move {
        Endpoint::from_shared(format!("http://{addr}"))?
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(anyhow::Error::from)
    };
    let channel = connect(services.planner).await?;
    let planner = PlannerClient::new(channel.clone());
    let checker = HealthClient::new(channel);
    let gate = MetricsGateClient::new(connect(services.gate).await?);
    let query = "sum(rate(http_requests_total[1m]))";
    let evaluate = pb::EvaluateRequest {
        analysis: Some(pb::Analysis {
            name: "bench".into(),
            metrics: vec![pb::Metric {
                name: "rate".into(),
                query: query.into(),
                success_condition: Some(pb::Condition {
                    kind: Some(pb::condition::Kind::Threshold(pb::Threshold {
                        min: Some(0.0),
                        max: None,
                    })),
                }),
                ..Default::default()
            }],
            args: Default::default(),
        }),
        context: None,
    };
    let http = reqwest::Client::new();
    let url = reqwest::Url::parse_with_params(
        &format!("http://{metrics_addr}/api/v1/query"),
        &[("query", query)],
    )?;

    let plan = || {
        let mut planner = planner.clone();
        async move {
            planner
                .plan(pb::PlanRequest {
                    strategy: Some(strategy()),
                    replicas: 10,
                    max_surge: "25%".into(),
                    ..Default::default()
                })
                .await?;
            anyhow::Ok(())
        }
    };
    let check = || {
        let mut checker = checker.clone();
        async move {
            checker.check(HealthCheckRequest::default()).await?;
            anyhow::Ok(())
        }
    };
    let measure_gate = || {
        let mut gate = gate.clone();
        let request = evaluate.clone();
        async move {
            gate.evaluate(request).await?;
            anyhow::Ok(())
        }
    };
    let raw = || {
        let request = http.get(url.clone());
        async move {
            request.send().await?.error_for_status()?.bytes().await?;
            anyhow::Ok(())
        }
    };
    let rounds = 4;
    let per = calls.div_ceil(rounds);
    let (mut p, mut t, mut e, mut q) = (0.0, 0.0, 0.0, 0.0);
    for _ in 0..rounds {
        t += mean_us(per, check).await?;
        p += mean_us(per, plan).await?;
        q += mean_us(per, raw).await?;
        e += mean_us(per, measure_gate).await?;
    }
    let r = f64::from(rounds as u32);
    Ok(Overheads {
        calls: per * rounds,
        plan_us: p / r,
        tonic_us: t / r,
        evaluate_us: e / r,
        query_us: q / r,
    })
}
