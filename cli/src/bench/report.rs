//! The harness's output: every figure as JSON, a Markdown table, and a chart
//! of latency and memory against the number of rollouts.

use std::{fmt::Write as _, path::Path};

use anyhow::Context as _;
use plotters::prelude::*;
use serde::Serialize;

use super::overhead::Overheads;

/// The figures of one size.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SizeFigures {
    /// Concurrent rollouts.
    pub rollouts: usize,
    /// Two-replica Deployments in the cluster that no Rollout names.
    pub unrelated: usize,
    /// Most rollouts started and not yet ended at one time.
    pub peak_in_flight: usize,
    /// When some did not end within the harness's limit: how many, and in
    /// which states.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unfinished: Option<String>,
    /// Of which release a failing version.
    pub failing: usize,
    /// Ended Succeeded.
    pub succeeded: usize,
    /// Ended RolledBack.
    pub rolled_back: usize,
    /// From the first Rollout created to the last finished.
    pub wall_seconds: f64,
    /// Last pod of a batch ready until the next batch's patch (ms).
    pub advance_p50_ms: Option<f64>,
    /// Same, 99th percentile.
    pub advance_p99_ms: Option<f64>,
    /// How many step advances were timed.
    pub advance_samples: usize,
    /// From the first Rollout created to each release's end (ms), median.
    pub release_p50_ms: Option<f64>,
    /// Same, 99th percentile.
    pub release_p99_ms: Option<f64>,
    /// A breaching measurement until the new pods are drained (ms).
    pub decision_p50_ms: Option<f64>,
    /// Same, 99th percentile.
    pub decision_p99_ms: Option<f64>,
    /// The gate's share: measurement taken until the verdict is recorded.
    pub decision_gate_p99_ms: Option<f64>,
    /// The executor's share: verdict recorded until the new pods drain.
    pub decision_executor_p50_ms: Option<f64>,
    /// Same, 99th percentile.
    pub decision_executor_p99_ms: Option<f64>,
    /// CPU seconds of the executor process while the rollouts ran.
    pub executor_cpu_seconds: f64,
    /// CPU seconds of the harness process (simulator, planner, gate).
    pub other_cpu_seconds: f64,
    /// Executor replicas that shared the rollouts (CPU figures are summed
    /// over them, memory figures are the largest replica's).
    pub executors: usize,
    /// Shards they split the rollouts into.
    pub shards: u32,
    /// Peak resident memory of the executor process (MiB).
    pub executor_peak_rss_mib: f64,
    /// The executor's resident memory growth from its idle baseline (its
    /// watches listed, no Rollout yet) to its highest while the rollouts
    /// ran (sampled every 50 ms), per rollout (KiB).
    pub executor_kib_per_rollout: f64,
    /// The executor's highest resident memory while the rollouts ran
    /// (MiB), sampled every 50 ms.
    pub executor_high_mib: f64,
    /// Resident memory of an idle executor on an empty cluster, measured
    /// in the same run (MiB; with unrelated workloads only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executor_idle_mib: Option<f64>,
    /// `executor_high_mib` over `executor_idle_mib`: what the cluster and
    /// the rollouts cost the executor (MiB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executor_above_idle_mib: Option<f64>,
    /// Peak resident memory of the harness process (MiB).
    pub peak_rss_mib: f64,
    /// Requests from the executor to the API server per batch.
    pub api_calls_per_step: f64,
    /// Planner and gate calls per batch.
    pub grpc_calls_per_step: f64,
    /// Requests from the executor to the API server per rollout, by verb
    /// and resource (`PATCH replicasets`, `WATCH pods`, ...).
    pub api_calls_per_rollout: std::collections::BTreeMap<String, f64>,
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.1}"))
}

impl SizeFigures {
    /// One line for the terminal.
    pub(crate) fn line(&self) -> String {
        format!(
            "{} rollouts ({} in flight at most): {} succeeded, {} rolled back in {:.1} s; advance p50 {} ms p99 {} ms; decision p99 {} ms (executor {} ms); executor CPU {:.2} s, peak {:.0} MiB, {:.1} KiB per rollout",
            self.rollouts,
            self.peak_in_flight,
            self.succeeded,
            self.rolled_back,
            self.wall_seconds,
            ms(self.advance_p50_ms),
            ms(self.advance_p99_ms),
            ms(self.decision_p99_ms),
            ms(self.decision_executor_p99_ms),
            self.executor_cpu_seconds,
            self.executor_peak_rss_mib,
            self.executor_kib_per_rollout
        ) + &if self.executors > 1 {
            format!(" (on {} executors, {} shards)", self.executors, self.shards)
        } else {
            String::new()
        } + &self
            .unfinished
            .as_ref()
            .map_or_else(String::new, |u| format!("; UNFINISHED: {u}"))
    }
}

/// A whole run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Report {
    /// The machine: cores and memory.
    pub machine: String,
    /// Per-call overheads against their baselines.
    pub overheads: Overheads,
    /// Plan RPC / bare tonic.
    pub plan_ratio: f64,
    /// Gate measurement / (bare tonic call + raw query): what the gate adds
    /// to the least a remote measurement costs.
    pub gate_ratio: f64,
    /// Rollouts started per second (0: all at once).
    pub pace: f64,
    /// One entry per size.
    pub sizes: Vec<SizeFigures>,
    /// Peer controllers on the same workload, per size (`--argo-rollouts`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<super::peer::PeerFigures>,
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or_else(|| "?".into(), |kb| format!("{:.0} GiB", kb / 1_048_576.0));
    format!("{cores} cores, {memory}")
}

impl Report {
    pub(crate) fn new(overheads: Overheads, sizes: Vec<SizeFigures>) -> Self {
        Self {
            machine: machine(),
            plan_ratio: overheads.plan_ratio(),
            gate_ratio: overheads.gate_ratio(),
            overheads,
            pace: 0.0,
            sizes,
            peers: Vec::new(),
        }
    }

    /// The same, with the peers' figures.
    pub(crate) fn with_peers(self, peers: Vec<super::peer::PeerFigures>) -> Self {
        Self { peers, ..self }
    }

    /// Sluice and its peers side by side, per size: the same figures for
    /// each, all measured in this run.
    pub(crate) fn side_by_side(&self) -> String {
        if self.peers.is_empty() {
            return String::new();
        }
        let mut out = String::from(
            "\n| rollouts | controller | step advance p50 / p99 ms | release p50 / p99 ms | all released s | controller CPU s | controller peak MiB | API requests / release |\n|---:|---|---:|---:|---:|---:|---:|---:|\n",
        );
        for s in &self.sizes {
            let requests: f64 = s.api_calls_per_rollout.values().sum();
            let _ = writeln!(
                out,
                "| {} | Sluice | {} / {} | {} / {} | {:.1} | {:.2} | {:.0} | {:.1} |",
                s.rollouts,
                ms(s.advance_p50_ms),
                ms(s.advance_p99_ms),
                ms(s.release_p50_ms),
                ms(s.release_p99_ms),
                s.wall_seconds,
                s.executor_cpu_seconds,
                s.executor_peak_rss_mib,
                requests
            );
            for p in self.peers.iter().filter(|p| p.rollouts == s.rollouts) {
                if let Some(u) = &p.unfinished {
                    let _ = writeln!(
                        out,
                        "| {} | {} | unfinished: {u} ||||||",
                        p.rollouts, p.controller
                    );
                    continue;
                }
                let _ = writeln!(
                    out,
                    "| {} | {} | {} / {} | {} / {} | {:.1} | {:.2} | {:.0} | {:.1} |",
                    p.rollouts,
                    p.controller,
                    ms(p.advance_p50_ms),
                    ms(p.advance_p99_ms),
                    ms(p.release_p50_ms),
                    ms(p.release_p99_ms),
                    p.wall_seconds,
                    p.cpu_seconds,
                    p.peak_rss_mib,
                    p.api_calls_per_release
                );
            }
        }
        out
    }

    /// The same, for rollouts started at `pace` per second.
    pub(crate) fn paced(self, pace: f64) -> Self {
        Self { pace, ..self }
    }

    /// The Markdown table.
    pub(crate) fn markdown(&self) -> String {
        let mut out = String::new();
        let o = &self.overheads;
        let _ = writeln!(
            out,
            "Machine: {}. Per call, same run: Plan RPC {:.0} µs vs bare tonic {:.0} µs (**{:.2}x**); gate measurement (Evaluate RPC) {:.0} µs vs a bare tonic call plus the raw query, {:.0} + {:.0} µs (**{:.2}x**).\n",
            self.machine,
            o.plan_us,
            o.tonic_us,
            self.plan_ratio,
            o.evaluate_us,
            o.tonic_us,
            o.query_us,
            self.gate_ratio
        );
        if self.pace > 0.0 {
            let _ = writeln!(
                out,
                "Rollouts started at {} per second, each holding its last batch until the last had started.\n",
                self.pace
            );
        } else {
            out.push_str("Rollouts started all at once.\n\n");
        }
        if let Some(s) = self.sizes.iter().find(|s| s.executors > 1) {
            let _ = writeln!(
                out,
                "{} executor replicas sharing {} shards: executor CPU summed over them, executor memory the largest replica's.\n",
                s.executors, s.shards
            );
        }
        out.push_str("| rollouts | in flight at most | failing | wall s | advance p50 / p99 ms | decision p50 / p99 ms | executor share p50 / p99 ms | executor CPU s | executor peak MiB | executor KiB / rollout | harness CPU s | harness peak MiB | API calls / step | gRPC calls / step |\n");
        out.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for s in &self.sizes {
            if let Some(u) = &s.unfinished {
                let _ = writeln!(out, "| {} | unfinished: {u} |||||||||||||", s.rollouts);
                continue;
            }
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.1} | {} / {} | {} / {} | {} / {} | {:.2} | {:.0} | {:.1} | {:.2} | {:.0} | {:.1} | {:.1} |",
                s.rollouts,
                s.peak_in_flight,
                s.failing,
                s.wall_seconds,
                ms(s.advance_p50_ms),
                ms(s.advance_p99_ms),
                ms(s.decision_p50_ms),
                ms(s.decision_p99_ms),
                ms(s.decision_executor_p50_ms),
                ms(s.decision_executor_p99_ms),
                s.executor_cpu_seconds,
                s.executor_peak_rss_mib,
                s.executor_kib_per_rollout,
                s.other_cpu_seconds,
                s.peak_rss_mib,
                s.api_calls_per_step,
                s.grpc_calls_per_step
            );
        }
        if let Some(s) = self.sizes.iter().find(|s| s.executor_idle_mib.is_some()) {
            let _ = writeln!(
                out,
                "\nWith {} two-replica Deployments no Rollout names in the cluster; an idle executor on an empty cluster, same run: {:.1} MiB.\n",
                s.unrelated,
                s.executor_idle_mib.unwrap_or_default()
            );
            out.push_str("| rollouts | unrelated Deployments | executor highest MiB | above idle MiB |\n|---:|---:|---:|---:|\n");
            for s in &self.sizes {
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.1} | {} |",
                    s.rollouts,
                    s.unrelated,
                    s.executor_high_mib,
                    s.executor_above_idle_mib
                        .map_or_else(|| "-".into(), |m| format!("{m:.1}"))
                );
            }
        }
        out
    }

    /// Writes bench.json, bench.md and bench.svg into `dir`.
    pub(crate) fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::write(dir.join("bench.json"), serde_json::to_string_pretty(self)?)
            .context("writing bench.json")?;
        std::fs::write(
            dir.join("bench.md"),
            format!("{}{}", self.markdown(), self.side_by_side()),
        )
        .context("writing bench.md")?;
        self.chart(&dir.join("bench.svg"))
            .map_err(|e| anyhow::anyhow!("drawing bench.svg: {e}"))
    }

    fn chart(&self, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (960, 420)).into_drawing_area();
        root.fill(&WHITE)?;
        let (left, right) = root.split_horizontally(480);
        let xs: Vec<f64> = self
            .sizes
            .iter()
            .map(|s| (s.rollouts as f64).log10())
            .collect();
        let x_max = xs.iter().copied().fold(1.0, f64::max) + 0.2;
        let series = |f: &dyn Fn(&SizeFigures) -> Option<f64>| -> Vec<(f64, f64)> {
            self.sizes
                .iter()
                .zip(&xs)
                .filter_map(|(s, x)| f(s).map(|y| (*x, y)))
                .collect()
        };
        let latency = [
            ("step advance p99", series(&|s| s.advance_p99_ms), BLUE),
            (
                "decision, executor share p99",
                series(&|s| s.decision_executor_p99_ms),
                RED,
            ),
        ];
        let y_max = latency
            .iter()
            .flat_map(|(_, v, _)| v.iter().map(|p| p.1))
            .fold(1.0, f64::max)
            * 1.2;
        let mut chart = ChartBuilder::on(&left)
            .caption("latency (ms) vs rollouts", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(48)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
        chart
            .configure_mesh()
            .x_desc("concurrent rollouts (log10)")
            .x_label_formatter(&|x| format!("{:.0}", 10f64.powf(*x)))
            .draw()?;
        for (name, points, color) in latency {
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
            chart.draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))?;
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE)
            .draw()?;

        let memory = series(&|s| Some(s.executor_peak_rss_mib));
        let m_max = memory.iter().map(|p| p.1).fold(1.0, f64::max) * 1.2;
        let mut chart = ChartBuilder::on(&right)
            .caption("executor peak memory (MiB) vs rollouts", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(48)
            .build_cartesian_2d(0.0..x_max, 0.0..m_max)?;
        chart
            .configure_mesh()
            .x_desc("concurrent rollouts (log10)")
            .x_label_formatter(&|x| format!("{:.0}", 10f64.powf(*x)))
            .draw()?;
        chart.draw_series(LineSeries::new(memory.clone(), GREEN.stroke_width(2)))?;
        chart.draw_series(memory.iter().map(|p| Circle::new(*p, 3, GREEN.filled())))?;
        root.present()?;
        Ok(())
    }
}
