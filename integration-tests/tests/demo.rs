//! `sluice demo` as a user runs it: a spawned process and its real output.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests stop at the first failed step

use std::process::Command;

use sluice_integration_tests::process::binary;

fn demo(args: &[&str]) -> (Option<i32>, String, serde_json::Value) {
    let output = Command::new(binary("sluice"))
        .arg("demo")
        .args(args)
        .args(["--output", "json"])
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let last = stdout.lines().last().unwrap_or_default().to_owned();
    let summary = serde_json::from_str(&last).unwrap_or_else(|e| {
        panic!(
            "last line is not JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code(), stdout, summary)
}

#[test]
fn the_healthy_demo_succeeds() {
    let (code, stdout, summary) = demo(&[]);
    assert_eq!(summary["phase"], "Succeeded", "{stdout}");
    assert_eq!(code, Some(0));
    let steps = summary["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3);
    assert_eq!(steps[2]["traffic"], 100);
    assert!(summary["durationSeconds"].as_f64().unwrap() > 0.0);
}

#[test]
fn a_bad_canary_is_rolled_back_and_the_failing_metric_named() {
    let (code, stdout, summary) = demo(&["--scenario", "bad-canary"]);
    assert_eq!(summary["phase"], "RolledBack", "{stdout}");
    assert_eq!(code, Some(1), "a rolled-back release exits 1");
    let failed = &summary["steps"][0]["failed"][0];
    assert_eq!(failed["metric"], "health/success-rate", "{summary}");
    assert!(failed["value"].as_f64().unwrap() < 0.95);
}

#[test]
fn a_release_started_by_kubectl_set_image_runs_through_the_webhook() {
    let (code, stdout, summary) = demo(&["--trigger", "apply", "--speed", "2"]);
    assert_eq!(summary["phase"], "Succeeded", "{stdout}");
    assert_eq!(code, Some(0));
    assert_eq!(summary["steps"].as_array().unwrap().len(), 3, "{summary}");
}

#[test]
fn a_bad_flag_is_a_usage_error() {
    let output = Command::new(binary("sluice"))
        .args(["demo", "--scenario", "no-such-scenario"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("no built-in scenario \"no-such-scenario\"")
    );
    let output = Command::new(binary("sluice"))
        .args(["demo", "--speed", "fast"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn on_a_terminal_the_demo_redraws_a_live_view_of_each_batch() {
    // `script` runs the demo under a pseudo-terminal, as a shell would.
    let command = format!("{} demo", binary("sluice").display());
    let output = Command::new("script")
        .args(["-qefc", &command, "/dev/null"])
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(
        text.contains("\x1b[") && text.contains("A\x1b[J"),
        "the block is redrawn in place: {text}"
    );
    assert!(
        text.contains("new pods [") && text.contains("traffic  ["),
        "{text}"
    );
    assert!(
        text.contains("health/success-rate"),
        "measurements are shown: {text}"
    );
    assert!(text.contains("step 1 done"), "{text}");
    assert!(text.contains("Succeeded in"), "{text}");
}
