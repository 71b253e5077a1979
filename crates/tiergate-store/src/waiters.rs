//! Callers waiting for their facts to be durable, each woken once: when its fact is.
//!
//! A broadcast ("the durable sequence moved") would wake every waiting call on every commit,
//! most of them to go back to sleep; with 64 calls in flight and a commit every half millisecond
//! that is most of a core on a small machine. Here a commit wakes exactly the calls it made
//! durable.

use std::collections::BTreeMap;

use parking_lot::Mutex;
use tokio::sync::oneshot;

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
    durable: u64,
    failed: bool,
    waiting: BTreeMap<u64, Vec<oneshot::Sender<Result<(), WaitError>>>>,
}

/// See the module docs.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    inner: Mutex<Inner>,
}

impl Waiters {
    /// Everything up to `seq` is durable: wakes whoever waits for it.
    pub(crate) fn advance(&self, seq: u64) {
        let woken = {
            let mut g = self.inner.lock();
            g.durable = g.durable.max(seq);
            let later = g.waiting.split_off(&(seq + 1));
            std::mem::replace(&mut g.waiting, later)
        };
        // A send fails only when the waiting call was cancelled: nobody is left to tell.
        for tx in woken.into_values().flatten() {
            let _ = tx.send(Ok(()));
        }
    }

    /// A commit failed: wakes everyone with the error, and refuses later waits.
    pub(crate) fn fail(&self) {
        let woken = {
            let mut g = self.inner.lock();
            g.failed = true;
            std::mem::take(&mut g.waiting)
        };
        for tx in woken.into_values().flatten() {
            let _ = tx.send(Err(WaitError::Failed));
        }
    }

    /// Waits until `seq` is durable.
    pub(crate) async fn wait(&self, seq: u64) -> Result<(), WaitError> {
        let rx = {
            let mut g = self.inner.lock();
            if g.failed {
                return Err(WaitError::Failed);
            }
            if g.durable >= seq {
                return Ok(());
            }
            let (tx, rx) = oneshot::channel();
            g.waiting.entry(seq).or_default().push(tx);
            rx
        };
        rx.await.unwrap_or(Err(WaitError::Stopped))
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
}
