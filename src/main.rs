//! `tiergate`: the sidecar, its config checker and its admin CLI.
#![forbid(unsafe_code)]

mod cli;

/// jemalloc instead of the C library's `malloc`. Measured against glibc on the sidecar (the
/// same load generator, builds alternated): 22 % less CPU per call on the embedded store, up to
/// 11 % less on memory, and fewer bytes of RSS per unreported send (BENCHMARKS.md, "The
/// binary's allocator, again"). glibc's arenas are locked when one worker thread frees what the
/// other allocated, and every durable call does that: its task is woken by the store's thread
/// and may resume on the other worker. The options baked in at build time are in
/// `.cargo/config.toml`; an operator overrides them with `_RJEM_MALLOC_CONF`.
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::process::ExitCode;

use clap::Parser;

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
