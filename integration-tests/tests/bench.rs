//! `sluice bench` at its smallest size, as a user runs it: a spawned
//! process, its files, and figures that are really there. (The sizes that
//! matter are run by hand; see BENCHMARKS.md.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests stop at the first failed step

use std::process::Command;

use sluice_integration_tests::process::binary;

#[test]
fn the_bench_harness_measures_its_smallest_size_and_writes_every_output() {
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(binary("sluice"))
        .args([
            "bench",
            "--sizes",
            "4",
            "--bad-share",
            "0.5",
            "--calls",
            "40",
        ])
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("bench.json")).unwrap()).unwrap();
    let size = &report["sizes"][0];
    assert_eq!(size["rollouts"], 4);
    assert_eq!(size["succeeded"], 2, "{size:#}");
    assert_eq!(size["rolledBack"], 2, "{size:#}");
    assert!(size["advanceSamples"].as_u64().unwrap() >= 1, "{size:#}");
    assert!(size["advanceP99Ms"].as_f64().is_some(), "{size:#}");
    assert!(size["decisionP99Ms"].as_f64().is_some(), "{size:#}");
    assert!(size["apiCallsPerStep"].as_f64().unwrap() > 0.0, "{size:#}");
    assert!(size["grpcCallsPerStep"].as_f64().unwrap() > 0.0, "{size:#}");
    assert!(
        size["executorCpuSeconds"].as_f64().unwrap() > 0.0,
        "{size:#}"
    );
    assert!(report["planRatio"].as_f64().unwrap() > 0.0);
    assert!(report["gateRatio"].as_f64().unwrap() > 0.0);
    let markdown = std::fs::read_to_string(out.path().join("bench.md")).unwrap();
    assert!(markdown.contains("| 4 | 2 |"), "{markdown}");
    let svg = std::fs::read_to_string(out.path().join("bench.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("polyline"), "{svg}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("advance p50 / p99 ms"), "{stdout}");
}

#[test]
fn bad_bench_flags_are_refused_naming_the_flag() {
    let output = Command::new(binary("sluice"))
        .args(["bench", "--sizes", "0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "a usage error");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--sizes") && stderr.contains("\"0\""),
        "{stderr}"
    );
    let output = Command::new(binary("sluice"))
        .args(["bench", "--bad-share", "1.5"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--bad-share"));
}
