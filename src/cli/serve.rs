//! `tiergate serve` and `tiergate check-config`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use tiergate_server::config::{self, Overrides, StoreKind};
use tiergate_server::serve::{Bound, serve};

/// Flags of `serve`. Each overrides its key from the file and the environment.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The TOML config file.
    #[arg(long, env = "TIERGATE_CONFIG")]
    config: Option<PathBuf>,
    /// gRPC listen address (server.grpc_addr).
    #[arg(long)]
    grpc_addr: Option<String>,
    /// HTTP listen address (server.http_addr).
    #[arg(long)]
    http_addr: Option<String>,
    /// Data directory of the embedded store (server.data_dir).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// memory, embedded, redis or redis-cluster (server.store).
    #[arg(long)]
    store: Option<StoreKind>,
    /// Redis URL (server.redis_url); for redis-cluster, seed nodes separated by commas.
    #[arg(long)]
    redis_url: Option<String>,
    /// Upstream Cloud-API base URL (server.upstream_url).
    #[arg(long)]
    upstream_url: Option<String>,
    /// Start a manual clock that GovernorAdmin.AdvanceClock moves (server.manual_clock).
    #[arg(long)]
    manual_clock: bool,
    /// Any key: `--set policy.tier_headroom_percent=20` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TIERGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// The environment as text: `std::env::vars` panics on a variable that is not UTF-8, which an
/// operator's environment may hold; such names and values are read lossily instead.
fn environment() -> impl Iterator<Item = (String, String)> {
    std::env::vars_os().map(|(k, v)| {
        (
            k.to_string_lossy().into_owned(),
            v.to_string_lossy().into_owned(),
        )
    })
}

/// Says at start which allocator the binary has and the options it was built with: a build
/// that did not read the repository's `.cargo/config.toml` (`cargo install`, a build from
/// another directory) has jemalloc's defaults, which keep freed pages ten times longer.
fn log_allocator() {
    if cfg!(all(feature = "jemalloc", not(target_env = "msvc"))) {
        match option_env!("JEMALLOC_SYS_WITH_MALLOC_CONF") {
            Some(conf) => tracing::info!(conf, "allocator: jemalloc"),
            None => tracing::warn!(
                "allocator: jemalloc built without the repository's options (.cargo/config.toml); \
                 freed pages are kept 10 s; set _RJEM_MALLOC_CONF=dirty_decay_ms:1000"
            ),
        }
    } else {
        tracing::info!("allocator: the system's");
    }
}

fn env_vars() -> Vec<(String, String)> {
    environment()
        .filter(|(k, _)| {
            k.starts_with("TIERGATE_")
                && k != "TIERGATE_CONFIG"
                && k != "TIERGATE_LOG"
                && k != "TIERGATE_ADDR"
        })
        .collect()
}

pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    init_logs(args.log_json);
    let src = args.config.as_deref().map(read).transpose()?;
    let mut sets = Vec::new();
    for s in &args.sets {
        let (k, v) = s
            .split_once('=')
            .with_context(|| format!("--set {s:?}: expected KEY=VALUE"))?;
        sets.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let quoted = |v: &str| format!("{v:?}");
    let named = [
        ("server.grpc_addr", args.grpc_addr.as_deref().map(quoted)),
        ("server.http_addr", args.http_addr.as_deref().map(quoted)),
        (
            "server.data_dir",
            args.data_dir
                .as_deref()
                .map(|p| quoted(&p.display().to_string())),
        ),
        ("server.store", args.store.map(|s| quoted(s.name()))),
        ("server.redis_url", args.redis_url.as_deref().map(quoted)),
        (
            "server.upstream_url",
            args.upstream_url.as_deref().map(quoted),
        ),
        (
            "server.manual_clock",
            args.manual_clock.then(|| "true".to_owned()),
        ),
    ];
    for (k, v) in named {
        if let Some(v) = v {
            sets.push((k.to_owned(), v));
        }
    }
    let overrides = Overrides {
        sets,
        env: env_vars(),
    };
    let cfg = match config::load(src.as_deref(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            for issue in &e.0 {
                eprintln!("tiergate: config: {issue}");
            }
            return Ok(ExitCode::from(2));
        }
    };
    log_allocator();
    if cfg.server.malloc_mmap_threshold.is_some() {
        tracing::warn!(
            "server.malloc_mmap_threshold is ignored: the binary allocates with jemalloc \
             (see _RJEM_MALLOC_CONF)"
        );
    }
    let shutdown = async {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => {
                        let _ = ctrl_c.await;
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
    };
    serve(cfg, shutdown, |b: Bound| {
        // One machine-readable line on stdout, for scripts and tests that bind port 0.
        println!("tiergate listening grpc={} http={}", b.grpc, b.http);
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

pub fn check_config(file: &Path) -> anyhow::Result<ExitCode> {
    let src = read(file)?;
    let overrides = Overrides {
        sets: Vec::new(),
        env: env_vars(),
    };
    match config::load(Some(&src), &overrides) {
        Ok(cfg) => {
            println!(
                "{}: ok ({} orgs, store {}, grpc {}, http {})",
                file.display(),
                cfg.orgs.len(),
                cfg.server.store.name(),
                cfg.server.grpc_addr,
                cfg.server.http_addr
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            for issue in &e.0 {
                println!("{}: {issue}", file.display());
            }
            Ok(ExitCode::from(2))
        }
    }
}
