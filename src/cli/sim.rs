//! `tiergate simulate` and `tiergate trace-gen`.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use tiergate_server::config::{self, Overrides};
use tiergate_sim::replay::Simulator;
use tiergate_sim::tracegen::{self, GenConfig};

/// Flags of `simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// The config whose `[policy]` and `[[orgs]]` apply (optional: orgs may come from the trace).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The trace, JSONL (see docs/trace-format.md).
    #[arg(long)]
    trace: PathBuf,
    /// Write the report as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Draw one org's window fill, effective tier and rating to this SVG.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// The org to plot (default: the first org of the config or trace with sends).
    #[arg(long)]
    plot_org: Option<String>,
    /// Rows of the table (the orgs with the most sends).
    #[arg(long, default_value_t = 20)]
    rows: usize,
    /// Threads that replay sends, each owning a share of the orgs (default: twice the cores,
    /// at most 8; the report is the same whatever the number).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=8))]
    threads: Option<u16>,
}

pub fn simulate(a: SimulateArgs) -> anyhow::Result<ExitCode> {
    let src = a
        .config
        .as_deref()
        .map(std::fs::read_to_string)
        .transpose()
        .context("reading --config")?;
    let cfg = match config::load(src.as_deref(), &Overrides::default()) {
        Ok(c) => c,
        Err(e) => {
            for i in &e.0 {
                eprintln!("tiergate: config: {i}");
            }
            return Ok(ExitCode::from(2));
        }
    };
    let plot_org = a.plot.as_ref().map(|_| {
        a.plot_org
            .clone()
            .or_else(|| cfg.orgs.first().map(|o| o.org_id.clone()))
            .unwrap_or_else(|| "org-0".into())
    });
    let mut sim = Simulator::new(cfg.policy, cfg.orgs, plot_org)?;
    let file = File::open(&a.trace).with_context(|| format!("opening {}", a.trace.display()))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let input = BufReader::with_capacity(1 << 20, file);
    match a.threads {
        Some(n) => sim.run_on(usize::from(n), input, |n| bar.set_position(n)),
        None => sim.run(input, |n| bar.set_position(n)),
    }?;
    bar.finish_and_clear();
    let report = sim.report();
    print!("{}", report.table(a.rows));
    for e in &report.first_errors {
        println!("  {e}");
    }
    if let Some(out) = &a.out {
        std::fs::write(out, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    if let Some(svg) = &a.plot
        && let Some(samples) = sim.samples()
    {
        samples
            .draw(svg)
            .map_err(|e| anyhow::anyhow!("plot: {e}"))?;
        println!(
            "plot of {} ({} points) written to {}",
            samples.org,
            samples.len(),
            svg.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Flags of `trace-gen`.
#[derive(Debug, Args)]
pub struct TraceGenArgs {
    /// Orgs.
    #[arg(long, default_value_t = 1_000)]
    orgs: u64,
    /// Send events.
    #[arg(long, default_value_t = 2_000_000)]
    sends: u64,
    /// Days covered.
    #[arg(long, default_value_t = 7)]
    days: u64,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output file.
    #[arg(long)]
    out: PathBuf,
}

pub fn trace_gen(a: TraceGenArgs) -> anyhow::Result<ExitCode> {
    let file = File::create(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let n = tracegen::generate(
        &GenConfig {
            orgs: a.orgs,
            sends: a.sends,
            days: a.days,
            seed: a.seed,
            ..GenConfig::default()
        },
        &mut w,
    )?;
    w.flush()?;
    println!("{n} lines written to {}", a.out.display());
    Ok(ExitCode::SUCCESS)
}
