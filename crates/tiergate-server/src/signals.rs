//! Per-org wake-ups for waiting sends: "something changed in this org that may free what you
//! wait for" (a slot given back, a pause lifted, a tier raised).
//!
//! A waiting send sleeps until its retry-after; a change applied through the gate can make that
//! too late. Only orgs with a waiting send on this process have an entry, so a change to any
//! other org costs one map lookup and an unknown org id grows nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

/// See the module docs.
#[derive(Debug, Default)]
pub struct Signals {
    orgs: Mutex<HashMap<String, (Arc<Notify>, usize)>>,
}

/// An org's signal, held while a send of it waits; the entry goes when the last one drops.
#[derive(Debug)]
pub struct Subscription {
    signals: Arc<Signals>,
    org: String,
    notify: Arc<Notify>,
}

impl Signals {
    /// Listens to `org` until the subscription drops.
    pub fn subscribe(self: &Arc<Self>, org: &str) -> Subscription {
        let mut orgs = self.orgs.lock().unwrap_or_else(PoisonError::into_inner);
        let (notify, n) = orgs
            .entry(org.to_owned())
            .or_insert_with(|| (Arc::new(Notify::new()), 0));
        *n += 1;
        Subscription {
            signals: self.clone(),
            org: org.to_owned(),
            notify: notify.clone(),
        }
    }

    /// Wakes every send of `org` waiting on its signal now.
    pub fn poke(&self, org: &str) {
        let orgs = self.orgs.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((notify, _)) = orgs.get(org) {
            notify.notify_waiters();
        }
    }

    /// Wakes every waiting send (a manual clock moved).
    pub fn poke_all(&self) {
        let orgs = self.orgs.lock().unwrap_or_else(PoisonError::into_inner);
        for (notify, _) in orgs.values() {
            notify.notify_waiters();
        }
    }

    /// How many orgs have a waiting send here.
    pub fn orgs(&self) -> usize {
        self.orgs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Subscription {
    /// The org's signal.
    pub fn notify(&self) -> &Notify {
        &self.notify
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut orgs = self
            .signals
            .orgs
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((_, n)) = orgs.get_mut(&self.org) {
            *n -= 1;
            if *n == 0 {
                orgs.remove(&self.org);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_poke_wakes_the_orgs_listeners_and_entries_go_with_them() {
        let s = Arc::new(Signals::default());
        let a = s.subscribe("a");
        let b = s.subscribe("a");
        assert_eq!(s.orgs(), 1);
        {
            let woken = a.notify().notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            s.poke("other");
            s.poke("a");
            woken.await;
        }
        drop(a);
        assert_eq!(s.orgs(), 1);
        drop(b);
        assert_eq!(s.orgs(), 0);
    }
}
