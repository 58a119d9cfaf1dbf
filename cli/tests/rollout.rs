//! `sluice rollout` with a token file it cannot use: a usage error (exit
//! 2) naming the flag and the file, before any call goes out (no executor
//! runs here, so reaching one would fail otherwise).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests stop at the first failed step

use std::process::Command;

fn run(token_file: &str) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "rollout",
            "--executor",
            "127.0.0.1:1",
            "--token-file",
            token_file,
            "get",
            "web",
        ])
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_missing_an_unreadable_or_an_empty_token_file_exits_two_naming_it() {
    let dir = std::env::temp_dir().join(format!("sluice-cli-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty");
    std::fs::write(&empty, "  \n").unwrap();
    for path in [
        dir.join("missing").to_str().unwrap().to_owned(),
        dir.to_str().unwrap().to_owned(),
        empty.to_str().unwrap().to_owned(),
    ] {
        let (code, stderr) = run(&path);
        assert_eq!(code, Some(2), "{path}: {stderr}");
        assert!(
            stderr.contains("--token-file") && stderr.contains(&path),
            "{path}: {stderr}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
