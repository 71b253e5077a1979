//! A person's links (BSUID key → person key), kept compact: 16 bytes a link.
//!
//! A hash map would spend about 22 bytes a link (16-byte buckets, a control byte, and
//! power-of-two growth), which would put a recipient named by phone and BSUID over SPEC's 64
//! bytes. Links are looked up only for sends that name a BSUID without a phone, so a sorted
//! vector searched in O(log n) is enough: new links collect in a small buffer and are merged
//! into the sorted run in O(n) once it fills, into a vector of exactly the needed size.

/// Links waiting in the buffer before a merge.
const BUFFER: usize = 256;

/// BSUID key → person key.
#[derive(Debug, Default, Clone)]
pub(crate) struct Links {
    sorted: Vec<(u64, u64)>,
    recent: Vec<(u64, u64)>,
}

impl Links {
    /// The person key of `key`, if linked.
    pub(crate) fn get(&self, key: u64) -> Option<u64> {
        if let Some(&(_, v)) = self.recent.iter().find(|(k, _)| *k == key) {
            return Some(v);
        }
        self.sorted
            .binary_search_by_key(&key, |&(k, _)| k)
            .ok()
            .map(|i| self.sorted[i].1)
    }

    /// Links `key` to `value`, replacing an earlier link.
    pub(crate) fn insert(&mut self, key: u64, value: u64) {
        if let Some(e) = self.recent.iter_mut().find(|(k, _)| *k == key) {
            e.1 = value;
            return;
        }
        if let Ok(i) = self.sorted.binary_search_by_key(&key, |&(k, _)| k) {
            self.sorted[i].1 = value;
            return;
        }
        self.recent.push((key, value));
        if self.recent.len() >= BUFFER {
            self.merge();
        }
    }

    /// How many links are kept.
    pub(crate) fn len(&self) -> usize {
        self.sorted.len() + self.recent.len()
    }

    /// Every link, ordered by key (for snapshots).
    pub(crate) fn entries(&self) -> Vec<(u64, u64)> {
        let mut all = self.sorted.clone();
        all.extend_from_slice(&self.recent);
        all.sort_unstable();
        all
    }

    /// Links holding `entries` (from a snapshot).
    pub(crate) fn from_entries(mut entries: Vec<(u64, u64)>) -> Self {
        entries.sort_unstable();
        entries.dedup_by_key(|e| e.0);
        entries.shrink_to_fit();
        Links {
            sorted: entries,
            recent: Vec::new(),
        }
    }

    /// Merges the buffer into the sorted run (keys are distinct: `insert` checked both).
    fn merge(&mut self) {
        self.recent.sort_unstable();
        let mut out = Vec::with_capacity(self.sorted.len() + self.recent.len());
        let (a, b) = (&self.sorted, &self.recent);
        let (mut i, mut j) = (0, 0);
        while i < a.len() && j < b.len() {
            if a[i].0 < b[j].0 {
                out.push(a[i]);
                i += 1;
            } else {
                out.push(b[j]);
                j += 1;
            }
        }
        out.extend_from_slice(&a[i..]);
        out.extend_from_slice(&b[j..]);
        self.sorted = out;
        self.recent.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_found_before_and_after_merges_and_replaced() {
        let mut l = Links::default();
        let key = |i: u64| i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for i in 0..1_000 {
            l.insert(key(i), i);
        }
        assert_eq!(l.len(), 1_000);
        for i in 0..1_000 {
            assert_eq!(l.get(key(i)), Some(i), "{i}");
        }
        assert_eq!(l.get(key(5_000)), None);
        l.insert(key(7), 70);
        l.insert(key(999), 9_990);
        assert_eq!((l.get(key(7)), l.get(key(999))), (Some(70), Some(9_990)));
        assert_eq!(l.len(), 1_000);
        let back = Links::from_entries(l.entries());
        for i in (0..1_000).filter(|i| ![7, 999].contains(i)) {
            assert_eq!(back.get(key(i)), Some(i));
        }
        assert_eq!(back.get(key(7)), Some(70));
    }
}
