//! Test harness: the real `tiergate` binary on ephemeral ports, driven through generated clients.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tiergate_proto::v1 as pb;
use tiergate_proto::v1::governor_admin_client::GovernorAdminClient;
use tiergate_proto::v1::send_governor_client::SendGovernorClient;
use tonic::Request;
use tonic::transport::Channel;

pub mod redis;

pub use redis::{RedisCluster, RedisServer};
// Not every test binary uses every one of these.
#[allow(unused_imports)]
pub use tiergate_testkit::{DAY, FIXTURE_PHONE, HOUR, SEC};

/// The stores one suite runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Embedded,
    Redis,
    RedisCluster,
}

/// A sidecar on a backend, with what that backend needs (its own data directory, its own
/// `redis-server`), all removed on drop.
pub struct OnBackend {
    pub sidecar: Sidecar,
    pub redis: Option<RedisServer>,
    pub cluster: Option<RedisCluster>,
    dir: Option<std::path::PathBuf>,
}

impl std::ops::Deref for OnBackend {
    type Target = Sidecar;
    fn deref(&self) -> &Sidecar {
        &self.sidecar
    }
}

impl Drop for OnBackend {
    fn drop(&mut self) {
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

impl Backend {
    /// Starts a sidecar with `args` on this backend; `None` when Redis is needed but not
    /// installed (and not required).
    pub async fn start(self, name: &str, args: &[&str]) -> Option<OnBackend> {
        match self {
            Backend::Memory => Some(OnBackend {
                sidecar: Sidecar::start(args).await,
                redis: None,
                cluster: None,
                dir: None,
            }),
            Backend::Embedded => {
                let dir = std::env::temp_dir()
                    .join(format!("tiergate-suite-{name}-{}", std::process::id()));
                let _ = std::fs::remove_dir_all(&dir);
                let d = dir.to_str().unwrap().to_owned();
                let mut all = vec!["--store", "embedded", "--data-dir", &d];
                all.extend_from_slice(args);
                Some(OnBackend {
                    sidecar: Sidecar::start(&all).await,
                    redis: None,
                    cluster: None,
                    dir: Some(dir),
                })
            }
            Backend::Redis => {
                let redis = RedisServer::start(name)?;
                let url = redis.url();
                let mut all = vec!["--store", "redis", "--redis-url", &url];
                all.extend_from_slice(args);
                Some(OnBackend {
                    sidecar: Sidecar::start(&all).await,
                    redis: Some(redis),
                    cluster: None,
                    dir: None,
                })
            }
            Backend::RedisCluster => {
                let cluster = RedisCluster::start(name)?;
                let urls = cluster.urls();
                let mut all = vec!["--store", "redis-cluster", "--redis-url", &urls];
                all.extend_from_slice(args);
                Some(OnBackend {
                    sidecar: Sidecar::start(&all).await,
                    redis: None,
                    cluster: Some(cluster),
                    dir: None,
                })
            }
        }
    }
}

/// Runs the test functions given against every backend: one module per store, the same
/// bodies. A body starts its sidecar with `start!(args)`.
#[macro_export]
macro_rules! every_backend {
    ($( async fn $name:ident() $body:block )*) => {
        macro_rules! start {
            ($args:expr) => {
                match BACKEND.start(NAME, $args).await {
                    Some(s) => s,
                    None => return,
                }
            };
        }
        mod memory {
            use super::*;
            const BACKEND: Backend = Backend::Memory;
            $( #[tokio::test] async fn $name() { const NAME: &str = stringify!($name); $body } )*
        }
        mod embedded {
            use super::*;
            const BACKEND: Backend = Backend::Embedded;
            $( #[tokio::test] async fn $name() { const NAME: &str = stringify!($name); $body } )*
        }
        mod redis {
            use super::*;
            const BACKEND: Backend = Backend::Redis;
            $( #[tokio::test] async fn $name() { const NAME: &str = stringify!($name); $body } )*
        }
        mod redis_cluster {
            use super::*;
            const BACKEND: Backend = Backend::RedisCluster;
            $( #[tokio::test] async fn $name() { const NAME: &str = stringify!($name); $body } )*
        }
    };
}

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A running sidecar, killed on drop.
pub struct Sidecar {
    child: Child,
    pub grpc: String,
    pub http: String,
    channel: Channel,
    token: Option<String>,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tiergate")
}

impl Sidecar {
    /// `serve --manual-clock` on ports 0 with `args` appended.
    pub async fn start(args: &[&str]) -> Sidecar {
        Self::start_with(args, &[]).await
    }

    /// Like [`start`], with environment variables.
    pub async fn start_with(args: &[&str], env: &[(&str, &str)]) -> Sidecar {
        let mut cmd = Command::new(bin());
        // In memory unless the test chooses a store (and then its own data directory).
        let store: &[&str] = if args.contains(&"--store") {
            &[]
        } else {
            &["--store", "memory"]
        };
        cmd.args([
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .args(store)
        .args(args)
        .env_remove("TIERGATE_ADMIN_TOKEN")
        .env("TIERGATE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn tiergate");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(l)) = lines.next() {
                let _ = tx.send(l);
            }
            for _ in lines {}
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("tiergate did not report its ports");
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .unwrap_or_else(|| panic!("no {k} in {line:?}"))
                .to_owned()
        };
        let grpc = format!("http://{}", field("grpc="));
        let http = field("http=");
        let channel = Channel::from_shared(grpc.clone())
            .unwrap()
            .connect()
            .await
            .expect("connect");
        let token = env
            .iter()
            .find(|(k, _)| *k == "TIERGATE_ADMIN_TOKEN")
            .map(|(_, v)| v.to_string());
        Sidecar {
            child,
            grpc,
            http,
            channel,
            token,
        }
    }

    pub fn governor(&self) -> SendGovernorClient<Channel> {
        SendGovernorClient::new(self.channel.clone())
    }

    pub fn admin(&self) -> GovernorAdminClient<Channel> {
        GovernorAdminClient::new(self.channel.clone())
    }

    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// A request carrying the admin token the server was started with, if any.
    pub fn req<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        if let Some(t) = &self.token {
            r.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        r
    }

    pub async fn put_org(&self, org: pb::Org) -> pb::Org {
        self.admin()
            .put_org(self.req(pb::PutOrgRequest { org: Some(org) }))
            .await
            .expect("put_org")
            .into_inner()
    }

    pub async fn get_org(&self, org_id: &str) -> pb::Org {
        self.admin()
            .get_org(self.req(pb::GetOrgRequest {
                org_id: org_id.into(),
            }))
            .await
            .expect("get_org")
            .into_inner()
    }

    pub async fn advance(&self, millis: u64) -> i64 {
        self.admin()
            .advance_clock(self.req(pb::AdvanceClockRequest { millis }))
            .await
            .expect("advance_clock")
            .into_inner()
            .now_unix_ms
    }

    pub async fn acquire(&self, org: &str, recipient: u64) -> pb::AcquireResponse {
        self.acquire_req(acquire(org, recipient)).await
    }

    pub async fn acquire_req(&self, req: pb::AcquireRequest) -> pb::AcquireResponse {
        self.governor()
            .acquire(req)
            .await
            .expect("acquire")
            .into_inner()
    }

    /// SIGTERM, then the exit status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        for _ in 0..200 {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("tiergate did not stop on SIGTERM");
    }
}

/// Whether the sidecar's `/readyz` answers 200.
pub async fn readyz(s: &Sidecar) -> bool {
    http_get(&s.http, "/readyz")
        .await
        .starts_with("HTTP/1.1 200")
}

/// Waits (at most 20 s, then fails the test) until `/readyz` is `want`.
pub async fn wait_ready(s: &Sidecar, want: bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while readyz(s).await != want {
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz never became {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A plain HTTP/1.1 GET on a raw socket: status line, headers and body as text.
pub async fn http_get(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).await.unwrap();
    out
}

impl Sidecar {
    /// The `/metrics` page.
    pub async fn metrics(&self) -> String {
        http_get(&self.http, "/metrics").await
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An org with one fast number (so throughput never interferes unless a test wants it).
pub fn org(org_id: &str, tier: pb::Tier) -> pb::Org {
    pb::Org {
        org_id: org_id.into(),
        tier: tier as i32,
        phone_numbers: vec![pb::PhoneNumber {
            phone_number_id: FIXTURE_PHONE.into(),
            display_phone_number: "+1 555 0100".into(),
            throughput_mps: 1_000,
        }],
        waba_ids: vec!["102290129340398".into()],
        escalation_path: Some(email()),
        ..Default::default()
    }
}

/// [`org`] on a number of its own (`phone`), with no display number or WABA: ids are unique
/// across orgs, so tests that register several orgs give each its own.
pub fn org_on(org_id: &str, tier: pb::Tier, phone: &str) -> pb::Org {
    let mut o = org(org_id, tier);
    o.phone_numbers[0].phone_number_id = phone.into();
    o.phone_numbers[0].display_phone_number.clear();
    o.waba_ids.clear();
    o
}

pub fn email() -> pb::EscalationPath {
    pb::EscalationPath {
        kind: pb::EscalationKind::Email as i32,
        contact: "help@example.com".into(),
    }
}

pub fn acquire(org: &str, recipient: u64) -> pb::AcquireRequest {
    pb::AcquireRequest {
        org_id: org.into(),
        phone_number_id: FIXTURE_PHONE.into(),
        recipient: recipient.to_string(),
        template_name: "order_update".into(),
        category: pb::Category::Utility as i32,
        idempotency_key: String::new(),
        recipient_user_id: String::new(),
        max_wait_ms: 0,
    }
}

/// A report that the send of `permit_id` never reached WhatsApp (its slot is given back).
pub fn not_sent(permit_id: &str) -> pb::ReportRequest {
    pb::ReportRequest {
        permit_id: permit_id.into(),
        outcome: pb::SendOutcome::NotSent as i32,
        error_code: 0,
    }
}

pub fn allowed(r: &pb::AcquireResponse) -> bool {
    r.verdict == pb::Verdict::Allow as i32
}

pub fn reason(r: &pb::AcquireResponse) -> pb::DenyReason {
    pb::DenyReason::try_from(r.reason).unwrap()
}
