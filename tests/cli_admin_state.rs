//! `tiergate account`, `marketing-api` and `template` through the real binary against a real
//! sidecar: each changes the org as GetOrg shows and as Acquire decides, prints the org (table
//! and `--json`), and an unknown org is NotFound.

mod support;

use std::process::{Command, Output, Stdio};

use serde_json::Value;
use support::*;
use tiergate_proto::v1 as pb;

/// `tiergate ARGS` against the sidecar at `addr`, with the admin token.
fn tiergate(addr: &str, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("TIERGATE_ADDR", addr)
        .env("TIERGATE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env_remove("TIERGATE_SENDER_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run tiergate")
}

/// Runs `args`, expects success, and returns standard output.
fn ok(s: &Sidecar, args: &[&str]) -> String {
    let out = tiergate(&s.grpc, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?}\n{stdout}\n{stderr}");
    stdout
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

fn send(org: &str, recipient: u64, template: &str, category: pb::Category) -> pb::AcquireRequest {
    pb::AcquireRequest {
        template_name: template.into(),
        category: category as i32,
        ..acquire(org, recipient)
    }
}

async fn sidecar() -> Sidecar {
    let s = Sidecar::start_with(
        &["--manual-clock"],
        &[("TIERGATE_ADMIN_TOKEN", ADMIN_TOKEN)],
    )
    .await;
    s.put_org(org("acme", pb::Tier::Tier250)).await;
    s
}

#[tokio::test]
async fn account_restrict_and_unrestrict() {
    let s = sidecar().await;
    let out = ok(&s, &["account", "restrict", "acme"]);
    assert_eq!(field(&out, "org_id"), "acme", "{out}");
    assert_eq!(field(&out, "account_restricted"), "true", "{out}");
    assert!(s.get_org("acme").await.account_restricted);
    let r = s.acquire("acme", 4915112340001).await;
    assert_eq!(reason(&r), pb::DenyReason::AccountRestricted, "{r:?}");

    let out = ok(&s, &["account", "unrestrict", "acme", "--json"]);
    let j: Value = serde_json::from_str(&out).expect("one JSON document");
    assert_eq!(j["org_id"], "acme");
    assert_eq!(j["account_restricted"], false);
    assert!(!s.get_org("acme").await.account_restricted);
    assert!(allowed(&s.acquire("acme", 4915112340001).await));
}

#[tokio::test]
async fn marketing_api_require_and_clear() {
    let s = sidecar().await;
    let out = ok(&s, &["marketing-api", "require", "acme"]);
    assert_eq!(field(&out, "marketing_api_required"), "true", "{out}");
    assert!(s.get_org("acme").await.marketing_api_required);
    let r = s
        .acquire_req(send(
            "acme",
            4915112340001,
            "promo",
            pb::Category::Marketing,
        ))
        .await;
    assert_eq!(reason(&r), pb::DenyReason::MarketingApiRequired, "{r:?}");
    // Only MARKETING is held.
    assert!(allowed(&s.acquire("acme", 4915112340002).await));

    let out = ok(&s, &["marketing-api", "clear", "acme", "--json"]);
    let j: Value = serde_json::from_str(&out).expect("one JSON document");
    assert_eq!(j["marketing_api_required"], false);
    assert!(!s.get_org("acme").await.marketing_api_required);
    let r = s
        .acquire_req(send(
            "acme",
            4915112340001,
            "promo",
            pb::Category::Marketing,
        ))
        .await;
    assert!(allowed(&r), "{r:?}");
}

#[tokio::test]
async fn template_pause_disable_and_reinstate() {
    let s = sidecar().await;
    let promo = |n| send("acme", n, "promo", pb::Category::Marketing);

    // Without --until: disabled until reinstated, however much time passes.
    let out = ok(&s, &["template", "pause", "acme", "promo"]);
    assert_eq!(field(&out, "paused_templates"), "promo (disabled)", "{out}");
    let p = s.get_org("acme").await.paused_templates;
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].disabled && p[0].template_name == "promo", "{p:?}");
    let r = s.acquire_req(promo(4915112340001)).await;
    assert_eq!(reason(&r), pb::DenyReason::TemplatePaused, "{r:?}");
    assert!(
        allowed(&s.acquire("acme", 4915112340002).await),
        "other templates go"
    );
    s.advance(30 * DAY).await;
    let r = s.acquire_req(promo(4915112340001)).await;
    assert_eq!(reason(&r), pb::DenyReason::TemplatePaused, "{r:?}");

    let out = ok(&s, &["template", "reinstate", "acme", "promo"]);
    assert_eq!(field(&out, "paused_templates"), "none", "{out}");
    assert!(s.get_org("acme").await.paused_templates.is_empty());
    assert!(allowed(&s.acquire_req(promo(4915112340001)).await));

    // --until, on the server's (manual) clock, as Unix ms and as RFC 3339.
    let now = s.advance(0).await;
    let until = now + 3 * 3_600_000;
    let out = ok(
        &s,
        &[
            "template",
            "pause",
            "acme",
            "promo",
            "--until",
            &until.to_string(),
            "--json",
        ],
    );
    let j: Value = serde_json::from_str(&out).expect("one JSON document");
    assert_eq!(j["paused_templates"][0]["template_name"], "promo", "{j}");
    assert_eq!(j["paused_templates"][0]["until_unix_ms"], until, "{j}");
    assert_eq!(j["paused_templates"][0]["disabled"], false, "{j}");
    let p = s.get_org("acme").await.paused_templates;
    assert_eq!((p[0].until_unix_ms, p[0].disabled), (until, false), "{p:?}");
    let r = s.acquire_req(promo(4915112340003)).await;
    assert_eq!(reason(&r), pb::DenyReason::TemplatePaused, "{r:?}");
    s.advance(3 * 3_600_000).await;
    assert!(allowed(&s.acquire_req(promo(4915112340003)).await));

    let out = ok(
        &s,
        &[
            "template",
            "pause",
            "acme",
            "promo",
            "--until",
            "2100-01-01T01:00:00+01:00",
        ],
    );
    assert_eq!(
        field(&out, "paused_templates"),
        "promo (until 2100-01-01T00:00:00.000Z)",
        "{out}"
    );
    assert_eq!(
        s.get_org("acme").await.paused_templates[0].until_unix_ms,
        4_102_444_800_000
    );
    let out = tiergate(
        &s.grpc,
        &["template", "pause", "acme", "promo", "--until", "3h"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--until \"3h\""));
}

#[tokio::test]
async fn an_unknown_org_is_not_found() {
    let s = sidecar().await;
    for args in [
        &["account", "restrict", "nobody"][..],
        &["account", "unrestrict", "nobody"],
        &["marketing-api", "require", "nobody"],
        &["marketing-api", "clear", "nobody"],
        &["template", "pause", "nobody", "promo"],
        &[
            "template",
            "pause",
            "nobody",
            "promo",
            "--until",
            "1795680368123",
        ],
        &["template", "reinstate", "nobody", "promo"],
    ] {
        let out = tiergate(&s.grpc, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(
            stderr.contains("NotFound") && stderr.contains("nobody"),
            "{args:?}: {stderr}"
        );
    }
}
