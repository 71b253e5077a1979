//! Callers waiting for their facts to be durable, each woken once: when its fact is.
//!
//! A broadcast ("the durable sequence moved") would wake every waiting call on every commit,
//! most of them to go back to sleep; with 64 calls in flight and a commit every half millisecond
//! that is most of a core on a small machine. Here a commit wakes exactly the calls it made
//! durable. The waiters are calls that wait in their own task, and gRPC connections that hold
//! their answers back until the facts those acknowledge are durable (one waker per
//! connection; `tiergate_transport::hold`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;

/// Why a wait ended without the fact being durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaitError {
    /// A commit failed: nothing after it is acknowledged.
    Failed,
    /// The writer stopped.
    Stopped,
}

#[derive(Debug, Default)]
struct Inner {
    failed: bool,
    stopped: bool,
    /// Waiting tasks by the fact they wait for, in order. Facts are numbered in the order they
    /// are recorded, so a new waiter nearly always goes at the back: no allocation per wait
    /// (a `oneshot` and a map node each were measured on the embedded store's hot path).
    waiting: VecDeque<(u64, Waker)>,
}

/// See the module docs.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    inner: Mutex<Inner>,
    /// Every fact up to this is durable. Written under `inner`'s lock, before the waiters it
    /// concerns are taken from it; read without the lock by [`Waiters::is_durable`].
    durable: AtomicU64,
}

impl Waiters {
    /// Everything up to `seq` is durable: wakes whoever waits for it.
    pub(crate) fn advance(&self, seq: u64) {
        let woken: Vec<Waker> = {
            let mut g = self.inner.lock();
            self.durable.fetch_max(seq, Ordering::Release);
            let n = g.waiting.partition_point(|(s, _)| *s <= seq);
            g.waiting.drain(..n).map(|(_, w)| w).collect()
        };
        // A waiter whose call was cancelled meanwhile is woken for nothing: harmless.
        woken.into_iter().for_each(Waker::wake);
    }

    /// Ends every wait, present and future, with `why`.
    fn end(&self, why: WaitError) {
        let woken = {
            let mut g = self.inner.lock();
            match why {
                WaitError::Failed => g.failed = true,
                WaitError::Stopped => g.stopped = true,
            }
            std::mem::take(&mut g.waiting)
        };
        woken.into_iter().for_each(|(_, w)| w.wake());
    }

    /// A commit failed: wakes everyone with the error, and refuses later waits.
    pub(crate) fn fail(&self) {
        self.end(WaitError::Failed);
    }

    /// The writer is gone (closed, or it panicked): whoever waits for a fact not yet durable
    /// is told so instead of waiting forever.
    pub(crate) fn stop(&self) {
        self.end(WaitError::Stopped);
    }

    /// Whether `seq` is durable, without the lock (a failure since is not looked at: what
    /// is durable stays so).
    pub(crate) fn is_durable(&self, seq: u64) -> bool {
        self.durable.load(Ordering::Acquire) >= seq
    }

    /// Waits until `seq` is durable.
    #[cfg(test)]
    pub(crate) fn wait(
        &self,
        seq: u64,
    ) -> impl std::future::Future<Output = Result<(), WaitError>> + '_ {
        std::future::poll_fn(move |cx| self.poll_wait(seq, cx))
    }

    /// Ready once `seq` is durable, or with why it never will be; pending until then, `cx`'s
    /// waker queued to be woken when it is.
    pub(crate) fn poll_wait(&self, seq: u64, cx: &mut Context<'_>) -> Poll<Result<(), WaitError>> {
        let mut g = self.inner.lock();
        if g.failed {
            return Poll::Ready(Err(WaitError::Failed));
        }
        if self.is_durable(seq) {
            return Poll::Ready(Ok(()));
        }
        if g.stopped {
            return Poll::Ready(Err(WaitError::Stopped));
        }
        // A poll again (say, inside a `select!`) finds its entry among those of its fact
        // rather than adding one more each time.
        let end = g.waiting.partition_point(|(s, _)| *s <= seq);
        let start = g.waiting.partition_point(|(s, _)| *s < seq);
        if !g
            .waiting
            .range(start..end)
            .any(|(_, w)| w.will_wake(cx.waker()))
        {
            g.waiting.insert(end, (seq, cx.waker().clone()));
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wakes_only_what_became_durable() {
        let w = std::sync::Arc::new(Waiters::default());
        let early = tokio::spawn({
            let w = w.clone();
            async move { w.wait(3).await }
        });
        let late = tokio::spawn({
            let w = w.clone();
            async move { w.wait(9).await }
        });
        tokio::task::yield_now().await;
        while w.inner.lock().waiting.len() < 2 {
            tokio::task::yield_now().await;
        }
        w.advance(5);
        assert_eq!(early.await.unwrap(), Ok(()));
        assert!(!late.is_finished());
        assert_eq!(w.inner.lock().waiting.len(), 1);
        assert_eq!(w.wait(4).await, Ok(()), "already durable");
        w.fail();
        assert_eq!(late.await.unwrap(), Err(WaitError::Failed));
        assert_eq!(w.wait(1).await, Err(WaitError::Failed));
    }

    #[tokio::test]
    async fn waits_out_of_order_are_woken_in_order_and_a_stop_ends_the_rest() {
        let w = std::sync::Arc::new(Waiters::default());
        let spawn = |seq| {
            let w = w.clone();
            tokio::spawn(async move { w.wait(seq).await })
        };
        let (a, b, c) = (spawn(7), spawn(2), spawn(5));
        while w.inner.lock().waiting.len() < 3 {
            tokio::task::yield_now().await;
        }
        let order: Vec<u64> = w.inner.lock().waiting.iter().map(|e| e.0).collect();
        assert_eq!(order, vec![2, 5, 7]);
        w.advance(5);
        assert_eq!(b.await.unwrap(), Ok(()));
        assert_eq!(c.await.unwrap(), Ok(()));
        w.stop();
        assert_eq!(a.await.unwrap(), Err(WaitError::Stopped));
        assert_eq!(w.wait(3).await, Ok(()), "what was durable stays so");
        assert_eq!(w.wait(6).await, Err(WaitError::Stopped));
    }
}
