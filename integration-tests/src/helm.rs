//! Helm, built from the Go module pinned in `helm/go.mod` by
//! `scripts/build-helm` (cached outside git), for the chart's tests.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

/// The `helm` binary: `SLUICE_HELM`, or what `scripts/build-helm` builds
/// (or finds in its cache).
///
/// # Panics
/// When it cannot be built.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SLUICE_HELM") {
        return PathBuf::from(path);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-helm");
    let output = Command::new(script)
        .stderr(Stdio::inherit())
        .output()
        .expect("scripts/build-helm runs");
    assert!(output.status.success(), "building helm failed");
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

/// Runs helm with `args`: (success, stdout, stderr).
pub fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(binary())
        .args(args)
        .output()
        .expect("helm runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
