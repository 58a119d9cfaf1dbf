//! Generates the sluice.v1 messages and services with the pure-Rust `protox`
//! compiler, so a build needs no `protoc` on the machine.

use std::{env, fs, path::PathBuf};

use prost::Message;

const FILES: &[&str] = &[
    "sluice/v1/strategy.proto",
    "sluice/v1/analysis.proto",
    "sluice/v1/rollout.proto",
    "sluice/v1/rollouts.proto",
    "sluice/v1/planner.proto",
    "sluice/v1/metrics_gate.proto",
    "sluice/v1/simulator.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for file in FILES {
        println!("cargo:rerun-if-changed={file}");
    }
    let mut compiler = protox::Compiler::new(["."])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(FILES)?;
    let descriptors = compiler.file_descriptor_set();

    // Server reflection serves this set, so clients need no .proto files.
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out.join("sluice_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;

    // The clients and servers only with the `grpc` feature, so the messages
    // alone build without tonic.
    let grpc = env::var_os("CARGO_FEATURE_GRPC").is_some();
    tonic_prost_build::configure()
        .build_client(grpc)
        .build_server(grpc)
        .compile_fds(descriptors)?;
    Ok(())
}
