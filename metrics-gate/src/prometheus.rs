//! A client of the Prometheus HTTP API (`/api/v1/query`, `/api/v1/query_range`).
//!
//! *Guarantees*: NaN, `+Inf`, `-Inf` and empty results come back as they
//! are, never smoothed into numbers; every failure is a [`QueryError`] that
//! says whether the query could not be made (transport, timeout, 5xx) or
//! was refused (4xx with Prometheus's own error) or could not be read.
//! Transport errors, timeouts and 5xx answers are retried with exponential
//! backoff (100 ms, 200 ms, 400 ms, ... at most 2 s between attempts).

use std::{collections::BTreeMap, time::Duration};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use url::Url;

/// How the client reaches Prometheus.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Base URL; `api/v1/query` is joined to it.
    pub url: Url,
    /// Limit for one attempt.
    pub timeout: Duration,
    /// Attempts after the first for retriable failures.
    pub retries: u32,
    /// Headers sent with every query (authorization included).
    pub headers: HeaderMap,
    /// PEM CA bundle to verify an https Prometheus.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM certificate and key presented to Prometheus (mutual TLS).
    pub identity_pem: Option<Vec<u8>>,
}

impl ClientOptions {
    /// Plain options for `url`: 5 s timeout, 2 retries, no auth.
    pub fn new(url: Url) -> Self {
        Self {
            url,
            timeout: Duration::from_secs(5),
            retries: 2,
            headers: HeaderMap::new(),
            ca_pem: None,
            identity_pem: None,
        }
    }

    /// Adds `Authorization: Bearer <token>`.
    ///
    /// # Errors
    /// A token that is not a valid header value.
    pub fn bearer(mut self, token: &str) -> Result<Self, String> {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
            .map_err(|e| e.to_string())?;
        value.set_sensitive(true);
        self.headers.insert(reqwest::header::AUTHORIZATION, value);
        Ok(self)
    }

    /// Adds basic authentication.
    ///
    /// # Errors
    /// Credentials that do not make a valid header value.
    pub fn basic(mut self, user: &str, password: &str) -> Result<Self, String> {
        use std::fmt::Write as _;
        let raw = format!("{user}:{password}");
        let mut encoded = String::new();
        // Base64 by hand: one header does not justify a dependency.
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        for chunk in raw.as_bytes().chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    let _ = write!(
                        encoded,
                        "{}",
                        ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char
                    );
                } else {
                    encoded.push('=');
                }
            }
        }
        let mut value =
            HeaderValue::from_str(&format!("Basic {encoded}")).map_err(|e| e.to_string())?;
        value.set_sensitive(true);
        self.headers.insert(reqwest::header::AUTHORIZATION, value);
        Ok(self)
    }

    /// Adds a header given as `Name: value`.
    ///
    /// # Errors
    /// Text that is not a header.
    pub fn header(mut self, text: &str) -> Result<Self, String> {
        let (name, value) = text
            .split_once(':')
            .ok_or_else(|| format!("`{text}` is not `Name: value`"))?;
        let name =
            HeaderName::from_bytes(name.trim().as_bytes()).map_err(|e| format!("`{text}`: {e}"))?;
        let value = HeaderValue::from_str(value.trim()).map_err(|e| format!("`{text}`: {e}"))?;
        self.headers.append(name, value);
        Ok(self)
    }
}

/// One series' value at one time.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The series' labels.
    pub labels: BTreeMap<String, String>,
    /// The value; NaN and infinities kept.
    pub value: f64,
    /// Unix seconds.
    pub time: f64,
}

/// One series over a range.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The series' labels.
    pub labels: BTreeMap<String, String>,
    /// (unix seconds, value) pairs.
    pub points: Vec<(f64, f64)>,
}

/// What a query returned.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryData {
    /// A single number.
    Scalar(Sample),
    /// One value per series; may be empty.
    Vector(Vec<Sample>),
    /// Values over time per series.
    Matrix(Vec<Series>),
    /// A string result.
    Text(String),
}

/// Why a query gave no data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The request could not be made or no answer came (after retries).
    #[error("Prometheus unreachable: {0}")]
    Unreachable(String),
    /// No answer within the timeout (after retries).
    #[error("Prometheus did not answer within {0:?}")]
    Timeout(Duration),
    /// Prometheus answered with an HTTP error and no API error body.
    #[error("Prometheus answered HTTP {status}: {body}")]
    Http {
        /// The status code.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// Prometheus refused the query, e.g. `bad_data: parse error`.
    #[error("Prometheus refused the query ({error_type}): {error}")]
    Refused {
        /// Prometheus's errorType.
        error_type: String,
        /// Prometheus's error.
        error: String,
    },
    /// The answer was not the API's JSON.
    #[error("cannot read Prometheus's answer: {0}")]
    Decode(String),
}

impl QueryError {
    fn retriable(&self) -> bool {
        match self {
            Self::Unreachable(_) | Self::Timeout(_) => true,
            Self::Http { status, .. } => *status >= 500,
            Self::Refused { error_type, .. } => {
                error_type == "unavailable" || error_type == "timeout"
            }
            Self::Decode(_) => false,
        }
    }
}

/// A Prometheus HTTP API client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Prometheus {
    http: reqwest::Client,
    options: ClientOptions,
}

fn parse_value(pair: &Value) -> Result<(f64, f64), QueryError> {
    let bad = || QueryError::Decode(format!("not a [time, \"value\"] pair: {pair}"));
    let time = pair.get(0).and_then(Value::as_f64).ok_or_else(bad)?;
    let text = pair.get(1).and_then(Value::as_str).ok_or_else(bad)?;
    // Prometheus writes NaN, +Inf and -Inf; Rust reads all three.
    let value = text.parse::<f64>().map_err(|_| bad())?;
    Ok((time, value))
}

fn parse_labels(metric: Option<&Value>) -> BTreeMap<String, String> {
    metric
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// Reads an API answer body (success or error).
///
/// # Errors
/// [`QueryError::Refused`] for an error answer, [`QueryError::Decode`] for
/// anything that is not the API's JSON.
pub fn parse_response(body: &[u8]) -> Result<QueryData, QueryError> {
    let json: Value = serde_json::from_slice(body).map_err(|e| {
        let start = String::from_utf8_lossy(&body[..body.len().min(120)]).into_owned();
        QueryError::Decode(format!("{e} in {start:?}"))
    })?;
    match json.get("status").and_then(Value::as_str) {
        Some("success") => {}
        Some("error") => {
            return Err(QueryError::Refused {
                error_type: json["errorType"].as_str().unwrap_or("unknown").to_owned(),
                error: json["error"].as_str().unwrap_or_default().to_owned(),
            });
        }
        _ => return Err(QueryError::Decode(format!("no status in {json}"))),
    }
    let data = &json["data"];
    let result = &data["result"];
    match data["resultType"].as_str() {
        Some("scalar") => {
            let (time, value) = parse_value(result)?;
            Ok(QueryData::Scalar(Sample {
                labels: BTreeMap::new(),
                value,
                time,
            }))
        }
        Some("string") => Ok(QueryData::Text(
            result
                .get(1)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        )),
        Some("vector") => {
            let items = result
                .as_array()
                .ok_or_else(|| QueryError::Decode("vector result is not a list".into()))?;
            items
                .iter()
                .map(|item| {
                    let (time, value) = parse_value(&item["value"])?;
                    Ok(Sample {
                        labels: parse_labels(item.get("metric")),
                        value,
                        time,
                    })
                })
                .collect::<Result<_, _>>()
                .map(QueryData::Vector)
        }
        Some("matrix") => {
            let items = result
                .as_array()
                .ok_or_else(|| QueryError::Decode("matrix result is not a list".into()))?;
            items
                .iter()
                .map(|item| {
                    let values = item["values"]
                        .as_array()
                        .ok_or_else(|| QueryError::Decode("series without values".into()))?;
                    let points = values.iter().map(parse_value).collect::<Result<_, _>>()?;
                    Ok(Series {
                        labels: parse_labels(item.get("metric")),
                        points,
                    })
                })
                .collect::<Result<_, _>>()
                .map(QueryData::Matrix)
        }
        other => Err(QueryError::Decode(format!("unknown resultType {other:?}"))),
    }
}

impl Prometheus {
    /// A client with these options.
    ///
    /// # Errors
    /// A CA or identity that does not parse.
    pub fn new(options: ClientOptions) -> Result<Self, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.timeout)
            .default_headers(options.headers.clone())
            .pool_max_idle_per_host(64);
        if let Some(ca) = &options.ca_pem {
            for cert in
                reqwest::Certificate::from_pem_bundle(ca).map_err(|e| format!("CA bundle: {e}"))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some(identity) = &options.identity_pem {
            builder = builder.identity(
                reqwest::Identity::from_pem(identity)
                    .map_err(|e| format!("client identity: {e}"))?,
            );
        }
        let http = builder
            .build()
            .map_err(|e| sluice_runtime::error_chain(&e))?;
        Ok(Self { http, options })
    }

    /// The base URL.
    pub fn url(&self) -> &Url {
        &self.options.url
    }

    /// An instant query, at Prometheus's current time.
    ///
    /// # Errors
    /// See [`QueryError`].
    pub async fn query(&self, promql: &str) -> Result<QueryData, QueryError> {
        self.get("api/v1/query", &[("query", promql)]).await
    }

    /// A range query from `start` to `end` (unix seconds) every `step`.
    ///
    /// # Errors
    /// See [`QueryError`].
    pub async fn query_range(
        &self,
        promql: &str,
        start: f64,
        end: f64,
        step: Duration,
    ) -> Result<QueryData, QueryError> {
        let (start, end, step) = (
            start.to_string(),
            end.to_string(),
            step.as_secs_f64().to_string(),
        );
        self.get(
            "api/v1/query_range",
            &[
                ("query", promql),
                ("start", &start),
                ("end", &end),
                ("step", &step),
            ],
        )
        .await
    }

    async fn get(&self, path: &str, params: &[(&str, &str)]) -> Result<QueryData, QueryError> {
        let mut url = self
            .options
            .url
            .join(path)
            .map_err(|e| QueryError::Unreachable(e.to_string()))?;
        url.query_pairs_mut().extend_pairs(params);
        let mut attempt = 0;
        loop {
            let result = self.attempt(url.clone()).await;
            match result {
                Err(error) if error.retriable() && attempt < self.options.retries => {
                    let backoff =
                        Duration::from_millis(100 << attempt.min(4)).min(Duration::from_secs(2));
                    tracing::debug!(%error, attempt, ?backoff, "retrying Prometheus query");
                    tokio::time::sleep(backoff).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn attempt(&self, url: Url) -> Result<QueryData, QueryError> {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(&e))?;
        match parse_response(&body) {
            // Prometheus's own error JSON comes with 400, 422 or 503.
            Err(QueryError::Decode(_)) if !status.is_success() => Err(QueryError::Http {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
            }),
            other => other,
        }
    }

    fn transport_error(&self, error: &reqwest::Error) -> QueryError {
        if error.is_timeout() {
            QueryError::Timeout(self.options.timeout)
        } else {
            QueryError::Unreachable(sluice_runtime::error_chain(error))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_and_infinities_are_kept() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"pod":"a"},"value":[1700000000.5,"NaN"]},
            {"metric":{"pod":"b"},"value":[1700000000.5,"+Inf"]},
            {"metric":{"pod":"c"},"value":[1700000000.5,"-Inf"]},
            {"metric":{},"value":[1700000000.5,"0.25"]}]}}"#;
        let QueryData::Vector(samples) = parse_response(body).unwrap() else {
            panic!("vector")
        };
        assert!(samples[0].value.is_nan());
        assert_eq!(samples[1].value, f64::INFINITY);
        assert_eq!(samples[2].value, f64::NEG_INFINITY);
        assert_eq!(samples[3].value, 0.25);
        assert_eq!(samples[0].labels["pod"], "a");
    }

    #[test]
    fn empty_scalar_and_matrix_results_are_read() {
        let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(parse_response(empty).unwrap(), QueryData::Vector(vec![]));
        let scalar = br#"{"status":"success","data":{"resultType":"scalar","result":[12,"3"]}}"#;
        assert!(matches!(
            parse_response(scalar).unwrap(),
            QueryData::Scalar(Sample { value: 3.0, .. })
        ));
        let matrix = br#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"1"],[2,"2"]]}]}}"#;
        let QueryData::Matrix(series) = parse_response(matrix).unwrap() else {
            panic!("matrix")
        };
        assert_eq!(series[0].points, [(1.0, 1.0), (2.0, 2.0)]);
    }

    #[test]
    fn api_errors_and_garbage_are_told_apart() {
        let refused =
            br#"{"status":"error","errorType":"bad_data","error":"parse error at char 4"}"#;
        assert_eq!(
            parse_response(refused).unwrap_err(),
            QueryError::Refused {
                error_type: "bad_data".into(),
                error: "parse error at char 4".into()
            }
        );
        assert!(matches!(
            parse_response(b"<html>oops</html>").unwrap_err(),
            QueryError::Decode(_)
        ));
        let bad_value = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"many"]}]}}"#;
        assert!(matches!(
            parse_response(bad_value).unwrap_err(),
            QueryError::Decode(_)
        ));
    }

    #[test]
    fn basic_auth_is_base64_encoded() {
        let options = ClientOptions::new("http://p".parse().unwrap())
            .basic("Aladdin", "open sesame")
            .unwrap();
        assert_eq!(
            options.headers["authorization"],
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }
}
