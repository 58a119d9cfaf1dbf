//! Independent clients written in Python with grpcio, to prove that the
//! services speak standard gRPC. `scripts/test` installs the packages.

use std::{path::PathBuf, process::Command};

/// The folder of the Python client scripts.
pub fn scripts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python")
}

/// Runs `script` with `args`; returns stdout, panicking with stderr on failure.
pub fn run(script: &str, args: &[&str]) -> String {
    let output = Command::new("python3")
        .arg(scripts().join(script))
        .args(args)
        .output()
        .expect("python3 must be installed (scripts/test installs grpcio)");
    assert!(
        output.status.success(),
        "{script} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
