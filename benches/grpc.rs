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

fn main() {
    // `cargo bench` passes `--bench`; any other filter argument is ignored.
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
    let stores = std::env::var("TIERGATE_BENCH_STORES")
        .unwrap_or_else(|_| "memory,embedded,redis,redis-everysec".into());
    let mut skipped = Vec::new();
    for store in stores.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let dir =
            std::env::temp_dir().join(format!("tiergate-bench-{store}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let dir_s = dir.to_string_lossy().into_owned();
        let mut redis = None;
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
        if kind == "redis" {
            match RedisServer::start_with_fsync(&format!("bench-{store}"), fsync) {
                Ok(r) => redis = Some(r),
                Err(e) => {
                    skipped.push(format!("{store} ({e})"));
                    continue;
                }
            }
        }
        let url = redis.as_ref().map(RedisServer::url).unwrap_or_default();
        if redis.is_some() {
            args.extend(["--redis-url", &url]);
        }
        let server = spawn(&args);
        let cfg = LoadConfig {
            addr: server.1.clone(),
            ..base.clone()
        };
        rt.block_on(loadgen::setup(&cfg, pb::Tier::Unlimited))
            .unwrap();
        rows.push((
            match kind {
                "redis" => format!("tiergate serve --store redis (appendfsync {fsync})"),
                _ => format!("tiergate serve --store {store}"),
            },
            rt.block_on(loadgen::run(&cfg)).unwrap(),
        ));
        drop(server);
        drop(redis);
        let _ = std::fs::remove_dir_all(&dir);
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
