//! The `sluice-executor` binary: flags in, executor served until SIGTERM.

fn main() -> std::process::ExitCode {
    sluice_runtime::cli::main(sluice_executor::serve)
}

/// Every watch event and API answer is parsed into fresh objects; at a
/// thousand rollouts glibc's allocator was the largest single cost.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
