//! `sluice plan`: the plan of a strategy file, from the planner library.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use sluice_model::{load, plan::Plan, spec::Strategy, validate::PauseKind};
use sluice_planner::{PlanOptions, make_plan};
use sluice_runtime::config::format_duration;

/// Arguments of `sluice plan`.
#[derive(Debug, Args)]
pub(crate) struct PlanArgs {
    /// The strategy: a YAML file holding a strategy, or anything with a
    /// `strategy:` key (such as a Rollout's spec). `-` reads standard input.
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// Replicas of the workload.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    replicas: u32,
    /// The workload's maxSurge ("25%" by default, "0" for a StatefulSet).
    #[arg(long)]
    max_surge: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    output: Output,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
}

/// The strategy in `file` (`-` for standard input): the whole YAML or JSON
/// document, or its `strategy` key. A value of the wrong kind is named by
/// its field path, line and column.
pub(crate) fn read_strategy(file: &Path) -> anyhow::Result<Strategy> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading standard input")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    load::strategy_from_yaml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))
}

pub(crate) fn run(args: &PlanArgs) -> anyhow::Result<ExitCode> {
    let strategy = read_strategy(&args.file)?;
    let options = PlanOptions {
        replicas: args.replicas,
        max_surge: args.max_surge.as_deref().map(Into::into),
        ..Default::default()
    };
    let plan = match make_plan(&strategy, &options) {
        Ok(plan) => plan,
        Err(problems) => {
            for problem in &problems {
                eprintln!("error: {problem}");
            }
            eprintln!(
                "{}: {} problem(s); no plan made",
                args.file.display(),
                problems.len()
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&plan)?),
        Output::Table => print!("{}", table(&plan)),
    }
    Ok(ExitCode::SUCCESS)
}

fn gate_text(plan: &Plan, index: usize) -> String {
    let gate = &plan.batches[index].gate;
    let mut parts = Vec::new();
    if !gate.analyses.is_empty() {
        parts.push(format!("analyses {}", gate.analyses.join(",")));
    }
    if !gate.background_analyses.is_empty() {
        parts.push(format!("background {}", gate.background_analyses.join(",")));
    }
    match gate.pause {
        Some(PauseKind::UntilPromoted) => parts.push("pause until promoted".into()),
        Some(PauseKind::For(d)) => parts.push(format!("pause {}", format_duration(d))),
        None => {}
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join("; ")
    }
}

fn table(plan: &Plan) -> String {
    let mut rows = vec![[
        "BATCH".to_owned(),
        "STEP".into(),
        "NEW".into(),
        "OLD".into(),
        "TRAFFIC".into(),
        "MATCHES".into(),
        "MAX-UNREADY".into(),
        "PODS".into(),
        "GATE".into(),
    ]];
    for (i, b) in plan.batches.iter().enumerate() {
        rows.push([
            b.index.to_string(),
            b.step.map_or("final".into(), |s| (s + 1).to_string()),
            b.canary_replicas.to_string(),
            b.stable_replicas.to_string(),
            format!("{}%", b.traffic),
            if b.matches.is_empty() {
                "-".into()
            } else {
                b.matches.len().to_string()
            },
            b.max_unready.to_string(),
            b.expected_total_pods.to_string(),
            gate_text(plan, i),
        ]);
    }
    let widths: Vec<usize> = (0..9)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = format!("{:?} release of {} replicas\n", plan.style, plan.replicas);
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    if let Some(window) = plan.rollback_window {
        let _ = writeln!(
            out,
            "old version kept for {} after the last batch",
            format_duration(window)
        );
    }
    for w in &plan.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    out
}
