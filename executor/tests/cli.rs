//! The `sluice-executor` binary's exit codes, as the README promises them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests stop at the first failed step

use std::process::Command;

/// Runs the executor with `args`; its exit code and standard error.
fn run(args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_sluice-executor"))
        .args(args)
        .env_remove("SLUICE_TOKEN_FILE")
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_token_file_that_is_not_one_is_a_usage_error_naming_the_flag_and_entry() {
    let path = std::env::temp_dir().join(format!("sluice-tokens-{}.yaml", std::process::id()));
    std::fs::write(
        &path,
        "tokens: [{name: ci, token: short, namespaces: [shop]}]",
    )
    .unwrap();
    let (code, stderr) = run(&["--token-file", path.to_str().unwrap()]);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--token-file") && stderr.contains("tokens[0] (ci)"),
        "{stderr}"
    );
}

#[test]
fn a_token_file_that_cannot_be_read_is_a_usage_error_naming_the_path() {
    let (code, stderr) = run(&["--token-file", "/nonexistent/tokens.yaml"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("/nonexistent/tokens.yaml"), "{stderr}");
}
