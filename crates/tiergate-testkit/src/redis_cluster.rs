//! A real Redis Cluster of a test's own: three masters (no replicas) on free ports, each with its
//! data in a fresh directory, killed and removed on drop.
//!
//! The cluster store must be tested against Redis Cluster itself: its redirects (`MOVED` when a
//! slot has moved, `ASK` while it moves), its hash slots, a master that crashes and comes back.
//! Three masters is the smallest cluster `redis-cli --cluster create` accepts, and enough for a
//! slot to move between two nodes while a third looks on. Like [`crate::redis`], nothing here
//! panics: the caller decides whether a missing `redis-server` or `redis-cli` skips or fails.
//!
//! The servers are started with `redis-server` and the cluster is formed and resharded with
//! `redis-cli --cluster`, as an operator would; the state the helpers wait on (`CLUSTER INFO`,
//! `CLUSTER SLOTS`, `CLUSTER NODES`) is read over a plain TCP connection speaking RESP, because
//! `redis-cli` flattens nested replies such as `CLUSTER SLOTS` into lines that cannot be parsed
//! back, and because polling is cheaper without a process per question.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::redis::{RedisError, free_port, started};

/// How many masters: the fewest `redis-cli --cluster create` accepts.
const NODES: usize = 3;

/// The hash slots of every Redis Cluster (fixed by Redis).
const SLOTS: u32 = 16_384;

/// How long the nodes get to agree that the cluster is whole (after `start`, `restart`, a
/// reshard or a slot migration). A settled cluster of three takes about two seconds at most
/// (a restarted master waits 2 s before it calls itself writable); 20 s leaves room for a
/// loaded machine without letting a broken cluster hang a test.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(20);

/// The most `redis-cli --cluster create` or `--cluster reshard` may take before it is killed:
/// a reshard of all 16 384 empty slots takes seconds, so this only catches a hang.
const CLUSTER_CLI_TIMEOUT: Duration = Duration::from_secs(120);

/// The most a `cli` command may take before `redis-cli` is killed.
const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a wait asks again.
const POLL: Duration = Duration::from_millis(50);

/// The read and write timeout of the helpers' own connections: above MIGRATE's own 5 s
/// timeout, so that a slow MIGRATE fails with Redis's error rather than ours.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The most rounds of `CLUSTER GETKEYSINSLOT s 100` that `migrate_slot` runs (a million keys):
/// a bound, so that a slot refilled as fast as it is emptied cannot loop forever.
const MIGRATE_ROUNDS: usize = 10_000;

/// A failure that is not one of `redis-server`'s own: a `redis-cli` that failed, a cluster that
/// did not settle, a bad argument. [`RedisError`] has no variant of its own for these, so they
/// travel as [`RedisError::Io`] with a message that says what happened.
fn failed(msg: String) -> RedisError {
    RedisError::Io(io::Error::other(msg))
}

/// One master: its process (None once killed), its port, its cluster bus port and its data
/// directory (`nodes.conf` and the append-only file live there, so a restart rejoins with its
/// slots and keys).
#[derive(Debug)]
struct Node {
    child: Option<Child>,
    port: u16,
    bus_port: u16,
    dir: PathBuf,
}

impl Node {
    /// Starts its `redis-server` and waits until it answers PING.
    ///
    /// The bus port is given explicitly (`--cluster-port`) rather than left at Redis's default of
    /// port + 10 000: free ports come from the OS's ephemeral range (up to 60 999 on Linux), and
    /// Redis refuses to start a cluster node above 55 535 unless it is told its bus port.
    fn spawn(&mut self) -> Result<(), RedisError> {
        let spawned = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&self.dir)
            .args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ])
            .args(["--cluster-port", &self.bus_port.to_string()])
            .args(["--cluster-node-timeout", "1000"])
            // A master's death must not stop the orgs whose slots live on the others.
            .args(["--cluster-require-full-coverage", "no"])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(["--save", "", "--protected-mode", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        started(&mut self.child, spawned, self.port)
    }

    /// SIGKILL, and reap it.
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Three running masters that together serve all 16 384 hash slots; every node killed, and
/// every directory removed, on drop.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<Node>,
}

impl RedisCluster {
    /// Starts three masters, forms them into a cluster with `redis-cli --cluster create`, and
    /// waits until every node agrees it is whole (`cluster_state:ok`, three known nodes, none
    /// flagged failing, the same `CLUSTER SLOTS`).
    ///
    /// Each node fsyncs every write (`appendfsync always`), as the single server does, so a
    /// node killed with [`RedisCluster::kill9`] comes back with exactly what it acknowledged.
    /// The node timeout is 1 s, so a killed master is noticed quickly, and full coverage is not
    /// required, so the surviving masters keep serving their slots meanwhile.
    ///
    /// `name` goes into the data directories' names, to tell whose directories are whose.
    pub fn start(name: &str) -> Result<RedisCluster, RedisError> {
        // Asked first, so that a missing redis-cli is reported before any server starts.
        run_bounded(Command::new("redis-cli").arg("--version"), CLI_TIMEOUT)?;
        let ports = distinct_free_ports(2 * NODES)?;
        // Built before spawning, so that whatever started is killed, and every directory made
        // is removed, on any failure below.
        let mut cluster = RedisCluster {
            nodes: Vec::with_capacity(NODES),
        };
        for k in 0..NODES {
            let port = ports[k];
            let dir = std::env::temp_dir().join(format!(
                "tiergate-cluster-{name}-{}-{port}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            cluster.nodes.push(Node {
                child: None,
                port,
                bus_port: ports[NODES + k],
                dir,
            });
            let node = &mut cluster.nodes[k];
            std::fs::create_dir_all(&node.dir)?;
            node.spawn()?;
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        create.args(
            cluster
                .nodes
                .iter()
                .map(|n| format!("127.0.0.1:{}", n.port)),
        );
        create.args(["--cluster-replicas", "0", "--cluster-yes"]);
        check(
            "redis-cli --cluster create",
            run_bounded(&mut create, CLUSTER_CLI_TIMEOUT)?,
        )?;
        cluster.wait_settled(|_| Ok(()))?;
        Ok(cluster)
    }

    /// `redis://127.0.0.1:<p1>,redis://127.0.0.1:<p2>,redis://127.0.0.1:<p3>`, the form
    /// tiergate's `--redis-url` takes with `--store redis-cluster`: every node, so the client
    /// can find the cluster whichever node is down.
    pub fn urls(&self) -> String {
        let urls: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect();
        urls.join(",")
    }

    /// The nodes' ports on 127.0.0.1, in node order (index `i` is node `i` of the other
    /// methods).
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// The node (0..3) that owns hash slot `slot` as a master now, from `CLUSTER SLOTS` asked
    /// of the first running node that answers: for a test to know which node to kill, or which
    /// node a key's slot must move away from.
    pub fn owner_of_slot(&self, slot: u16) -> Result<usize, RedisError> {
        let map = self.slot_map()?;
        map.iter()
            .find(|&&(lo, hi, _)| (lo..=hi).contains(&slot))
            .map(|&(_, _, i)| i)
            .ok_or_else(|| failed(format!("no node of the cluster serves slot {slot}")))
    }

    /// The hash slot of `key`, as a live node computes it (`CLUSTER KEYSLOT`): tests use it
    /// to find the node a key lives on, with Redis itself, not a second copy of its hash, as the
    /// judge of where keys go.
    pub fn slot_of(&self, key: &str) -> Result<u16, RedisError> {
        let port = self
            .live_ports()
            .next()
            .ok_or_else(|| failed("no node of the cluster is running".into()))?;
        match call(port, &[b"CLUSTER", b"KEYSLOT", key.as_bytes()])? {
            Reply::Int(slot) => u16::try_from(slot)
                .map_err(|_| failed(format!("CLUSTER KEYSLOT {key:?} answered {slot}"))),
            other => Err(failed(format!(
                "CLUSTER KEYSLOT {key:?} answered {other:?}"
            ))),
        }
    }

    /// SIGKILL node `i`: it stops answering at once, with no shutdown of its own, as in a crash
    /// (its append-only file keeps every acknowledged write). An `i` out of range, or a node
    /// already killed, is left alone.
    pub fn kill9(&mut self, i: usize) {
        if let Some(n) = self.nodes.get_mut(i) {
            n.kill9();
        }
    }

    /// SIGSTOP (`pause`) or SIGCONT (`resume`) node `i`: a paused node keeps its connections
    /// open and answers nothing, like a host that vanished without a reset, which a killed
    /// process (its port refusing at once) does not show.
    pub fn pause(&self, i: usize) -> Result<(), RedisError> {
        self.signal(i, "-STOP")
    }

    /// See [`RedisCluster::pause`].
    pub fn resume(&self, i: usize) -> Result<(), RedisError> {
        self.signal(i, "-CONT")
    }

    fn signal(&self, i: usize, sig: &str) -> Result<(), RedisError> {
        let pid = self
            .nodes
            .get(i)
            .and_then(|n| n.child.as_ref())
            .map(Child::id)
            .ok_or_else(|| no_such_node(i))?;
        let st = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()?;
        if st.success() {
            Ok(())
        } else {
            Err(failed(format!("kill {sig} {pid}: {st}")))
        }
    }

    /// Starts node `i` again on the same port and directory (after [`RedisCluster::kill9`], or
    /// killing it first): its `nodes.conf` makes it rejoin as the same node with the same
    /// slots, its append-only file brings back its keys. Returns once every running node says
    /// the cluster is whole again, the others no longer flagging it as failed.
    pub fn restart(&mut self, i: usize) -> Result<(), RedisError> {
        let Some(node) = self.nodes.get_mut(i) else {
            return Err(no_such_node(i));
        };
        node.kill9();
        node.spawn()?;
        self.wait_settled(|_| Ok(()))
    }

    /// Moves `n` slots from node `from` to node `to` with `redis-cli --cluster reshard` (keys
    /// and all, ten keys per MIGRATE), as an operator would rebalance a live cluster, and
    /// returns once every running node agrees on the new owners. A failure carries what
    /// `redis-cli` printed.
    pub fn reshard(&self, from: usize, to: usize, n: u32) -> Result<(), RedisError> {
        let from_id = self.id(from)?;
        let to_id = self.id(to)?;
        let port = self.live_ports().next().ok_or_else(no_node_running)?;
        let mut cmd = Command::new("redis-cli");
        cmd.args(["--cluster", "reshard", &format!("127.0.0.1:{port}")])
            .args(["--cluster-from", &from_id, "--cluster-to", &to_id])
            .args(["--cluster-slots", &n.to_string(), "--cluster-yes"])
            .args(["--cluster-pipeline", "10"]);
        check(
            "redis-cli --cluster reshard",
            run_bounded(&mut cmd, CLUSTER_CLI_TIMEOUT)?,
        )?;
        self.wait_settled(|_| Ok(()))
    }

    /// Moves slot `slot` from node `from` to node `to` by hand and slowly, so that a client
    /// working meanwhile meets `ASK` redirects (keys already moved) as well as the old owner
    /// (keys not moved yet): the slot is marked importing on `to` and migrating on `from`,
    /// then, after `pause`, its keys are moved one MIGRATE at a time with `pause` after each,
    /// until `CLUSTER GETKEYSINSLOT` finds none left; then every running node is told the
    /// slot's new owner, and this returns once they all agree on it.
    pub fn migrate_slot(
        &self,
        slot: u16,
        from: usize,
        to: usize,
        pause: Duration,
    ) -> Result<(), RedisError> {
        if u32::from(slot) >= SLOTS {
            return Err(failed(format!("slot {slot} is not below {SLOTS}")));
        }
        if from == to {
            return Err(failed(format!(
                "cannot migrate slot {slot} from node {from} to itself"
            )));
        }
        let (from_port, to_port) = (self.node(from)?.port, self.node(to)?.port);
        let (from_id, to_id) = (self.id(from)?, self.id(to)?);
        let s = slot.to_string();
        let setslot = |port: u16, how: &str, id: &str| {
            call(
                port,
                &[
                    b"CLUSTER",
                    b"SETSLOT",
                    s.as_bytes(),
                    how.as_bytes(),
                    id.as_bytes(),
                ],
            )
        };
        setslot(to_port, "IMPORTING", &from_id)?;
        setslot(from_port, "MIGRATING", &to_id)?;
        std::thread::sleep(pause);
        let to_port_s = to_port.to_string();
        let mut emptied = false;
        for _ in 0..MIGRATE_ROUNDS {
            let keys = match call(
                from_port,
                &[b"CLUSTER", b"GETKEYSINSLOT", s.as_bytes(), b"100"],
            )? {
                Reply::Array(keys) => keys,
                other => {
                    return Err(failed(format!("GETKEYSINSLOT answered {other:?}")));
                }
            };
            if keys.is_empty() {
                emptied = true;
                break;
            }
            for key in keys {
                let Reply::Bulk(key) = key else {
                    return Err(failed(format!("GETKEYSINSLOT gave a key as {key:?}")));
                };
                call(
                    from_port,
                    &[
                        b"MIGRATE",
                        b"127.0.0.1",
                        to_port_s.as_bytes(),
                        b"",
                        b"0",
                        b"5000",
                        b"KEYS",
                        &key,
                    ],
                )?;
                std::thread::sleep(pause);
            }
        }
        if !emptied {
            return Err(failed(format!(
                "slot {slot} still had keys after {MIGRATE_ROUNDS} rounds of MIGRATE"
            )));
        }
        // The new owner first, as Redis's own procedure says, so that it stops answering ASK
        // before the old owner starts sending MOVED to it; then the rest.
        setslot(to_port, "NODE", &to_id)?;
        setslot(from_port, "NODE", &to_id)?;
        for n in self.nodes.iter().filter(|n| n.child.is_some()) {
            if n.port != to_port && n.port != from_port {
                setslot(n.port, "NODE", &to_id)?;
            }
        }
        self.wait_settled(|c| match c.owner_of_slot(slot) {
            Ok(i) if i == to => Ok(()),
            Ok(i) => Err(format!("slot {slot} is still on node {i}")),
            Err(e) => Err(e.to_string()),
        })
    }

    /// Runs `redis-cli -p <port of node i> <args>` and returns what it printed, trimmed: for
    /// tests to look at a node directly (`INFO commandstats`, `GET` on the node that owns a
    /// key). No `-c`: a key on another node gives `MOVED <slot> <addr>` back as text, as an
    /// error reply does in general (`redis-cli` prints those and exits 0). A node that does
    /// not answer is an error.
    pub fn cli(&self, i: usize, args: &[&str]) -> Result<String, RedisError> {
        let port = self.node(i)?.port;
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-p", &port.to_string()]).args(args);
        let out = check("redis-cli", run_bounded(&mut cmd, CLI_TIMEOUT)?)?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Node `i`, or an error naming the bad index.
    fn node(&self, i: usize) -> Result<&Node, RedisError> {
        self.nodes.get(i).ok_or_else(|| no_such_node(i))
    }

    /// Node `i`'s cluster id (`CLUSTER MYID`), which `redis-cli --cluster` and `CLUSTER SETSLOT`
    /// name nodes by.
    fn id(&self, i: usize) -> Result<String, RedisError> {
        match call(self.node(i)?.port, &[b"CLUSTER", b"MYID"])? {
            Reply::Bulk(id) => Ok(String::from_utf8_lossy(&id).into_owned()),
            other => Err(failed(format!("CLUSTER MYID answered {other:?}"))),
        }
    }

    /// The ports of the nodes not killed.
    fn live_ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
    }

    /// Every slot range with the node that serves it, `(first, last, node)`, sorted, from
    /// `CLUSTER SLOTS` asked of the first running node that answers.
    fn slot_map(&self) -> Result<Vec<(u16, u16, usize)>, RedisError> {
        let mut last = no_node_running();
        for port in self.live_ports() {
            match self.slots_of(port) {
                Ok(map) => return Ok(map),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// `CLUSTER SLOTS` as node `port` sees it: `(first, last, node)`, sorted.
    fn slots_of(&self, port: u16) -> Result<Vec<(u16, u16, usize)>, RedisError> {
        let bad = |what: &Reply| failed(format!("{port}: unexpected CLUSTER SLOTS entry {what:?}"));
        let Reply::Array(ranges) = call(port, &[b"CLUSTER", b"SLOTS"])? else {
            return Err(failed(format!("{port}: CLUSTER SLOTS is not an array")));
        };
        let mut map = Vec::with_capacity(ranges.len());
        for range in &ranges {
            // [first, last, [ip, port, id, ...] (the master), replicas...]
            let Reply::Array(r) = range else {
                return Err(bad(range));
            };
            let (Some(Reply::Int(lo)), Some(Reply::Int(hi)), Some(Reply::Array(master))) =
                (r.first(), r.get(1), r.get(2))
            else {
                return Err(bad(range));
            };
            let Some(Reply::Int(owner)) = master.get(1) else {
                return Err(bad(range));
            };
            let i = self
                .nodes
                .iter()
                .position(|n| i64::from(n.port) == *owner)
                .ok_or_else(|| failed(format!("{port}: slots on unknown port {owner}")))?;
            let (Ok(lo), Ok(hi)) = (u16::try_from(*lo), u16::try_from(*hi)) else {
                return Err(bad(range));
            };
            map.push((lo, hi, i));
        }
        map.sort_unstable();
        Ok(map)
    }

    /// Waits (at most [`SETTLE_TIMEOUT`]) until every running node says `cluster_state:ok`,
    /// knows three nodes, flags none of the running nodes as failing (or still in handshake),
    /// and gives the same `CLUSTER SLOTS` covering all 16 384 slots, and `also` holds too.
    ///
    /// `cluster_state:ok` alone is not enough after a restart: the other masters stay ok
    /// throughout (full coverage is not required) while still flagging the restarted one as
    /// failed for up to two node timeouts, and `redis-cli --cluster` refuses to work on a
    /// cluster whose nodes disagree like that.
    fn wait_settled(
        &self,
        also: impl Fn(&RedisCluster) -> Result<(), String>,
    ) -> Result<(), RedisError> {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let why = match self.settled().and_then(|()| also(self)) {
                Ok(()) => return Ok(()),
                Err(why) => why,
            };
            if Instant::now() >= deadline {
                return Err(failed(format!(
                    "the cluster did not settle within {} s: {why}",
                    SETTLE_TIMEOUT.as_secs()
                )));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Whether the cluster is whole now (see [`RedisCluster::wait_settled`]), or why not.
    fn settled(&self) -> Result<(), String> {
        let live: Vec<u16> = self.live_ports().collect();
        let mut agreed: Option<Vec<(u16, u16, usize)>> = None;
        for &port in &live {
            let info = text(port, &[b"CLUSTER", b"INFO"]).map_err(|e| e.to_string())?;
            let has = |line: &str| info.lines().any(|l| l.trim() == line);
            if !has("cluster_state:ok") {
                return Err(format!("{port} does not say cluster_state:ok"));
            }
            if !has(&format!("cluster_known_nodes:{NODES}")) {
                return Err(format!("{port} does not know {NODES} nodes"));
            }
            let nodes = text(port, &[b"CLUSTER", b"NODES"]).map_err(|e| e.to_string())?;
            for line in nodes.lines() {
                // <id> <ip:port@cport[,hostname]> <flags> <master> <ping> <pong> <epoch> ...
                let mut fields = line.split_whitespace();
                let (Some(_), Some(addr), Some(flags)) =
                    (fields.next(), fields.next(), fields.next())
                else {
                    continue;
                };
                let seen = addr
                    .split('@')
                    .next()
                    .and_then(|a| a.rsplit(':').next())
                    .and_then(|p| p.parse::<u16>().ok());
                let Some(seen) = seen.filter(|p| live.contains(p)) else {
                    continue;
                };
                if let Some(flag) = flags
                    .split(',')
                    .find(|f| matches!(*f, "fail" | "fail?" | "handshake" | "noaddr"))
                {
                    return Err(format!("{port} flags {seen} as {flag}"));
                }
            }
            let map = self.slots_of(port).map_err(|e| e.to_string())?;
            let covered: u32 = map
                .iter()
                .map(|&(lo, hi, _)| u32::from(hi) - u32::from(lo) + 1)
                .sum();
            if covered != SLOTS {
                return Err(format!("{port} sees {covered} of {SLOTS} slots served"));
            }
            match &agreed {
                None => agreed = Some(map),
                Some(first) if *first != map => {
                    return Err(format!("{port} disagrees about CLUSTER SLOTS"));
                }
                Some(_) => {}
            }
        }
        if live.is_empty() {
            return Err("no node is running".to_owned());
        }
        Ok(())
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill9();
            let _ = std::fs::remove_dir_all(&n.dir);
        }
    }
}

/// The error for a node index out of range.
fn no_such_node(i: usize) -> RedisError {
    failed(format!("no node {i}: the cluster has {NODES}"))
}

/// The error for a cluster whose nodes are all killed.
fn no_node_running() -> RedisError {
    failed("no node of the cluster is running".to_owned())
}

/// `n` different free ports (see [`free_port`]): one each for the nodes and their cluster
/// buses, which must not collide with each other either.
fn distinct_free_ports(n: usize) -> io::Result<Vec<u16>> {
    let mut ports = Vec::with_capacity(n);
    // Bounded, though the OS practically never hands back a port it has just handed out.
    for _ in 0..100 * n {
        if ports.len() == n {
            break;
        }
        let p = free_port()?;
        if !ports.contains(&p) {
            ports.push(p);
        }
    }
    if ports.len() < n {
        return Err(io::Error::other(format!(
            "could not find {n} different free ports"
        )));
    }
    Ok(ports)
}

/// Runs `cmd` with no input and its output captured, killing it if it takes longer than
/// `timeout`. A program that is not installed is [`RedisError::NotInstalled`]; a non-zero exit
/// is left to [`check`].
///
/// The output is read on two threads while the command runs: `redis-cli --cluster reshard`
/// prints a line per slot, enough to fill a pipe and block it if nobody read until it exits.
fn run_bounded(cmd: &mut Command, timeout: Duration) -> Result<Output, RedisError> {
    let spawned = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(RedisError::NotInstalled),
        Err(e) => return Err(e.into()),
    };
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(failed(format!(
                "{cmd:?} did not finish within {} s",
                timeout.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ok(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// `out` if `what` exited 0, else an error carrying its exit status and what it printed.
fn check(what: &str, out: Output) -> Result<Output, RedisError> {
    if out.status.success() {
        return Ok(out);
    }
    Err(failed(format!(
        "{what} failed ({}): {} {}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

/// A RESP2 reply, as far as the helpers need one.
#[derive(Debug)]
enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Reply>),
}

/// Sends one command to the node on `port` over a fresh connection and reads its reply (an
/// error reply included). Connecting takes at most 1 s and each read or write at most
/// [`IO_TIMEOUT`], so a node that hangs cannot hang a test.
fn command(port: u16, args: &[&[u8]]) -> io::Result<Reply> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut req = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        req.extend_from_slice(a);
        req.extend_from_slice(b"\r\n");
    }
    (&stream).write_all(&req)?;
    read_reply(&mut BufReader::new(&stream))
}

/// [`command`], with an error reply turned into an error naming the node and the command.
fn call(port: u16, args: &[&[u8]]) -> Result<Reply, RedisError> {
    match command(port, args)? {
        Reply::Error(e) => {
            let cmd: Vec<_> = args.iter().map(|a| String::from_utf8_lossy(a)).collect();
            Err(failed(format!("{port}: {}: {e}", cmd.join(" "))))
        }
        reply => Ok(reply),
    }
}

/// [`call`] for a command that answers text (`CLUSTER INFO`, `CLUSTER NODES`).
fn text(port: u16, args: &[&[u8]]) -> Result<String, RedisError> {
    match call(port, args)? {
        Reply::Bulk(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
        Reply::Status(s) => Ok(s),
        other => Err(failed(format!("{port}: expected text, got {other:?}"))),
    }
}

/// Reads one RESP2 reply.
fn read_reply(r: &mut impl BufRead) -> io::Result<Reply> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)?;
    let Some(line) = line.strip_suffix(b"\r\n") else {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the connection closed mid-reply",
        ));
    };
    let Some((&kind, rest)) = line.split_first() else {
        return Err(invalid("an empty reply line"));
    };
    let rest = String::from_utf8_lossy(rest).into_owned();
    let int = || {
        rest.parse::<i64>()
            .map_err(|_| invalid("a bad length or integer"))
    };
    match kind {
        b'+' => Ok(Reply::Status(rest)),
        b'-' => Ok(Reply::Error(rest)),
        b':' => Ok(Reply::Int(int()?)),
        b'$' => match usize::try_from(int()?) {
            Err(_) => Ok(Reply::Nil),
            Ok(n) => {
                let mut buf = vec![0; n + 2];
                r.read_exact(&mut buf)?;
                buf.truncate(n);
                Ok(Reply::Bulk(buf))
            }
        },
        b'*' => match usize::try_from(int()?) {
            Err(_) => Ok(Reply::Nil),
            Ok(n) => (0..n)
                .map(|_| read_reply(r))
                .collect::<io::Result<_>>()
                .map(Reply::Array),
        },
        _ => Err(invalid("an unknown reply type")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cluster, or `None` (after saying why) when Redis is not installed and not required.
    fn cluster(name: &str) -> Option<RedisCluster> {
        crate::redis::or_skip(RedisCluster::start(name))
    }

    /// How many slots each node serves.
    fn slot_counts(c: &RedisCluster) -> [u32; NODES] {
        let mut counts = [0; NODES];
        for (lo, hi, i) in c.slot_map().expect("CLUSTER SLOTS") {
            counts[i] += u32::from(hi) - u32::from(lo) + 1;
        }
        counts
    }

    #[test]
    fn key_is_served_by_its_slot_owner_and_moved_elsewhere() {
        let t = Instant::now();
        let Some(c) = cluster("moved") else { return };
        eprintln!("cluster started in {:?}", t.elapsed());
        assert_eq!(c.ports().len(), 3);
        assert_eq!(c.urls().split(',').count(), 3);
        assert!(c.urls().starts_with("redis://127.0.0.1:"));

        let slot = c.slot_of("tg:{acme}:log").unwrap();
        let owner = c.owner_of_slot(slot).expect("owner");
        // Keys of one hash tag share a slot.
        assert_eq!(
            c.cli(owner, &["CLUSTER", "KEYSLOT", "tg:{acme}:x"])
                .unwrap(),
            slot.to_string()
        );
        assert_eq!(c.cli(owner, &["SET", "tg:{acme}:x", "1"]).unwrap(), "OK");
        let other = (owner + 1) % 3;
        let moved = c.cli(other, &["SET", "tg:{acme}:x", "2"]).unwrap();
        assert_eq!(
            moved,
            format!("MOVED {slot} 127.0.0.1:{}", c.ports()[owner])
        );
        assert_eq!(c.cli(owner, &["GET", "tg:{acme}:x"]).unwrap(), "1");
        assert!(c.cli(7, &["PING"]).is_err());
    }

    #[test]
    fn killed_master_comes_back_with_its_slots_and_keys() {
        let Some(mut c) = cluster("kill9") else {
            return;
        };
        let slot = c.slot_of("tg:{acme}:x").unwrap();
        let owner = c.owner_of_slot(slot).expect("owner");
        assert_eq!(c.cli(owner, &["SET", "tg:{acme}:x", "1"]).unwrap(), "OK");

        c.kill9(owner);
        assert!(c.cli(owner, &["PING"]).is_err());
        // The survivors keep serving their own slots (full coverage is not required).
        let survivor = (owner + 1) % 3;
        let t = Instant::now();
        loop {
            let info = c.cli(survivor, &["CLUSTER", "INFO"]).unwrap();
            let nodes = c.cli(survivor, &["CLUSTER", "NODES"]).unwrap();
            if info.contains("cluster_state:ok") && nodes.contains(",fail ") {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(20), "{info}\n{nodes}");
            std::thread::sleep(POLL);
        }
        eprintln!(
            "the survivors flagged the killed master as failed in {:?}",
            t.elapsed()
        );

        let t = Instant::now();
        c.restart(owner).expect("restart");
        eprintln!("restart until the cluster settled: {:?}", t.elapsed());
        assert_eq!(c.cli(owner, &["GET", "tg:{acme}:x"]).unwrap(), "1");
        assert_eq!(c.owner_of_slot(slot).unwrap(), owner);
        for i in 0..3 {
            assert!(
                c.cli(i, &["CLUSTER", "INFO"])
                    .unwrap()
                    .contains("cluster_state:ok")
            );
        }
    }

    #[test]
    fn slots_move_by_hand_with_ask_and_by_reshard() {
        let Some(c) = cluster("migrate") else { return };
        let slot = c.slot_of("tg:{acme}:x").unwrap();
        let from = c.owner_of_slot(slot).expect("owner");
        let to = (from + 1) % 3;
        let keys = ["tg:{acme}:a", "tg:{acme}:b", "tg:{acme}:c", "tg:{acme}:x"];
        for k in keys {
            assert_eq!(c.cli(from, &["SET", k, "1"]).unwrap(), "OK");
        }

        // While the keys move one by one, the old owner sends a moved key's readers to the new
        // one with ASK.
        let pause = Duration::from_millis(300);
        let ask = std::thread::scope(|s| {
            let mover = s.spawn(|| c.migrate_slot(slot, from, to, pause));
            let t = Instant::now();
            let mut ask = None;
            while ask.is_none() && !mover.is_finished() && t.elapsed() < Duration::from_secs(20) {
                let reply = c.cli(from, &["GET", "tg:{acme}:a"]).unwrap();
                if reply.starts_with("ASK ") {
                    ask = Some(reply);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            mover.join().expect("mover").expect("migrate_slot");
            ask
        });
        assert_eq!(ask, Some(format!("ASK {slot} 127.0.0.1:{}", c.ports()[to])));
        assert_eq!(c.owner_of_slot(slot).unwrap(), to);
        for k in keys {
            assert_eq!(c.cli(to, &["GET", k]).unwrap(), "1");
            assert!(c.cli(from, &["GET", k]).unwrap().starts_with("MOVED "));
        }
        assert_eq!(
            c.cli(from, &["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()])
                .unwrap(),
            "0"
        );

        let before = slot_counts(&c);
        let t = Instant::now();
        c.reshard(0, 1, 100).expect("reshard");
        eprintln!("reshard of 100 slots: {:?}", t.elapsed());
        let after = slot_counts(&c);
        assert_eq!(after[0], before[0] - 100);
        assert_eq!(after[1], before[1] + 100);
        assert_eq!(after[2], before[2]);
        assert!(c.reshard(0, 0, 1).is_err());
    }
}
