//! A gRPC connection's writes, gathered so that the responses ready in one pass of the runtime
//! leave in one system call.
//!
//! Why: `h2` writes a connection's frames whenever its task is polled, and tokio polls a task
//! woken from a worker thread next (its "LIFO slot"). Each call's response wakes its
//! connection's task, so the connection wrote one response per system call: measured with
//! `perf stat -e syscalls:sys_enter_writev` on the sidecar at 256 calls in flight, 0.58 (embedded
//! store) to 0.67 (memory) `writev`s per call, while a read brought ~14 requests. On the
//! embedded store a commit wakes its ~80 calls at once, and they left one by one.
//!
//! How: [`Coalesced`] takes what `h2` writes into a buffer of its own. The first flush after
//! new bytes arrived does not write: it waits for the runtime's turn ([`crate::turn`]), until
//! the tasks already ready have run; the calls among them that finish add their frames
//! meanwhile, and one write carries them all. A connection with one call in flight waits one pass
//! of the runtime (microseconds), not a timer. A flush with a frame's worth buffered
//! ([`WRITE_AT_ONCE`]) writes at once: a large response gains nothing from waiting, and `h2`
//! waits on that flush before it encodes its next frame. The buffer is bounded: a write that
//! would take it past [`HIGH_WATER`] bytes first sends what is buffered.
//!
//! On a durable store the buffer also holds answers back until the facts they acknowledge are
//! durable ([`Coalesced::holding`], [`crate::hold`]): only a prefix of it may be sent, and a
//! flush waits for the store's commit as it waits for the socket.
//!
//! Measured after (the same `perf stat`): 0.053 (embedded) and 0.039 (memory) writes per call.
//! BENCHMARKS.md, "Responses coalesced per connection", has the calls/s and CPU figures.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

use crate::hold::{ConnectionInfo, Held, Holding};
use crate::turn::Turn;

/// The most bytes a connection's buffer holds, sent, unsent or held back: a write that would
/// take it past this first sends what is buffered (waiting for the commit of what is held), and
/// a write this large or larger goes straight to the socket (once the connection's mark is
/// durable). It bounds each connection's memory. (`h2` hands over at most its own buffer or one
/// frame at a time, 16 KiB unless a client allows larger frames, so in practice nothing goes
/// straight through.)
pub const HIGH_WATER: usize = 64 * 1024;

/// Bytes buffered from which a flush writes without waiting for the runtime's turn: a
/// full-size `h2` DATA frame. `h2` flushes before it encodes the next frame of a large
/// response, so waiting a turn per frame would slow the response, and there is nothing to
/// gather that would save a write.
pub const WRITE_AT_ONCE: usize = 16 * 1024;

/// The buffer's capacity kept after a burst that needed more, so that idle connections do not
/// each hold their largest burst's buffer.
const KEEP: usize = 16 * 1024;

/// See the module docs.
#[derive(Debug)]
pub struct Coalesced<T> {
    inner: T,
    /// Bytes accepted since the buffer was last empty (less those dropped while answers were
    /// held back); `buf[sent..]` is what is not yet written.
    buf: Vec<u8>,
    sent: usize,
    /// `buf[..free]` may be sent; the rest waits for its facts to be durable (`held`).
    free: usize,
    /// The answers held back until what they acknowledge is durable ([`crate::hold`]); `None`
    /// when nothing is.
    held: Option<Held>,
    /// The runtime's turn a flush waits for before it writes.
    turn: Turn,
    /// The turn came and the buffer is being written (the socket was full, or the rest is held
    /// back): the rest goes when the socket has room and the store committed it, without
    /// waiting for another turn.
    draining: bool,
}

impl<T> Coalesced<T> {
    /// Wraps a connection.
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            sent: 0,
            free: 0,
            held: None,
            turn: Turn::default(),
            draining: false,
        }
    }

    /// Wraps a connection whose calls' answers wait for their facts to be durable in
    /// `holding`'s store, at most its stall limit at a time ([`crate::hold`]).
    pub fn holding(inner: T, holding: Holding) -> Self {
        Self {
            held: Some(Held::new(holding)),
            ..Self::new(inner)
        }
    }

    /// Names the connection's other end, for the warning and the error when its store stalls
    /// (a connection that holds nothing keeps no name).
    pub fn with_peer(mut self, peer: Option<std::net::SocketAddr>) -> Self {
        if let Some(held) = &mut self.held {
            held.peer = peer;
        }
        self
    }

    /// The other end [`Coalesced::with_peer`] named.
    #[cfg(test)]
    pub(crate) fn peer(&self) -> Option<std::net::SocketAddr> {
        self.held.as_ref().and_then(|h| h.peer)
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncWrite + Unpin> Coalesced<T> {
    /// Writes what is buffered, until all of it is sent or the socket is full; held bytes
    /// go as their facts become durable, and until then this waits for them.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if let Some(free) = self.held.as_mut().and_then(Held::release) {
                self.free = free;
            }
            while self.sent < self.free {
                let n = ready!(
                    Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.sent..self.free])
                )?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.sent += n;
            }
            let Some(held) = self.held.as_mut().filter(|h| !h.is_empty()) else {
                break;
            };
            // What may leave has left; the rest waits, at the front of the buffer.
            if self.sent > 0 {
                self.buf.drain(..self.sent);
                held.shift(self.sent);
                self.free -= self.sent;
                self.sent = 0;
            }
            ready!(held.poll_front(cx))?;
        }
        self.buf.clear();
        self.buf.shrink_to(KEEP);
        self.sent = 0;
        self.free = 0;
        // Whatever flush was waiting, for its turn or for the socket, has nothing left to do.
        self.draining = false;
        self.turn.disarm();
        Poll::Ready(Ok(()))
    }

    /// Room for `len` more bytes: what is buffered is sent first (held bytes once committed)
    /// if the buffer (its bytes already sent included, which stay until it is empty or only
    /// held bytes are left) would go past [`HIGH_WATER`]. Ready with whether they go straight
    /// to the socket (the buffer is empty, they would fill it alone, and the connection's mark
    /// is durable) rather than into the buffer.
    fn poll_room(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<bool>> {
        let held = self.buf.len();
        if held > 0 && held + len > HIGH_WATER {
            ready!(self.poll_drain(cx))?;
        }
        if len < HIGH_WATER {
            return Poll::Ready(Ok(false));
        }
        // Straight to the socket: only once what the connection's answers acknowledge is
        // durable.
        if let Some(held) = &mut self.held {
            ready!(held.poll_mark(cx))?;
        }
        Poll::Ready(Ok(true))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesced<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesced<T> {
    /// One slice of [`Self::poll_write_vectored`] (`h2` writes vectored; this is for others).
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(data)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let len = bufs.iter().map(|b| b.len()).sum();
        if ready!(this.poll_room(cx, len))? {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        bufs.iter().for_each(|b| this.buf.extend_from_slice(b));
        let end = this.buf.len();
        if this.held.as_mut().is_none_or(|h| h.buffered(end)) {
            this.free = end;
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.sent < this.buf.len() {
            if !this.draining && this.buf.len() - this.sent < WRITE_AT_ONCE {
                // The tasks already ready run first; they may add their frames.
                ready!(this.turn.poll_turn(cx));
            }
            this.draining = true;
            ready!(this.poll_drain(cx))?;
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl<T: Connected> Connected for Coalesced<T> {
    type ConnectInfo = ConnectionInfo<T::ConnectInfo>;

    fn connect_info(&self) -> Self::ConnectInfo {
        ConnectionInfo {
            socket: self.inner.connect_info(),
            hold: self.held.as_ref().map(|h| h.hold().clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hold::TestLog;
    use std::future::poll_fn;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Waker;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A connection that records each write it is given, and takes at most `per_write` bytes
    /// of each (a socket with little room), and at most `room` bytes in all before it is full
    /// (`None`: no limit).
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
        per_write: Option<usize>,
        room: Option<usize>,
        shut: bool,
    }

    impl Recorder {
        fn full() -> Self {
            Recorder {
                room: Some(0),
                ..Recorder::default()
            }
        }
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            if this.room == Some(0) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let n = [this.per_write, this.room]
                .into_iter()
                .flatten()
                .fold(data.len(), usize::min);
            if let Some(room) = &mut this.room {
                *room -= n;
            }
            this.writes.push(data[..n].to_vec());
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.get_mut().shut = true;
            Poll::Ready(Ok(()))
        }
    }

    /// A waker that counts its wakes.
    fn counting_waker() -> (Waker, Arc<AtomicUsize>) {
        struct Count(Arc<AtomicUsize>);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let n = Arc::new(AtomicUsize::new(0));
        (Waker::from(Arc::new(Count(n.clone()))), n)
    }

    fn write(
        c: &mut Coalesced<Recorder>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(c).poll_write(cx, data)
    }

    fn flush(c: &mut Coalesced<Recorder>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(c).poll_flush(cx)
    }

    #[test]
    fn the_first_flush_yields_once_and_the_next_sends_everything_in_one_write() {
        let (waker, wakes) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let mut c = Coalesced::new(Recorder::default());
        assert!(matches!(
            write(&mut c, &mut cx, b"one;"),
            Poll::Ready(Ok(4))
        ));
        assert!(
            flush(&mut c, &mut cx).is_pending(),
            "the first flush lets ready tasks run"
        );
        assert_eq!(
            wakes.load(Ordering::SeqCst),
            1,
            "and asks to be polled again"
        );
        assert!(c.get_ref().writes.is_empty());
        // Another call's response arrives before the connection's task runs again.
        let bufs = [IoSlice::new(b"two;"), IoSlice::new(b"three")];
        assert!(matches!(
            Pin::new(&mut c).poll_write_vectored(&mut cx, &bufs),
            Poll::Ready(Ok(9))
        ));
        assert!(matches!(flush(&mut c, &mut cx), Poll::Ready(Ok(()))));
        assert_eq!(c.get_ref().writes, vec![b"one;two;three".to_vec()]);
        // Nothing buffered: a flush is at once the socket's own.
        assert!(matches!(flush(&mut c, &mut cx), Poll::Ready(Ok(()))));
        assert_eq!(wakes.load(Ordering::SeqCst), 1);
        // The next burst yields again.
        assert!(matches!(
            write(&mut c, &mut cx, b"four"),
            Poll::Ready(Ok(4))
        ));
        assert!(flush(&mut c, &mut cx).is_pending());
        assert!(matches!(flush(&mut c, &mut cx), Poll::Ready(Ok(()))));
        assert_eq!(c.get_ref().writes.len(), 2);
        assert_eq!(c.get_ref().writes[1], b"four");
    }

    #[test]
    fn a_short_write_is_continued_in_order_and_a_full_socket_holds_writes_past_the_high_water_mark()
    {
        let (waker, _) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let mut c = Coalesced::new(Recorder {
            per_write: Some(3),
            ..Recorder::default()
        });
        assert!(write(&mut c, &mut cx, b"abcdefgh").is_ready());
        assert!(flush(&mut c, &mut cx).is_pending());
        assert!(matches!(flush(&mut c, &mut cx), Poll::Ready(Ok(()))));
        assert_eq!(c.get_ref().writes.concat(), b"abcdefgh");
        assert_eq!(c.get_ref().writes.len(), 3, "3 + 3 + 2 bytes");

        let mut c = Coalesced::new(Recorder::full());
        let most = vec![7u8; HIGH_WATER - 10];
        assert!(matches!(write(&mut c, &mut cx, &most), Poll::Ready(Ok(n)) if n == most.len()));
        assert!(
            write(&mut c, &mut cx, &[8; 20]).is_pending(),
            "bounded: waits for the socket"
        );
        c.inner.room = None;
        assert!(matches!(
            write(&mut c, &mut cx, &[8; 20]),
            Poll::Ready(Ok(20))
        ));
        assert_eq!(
            c.get_ref().writes.concat(),
            most,
            "what was buffered went first"
        );
        // A write as large as the bound goes straight to the socket, after what is buffered.
        let big = vec![9u8; HIGH_WATER];
        assert!(matches!(write(&mut c, &mut cx, &big), Poll::Ready(Ok(n)) if n == HIGH_WATER));
        assert_eq!(c.get_ref().writes.len(), 3);
        assert_eq!(c.get_ref().writes[1], [8; 20]);
        assert_eq!(
            c.get_ref().writes[2],
            big,
            "in one write, not copied into the buffer"
        );
        assert!(write(&mut c, &mut cx, b"tail").is_ready());
        assert!(matches!(
            Pin::new(&mut c).poll_shutdown(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(
            c.get_ref().writes.last().map(Vec::as_slice),
            Some(&b"tail"[..])
        );
        assert!(
            c.get_ref().shut,
            "shut down after what was buffered was sent"
        );
    }

    /// A socket that fills while the buffer is being written: bytes already sent count
    /// against the bound until the buffer is empty, so it cannot grow past it.
    #[test]
    fn a_socket_that_fills_while_draining_keeps_the_buffer_bounded() {
        let (waker, _) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let mut c = Coalesced::new(Recorder {
            room: Some(10_000),
            ..Recorder::default()
        });
        let first = vec![1u8; 40_000];
        let second = vec![2u8; 30_000];
        assert!(write(&mut c, &mut cx, &first).is_ready());
        assert!(flush(&mut c, &mut cx).is_pending(), "the turn");
        assert!(
            flush(&mut c, &mut cx).is_pending(),
            "10,000 bytes sent, then full"
        );
        assert!(
            write(&mut c, &mut cx, &second).is_pending(),
            "40,000 held (10,000 of them sent) + 30,000 would pass the bound"
        );
        assert!(c.buf.len() <= HIGH_WATER);
        c.inner.room = None;
        assert!(matches!(
            write(&mut c, &mut cx, &second),
            Poll::Ready(Ok(30_000))
        ));
        assert!(matches!(flush(&mut c, &mut cx), Poll::Ready(Ok(()))));
        assert_eq!(c.get_ref().writes.concat(), [first, second].concat());
    }

    fn holding(log: &Arc<TestLog>) -> (Coalesced<Recorder>, crate::Hold) {
        let c = Coalesced::holding(
            Recorder::default(),
            Holding {
                durable: log.clone(),
                stall_limit: None,
            },
        );
        let hold = c.held.as_ref().unwrap().hold().clone();
        (c, hold)
    }

    /// Bytes written after a call marked its fact leave only once the fact is durable; what
    /// is released leaves while later bytes still wait, and the bytes that became durable
    /// together leave in one write.
    #[test]
    fn answers_wait_for_the_facts_they_acknowledge_and_leave_as_those_become_durable() {
        let (waker, wakes) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let log = Arc::new(TestLog::default());
        let (mut c, hold) = holding(&log);
        assert!(
            write(&mut c, &mut cx, b"a;").is_ready(),
            "acknowledges nothing"
        );
        hold.require(1);
        assert!(write(&mut c, &mut cx, b"b;").is_ready());
        hold.require(2);
        assert!(write(&mut c, &mut cx, b"c;").is_ready());
        assert!(flush(&mut c, &mut cx).is_pending(), "the turn");
        assert!(flush(&mut c, &mut cx).is_pending(), "fact 1 is not durable");
        assert_eq!(c.get_ref().writes, vec![b"a;".to_vec()]);
        let before = wakes.load(Ordering::SeqCst);
        log.advance(1);
        assert_eq!(
            wakes.load(Ordering::SeqCst),
            before + 1,
            "the commit wakes the connection"
        );
        assert!(flush(&mut c, &mut cx).is_pending(), "fact 2 is not durable");
        assert_eq!(c.get_ref().writes.concat(), b"a;b;");
        assert!(
            write(&mut c, &mut cx, b"d;").is_ready(),
            "waits for fact 2 too"
        );
        log.advance(2);
        assert!(matches!(flush(&mut c, &mut cx), Poll::Ready(Ok(()))));
        assert_eq!(
            c.get_ref().writes,
            vec![b"a;".to_vec(), b"b;".to_vec(), b"c;d;".to_vec()]
        );
        assert!(c.buf.is_empty() && c.held.as_ref().unwrap().is_empty());
        // Durable already: the next answer only waits for the turn.
        hold.require(2);
        assert!(write(&mut c, &mut cx, b"e").is_ready());
        assert!(flush(&mut c, &mut cx).is_pending(), "the turn");
        assert!(matches!(flush(&mut c, &mut cx), Poll::Ready(Ok(()))));
        assert_eq!(c.get_ref().writes.last().unwrap(), b"e");
    }

    /// A store that fails never releases what it held: the connection ends with the error,
    /// on flush and on shutdown, and not one held byte is sent.
    #[test]
    fn a_failed_store_sends_nothing_that_was_held_and_ends_the_connection() {
        let (waker, _) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let log = Arc::new(TestLog::default());
        let (mut c, hold) = holding(&log);
        hold.require(5);
        assert!(write(&mut c, &mut cx, b"ALLOW").is_ready());
        assert!(flush(&mut c, &mut cx).is_pending());
        assert!(flush(&mut c, &mut cx).is_pending());
        log.fail();
        log.advance(4);
        assert!(matches!(flush(&mut c, &mut cx), Poll::Ready(Err(_))));
        assert!(matches!(
            Pin::new(&mut c).poll_shutdown(&mut cx),
            Poll::Ready(Err(_))
        ));
        assert!(c.get_ref().writes.is_empty());
        assert!(!c.get_ref().shut);
    }

    /// Held bytes count against the bound: a write past it waits for the commit, and a write
    /// as large as the bound does not go straight to the socket before the mark is durable.
    #[test]
    fn held_bytes_are_bounded_and_a_large_write_waits_for_the_mark() {
        let (waker, wakes) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let log = Arc::new(TestLog::default());
        let (mut c, hold) = holding(&log);
        hold.require(1);
        let most = vec![7u8; HIGH_WATER - 10];
        assert!(write(&mut c, &mut cx, &most).is_ready());
        assert!(write(&mut c, &mut cx, &[8; 20]).is_pending(), "bounded");
        assert!(c.get_ref().writes.is_empty());
        log.advance(1);
        assert_eq!(
            wakes.load(Ordering::SeqCst),
            1,
            "the commit wakes the writer"
        );
        assert!(matches!(
            write(&mut c, &mut cx, &[8; 20]),
            Poll::Ready(Ok(20))
        ));
        assert_eq!(c.get_ref().writes.concat(), most);
        hold.require(2);
        let big = vec![9u8; HIGH_WATER];
        assert!(write(&mut c, &mut cx, &big).is_pending(), "waits for 2");
        assert_eq!(
            c.get_ref().writes.concat(),
            [most.clone(), vec![8; 20]].concat(),
            "what was written before the mark went first"
        );
        log.advance(2);
        assert_eq!(
            wakes.load(Ordering::SeqCst),
            2,
            "the commit wakes the writer"
        );
        assert!(matches!(write(&mut c, &mut cx, &big), Poll::Ready(Ok(n)) if n == HIGH_WATER));
        assert_eq!(
            c.get_ref().writes.concat(),
            [most, vec![8; 20], big].concat()
        );
        // A shutdown waits for what is held too, and is woken by its commit.
        hold.require(3);
        assert!(write(&mut c, &mut cx, b"last").is_ready());
        assert!(Pin::new(&mut c).poll_shutdown(&mut cx).is_pending());
        assert!(!c.get_ref().shut);
        log.advance(3);
        assert_eq!(
            wakes.load(Ordering::SeqCst),
            3,
            "the commit wakes the shutdown"
        );
        assert!(matches!(
            Pin::new(&mut c).poll_shutdown(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(c.get_ref().writes.last().unwrap(), b"last");
        assert!(c.get_ref().shut);
    }

    /// A connection whose answers are held for `log`, at most `limit` without progress.
    fn holding_for(log: &Arc<TestLog>, limit: Duration) -> (Coalesced<Recorder>, crate::Hold) {
        let c = Coalesced::holding(
            Recorder::default(),
            Holding {
                durable: log.clone(),
                stall_limit: Some(limit),
            },
        );
        let hold = c.held.as_ref().unwrap().hold().clone();
        (c, hold)
    }

    /// A store that makes nothing durable for the stall limit ends the connection: the flush
    /// fails with `TimedOut` once the limit has passed, not before, and nothing held is sent.
    #[tokio::test(start_paused = true)]
    async fn a_store_that_commits_nothing_for_the_stall_limit_ends_the_connection() {
        let log = Arc::new(TestLog::default());
        let (c, hold) = holding_for(&log, Duration::from_secs(5));
        let mut c = c.with_peer(Some("10.1.2.3:40000".parse().unwrap()));
        hold.require(1);
        assert!(c.write_all(b"ALLOW").await.is_ok());
        let started = tokio::time::Instant::now();
        // Paused time: without a timer of the connection's own, the runtime would jump to this
        // hour's end instead.
        let e = tokio::time::timeout(
            Duration::from_secs(3600),
            poll_fn(|cx| Pin::new(&mut c).poll_flush(cx)),
        )
        .await
        .expect("the connection gave up on its own")
        .expect_err("nothing was made durable");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(e.to_string().contains("peer 10.1.2.3:40000"), "{e}");
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(5),
            "not before the limit"
        );
        assert!(c.get_ref().writes.is_empty(), "nothing held was sent");
        // The fact becoming durable afterwards does not revive it.
        log.advance(1);
        assert!(matches!(
            poll_fn(|cx| Pin::new(&mut c).poll_shutdown(cx)).await,
            Err(e) if e.kind() == io::ErrorKind::TimedOut
        ));
        assert!(c.get_ref().writes.is_empty());
    }

    /// The limit bounds a wait without progress, not the whole flush: a store that commits one
    /// of the connection's facts every 3 s keeps a 5 s limit from firing, however long the
    /// flush takes in all; and a connection that waited and was released starts its next wait
    /// with the whole limit.
    #[tokio::test(start_paused = true)]
    async fn each_commit_of_the_connection_s_facts_starts_the_limit_again() {
        let log = Arc::new(TestLog::default());
        let (mut c, hold) = holding_for(&log, Duration::from_secs(5));
        for seq in 1..=3 {
            hold.require(seq);
            assert!(c.write_all(format!("{seq};").as_bytes()).await.is_ok());
        }
        let commits = tokio::spawn({
            let log = log.clone();
            async move {
                for seq in 1..=3 {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    log.advance(seq);
                }
            }
        });
        let started = tokio::time::Instant::now();
        poll_fn(|cx| Pin::new(&mut c).poll_flush(cx))
            .await
            .expect("each wait was shorter than the limit");
        assert_eq!(started.elapsed(), Duration::from_secs(9));
        assert_eq!(c.get_ref().writes.concat(), b"1;2;3;");
        commits.await.unwrap();
        // Idle for longer than the limit, then a new wait: it gets the whole limit again.
        tokio::time::sleep(Duration::from_secs(60)).await;
        hold.require(4);
        assert!(c.write_all(b"4;").await.is_ok());
        let log4 = log.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(4_900)).await;
            log4.advance(4);
        });
        poll_fn(|cx| Pin::new(&mut c).poll_flush(cx))
            .await
            .expect("released 4.9 s into a 5 s limit");
        assert_eq!(c.get_ref().writes.concat(), b"1;2;3;4;");
    }

    /// A step of [`held_bytes_never_leave_early_and_all_arrive_in_order`].
    #[derive(Debug, Clone)]
    enum Step {
        /// `h2` writes this many bytes.
        Write(usize),
        /// A call marks the connection with the next fact.
        Mark,
        /// The store commits the next fact marked.
        Commit,
        /// The socket takes at most this many more bytes (`None`: any).
        Room(Option<usize>),
        Flush,
    }

    /// Every byte sent since the last check was accepted under a mark now durable.
    fn check(
        c: &Coalesced<Recorder>,
        tags: &[u64],
        checked: &mut usize,
        durable: u64,
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        let sent: usize = c.get_ref().writes.iter().map(Vec::len).sum();
        for (i, tag) in tags.iter().enumerate().take(sent).skip(*checked) {
            proptest::prop_assert!(
                *tag <= durable,
                "byte {} left before fact {} was durable",
                i,
                tag
            );
        }
        *checked = sent;
        Ok(())
    }

    /// Any interleaving of writes (small and past the bound), marks, commits, a socket that
    /// fills and empties, and flushes: no byte leaves before the fact marked when it was
    /// written is durable, and once everything is committed every byte arrives once, in order.
    #[test]
    fn held_bytes_never_leave_early_and_all_arrive_in_order() {
        use proptest::prelude::*;
        let step = prop_oneof![
            4 => (1usize..6_000).prop_map(Step::Write),
            1 => (HIGH_WATER..HIGH_WATER + 3_000).prop_map(Step::Write),
            2 => Just(Step::Mark),
            2 => Just(Step::Commit),
            1 => proptest::option::of(0usize..20_000).prop_map(Step::Room),
            3 => Just(Step::Flush),
        ];
        proptest!(|(steps in proptest::collection::vec(step, 1..120))| {
            let (waker, _) = counting_waker();
            let mut cx = Context::from_waker(&waker);
            let log = Arc::new(TestLog::default());
            let (mut c, hold) = holding(&log);
            let (mut marked, mut durable) = (0u64, 0u64);
            // Each byte accepted, and the mark it was accepted under.
            let (mut accepted, mut tags) = (Vec::<u8>::new(), Vec::<u64>::new());
            let mut checked = 0;
            for step in steps {
                match step {
                    Step::Write(len) => {
                        let data: Vec<u8> =
                            (accepted.len()..accepted.len() + len).map(|i| (i % 251) as u8).collect();
                        if let Poll::Ready(r) = write(&mut c, &mut cx, &data) {
                            let n = r.unwrap();
                            accepted.extend_from_slice(&data[..n]);
                            tags.extend(std::iter::repeat_n(marked, n));
                        }
                    }
                    Step::Mark => {
                        marked += 1;
                        hold.require(marked);
                    }
                    Step::Commit => {
                        durable = (durable + 1).min(marked);
                        log.advance(durable);
                    }
                    Step::Room(room) => c.inner.room = room,
                    Step::Flush => {
                        let _ = flush(&mut c, &mut cx);
                    }
                }
                check(&c, &tags, &mut checked, durable)?;
            }
            c.inner.room = None;
            log.advance(marked);
            for _ in 0..3 {
                if flush(&mut c, &mut cx).is_ready() {
                    break;
                }
            }
            check(&c, &tags, &mut checked, marked)?;
            prop_assert_eq!(c.get_ref().writes.concat(), accepted);
        });
    }

    /// A frame's worth buffered (a large response's DATA frame) is written by the flush at
    /// once: `h2` waits on that flush to encode the next frame.
    #[test]
    fn a_frame_s_worth_is_written_without_waiting_for_the_turn() {
        let (waker, wakes) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let mut c = Coalesced::new(Recorder::default());
        let frame = vec![5u8; WRITE_AT_ONCE];
        assert!(write(&mut c, &mut cx, &frame).is_ready());
        assert!(matches!(flush(&mut c, &mut cx), Poll::Ready(Ok(()))));
        assert_eq!(wakes.load(Ordering::SeqCst), 0, "no turn waited for");
        assert_eq!(c.get_ref().writes, vec![frame]);
    }

    #[tokio::test]
    async fn over_a_real_socket_every_byte_arrives_in_order() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            got
        });
        let (server, _) = listener.accept().await.unwrap();
        let mut c = Coalesced::new(server);
        let mut sent = Vec::new();
        for i in 0..200u32 {
            let chunk = vec![(i % 251) as u8; 1 + (i as usize * 997) % 5000];
            c.write_all(&chunk).await.unwrap();
            sent.extend_from_slice(&chunk);
            if i % 7 == 0 {
                c.flush().await.unwrap();
            }
        }
        poll_fn(|cx| Pin::new(&mut c).poll_shutdown(cx))
            .await
            .unwrap();
        assert_eq!(client.await.unwrap(), sent);
    }
}
