//! `tiergate`: the sidecar, its config checker and its admin CLI.
// One `unsafe` call, in `malloc.rs` (glibc's `mallopt`, measured in issue #16); denied elsewhere.
#![deny(unsafe_code)]

mod cli;
mod malloc;

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
