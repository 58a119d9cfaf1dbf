//! Runs an analysis over time: each metric at its interval, until a verdict,
//! the client leaves or the server stops.
//!
//! Timers are set to each metric's next due time on tokio's clock, so tests
//! run hours of analysis in paused time. A late measurement does not shift
//! the schedule: the next one stays due one interval after the previous due
//! time (or now, if that has passed too).

use std::{sync::Arc, time::Duration};

use tokio::{sync::mpsc, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::{
    judge::{self, Tally, Verdict},
    measure::{Measurement, measure},
    prometheus::Prometheus,
    spec::{AnalysisSpec, Context},
};

/// What an analysis run reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A measurement was taken.
    Measurement(Measurement),
    /// A metric reached its verdict.
    MetricVerdict {
        /// The metric.
        metric: String,
        /// Its verdict.
        verdict: Verdict,
        /// Why.
        message: String,
    },
    /// The analysis reached its verdict; nothing follows.
    Verdict {
        /// The verdict.
        verdict: Verdict,
        /// The metric that decided, if any.
        decided_by: Option<String>,
        /// Why.
        message: String,
    },
}

/// Runs `spec` and sends its events to `events` until a verdict, until
/// `events` is closed (the client left), or until `stop` is cancelled.
/// Returns how late each measurement started against its due time.
pub async fn run(
    prometheus: Prometheus,
    spec: Arc<AnalysisSpec>,
    context: Arc<Context>,
    events: mpsc::Sender<Event>,
    stop: CancellationToken,
) -> Vec<Duration> {
    let start = Instant::now();
    let mut due: Vec<Option<Instant>> = spec
        .metrics
        .iter()
        .map(|m| Some(start + m.initial_delay))
        .collect();
    let mut tallies = vec![Tally::default(); spec.metrics.len()];
    let mut verdicts = vec![Verdict::Running; spec.metrics.len()];
    // Each metric's last failed measurement, as its message says it
    // (value against threshold), for the verdict's message.
    let mut last_failed: Vec<Option<String>> = vec![None; spec.metrics.len()];
    let said = |verdict: Verdict, message: String, failed: &Option<String>| match failed {
        Some(last) if verdict == Verdict::Fail => format!("{message}; last: {last}"),
        _ => message,
    };
    let mut lags = Vec::new();
    while let Some(next) = due.iter().flatten().min().copied() {
        tokio::select! {
            () = stop.cancelled() => return lags,
            () = events.closed() => return lags,
            () = tokio::time::sleep_until(next) => {}
        }
        let now = Instant::now();
        let ready: Vec<usize> = (0..due.len())
            .filter(|&i| due[i].is_some_and(|d| d <= now))
            .collect();
        for &i in &ready {
            if let Some(d) = due[i] {
                lags.push(now.saturating_duration_since(d));
            }
        }
        let measurements = futures::future::join_all(
            ready
                .iter()
                .map(|&i| measure(&prometheus, &spec.metrics[i], &context)),
        )
        .await;
        for (&i, measurement) in ready.iter().zip(measurements) {
            let metric = &spec.metrics[i];
            tallies[i].record(measurement.outcome);
            if measurement.outcome == judge::Outcome::Failed {
                last_failed[i] = Some(measurement.message.clone());
            }
            if events.send(Event::Measurement(measurement)).await.is_err() {
                return lags;
            }
            let (verdict, message) = tallies[i].verdict(metric);
            let message = said(verdict, message, &last_failed[i]);
            if verdict == Verdict::Running {
                let after = due[i].map_or(now, |d| d + metric.interval);
                due[i] = Some(after.max(now));
            } else {
                due[i] = None;
                verdicts[i] = verdict;
                let event = Event::MetricVerdict {
                    metric: metric.name.clone(),
                    verdict,
                    message,
                };
                if events.send(event).await.is_err() {
                    return lags;
                }
            }
        }
        let (verdict, decided_by) = judge::combine(
            spec.metrics
                .iter()
                .zip(&verdicts)
                .map(|(m, v)| (m.name.as_str(), *v, m.dry_run)),
        );
        if verdict != Verdict::Running {
            let message = match decided_by {
                Some(name) => {
                    let i = spec
                        .metrics
                        .iter()
                        .position(|m| m.name == name)
                        .unwrap_or(0);
                    let (verdict, message) = tallies[i].verdict(&spec.metrics[i]);
                    format!("metric {name}: {}", said(verdict, message, &last_failed[i]))
                }
                None => "every metric passed".to_owned(),
            };
            let _ = events
                .send(Event::Verdict {
                    verdict,
                    decided_by: decided_by.map(str::to_owned),
                    message,
                })
                .await;
            return lags;
        }
    }
    lags
}
