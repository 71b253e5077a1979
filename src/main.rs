//! `tiergate`: the sidecar, its config checker and its admin CLI.
#![forbid(unsafe_code)]

mod cli;

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
