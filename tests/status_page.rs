//! The operators' status page (`GET /`, `GET /orgs/{id}`) in a real headless Chromium: the
//! binary is driven into known states (an org at its limit, a RED org in grace, a tier held for
//! an escalation path, a paused template, hostile text in an appeal), the page is loaded and the
//! DOM Chromium rendered is checked; screenshots go next to the test output
//! (`target/tmp/status-*.png`). Plus the page's token (HTTP Basic) over plain HTTP.
//!
//! Chromium: `TIERGATE_CHROMIUM` or `chromium` on the PATH (`.ci/run` installs Debian's and sets
//! `TIERGATE_REQUIRE_CHROMIUM=1`, so in CI a missing browser fails instead of skipping).

mod support;

use std::process::Command;

use base64::Engine as _;
use support::*;
use tiergate_proto::v1 as pb;

fn chromium() -> Option<String> {
    let candidates = std::env::var("TIERGATE_CHROMIUM")
        .map(|c| vec![c])
        .unwrap_or_else(|_| vec!["chromium".into(), "chromium-browser".into()]);
    for c in candidates {
        if Command::new(&c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Some(c);
        }
    }
    assert!(
        std::env::var("TIERGATE_REQUIRE_CHROMIUM").is_err(),
        "no Chromium found and TIERGATE_REQUIRE_CHROMIUM is set"
    );
    eprintln!("skipped: no chromium (set TIERGATE_CHROMIUM)");
    None
}

/// Chromium's headless run on `url` with `args` (`--dump-dom`, `--screenshot=…`): its stdout.
fn headless(browser: &str, args: &[&str], url: &str) -> String {
    let profile = tempdir("chromium-profile");
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            &format!("--user-data-dir={}", profile.display()),
        ])
        .args(args)
        .arg(url)
        .output()
        .expect("chromium runs");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn send(org_id: &str, phone: &str, recipient: u64) -> pb::AcquireRequest {
    pb::AcquireRequest {
        org_id: org_id.into(),
        phone_number_id: phone.into(),
        ..acquire(org_id, recipient)
    }
}

/// The `<tr>` of `org_id` in the rendered table.
fn row<'a>(dom: &'a str, org_id: &str) -> &'a str {
    let start = dom
        .find(&format!(r#"<tr data-org="{org_id}">"#))
        .unwrap_or_else(|| panic!("no row for {org_id} in {dom}"));
    let end = dom[start..].find("</tr>").unwrap() + start;
    &dom[start..end]
}

#[tokio::test]
async fn the_status_page_in_a_real_browser() {
    let Some(browser) = chromium() else {
        return;
    };
    let s = Sidecar::start(&["--manual-clock", "--set", "policy.auto_upgrade=false"]).await;
    let admin = || s.admin();
    // RED for two days of its seven-day grace, with hostile text in its appeal.
    s.put_org(org_on("redorg", pb::Tier::Tier250, "802")).await;
    admin()
        .set_quality_rating(s.req(pb::SetQualityRatingRequest {
            org_id: "redorg".into(),
            rating: pb::QualityRating::Red as i32,
        }))
        .await
        .unwrap();
    admin()
        .file_appeal(s.req(pb::FileAppealRequest {
            org_id: "redorg".into(),
            evidence: "<script>document.title='owned'</script><b>bold</b>".into(),
        }))
        .await
        .unwrap();
    // A tier increase held: no escalation path.
    let mut held = org_on("held", pb::Tier::Tier250, "803");
    held.escalation_path = None;
    s.put_org(held).await;
    admin()
        .request_tier_change(s.req(pb::RequestTierChangeRequest {
            org_id: "held".into(),
            target_tier: pb::Tier::Tier2k as i32,
        }))
        .await
        .unwrap();
    // A template paused for three hours (from after the clock moves).
    s.put_org(org_on("paused", pb::Tier::Tier1k, "804")).await;
    let now = s.advance(2 * DAY).await;
    // At its limit: TIER_50 full, and one more refused.
    s.put_org(org_on("full", pb::Tier::Tier50, "801")).await;
    let sends = (0..50).map(|r| send("full", "801", 5_000 + r)).collect();
    let r = s
        .governor()
        .acquire_batch(pb::AcquireBatchRequest { sends })
        .await
        .unwrap()
        .into_inner();
    assert!(r.results.iter().all(allowed));
    assert_eq!(
        reason(&s.acquire_req(send("full", "801", 9_999)).await),
        pb::DenyReason::TierLimit
    );
    admin()
        .pause_template(s.req(pb::PauseTemplateRequest {
            org_id: "paused".into(),
            template_name: "promo".into(),
            until_unix_ms: now + 3 * HOUR as i64,
        }))
        .await
        .unwrap();

    let base = format!("http://{}", s.http);
    let dom = headless(&browser, &["--dump-dom"], &format!("{base}/"));
    assert!(dom.contains("<title>tiergate status</title>"), "{dom}");
    assert!(dom.contains("4 orgs"), "{dom}");
    let full = row(&dom, "full");
    assert!(full.contains("50 / 50 (100 %)"), "{full}");
    assert!(
        full.contains(r#"class="full""#),
        "the bar shows full: {full}"
    );
    assert!(full.contains(">1<"), "one denial counted: {full}");
    let red = row(&dom, "redorg");
    assert!(red.contains(">RED<"), "{red}");
    assert!(red.contains("restricted in 5 d 0 h"), "{red}");
    let held = row(&dom, "held");
    assert!(held.contains("TIER_2K held: no escalation path"), "{held}");
    let paused = row(&dom, "paused");
    assert!(
        paused.contains("template promo paused 3 h 0 min"),
        "{paused}"
    );
    // The fullest first by default; by name on request.
    let order = |dom: &str| -> Vec<String> {
        dom.match_indices("<tr data-org=\"")
            .map(|(i, m)| {
                let rest = &dom[i + m.len()..];
                rest[..rest.find('"').unwrap()].to_owned()
            })
            .collect()
    };
    assert_eq!(order(&dom)[0], "full");
    let by_name = headless(&browser, &["--dump-dom"], &format!("{base}/?sort=org"));
    assert_eq!(order(&by_name), ["full", "held", "paused", "redorg"]);

    // One org's page: details, the appeal's text as text, and the chart.
    let page = headless(&browser, &["--dump-dom"], &format!("{base}/orgs/redorg"));
    assert!(
        page.contains("&lt;script&gt;document.title='owned'&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt;"),
        "{page}"
    );
    assert!(!page.contains("<script"), "no script element: {page}");
    assert!(!page.contains("<b>bold"), "no markup from input: {page}");
    assert!(page.contains("<title>tiergate · redorg</title>"), "{page}");
    let chart = headless(&browser, &["--dump-dom"], &format!("{base}/orgs/full"));
    assert!(chart.contains("<svg"), "{chart}");
    assert!(
        chart.contains(r#"data-reason="TIER_LIMIT" data-count="1""#),
        "{chart}"
    );
    assert!(
        chart.contains(r#"class="fill-point" data-fill="50""#),
        "{chart}"
    );
    assert!(chart.contains("limit 50"), "{chart}");
    let missing = headless(&browser, &["--dump-dom"], &format!("{base}/orgs/nobody"));
    assert!(missing.contains("no such org"), "{missing}");

    // Screenshots next to the test output.
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    for (name, path, size) in [
        ("status-index.png", "/", "1700,330"),
        ("status-org.png", "/orgs/full", "900,790"),
    ] {
        let file = dir.join(name);
        headless(
            &browser,
            &[
                &format!("--screenshot={}", file.display()),
                &format!("--window-size={size}"),
            ],
            &format!("{base}{path}"),
        );
        let png = std::fs::read(&file).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{name} is a PNG");
        eprintln!("screenshot: {}", file.display());
    }
}

/// With an admin token set, the pages ask for it (HTTP Basic, the token as the password) and
/// answer nothing else without it.
#[tokio::test]
async fn the_status_page_needs_the_admin_token_when_one_is_set() {
    let s = Sidecar::start_with(&[], &[("TIERGATE_ADMIN_TOKEN", ADMIN_TOKEN)]).await;
    s.put_org(org_on("acme", pb::Tier::Tier250, "805")).await;
    let get = |auth: Option<String>, path: &'static str| {
        let addr = s.http.clone();
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
            c.write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
            let mut out = String::new();
            c.read_to_string(&mut out).await.unwrap();
            out
        }
    };
    let basic = |user_pass: &str| {
        Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        ))
    };
    let none = get(None, "/").await;
    assert!(none.starts_with("HTTP/1.1 401"), "{none}");
    assert!(
        none.to_lowercase().contains("www-authenticate: basic"),
        "{none}"
    );
    assert!(!none.contains("acme"), "{none}");
    for wrong in [
        basic("admin:nope"),
        basic(ADMIN_TOKEN),
        Some(format!("Bearer {ADMIN_TOKEN}")),
        Some("Basic %%%".into()),
        Some(format!("Basic {}", "A".repeat(5_000))),
    ] {
        let r = get(wrong.clone(), "/orgs/acme").await;
        assert!(r.starts_with("HTTP/1.1 401"), "{wrong:?}: {r}");
    }
    let ok = get(basic(&format!("ops:{ADMIN_TOKEN}")), "/").await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(ok.contains(r#"<tr data-org="acme">"#), "{ok}");
    let ok = get(basic(&format!(":{ADMIN_TOKEN}")), "/orgs/acme").await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    // The probes stay open.
    assert!(get(None, "/healthz").await.starts_with("HTTP/1.1 200"));
}
