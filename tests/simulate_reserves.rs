//! `tiergate simulate` reports, per org, the sends the category reserves held back, by category:
//! reserves from the config's `[policy]`, and an org's own from the trace.

mod support;

use std::fmt::Write;
use std::process::Command;

use serde_json::Value;
use support::*;

fn tmp(name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("tiergate-sim-rsv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name).to_string_lossy().into_owned()
}

/// `n` sends of `category` by `org` from number `phone` to new recipients `first..first + n`,
/// 10 ms apart from `*t`.
fn sends(
    trace: &mut String,
    t: &mut u64,
    org: &str,
    phone: &str,
    category: &str,
    first: u64,
    n: u64,
) {
    for i in 0..n {
        *t += 10;
        let _ = writeln!(
            trace,
            r#"{{"t":{t},"send":{{"org":"{org}","phone":"{phone}","to":"{}","template":"t","category":"{category}"}}}}"#,
            4_915_100_000_000 + first + i
        );
    }
}

/// Worked out by hand: TIER_250 with 10 % kept for AUTHENTICATION and 20 % for UTILITY leaves
/// MARKETING ⌊250 × 70 %⌋ = 175 slots and UTILITY ⌊250 × 90 %⌋ = 225; AUTHENTICATION has all 250.
#[test]
fn reserves_hold_back_marketing_and_utility_and_the_report_says_how_many() {
    let config = tmp("reserves.toml");
    std::fs::write(
        &config,
        r#"[policy]
reserve_authentication_percent = 10
reserve_utility_percent = 20

[[orgs]]
org_id = "r"
tier = "TIER_250"
phone_numbers = [{ phone_number_id = "1", throughput_mps = 1000 }]
escalation_path = { kind = "EMAIL", contact = "help@example.com" }
"#,
    )
    .unwrap();
    let mut trace = String::new();
    let mut t = 1_000u64;
    // r: 200 MARKETING (175 allowed, 25 held back), 60 UTILITY (50 allowed up to 225, 10 held
    // back), 30 AUTHENTICATION (25 allowed up to 250, then 5 TIER_LIMIT, not a reserve).
    sends(&mut trace, &mut t, "r", "1", "MARKETING", 0, 200);
    sends(&mut trace, &mut t, "r", "1", "UTILITY", 1_000, 60);
    sends(&mut trace, &mut t, "r", "1", "AUTHENTICATION", 2_000, 30);
    // A recipient already in the window costs no slot: never held back, though the window is
    // full (after the pair rate's pause between two sends to one person).
    t += 10 * SEC;
    sends(&mut trace, &mut t, "r", "1", "UTILITY", 0, 1);
    // o: registered by the trace with its own reserves (no AUTHENTICATION share, 60 % for
    // UTILITY): MARKETING may fill 100; 120 sends, 20 held back. And no policy reserve for
    // UTILITY's own limit: 160 UTILITY sends fill up to 250 (150 allowed, 10 TIER_LIMIT).
    t += 10;
    let _ = writeln!(
        trace,
        r#"{{"t":{t},"org":{{"org_id":"o","tier":"TIER_250","phone_numbers":[{{"phone_number_id":"2","throughput_mps":1000}}],"escalation_path":{{"kind":"EMAIL","contact":"o@example.com"}},"reserve_authentication_percent":0,"reserve_utility_percent":60}}}}"#
    );
    sends(&mut trace, &mut t, "o", "2", "MARKETING", 10_000, 120);
    sends(&mut trace, &mut t, "o", "2", "UTILITY", 11_000, 160);
    let trace_file = tmp("reserves.jsonl");
    std::fs::write(&trace_file, trace).unwrap();
    let out_file = tmp("reserves.json");

    let out = Command::new(bin())
        .args([
            "simulate",
            "--config",
            &config,
            "--trace",
            &trace_file,
            "--out",
            &out_file,
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");

    let r: Value = serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    assert_eq!(r["event_errors"], 0, "{}", r["first_errors"]);
    let org = &r["orgs"]["r"];
    assert_eq!(org["sends"], 291);
    assert_eq!(org["allowed"], 175 + 50 + 25 + 1);
    assert_eq!(org["reserve_held"]["marketing"], 25);
    assert_eq!(org["reserve_held"]["utility"], 10);
    assert_eq!(org["denied_by_reason"]["CATEGORY_RESERVE"], 35);
    assert_eq!(org["denied_by_reason"]["TIER_LIMIT"], 5);
    let o = &r["orgs"]["o"];
    assert_eq!(o["allowed"], 100 + 150);
    assert_eq!(o["reserve_held"]["marketing"], 20);
    assert_eq!(o["reserve_held"]["utility"], 0);
    assert_eq!(o["denied_by_reason"]["TIER_LIMIT"], 10);
    assert_eq!(r["total"]["reserve_held"]["marketing"], 45);
    assert_eq!(r["total"]["reserve_held"]["utility"], 10);

    // The table: RSV_MKT and RSV_UTIL per org (not in OTHER), and a line saying what they are.
    let cols = |name: &str| -> Vec<String> {
        let head: Vec<&str> = stdout
            .lines()
            .find(|l| l.starts_with("ORG"))
            .unwrap()
            .split_whitespace()
            .collect();
        let row: Vec<&str> = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row {name} in\n{stdout}"))
            .split_whitespace()
            .collect();
        ["RSV_MKT", "RSV_UTIL", "OTHER", "TIER_LIMIT"]
            .iter()
            .map(|c| row[head.iter().position(|h| h == c).unwrap()].to_owned())
            .collect()
    };
    assert_eq!(cols("r"), ["25", "10", "0", "5"], "{stdout}");
    assert_eq!(cols("o"), ["20", "0", "0", "10"], "{stdout}");
    assert_eq!(cols("TOTAL"), ["45", "10", "0", "15"], "{stdout}");
    assert!(
        stdout.contains("category reserves held back 45 MARKETING and 10 UTILITY sends"),
        "{stdout}"
    );
}

/// Without reserves the columns are there, zero, and the note is not printed.
#[test]
fn no_reserves_no_note() {
    let trace_file = tmp("plain.jsonl");
    let mut trace = String::new();
    let _ = writeln!(
        trace,
        r#"{{"t":1,"org":{{"org_id":"p","tier":"TIER_250","phone_numbers":[{{"phone_number_id":"1","throughput_mps":1000}}],"escalation_path":{{"kind":"EMAIL","contact":"p@example.com"}}}}}}"#
    );
    let mut t = 1;
    sends(&mut trace, &mut t, "p", "1", "MARKETING", 0, 260);
    std::fs::write(&trace_file, trace).unwrap();
    let out = Command::new(bin())
        .args(["simulate", "--trace", &trace_file])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("RSV_MKT"), "{stdout}");
    assert!(!stdout.contains("category reserves held back"), "{stdout}");
}
