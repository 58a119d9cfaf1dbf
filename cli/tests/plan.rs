//! `sluice plan -f` as a user runs it: a spawned process, its exit code and
//! what it prints.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests stop at the first failed step

use std::{path::Path, process::Command};

/// Runs `sluice plan -f <file> --replicas 10` on `yaml`: (exit code,
/// stdout, stderr).
fn plan(yaml: &str) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("strategy.yaml");
    std::fs::write(&file, yaml).unwrap();
    run(&file)
}

fn run(file: &Path) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["plan", "--replicas", "10", "-f"])
        .arg(file)
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_value_of_the_wrong_kind_is_named_by_its_path_and_line() {
    let yaml = "\
# A strategy with a typo in its second step.
style: Partition
canary:
  steps:
    - replicas: 1
    - replicas: 20%
      traffic: \"abc\"
";
    let (code, stdout, stderr) = plan(yaml);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stdout, "");
    assert!(
        stderr.contains(
            r#"strategy.yaml: canary.steps[1].traffic (line 7, column 16): expected a percentage 0-100 such as 20 or "20%", got "abc""#
        ),
        "{stderr}"
    );
}

#[test]
fn a_strategy_under_a_strategy_key_is_named_from_the_files_root() {
    let yaml = "strategy:\n  canary:\n    progressDeadline: [5m]\n";
    let (code, _, stderr) = plan(yaml);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "strategy.canary.progressDeadline (line 3, column 23): expected a string, got sequence"
        ),
        "{stderr}"
    );
}

#[test]
fn traffic_out_of_range_is_a_validation_error_naming_the_value_as_written() {
    let yaml =
        "canary:\n  steps:\n    - {replicas: 1, traffic: 120%}\n    - {replicas: 2, traffic: -5}\n";
    let (code, _, stderr) = plan(yaml);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "error: strategy.canary.steps[0].traffic: must be between 0 and 100, got 120%"
        ),
        "{stderr}"
    );
    assert!(
        stderr
            .contains("error: strategy.canary.steps[1].traffic: must be between 0 and 100, got -5"),
        "{stderr}"
    );
    assert!(stderr.contains("2 problem(s); no plan made"), "{stderr}");
}

#[test]
fn traffic_written_as_a_percent_plans_like_a_number() {
    let numbers = plan("canary: {steps: [{replicas: 2, traffic: 20, pause: {}}]}\n");
    let percents = plan("canary: {steps: [{replicas: 2, traffic: 20%, pause: {}}]}\n");
    assert_eq!(numbers.0, Some(0), "{}", numbers.2);
    assert_eq!(percents, numbers);
    assert!(numbers.1.contains("20%"), "{}", numbers.1);
}

#[test]
fn the_example_strategy_plans() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/strategy.yaml");
    let (code, stdout, stderr) = run(&example);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.starts_with("Partition release of 10 replicas"),
        "{stdout}"
    );
}
