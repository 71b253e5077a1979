//! `tiergate send` and `tiergate report` through the real binary against a real sidecar: the
//! verdict, reason, retry-after, usage and permit; exit 3 on a DENY; `--json`; the advice of a
//! report; and the errors a user meets.

mod support;

use std::process::{Command, Output, Stdio};

use serde_json::Value;
use support::*;
use tiergate_proto::v1 as pb;

/// `tiergate ARGS` against the sidecar at `addr`, with `env` and no tokens otherwise.
fn tiergate(addr: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env("TIERGATE_ADDR", addr)
        .env_remove("TIERGATE_ADMIN_TOKEN")
        .env_remove("TIERGATE_SENDER_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run tiergate")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// `tiergate send acme --to TO` (UTILITY template `order_update`) with `more` arguments.
fn send(s: &Sidecar, to: &str, more: &[&str]) -> Output {
    let mut args = vec![
        "send",
        "acme",
        "--phone",
        FIXTURE_PHONE,
        "--to",
        to,
        "--template",
        "order_update",
        "--category",
        "utility",
    ];
    args.extend_from_slice(more);
    tiergate(&s.grpc, &args, &[])
}

fn report(s: &Sidecar, args: &[&str]) -> Output {
    let mut all = vec!["report"];
    all.extend_from_slice(args);
    tiergate(&s.grpc, &all, &[])
}

/// The value of a `key  value` line.
fn field<'a>(table: &'a str, key: &str) -> &'a str {
    table
        .lines()
        .find_map(|l| {
            l.strip_prefix(key)
                .filter(|rest| rest.starts_with(' '))
                .map(str::trim)
        })
        .unwrap_or_else(|| panic!("no {key} line in\n{table}"))
}

/// Runs `out`, expects success, returns standard output.
fn ok(out: &Output) -> String {
    let (stdout, stderr) = text(out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    stdout
}

async fn sidecar_with_acme() -> Sidecar {
    let s = Sidecar::start(&["--manual-clock"]).await;
    s.put_org(org("acme", pb::Tier::Tier250)).await;
    s
}

const TO: &str = "4915112340001";

#[tokio::test]
async fn send_allows_then_denies_the_pair_rate_with_exit_3() {
    let s = sidecar_with_acme().await;

    let stdout = ok(&send(&s, TO, &[]));
    assert_eq!(field(&stdout, "verdict"), "ALLOW", "{stdout}");
    assert_eq!(field(&stdout, "reason"), "none");
    assert_eq!(field(&stdout, "retry_after"), "none");
    let permit = field(&stdout, "permit_id");
    assert!(!permit.is_empty() && permit != "none", "{stdout}");
    assert_eq!(field(&stdout, "tier"), "TIER_250");
    assert_eq!(field(&stdout, "tier_limit"), "250");
    assert_eq!(field(&stdout, "unique_recipients_24h"), "1");
    assert_eq!(field(&stdout, "templates_7d"), "1");
    assert_eq!(field(&stdout, "quality_rating"), "UNKNOWN");
    // A small sender (<= 1,000 templates a week) passes through quality restrictions.
    assert_eq!(field(&stdout, "passthrough"), "true");

    // The same recipient right away: the pair rate, a retry-after, exit 3.
    let out = send(&s, TO, &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    assert_eq!(field(&stdout, "verdict"), "DENY", "{stdout}");
    assert_eq!(field(&stdout, "reason"), "PAIR_RATE");
    assert_eq!(field(&stdout, "retry_after"), "6 s", "{stdout}");
    assert_eq!(field(&stdout, "permit_id"), "none");
    assert_eq!(field(&stdout, "unique_recipients_24h"), "1");

    // --json: the AcquireResponse's fields, and still exit 3 on a DENY.
    let out = send(&s, TO, &["--json"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    let j: Value = serde_json::from_str(&stdout).expect("one JSON document");
    assert_eq!(j["verdict"], "DENY");
    assert_eq!(j["reason"], "PAIR_RATE");
    assert_eq!(j["retry_after_ms"], 6_000);
    assert_eq!(j["permit_id"], Value::Null);
    assert_eq!(j["usage"]["tier"], "TIER_250");
    assert_eq!(j["usage"]["tier_limit"], 250);
    assert_eq!(j["usage"]["unique_recipients_24h"], 1);

    // Another recipient under --json: ALLOW, exit 0, a permit.
    let out = send(&s, "4915112340002", &["--json", "--key", "k-1"]);
    let j: Value = serde_json::from_str(&ok(&out)).expect("one JSON document");
    assert_eq!(j["verdict"], "ALLOW");
    assert_eq!(j["reason"], Value::Null);
    assert_eq!(j["retry_after_ms"], 0);
    let p = j["permit_id"].as_str().expect("a permit");
    assert_eq!(j["usage"]["unique_recipients_24h"], 2);
    // The same key again: the first ALLOW, counted once.
    let out = send(&s, "4915112340002", &["--json", "--key", "k-1"]);
    let again: Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(again["permit_id"].as_str(), Some(p));
    assert_eq!(again["usage"]["unique_recipients_24h"], 2);

    // Once the pair rate's wait is over, the first recipient goes again.
    s.advance(6 * SEC).await;
    let stdout = ok(&send(&s, TO, &[]));
    assert_eq!(field(&stdout, "verdict"), "ALLOW", "{stdout}");
}

#[tokio::test]
async fn report_prints_the_advice_and_refuses_a_second_report() {
    let s = sidecar_with_acme().await;
    let out = send(&s, TO, &["--json"]);
    let j: Value = serde_json::from_str(&ok(&out)).unwrap();
    let rejected = j["permit_id"].as_str().unwrap().to_owned();
    let out = send(&s, "4915112340002", &["--json"]);
    let j: Value = serde_json::from_str(&ok(&out)).unwrap();
    let sent = j["permit_id"].as_str().unwrap().to_owned();

    // 131049 (per-user marketing limit): retry after the recipient's 24 h back-off.
    let stdout = ok(&report(&s, &[&rejected, "rejected", "--code", "131049"]));
    assert_eq!(field(&stdout, "advice"), "RETRY_AFTER", "{stdout}");
    assert_eq!(field(&stdout, "outcome"), "REJECTED (error 131049)");
    let wait = field(&stdout, "retry_after");
    assert!(wait == "24 h" || wait.starts_with("23 h"), "{stdout}");

    // A send that went: no advice.
    let stdout = ok(&report(&s, &[&sent, "sent"]));
    assert_eq!(field(&stdout, "outcome"), "SENT", "{stdout}");
    assert_eq!(field(&stdout, "advice"), "none");
    assert_eq!(field(&stdout, "retry_after"), "none");

    // Reporting a permit twice: the server's FAILED_PRECONDITION, exit 1.
    for (permit, outcome) in [(&sent, "sent"), (&rejected, "not-sent")] {
        let out = report(&s, &[permit, outcome]);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
        assert!(stdout.is_empty(), "{stdout}");
        assert!(stderr.contains("FailedPrecondition"), "{stderr}");
        assert!(stderr.contains(permit.as_str()), "{stderr}");
    }

    // --json.
    let out = send(&s, "4915112340003", &["--json"]);
    let j: Value = serde_json::from_str(&ok(&out)).unwrap();
    let p = j["permit_id"].as_str().unwrap().to_owned();
    let out = report(&s, &[&p, "rejected", "--code", "131049", "--json"]);
    let j: Value = serde_json::from_str(&ok(&out)).expect("one JSON document");
    assert_eq!(j["advice"], "RETRY_AFTER");
    assert_eq!(j["outcome"], "REJECTED");
    assert_eq!(j["error_code"], 131049);
    let ms = j["retry_after_ms"].as_u64().unwrap();
    assert!((23 * HOUR..=DAY).contains(&ms), "{j}");

    // A code tiergate does not know: no advice, the caller decides.
    let out = send(&s, "4915112340004", &["--json"]);
    let j: Value = serde_json::from_str(&ok(&out)).unwrap();
    let p = j["permit_id"].as_str().unwrap().to_owned();
    let stdout = ok(&report(&s, &[&p, "rejected", "--code", "999999"]));
    assert!(
        field(&stdout, "advice").starts_with("none: tiergate does not know"),
        "{stdout}"
    );
}

#[tokio::test]
async fn bad_input_fails_naming_what_is_wrong() {
    let s = sidecar_with_acme().await;

    // A bad recipient: the server's INVALID_ARGUMENT names the field.
    let out = send(&s, "not-a-phone", &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("InvalidArgument") && stderr.contains("recipient"),
        "{stderr}"
    );

    // An unknown org.
    let out = tiergate(
        &s.grpc,
        &[
            "send",
            "nobody",
            "--phone",
            FIXTURE_PHONE,
            "--to",
            TO,
            "--template",
            "t",
            "--category",
            "utility",
        ],
        &[],
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("NotFound") && stderr.contains("nobody"),
        "{stderr}"
    );

    // Neither --to nor --user-id: clap says so.
    let out = tiergate(
        &s.grpc,
        &[
            "send",
            "acme",
            "--phone",
            FIXTURE_PHONE,
            "--template",
            "t",
            "--category",
            "utility",
        ],
        &[],
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--to"), "{stderr}");

    // `rejected` without --code: clap's error, before any call.
    let out = report(&s, &["p-1", "rejected"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("required") && stderr.contains("--code <N>"),
        "{stderr}"
    );
    // --code with another outcome is refused too.
    let out = report(&s, &["p-1", "sent", "--code", "131049"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--code"), "{stderr}");

    // A permit id that is not one.
    let out = report(&s, &["no-such-permit", "sent"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("InvalidArgument"), "{stderr}");

    // The exit status of a DENY is in --help.
    let out = tiergate(&s.grpc, &["send", "--help"], &[]);
    let help = ok(&out);
    assert!(help.contains("3 when it is denied"), "{help}");
}

#[tokio::test]
async fn send_and_report_carry_the_sender_token() {
    const SENDER: &str = "sender-token-0123456789";
    let s = Sidecar::start_with(
        &[],
        &[
            ("TIERGATE_SENDER_TOKEN", SENDER),
            ("TIERGATE_ADMIN_TOKEN", ADMIN_TOKEN),
        ],
    )
    .await;
    s.put_org(org("acme", pb::Tier::Tier250)).await;
    let out = send(&s, TO, &[]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Unauthenticated"), "{stderr}");
    let args = [
        "send",
        "acme",
        "--phone",
        FIXTURE_PHONE,
        "--to",
        TO,
        "--template",
        "order_update",
        "--category",
        "utility",
        "--json",
    ];
    let env = [("TIERGATE_SENDER_TOKEN", SENDER)];
    let j: Value = serde_json::from_str(&ok(&tiergate(&s.grpc, &args, &env))).unwrap();
    let p = j["permit_id"].as_str().unwrap();
    let out = tiergate(&s.grpc, &["report", p, "sent"], &env);
    assert_eq!(field(&ok(&out), "advice"), "none");
}

/// `--wait 10s`: the server holds the call until the pair rate lets it go (here: until the
/// manual clock is moved past it), and the CLI prints the ALLOW.
#[tokio::test]
async fn send_with_wait_is_held_until_the_send_can_go() {
    let s = sidecar_with_acme().await;
    ok(&send(&s, TO, &[]));
    let (grpc, to) = (s.grpc.clone(), TO.to_owned());
    let waiting = std::thread::spawn(move || {
        let args = [
            "send",
            "acme",
            "--phone",
            FIXTURE_PHONE,
            "--to",
            &to,
            "--template",
            "order_update",
            "--category",
            "utility",
            "--wait",
            "10s",
        ];
        tiergate(&grpc, &args, &[])
    });
    let series = "tiergate_org_waiters{org=\"acme\"} 1";
    for _ in 0..500 {
        if s.metrics().await.contains(series) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(s.metrics().await.contains(series), "the send never waited");
    s.advance(6_000).await;
    let out = waiting.join().unwrap();
    let stdout = ok(&out);
    assert_eq!(field(&stdout, "verdict"), "ALLOW", "{stdout}");
    // A wait that is no duration is a usage error.
    let out = send(&s, TO, &["--wait", "soon"]);
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
}

/// README's first screen, command for command: a tier increase held for an escalation path,
/// 250 recipients allowed and the 251st denied, then the path set and the held tier applied.
#[tokio::test]
async fn the_readmes_first_screen() {
    let s = Sidecar::start(&[]).await;
    let run = |args: &[&str]| tiergate(&s.grpc, args, &[]);
    ok(&run(&[
        "org",
        "put",
        "acme",
        "--tier",
        "250",
        "--phone",
        FIXTURE_PHONE,
        "--history",
    ]));
    let held = ok(&run(&["tier", "request", "acme", "TIER_2K"]));
    assert_eq!(field(&held, "applied"), "false", "{held}");
    assert_eq!(field(&held, "pending_tier"), "TIER_2K", "{held}");
    assert_eq!(
        field(&held, "held_reason"),
        "DENY_REASON_ESCALATION_PATH_REQUIRED"
    );
    let to = |i: u32| format!("4915100{i:06}");
    // `--wait 1s`: a loop of CLI calls can outrun the number's 80 msg/s once its burst is
    // spent (a quiet machine starts a call every few ms); the server then holds a call until
    // its slot opens instead of denying it. The 251st is denied at once: 24 h is past the wait.
    let send = |i: u32| {
        run(&[
            "send",
            "acme",
            "--phone",
            FIXTURE_PHONE,
            "--to",
            &to(i),
            "--template",
            "order_update",
            "--category",
            "utility",
            "--wait",
            "1s",
        ])
    };
    for i in 1..=250 {
        let out = send(i);
        assert_eq!(
            out.status.code(),
            Some(0),
            "recipient {i}: {:?}",
            text(&out)
        );
    }
    let out = send(251);
    assert_eq!(out.status.code(), Some(3), "{:?}", text(&out));
    let (stdout, _) = text(&out);
    assert_eq!(field(&stdout, "reason"), "TIER_LIMIT", "{stdout}");
    assert_eq!(field(&stdout, "retry_after"), "24 h", "{stdout}");
    assert_eq!(field(&stdout, "unique_recipients_24h"), "250", "{stdout}");
    ok(&run(&[
        "escalation",
        "set",
        "acme",
        "email",
        "help@example.com",
    ]));
    let stdout = ok(&send(251));
    assert_eq!(field(&stdout, "verdict"), "ALLOW", "{stdout}");
    assert_eq!(field(&stdout, "tier"), "TIER_2K", "{stdout}");
    assert_eq!(field(&stdout, "permit_id"), "acme:250", "{stdout}");
    let stdout = ok(&run(&[
        "report", "acme:250", "rejected", "--code", "131049",
    ]));
    assert!(stdout.contains("RETRY_AFTER"), "{stdout}");
}
