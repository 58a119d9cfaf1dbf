//! The metrics gate against a real Prometheus scraping an exporter whose
//! values the test sets, and against Prometheus failing in every way.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests stop at the first failed step

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use sluice_integration_tests::{
    process::Service,
    prometheus::{Behaviour, Exporter, Prometheus},
};
use sluice_proto::v1::{
    self as pb, AnalysisContext, EvaluateRequest, EvaluateResponse,
    metrics_gate_client::MetricsGateClient,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::{Channel, Endpoint};

const HEALTHY: Behaviour = Behaviour {
    rps: 40.0,
    error_ratio: 0.001,
    latency: 0.04,
};

fn threshold(min: Option<f64>, max: Option<f64>) -> Option<pb::Condition> {
    Some(pb::Condition {
        kind: Some(pb::condition::Kind::Threshold(pb::Threshold { min, max })),
    })
}

fn metric(
    name: &str,
    template: &str,
    success: Option<pb::Condition>,
    failure: Option<pb::Condition>,
) -> pb::Metric {
    pb::Metric {
        name: name.into(),
        template: template.into(),
        success_condition: success,
        failure_condition: failure,
        ..Default::default()
    }
}

fn success_rate() -> pb::Metric {
    metric(
        "success-rate",
        "request-success-rate",
        threshold(Some(0.99), None),
        threshold(None, Some(0.95)),
    )
}

fn latency() -> pb::Metric {
    metric(
        "latency",
        "request-latency-p99",
        threshold(None, Some(0.5)),
        None,
    )
}

fn request(workload: &str, metrics: Vec<pb::Metric>) -> EvaluateRequest {
    EvaluateRequest {
        analysis: Some(pb::Analysis {
            name: "canary-health".into(),
            metrics,
            args: Default::default(),
        }),
        context: Some(AnalysisContext {
            namespace: "shop".into(),
            workload: workload.into(),
            canary_revision: "v2".into(),
            stable_revision: "v1".into(),
            window: Some(prost_types::Duration {
                seconds: 10,
                nanos: 0,
            }),
            ..Default::default()
        }),
    }
}

async fn gate_client(gate: &Service) -> MetricsGateClient<Channel> {
    MetricsGateClient::new(
        Endpoint::from_shared(gate.uri())
            .unwrap()
            .connect()
            .await
            .unwrap(),
    )
}

/// Evaluates until the answer is not "no data yet" (Prometheus needs a few
/// scrapes before rate() has two samples), for at most a minute.
async fn evaluate_settled(
    client: &mut MetricsGateClient<Channel>,
    req: EvaluateRequest,
) -> EvaluateResponse {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let reply = client
            .evaluate(req.clone())
            .await
            .expect("evaluate")
            .into_inner();
        let waiting = reply.measurements.iter().any(|m| {
            m.outcome == pb::Outcome::Inconclusive as i32
                && m.evidence.as_ref().is_some_and(|e| {
                    e.values.is_empty() || e.values.iter().any(|s| s.value.is_nan())
                })
        });
        if !waiting || Instant::now() > deadline {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn verdict(reply: &EvaluateResponse) -> pb::Verdict {
    pb::Verdict::try_from(reply.verdict).unwrap()
}

fn evidence(reply: &EvaluateResponse, metric: &str) -> pb::Evidence {
    reply
        .measurements
        .iter()
        .find(|m| m.metric == metric)
        .unwrap()
        .evidence
        .clone()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn verdicts_against_a_real_prometheus() {
    let exporter = Exporter::start().await;
    exporter.set("shop", "healthy", "v2", HEALTHY);
    exporter.set(
        "shop",
        "failing",
        "v2",
        Behaviour {
            error_ratio: 0.2,
            ..HEALTHY
        },
    );
    exporter.set(
        "shop",
        "slow",
        "v2",
        Behaviour {
            latency: 0.8,
            ..HEALTHY
        },
    );
    exporter.set(
        "shop",
        "idle",
        "v2",
        Behaviour {
            rps: 0.0,
            ..HEALTHY
        },
    );
    exporter.set(
        "shop",
        "compared",
        "v1",
        Behaviour {
            error_ratio: 0.01,
            ..HEALTHY
        },
    );
    exporter.set(
        "shop",
        "compared",
        "v2",
        Behaviour {
            error_ratio: 0.05,
            ..HEALTHY
        },
    );
    exporter.set(
        "shop",
        "close",
        "v1",
        Behaviour {
            error_ratio: 0.01,
            ..HEALTHY
        },
    );
    exporter.set(
        "shop",
        "close",
        "v2",
        Behaviour {
            error_ratio: 0.012,
            ..HEALTHY
        },
    );
    let prometheus = Prometheus::start(&[exporter.addr]).await;
    let gate = Service::start("sluice-gate", &["--prometheus-url", &prometheus.url]);
    gate.wait_for_log(|l| l["message"] == "every dependency is reachable; SERVING");
    let mut client = gate_client(&gate).await;

    // A healthy canary passes, with its evidence.
    let reply = evaluate_settled(
        &mut client,
        request("healthy", vec![success_rate(), latency()]),
    )
    .await;
    assert_eq!(verdict(&reply), pb::Verdict::Pass, "{reply:#?}");
    let e = evidence(&reply, "success-rate");
    assert!(
        e.query.contains(r#"workload="healthy""#) && e.query.contains("[10s]"),
        "{}",
        e.query
    );
    assert!((e.values[0].value - 0.999).abs() < 0.001, "{:?}", e.values);
    assert_eq!(e.decided_by, "successCondition.threshold.min=0.99");

    // A failing canary fails on its error rate, and says so.
    let reply = evaluate_settled(&mut client, request("failing", vec![success_rate()])).await;
    assert_eq!(verdict(&reply), pb::Verdict::Fail, "{reply:#?}");
    let e = evidence(&reply, "success-rate");
    assert!((e.values[0].value - 0.8).abs() < 0.01, "{:?}", e.values);
    assert_eq!(e.decided_by, "failureCondition.threshold.max=0.95");

    // A latency regression fails the p99 metric only.
    let reply = evaluate_settled(
        &mut client,
        request("slow", vec![success_rate(), latency()]),
    )
    .await;
    assert_eq!(verdict(&reply), pb::Verdict::Fail, "{reply:#?}");
    let outcome = |r: &EvaluateResponse, m: &str| {
        r.measurements
            .iter()
            .find(|x| x.metric == m)
            .unwrap()
            .outcome
    };
    assert_eq!(outcome(&reply, "latency"), pb::Outcome::Failed as i32);
    assert_eq!(
        outcome(&reply, "success-rate"),
        pb::Outcome::Successful as i32
    );
    assert!(evidence(&reply, "latency").values[0].value > 0.5);

    // No traffic at all: no series, inconclusive.
    let reply = client
        .evaluate(request("nobody", vec![success_rate()]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(verdict(&reply), pb::Verdict::Inconclusive, "{reply:#?}");
    assert!(evidence(&reply, "success-rate").values.is_empty());

    // Series without requests: 0/0 is NaN, inconclusive. Wait for two scrapes.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let reply = client
        .evaluate(request("idle", vec![success_rate()]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(verdict(&reply), pb::Verdict::Inconclusive, "{reply:#?}");
    assert!(evidence(&reply, "success-rate").values[0].value.is_nan());

    // Canary against stable: 5% errors against 1% is a regression...
    let compare = pb::Metric {
        name: "error-vs-stable".into(),
        template: "request-error-rate".into(),
        failure_condition: Some(pb::Condition {
            kind: Some(pb::condition::Kind::Comparison(pb::Comparison {
                baseline_query: String::new(),
                max_ratio: 1.5,
                slack: 0.001,
                direction: pb::ComparisonDirection::HigherIsWorse as i32,
            })),
        }),
        ..Default::default()
    };
    let reply = evaluate_settled(&mut client, request("compared", vec![compare.clone()])).await;
    assert_eq!(verdict(&reply), pb::Verdict::Fail, "{reply:#?}");
    let e = evidence(&reply, "error-vs-stable");
    assert!(
        e.baseline_query.contains(r#"revision="v1""#),
        "{}",
        e.baseline_query
    );
    assert!(
        (e.baseline_values[0].value - 0.01).abs() < 0.002,
        "{:?}",
        e.baseline_values
    );
    // ...while 1.2% against 1% is within 1.5x.
    let reply = evaluate_settled(&mut client, request("close", vec![compare])).await;
    assert_eq!(verdict(&reply), pb::Verdict::Pass, "{reply:#?}");

    // Analyze streams each measurement, then the verdict, then ends.
    let second = Some(prost_types::Duration {
        seconds: 1,
        nanos: 0,
    });
    let failing = pb::Metric {
        interval: second,
        failure_limit: 1,
        ..success_rate()
    };
    let events = analyze(&mut client, request("failing", vec![failing])).await;
    let outcomes: Vec<i32> = events
        .iter()
        .filter_map(|e| match e {
            pb::analyze_event::Event::Measurement(m) => Some(m.outcome),
            _ => None,
        })
        .collect();
    assert_eq!(
        outcomes,
        [pb::Outcome::Failed as i32; 2],
        "a failure limit of 1 fails on the 2nd: {events:#?}"
    );
    let Some(pb::analyze_event::Event::Verdict(last)) = events.last() else {
        panic!("{events:#?}")
    };
    assert_eq!(
        (last.verdict, last.decided_by.as_str()),
        (pb::Verdict::Fail as i32, "success-rate")
    );
    // Its message says the value and the threshold of the last failure.
    let failed = events
        .iter()
        .rev()
        .find_map(|e| match e {
            pb::analyze_event::Event::Measurement(m) => {
                m.evidence.as_ref().map(|e| e.message.clone())
            }
            _ => None,
        })
        .expect("a failed measurement");
    assert!(
        last.message.ends_with(&format!("; last: {failed}")),
        "{last:#?}"
    );

    let healthy = pb::Metric {
        interval: second,
        count: 2,
        ..success_rate()
    };
    let events = analyze(&mut client, request("healthy", vec![healthy])).await;
    let Some(pb::analyze_event::Event::Verdict(last)) = events.last() else {
        panic!("{events:#?}")
    };
    assert_eq!(last.verdict, pb::Verdict::Pass as i32, "{events:#?}");
}

async fn analyze(
    client: &mut MetricsGateClient<Channel>,
    req: EvaluateRequest,
) -> Vec<pb::analyze_event::Event> {
    let req = pb::AnalyzeRequest {
        analysis: req.analysis,
        context: req.context,
    };
    let mut stream = client.analyze(req).await.expect("analyze").into_inner();
    let mut events = Vec::new();
    while let Some(event) = stream.message().await.expect("stream") {
        events.push(event.event.expect("event"));
    }
    events
}

/// An HTTP server answering every request with `reply` after `delay`.
async fn misbehaving_prometheus(reply: &'static str, delay: Duration) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                let _ = socket.read(&mut buffer).await;
                tokio::time::sleep(delay).await;
                let _ = socket.write_all(reply.as_bytes()).await;
            });
        }
    });
    addr
}

async fn evaluate_against(prometheus_url: &str, extra: &[&str]) -> EvaluateResponse {
    let mut args = vec![
        "--prometheus-url",
        prometheus_url,
        "--prometheus-retries",
        "1",
    ];
    args.extend_from_slice(extra);
    let gate = Service::start("sluice-gate", &args);
    let mut client = gate_client(&gate).await;
    client
        .evaluate(request("healthy", vec![success_rate()]))
        .await
        .expect("evaluate")
        .into_inner()
}

fn assert_error(reply: &EvaluateResponse, words: &str) {
    assert_eq!(verdict(reply), pb::Verdict::Error, "{reply:#?}");
    let m = &reply.measurements[0];
    assert_eq!(m.outcome, pb::Outcome::Error as i32);
    let message = &m.evidence.as_ref().unwrap().message;
    assert!(message.contains(words), "expected {words:?} in {message:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_down_is_an_error_never_a_pass() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    assert_error(
        &evaluate_against(&format!("http://{closed}"), &[]).await,
        "Prometheus unreachable",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_slower_than_the_timeout_is_an_error() {
    let ok = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
    let slow = misbehaving_prometheus(ok, Duration::from_secs(5)).await;
    let reply = evaluate_against(
        &format!("http://{slow}"),
        &["--prometheus-timeout", "300ms"],
    )
    .await;
    assert_error(&reply, "did not answer within 300ms");
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_answering_500_or_garbage_is_an_error() {
    let broken =
        "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\nconnection: close\r\n\r\noops";
    let addr = misbehaving_prometheus(broken, Duration::ZERO).await;
    assert_error(
        &evaluate_against(&format!("http://{addr}"), &[]).await,
        "HTTP 500",
    );

    let garbage = "HTTP/1.1 200 OK\r\ncontent-length: 9\r\nconnection: close\r\n\r\nnot json!";
    let addr = misbehaving_prometheus(garbage, Duration::ZERO).await;
    assert_error(
        &evaluate_against(&format!("http://{addr}"), &[]).await,
        "cannot read Prometheus's answer",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_analysis_is_refused_with_every_field_named() {
    use tonic_types::StatusExt;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gate = Service::start(
        "sluice-gate",
        &["--prometheus-url", &format!("http://{closed}")],
    );
    let mut client = gate_client(&gate).await;
    let bad = request(
        "healthy",
        vec![
            metric(
                "a",
                "no-such-template",
                threshold(Some(1.0), Some(0.5)),
                None,
            ),
            pb::Metric {
                name: "a".into(),
                query: "up{x=\"{{pod}}\"}".into(),
                ..Default::default()
            },
        ],
    );
    let status = client.evaluate(bad).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let fields: Vec<String> = status
        .get_error_details()
        .bad_request()
        .unwrap()
        .field_violations
        .iter()
        .map(|v| v.field.clone())
        .collect();
    assert_eq!(
        fields,
        [
            "analysis.metrics[0].template",
            "analysis.metrics[0].successCondition.threshold",
            "analysis.metrics[1].name",
            "analysis.metrics[1].query",
            "analysis.metrics[1]",
        ]
    );
}
