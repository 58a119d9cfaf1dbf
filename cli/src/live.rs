//! How a running rollout is shown, by `sluice demo` and `sluice rollout
//! watch`.
//!
//! On a terminal, a block redrawn in place: the current batch's new pods
//! and traffic as bars, each metric's latest value against the condition
//! that judged it, and the message; every finished step stays above it as
//! a line. In a pipe, one plain line whenever something changes, so logs
//! stay readable.

use std::{fmt::Write as _, io::Write as _, time::Instant};

use sluice_proto::v1 as pb;

/// Shows a rollout's progress.
pub(crate) struct Live {
    /// Redraw in place (a terminal) or print lines (a pipe).
    terminal: bool,
    /// Lines of the block drawn last, to move back over.
    drawn: usize,
    /// Steps already printed as finished.
    finished: usize,
    /// The last plain line, so a pipe gets only changes.
    last_line: String,
    started: Instant,
}

fn bar(part: u32, whole: u32) -> String {
    const WIDTH: u32 = 20;
    let filled = (part.min(whole) * WIDTH).checked_div(whole).unwrap_or(0);
    format!(
        "[{}{}]",
        "#".repeat(filled as usize),
        ".".repeat((WIDTH - filled) as usize)
    )
}

/// A phase's display name, e.g. `RolledBack`.
pub(crate) fn phase_name(p: i32) -> String {
    pb::RolloutPhase::try_from(p).map_or("Unknown".into(), |p| {
        camel(p.as_str_name(), "ROLLOUT_PHASE_")
    })
}

fn camel(name: &str, prefix: &str) -> String {
    name.trim_start_matches(prefix)
        .to_lowercase()
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect::<String>())
                .unwrap_or_default()
        })
        .collect()
}

fn outcome_mark(o: i32) -> &'static str {
    match pb::Outcome::try_from(o).unwrap_or_default() {
        pb::Outcome::Successful => "ok",
        pb::Outcome::Failed => "FAILED",
        pb::Outcome::Inconclusive => "inconclusive",
        pb::Outcome::Error => "error",
        pb::Outcome::Unspecified => "-",
    }
}

/// One line per measurement: metric, value, what judged it.
fn measurement_lines(measurements: &[pb::Measurement]) -> Vec<String> {
    measurements
        .iter()
        .map(|m| {
            let e = m.evidence.clone().unwrap_or_default();
            let value = e
                .values
                .first()
                .map_or_else(|| "no data".into(), |v| format!("{:.4}", v.value));
            format!(
                "  {:<24} {:>10}  {:<12} {}",
                m.metric,
                value,
                outcome_mark(m.outcome),
                e.message
            )
        })
        .collect()
}

/// The step a status is at, counted from one; a release with no batches
/// (nothing to release yet, or nothing at all) is at step 0 of 0.
pub(crate) fn step_number(status: &pb::RolloutStatus) -> u32 {
    if status.total_steps == 0 {
        0
    } else {
        (status.current_step + 1).min(status.total_steps)
    }
}

impl Live {
    /// A view writing to stdout.
    pub(crate) fn new(terminal: bool) -> Self {
        Self {
            terminal,
            drawn: 0,
            finished: 0,
            last_line: String::new(),
            started: Instant::now(),
        }
    }

    /// Shows the rollout as it is now.
    pub(crate) fn show(&mut self, rollout: &pb::Rollout) {
        let status = rollout.status.clone().unwrap_or_default();
        if !self.terminal {
            let line = format!(
                "step {}/{}  {:<11}  new pods {}  traffic {:>3}%  {}",
                step_number(&status),
                status.total_steps,
                phase_name(status.phase),
                new_pods(&status),
                status.traffic,
                status.message
            );
            if line != self.last_line {
                println!("{:>6.1}s  {line}", self.started.elapsed().as_secs_f64());
                self.last_line = line;
            }
            return;
        }
        let mut out = String::new();
        if self.drawn > 0 {
            // Back to the top of the block, and clear it.
            let _ = write!(out, "\x1b[{}A\x1b[J", self.drawn);
        }
        let done: Vec<&pb::StepRecord> = status
            .steps
            .iter()
            .filter(|s| s.finished.is_some())
            .collect();
        for s in done.iter().skip(self.finished) {
            let seconds = match (s.started, s.finished) {
                (Some(a), Some(b)) => b.seconds - a.seconds,
                _ => 0,
            };
            let verdict = pb::Verdict::try_from(s.verdict)
                .map_or("-".into(), |v| camel(v.as_str_name(), "VERDICT_"));
            let _ = writeln!(
                out,
                "step {} done  {:>3} new pods  traffic {:>3}%  verdict {:<12} {seconds}s",
                s.index + 1,
                s.canary_replicas,
                s.traffic,
                if verdict == "Unspecified" {
                    "-"
                } else {
                    &verdict
                }
            );
        }
        self.finished = done.len();
        let state = pb::StepState::try_from(status.step_state)
            .map_or("-".into(), |s| camel(s.as_str_name(), "STEP_STATE_"));
        let mut block = vec![
            format!(
                "{}/{}  {}  step {}/{}  {}  ({:.0}s)",
                rollout.namespace,
                rollout.name,
                phase_name(status.phase),
                step_number(&status),
                status.total_steps,
                state,
                self.started.elapsed().as_secs_f64()
            ),
            format!(
                "  new pods {} {} ready",
                bar(status.ready_canary_replicas, status.canary_replicas.max(1)),
                new_pods(&status)
            ),
            format!(
                "  traffic  {} {}%",
                bar(status.traffic, 100),
                status.traffic
            ),
        ];
        block.extend(measurement_lines(&status.analysis));
        block.push(format!("  {}", status.message));
        // Lines longer than the terminal would wrap and throw the redraw
        // off; 79 columns fit any terminal.
        for line in &block {
            let _ = writeln!(out, "{}", line.chars().take(79).collect::<String>());
        }
        self.drawn = block.len();
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(out.as_bytes());
        let _ = stdout.flush();
    }
}

/// Ready new pods of those wanted (`2/4`); while more are ready than
/// wanted (a rollback or a smaller batch draining them), how many are
/// left and what they go down to.
fn new_pods(status: &pb::RolloutStatus) -> String {
    let (ready, wanted) = (status.ready_canary_replicas, status.canary_replicas);
    if ready > wanted {
        format!("{ready}, going down to {wanted}")
    } else {
        format!("{ready}/{wanted}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_fill_by_share_and_survive_an_empty_whole() {
        assert_eq!(
            bar(5, 10),
            format!("[{}{}]", "#".repeat(10), ".".repeat(10))
        );
        assert_eq!(bar(3, 0), format!("[{}]", ".".repeat(20)));
        assert_eq!(bar(20, 10), format!("[{}]", "#".repeat(20)));
    }

    #[test]
    fn a_release_not_planned_yet_is_at_step_zero_of_zero() {
        let at = |current_step, total_steps| {
            step_number(&pb::RolloutStatus {
                current_step,
                total_steps,
                ..pb::RolloutStatus::default()
            })
        };
        assert_eq!(at(0, 0), 0, "pending, no plan yet");
        assert_eq!(at(0, 3), 1);
        assert_eq!(at(2, 3), 3);
        assert_eq!(at(5, 3), 3, "never past the last");
    }

    #[test]
    fn new_pods_read_as_ready_of_wanted_or_as_draining() {
        let pods = |ready_canary_replicas, canary_replicas| {
            new_pods(&pb::RolloutStatus {
                ready_canary_replicas,
                canary_replicas,
                ..pb::RolloutStatus::default()
            })
        };
        assert_eq!(pods(2, 4), "2/4");
        assert_eq!(pods(4, 4), "4/4");
        assert_eq!(pods(3, 0), "3, going down to 0", "a rollback draining them");
    }

    #[test]
    fn names_read_as_words() {
        assert_eq!(
            phase_name(pb::RolloutPhase::RolledBack as i32),
            "RolledBack"
        );
        assert_eq!(camel("STEP_STATE_ANALYZING", "STEP_STATE_"), "Analyzing");
    }

    #[test]
    fn a_measurement_shows_its_value_and_what_judged_it() {
        let m = pb::Measurement {
            metric: "health/success-rate".into(),
            outcome: pb::Outcome::Failed as i32,
            evidence: Some(pb::Evidence {
                values: vec![pb::Sample {
                    value: 0.91,
                    ..Default::default()
                }],
                message: "0.91 <= max 0.95".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let line = &measurement_lines(&[m])[0];
        assert!(
            line.contains("0.9100") && line.contains("FAILED") && line.contains("max 0.95"),
            "{line}"
        );
    }
}
