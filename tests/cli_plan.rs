//! `tiergate plan` through the real binary against a real sidecar: the table, `--json`,
//! `--recipients FILE` (and `-`), `--plot`, the sender token, and the errors a user meets.

mod support;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use support::*;
use tiergate_proto::v1 as pb;

/// `tiergate ARGS` against the sidecar at `addr`, with `env` and no tokens otherwise.
fn tiergate(addr: &str, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env("TIERGATE_ADDR", addr)
        .env_remove("TIERGATE_ADMIN_TOKEN")
        .env_remove("TIERGATE_SENDER_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn tiergate");
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The plan of `org` (MARKETING, template `promo`) with `more` arguments.
fn plan(s: &Sidecar, org: &str, more: &[&str]) -> Output {
    plan_env(s, org, more, &[], None)
}

fn plan_env(
    s: &Sidecar,
    org: &str,
    more: &[&str],
    env: &[(&str, &str)],
    stdin: Option<&str>,
) -> Output {
    let mut args = vec![
        "plan",
        org,
        "--phone",
        FIXTURE_PHONE,
        "--template",
        "promo",
        "--category",
        "marketing",
    ];
    args.extend_from_slice(more);
    tiergate(&s.grpc, &args, env, stdin)
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tiergate-cli-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// The value of a `key  value` line of the table.
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

async fn sidecar_with_acme() -> Sidecar {
    let s = Sidecar::start(&[]).await;
    s.put_org(org("acme", pb::Tier::Tier250)).await;
    s
}

#[tokio::test]
async fn audience_300_on_tier_250_table_json_and_plot() {
    let s = sidecar_with_acme().await;

    // The table.
    let out = plan(&s, "acme", &["--audience", "300"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(field(&stdout, "allowed_now"), "250", "{stdout}");
    assert_eq!(field(&stdout, "binding"), "TIER_LIMIT", "{stdout}");
    assert_eq!(field(&stdout, "audience"), "300 new recipients");
    assert_eq!(field(&stdout, "template"), "promo (MARKETING)");
    assert_eq!(field(&stdout, "already_counted"), "0");
    assert_eq!(field(&stdout, "never"), "0");
    assert_eq!(field(&stdout, "unplanned"), "0");
    assert_eq!(field(&stdout, "waves"), "2");
    assert!(
        field(&stdout, "completes_at").ends_with("Z (+1d)"),
        "{stdout}"
    );
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("WAVE"))
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{stdout}");
    assert_eq!(rows[0][0], "1");
    assert!(
        rows[0][1].ends_with('Z') && rows[0][1].contains('T'),
        "{stdout}"
    );
    assert_eq!(rows[0][2..], ["now", "250", "250"]);
    assert_eq!(rows[1][2..], ["+1d", "50", "300"]);

    // JSON, with the proto's field names.
    let out = plan(&s, "acme", &["--audience", "300", "--json"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let j: Value = serde_json::from_str(&stdout).expect("one JSON document");
    assert_eq!(j["allowed_now"], 250);
    assert_eq!(j["binding"], "TIER_LIMIT");
    assert_eq!(j["unplanned"], 0);
    assert_eq!(j["already_counted"], 0);
    assert_eq!(j["never"], 0);
    let waves = j["waves"].as_array().unwrap();
    assert_eq!(waves.len(), 2, "{j}");
    assert_eq!(
        (waves[0]["count"].as_u64(), waves[1]["count"].as_u64()),
        (Some(250), Some(50))
    );
    let at = |i: usize| waves[i]["at_unix_ms"].as_i64().unwrap();
    assert_eq!(at(1) - at(0), DAY as i64);
    assert_eq!(j["completes_at_unix_ms"].as_i64(), Some(at(1)));

    // The plot: an SVG with the tier limit (GetOrg needs no token on this sidecar).
    let svg = tmp("acme.svg");
    let out = plan(
        &s,
        "acme",
        &["--audience", "300", "--plot", svg.to_str().unwrap()],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("plot of 2 waves written to"), "{stdout}");
    let body = std::fs::read_to_string(&svg).expect("the SVG was written");
    assert!(body.starts_with("<svg"), "{}", &body[..200.min(body.len())]);
    assert!(body.contains("tiergate plan: org acme"));
    assert!(body.contains("effective tier limit"));
    assert!(stderr.is_empty(), "{stderr}");

    // With --json and --plot, standard output is still one JSON document.
    let svg2 = tmp("acme-json.svg");
    let out = plan(
        &s,
        "acme",
        &[
            "--audience",
            "300",
            "--json",
            "--plot",
            svg2.to_str().unwrap(),
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    serde_json::from_str::<Value>(&stdout).expect("one JSON document");
    assert!(std::fs::read_to_string(&svg2).unwrap().starts_with("<svg"));
}

#[tokio::test]
async fn a_recipient_list_from_a_file_and_from_stdin() {
    let s = Sidecar::start(&["--manual-clock"]).await;
    s.put_org(org("acme", pb::Tier::Tier250)).await;
    // One of the list is already in the window: it costs no new slot, but was just sent to.
    assert!(allowed(&s.acquire("acme", 4915112340002).await));
    let file = tmp("list.txt");
    std::fs::write(
        &file,
        "# campaign list\n4915112340001\n\n4915112340002\n  4915112340003  \n",
    )
    .unwrap();
    let f = file.to_str().unwrap();

    // Right after that send, the pair rate holds line 4 (and, in list order, what follows).
    let out = plan(&s, "acme", &["--recipients", f]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(field(&stdout, "audience"), format!("3 recipients from {f}"));
    assert_eq!(field(&stdout, "allowed_now"), "1", "{stdout}");
    assert_eq!(field(&stdout, "binding"), "PAIR_RATE", "{stdout}");
    assert_eq!(field(&stdout, "already_counted"), "1");

    // A minute later everything goes now.
    s.advance(60 * SEC).await;
    let out = plan(&s, "acme", &["--recipients", f]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(field(&stdout, "allowed_now"), "3", "{stdout}");
    assert_eq!(field(&stdout, "already_counted"), "1");
    assert_eq!(field(&stdout, "binding"), "none (everything goes now)");
    assert!(
        field(&stdout, "completes_at").ends_with("(now)"),
        "{stdout}"
    );

    let out = plan(&s, "acme", &["--recipients", f, "--json"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let j: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(j["allowed_now"], 3);
    assert_eq!(j["already_counted"], 1);
    assert_eq!(j["binding"], Value::Null);
    assert_eq!(j["waves"].as_array().unwrap().len(), 1);
    assert_eq!(j["never_lines"], serde_json::json!([]));

    // `-` reads standard input.
    let out = plan_env(
        &s,
        "acme",
        &["--recipients", "-", "--json"],
        &[],
        Some("4915112340001\n4915112340009\n"),
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let j: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(j["allowed_now"], 2);
}

#[tokio::test]
async fn bad_input_fails_naming_what_is_wrong() {
    let s = sidecar_with_acme().await;

    // Both, or neither, of --audience and --recipients: clap says so before any call.
    let out = plan(&s, "acme", &["--audience", "3", "--recipients", "x.txt"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--audience") && stderr.contains("--recipients"),
        "{stderr}"
    );
    assert!(stderr.contains("cannot be used with"), "{stderr}");
    let out = plan(&s, "acme", &[]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("required") && stderr.contains("--audience <N>|--recipients <FILE>"),
        "{stderr}"
    );
    let out = plan(&s, "acme", &["--audience", "0"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--audience"), "{stderr}");

    // An unknown org: the server's NOT_FOUND, printed like the other subcommands print errors.
    let out = plan(&s, "nobody", &["--audience", "3"]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("NotFound") && stderr.contains("nobody"),
        "{stderr}"
    );

    // A bad recipient: the server names recipients[1], the CLI adds its line in the file.
    let file = tmp("bad.txt");
    std::fs::write(&file, "4915112340001\n# a comment\nnot-a-phone\n").unwrap();
    let f = file.to_str().unwrap();
    let out = plan(&s, "acme", &["--recipients", f]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("InvalidArgument") && stderr.contains("recipients[1]"),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("line 3 of {f}")), "{stderr}");

    // A file that cannot be read is named.
    let missing = tmp("missing.txt");
    let m = missing.to_str().unwrap();
    let out = plan(&s, "acme", &["--recipients", m]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains(m), "{stderr}");

    // A file with only comments and blank lines.
    let empty = tmp("empty.txt");
    std::fs::write(&empty, "# nothing yet\n\n").unwrap();
    let e = empty.to_str().unwrap();
    let out = plan(&s, "acme", &["--recipients", e]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains(e) && stderr.contains("no recipients"),
        "{stderr}"
    );
}

#[tokio::test]
async fn plan_carries_the_sender_token() {
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
    let out = plan(&s, "acme", &["--audience", "10"]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("Unauthenticated"), "{stderr}");
    let sender = [("TIERGATE_SENDER_TOKEN", SENDER)];
    let out = plan_env(&s, "acme", &["--audience", "10"], &sender, None);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(field(&stdout, "allowed_now"), "10");

    // --plot reads the tier limit with GetOrg, an admin call: without the admin token the plot
    // is drawn without the limit, and says so.
    let svg = tmp("no-admin.svg");
    let args = ["--audience", "10", "--plot", svg.to_str().unwrap()];
    let out = plan_env(&s, "acme", &args, &sender, None);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("tier limit is left off") && stderr.contains("Unauthenticated"),
        "{stderr}"
    );
    let body = std::fs::read_to_string(&svg).unwrap();
    assert!(body.starts_with("<svg") && !body.contains("effective tier limit"));
    let both = [
        ("TIERGATE_SENDER_TOKEN", SENDER),
        ("TIERGATE_ADMIN_TOKEN", ADMIN_TOKEN),
    ];
    let out = plan_env(&s, "acme", &args, &both, None);
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success() && stderr.is_empty(),
        "{stdout}\n{stderr}"
    );
    assert!(
        std::fs::read_to_string(&svg)
            .unwrap()
            .contains("effective tier limit")
    );
}

#[tokio::test]
async fn many_waves_are_elided_in_the_middle() {
    let s = Sidecar::start(&[]).await;
    let mut slow = org("slow", pb::Tier::Tier250);
    slow.phone_numbers[0].throughput_mps = 1;
    s.put_org(slow).await;
    let out = plan(&s, "slow", &["--audience", "50"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(field(&stdout, "binding"), "THROUGHPUT");
    let waves: usize = field(&stdout, "waves").parse().unwrap();
    assert!(waves > 40, "{stdout}");
    let rows: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("WAVE"))
        .skip(1)
        .collect();
    assert_eq!(rows.len(), 20 + 1 + 10, "{stdout}");
    assert_eq!(rows[20].trim(), format!("… {} more waves", waves - 30));
    // The last row's cumulative count is the whole audience.
    assert_eq!(rows[30].split_whitespace().last(), Some("50"), "{stdout}");
}
