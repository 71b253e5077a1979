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
//! Measured after (the same `perf stat`): 0.053 (embedded) and 0.039 (memory) writes per call.
//! BENCHMARKS.md, "Responses coalesced per connection", has the calls/s and CPU figures.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

use crate::turn::Turn;

/// The most bytes a connection's buffer holds, sent or not: a write that would take it past
/// this first sends what is buffered, and a write this large or larger goes straight to the
/// socket. It bounds each connection's memory. (`h2` hands over at most its own buffer or one
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
    /// Bytes accepted since the buffer was last empty; `buf[sent..]` is what is not yet written.
    buf: Vec<u8>,
    sent: usize,
    /// The runtime's turn a flush waits for before it writes.
    turn: Turn,
    /// The turn came and the buffer is being written (the socket was full): the rest goes when
    /// the socket has room, without waiting for another turn.
    draining: bool,
}

impl<T> Coalesced<T> {
    /// Wraps a connection.
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            sent: 0,
            turn: Turn::default(),
            draining: false,
        }
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncWrite + Unpin> Coalesced<T> {
    /// Writes what is buffered, until all of it is sent or the socket is full.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.buf.clear();
        self.buf.shrink_to(KEEP);
        self.sent = 0;
        // Whatever flush was waiting, for its turn or for the socket, has nothing left to do.
        self.draining = false;
        self.turn.disarm();
        Poll::Ready(Ok(()))
    }

    /// Room for `len` more bytes: what is buffered is sent first if the buffer (its bytes
    /// already sent included, which stay until it is empty) would go past [`HIGH_WATER`].
    /// Ready with whether they go straight to the socket (the buffer is empty and they would
    /// fill it alone) rather than into the buffer.
    fn poll_room(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<bool>> {
        let held = self.buf.len();
        if held > 0 && held + len > HIGH_WATER {
            ready!(self.poll_drain(cx))?;
        }
        Poll::Ready(Ok(len >= HIGH_WATER))
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
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Waker;
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
