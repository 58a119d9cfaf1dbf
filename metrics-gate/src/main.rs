//! The `sluice-gate` binary: flags in, metrics gate served until SIGTERM.

fn main() -> std::process::ExitCode {
    sluice_runtime::cli::main(sluice_gate::serve)
}
