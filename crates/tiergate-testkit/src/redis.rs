//! A real `redis-server` of a test's or bench's own: on a free port, with its data in a fresh
//! directory, killed and removed on drop.
//!
//! Tests of the Redis store must run against Redis itself (its Lua, its persistence), and must
//! not share one with other tests or with anything else on the machine. Starting one never
//! panics: a bench reports a missing `redis-server` as not measured, and tests apply
//! [`or_skip`], the one policy for them (skip, or fail when `TIERGATE_REQUIRE_REDIS=1`).

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a fresh `redis-server` gets to answer PING before it counts as failed to start.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The tests' policy for a server or cluster that could not be started: `None` (a skip, said on
/// stderr) when Redis is not installed, unless `TIERGATE_REQUIRE_REDIS=1` (which `.ci/run`
/// sets): then, as on any other failure to start, the test panics.
pub fn or_skip<T>(started: Result<T, RedisError>) -> Option<T> {
    match started {
        Ok(r) => Some(r),
        Err(RedisError::NotInstalled)
            if std::env::var("TIERGATE_REQUIRE_REDIS").as_deref() != Ok("1") =>
        {
            eprintln!(
                "skipped: redis-server or redis-cli is not on PATH (set TIERGATE_REQUIRE_REDIS=1 to fail)"
            );
            None
        }
        Err(RedisError::NotInstalled) => {
            panic!("TIERGATE_REQUIRE_REDIS=1 but redis-server or redis-cli is not on PATH")
        }
        Err(e) => panic!("{e}"),
    }
}

/// Why a `redis-server` could not be had.
#[derive(Debug)]
pub enum RedisError {
    /// `redis-server` is not on `PATH`: the one failure a caller may want to treat as a skip.
    NotInstalled,
    /// A free port, the data directory or the process could not be had.
    Io(io::Error),
    /// It exited before answering PING (a bad argument, or the port was taken meanwhile).
    Exited(ExitStatus),
    /// It did not answer PING within 10 s.
    NoAnswer,
}

impl fmt::Display for RedisError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedisError::NotInstalled => f.write_str("redis-server is not on PATH"),
            RedisError::Io(e) => write!(f, "redis-server could not be started: {e}"),
            RedisError::Exited(st) => write!(f, "redis-server exited before answering: {st}"),
            RedisError::NoAnswer => f.write_str("redis-server did not answer PING"),
        }
    }
}

impl std::error::Error for RedisError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RedisError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for RedisError {
    fn from(e: io::Error) -> Self {
        RedisError::Io(e)
    }
}

/// A port nobody listens on right now (the OS picks it; the listener is closed at once).
///
/// Ports are chosen this way, not fixed, so that tests running in parallel, and other projects
/// on the same machine, never collide.
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Whether `redis-server` answers `PING` on `port` now.
fn pong(port: u16) -> bool {
    let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = c.set_read_timeout(Some(Duration::from_millis(500)));
    if c.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(c.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}

/// Keeps a just spawned `redis-server` in `slot` and waits until it answers PING on `port`
/// (at most [`START_TIMEOUT`]); a missing binary is [`RedisError::NotInstalled`], an early exit
/// [`RedisError::Exited`] (and `slot` is emptied).
pub(crate) fn started(
    slot: &mut Option<Child>,
    spawned: io::Result<Child>,
    port: u16,
) -> Result<(), RedisError> {
    let child = match spawned {
        Ok(c) => slot.insert(c),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(RedisError::NotInstalled),
        Err(e) => return Err(e.into()),
    };
    let deadline = Instant::now() + START_TIMEOUT;
    while !pong(port) {
        if let Some(st) = child.try_wait()? {
            *slot = None;
            return Err(RedisError::Exited(st));
        }
        if Instant::now() >= deadline {
            return Err(RedisError::NoAnswer);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// A running `redis-server` with the append-only file on; killed, and its directory removed,
/// on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    appendfsync: String,
}

impl RedisServer {
    /// Starts one that fsyncs every write (`appendfsync always`): what the embedded store
    /// promises too, so a restart keeps exactly what Redis acknowledged.
    ///
    /// `name` goes into the data directory's name, to tell whose directory is whose.
    pub fn start(name: &str) -> Result<RedisServer, RedisError> {
        Self::start_with_fsync(name, "always")
    }

    /// Starts one with `appendfsync` set to `fsync` (`always`, `everysec` or `no`), for the
    /// benches that compare Redis's usual setting with the durable one.
    pub fn start_with_fsync(name: &str, fsync: &str) -> Result<RedisServer, RedisError> {
        let dir = std::env::temp_dir().join(format!(
            "tiergate-redis-{name}-{}-{}",
            std::process::id(),
            free_port()?
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        // Built before spawning, so that the directory is removed on every failure below.
        let mut r = RedisServer {
            child: None,
            port: free_port()?,
            dir,
            appendfsync: fsync.to_owned(),
        };
        r.spawn()?;
        Ok(r)
    }

    fn spawn(&mut self) -> Result<(), RedisError> {
        let spawned = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--appendonly", "yes", "--appendfsync", &self.appendfsync])
            .args(["--save", "", "--protected-mode", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        started(&mut self.child, spawned, self.port)
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its data directory (the append-only file lives here), for tests that lose its data on
    /// purpose.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `redis://127.0.0.1:<port>`, the form tiergate's `--redis-url` takes.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: Redis stops answering at once, with no shutdown of its own, as in a crash.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and data (after [`RedisServer::kill9`], or killing it
    /// first), to test what survives a Redis restart.
    pub fn restart(&mut self) -> Result<(), RedisError> {
        self.kill9();
        self.spawn()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
