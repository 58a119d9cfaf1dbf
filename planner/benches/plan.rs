//! Planning speed, and the Plan RPC's cost against a minimal tonic service.
//!
//! - `plan/pure`: `plan::plan` for a 10-step strategy at 100 replicas
//!   (target: at least 1,000,000 plans per second on one core).
//! - `plan/validate+plan`: `make_plan`, validation included.
//! - `rpc/minimal` and `rpc/plan`: one unary call on loopback to a tonic
//!   server whose handler returns a constant, and to the planner as it is
//!   served (metrics layer, health, reflection); the ratio of the two is
//!   the planner's per-call overhead (target: at most 1.2x).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use sluice_planner::{PlanOptions, Sizing, Strategy, make_plan, plan, quantity::Amount, validate};
use sluice_proto::v1::{
    self as pb,
    planner_client::PlannerClient,
    planner_server::{Planner, PlannerServer},
};
use tonic::{Request, Response, Status, transport::Channel};

fn ten_steps() -> Strategy {
    let steps: Vec<String> = (1..=10)
        .map(|i| format!("{{replicas: \"{}%\", traffic: {}, analyses: [success-rate], pause: {{duration: 1m}}}}", i * 9, i * 9))
        .collect();
    serde_yaml::from_str(&format!(
        "canary: {{failureThreshold: 10%, backgroundAnalysis: {{analyses: [latency]}}, steps: [{}]}}",
        steps.join(", ")
    ))
    .unwrap()
}

fn pure(c: &mut Criterion) {
    let strategy = ten_steps();
    let checked = validate::validate(&strategy, validate::Context::default())
        .unwrap()
        .strategy;
    let sizing = Sizing {
        replicas: 100,
        max_surge: Amount::Percent(25),
    };
    c.bench_function("plan/pure", |b| {
        b.iter(|| plan::plan(black_box(&checked), black_box(sizing), None))
    });
    let options = PlanOptions {
        replicas: 100,
        ..Default::default()
    };
    c.bench_function("plan/validate+plan", |b| {
        b.iter(|| make_plan(black_box(&strategy), black_box(&options)))
    });
}

/// A planner that does nothing: the floor of a tonic unary call.
struct Minimal;

#[tonic::async_trait]
impl Planner for Minimal {
    async fn plan(
        &self,
        _: Request<pb::PlanRequest>,
    ) -> Result<Response<pb::PlanResponse>, Status> {
        Ok(Response::new(pb::PlanResponse {
            plan: Some(pb::Plan::default()),
        }))
    }

    async fn validate(
        &self,
        _: Request<pb::ValidateRequest>,
    ) -> Result<Response<pb::ValidateResponse>, Status> {
        Ok(Response::new(pb::ValidateResponse::default()))
    }
}

async fn connect(addr: std::net::SocketAddr) -> PlannerClient<Channel> {
    PlannerClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

fn rpc(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let strategy = sluice_planner::convert::strategy_to_proto(&ten_steps()).unwrap();
    let request = pb::PlanRequest {
        strategy: Some(strategy),
        replicas: 100,
        ..Default::default()
    };

    let minimal = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(PlannerServer::new(Minimal))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        connect(addr).await
    });
    let planner = runtime.block_on(async {
        let args = sluice_runtime::config::ServerArgs {
            grpc_addr: "127.0.0.1:0".parse().unwrap(),
            admin_addr: "127.0.0.1:0".parse().unwrap(),
            shutdown_grace: std::time::Duration::from_secs(1),
            log_format: sluice_runtime::config::LogFormat::Json,
            log: "off".into(),
            tls: Default::default(),
        };
        let bound = sluice_runtime::server::GrpcServer::new("planner", args)
            .add_service(PlannerServer::new(sluice_planner::service::PlannerService))
            .bind()
            .await
            .unwrap();
        let addr = bound.grpc_addr();
        tokio::spawn(bound.serve(std::future::pending()));
        connect(addr).await
    });

    let mut group = c.benchmark_group("rpc");
    group.bench_function("minimal", |b| {
        b.iter(|| {
            runtime
                .block_on(minimal.clone().plan(request.clone()))
                .unwrap()
        });
    });
    group.bench_function("plan", |b| {
        b.iter(|| {
            runtime
                .block_on(planner.clone().plan(request.clone()))
                .unwrap()
        });
    });
    group.finish();
}

criterion_group!(benches, pure, rpc);
criterion_main!(benches);
