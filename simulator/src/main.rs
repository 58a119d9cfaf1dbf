//! The `sluice-sim` binary: flags in, simulator served until SIGTERM.

fn main() -> std::process::ExitCode {
    sluice_runtime::cli::main(sluice_sim::serve)
}

/// The simulator's JSON churn runs about a third faster on mimalloc than
/// on glibc's allocator (`cargo bench -p sluice-sim --bench cluster`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
