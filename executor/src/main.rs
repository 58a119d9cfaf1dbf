//! The `sluice-executor` binary: flags in, executor served until SIGTERM.

fn main() -> std::process::ExitCode {
    sluice_runtime::cli::main(sluice_executor::serve)
}
