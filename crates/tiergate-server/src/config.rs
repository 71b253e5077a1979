//! The sidecar's configuration: one TOML file, every key overridable.
//!
//! Precedence, highest first: `--set section.key=value` flags (and the named flags such as
//! `--grpc-addr`), `TIERGATE_*` environment variables, the file, the defaults. Environment
//! variables are `TIERGATE_<SECTION>_<KEY>` (e.g. `TIERGATE_POLICY_TIER_HEADROOM_PERCENT=20`),
//! plus the names SPEC gives for secrets: `TIERGATE_ADMIN_TOKEN`, `TIERGATE_SENDER_TOKEN`,
//! `TIERGATE_UPSTREAM_TOKEN`, `TIERGATE_WEBHOOK_SECRET`, `TIERGATE_WEBHOOK_VERIFY_TOKEN`.
//!
//! Errors name the key and, for the file, the line: a bad file never starts a server.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tiergate_core::{OrgConfig, Policy};
use toml::{Spanned, Table, Value};

/// Which store holds the engine's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// In memory: lost on restart.
    Memory,
    /// An embedded database (redb) in `data_dir`: the default.
    #[default]
    Embedded,
    /// Redis, shared by replicas: one command log per org that every replica applies.
    Redis,
    /// A Redis Cluster, for when one Redis is not enough: the same logs, each org's keys on
    /// the slot of its hash tag; `redis_url` lists seed nodes, separated by commas.
    #[serde(rename = "redis-cluster", alias = "redis_cluster")]
    RedisCluster,
}

impl StoreKind {
    /// The name `--store` and `server.store` take.
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Memory => "memory",
            StoreKind::Embedded => "embedded",
            StoreKind::Redis => "redis",
            StoreKind::RedisCluster => "redis-cluster",
        }
    }

    /// Whether the state lives in Redis (one server or a cluster).
    pub fn is_redis(self) -> bool {
        matches!(self, StoreKind::Redis | StoreKind::RedisCluster)
    }
}

/// How this sidecar writes its Redis log entries (`server.redis_log_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedisLogFormat {
    /// Sends in binary: a third of the bytes, and less CPU in Redis. Sidecars of builds before
    /// it cannot read these entries.
    #[default]
    Binary,
    /// A JSON array of commands, which every build reads: for while sidecars of earlier
    /// builds still share the Redis (`docs/storage.md`, "Upgrading replicas").
    Json,
}

impl From<RedisLogFormat> for tiergate_store::LogFormat {
    fn from(f: RedisLogFormat) -> Self {
        match f {
            RedisLogFormat::Binary => tiergate_store::LogFormat::Binary,
            RedisLogFormat::Json => tiergate_store::LogFormat::Json,
        }
    }
}

/// What a sender is told while the store cannot be reached (Redis down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnStoreError {
    /// Refuse with `UNAVAILABLE`: nothing goes out that the shared budget did not count.
    #[default]
    Deny,
    /// Let sends through uncounted (no permit): availability over the tier.
    Allow,
}

impl std::str::FromStr for StoreKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "memory" => Ok(StoreKind::Memory),
            "embedded" => Ok(StoreKind::Embedded),
            "redis" => Ok(StoreKind::Redis),
            "redis-cluster" | "redis_cluster" => Ok(StoreKind::RedisCluster),
            _ => Err(format!(
                "{s:?} is not memory, embedded, redis or redis-cluster"
            )),
        }
    }
}

/// `[server]`: where and how to serve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSection {
    /// gRPC listen address (both services, health, reflection).
    pub grpc_addr: String,
    /// HTTP listen address (`/healthz`, `/readyz`).
    pub http_addr: String,
    /// Where the embedded store keeps its files.
    pub data_dir: PathBuf,
    /// The state store.
    pub store: StoreKind,
    /// Redis URL for `store = "redis"`.
    pub redis_url: Option<String>,
    /// Longest wait for one Redis reply, in milliseconds.
    pub redis_timeout_ms: u64,
    /// What senders get while the store is unreachable: `deny` (UNAVAILABLE) or `allow`.
    pub on_store_error: OnStoreError,
    /// With the embedded store, compact (every org's snapshot stored, the facts before it
    /// dropped) once this many facts were committed since the last time; 0: only at start.
    pub compact_facts: u64,
    /// How often the embedded store checks whether to compact, in milliseconds.
    pub compact_check_ms: u64,
    /// With Redis, a partition's log is checkpointed (its orgs with entries since the last
    /// checkpoint snapshotted, the log trimmed) after this many commands (or twice the
    /// recipients of the orgs its last checkpoint held, if more), so Redis holds live state,
    /// not history.
    pub redis_snapshot_entries: u64,
    /// Partitions of a Redis store this sidecar creates; 0: 1 on one Redis, 16 on a cluster.
    /// Written into Redis with the schema, so a store that exists keeps its own count. On a
    /// cluster with a fixed number of masters, one partition per master costs Redis about a
    /// quarter less CPU per decision than 16; 16 lets the cluster grow to 16 masters without a
    /// migration (BENCHMARKS.md, "a round gathers while other calls are decided").
    pub redis_partitions: u32,
    /// How this sidecar writes its Redis log entries: `binary` (the default) or `json`, which
    /// sidecars of earlier builds can read (a rolling upgrade writes `json` until every
    /// sidecar runs this build). Every sidecar of this build reads both.
    pub redis_log_format: RedisLogFormat,
    /// With Redis, the longest a round of appends waits to fill after a larger round, in
    /// milliseconds (at most 100; 0: never). Under load calls come back in waves, and a round
    /// sent before the wave arrives carries a handful of sends for a whole `fsync`; waiting
    /// for three quarters of the previous round took about a tenth off Redis's CPU per
    /// decision at 256 calls in flight (3–17 % in the runs measured). No round waits after
    /// one of fewer than 16 sends or after a quiet spell longer than the wait; a bursty
    /// moderate load pays it (up to 3.3 ms more at the median at 8,000 calls/s).
    /// BENCHMARKS.md, "Redis: a round waits for the wave".
    pub redis_fill_wait_ms: u64,
    /// Base URL of the Cloud-API-compatible upstream for `SendTemplate`.
    pub upstream_url: Option<String>,
    /// Start the clock at the wall time and let `AdvanceClock` move it (tests, demos).
    pub manual_clock: bool,
    /// Deadline for one gRPC call, in milliseconds. On the embedded store it also limits a
    /// stalled commit: a connection whose held answers wait this long without any of them
    /// becoming durable ends (its open calls fail with a transport status) and sends none.
    pub request_timeout_ms: u64,
    /// Largest gRPC request accepted, in bytes.
    pub max_request_bytes: usize,
    /// Largest `SendGovernor.Plan` request accepted, in bytes: a campaign's list of up to
    /// `policy.plan_max_recipients` recipients (100,000 parent BSUIDs are about 3 MB).
    pub max_plan_request_bytes: usize,
    /// Most sends in one `SendGovernor.AcquireBatch` call.
    pub max_batch: usize,
    /// Largest `SendGovernor.AcquireBatch` request accepted, in bytes (1,000 sends with
    /// BSUIDs and idempotency keys are about 250 KB).
    pub max_batch_request_bytes: usize,
    /// On shutdown, how long in-flight calls and open connections get before being closed.
    pub shutdown_grace_ms: u64,
    /// Largest webhook body accepted, in bytes.
    pub webhook_max_body_bytes: usize,
    /// Orgs given per-org gauges in `/metrics` (the fullest windows first).
    pub metrics_max_orgs: usize,
    /// Deadline of one upstream send, in milliseconds.
    pub upstream_timeout_ms: u64,
    /// The longest a waiting send (`max_wait_ms`) is held, in milliseconds; longer waits are
    /// cut to it. A waiting call's gRPC deadline is `request_timeout_ms` plus this.
    pub max_wait_ms: u64,
    /// The most sends one org may have waiting (all replicas together); beyond it a waiting
    /// send is answered at once.
    pub max_waiters_per_org: u32,
    /// With Redis, how often a send waiting behind another replica's reads the org's log while
    /// that one is due, in milliseconds.
    pub wait_poll_ms: u64,
    /// The status page's buckets (each org's fill and denials over the last day), in
    /// milliseconds; a day of them is kept.
    pub status_bucket_ms: u64,
    /// No longer used: it set glibc's mmap threshold, and the binary has allocated with jemalloc
    /// since session 13. Still read, so that a config written before starts; the sidecar warns
    /// that it is ignored.
    #[serde(default, skip_serializing)]
    pub malloc_mmap_threshold: Option<u64>,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            grpc_addr: "127.0.0.1:50051".into(),
            http_addr: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./tiergate-data"),
            store: StoreKind::Embedded,
            redis_url: None,
            redis_timeout_ms: 1_000,
            on_store_error: OnStoreError::Deny,
            redis_snapshot_entries: 100_000,
            redis_partitions: 0,
            redis_log_format: RedisLogFormat::Binary,
            redis_fill_wait_ms: tiergate_store::RedisOptions::FILL_WAIT.as_millis() as u64,
            compact_facts: 1_000_000,
            compact_check_ms: 60_000,
            upstream_url: None,
            manual_clock: false,
            request_timeout_ms: 5_000,
            max_request_bytes: 64 * 1024,
            max_plan_request_bytes: 4 * 1024 * 1024,
            max_batch: 1_000,
            max_batch_request_bytes: 1024 * 1024,
            shutdown_grace_ms: 10_000,
            webhook_max_body_bytes: 1024 * 1024,
            metrics_max_orgs: 1_000,
            upstream_timeout_ms: 10_000,
            max_wait_ms: crate::wait_room::DEFAULT_MAX_WAIT_MS,
            max_waiters_per_org: crate::wait_room::DEFAULT_MAX_WAITERS_PER_ORG,
            wait_poll_ms: crate::wait_room::DEFAULT_WAIT_POLL_MS,
            status_bucket_ms: 1_800_000,
            malloc_mmap_threshold: None,
        }
    }
}

/// `[auth]`: bearer tokens. Prefer the environment for these.
#[derive(Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSection {
    /// Required by every `GovernorAdmin` call when set.
    pub admin_token: Option<String>,
    /// Required by `SendGovernor` calls when set.
    pub sender_token: Option<String>,
    /// Bearer token for the upstream API.
    pub upstream_token: Option<String>,
    /// The app secret that signs webhooks.
    pub webhook_secret: Option<String>,
    /// The token Meta echoes in the webhook verification handshake.
    pub webhook_verify_token: Option<String>,
    /// Upstream bearer tokens by org id, overriding `upstream_token` for those orgs.
    pub org_upstream_tokens: std::collections::HashMap<String, String>,
}

impl fmt::Debug for AuthSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |o: &Option<String>| if o.is_some() { "<set>" } else { "<unset>" };
        f.debug_struct("AuthSection")
            .field("admin_token", &set(&self.admin_token))
            .field("sender_token", &set(&self.sender_token))
            .field("upstream_token", &set(&self.upstream_token))
            .field("webhook_secret", &set(&self.webhook_secret))
            .field("webhook_verify_token", &set(&self.webhook_verify_token))
            .field("org_upstream_tokens", &self.org_upstream_tokens.len())
            .finish()
    }
}

/// `[alerts]`: where an org's state turning bad is POSTed (see `crate::alerts`). Off while `url`
/// is unset.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsSection {
    /// The receiver (`http://` or `https://`).
    pub url: Option<String>,
    /// Signs each body (`X-Tiergate-Signature-256: sha256=<HMAC-SHA256>`); prefer
    /// `TIERGATE_ALERTS_SECRET`.
    pub secret: Option<String>,
    /// Which alerts: `["all"]` or names from `crate::alerts::detect::KINDS`.
    pub events: Vec<String>,
    /// How often the orgs are looked at, in milliseconds.
    pub check_ms: u64,
    /// Most alerts waiting for delivery; beyond it the oldest is dropped (and counted).
    pub max_queue: usize,
    /// Deadline of one delivery attempt, in milliseconds.
    pub timeout_ms: u64,
    /// Longest wait between two attempts, in milliseconds (back-off doubles from 1 s).
    pub max_backoff_ms: u64,
}

impl Default for AlertsSection {
    fn default() -> Self {
        AlertsSection {
            url: None,
            secret: None,
            events: vec!["all".into()],
            check_ms: 5_000,
            max_queue: 10_000,
            timeout_ms: 5_000,
            max_backoff_ms: 60_000,
        }
    }
}

impl fmt::Debug for AlertsSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlertsSection")
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "<set>"))
            .field("events", &self.events)
            .field("check_ms", &self.check_ms)
            .field("max_queue", &self.max_queue)
            .field("timeout_ms", &self.timeout_ms)
            .field("max_backoff_ms", &self.max_backoff_ms)
            .finish()
    }
}

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileConfig {
    server: ServerSection,
    auth: AuthSection,
    alerts: AlertsSection,
    policy: Policy,
    orgs: Vec<Spanned<OrgConfig>>,
}

/// A checked configuration, ready to serve.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// `[server]`.
    pub server: ServerSection,
    /// `[auth]`.
    pub auth: AuthSection,
    /// `[alerts]`.
    pub alerts: AlertsSection,
    /// `[policy]`.
    pub policy: Policy,
    /// `[[orgs]]`, registered at start.
    pub orgs: Vec<OrgConfig>,
}

/// One problem with a configuration: where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// The key, dotted (`policy.pair_rate_burst`, `orgs[2].phone_numbers`).
    pub key: String,
    /// The 1-based line in the file, when the problem is in the file.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "line {l}: {}: {}", self.key, self.message),
            None => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

/// Every problem found, so an operator can fix them all in one go.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<ConfigIssue>);

/// Overrides from the command line and the environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `(dotted key, raw value)`, applied in order, after the environment.
    pub sets: Vec<(String, String)>,
    /// Environment variables to consult (pass `std::env::vars()`; tests pass their own).
    pub env: Vec<(String, String)>,
}

/// The longest `server.redis_fill_wait_ms` accepted: the wait is for a wave of calls already
/// on their way (a few milliseconds at most), and past this it would only add latency.
const MAX_FILL_WAIT_MS: u64 = 100;

const SECTIONS: [&str; 4] = ["server", "auth", "alerts", "policy"];

/// Environment names SPEC fixes, mapped to their keys.
const NAMED_ENV: [(&str, &str); 5] = [
    ("TIERGATE_ADMIN_TOKEN", "auth.admin_token"),
    ("TIERGATE_SENDER_TOKEN", "auth.sender_token"),
    ("TIERGATE_UPSTREAM_TOKEN", "auth.upstream_token"),
    ("TIERGATE_WEBHOOK_SECRET", "auth.webhook_secret"),
    ("TIERGATE_WEBHOOK_VERIFY_TOKEN", "auth.webhook_verify_token"),
];

fn line_of(src: &str, offset: usize) -> usize {
    src[..offset.min(src.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

/// The line where `key = ...` is written inside `[section]`, if it is.
fn line_of_key(src: &str, section: &str, key: &str) -> Option<usize> {
    let mut in_section = false;
    for (i, line) in src.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[') {
            in_section = t.trim_start_matches('[').trim_end_matches(']').trim() == section;
        } else if in_section && t.split('=').next().map(str::trim) == Some(key) {
            return Some(i + 1);
        }
    }
    None
}

/// Parses an override value as TOML (numbers, booleans, arrays) or else as a plain string.
fn override_value(raw: &str) -> Value {
    let doc = format!("v = {raw}");
    match doc.parse::<Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| Value::String(raw.to_owned())),
        Err(_) => Value::String(raw.to_owned()),
    }
}

fn apply(table: &mut Table, key: &str, value: Value) -> Result<(), ConfigIssue> {
    let issue = |m: &str| ConfigIssue {
        key: key.to_owned(),
        line: None,
        message: m.to_owned(),
    };
    let (section, field) = key
        .split_once('.')
        .ok_or_else(|| issue("expected section.key (server, auth or policy)"))?;
    if !SECTIONS.contains(&section) || field.is_empty() || field.contains('.') {
        return Err(issue("expected section.key (server, auth or policy)"));
    }
    let sec = table
        .entry(section)
        .or_insert_with(|| Value::Table(Table::new()));
    let Value::Table(sec) = sec else {
        return Err(issue("is not a table in the file"));
    };
    sec.insert(field.to_owned(), value);
    Ok(())
}

/// Reads and checks a configuration. `src` is the file's text (`None`: defaults only).
pub fn load(src: Option<&str>, overrides: &Overrides) -> Result<Config, ConfigErrors> {
    let src = src.unwrap_or("");
    // 1. The file alone, so that errors carry line numbers.
    let file: FileConfig = toml::from_str(src).map_err(|e| {
        let line = e.span().map(|s| line_of(src, s.start));
        ConfigErrors(vec![ConfigIssue {
            key: "file".into(),
            line,
            message: e.message().to_owned(),
        }])
    })?;
    let mut issues = check(&file, src);
    // 2. Overrides on top of the file's table.
    // The same text was parsed just above, so this cannot fail.
    let file_table: Table = src.parse().unwrap_or_default();
    let mut table = file_table.clone();
    // Each override: its key, where it came from, its raw value (the environment's first).
    let mut named: Vec<(String, String, &str)> = Vec::new();
    for (name, value) in &overrides.env {
        let key = if let Some((_, key)) = NAMED_ENV.iter().find(|(n, _)| n == name) {
            (*key).to_owned()
        } else if let Some(rest) = name.strip_prefix("TIERGATE_") {
            let lower = rest.to_ascii_lowercase();
            match SECTIONS.iter().find_map(|s| {
                lower
                    .strip_prefix(&format!("{s}_"))
                    .map(|k| format!("{s}.{k}"))
            }) {
                Some(k) => k,
                None => continue,
            }
        } else {
            continue;
        };
        named.push((key, name.clone(), value));
    }
    for (key, value) in &overrides.sets {
        named.push((key.clone(), "--set".into(), value));
    }
    // Those applied, with their values, for naming the one at fault below.
    let mut applied: Vec<(String, String, Value)> = Vec::new();
    for (key, from, raw) in named {
        let value = override_value(raw);
        match apply(&mut table, &key, value.clone()) {
            Ok(()) => applied.push((key, from, value)),
            Err(e) => issues.push(e),
        }
    }
    if !issues.is_empty() {
        return Err(ConfigErrors(issues));
    }
    // Round-trip through text: spanned values only deserialize from a document.
    let override_issue = |message: String| {
        ConfigErrors(vec![ConfigIssue {
            key: "override".into(),
            line: None,
            message,
        }])
    };
    let merged_src = toml::to_string(&table).map_err(|e| override_issue(e.to_string()))?;
    let merged: FileConfig = toml::from_str(&merged_src).map_err(|e| {
        // Name the overrides at fault: each alone on top of the file (only on this path).
        let issues: Vec<ConfigIssue> = applied
            .iter()
            .filter_map(|(key, from, value)| {
                let mut one = file_table.clone();
                apply(&mut one, key, value.clone()).ok()?;
                let text = toml::to_string(&one).ok()?;
                let err = toml::from_str::<FileConfig>(&text).err()?;
                Some(ConfigIssue {
                    key: key.clone(),
                    line: None,
                    message: format!("{} (from {from})", err.message()),
                })
            })
            .collect();
        if issues.is_empty() {
            override_issue(e.message().to_owned())
        } else {
            ConfigErrors(issues)
        }
    })?;
    let issues = check(&merged, "");
    if !issues.is_empty() {
        return Err(ConfigErrors(issues));
    }
    Ok(Config {
        server: merged.server,
        auth: merged.auth,
        alerts: merged.alerts,
        policy: merged.policy,
        orgs: merged.orgs.into_iter().map(Spanned::into_inner).collect(),
    })
}

/// Semantic checks: policy values, each org, duplicates, addresses, tokens.
fn check(file: &FileConfig, src: &str) -> Vec<ConfigIssue> {
    let mut issues = Vec::new();
    if let Err(e) = file.policy.validate() {
        issues.push(ConfigIssue {
            key: format!("policy.{}", e.key),
            line: line_of_key(src, "policy", e.key),
            message: e.reason,
        });
    }
    let mut seen = HashSet::new();
    for (i, org) in file.orgs.iter().enumerate() {
        let line = (!src.is_empty()).then(|| line_of(src, org.span().start));
        let cfg = org.get_ref();
        if let Err(e) = cfg.validate(file.policy.max_throughput_mps) {
            issues.push(ConfigIssue {
                key: format!("orgs[{i}].{}", e.field.trim_start_matches("org.")),
                line,
                message: e.reason,
            });
        }
        if !seen.insert(cfg.org_id.clone()) {
            issues.push(ConfigIssue {
                key: format!("orgs[{i}].org_id"),
                line,
                message: format!("{:?} is registered twice", cfg.org_id),
            });
        }
    }
    for (key, addr) in [
        ("grpc_addr", &file.server.grpc_addr),
        ("http_addr", &file.server.http_addr),
    ] {
        if addr.parse::<SocketAddr>().is_err() {
            issues.push(ConfigIssue {
                key: format!("server.{key}"),
                line: line_of_key(src, "server", key),
                message: format!("{addr:?} is not an address like 127.0.0.1:50051"),
            });
        }
    }
    if file.server.store.is_redis() {
        let example = match file.server.store {
            StoreKind::RedisCluster => "redis://h1:7000,redis://h2:7001,redis://h3:7002",
            _ => "redis://host:port",
        };
        match file.server.redis_url.as_deref() {
            None => issues.push(ConfigIssue {
                key: "server.redis_url".into(),
                line: line_of_key(src, "server", "store"),
                message: format!("this store needs a redis_url (--redis-url {example})"),
            }),
            Some(urls) => {
                let urls: Vec<&str> = urls.split(',').map(str::trim).collect();
                let bad = urls
                    .iter()
                    .find(|u| !(u.starts_with("redis://") || u.starts_with("rediss://")));
                let message = if let Some(u) = bad {
                    Some(format!("{u:?} is not a redis:// URL"))
                } else if urls.len() > 1 && file.server.store == StoreKind::Redis {
                    Some("store = \"redis\" takes one URL; for several nodes use store = \"redis-cluster\"".into())
                } else {
                    None
                };
                if let Some(message) = message {
                    issues.push(ConfigIssue {
                        key: "server.redis_url".into(),
                        line: line_of_key(src, "server", "redis_url"),
                        message,
                    });
                }
            }
        }
    }
    if file.server.max_batch == 0 {
        issues.push(ConfigIssue {
            key: "server.max_batch".into(),
            line: line_of_key(src, "server", "max_batch"),
            message: "must be at least 1".into(),
        });
    }
    for (key, v) in [
        ("request_timeout_ms", file.server.request_timeout_ms),
        ("wait_poll_ms", file.server.wait_poll_ms),
        (
            "max_waiters_per_org",
            u64::from(file.server.max_waiters_per_org),
        ),
    ] {
        if v == 0 {
            issues.push(ConfigIssue {
                key: format!("server.{key}"),
                line: line_of_key(src, "server", key),
                message: "must be at least 1".into(),
            });
        }
    }
    if file.server.redis_partitions > tiergate_store::MAX_PARTITIONS {
        issues.push(ConfigIssue {
            key: "server.redis_partitions".into(),
            line: line_of_key(src, "server", "redis_partitions"),
            message: format!(
                "at most {}; 0 takes the topology's default",
                tiergate_store::MAX_PARTITIONS
            ),
        });
    }
    if !(60_000..=86_400_000).contains(&file.server.status_bucket_ms) {
        issues.push(ConfigIssue {
            key: "server.status_bucket_ms".into(),
            line: line_of_key(src, "server", "status_bucket_ms"),
            message: "between 60000 (a minute) and 86400000 (a day)".into(),
        });
    }
    let a = &file.alerts;
    if let Some(u) = &a.url
        && !(u.starts_with("http://") || u.starts_with("https://"))
    {
        issues.push(ConfigIssue {
            key: "alerts.url".into(),
            line: line_of_key(src, "alerts", "url"),
            message: format!("{u:?} is not an http:// or https:// URL"),
        });
    }
    for e in &a.events {
        if e != "all" && !crate::alerts::detect::KINDS.contains(&e.as_str()) {
            issues.push(ConfigIssue {
                key: "alerts.events".into(),
                line: line_of_key(src, "alerts", "events"),
                message: format!(
                    "{e:?} is not \"all\" or one of {}",
                    crate::alerts::detect::KINDS.join(", ")
                ),
            });
        }
    }
    for (key, v, min) in [
        ("check_ms", a.check_ms, 100),
        ("timeout_ms", a.timeout_ms, 1),
        ("max_backoff_ms", a.max_backoff_ms, 1_000),
        ("max_queue", a.max_queue as u64, 1),
    ] {
        if v < min {
            issues.push(ConfigIssue {
                key: format!("alerts.{key}"),
                line: line_of_key(src, "alerts", key),
                message: format!("must be at least {min}"),
            });
        }
    }
    if file.server.max_wait_ms > 3_600_000 {
        issues.push(ConfigIssue {
            key: "server.max_wait_ms".into(),
            line: line_of_key(src, "server", "max_wait_ms"),
            message: "at most 3600000 (an hour): a waiting call holds a connection's stream".into(),
        });
    }
    if file.server.redis_snapshot_entries < 2 {
        issues.push(ConfigIssue {
            key: "server.redis_snapshot_entries".into(),
            line: line_of_key(src, "server", "redis_snapshot_entries"),
            message: "must be at least 2".into(),
        });
    }
    if file.server.compact_check_ms == 0 {
        issues.push(ConfigIssue {
            key: "server.compact_check_ms".into(),
            line: line_of_key(src, "server", "compact_check_ms"),
            message: "must be at least 1".into(),
        });
    }
    if file.server.redis_fill_wait_ms > MAX_FILL_WAIT_MS {
        issues.push(ConfigIssue {
            key: "server.redis_fill_wait_ms".into(),
            line: line_of_key(src, "server", "redis_fill_wait_ms"),
            message: format!(
                "must be at most {MAX_FILL_WAIT_MS}: a round waits this long for sends that \
                 are already on their way, not for new traffic"
            ),
        });
    }
    if file.server.redis_timeout_ms == 0 {
        issues.push(ConfigIssue {
            key: "server.redis_timeout_ms".into(),
            line: line_of_key(src, "server", "redis_timeout_ms"),
            message: "must be at least 1".into(),
        });
    }
    for (key, tok) in [
        ("admin_token", &file.auth.admin_token),
        ("sender_token", &file.auth.sender_token),
    ] {
        if let Some(t) = tok
            && (t.len() < 16 || t.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            issues.push(ConfigIssue {
                key: format!("auth.{key}"),
                line: line_of_key(src, "auth", key),
                message: "must be at least 16 characters without spaces".into(),
            });
        }
    }
    issues
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_load() {
        let c = load(None, &Overrides::default()).unwrap();
        assert_eq!(c.server.grpc_addr, "127.0.0.1:50051");
        assert_eq!(c.policy, Policy::default());
    }

    #[test]
    fn errors_carry_key_and_line() {
        let src = "[policy]\npair_rate_burst = 0\n\n[[orgs]]\norg_id = \"a b\"\ntier = \"TIER_250\"\n\n[[orgs]]\norg_id = \"ok\"\ntier = \"TIER_2K\"\n\n[[orgs]]\norg_id = \"ok\"\ntier = 250\n";
        let e = load(Some(src), &Overrides::default()).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("line 2: policy.pair_rate_burst"), "{text}");
        assert!(text.contains("orgs[0].org_id"), "{text}");
        assert!(text.contains("line 12: orgs[2].org_id"), "{text}");
        let e = load(
            Some("[policy]\ntier_window_ms = \"x\"\n"),
            &Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(e.0[0].line, Some(2));
        let e = load(Some("[polcy]\n"), &Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }

    #[test]
    fn env_and_flags_override_the_file() {
        let src = "[policy]\ntier_headroom_percent = 10\n[server]\ngrpc_addr = \"127.0.0.1:1\"\n";
        let o = Overrides {
            env: vec![
                ("TIERGATE_POLICY_TIER_HEADROOM_PERCENT".into(), "20".into()),
                ("TIERGATE_ADMIN_TOKEN".into(), "0123456789abcdef".into()),
                ("TIERGATE_SERVER_GRPC_ADDR".into(), "127.0.0.1:2".into()),
                ("PATH".into(), "/bin".into()),
            ],
            sets: vec![("server.grpc_addr".into(), "127.0.0.1:3".into())],
        };
        let c = load(Some(src), &o).unwrap();
        assert_eq!(c.policy.tier_headroom_percent, 20);
        assert_eq!(c.auth.admin_token.as_deref(), Some("0123456789abcdef"));
        assert_eq!(c.server.grpc_addr, "127.0.0.1:3");
        let bad = Overrides {
            sets: vec![("policy.nope".into(), "1".into())],
            ..Overrides::default()
        };
        assert!(load(None, &bad).is_err());
    }

    /// A value of the wrong type names its key and where it came from.
    #[test]
    fn a_bad_override_names_its_key() {
        let o = Overrides {
            env: vec![("TIERGATE_SERVER_MAX_BATCH".into(), "many".into())],
            sets: vec![("policy.pair_rate_burst".into(), "\"x\"".into())],
        };
        let e = load(None, &o).unwrap_err().to_string();
        assert!(
            e.contains("server.max_batch: ") && e.contains("(from TIERGATE_SERVER_MAX_BATCH)"),
            "{e}"
        );
        assert!(
            e.contains("policy.pair_rate_burst: ") && e.contains("(from --set)"),
            "{e}"
        );
    }

    #[test]
    fn the_redis_log_format_is_binary_unless_set_to_json() {
        let c = load(None, &Overrides::default()).unwrap();
        assert_eq!(c.server.redis_log_format, RedisLogFormat::Binary);
        let c = load(
            Some("[server]\nredis_log_format = \"json\"\n"),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.server.redis_log_format, RedisLogFormat::Json);
        let e = load(
            Some("[server]\nredis_log_format = \"xml\"\n"),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("line 2") && e.contains("expected `binary` or `json`"),
            "{e}"
        );
    }

    #[test]
    fn the_redis_fill_wait_is_three_ms_and_at_most_a_hundred() {
        let c = load(None, &Overrides::default()).unwrap();
        assert_eq!(c.server.redis_fill_wait_ms, 3);
        let c = load(
            Some("[server]\nredis_fill_wait_ms = 0\n"),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.server.redis_fill_wait_ms, 0);
        let e = load(
            Some("[server]\nredis_fill_wait_ms = 101\n"),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("line 2: server.redis_fill_wait_ms") && e.contains("at most 100"),
            "{e}"
        );
    }

    #[test]
    fn redis_partitions_are_within_what_the_store_takes() {
        let e = load(
            Some("[server]\nredis_partitions = 2000\n"),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("line 2: server.redis_partitions"), "{e}");
    }

    /// A zero request timeout would time out every call, and every answer held for a commit.
    #[test]
    fn the_request_timeout_is_at_least_a_millisecond() {
        let e = load(
            Some("[server]\nrequest_timeout_ms = 0\n"),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("line 2: server.request_timeout_ms"), "{e}");
    }

    #[test]
    fn the_removed_mmap_threshold_is_still_read() {
        let c = load(
            Some("[server]\nmalloc_mmap_threshold = 32768\n"),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.server.malloc_mmap_threshold, Some(32_768));
        assert_eq!(
            load(None, &Overrides::default())
                .unwrap()
                .server
                .malloc_mmap_threshold,
            None
        );
    }

    #[test]
    fn a_cluster_takes_seed_nodes_and_one_redis_takes_one_url() {
        let cluster = "[server]\nstore = \"redis-cluster\"\nredis_url = \"redis://127.0.0.1:7000, redis://127.0.0.1:7001\"\n";
        let c = load(Some(cluster), &Overrides::default()).unwrap();
        assert_eq!(c.server.store, StoreKind::RedisCluster);
        assert_eq!(c.server.store.name(), "redis-cluster");
        assert_eq!("redis-cluster".parse(), Ok(StoreKind::RedisCluster));
        let one = "[server]\nstore = \"redis\"\nredis_url = \"redis://a:1,redis://b:2\"\n";
        let e = load(Some(one), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 3: server.redis_url") && e.contains("redis-cluster"),
            "{e}"
        );
        let bad = "[server]\nstore = \"redis-cluster\"\nredis_url = \"redis://a:1,http://b:2\"\n";
        let e = load(Some(bad), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"http://b:2\" is not a redis:// URL"), "{e}");
        let none = "[server]\nstore = \"redis-cluster\"\n";
        let e = load(Some(none), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("--redis-url redis://h1:7000"), "{e}");
    }
}
