//! `/metrics` and the Prometheus HTTP API (`/api/v1/query`,
//! `/api/v1/query_range`, `/-/ready`) over the simulator's own series.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::{Value, json};

use crate::{
    Metrics,
    promql::{self, Value as Result},
};

fn api_error(code: StatusCode, kind: &str, message: &str) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"status": "error", "errorType": kind, "error": message}).to_string(),
    )
        .into_response()
}

/// An evaluation error as Prometheus answers it: 422 `execution` for what
/// a query met while it ran, 400 `bad_data` for a query that cannot run.
fn eval_error(e: &promql::EvalError) -> Response {
    if e.timeout {
        api_error(StatusCode::SERVICE_UNAVAILABLE, "timeout", &e.message)
    } else if e.execution {
        api_error(StatusCode::UNPROCESSABLE_ENTITY, "execution", &e.message)
    } else {
        api_error(StatusCode::BAD_REQUEST, "bad_data", &e.message)
    }
}

/// A duration parameter (`timeout`, `step`) in milliseconds, read as
/// Prometheus reads one: seconds as a number (`15`, `0.5`; zero or
/// negative too, of at most an int64 of nanoseconds) or a duration (`15s`,
/// `1m30s`). What is wrong with it otherwise, as Prometheus says it.
fn duration_param_ms(text: &str) -> std::result::Result<f64, String> {
    // Go reads "Inf" as infinity (which overflows below) but a number too
    // large for a float as no number at all; Rust reads both as infinity.
    let literal_infinity = text
        .trim_start_matches(['+', '-'])
        .to_ascii_lowercase()
        .starts_with("inf");
    if let Ok(seconds) = text.parse::<f64>()
        && (!seconds.is_infinite() || literal_infinity)
    {
        let nanos = seconds * 1e9;
        if nanos > i64::MAX as f64 || nanos < i64::MIN as f64 {
            return Err(format!(
                "cannot parse {text:?} to a valid duration. It overflows int64"
            ));
        }
        return Ok(seconds * 1000.0);
    }
    duration_text_ms(text)
        .map(|ms| ms as f64)
        .ok_or_else(|| format!("cannot parse {text:?} to a valid duration"))
}

/// A Prometheus duration (`1h30m`, `250ms`, `0s`: units from years down
/// to milliseconds, largest first, each once) in milliseconds; `None` when
/// it is not one or its nanoseconds overflow an int64.
fn duration_text_ms(text: &str) -> Option<i64> {
    const UNITS: [(&str, i64); 7] = [
        ("y", 365 * 86_400_000),
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("ms", 1),
        ("m", 60_000),
        ("s", 1_000),
    ];
    // Their order, largest first ("ms" is matched before "m").
    let rank = |unit: &str| {
        ["y", "w", "d", "h", "m", "s", "ms"]
            .iter()
            .position(|u| *u == unit)
    };
    let mut rest = text;
    let mut total: i64 = 0;
    let mut last = None;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return None;
        }
        let n: i64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, ms) = UNITS.iter().find(|(u, _)| rest.starts_with(u))?;
        rest = &rest[unit.len()..];
        let at = rank(unit)?;
        if last.is_some_and(|l| at <= l) {
            return None;
        }
        last = Some(at);
        total = total.checked_add(n.checked_mul(*ms)?)?;
    }
    (last.is_some() && total <= i64::MAX / 1_000_000).then_some(total)
}

fn number(v: f64) -> String {
    promql::format_value(v)
}

fn parse_time(text: Option<&String>, default_ms: i64) -> std::result::Result<i64, String> {
    match text {
        None => Ok(default_ms),
        Some(t) => t
            .parse::<f64>()
            .map(|s| (s * 1000.0) as i64)
            .or_else(|_| {
                sluice_sim_api::time::parse_rfc3339(t)
                    .map(|s| {
                        s.duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_millis() as i64)
                    })
                    .ok_or(())
            })
            .map_err(|()| format!("cannot parse {t:?} to a valid timestamp")),
    }
}

fn unavailable(metrics: &Metrics) -> Option<Response> {
    let down = metrics
        .unavailable
        .load(std::sync::atomic::Ordering::Relaxed);
    down.then(|| {
        api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the simulated Prometheus is down (injected fault)",
        )
    })
}

/// Parameters from the URL and, for POST, the form body.
fn params(uri: &Uri, body: &[u8]) -> HashMap<String, String> {
    let mut all: HashMap<String, String> =
        url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    all.extend(url::form_urlencoded::parse(body).into_owned());
    all
}

/// Prometheus' default query timeout (`--query.timeout`).
const DEFAULT_TIMEOUT_MS: i64 = 120_000;

/// When a query must end: its `timeout` parameter (seconds or a duration),
/// at most Prometheus' default.
#[allow(clippy::result_large_err)] // an error is the answer itself
fn deadline(params: &HashMap<String, String>) -> std::result::Result<std::time::Instant, Response> {
    let ms = match params.get("timeout") {
        None => DEFAULT_TIMEOUT_MS as f64,
        Some(text) => duration_param_ms(text).map_err(|why| {
            api_error(
                StatusCode::BAD_REQUEST,
                "bad_data",
                &format!("invalid parameter \"timeout\": {why}"),
            )
        })?,
    };
    // A deadline already passed (0, or negative seconds) ends the query
    // before it runs, as Prometheus' does.
    if ms <= 0.0 {
        return Err(api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "query timed out in query queue",
        ));
    }
    let ms = (ms.ceil() as i64).min(DEFAULT_TIMEOUT_MS);
    Ok(std::time::Instant::now() + std::time::Duration::from_millis(ms.unsigned_abs()))
}

/// Runs an evaluation off the server's async threads, so a heavy query
/// holds up neither the API server beside it nor other requests.
async fn blocking(work: impl FnOnce() -> Response + Send + 'static) -> Response {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| {
        api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            &format!("the query failed: {e}"),
        )
    })
}

/// A query's parameters, checked, and `run` on them before the deadline.
async fn evaluate(
    metrics: Metrics,
    uri: &Uri,
    body: &[u8],
    run: fn(&Metrics, &HashMap<String, String>, Until<'_>) -> Response,
) -> Response {
    let params = params(uri, body);
    if let Some(r) = unavailable(&metrics) {
        return r;
    }
    let deadline = match deadline(&params) {
        Ok(d) => d,
        Err(r) => return r,
    };
    // A client that hangs up drops this future, and the guard with it:
    // the evaluation sees the flag and stops.
    let cancelled = Arc::new(AtomicBool::new(false));
    let _guard = CancelOnDrop(cancelled.clone());
    blocking(move || {
        let until = Until {
            deadline,
            cancelled: &cancelled,
        };
        run(&metrics, &params, until)
    })
    .await
}

/// When an evaluation stops: at its deadline, or when its client left.
#[derive(Clone, Copy)]
struct Until<'a> {
    deadline: std::time::Instant,
    cancelled: &'a AtomicBool,
}

/// Sets its flag when dropped.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The samples as they are now: the state is held only while they are
/// shared out, not while a query reads them, so a long query holds up
/// neither other queries nor the recording of samples nor `/metrics`.
fn snapshot(metrics: &Metrics) -> crate::tsdb::Tsdb {
    metrics
        .state
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .tsdb
        .snapshot()
}

async fn query(State(metrics): State<Metrics>, uri: Uri, body: Bytes) -> Response {
    evaluate(metrics, &uri, &body, instant_query).await
}

fn instant_query(
    metrics: &Metrics,
    params: &HashMap<String, String>,
    until: Until<'_>,
) -> Response {
    let Some(q) = params.get("query") else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "bad_data",
            "invalid parameter \"query\": no query given",
        );
    };
    let at = match parse_time(params.get("time"), metrics.now_ms()) {
        Ok(t) => t,
        Err(e) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "bad_data",
                &format!("invalid parameter \"time\": {e}"),
            );
        }
    };
    let db = snapshot(metrics);
    let result = promql::parse(q).and_then(|expr| {
        let ctx = promql::Ctx {
            db: &db,
            start: at,
            end: at,
            deadline: Some(until.deadline),
            cancelled: Some(until.cancelled),
        };
        promql::eval(ctx, &expr, at)
    });
    let t = at as f64 / 1000.0;
    let data = match result {
        Err(e) => return eval_error(&e),
        Ok(Result::Scalar(v)) => json!({"resultType": "scalar", "result": [t, number(v)]}),
        Ok(Result::String(text)) => json!({"resultType": "string", "result": [t, text]}),
        Ok(Result::Vector(samples)) => {
            json!({"resultType": "vector", "result": samples.iter().map(|s| json!({"metric": s.labels, "value": [t, number(s.value)]})).collect::<Vec<Value>>()})
        }
        Ok(Result::Matrix(series)) => {
            json!({"resultType": "matrix", "result": series.iter().map(|(l, p)| json!({"metric": l, "values": p.iter().map(|(t, v)| json!([*t as f64 / 1000.0, number(*v)])).collect::<Vec<Value>>()})).collect::<Vec<Value>>()})
        }
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"status": "success", "data": data}).to_string(),
    )
        .into_response()
}

async fn query_range(State(metrics): State<Metrics>, uri: Uri, body: Bytes) -> Response {
    evaluate(metrics, &uri, &body, range_query).await
}

fn range_query(metrics: &Metrics, params: &HashMap<String, String>, until: Until<'_>) -> Response {
    let Some(q) = params.get("query") else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "bad_data",
            "invalid parameter \"query\": no query given",
        );
    };
    let now = metrics.now_ms();
    let (start, end) = match (
        parse_time(params.get("start"), now),
        parse_time(params.get("end"), now),
    ) {
        (Ok(s), Ok(e)) if s <= e => (s, e),
        _ => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "bad_data",
                "invalid parameter \"start\" or \"end\"",
            );
        }
    };
    let step = match duration_param_ms(params.get("step").map_or("", String::as_str)) {
        Err(why) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "bad_data",
                &format!("invalid parameter \"step\": {why}"),
            );
        }
        Ok(ms) if ms <= 0.0 => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "bad_data",
                "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer",
            );
        }
        Ok(ms) => ms,
    };
    let expr = match promql::parse(q) {
        Ok(expr) => expr,
        Err(e) => return eval_error(&e),
    };
    if (end - start) as f64 / step > 11_000.0 {
        return api_error(
            StatusCode::BAD_REQUEST,
            "bad_data",
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        );
    }
    let step = (step.round() as i64).max(1);
    let mut series: std::collections::BTreeMap<
        std::collections::BTreeMap<String, String>,
        Vec<Value>,
    > = Default::default();
    let db = snapshot(metrics);
    let mut t = start;
    while t <= end {
        let ctx = promql::Ctx {
            db: &db,
            start,
            end,
            deadline: Some(until.deadline),
            cancelled: Some(until.cancelled),
        };
        match promql::eval(ctx, &expr, t) {
            Err(e) => return eval_error(&e),
            Ok(Result::Scalar(v)) => series
                .entry(Default::default())
                .or_default()
                .push(json!([t as f64 / 1000.0, number(v)])),
            Ok(Result::Vector(samples)) => {
                for s in samples {
                    series
                        .entry(s.labels)
                        .or_default()
                        .push(json!([t as f64 / 1000.0, number(s.value)]));
                }
            }
            Ok(Result::Matrix(_)) => {
                return api_error(
                    StatusCode::BAD_REQUEST,
                    "bad_data",
                    "invalid expression type \"range vector\" for range query, must be Scalar or instant Vector",
                );
            }
            Ok(Result::String(_)) => {
                return api_error(
                    StatusCode::BAD_REQUEST,
                    "bad_data",
                    "invalid expression type \"string\" for range query, must be Scalar or instant Vector",
                );
            }
        }
        t += step;
    }
    let result: Vec<Value> = series
        .into_iter()
        .map(|(l, v)| json!({"metric": l, "values": v}))
        .collect();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"status": "success", "data": {"resultType": "matrix", "result": result}})
            .to_string(),
    )
        .into_response()
}

async fn exposition(State(metrics): State<Metrics>) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        blocking_text(move || metrics.exposition()).await,
    )
        .into_response()
}

/// [`blocking`] for a text answer.
async fn blocking_text(work: impl FnOnce() -> String + Send + 'static) -> String {
    tokio::task::spawn_blocking(work).await.unwrap_or_default()
}

async fn ready(State(metrics): State<Metrics>) -> Response {
    unavailable(&metrics)
        .unwrap_or_else(|| (StatusCode::OK, "Prometheus Server is Ready.\n").into_response())
}

/// The router for `--metrics-addr`.
pub fn router(metrics: Metrics) -> Router {
    Router::new()
        .route("/metrics", get(exposition))
        .route("/api/v1/query", get(query).post(query))
        .route("/api/v1/query_range", get(query_range).post(query_range))
        .route("/-/ready", get(ready))
        .route("/-/healthy", get(ready))
        .with_state(metrics)
}

#[cfg(test)]
mod tests {
    use super::duration_param_ms;

    #[test]
    fn a_duration_parameter_is_read_as_prometheus_reads_it() {
        for (text, ms) in [
            ("15", 15_000.0),
            ("0.5", 500.0),
            ("15s", 15_000.0),
            ("1m30s", 90_000.0),
            ("250ms", 250.0),
            ("2m", 120_000.0),
            // Zero and negative are read: a step then is refused, a query
            // with such a timeout times out at once.
            ("0", 0.0),
            ("0s", 0.0),
            ("-1", -1_000.0),
        ] {
            assert_eq!(duration_param_ms(text), Ok(ms), "{text:?}");
        }
        for overflows in ["9999999999999", "Inf"] {
            assert_eq!(
                duration_param_ms(overflows),
                Err(format!(
                    "cannot parse {overflows:?} to a valid duration. It overflows int64"
                ))
            );
        }
        for bad in ["1e400", "soon", "", "1s1m", "99999999999999999999y"] {
            assert_eq!(
                duration_param_ms(bad),
                Err(format!("cannot parse {bad:?} to a valid duration")),
                "{bad:?}"
            );
        }
    }
}
