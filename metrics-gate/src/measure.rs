//! One measurement of one metric: query, baseline, judgement, evidence.

use std::time::SystemTime;

use crate::{
    judge::{self, Outcome},
    prometheus::{Prometheus, QueryData, Sample},
    spec::{Condition, Context, MetricSpec},
};

/// A measurement and its evidence.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// The metric's name.
    pub metric: String,
    /// The outcome.
    pub outcome: Outcome,
    /// When it was taken.
    pub time: SystemTime,
    /// The query sent.
    pub query: String,
    /// What it returned.
    pub values: Vec<Sample>,
    /// The baseline query, for comparisons.
    pub baseline_query: String,
    /// What the baseline returned.
    pub baseline_values: Vec<Sample>,
    /// Which condition decided.
    pub decided_by: String,
    /// For humans.
    pub message: String,
    /// Recorded, never decides.
    pub dry_run: bool,
}

fn samples(data: QueryData) -> Result<Vec<Sample>, String> {
    match data {
        QueryData::Scalar(sample) => Ok(vec![sample]),
        QueryData::Vector(samples) => Ok(samples),
        QueryData::Matrix(_) => {
            Err("the query returned a range vector; use an instant query".into())
        }
        QueryData::Text(_) => Err("the query returned a string, not a number".into()),
    }
}

fn uses_comparison(spec: &MetricSpec) -> Option<&crate::template::Template> {
    [&spec.success, &spec.failure]
        .into_iter()
        .flatten()
        .find_map(|c| match c {
            Condition::Comparison { baseline, .. } => Some(baseline),
            Condition::Threshold { .. } => None,
        })
}

/// Takes one measurement of `spec` in `context`.
#[tracing::instrument(skip_all, fields(metric = %spec.name))]
pub async fn measure(prometheus: &Prometheus, spec: &MetricSpec, context: &Context) -> Measurement {
    let mut m = Measurement {
        metric: spec.name.clone(),
        outcome: Outcome::Error,
        time: SystemTime::now(),
        query: String::new(),
        values: Vec::new(),
        baseline_query: String::new(),
        baseline_values: Vec::new(),
        decided_by: "error".into(),
        message: String::new(),
        dry_run: spec.dry_run,
    };
    m.query = match spec.query.render(context) {
        Ok(q) => q,
        Err(e) => {
            m.message = e;
            return m;
        }
    };
    let baseline = match uses_comparison(spec) {
        None => None,
        Some(template) => match template.render(&context.baseline()) {
            Ok(q) => Some(q),
            Err(e) => {
                m.message = e;
                return m;
            }
        },
    };
    let (current, base) = match &baseline {
        Some(bq) => {
            let (a, b) = tokio::join!(prometheus.query(&m.query), prometheus.query(bq));
            (a, Some(b))
        }
        None => (prometheus.query(&m.query).await, None),
    };
    m.values = match current.map_err(|e| e.to_string()).and_then(samples) {
        Ok(values) => values,
        Err(e) => {
            m.message = e;
            return m;
        }
    };
    if let (Some(bq), Some(result)) = (baseline, base) {
        m.baseline_query = bq;
        m.baseline_values = match result.map_err(|e| e.to_string()).and_then(samples) {
            Ok(values) => values,
            Err(e) => {
                m.message = format!("baseline: {e}");
                return m;
            }
        };
    }
    let values: Vec<f64> = m.values.iter().map(|s| s.value).collect();
    let baseline: Vec<f64> = m.baseline_values.iter().map(|s| s.value).collect();
    let judgement = judge::judge(spec, &values, &baseline);
    m.outcome = judgement.outcome;
    m.decided_by = judgement.decided_by;
    m.message = judgement.message;
    m
}
