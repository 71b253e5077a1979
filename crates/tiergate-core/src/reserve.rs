//! Category reserves (SPEC §2a): how much of the effective tier each category may fill, so that a
//! marketing blast cannot lock out the one-time passwords that log users in.
//!
//! The reserves nest. With `a` % kept for AUTHENTICATION and `u` % for UTILITY:
//!
//! * a MARKETING send may take a new slot while the window holds fewer than
//!   `⌊limit × (100 − a − u) / 100⌋` recipients;
//! * a UTILITY send while it holds fewer than `⌊limit × (100 − a) / 100⌋`;
//! * an AUTHENTICATION send up to the whole limit.
//!
//! The share is compared with the window's *total* fill, not with the category's own count.
//! That is tiergate's reading of SPEC's "MARKETING may fill at most 100 − auth − utility %": it is
//! the only reading under which the reserved slots are always free for the category they are
//! kept for (counted per category, 60 % marketing and 40 % utility would leave OTPs nothing).
//! Each category still never fills more than its share, since it only takes a slot below it.
//! Recipients already in the window cost no slot and are never held back by a reserve.

use serde::{Deserialize, Serialize};

use crate::decision::Category;

/// The percentages of the effective tier kept for AUTHENTICATION and UTILITY sends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reserves {
    /// Kept for AUTHENTICATION: neither UTILITY nor MARKETING may fill it.
    pub authentication_percent: u8,
    /// Kept for UTILITY (and AUTHENTICATION): MARKETING may not fill it.
    pub utility_percent: u8,
}

impl Reserves {
    /// Whether no share is kept (the common case: one comparison on the decision path).
    #[inline]
    pub fn is_none(self) -> bool {
        self.authentication_percent == 0 && self.utility_percent == 0
    }

    /// The percentage of the limit `category` may fill. Reserves that add up to more than
    /// 100 % leave MARKETING nothing (never a negative share).
    pub fn share_percent(self, category: Category) -> u64 {
        let a = u64::from(self.authentication_percent).min(100);
        let u = u64::from(self.utility_percent).min(100);
        match category {
            Category::Authentication => 100,
            Category::Utility => 100 - a,
            Category::Marketing => 100u64.saturating_sub(a + u),
        }
    }

    /// The fill below which `category` may take a new slot of `limit` (rounded down, so a
    /// reserve is never smaller than asked).
    #[inline]
    pub fn share(self, category: Category, limit: u64) -> u64 {
        match category {
            Category::Authentication => limit,
            // limit × percent fits in u128; the quotient is at most `limit`.
            c => (u128::from(limit) * u128::from(self.share_percent(c)) / 100) as u64,
        }
    }
}

/// Which class a window entry of `category` carries (see `RecipientWindow::class_counts`):
/// 0 is "unattributed" (entries restored from snapshots older than the classes).
#[inline]
pub(crate) const fn class_of(category: Category) -> u8 {
    match category {
        Category::Marketing => 1,
        Category::Utility => 2,
        Category::Authentication => 3,
    }
}

/// A window's entries per category, from its class counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CategoryFill {
    /// Recipients whose slot a MARKETING send took.
    pub marketing: u64,
    /// … a UTILITY send took.
    pub utility: u64,
    /// … an AUTHENTICATION send took.
    pub authentication: u64,
    /// Recipients restored from a snapshot that did not record categories.
    pub unattributed: u64,
}

impl CategoryFill {
    pub(crate) fn from_classes(c: [u64; 4]) -> Self {
        CategoryFill {
            unattributed: c[0],
            marketing: c[1],
            utility: c[2],
            authentication: c[3],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_nest_and_round_down() {
        let r = Reserves {
            authentication_percent: 10,
            utility_percent: 25,
        };
        assert_eq!(r.share(Category::Authentication, 250), 250);
        assert_eq!(r.share(Category::Utility, 250), 225);
        assert_eq!(r.share(Category::Marketing, 250), 162); // 162.5 rounded down
        let none = Reserves::default();
        assert!(none.is_none());
        assert_eq!(none.share(Category::Marketing, 2_000), 2_000);
        let all = Reserves {
            authentication_percent: 70,
            utility_percent: 70,
        };
        assert_eq!(all.share(Category::Marketing, 1_000), 0);
        assert_eq!(all.share(Category::Utility, 1_000), 300);
    }
}
