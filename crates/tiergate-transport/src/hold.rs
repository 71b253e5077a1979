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
//! has returned): a commit that stalls holds the connection's answers until it completes or
//! fails, and the caller's own deadline is what bounds its wait.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

/// Where a connection learns that facts are durable: a store's numbered log.
pub trait Durable: fmt::Debug + Send + Sync {
    /// Whether every fact numbered up to `seq` is durable, without waiting.
    fn is_durable(&self, seq: u64) -> bool;

    /// Ready once every fact numbered up to `seq` is durable; pending until then, with
    /// `cx`'s waker woken when that changes; an error if the store failed and will never make
    /// it durable.
    fn poll_durable(&self, seq: u64, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
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
/// [`crate::incoming`] (`request.extensions().get::<ConnectionInfo<TcpConnectInfo>>()`).
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
}

impl Held {
    pub(crate) fn new(durable: Arc<dyn Durable>) -> Self {
        Self {
            durable,
            hold: Hold::default(),
            released: 0,
            ranges: Default::default(),
        }
    }

    pub(crate) fn hold(&self) -> &Hold {
        &self.hold
    }

    fn known_durable(&mut self, seq: u64) -> bool {
        if seq <= self.released {
            return true;
        }
        let durable = self.durable.is_durable(seq);
        if durable {
            self.released = seq;
        }
        durable
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
    pub(crate) fn poll_mark(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_seq(self.hold.mark(), cx)
    }

    fn poll_seq(&mut self, seq: u64, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.known_durable(seq) {
            std::task::ready!(self.durable.poll_durable(seq, cx))?;
            self.released = self.released.max(seq);
        }
        Poll::Ready(Ok(()))
    }

    /// The buffer's first `n` bytes were dropped (sent): the ranges move down.
    pub(crate) fn shift(&mut self, n: usize) {
        self.ranges.iter_mut().for_each(|r| r.0 -= n);
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

    /// Over a real gRPC connection: each call finds its connection's hold (and its socket's
    /// addresses) in its extensions, and an answer whose call marked fact 7 arrives only once
    /// fact 7 is durable.
    #[tokio::test]
    async fn over_grpc_an_answer_arrives_only_once_what_it_acknowledges_is_durable() {
        let log = Arc::new(TestLog::default());
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
                .serve_with_incoming(crate::incoming(listener, Some(durable))),
        );
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = HealthClient::new(channel);
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
}
