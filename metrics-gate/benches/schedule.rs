//! 1,000 analyses running at once, each measuring every second: how late
//! does each measurement start against its due time?
//!
//! Prometheus is stood in for by a loopback HTTP server that answers at
//! once, so the figure is the gate's own scheduling, not Prometheus's
//! speed. Target: p99 lag under 50 ms. Prints the figures and a JSON line.
//!
//! `cargo bench -p sluice-gate --bench schedule [-- ANALYSES SECONDS]`

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{sync::Arc, time::Duration};

use sluice_gate::{
    prometheus::{ClientOptions, Prometheus},
    runner,
    spec::{AnalysisSpec, Context, MetricSpec},
    template::Template,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::mpsc,
};
use tokio_util::sync::CancellationToken;

const ANSWER: &str = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"0.999"]}]}}"#;

async fn instant_prometheus() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let _ = socket.set_nodelay(true);
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 8192];
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{ANSWER}",
                    ANSWER.len()
                );
                // Keep-alive: answer every request on the connection.
                while let Ok(n) = socket.read(&mut buffer).await {
                    if n == 0 || socket.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let analyses: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let seconds: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let addr = instant_prometheus().await;
        let prometheus = Prometheus::new(ClientOptions::new(format!("http://{addr}").parse().unwrap())).unwrap();
        let spec = Arc::new(AnalysisSpec {
            name: "bench".into(),
            metrics: vec![MetricSpec {
                name: "success-rate".into(),
                query: Template::literal("sum(rate(http_requests_total[1m]))"),
                success: Some(sluice_gate::spec::Condition::Threshold { min: Some(0.99), max: None }),
                failure: None,
                interval: Duration::from_secs(1),
                count: 0,
                initial_delay: Duration::ZERO,
                failure_limit: 0,
                inconclusive_limit: 0,
                consecutive_error_limit: 4,
                consecutive_success_limit: 0,
                dry_run: false,
            }],
        });
        let context = Arc::new(Context { window: Duration::from_secs(60), ..Default::default() });
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        for i in 0..analyses {
            let (tx, mut rx) = mpsc::channel(16);
            tokio::spawn(async move { while rx.recv().await.is_some() {} });
            // Spread the starts over the first second, as real rollouts are.
            let delay = Duration::from_micros((i as u64 * 1_000_000) / analyses as u64);
            let (p, s, c, stop) = (prometheus.clone(), spec.clone(), context.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                runner::run(p, s, c, tx, stop).await
            }));
        }
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        stop.cancel();
        let mut lags: Vec<Duration> = Vec::new();
        for task in tasks {
            lags.extend(task.await.unwrap());
        }
        lags.sort_unstable();
        let (p50, p99, max) = (percentile(&lags, 0.5), percentile(&lags, 0.99), *lags.last().unwrap());
        println!(
            "{analyses} analyses at 1 s for {seconds} s: {} measurements, lag p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            lags.len(),
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3
        );
        println!(
            "{{\"analyses\":{analyses},\"measurements\":{},\"lag_p50_ms\":{:.3},\"lag_p99_ms\":{:.3},\"lag_max_ms\":{:.3}}}",
            lags.len(),
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3
        );
    });
}
