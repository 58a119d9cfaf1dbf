//! The simulator's PromQL engine against a real Prometheus on the same
//! samples: a seeded set of series (counters with a reset, gauges, a
//! histogram, an info metric, a pod that went away) is stored in the
//! simulator's store and backfilled into Prometheus with `promtool`, then
//! a corpus of queries a canary analysis or a dashboard asks is answered
//! by both at the same evaluation times. Every difference fails the test
//! unless it is named in [`KNOWN`] with its reason; the match rate is
//! printed.
//!
//! Evaluation times are not aligned to sample times or to subquery steps,
//! so the one rule that changed between Prometheus 2 (the reference here,
//! Debian's package) and 3 (what the simulator follows: windows open at
//! their start) decides nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests stop at the first failed step

use std::{collections::BTreeMap, fmt::Write as _};

use serde_json::Value;
use sluice_integration_tests::prometheus::Prometheus;
use sluice_sim::metrics::{
    promql::{self, Value as Answer},
    tsdb::Tsdb,
};

/// Where the samples start (ms), about a day ago so that Prometheus keeps
/// the backfilled block, and how long they run.
fn base_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // Whole hours, so the same offsets fall the same way on every run.
    (now - 86_400_000) / 3_600_000 * 3_600_000
}
const SPAN_MS: i64 = 40 * 60 * 1000;
const SCRAPE_MS: i64 = 10_000;

/// A seeded generator (xorshift), so every run stores the same samples.
struct Seeded(u64);

impl Seeded {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

type Series = (Vec<(&'static str, String)>, Vec<(i64, f64)>);

/// The series both engines hold: (name and labels, samples).
fn corpus_series(base: i64) -> Vec<(&'static str, Series)> {
    let mut rng = Seeded(0x5eed_cafe);
    let mut out = Vec::new();
    let pods = [
        ("v1", "web-v1-a", "node-1"),
        ("v1", "web-v1-b", "node-2"),
        ("v1", "web-v1-c", "node-1"),
        ("v2", "web-v2-a", "node-2"),
        ("v2", "web-v2-b", "node-3"),
    ];
    for (i, (revision, pod, _)) in pods.iter().enumerate() {
        // web-v1-c goes away 15 minutes before the end; web-v2-b comes up
        // 10 minutes in; web-v1-b's process restarts half-way (a reset).
        let first = if *pod == "web-v2-b" { 60 } else { 0 };
        let last = if *pod == "web-v1-c" {
            150
        } else {
            SPAN_MS / SCRAPE_MS
        };
        for (code, share) in [
            ("200", 0.97 - 0.1 * i as f64 / 5.0),
            ("500", 0.03 + 0.1 * i as f64 / 5.0),
        ] {
            let mut total = 0.0;
            let mut samples = Vec::new();
            for k in first..=last {
                if *pod == "web-v1-b" && k == 120 {
                    total = 0.0;
                }
                total += (20.0 + 10.0 * rng.next()) * 10.0 * share;
                // Scrapes land a little off the grid, as real ones do.
                let t = base + k * SCRAPE_MS + 137 + (i as i64) * 211;
                samples.push((t, (total * 1000.0).round() / 1000.0));
            }
            let labels = vec![
                ("namespace", "shop".to_owned()),
                ("workload", "web".to_owned()),
                ("revision", (*revision).to_owned()),
                ("pod", (*pod).to_owned()),
                ("code", code.to_owned()),
            ];
            out.push(("http_requests_total", (labels, samples)));
        }
        // A histogram per pod, v2 slower.
        let bounds = ["0.05", "0.1", "0.25", "0.5", "1", "+Inf"];
        let shares: [f64; 6] = if *revision == "v1" {
            [0.55, 0.8, 0.95, 0.99, 1.0, 1.0]
        } else {
            [0.35, 0.6, 0.85, 0.97, 0.995, 1.0]
        };
        let mut counts = Vec::new();
        let mut total = 0.0;
        for k in first..=last {
            total += 200.0 + 50.0 * rng.next();
            counts.push((base + k * SCRAPE_MS + 137 + (i as i64) * 211, total));
        }
        for (le, share) in bounds.iter().zip(shares) {
            let labels = vec![
                ("namespace", "shop".to_owned()),
                ("workload", "web".to_owned()),
                ("revision", (*revision).to_owned()),
                ("pod", (*pod).to_owned()),
                ("le", (*le).to_owned()),
            ];
            let samples = counts
                .iter()
                .map(|(t, c)| (*t, (c * share).floor()))
                .collect();
            out.push(("http_request_duration_seconds_bucket", (labels, samples)));
        }
        // A gauge: resident memory, wandering.
        let mut memory = 100e6 + 1e6 * i as f64;
        let samples = (first..=last)
            .map(|k| {
                memory += (rng.next() - 0.5) * 4e6;
                (base + k * SCRAPE_MS + 911 + (i as i64) * 97, memory.round())
            })
            .collect();
        out.push((
            "process_resident_memory_bytes",
            (
                vec![
                    ("namespace", "shop".to_owned()),
                    ("pod", (*pod).to_owned()),
                    ("revision", (*revision).to_owned()),
                ],
                samples,
            ),
        ));
    }
    // An info metric for joins: which node a pod runs on.
    for (i, (_, pod, node)) in pods.iter().enumerate() {
        let samples = (0..=SPAN_MS / SCRAPE_MS)
            .map(|k| (base + k * SCRAPE_MS + 503 + i as i64 * 7, 1.0))
            .collect();
        out.push((
            "kube_pod_info",
            (
                vec![
                    ("namespace", "shop".to_owned()),
                    ("pod", (*pod).to_owned()),
                    ("node", (*node).to_owned()),
                ],
                samples,
            ),
        ));
    }
    // Two counters that differ by name only, for the duplicate check.
    for name in ["jobs_started_total", "jobs_done_total"] {
        let samples = (0..=SPAN_MS / SCRAPE_MS)
            .map(|k| (base + k * SCRAPE_MS + 331, (k * 3) as f64))
            .collect();
        out.push((name, (vec![("queue", "a".to_owned())], samples)));
    }
    out
}

fn openmetrics(series: &[(&str, Series)]) -> String {
    let mut text = String::new();
    // Families in one block each, as OpenMetrics wants them.
    let mut by_name: BTreeMap<&str, Vec<&Series>> = BTreeMap::new();
    for (name, s) in series {
        by_name.entry(name).or_default().push(s);
    }
    for (name, all) in by_name {
        for (labels, samples) in all {
            let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            for (t, v) in samples {
                let _ = writeln!(
                    text,
                    "{name}{{{}}} {v} {}.{:03}",
                    labels.join(","),
                    t / 1000,
                    t % 1000
                );
            }
        }
    }
    text.push_str("# EOF\n");
    text
}

fn store(series: &[(&str, Series)]) -> Tsdb {
    let mut db = Tsdb::new(i64::MAX / 4);
    for (name, (labels, samples)) in series {
        let pairs: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let id = Tsdb::labels(name, &pairs);
        for (t, v) in samples {
            db.append(&id, *t, *v);
        }
    }
    db
}

/// The queries: what canary analyses and dashboards ask.
const QUERIES: &[&str] = &[
    // A string on its own (the one place one may stand), and where it may
    // not.
    r#""canary""#,
    r#"'single quoted'"#,
    r#"-"canary""#,
    r#""canary" + 1"#,
    // Selectors and offsets.
    r#"http_requests_total{revision="v2",code="500"}"#,
    r#"http_requests_total{pod=~"web-v1-.*",code!="200"}"#,
    r#"process_resident_memory_bytes offset 5m"#,
    r#"{__name__=~"jobs_.*"}"#,
    // Rates and the success ratio.
    r#"rate(http_requests_total{code="200"}[1m])"#,
    r#"irate(http_requests_total{code="200"}[1m])"#,
    r#"increase(http_requests_total[5m])"#,
    r#"sum by (revision) (rate(http_requests_total[2m]))"#,
    r#"sum(rate(http_requests_total{code!~"5.."}[1m])) / sum(rate(http_requests_total[1m]))"#,
    r#"sum by (revision) (rate(http_requests_total{code=~"5.."}[1m])) / sum by (revision) (rate(http_requests_total[1m]))"#,
    r#"sum(rate(http_requests_total{code=~"5.."}[1m])) or vector(0)"#,
    r#"sum(rate(http_requests_total{code="404"}[1m])) or vector(0)"#,
    r#"rate(http_requests_total[5m] offset 10m)"#,
    r#"resets(http_requests_total[30m])"#,
    r#"changes(process_resident_memory_bytes[5m])"#,
    r#"delta(process_resident_memory_bytes[5m])"#,
    r#"idelta(process_resident_memory_bytes[5m])"#,
    r#"deriv(process_resident_memory_bytes[10m])"#,
    r#"predict_linear(process_resident_memory_bytes[10m], 3600)"#,
    // Latency.
    r#"histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket[2m])))"#,
    r#"histogram_quantile(0.5, sum by (le, revision) (rate(http_request_duration_seconds_bucket[2m])))"#,
    // Aggregations.
    r#"count(process_resident_memory_bytes)"#,
    r#"avg without (pod) (process_resident_memory_bytes)"#,
    r#"max by (revision) (process_resident_memory_bytes)"#,
    r#"min(process_resident_memory_bytes)"#,
    r#"stddev(process_resident_memory_bytes)"#,
    r#"stdvar by (revision) (process_resident_memory_bytes)"#,
    r#"quantile(0.9, process_resident_memory_bytes)"#,
    r#"topk(2, process_resident_memory_bytes)"#,
    r#"bottomk(1, sum by (pod) (rate(http_requests_total[1m])))"#,
    r#"group by (revision) (process_resident_memory_bytes)"#,
    r#"count_values("rev", count by (revision) (process_resident_memory_bytes))"#,
    // Over time.
    r#"avg_over_time(process_resident_memory_bytes[5m])"#,
    r#"max_over_time(process_resident_memory_bytes[5m])"#,
    r#"min_over_time(process_resident_memory_bytes[5m])"#,
    r#"sum_over_time(process_resident_memory_bytes[1m])"#,
    r#"count_over_time(process_resident_memory_bytes[5m])"#,
    r#"last_over_time(process_resident_memory_bytes[5m])"#,
    r#"quantile_over_time(0.5, process_resident_memory_bytes[10m])"#,
    r#"stddev_over_time(process_resident_memory_bytes[10m])"#,
    r#"present_over_time(process_resident_memory_bytes[1m])"#,
    r#"absent_over_time(process_resident_memory_bytes{pod="gone"}[5m])"#,
    r#"max_over_time(rate(http_requests_total{code="200"}[1m])[10m:1m])"#,
    r#"avg_over_time(sum(rate(http_requests_total[1m]))[5m:30s])"#,
    // Functions.
    r#"absent(http_requests_total{revision="v3",namespace="shop"})"#,
    r#"absent(http_requests_total{revision="v2"})"#,
    r#"clamp_min(rate(http_requests_total{code="500"}[1m]), 1)"#,
    r#"clamp_max(rate(http_requests_total{code="500"}[1m]), 1)"#,
    r#"clamp(process_resident_memory_bytes, 99e6, 101e6)"#,
    r#"round(process_resident_memory_bytes / 1e6, 0.5)"#,
    r#"abs(delta(process_resident_memory_bytes[5m]))"#,
    r#"sqrt(process_resident_memory_bytes)"#,
    r#"label_replace(process_resident_memory_bytes, "short", "$1", "pod", "web-(v[0-9])-.*")"#,
    r#"label_join(process_resident_memory_bytes, "id", "/", "namespace", "pod")"#,
    r#"time()"#,
    r#"hour()"#,
    r#"day_of_week(vector(time()))"#,
    r#"timestamp(process_resident_memory_bytes)"#,
    r#"scalar(sum(process_resident_memory_bytes))"#,
    r#"sort_desc(process_resident_memory_bytes)"#,
    // Operators and matching.
    r#"process_resident_memory_bytes > 100e6"#,
    r#"process_resident_memory_bytes > bool 100e6"#,
    r#"100e6 < process_resident_memory_bytes"#,
    r#"process_resident_memory_bytes / 1e6"#,
    r#"process_resident_memory_bytes - ignoring(revision) process_resident_memory_bytes"#,
    r#"rate(http_requests_total{code="500"}[1m]) / ignoring(code) rate(http_requests_total{code="200"}[1m])"#,
    r#"sum by (pod) (rate(http_requests_total[1m])) * on(pod) group_left(node) kube_pod_info"#,
    r#"kube_pod_info * on(pod) group_right(node) sum by (pod) (rate(http_requests_total[1m]))"#,
    r#"process_resident_memory_bytes and on(pod) kube_pod_info{node="node-1"}"#,
    r#"process_resident_memory_bytes unless on(pod) kube_pod_info{node="node-1"}"#,
    r#"process_resident_memory_bytes{revision="v1"} or process_resident_memory_bytes"#,
    r#"sum by (revision) (process_resident_memory_bytes) > on(revision) sum by (revision) (process_resident_memory_bytes) * 0.9"#,
    r#"process_resident_memory_bytes == bool on(pod, namespace) process_resident_memory_bytes"#,
    // What Prometheus refuses.
    r#"sum by (pod) (rate(http_requests_total[1m])) * on(namespace) kube_pod_info"#,
    r#"rate({__name__=~"jobs_.*"}[1m])"#,
    r#"http_requests_total / on(namespace) group_left sum by (namespace) (http_requests_total) + on(namespace) kube_pod_info"#,
    r#"sum(rate(http_requests_total[1m])"#,
    r#"rate(http_requests_total)"#,
];

/// Differences accepted, each with why.
const KNOWN: &[(&str, &str)] = &[];

/// An answer reduced to what is compared: the result type and, per label
/// set, the values; or the error's HTTP status.
#[derive(Debug, Clone)]
enum Reduced {
    Scalar(f64),
    String(String),
    Vector(BTreeMap<String, f64>),
    Error(u16),
}

fn reduce_prometheus(status: u16, body: &Value) -> Reduced {
    if status != 200 {
        return Reduced::Error(status);
    }
    let data = &body["data"];
    let number = |v: &Value| v.as_str().unwrap().parse::<f64>().unwrap();
    match data["resultType"].as_str().unwrap() {
        "scalar" => Reduced::Scalar(number(&data["result"][1])),
        "string" => Reduced::String(data["result"][1].as_str().unwrap().to_owned()),
        "vector" => Reduced::Vector(
            data["result"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| (s["metric"].to_string(), number(&s["value"][1])))
                .collect(),
        ),
        other => panic!("unexpected result type {other}"),
    }
}

fn reduce_simulator(answer: Result<Answer, promql::EvalError>) -> Reduced {
    match answer {
        Err(e) => Reduced::Error(if e.execution { 422 } else { 400 }),
        Ok(Answer::Scalar(v)) => Reduced::Scalar(v),
        Ok(Answer::Vector(samples)) => Reduced::Vector(
            samples
                .into_iter()
                .map(|s| {
                    (
                        serde_json::to_value(&s.labels).unwrap().to_string(),
                        s.value,
                    )
                })
                .collect(),
        ),
        Ok(Answer::String(text)) => Reduced::String(text),
        Ok(Answer::Matrix(_)) => panic!("no query here returns a range"),
    }
}

fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

fn same(a: &Reduced, b: &Reduced) -> bool {
    match (a, b) {
        (Reduced::Scalar(x), Reduced::Scalar(y)) => close(*x, *y),
        (Reduced::String(x), Reduced::String(y)) => x == y,
        (Reduced::Vector(x), Reduced::Vector(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| close(*v, *w)))
        }
        (Reduced::Error(x), Reduced::Error(y)) => x == y,
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_simulators_promql_answers_as_prometheus_does_on_the_same_samples() {
    let base = base_ms();
    let series = corpus_series(base);
    let db = store(&series);
    let prometheus = Prometheus::with_samples(&openmetrics(&series)).await;
    let client = reqwest::Client::new();
    // Early, in the middle, and after a pod went away; never on a sample's
    // or a step's time.
    let times = [
        base + 12 * 60_000 + 4_321,
        base + 27 * 60_000 + 7_777,
        base + 38 * 60_000 + 1_234,
    ];
    let mut differences = Vec::new();
    let mut compared = 0;
    for query in QUERIES {
        for at in times {
            compared += 1;
            let mut url = url::Url::parse(&format!("{}/api/v1/query", prometheus.url)).unwrap();
            url.query_pairs_mut()
                .append_pair("query", query)
                .append_pair("time", &format!("{}.{:03}", at / 1000, at % 1000));
            let response = client.get(url).send().await.unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            let real = reduce_prometheus(status, &body);
            let simulated = reduce_simulator(promql::query(&db, query, at));
            if !same(&real, &simulated) {
                differences.push(format!(
                    "{query} at +{}ms: Prometheus {real:?}{}, simulator {simulated:?}",
                    at - base,
                    body.get("error")
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                ));
            }
        }
    }
    let matched = compared - differences.len();
    eprintln!(
        "PromQL: {matched} of {compared} answers match Prometheus ({:.1}%)",
        100.0 * matched as f64 / compared as f64
    );
    let unknown: Vec<&String> = differences
        .iter()
        .filter(|d| {
            !KNOWN
                .iter()
                .any(|(q, _)| d.starts_with(&format!("{q} at ")))
        })
        .collect();
    assert!(
        unknown.is_empty(),
        "{} answers differ from Prometheus:\n{}",
        unknown.len(),
        unknown
            .iter()
            .map(|d| d.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The query API's parameters, read by the simulator's endpoint as by a
/// real Prometheus's: `timeout` and `step` as seconds or durations, zero
/// and negative ones, ones that overflow, ones that are no number at all.
/// Each answer's HTTP status, `errorType` and `error` must be the same.
#[tokio::test]
async fn the_query_parameters_are_read_as_prometheus_reads_them() {
    let prometheus = Prometheus::with_samples(&openmetrics(&corpus_series(base_ms()))).await;
    let scenario = sluice_sim::scenario::Scenario::parse(
        "parameters",
        "name: parameters\nseed: 1\nversions:\n  - {image: registry.example/web:1.0}\n",
    )
    .unwrap();
    let sim = sluice_sim::scenario::Simulation::start(scenario).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let simulated = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        axum::serve(
            listener,
            sluice_sim::metrics::http::router(sim.metrics.clone()),
        )
        .into_future(),
    );
    let client = reqwest::Client::new();
    let answer = |base: String, path: &'static str, params: Vec<(&'static str, &'static str)>| {
        let client = client.clone();
        async move {
            let mut url = url::Url::parse(&format!("{base}{path}")).unwrap();
            url.query_pairs_mut().extend_pairs(params);
            let response = client.get(url).send().await.unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            // A deadline already passed is said "in query queue" or "in
            // query execution", as it happens to fall; the same to a client.
            let error = body["error"]
                .as_str()
                .map(|e| e.replace("in query execution", "in query queue"));
            // And what an answer is: its type, and an instant's value.
            let data = &body["data"];
            let answer = (data["resultType"].clone(), data["result"][1].clone());
            (
                status,
                body["errorType"].as_str().map(str::to_owned),
                error,
                answer,
            )
        }
    };
    let mut cases: Vec<(&str, Vec<(&str, &str)>)> = Vec::new();
    for timeout in [
        "30",
        "0.5",
        "30s",
        "1m30s",
        "0",
        "-1",
        "0s",
        "-0.5",
        "9999999999999",
        "Inf",
        "1e400",
        "soon",
        "1s1m",
    ] {
        cases.push((
            "/api/v1/query",
            vec![("query", "1"), ("time", "100"), ("timeout", timeout)],
        ));
    }
    for step in [
        "15", "15s", "1m30s", "0.5", "0", "-1", "0s", "soon", "1e400", "0.0001",
    ] {
        cases.push((
            "/api/v1/query_range",
            vec![
                ("query", "1"),
                ("start", "100"),
                ("end", "200"),
                ("step", step),
            ],
        ));
    }
    // A string answers an instant query, not a range query.
    cases.push((
        "/api/v1/query",
        vec![("query", "\"canary\""), ("time", "100")],
    ));
    cases.push((
        "/api/v1/query_range",
        vec![
            ("query", "\"canary\""),
            ("start", "100"),
            ("end", "200"),
            ("step", "10"),
        ],
    ));
    // No step at all.
    cases.push((
        "/api/v1/query_range",
        vec![("query", "1"), ("start", "100"), ("end", "200")],
    ));
    let mut differences = Vec::new();
    for (path, params) in &cases {
        let real = answer(prometheus.url.clone(), path, params.clone()).await;
        let ours = answer(simulated.clone(), path, params.clone()).await;
        if real != ours {
            differences.push(format!(
                "{path} {params:?}: Prometheus {real:?}, simulator {ours:?}"
            ));
        }
    }
    eprintln!(
        "query parameters: {} of {} answered alike",
        cases.len() - differences.len(),
        cases.len()
    );
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}
