//! `tiergate`: the sidecar, its config checker and its admin CLI.
#![forbid(unsafe_code)]

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// jemalloc rather than glibc's allocator: the sidecar allocates and frees per call on every
/// runtime thread (requests, responses, store commands), and glibc's per-arena locks, chunk
/// coalescing and fragmentation cost ~15 % of its CPU per call; measured, BENCHMARKS.md
/// "The binary's allocator". It also retains less per allowed send (issue #16's figure).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tiergate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(cli::run(args)) {
        Ok(code) => code,
        Err(e) => {
            // The whole cause chain, each cause once (`{:#}` would repeat a redis error's).
            eprintln!("tiergate: {}", tiergate_store::ErrorChain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}
