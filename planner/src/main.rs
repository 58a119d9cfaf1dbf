//! The `sluice-planner` binary: flags in, planner served until SIGTERM.

fn main() -> std::process::ExitCode {
    sluice_runtime::cli::main(sluice_planner::serve)
}
