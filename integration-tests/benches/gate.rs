//! One gate measurement against a real Prometheus, against the same query
//! sent as a bare HTTP request in the same run (target: at most 1.1x).
//!
//! `cargo bench -p sluice-integration-tests --bench gate` (needs Debian's
//! `prometheus`; `scripts/test` installs it).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{collections::BTreeMap, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use sluice_gate::{
    measure::measure,
    prometheus::{ClientOptions, Prometheus as Client},
    spec::{Condition, Context, MetricSpec},
    template,
};
use sluice_integration_tests::prometheus::{Behaviour, Exporter, Prometheus};

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (_exporter, prometheus) = runtime.block_on(async {
        let exporter = Exporter::start().await;
        exporter.set(
            "shop",
            "web",
            "v2",
            Behaviour {
                rps: 50.0,
                error_ratio: 0.001,
                latency: 0.05,
            },
        );
        let prometheus = Prometheus::start(&[exporter.addr]).await;
        // Two scrapes, so rate() has data.
        tokio::time::sleep(Duration::from_secs(3)).await;
        (exporter, prometheus)
    });
    let spec = MetricSpec {
        name: "success-rate".into(),
        query: template::builtin("request-success-rate").unwrap(),
        success: Some(Condition::Threshold {
            min: Some(0.99),
            max: None,
        }),
        failure: None,
        interval: Duration::from_secs(1),
        count: 0,
        initial_delay: Duration::ZERO,
        failure_limit: 0,
        inconclusive_limit: 0,
        consecutive_error_limit: 4,
        consecutive_success_limit: 0,
        dry_run: false,
    };
    let context = Context {
        namespace: "shop".into(),
        workload: "web".into(),
        canary_workload: "web".into(),
        canary_revision: "v2".into(),
        stable_revision: "v1".into(),
        window: Duration::from_secs(10),
        args: BTreeMap::new(),
    };
    let query = spec.query.render(&context).unwrap();
    let client = Client::new(ClientOptions::new(prometheus.url.parse().unwrap())).unwrap();
    let raw = reqwest::Client::new();
    let mut raw_url = url::Url::parse(&format!("{}/api/v1/query", prometheus.url)).unwrap();
    raw_url.query_pairs_mut().append_pair("query", &query);

    let mut group = c.benchmark_group("gate");
    group.bench_function("raw-http-query", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let response = raw.get(raw_url.clone()).send().await.unwrap();
                response.bytes().await.unwrap()
            })
        });
    });
    group.bench_function("measurement", |b| {
        b.iter(|| {
            let m = runtime.block_on(measure(&client, &spec, &context));
            assert_eq!(m.outcome, sluice_gate::judge::Outcome::Successful, "{m:?}");
            m
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
