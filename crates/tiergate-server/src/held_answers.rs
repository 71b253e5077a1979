//! The embedded store's commits, as what a gRPC connection's held answers wait for
//! (`tiergate_transport::hold`).
//!
//! On the embedded store an allowed `Acquire` (or an `AcquireBatch` with an allowed item), or a
//! `Report`, does not wait for its commit in its own task: it marks its connection with the
//! fact its answer acknowledges ([`crate::gate::Gate::decide_held`], `decide_batch_held`,
//! `apply_held`), and the connection sends the answer's
//! bytes once the store says that fact is durable. The promise is the same (no answer that
//! acknowledges a change leaves before the change is on disk); the cost per call is lower
//! (BENCHMARKS.md, "Answers held on the connection").

use std::io;
use std::sync::Arc;
use std::task::{Context, Poll};

use tiergate_store::{EmbeddedStore, ErrorChain};
use tiergate_transport::Durable;

/// See the module docs.
#[derive(Debug)]
pub struct StoreCommits(pub Arc<EmbeddedStore>);

impl Durable for StoreCommits {
    fn is_durable(&self, seq: u64) -> bool {
        self.0.is_durable(seq)
    }

    fn poll_durable(&self, seq: u64, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.poll_durable(seq, cx).map_err(|e| {
            // The connection ends with this; its held answers are never sent.
            tracing::error!(error = %ErrorChain(&e), "answers held for a failed commit are dropped");
            io::Error::other(e)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::Gate;
    use tiergate_core::{Change, Decision, Fact, Policy, SendOutcome, SendRequest, Tier};
    use tiergate_testkit::{engine_at_t0, org};
    use tiergate_transport::Hold;

    fn send(to: &str) -> SendRequest<'_> {
        tiergate_testkit::send("held", to)
    }

    /// A gate on an embedded store of its own (in the returned directory) holding org `held`.
    fn embedded_gate(name: &str) -> (Gate, Arc<EmbeddedStore>, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("tiergate-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (engine, _) = engine_at_t0(Policy::default());
        let (store, _) = EmbeddedStore::open_for(&dir, &engine).unwrap();
        engine.put_org(org("held", Tier::Tier250)).unwrap();
        (
            Gate::local(Arc::new(engine), Some(store.clone())),
            store,
            dir,
        )
    }

    /// An allowed send marks its connection with its own fact (or a later one), and the
    /// store's commit releases the mark; so does its report; a denial and a memory gate mark
    /// nothing.
    #[tokio::test]
    async fn an_allowed_send_marks_its_connection_with_its_fact_and_a_denial_does_not() {
        let (gate, store, dir) = embedded_gate("held");
        let hold = Hold::default();
        let before = store.issued();
        let allowed = gate
            .decide_held(&send("14155550101"), Some(&hold))
            .await
            .unwrap();
        assert!(allowed.is_allowed());
        let mark = hold.mark();
        assert!(mark > before, "the send's fact is at most the mark");
        assert_eq!(mark, store.issued());
        let commits = gate.held_answers().expect("the embedded store's");
        std::future::poll_fn(|cx| commits.poll_durable(mark, cx))
            .await
            .unwrap();
        assert!(commits.is_durable(mark));
        // The same recipient again at once: the pair rate refuses it.
        let denied = gate
            .decide_held(&send("14155550101"), Some(&hold))
            .await
            .unwrap();
        assert!(!denied.is_allowed(), "{denied:?}");
        assert_eq!(hold.mark(), mark, "a denial acknowledges nothing");
        // The send's report, on another connection: marked with its own, later fact.
        let report = Fact::new(
            0,
            "held".to_owned(),
            Change::Report {
                seq: allowed.permit.as_ref().unwrap().seq,
                outcome: SendOutcome::Sent,
            },
        );
        let other = Hold::default();
        gate.apply_held(report, Some(&other)).await.unwrap();
        assert!(other.mark() > mark, "a report marks its own fact");
        assert_eq!(other.mark(), store.issued());
        store.close();
        let _ = std::fs::remove_dir_all(&dir);

        let (engine, _) = engine_at_t0(Policy::default());
        engine.put_org(org("held", Tier::Tier250)).unwrap();
        let memory = Gate::local(Arc::new(engine), None);
        assert!(memory.held_answers().is_none());
        let hold = Hold::default();
        let d = memory.decide_held(&send("14155550101"), Some(&hold)).await;
        assert!(d.unwrap().is_allowed());
        assert_eq!(hold.mark(), 0, "memory holds nothing back");
    }

    /// A batch with an allowed item marks its connection with the store's last fact, as a lone
    /// send does, and the commit releases it; a batch of denials marks nothing.
    #[tokio::test]
    async fn a_batch_with_an_allowed_item_marks_its_connection_and_one_of_denials_does_not() {
        let (gate, store, dir) = embedded_gate("held-batch");
        let hold = Hold::default();
        let before = store.issued();
        // The second send to the same recipient is refused by the pair rate.
        let batch = [
            send("14155550101"),
            send("14155550102"),
            send("14155550101"),
        ];
        let ds = gate.decide_batch_held(&batch, Some(&hold)).await.unwrap();
        let allowed: Vec<bool> = ds.iter().map(Decision::is_allowed).collect();
        assert_eq!(allowed, [true, true, false]);
        let mark = hold.mark();
        assert!(
            mark >= before + 2,
            "both allowed sends' facts are at most the mark"
        );
        assert_eq!(mark, store.issued());
        let commits = gate.held_answers().unwrap();
        std::future::poll_fn(|cx| commits.poll_durable(mark, cx))
            .await
            .unwrap();
        let other = Hold::default();
        let ds = gate
            .decide_batch_held(&[send("14155550101")], Some(&other))
            .await
            .unwrap();
        assert!(!ds[0].is_allowed(), "{ds:?}");
        assert_eq!(other.mark(), 0, "a batch of denials acknowledges nothing");
        store.close();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
