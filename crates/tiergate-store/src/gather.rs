//! How a Redis batcher gathers a round: the commands one script call carries.
//!
//! With `appendfsync always` every script call is an `fsync` and a round trip, and Redis spends
//! about the same CPU on a round whatever it carries (BENCHMARKS.md, "Redis: a round waits for
//! the wave"), so Redis's CPU per decision follows the round's size. Two steps make rounds
//! larger without making a lone call wait:
//!
//! 1. **Turns.** The batcher lets the runtime's other ready tasks run (calls being decided,
//!    whose commands are about to join) and takes what they add, for as long as each turn adds
//!    something ([`GATHER_YIELDS`], [`GATHER_MAX`]). An idle sidecar pays one turn.
//! 2. **Filling.** Under load the calls come back in waves: a round's answers go out together,
//!    the callers send their next calls together, and the round sent while that wave is still
//!    being decoded carries a handful of commands while the wave piles into the one after it
//!    (rounds of 210, 3, 91, … under `MONITOR` at 256 calls in flight). So a round much
//!    smaller than the one before it waits, up to [`Fill::wait`], until it holds
//!    [`FILL_SHARE`] of that round's commands. Two guards keep the wait where it pays:
//!    - it applies only after a round of at least [`FILL_SIBLINGS`] commands answered less
//!      than the wait ago (the batcher forgets a round after a quiet spell, and a failed one),
//!      as PostgreSQL's `commit_delay` applies only with `commit_siblings` other transactions
//!      active: a lone call, and a call after a quiet spell, never waits. A moderate but bursty
//!      load whose rounds carry 16 or more does wait (BENCHMARKS.md measures the cost);
//!    - the share is less than one: with steady arrivals the queue at a round's start is
//!      about what the previous round carried, so a round rarely waits, and a wait does not
//!      carry over. (With a share of one, a round that waited would make the next as large,
//!      so that one would wait as long, and a steady moderate load would pay the whole wait
//!      on every call.)

use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Commands in one script call at most.
pub(crate) const BATCH: usize = 256;

/// Most times a batcher lets the runtime's other ready tasks run before it sends a round.
const GATHER_YIELDS: usize = 16;

/// Longest a batcher takes turns: a turn lasts until the worker's other ready tasks have run,
/// which under heavy load can be long, and a round should not wait on many of them.
const GATHER_MAX: Duration = Duration::from_millis(1);

/// Commands the previous round must have carried for the next to wait and fill: below it,
/// few calls are on their way and a wait would add latency for little.
const FILL_SIBLINGS: usize = 16;

/// The share of the previous round's commands a round waits for (numerator, denominator):
/// three quarters, below one so that a wait does not carry over (module doc).
const FILL_SHARE: (usize, usize) = (3, 4);

/// How a round may wait to fill, from the size of the round before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fill {
    /// Commands the previous round carried.
    previous: usize,
    /// The longest a round waits to fill, from when its first command was taken; zero: never.
    wait: Duration,
}

impl Fill {
    /// Commands this round waits for (never past [`BATCH`]: `gather` stops there): none after
    /// a light round or with no wait configured.
    pub(crate) fn want(self) -> usize {
        if self.wait.is_zero() || self.previous < FILL_SIBLINGS {
            return 0;
        }
        self.previous * FILL_SHARE.0 / FILL_SHARE.1
    }
}

/// What a batcher remembers of its last round, to tell how the next may fill.
#[derive(Debug)]
pub(crate) struct LastRound {
    carried: usize,
    answered: Instant,
    wait: Duration,
}

impl LastRound {
    /// No round yet; rounds may wait up to `wait` to fill.
    pub(crate) fn new(wait: Duration) -> Self {
        LastRound {
            carried: 0,
            answered: Instant::now(),
            wait,
        }
    }

    /// How a round whose first command was taken at `now` may fill. After a quiet spell
    /// longer than the wait, the last round's wave has come and gone: the call that starts
    /// the next busy spell does not wait for it.
    pub(crate) fn fill(&self, now: Instant) -> Fill {
        let quiet = now.saturating_duration_since(self.answered) > self.wait;
        Fill {
            previous: if quiet { 0 } else { self.carried },
            wait: self.wait,
        }
    }

    /// A round of `n` commands was answered at `now`; `ok`: it succeeded (a failed round's
    /// callers get an error, and no wave follows it).
    pub(crate) fn answered(&mut self, n: usize, ok: bool, now: Instant) {
        self.carried = if ok { n } else { 0 };
        self.answered = now;
    }
}

/// Moves every command waiting in `rx` into `batch`, up to [`BATCH`]; true if it moved any.
fn drain<T>(rx: &mut mpsc::Receiver<T>, batch: &mut Vec<T>) -> bool {
    let before = batch.len();
    while batch.len() < BATCH {
        match rx.try_recv() {
            Ok(c) => batch.push(c),
            Err(_) => break,
        }
    }
    batch.len() > before
}

/// Adds to `batch` (which holds the round's first commands) what should go with them: the
/// turns, then the fill (module doc). Never more than [`BATCH`] commands.
pub(crate) async fn gather<T>(rx: &mut mpsc::Receiver<T>, batch: &mut Vec<T>, fill: Fill) {
    let start = Instant::now();
    for _ in 0..GATHER_YIELDS {
        if batch.len() >= BATCH || start.elapsed() >= GATHER_MAX {
            break;
        }
        tokio::task::yield_now().await;
        if !drain(rx, batch) {
            break;
        }
    }
    let want = fill.want();
    let deadline = start + fill.wait;
    while batch.len() < want.min(BATCH) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(c)) => {
                batch.push(c);
                drain(rx, batch);
            }
            // The wait is over, or every sender is gone.
            Ok(None) | Err(_) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_FILL: Fill = Fill {
        previous: 0,
        wait: Duration::ZERO,
    };

    /// A round takes what the runtime's other tasks add while they run, and stops at the first
    /// turn that adds nothing. (Time is paused so that a busy machine cannot end the turns
    /// early by [`GATHER_MAX`].)
    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_round_gathers_while_other_tasks_add_to_it() {
        let (tx, mut rx) = mpsc::channel(64);
        tx.send(0u32).await.unwrap();
        let producer = tokio::spawn(async move {
            for i in 1..=5 {
                tx.send(i).await.unwrap();
                tokio::task::yield_now().await;
            }
            // Gone quiet: later sends are the next round's.
            tokio::time::sleep(Duration::from_millis(50)).await;
            tx.send(99).await.unwrap();
        });
        let mut batch = Vec::new();
        rx.recv_many(&mut batch, BATCH).await;
        gather(&mut rx, &mut batch, NO_FILL).await;
        assert_eq!(batch, vec![0, 1, 2, 3, 4, 5]);
        producer.await.unwrap();
        let mut next = Vec::new();
        rx.recv_many(&mut next, BATCH).await;
        gather(&mut rx, &mut next, NO_FILL).await;
        assert_eq!(next, vec![99]);
    }

    /// Never more than a round holds, and never more than [`GATHER_YIELDS`] turns.
    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_round_is_bounded() {
        let (tx, mut rx) = mpsc::channel(4 * BATCH);
        for i in 0..BATCH + 10 {
            tx.send(i).await.unwrap();
        }
        // Gone, so that a fill past the bound would take the rest rather than wait.
        drop(tx);
        let mut batch = Vec::new();
        rx.recv_many(&mut batch, 1).await;
        let fill = Fill {
            previous: 4 * BATCH,
            wait: Duration::from_secs(60),
        };
        gather(&mut rx, &mut batch, fill).await;
        assert_eq!(batch.len(), BATCH, "a fill never passes a round's bound");
        let (tx, mut rx) = mpsc::channel(1024);
        let producer = tokio::spawn(async move {
            for i in 0..1000u32 {
                if tx.send(i).await.is_err() {
                    return;
                }
                tokio::task::yield_now().await;
            }
        });
        let mut batch = Vec::new();
        rx.recv_many(&mut batch, 1).await;
        gather(&mut rx, &mut batch, NO_FILL).await;
        assert!(
            batch.len() <= 1 + GATHER_YIELDS,
            "{} after {GATHER_YIELDS} turns",
            batch.len()
        );
        drop(rx);
        producer.await.unwrap();
    }

    /// After a round of 40, a round of one waits for the wave: it goes once it holds 30 (three
    /// quarters of 40), before its wait is over, and leaves the rest to the next round.
    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_small_round_after_a_large_one_waits_for_the_wave() {
        let (tx, mut rx) = mpsc::channel(64);
        tx.send(0u32).await.unwrap();
        let producer = tokio::spawn(async move {
            // The wave: decoded one by one, a millisecond apart (the timer's grain).
            for i in 1..40 {
                tokio::time::sleep(Duration::from_millis(1)).await;
                tx.send(i).await.unwrap();
            }
        });
        let start = tokio::time::Instant::now();
        let mut batch = Vec::new();
        rx.recv_many(&mut batch, BATCH).await;
        let fill = Fill {
            previous: 40,
            wait: Duration::from_millis(100),
        };
        gather(&mut rx, &mut batch, fill).await;
        assert_eq!(batch, (0..30).collect::<Vec<_>>());
        assert!(start.elapsed() < fill.wait, "{:?}", start.elapsed());
        producer.await.unwrap();
    }

    /// A wave that never comes costs the wait and no more; the round goes with what it holds.
    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_fill_waits_no_longer_than_its_wait() {
        let (tx, mut rx) = mpsc::channel(64);
        tx.send(0u32).await.unwrap();
        let start = tokio::time::Instant::now();
        let mut batch = Vec::new();
        rx.recv_many(&mut batch, BATCH).await;
        let fill = Fill {
            previous: 100,
            wait: Duration::from_millis(3),
        };
        // A fill without its deadline would wait forever: fail instead.
        tokio::time::timeout(Duration::from_secs(1), gather(&mut rx, &mut batch, fill))
            .await
            .expect("the fill ends at its wait");
        assert_eq!(batch, vec![0]);
        let waited = start.elapsed();
        assert!(
            waited >= fill.wait && waited < fill.wait * 2,
            "waited {waited:?}"
        );
        // Every sender gone ends the wait at once.
        drop(tx);
        let started = tokio::time::Instant::now();
        gather(&mut rx, &mut batch, fill).await;
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    /// A round answered within the wait sets the next round's fill; a quiet spell longer than
    /// the wait, or a failed round, forgets it.
    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn the_last_round_is_forgotten_after_a_quiet_spell_or_a_failure() {
        let wait = Duration::from_millis(3);
        let mut last = LastRound::new(wait);
        assert_eq!(last.fill(Instant::now()).previous, 0, "no round yet");
        last.answered(100, true, Instant::now());
        let fill = last.fill(Instant::now() + wait);
        assert_eq!((fill.previous, fill.wait), (100, wait));
        assert_eq!(fill.want(), 75);
        assert_eq!(
            last.fill(Instant::now() + wait + Duration::from_millis(1))
                .want(),
            0,
            "quiet spell"
        );
        last.answered(100, false, Instant::now());
        assert_eq!(last.fill(Instant::now()).want(), 0, "failed round");
    }

    /// After a light round, or with no wait configured, a round goes at once: a lone call
    /// never waits to fill.
    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn light_load_or_no_wait_sends_at_once() {
        for fill in [
            Fill {
                previous: FILL_SIBLINGS - 1,
                wait: Duration::from_millis(3),
            },
            Fill {
                previous: 200,
                wait: Duration::ZERO,
            },
        ] {
            let (tx, mut rx) = mpsc::channel(64);
            tx.send(0u32).await.unwrap();
            let start = tokio::time::Instant::now();
            let mut batch = Vec::new();
            rx.recv_many(&mut batch, BATCH).await;
            gather(&mut rx, &mut batch, fill).await;
            assert_eq!(batch, vec![0], "{fill:?}");
            assert_eq!(start.elapsed(), Duration::ZERO, "{fill:?}");
            assert_eq!(fill.want(), 0);
        }
        let fill = Fill {
            previous: FILL_SIBLINGS,
            wait: Duration::from_millis(3),
        };
        assert_eq!(fill.want(), FILL_SIBLINGS * 3 / 4);
    }
}
