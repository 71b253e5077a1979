//! SPEC §3's "contract outside clients rely on": a Python grpcio client, generated from `proto/`
//! alone at test time, drives the sidecar (`tests/python/interop.py`).
//!
//! It needs a Python with `grpcio` and `grpcio-tools` (`TIERGATE_PYTHON`, default `python3`).
//! `.ci/run` installs them and sets `TIERGATE_REQUIRE_PYTHON_GRPC=1`, so in CI a missing
//! toolchain fails the run instead of skipping it.

mod support;

use std::process::Command;

use support::*;

#[tokio::test]
async fn a_python_client_from_proto_alone_drives_the_rules() {
    let python = std::env::var("TIERGATE_PYTHON").unwrap_or_else(|_| "python3".into());
    let usable = Command::new(&python)
        .args(["-c", "import grpc, grpc_tools"])
        .status()
        .is_ok_and(|s| s.success());
    if !usable {
        assert!(
            std::env::var("TIERGATE_REQUIRE_PYTHON_GRPC").is_err(),
            "{python} has no grpcio/grpcio-tools and TIERGATE_REQUIRE_PYTHON_GRPC is set"
        );
        eprintln!("skipped: {python} has no grpcio/grpcio-tools (set TIERGATE_PYTHON)");
        return;
    }
    let s = Sidecar::start(&[
        "--manual-clock",
        "--set",
        "policy.weekly_cap_without_escalation=5",
        "--set",
        "policy.small_sender_weekly_limit=3",
        "--set",
        "policy.auto_upgrade=false",
        "--set",
        "policy.ladder=[\"TIER_50\",\"TIER_250\",\"TIER_1K\",\"TIER_10K\",\"TIER_100K\",\"TIER_UNLIMITED\"]",
    ])
    .await;
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(&python)
        .arg(format!("{root}/tests/python/interop.py"))
        .arg(s.grpc.trim_start_matches("http://"))
        .arg(format!("{root}/proto"))
        .output()
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("interop ok"), "{text}");
}
