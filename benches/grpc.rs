//! The sidecar against its transport floor, in one run: `cargo bench --bench grpc`.
//!
//! Starts `tiergate echo-serve` (same proto, always ALLOW, no policy) and `tiergate serve` on
//! each available store, drives each with the same loadgen settings, and prints one table with
//! every result's ratio to the echo floor and to the in-memory sidecar. `TIERGATE_BENCH_SECS`
//! sets each run's length (10 s), `TIERGATE_BENCH_STORES` the stores
//! (`memory,embedded,redis,redis-everysec`).
//! For `redis` the bench starts its own `redis-server` on a free port, with the append-only
//! file fsynced on every write (`appendfsync always`), the same promise the embedded store
//! keeps; `redis-everysec` is Redis's usual setting (fsync once a second).
//!
//! `cargo bench --bench grpc -- batch`: `AcquireBatch` of 100 (`TIERGATE_BENCH_BATCH`) against
//! single `Acquire` calls instead, on the same server, connections and calls in flight, per
//! store (and on the echo floor): decisions/s of each and their ratio (SPEC §6: ≥ 5×). 1,000
//! orgs, so that the numbers' throughput (1,000/s each) does not turn the batches' sends into
//! cheap denials.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tiergate_load::loadgen::{self, LoadConfig, Summary};
use tiergate_proto::v1 as pb;
use tiergate_testkit::redis::RedisServer;

struct Proc(Child, String);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[&str]) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tiergate"))
        .args(args)
        .env("TIERGATE_LOG", "warn")
        .env_remove("TIERGATE_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn tiergate");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("listening line");
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("grpc="))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    Proc(child, format!("http://{addr}"))
}

/// A server on a store, with its Redis and data directory: stopped and removed on drop.
struct Running {
    server: Proc,
    redis: Option<RedisServer>,
    dir: std::path::PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.server.0.kill();
        let _ = self.server.0.wait();
        drop(self.redis.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A server on `store` (`memory`, `embedded`, `redis`, `redis-everysec`) and its label, or why
/// it could not be measured.
fn start_store(store: &str) -> Result<(Running, String), String> {
    let dir = std::env::temp_dir().join(format!("tiergate-bench-{store}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dir_s = dir.to_string_lossy().into_owned();
    let (kind, fsync) = match store.split_once('-') {
        Some(("redis", f)) => ("redis", f),
        _ => (store, "always"),
    };
    let mut args = vec![
        "serve",
        "--grpc-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
        "--store",
        kind,
        "--data-dir",
        &dir_s,
    ];
    let redis = if kind == "redis" {
        Some(
            RedisServer::start_with_fsync(&format!("bench-{store}"), fsync)
                .map_err(|e| format!("{store} ({e})"))?,
        )
    } else {
        None
    };
    let url = redis.as_ref().map(RedisServer::url).unwrap_or_default();
    if redis.is_some() {
        args.extend(["--redis-url", &url]);
    }
    let server = spawn(&args);
    let label = match kind {
        "redis" => format!("redis (appendfsync {fsync})"),
        _ => store.to_owned(),
    };
    Ok((Running { server, redis, dir }, label))
}

/// Single `Acquire` calls against `AcquireBatch` of `n` on each store (see the module docs).
fn batch_bench(rt: &tokio::runtime::Runtime, base: &LoadConfig, stores: &str) {
    let n: usize = std::env::var("TIERGATE_BENCH_BATCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let base = LoadConfig {
        orgs: 1_000,
        ..base.clone()
    };
    let run = |addr: &str| {
        let single = LoadConfig {
            addr: addr.to_owned(),
            ..base.clone()
        };
        // Other draws than the single run's: its pairs are still inside the pair-rate window,
        // and their (cheaper) denials would flatter the batches.
        let batched = LoadConfig {
            batch: Some(n),
            seed: single.seed + 1_000_003,
            ..single.clone()
        };
        let s = rt.block_on(loadgen::run(&single)).unwrap();
        let b = rt.block_on(loadgen::run(&batched)).unwrap();
        (s, b)
    };
    let mut rows: Vec<(String, Summary, Summary)> = Vec::new();
    {
        let echo = spawn(&["echo-serve", "--grpc-addr", "127.0.0.1:0"]);
        let (s, b) = run(&echo.1);
        rows.push(("echo (floor)".into(), s, b));
    }
    let mut skipped = Vec::new();
    for store in stores.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (running, label) = match start_store(store) {
            Ok(x) => x,
            Err(e) => {
                skipped.push(e);
                continue;
            }
        };
        let cfg = LoadConfig {
            addr: running.server.1.clone(),
            ..base.clone()
        };
        rt.block_on(loadgen::setup(&cfg, pb::Tier::Unlimited))
            .unwrap();
        let (s, b) = run(&running.server.1);
        rows.push((label, s, b));
        drop(running);
    }
    println!(
        "\nloadgen: {} connections, {} calls in flight, {} s per run, {} orgs, {} recipients (uniform); batches of {n}\n",
        base.connections,
        base.concurrency,
        base.duration.map_or(0.0, |d| d.as_secs_f64()),
        base.orgs,
        base.recipients
    );
    println!(
        "| store | single: decisions/s | p50 µs | p99 µs | batch of {n}: decisions/s | calls/s | p50 µs | p99 µs | ratio | allowed (single / batch) | errors |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (name, s, b) in &rows {
        let share = |x: &Summary| 100.0 * x.allowed as f64 / x.decisions.max(1) as f64;
        println!(
            "| {name} | {:.0} | {} | {} | {:.0} | {:.0} | {} | {} | {:.2}× | {:.0} % / {:.0} % | {} / {} |",
            s.decisions_per_s,
            s.p50_us,
            s.p99_us,
            b.decisions_per_s,
            b.throughput_rps,
            b.p50_us,
            b.p99_us,
            b.decisions_per_s / s.decisions_per_s.max(1e-9),
            share(s),
            share(b),
            s.errors,
            b.errors
        );
    }
    for s in skipped {
        println!("\nnot measured: {s}");
    }
}

fn main() {
    // `cargo bench` passes `--bench`; the filter `batch` runs the batch comparison, any other
    // filter argument is ignored.
    let batch = std::env::args().skip(1).any(|a| a == "batch");
    let secs: f64 = std::env::var("TIERGATE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10.0);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let base = LoadConfig {
        connections: 4,
        concurrency: 64,
        duration: Some(Duration::from_secs_f64(secs)),
        orgs: 100,
        recipients: 1_000_000,
        ..LoadConfig::default()
    };
    let stores = std::env::var("TIERGATE_BENCH_STORES")
        .unwrap_or_else(|_| "memory,embedded,redis,redis-everysec".into());
    if batch {
        return batch_bench(&rt, &base, &stores);
    }
    let mut rows: Vec<(String, Summary)> = Vec::new();
    {
        let echo = spawn(&["echo-serve", "--grpc-addr", "127.0.0.1:0"]);
        let cfg = LoadConfig {
            addr: echo.1.clone(),
            ..base.clone()
        };
        rows.push((
            "echo (floor)".into(),
            rt.block_on(loadgen::run(&cfg)).unwrap(),
        ));
    }
    let mut skipped = Vec::new();
    for store in stores.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (running, label) = match start_store(store) {
            Ok(x) => x,
            Err(e) => {
                skipped.push(e);
                continue;
            }
        };
        let cfg = LoadConfig {
            addr: running.server.1.clone(),
            ..base.clone()
        };
        rt.block_on(loadgen::setup(&cfg, pb::Tier::Unlimited))
            .unwrap();
        rows.push((
            format!("tiergate serve --store {label}"),
            rt.block_on(loadgen::run(&cfg)).unwrap(),
        ));
        drop(running);
    }
    let floor = rows[0].1.throughput_rps;
    let memory = rows
        .iter()
        .find(|(n, _)| n.ends_with("--store memory"))
        .map(|(_, s)| s.throughput_rps);
    println!(
        "\nloadgen: {} connections, {} in flight, {secs} s per run, {} orgs, {} recipients (uniform)\n",
        base.connections, base.concurrency, base.orgs, base.recipients
    );
    println!(
        "| target | calls/s | × echo | × memory | p50 µs | p90 µs | p99 µs | p999 µs | allowed | denied | errors |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (name, s) in &rows {
        let vs_memory =
            memory.map_or_else(|| "-".into(), |m| format!("{:.2}", s.throughput_rps / m));
        println!(
            "| {name} | {:.0} | {:.2} | {vs_memory} | {} | {} | {} | {} | {} | {} | {} |",
            s.throughput_rps,
            s.throughput_rps / floor,
            s.p50_us,
            s.p90_us,
            s.p99_us,
            s.p999_us,
            s.allowed,
            s.denied,
            s.errors
        );
    }
    for s in skipped {
        println!("\nnot measured: {s}");
    }
}
