//! The evaluator on a small store of known samples.
use super::*;
use crate::tsdb::Tsdb;

fn db() -> Tsdb {
    let mut db = Tsdb::new(600_000);
    let ok = Tsdb::labels(
        "http_requests_total",
        &[("code", "200"), ("revision", "v2")],
    );
    let bad = Tsdb::labels(
        "http_requests_total",
        &[("code", "500"), ("revision", "v2")],
    );
    for i in 0..=60 {
        let t = i * 1000;
        db.append(&ok, t, 99.0 * i as f64);
        db.append(&bad, t, i as f64);
    }
    for (le, count) in [
        ("0.05", 50.0),
        ("0.1", 90.0),
        ("0.5", 99.0),
        ("+Inf", 100.0),
    ] {
        let b = Tsdb::labels("latency_bucket", &[("le", le), ("revision", "v2")]);
        db.append(&b, 0, 0.0);
        db.append(&b, 60_000, count);
    }
    db
}

fn scalar_of(v: Value) -> f64 {
    match v {
        Value::Vector(v) if v.len() == 1 => v[0].value,
        Value::Scalar(s) => s,
        other => panic!("one value expected, got {other:?}"),
    }
}

#[test]
fn success_rate_from_counters() {
    let q =
        r#"sum(rate(http_requests_total{code!~"5.."}[30s])) / sum(rate(http_requests_total[30s]))"#;
    let v = scalar_of(query(&db(), q, 60_000).unwrap());
    assert!((v - 0.99).abs() < 1e-9, "{v}");
}

#[test]
fn rate_matches_a_steady_counter() {
    let v = scalar_of(
        query(
            &db(),
            r#"sum(rate(http_requests_total{code="500"}[30s]))"#,
            60_000,
        )
        .unwrap(),
    );
    assert!((v - 1.0).abs() < 1e-9, "{v}");
}

#[test]
fn histogram_quantile_interpolates_inside_the_bucket() {
    let v = scalar_of(
        query(
            &db(),
            "histogram_quantile(0.95, sum by (le) (rate(latency_bucket[2m])))",
            60_000,
        )
        .unwrap(),
    );
    // Rank 95 of 100 lies in (0.1, 0.5]: 0.1 + 0.4 * (95 - 90) / 9.
    assert!((v - (0.1 + 0.4 * 5.0 / 9.0)).abs() < 1e-9, "{v}");
}

#[test]
fn comparisons_filter_and_bool_keeps() {
    let db = db();
    let Value::Vector(v) = query(&db, "http_requests_total > 1000", 60_000).unwrap() else {
        panic!()
    };
    assert_eq!(v.len(), 1);
    let Value::Vector(v) = query(&db, "http_requests_total > bool 1000", 60_000).unwrap() else {
        panic!()
    };
    assert_eq!(v.len(), 2);
}

#[test]
fn no_samples_means_an_empty_vector() {
    let v = query(
        &db(),
        "sum(rate(http_requests_total{revision=\"v9\"}[30s]))",
        60_000,
    )
    .unwrap();
    assert_eq!(v, Value::Vector(vec![]));
}

#[test]
fn unsupported_constructs_are_named() {
    let e = query(&db(), "histogram_count(http_requests_total)", 60_000).unwrap_err();
    assert!(
        e.message.contains("function histogram_count()"),
        "{}",
        e.message
    );
    assert!(
        query(&db(), "sum(", 0)
            .unwrap_err()
            .message
            .starts_with("invalid parameter \"query\"")
    );
}

#[test]
fn a_series_ended_by_a_staleness_marker_answers_no_instant_query() {
    let mut db = db();
    let gone = Tsdb::labels("up", &[("pod", "a")]);
    let live = Tsdb::labels("up", &[("pod", "b")]);
    for i in 0..=10 {
        db.append(&gone, i * 1000, 1.0);
        db.append(&live, i * 1000, 1.0);
    }
    db.append(&gone, 11_000, crate::tsdb::stale_marker());
    db.append(&live, 11_000, 1.0);
    assert_eq!(scalar_of(query(&db, "count(up)", 10_500).unwrap()), 2.0);
    assert_eq!(scalar_of(query(&db, "count(up)", 12_000).unwrap()), 1.0);
    // A range keeps the samples before the marker, without it.
    assert_eq!(
        scalar_of(query(&db, "count_over_time(up{pod=\"a\"}[1m])", 12_000).unwrap()),
        11.0
    );
    // A real NaN is a value, not an end.
    db.append(&live, 12_000, f64::NAN);
    assert_eq!(scalar_of(query(&db, "count(up)", 12_500).unwrap()), 1.0);
}
