//! `tiergate simulate` on a small hand-checked trace, `trace-gen` → `simulate` end to end, and
//! `loadgen` agreeing with the server's own metrics.

mod support;

use std::process::Command;

use serde_json::Value;
use support::*;

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin()).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn tmp(name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("tiergate-sim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name).to_string_lossy().into_owned()
}

/// Every number below was worked out by hand from the trace's comments in this test.
#[test]
fn small_trace_totals_are_the_hand_checked_ones() {
    let out = tmp("small.json");
    let svg = tmp("small.svg");
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/traces");
    let (ok, stdout, stderr) = run(&[
        "simulate",
        "--config",
        &format!("{fixtures}/small.toml"),
        "--trace",
        &format!("{fixtures}/small.jsonl"),
        "--out",
        &out,
        "--plot",
        &svg,
        "--plot-org",
        "a",
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(r["events"], 22);
    assert_eq!(r["event_errors"], 1, "the send of unknown org c");
    let a = &r["orgs"]["a"];
    // 8 sends: one pair-rate denial (same recipient in the same millisecond), one NOT_SENT
    // refund, the restricted tier from the RED flag (TIER_50 on the legacy ladder) until the
    // approved appeal, TIER_2K from the capability webhook, then TIER_50 by request.
    assert_eq!(a["sends"], 8);
    assert_eq!(a["allowed"], 7);
    assert_eq!(a["denied_by_reason"]["PAIR_RATE"], 1);
    assert_eq!(a["refunded"], 1);
    assert_eq!(a["tier_changes"], 4);
    assert_eq!(a["restricted_periods"], 1);
    assert_eq!(a["passthrough_sends"], 0);
    // b: no path and no history; a path set then cleared; the weekly cap of 3 without a path.
    let b = &r["orgs"]["b"];
    assert_eq!(b["sends"], 5);
    assert_eq!(b["allowed"], 3);
    assert_eq!(b["denied_by_reason"]["ESCALATION_PATH_REQUIRED"], 1);
    assert_eq!(b["denied_by_reason"]["WEEKLY_CAP_WITHOUT_ESCALATION"], 1);
    // p: RED past its grace but a small sender: passes through.
    let p = &r["orgs"]["p"];
    assert_eq!(
        (p["allowed"].as_u64(), p["passthrough_sends"].as_u64()),
        (Some(1), Some(1))
    );
    let t = &r["total"];
    assert_eq!(
        (
            t["sends"].as_u64(),
            t["allowed"].as_u64(),
            t["denied"].as_u64()
        ),
        (Some(14), Some(11), Some(3))
    );
    assert!(stdout.contains("TOTAL"), "{stdout}");
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("org a"),
        "{}",
        &svg[..200.min(svg.len())]
    );
}

#[test]
fn a_generated_week_replays() {
    let trace = tmp("week.jsonl");
    let out = tmp("week.json");
    let (ok, _, e) = run(&[
        "trace-gen",
        "--orgs",
        "40",
        "--sends",
        "40000",
        "--days",
        "7",
        "--out",
        &trace,
    ]);
    assert!(ok, "{e}");
    let (ok, stdout, e) = run(&["simulate", "--trace", &trace, "--out", &out]);
    assert!(ok, "{stdout}\n{e}");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(r["total"]["sends"], 40_000);
    assert_eq!(r["event_errors"], 0, "{}", r["first_errors"]);
    assert!(r["trace_hours"].as_f64().unwrap() > 160.0);
    let t = &r["total"];
    assert_eq!(
        t["allowed"].as_u64().unwrap()
            + t["denied"].as_u64().unwrap()
            + t["errors"].as_u64().unwrap(),
        40_000
    );
}

#[test]
fn bad_traces_are_refused_with_their_line() {
    let trace = tmp("bad.jsonl");
    std::fs::write(&trace, "{\"t\":5,\"tier\":{\"org\":\"x\",\"tier\":\"TIER_2K\"}}\n{\"t\":4,\"send\":{\"org\":\"x\",\"phone\":\"1\",\"to\":\"1\"}}\n").unwrap();
    let (ok, _, e) = run(&["simulate", "--trace", &trace]);
    assert!(!ok);
    assert!(e.contains("line 2") && e.contains("backwards"), "{e}");
    std::fs::write(&trace, "{\"t\":5}\n").unwrap();
    let (ok, _, e) = run(&["simulate", "--trace", &trace]);
    assert!(!ok && e.contains("line 1"), "{e}");
}

#[tokio::test]
async fn loadgen_counts_agree_with_the_server_metrics() {
    let s = Sidecar::start(&[]).await;
    let out = Command::new(bin())
        .args([
            "loadgen",
            "--addr",
            &s.grpc,
            "--setup",
            "--requests",
            "600",
            "--orgs",
            "5",
            "--recipients",
            "200",
            "--concurrency",
            "8",
            "--connections",
            "2",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["requests"], 600);
    assert_eq!(v["errors"], 0);
    let allowed = v["allowed"].as_u64().unwrap();
    let denied = v["denied"].as_u64().unwrap();
    assert_eq!(allowed + denied, 600);
    assert!(
        denied > 0,
        "200 recipients over 600 calls must hit the pair rate"
    );
    let m = s.metrics().await;
    let sum = |verdict: &str| -> u64 {
        m.lines()
            .filter(|l| {
                l.starts_with("tiergate_decisions_total{")
                    && l.contains(&format!("verdict=\"{verdict}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    assert_eq!(sum("allow"), allowed, "{m}");
    assert_eq!(sum("deny"), denied, "{m}");
}
