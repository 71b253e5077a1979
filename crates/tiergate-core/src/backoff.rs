//! A capped map of back-offs: until when a key (a recipient, or a number-recipient pair) is held
//! back, and how many times it was hit.
//!
//! WhatsApp's answers 131056 (pair rate) and 131049/131050 (marketing) name one recipient, and a
//! sender can provoke them for any number of recipients, so the map is bounded: when it is full,
//! entries that ended are dropped, and if all are live the one that ends first goes.

use hashbrown::HashMap;

/// Back-offs by key: (until, hits).
#[derive(Debug, Clone, Default)]
pub(crate) struct Backoffs<K: std::hash::Hash + Eq> {
    map: HashMap<K, (u64, u8), foldhash::fast::RandomState>,
}

impl<K: std::hash::Hash + Eq + Copy> Backoffs<K> {
    /// Until when `k` is backed off, if it is at `now`.
    #[inline]
    pub(crate) fn until(&self, k: &K, now: u64) -> Option<u64> {
        if self.map.is_empty() {
            return None;
        }
        self.map.get(k).map(|&(u, _)| u).filter(|&u| u > now)
    }

    /// Records a hit; `wait(hits_before)` gives the back-off. Returns the wait.
    pub(crate) fn hit(&mut self, k: K, now: u64, cap: usize, wait: impl Fn(u8) -> u64) -> u64 {
        if self.map.len() >= cap && !self.map.contains_key(&k) {
            self.map.retain(|_, (u, _)| *u > now);
            if self.map.len() >= cap {
                // Still full of live entries: drop the one that ends first.
                if let Some(first) = self
                    .map
                    .iter()
                    .min_by_key(|(_, (u, _))| *u)
                    .map(|(k, _)| *k)
                {
                    self.map.remove(&first);
                }
            }
        }
        let (_, hits) = self.map.get(&k).copied().unwrap_or((0, 0));
        let ms = wait(hits);
        self.map
            .insert(k, (now.saturating_add(ms), hits.saturating_add(1)));
        ms
    }

    /// The entries, for a snapshot.
    pub(crate) fn entries(&self) -> Vec<(K, (u64, u8))> {
        self.map.iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// Back-offs holding `entries` (from a snapshot).
    pub(crate) fn from_entries(entries: Vec<(K, (u64, u8))>) -> Self {
        Self {
            map: entries.into_iter().collect(),
        }
    }

    /// How many are in force at `now` (for `GetOrg`).
    pub(crate) fn live(&self, now: u64) -> usize {
        self.map.values().filter(|(u, _)| *u > now).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoffs_grow_and_stay_bounded() {
        let mut b: Backoffs<u64> = Backoffs::default();
        let w = |x: u8| 1_000 * 4u64.pow(u32::from(x));
        assert_eq!(b.hit(7, 0, 2, w), 1_000);
        assert_eq!(b.hit(7, 0, 2, w), 4_000);
        assert_eq!(b.until(&7, 0), Some(4_000));
        assert_eq!(b.until(&7, 4_000), None);
        b.hit(8, 0, 2, w);
        b.hit(9, 0, 2, w);
        assert!(b.map.len() <= 2);
        assert_eq!(b.live(0), 2);
    }
}
