//! A connection's answers held back until the facts they acknowledge are durable.
//!
//! Why: on a durable store an allowed send is answered only once its fact is on disk
//! (acknowledged = fsynced). Waiting for that inside each call's task costs, per call, a wake
//! from the store's writer thread, a second poll of the call through tonic, hyper and `h2`, and
//! a timer (tonic arms its request timeout only for a call that is still pending). Measured on
//! the embedded store at 256 calls in flight, those were most of its extra CPU per call against
//! memory's: BENCHMARKS.md, "Answers held on the connection".
//!
//! How: the call decides, tells its connection's [`Hold`] the number of the last fact its
//! answer acknowledges, and answers at once, as on memory. The connection ([`crate::Coalesced`])
//! tags every byte written from then on with that number and sends those bytes only once
//! [`Durable`] says it is durable. The store's writer then wakes one task per connection per
//! commit instead of one per call.
//!
//! The tags are conservative: every byte written after `require(n)` waits for `n`, another
//! call's answer that acknowledges nothing included (a denial, a health check), and so do the
//! connection's own frames (PING and SETTINGS acknowledgements, window updates). Numbers only
//! grow, so what may leave is always a prefix of what is buffered. A store that fails releases
//! nothing more: the connection ends with the error, and no answer it still held is sent.
//!
//! A held answer is past the server's request timeout (tonic's timer covers the handler, which
//! has returned), so the connection keeps a limit of its own ([`Holding::stall_limit`]): if the
//! store makes none of its waiting facts durable for that long, the connection ends with
//! [`io::ErrorKind::TimedOut`] and sends none of the answers it held. It bounds a stall of the
//! store, not each answer's wait: an answer whose fact is committed after others that each came
//! just in time can wait up to about twice the limit. When it fires, every call still open on the
//! connection fails with a transport status (`UNAVAILABLE` or `UNKNOWN`), the ones that waited
//! for nothing included, where a call waiting in its own task used to time out alone. The facts
//! stay counted either way, so a caller who heard no ALLOW errs on the side of sending less.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// Where a connection learns that facts are durable: a store's numbered log.
pub trait Durable: fmt::Debug + Send + Sync {
    /// Whether every fact numbered up to `seq` is durable, without waiting.
    fn is_durable(&self, seq: u64) -> bool;

    /// Ready once every fact numbered up to `seq` is durable; pending until then, with
    /// `cx`'s waker woken when that changes; an error if the store failed and will never make
    /// it durable.
    fn poll_durable(&self, seq: u64, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

/// What a connection's answers are held for ([`crate::incoming()`], [`crate::Coalesced::holding`]).
#[derive(Debug, Clone)]
pub struct Holding {
    /// The store whose commits release them.
    pub durable: Arc<dyn Durable>,
    /// The longest the connection waits while the store makes none of its waiting facts
    /// durable: past it the connection ends with [`io::ErrorKind::TimedOut`], and the answers it
    /// held are never sent. The sidecar sets its request timeout. `None`: no limit (it needs
    /// tokio's timer, so a test polling by hand, outside a runtime, leaves it out).
    pub stall_limit: Option<Duration>,
}

/// A connection's mark: the last fact any answer written on it so far acknowledges. Cloned into
/// every call on the connection ([`ConnectionInfo`]).
#[derive(Debug, Clone, Default)]
pub struct Hold {
    need: Arc<AtomicU64>,
}

impl Hold {
    /// The answer this call is about to give acknowledges every fact up to `seq`: no byte
    /// written on the connection from now on leaves before they are durable. Call it before
    /// the answer is returned.
    pub fn require(&self, seq: u64) {
        // The answer reaches the connection's task through `h2`'s lock, which orders this
        // store before the connection reads the mark for the answer's bytes.
        self.need.fetch_max(seq, Ordering::SeqCst);
    }

    /// The mark as it stands: the last fact the connection's answers so far acknowledge.
    pub fn mark(&self) -> u64 {
        self.need.load(Ordering::SeqCst)
    }
}

/// What tonic puts into each request's extensions for a connection accepted by
/// [`crate::incoming()`] (`request.extensions().get::<ConnectionInfo<TcpConnectInfo>>()`).
/// tonic's `Request::remote_addr()` looks for a bare `TcpConnectInfo`, so it finds nothing on
/// these connections: the addresses are in [`ConnectionInfo::socket`].
#[derive(Debug, Clone)]
pub struct ConnectionInfo<I> {
    /// The socket's own (its addresses).
    pub socket: I,
    /// Where a call says what its answer acknowledges; `None` when the connection holds
    /// nothing back (no durable store), and the call must wait for its facts itself.
    pub hold: Option<Hold>,
}

/// The bytes of a connection's buffer that wait, each range for its fact.
#[derive(Debug)]
pub(crate) struct Held {
    durable: Arc<dyn Durable>,
    hold: Hold,
    /// The highest number known durable: a cache of [`Durable::is_durable`].
    released: u64,
    /// `(end, seq)`: the buffer's bytes before `end`, and after the previous range, wait for
    /// `seq`. Ends and numbers increase.
    ranges: std::collections::VecDeque<(usize, u64)>,
    stall: Stall,
    /// The stall limit passed: nothing held is ever sent, whatever becomes durable later.
    gave_up: bool,
    /// The other end, named when the connection gives up (`None`: not known).
    pub(crate) peer: Option<std::net::SocketAddr>,
}

impl Held {
    pub(crate) fn new(holding: Holding) -> Self {
        Self {
            durable: holding.durable,
            hold: Hold::default(),
            released: 0,
            ranges: Default::default(),
            stall: Stall {
                limit: holding.stall_limit,
                timer: None,
                armed: false,
            },
            gave_up: false,
            peer: None,
        }
    }

    pub(crate) fn hold(&self) -> &Hold {
        &self.hold
    }

    fn known_durable(&mut self, seq: u64) -> bool {
        if self.gave_up {
            return false;
        }
        if seq <= self.released {
            return true;
        }
        let durable = self.durable.is_durable(seq);
        if durable {
            self.advanced(seq);
        }
        durable
    }

    /// Everything up to `seq` is durable: the store made progress, so the stall deadline starts
    /// again from the next wait.
    fn advanced(&mut self, seq: u64) {
        self.released = self.released.max(seq);
        self.stall.armed = false;
    }

    /// Bytes up to `end` were just buffered: whether all of them may be sent now (the
    /// connection's mark is durable, so everything before it is too), or they wait.
    pub(crate) fn buffered(&mut self, end: usize) -> bool {
        let need = self.hold.mark();
        if self.known_durable(need) {
            self.ranges.clear();
            return true;
        }
        match self.ranges.back_mut() {
            Some(last) if last.1 == need => last.0 = end,
            _ => self.ranges.push_back((end, need)),
        }
        false
    }

    /// Whether nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The end of the buffer that may be sent, given the ranges now durable; `None` if none
    /// is.
    pub(crate) fn release(&mut self) -> Option<usize> {
        let mut free = None;
        while let Some(&(end, seq)) = self.ranges.front() {
            if !self.known_durable(seq) {
                break;
            }
            free = Some(end);
            self.ranges.pop_front();
        }
        free
    }

    /// Ready once the first waiting range is durable; [`Held::release`] then lets it go.
    pub(crate) fn poll_front(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.ranges.front() {
            Some(&(_, seq)) => self.poll_seq(seq, cx),
            None => Poll::Ready(Ok(())),
        }
    }

    /// Ready once the connection's mark is durable (for bytes that would bypass the buffer).
    /// The mark is read again at each poll, so progress on an earlier mark that was overtaken
    /// does not restart the stall limit; only writes of [`crate::coalesce::HIGH_WATER`] bytes
    /// or more come here, and `h2` writes none.
    pub(crate) fn poll_mark(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_seq(self.hold.mark(), cx)
    }

    fn poll_seq(&mut self, seq: u64, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.gave_up {
            if self.known_durable(seq) {
                return Poll::Ready(Ok(()));
            }
            if let Poll::Ready(done) = self.durable.poll_durable(seq, cx) {
                done?;
                self.advanced(seq);
                return Poll::Ready(Ok(()));
            }
            std::task::ready!(self.stall.poll_expired(cx));
            self.gave_up = true;
            tracing::warn!(
                limit_ms = self.stall.limit_ms(),
                waiting_for = seq,
                peer = %Peer(self.peer),
                "the store made none of a connection's held answers durable in time; the connection ends and they are not sent"
            );
        }
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the store made nothing this connection ({}) waits for durable within {} ms",
                Peer(self.peer),
                self.stall.limit_ms()
            ),
        )))
    }

    /// The buffer's first `n` bytes were dropped (sent): the ranges move down.
    pub(crate) fn shift(&mut self, n: usize) {
        self.ranges.iter_mut().for_each(|r| r.0 -= n);
    }
}

/// A connection's [`Holding::stall_limit`] as a timer: armed when the connection starts
/// waiting for the store, disarmed ([`Held::advanced`]) whenever one of its facts is found
/// durable. The timer is kept between waits, so that a connection allocates one, not one per
/// commit; disarming only clears `armed`, so the timer stays registered at its old deadline and
/// may wake the connection once for nothing, and the next wait resets it.
#[derive(Debug)]
struct Stall {
    limit: Option<Duration>,
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl Stall {
    /// Ready once the connection has waited the limit since the store last made one of its
    /// facts durable (or since it started waiting); never without a limit.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(limit) = self.limit else {
            return Poll::Pending;
        };
        if !self.armed {
            // A limit beyond what the clock can count is no limit.
            let Some(deadline) = Instant::now().checked_add(limit) else {
                return Poll::Pending;
            };
            self.armed = true;
            match &mut self.timer {
                Some(timer) => timer.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        match &mut self.timer {
            Some(timer) => timer.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }

    fn limit_ms(&self) -> u64 {
        self.limit.map_or(u64::MAX, |l| {
            u64::try_from(l.as_millis()).unwrap_or(u64::MAX)
        })
    }
}

/// A connection's other end as logs and errors name it.
struct Peer(Option<std::net::SocketAddr>);

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(a) => write!(f, "peer {a}"),
            None => f.write_str("peer unknown"),
        }
    }
}

/// A store's log whose durable number a test moves.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct TestLog {
    state: std::sync::Mutex<TestLogState>,
}

#[cfg(test)]
#[derive(Debug, Default)]
struct TestLogState {
    durable: u64,
    failed: bool,
    waiting: Vec<std::task::Waker>,
}

#[cfg(test)]
impl TestLog {
    /// Everything up to `seq` is durable: wakes whoever waits.
    pub(crate) fn advance(&self, seq: u64) {
        self.change(|s| s.durable = seq);
    }

    /// A commit failed: nothing more becomes durable.
    pub(crate) fn fail(&self) {
        self.change(|s| s.failed = true);
    }

    fn change(&self, f: impl FnOnce(&mut TestLogState)) {
        let woken = {
            let mut s = self.state.lock().unwrap();
            f(&mut s);
            std::mem::take(&mut s.waiting)
        };
        woken.into_iter().for_each(std::task::Waker::wake);
    }
}

#[cfg(test)]
impl Durable for TestLog {
    fn is_durable(&self, seq: u64) -> bool {
        self.state.lock().unwrap().durable >= seq
    }

    fn poll_durable(&self, seq: u64, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut s = self.state.lock().unwrap();
        if s.failed {
            return Poll::Ready(Err(io::Error::other("commit failed")));
        }
        if s.durable >= seq {
            return Poll::Ready(Ok(()));
        }
        s.waiting.push(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::net::TcpListener;
    use tonic::transport::server::TcpConnectInfo;
    use tonic::{Request, Status};
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    /// A health service behind an interceptor that checks each call's connection info and
    /// marks fact 7, served with its answers held for `log`; its address.
    async fn serve_marking_7(log: &Arc<TestLog>, stall_limit: Duration) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_reporter, health) = tonic_health::server::health_reporter();
        let marks =
            tonic::service::interceptor::InterceptedService::new(health, |req: Request<()>| {
                let info = req
                    .extensions()
                    .get::<ConnectionInfo<TcpConnectInfo>>()
                    .ok_or_else(|| Status::internal("no connection info"))?;
                if info.socket.remote_addr().is_none() {
                    return Err(Status::internal("no remote address"));
                }
                let hold = info
                    .hold
                    .as_ref()
                    .ok_or_else(|| Status::internal("no hold"))?;
                hold.require(7);
                Ok(req)
            });
        let durable: Arc<dyn Durable> = log.clone();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(marks)
                .serve_with_incoming(crate::incoming(
                    listener,
                    Some(Holding {
                        durable,
                        stall_limit: Some(stall_limit),
                    }),
                )),
        );
        addr
    }

    async fn client(addr: std::net::SocketAddr) -> HealthClient<tonic::transport::Channel> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        HealthClient::new(channel)
    }

    /// Over a real gRPC connection: each call finds its connection's hold (and its socket's
    /// addresses) in its extensions, and an answer whose call marked fact 7 arrives only once
    /// fact 7 is durable.
    #[tokio::test]
    async fn over_grpc_an_answer_arrives_only_once_what_it_acknowledges_is_durable() {
        let log = Arc::new(TestLog::default());
        let addr = serve_marking_7(&log, Duration::from_secs(60)).await;
        let mut client = client(addr).await;
        let call = tokio::spawn(async move { client.check(HealthCheckRequest::default()).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !call.is_finished(),
            "answered before what it acknowledges was durable"
        );
        log.advance(6);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!call.is_finished(), "6 is not 7");
        log.advance(7);
        let answer = tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .expect("answered once durable")
            .unwrap()
            .expect("the health check itself");
        assert_eq!(answer.into_inner().status, 1, "SERVING");
    }

    /// Over a real gRPC connection: a store that never commits fact 7 does not leave the
    /// caller waiting past the stall limit. The connection ends, and the call fails instead of
    /// hearing ALLOW (SERVING here).
    #[tokio::test]
    async fn over_grpc_a_stalled_store_fails_the_call_after_the_stall_limit() {
        let log = Arc::new(TestLog::default());
        let addr = serve_marking_7(&log, Duration::from_millis(300)).await;
        let mut client = client(addr).await;
        let started = std::time::Instant::now();
        let answer = tokio::time::timeout(
            Duration::from_secs(30),
            client.check(HealthCheckRequest::default()),
        )
        .await
        .expect("the call ended, without a deadline of its own");
        let status = answer.expect_err("nothing was durable, so no answer");
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "ended before the limit: {status:?}"
        );
        // Not the interceptor's refusal (INTERNAL): the connection itself ended.
        assert!(
            matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::Unknown
            ),
            "{status:?}"
        );
    }
}
