//! The `sluice-sim` binary: flags in, simulator served until SIGTERM.

fn main() -> std::process::ExitCode {
    sluice_runtime::cli::main(sluice_sim::serve)
}
