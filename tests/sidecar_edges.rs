//! The sidecar's edges: bad input, unknown ids, auth, health, reflection, config, shutdown.

mod support;

use std::process::Command;

use support::*;
use tiergate_proto::v1 as pb;
use tonic::Code;

#[tokio::test]
async fn malformed_requests_are_invalid_argument_with_the_field() {
    let s = Sidecar::start(&["--manual-clock"]).await;
    s.put_org(org("acme", pb::Tier::Tier250)).await;
    let base = acquire("acme", 1);
    let cases: Vec<(pb::AcquireRequest, &str)> = vec![
        (
            pb::AcquireRequest {
                org_id: String::new(),
                ..base.clone()
            },
            "org_id",
        ),
        (
            pb::AcquireRequest {
                phone_number_id: String::new(),
                ..base.clone()
            },
            "phone_number_id",
        ),
        (
            pb::AcquireRequest {
                recipient: "+49 151".into(),
                ..base.clone()
            },
            "recipient",
        ),
        (
            pb::AcquireRequest {
                recipient: "1234567890123456".into(),
                ..base.clone()
            },
            "recipient",
        ),
        (
            pb::AcquireRequest {
                template_name: "Bad Name".into(),
                ..base.clone()
            },
            "template_name",
        ),
        (
            pb::AcquireRequest {
                category: 0,
                ..base.clone()
            },
            "category",
        ),
        (
            pb::AcquireRequest {
                category: 99,
                ..base.clone()
            },
            "category",
        ),
    ];
    for (req, field) in cases {
        let e = s.governor().acquire(req).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{field}: {e:?}");
        assert!(e.message().starts_with(field), "{field}: {}", e.message());
    }
    // admin: bad contact, UNSPECIFIED tier, unknown enum
    let e = s
        .admin()
        .set_escalation_path(s.req(pb::SetEscalationPathRequest {
            org_id: "acme".into(),
            path: Some(pb::EscalationPath {
                kind: pb::EscalationKind::Phone as i32,
                contact: "call us".into(),
            }),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("path.contact"), "{}", e.message());
    let e = s
        .admin()
        .request_tier_change(s.req(pb::RequestTierChangeRequest {
            org_id: "acme".into(),
            target_tier: pb::Tier::Unspecified as i32,
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("target_tier"));
    let e = s
        .admin()
        .set_quality_rating(s.req(pb::SetQualityRatingRequest {
            org_id: "acme".into(),
            rating: 42,
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let mut bad = org("acme", pb::Tier::Tier2k);
    bad.phone_numbers[0].phone_number_id = "12ab".into();
    let e = s
        .admin()
        .put_org(s.req(pb::PutOrgRequest { org: Some(bad) }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    // nothing changed
    let o = s.get_org("acme").await;
    assert_eq!(o.tier, pb::Tier::Tier250 as i32);
    assert!(o.escalation_path.is_some());
    assert_eq!(o.quality_rating, pb::QualityRating::Unknown as i32);
}

#[tokio::test]
async fn unknown_org_or_number_is_not_found() {
    let s = Sidecar::start(&[]).await;
    s.put_org(org("acme", pb::Tier::Tier250)).await;
    let e = s.governor().acquire(acquire("ghost", 1)).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let mut req = acquire("acme", 1);
    req.phone_number_id = "999".into();
    assert_eq!(
        s.governor().acquire(req).await.unwrap_err().code(),
        Code::NotFound
    );
    let e = s
        .admin()
        .get_org(s.req(pb::GetOrgRequest {
            org_id: "ghost".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let list = s
        .admin()
        .list_orgs(s.req(pb::ListOrgsRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.orgs.len(), 1, "unknown ids created nothing");
}

#[tokio::test]
async fn advance_clock_needs_manual_clock() {
    let s = Sidecar::start(&[]).await;
    let e = s
        .admin()
        .advance_clock(s.req(pb::AdvanceClockRequest { millis: 1 }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn admin_needs_the_bearer_token() {
    let s = Sidecar::start_with(&[], &[("TIERGATE_ADMIN_TOKEN", ADMIN_TOKEN)]).await;
    let o = org("acme", pb::Tier::Tier250);
    let e = s
        .admin()
        .put_org(pb::PutOrgRequest {
            org: Some(o.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let mut wrong = tonic::Request::new(pb::PutOrgRequest {
        org: Some(o.clone()),
    });
    wrong.metadata_mut().insert(
        "authorization",
        "Bearer not-the-token-000000".parse().unwrap(),
    );
    assert_eq!(
        s.admin().put_org(wrong).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    // the rejected calls changed nothing
    let e = s
        .admin()
        .get_org(s.req(pb::GetOrgRequest {
            org_id: "acme".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    s.put_org(o).await;
    // senders need no token unless one is configured
    assert!(allowed(&s.acquire("acme", 1).await));
}

#[tokio::test]
async fn sender_token_guards_send_governor() {
    let s = Sidecar::start_with(&[], &[("TIERGATE_SENDER_TOKEN", "sender-token-0123456789")]).await;
    s.put_org(org("acme", pb::Tier::Tier250)).await;
    let e = s.governor().acquire(acquire("acme", 1)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let mut r = tonic::Request::new(acquire("acme", 1));
    r.metadata_mut().insert(
        "authorization",
        "Bearer sender-token-0123456789".parse().unwrap(),
    );
    assert!(allowed(
        &s.governor().acquire(r).await.unwrap().into_inner()
    ));
}

#[tokio::test]
async fn an_oversized_request_is_resource_exhausted_with_the_limit() {
    let s = Sidecar::start(&["--set", "server.max_request_bytes=1024"]).await;
    s.put_org(org("acme", pb::Tier::Tier250)).await;
    let mut big = acquire("acme", 1);
    big.template_name = "x".repeat(2_000);
    let e = s.governor().acquire(big.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().starts_with("request of "), "{}", e.message());
    assert!(
        e.message().contains("the limit is 1024 bytes"),
        "{}",
        e.message()
    );
    assert!(e.message().contains("server.max_request_bytes"));
    // the admin service has the same limit, and says so the same way
    let mut o = org("big", pb::Tier::Tier250);
    o.waba_ids = vec!["1".repeat(15); 100];
    let e = s
        .admin()
        .put_org(s.req(pb::PutOrgRequest { org: Some(o) }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("1024 bytes"), "{}", e.message());
    // a request within the limit is decided as before, on the same connection
    big.template_name = "order_update".into();
    assert!(allowed(&s.acquire_req(big).await));
    assert_eq!(
        s.get_org("acme").await.usage.unwrap().templates_7d,
        1,
        "nothing of the oversized request was recorded"
    );
}

#[tokio::test]
async fn health_and_reflection() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let s = Sidecar::start(&[]).await;
    let mut health = HealthClient::new(s.channel());
    for service in ["", "tiergate.v1.SendGovernor", "tiergate.v1.GovernorAdmin"] {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{service:?}");
    }
    let mut refl = ServerReflectionClient::new(s.channel());
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = refl
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected {resp:?}");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for want in [
        "tiergate.v1.SendGovernor",
        "tiergate.v1.GovernorAdmin",
        "grpc.health.v1.Health",
    ] {
        assert!(names.contains(&want), "{names:?}");
    }
    // HTTP probes and metrics
    s.put_org(org("acme", pb::Tier::Tier250)).await;
    assert!(allowed(&s.acquire("acme", 1).await));
    let m = http_get(&s.http, "/metrics").await;
    assert!(
        m.contains(r#"tiergate_decisions_total{verdict="allow",reason="none"} 1"#),
        "{m}"
    );
    assert!(m.contains("tiergate_decision_seconds_count 1"), "{m}");
    assert!(
        m.contains(r#"tiergate_org_window_fill{org="acme"} 1"#),
        "{m}"
    );
    let body = http_get(&s.http, "/healthz").await;
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    let body = http_get(&s.http, "/readyz").await;
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
}

#[tokio::test]
async fn sigterm_shuts_down_cleanly() {
    let s = Sidecar::start(&[]).await;
    s.put_org(org("acme", pb::Tier::Tier250)).await;
    let st = s.terminate().await;
    assert!(st.success(), "{st:?}");
}

#[test]
fn refuses_admin_on_a_public_address_without_a_token() {
    let out = Command::new(bin())
        .args([
            "serve",
            "--store",
            "memory",
            "--grpc-addr",
            "0.0.0.0:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .env_remove("TIERGATE_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TIERGATE_ADMIN_TOKEN"), "{err}");
}

#[test]
fn check_config_reports_every_error_with_key_and_line() {
    let dir = std::env::temp_dir().join(format!("tiergate-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[policy]\npair_rate_burst = 0\n\n[[orgs]]\norg_id = \"acme\"\ntier = \"TIER_250\"\nphone_numbers = [{ phone_number_id = \"12x\" }]\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["check-config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("line 2: policy.pair_rate_burst"), "{text}");
    assert!(
        text.contains("line 4: orgs[0].phone_numbers.phone_number_id"),
        "{text}"
    );
    // the same file never starts a server
    let out = Command::new(bin())
        .args([
            "serve",
            "--store",
            "memory",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--config",
        ])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "it must not have started listening");
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        "[server]\ngrpc_addr = \"127.0.0.1:0\"\n\n[[orgs]]\norg_id = \"acme\"\ntier = 2000\nphone_numbers = [{ phone_number_id = \"106540352242922\", throughput_mps = 80 }]\nescalation_path = { kind = \"EMAIL\", contact = \"help@example.com\" }\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["check-config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// An environment variable that is not UTF-8 (an operator's, unrelated to tiergate) is read
/// lossily, not a panic; one of tiergate's own is then a config error with its name.
#[cfg(unix)]
#[test]
fn an_environment_that_is_not_utf8_is_no_panic() {
    use std::os::unix::ffi::OsStrExt;
    let dir = std::env::temp_dir().join(format!("tiergate-cfg-env-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.toml");
    std::fs::write(&good, "[server]\ngrpc_addr = \"127.0.0.1:0\"\n").unwrap();
    let odd = std::ffi::OsStr::from_bytes(b"caf\xe9");
    let out = Command::new(bin())
        .args(["check-config"])
        .arg(&good)
        .env("SOME_OPERATOR_VARIABLE", odd)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(bin())
        .args(["check-config"])
        .arg(&good)
        .env("TIERGATE_SERVER_MAX_BATCH", odd)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("server.max_batch"), "{text}");
}

#[tokio::test]
async fn config_file_orgs_are_served() {
    let dir = std::env::temp_dir().join(format!("tiergate-cfg2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("t.toml");
    std::fs::write(
        &f,
        format!("[[orgs]]\norg_id = \"fromfile\"\ntier = \"TIER_2K\"\nphone_numbers = [{{ phone_number_id = \"{FIXTURE_PHONE}\" }}]\nescalation_path = {{ kind = \"PHONE\", contact = \"+4915112345678\" }}\n"),
    )
    .unwrap();
    let s = Sidecar::start(&["--config", f.to_str().unwrap()]).await;
    let o = s.get_org("fromfile").await;
    assert_eq!(o.tier, pb::Tier::Tier2k as i32);
    assert!(allowed(&s.acquire("fromfile", 1).await));
}

#[tokio::test]
async fn admin_cli_walkthrough() {
    let s = Sidecar::start(&["--manual-clock"]).await;
    let cli = |args: &[&str]| {
        let out = Command::new(bin())
            .args(args)
            .args(["--addr", &s.grpc])
            .env_remove("TIERGATE_ADMIN_TOKEN")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    cli(&[
        "org",
        "put",
        "acme",
        "--tier",
        "TIER_250",
        "--phone",
        "106540352242922:80",
    ]);
    let t = cli(&["tier", "request", "acme", "TIER_2K", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&t).unwrap();
    assert_eq!(v["applied"], false);
    assert_eq!(v["pending_tier"], "TIER_2K");
    cli(&["escalation", "set", "acme", "email", "help@example.com"]);
    cli(&["rating", "set", "acme", "RED"]);
    let a = cli(&["appeal", "file", "acme", "we have a help desk", "--json"]);
    let a: serde_json::Value = serde_json::from_str(&a).unwrap();
    let id = a["appeal_id"].as_str().unwrap().to_owned();
    cli(&["appeal", "resolve", &id, "--approve"]);
    cli(&["clock", "advance", "1d"]);
    let o: serde_json::Value =
        serde_json::from_str(&cli(&["org", "get", "acme", "--json"])).unwrap();
    assert_eq!(o["tier"], "TIER_2K");
    assert_eq!(o["quality_rating"], "UNKNOWN");
    assert_eq!(o["escalation_path"]["kind"], "ESCALATION_KIND_EMAIL");
    let table = cli(&["org", "list"]);
    assert!(table.lines().next().unwrap().starts_with("ORG"), "{table}");
    assert!(table.contains("acme"), "{table}");
}

/// Many calls in flight on one HTTP/2 connection each get their own answer, on a store that
/// answers at once (memory) and one that answers a commit's calls together (embedded): the
/// responses that finish in one pass of the runtime leave in one write (`tiergate-transport`),
/// and none is lost, damaged or held back. At TIER_250, 600 distinct recipients: exactly 250
/// allowed, each with its own permit, and the rest refused at the tier.
#[tokio::test]
async fn many_calls_in_flight_on_one_connection_each_get_their_own_answer() {
    let dir = std::env::temp_dir().join(format!("tiergate-inflight-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dir = dir.to_string_lossy().into_owned();
    for store in [
        &["--store", "memory"][..],
        &["--store", "embedded", "--data-dir", &dir],
    ] {
        let s = Sidecar::start(store).await;
        s.put_org(org("inflight", pb::Tier::Tier250)).await;
        let mut calls = tokio::task::JoinSet::new();
        for r in 0..600u64 {
            // One connection: every client is a clone of the sidecar's one channel.
            let mut g = s.governor();
            calls.spawn(async move {
                let resp = g.acquire(acquire("inflight", 5_000 + r)).await;
                (r, resp.map(|r| r.into_inner()))
            });
        }
        let answers = tokio::time::timeout(std::time::Duration::from_secs(60), calls.join_all())
            .await
            .expect("every call answered");
        let mut permits = std::collections::HashSet::new();
        let mut limited = 0;
        for (r, resp) in answers {
            let resp = resp.unwrap_or_else(|e| panic!("{store:?}: recipient {r}: {e:?}"));
            if allowed(&resp) {
                assert!(
                    permits.insert(resp.permit_id.clone()),
                    "{store:?}: a permit twice"
                );
            } else {
                assert_eq!(reason(&resp), pb::DenyReason::TierLimit, "{store:?}: {r}");
                limited += 1;
            }
        }
        assert_eq!(permits.len(), 250, "{store:?}: allowed");
        assert_eq!(limited, 350, "{store:?}: refused at the tier");
        let usage = s.get_org("inflight").await.usage.unwrap();
        assert_eq!(usage.unique_recipients_24h, 250, "{store:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
