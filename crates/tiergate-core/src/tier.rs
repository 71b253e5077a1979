//! Messaging tiers and the ladders they sit on.
//!
//! A tier is WhatsApp's limit on unique recipients of template messages in a moving 24 h. Meta
//! changed the ladder in October 2025 (250 → 2K → 10K → 100K → unlimited) but webhooks and old
//! configs still carry the legacy names (`TIER_50`, `TIER_1K`), so both parse, from `TIER_*` names
//! and from plain integers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::ValidationError;

/// One messaging tier. Ordered by its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    /// 50 unique recipients / 24 h (legacy ladder).
    Tier50,
    /// 250.
    Tier250,
    /// 1,000 (legacy ladder).
    Tier1K,
    /// 2,000 (current ladder).
    Tier2K,
    /// 10,000.
    Tier10K,
    /// 100,000.
    Tier100K,
    /// No limit on unique recipients.
    Unlimited,
}

impl Tier {
    /// Every tier, lowest first.
    pub const ALL: [Tier; 7] = [
        Tier::Tier50,
        Tier::Tier250,
        Tier::Tier1K,
        Tier::Tier2K,
        Tier::Tier10K,
        Tier::Tier100K,
        Tier::Unlimited,
    ];

    /// The ladder Meta uses since October 2025.
    pub const CURRENT_LADDER: [Tier; 5] = [
        Tier::Tier250,
        Tier::Tier2K,
        Tier::Tier10K,
        Tier::Tier100K,
        Tier::Unlimited,
    ];

    /// The ladder before October 2025.
    pub const LEGACY_LADDER: [Tier; 6] = [
        Tier::Tier50,
        Tier::Tier250,
        Tier::Tier1K,
        Tier::Tier10K,
        Tier::Tier100K,
        Tier::Unlimited,
    ];

    /// Unique recipients allowed in 24 h; `None` means unlimited.
    pub const fn limit(self) -> Option<u64> {
        match self {
            Tier::Tier50 => Some(50),
            Tier::Tier250 => Some(250),
            Tier::Tier1K => Some(1_000),
            Tier::Tier2K => Some(2_000),
            Tier::Tier10K => Some(10_000),
            Tier::Tier100K => Some(100_000),
            Tier::Unlimited => None,
        }
    }

    /// The `TIER_*` name WhatsApp and the gRPC contract use.
    pub const fn name(self) -> &'static str {
        match self {
            Tier::Tier50 => "TIER_50",
            Tier::Tier250 => "TIER_250",
            Tier::Tier1K => "TIER_1K",
            Tier::Tier2K => "TIER_2K",
            Tier::Tier10K => "TIER_10K",
            Tier::Tier100K => "TIER_100K",
            Tier::Unlimited => "TIER_UNLIMITED",
        }
    }

    /// The tier whose limit is exactly `limit` (e.g. `business_capability_update` sends
    /// `max_daily_conversation_per_phone: 2000`).
    pub fn from_limit(limit: u64) -> Option<Tier> {
        Tier::ALL.into_iter().find(|t| t.limit() == Some(limit))
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Tier {
    type Err = ValidationError;

    /// Accepts `TIER_2K`, `2K`, `2000`, `TIER_UNLIMITED`, `UNLIMITED` (any case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let up = s.trim().to_ascii_uppercase();
        let bare = up.strip_prefix("TIER_").unwrap_or(&up);
        let by_name = Tier::ALL
            .into_iter()
            .find(|t| t.name().strip_prefix("TIER_") == Some(bare));
        if let Some(t) = by_name {
            return Ok(t);
        }
        if let Ok(n) = bare.replace('_', "").parse::<u64>()
            && let Some(t) = Tier::from_limit(n)
        {
            return Ok(t);
        }
        Err(ValidationError::new(
            "tier",
            format!(
                "{s:?} is not a tier (expected TIER_50, TIER_250, TIER_1K, TIER_2K, TIER_10K, TIER_100K, TIER_UNLIMITED or their limits)"
            ),
        ))
    }
}

impl Serialize for Tier {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Tier {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Tier::from_limit(n)
                .ok_or_else(|| serde::de::Error::custom(format!("{n} is not a tier limit"))),
            Raw::Str(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// The steps a tier moves along: upgrades go one rung up, the quality restriction goes down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Ladder(Vec<Tier>);

impl Default for Ladder {
    fn default() -> Self {
        Ladder(Tier::CURRENT_LADDER.to_vec())
    }
}

impl Ladder {
    /// A ladder from rungs in ascending order; `None` when empty or not strictly ascending.
    pub fn new(rungs: Vec<Tier>) -> Option<Self> {
        (!rungs.is_empty() && rungs.windows(2).all(|w| w[0] < w[1])).then_some(Ladder(rungs))
    }

    /// The rungs, lowest first.
    pub fn rungs(&self) -> &[Tier] {
        &self.0
    }

    /// The position of `tier`, or of the highest rung below it when `tier` is not on this ladder
    /// (a legacy `TIER_1K` on the current ladder sits at the 250 rung for stepping purposes).
    fn position(&self, tier: Tier) -> Option<usize> {
        self.0.iter().rposition(|&r| r <= tier)
    }

    /// The next rung above `tier`, if any.
    pub fn next_above(&self, tier: Tier) -> Option<Tier> {
        self.0.iter().copied().find(|&r| r > tier)
    }

    /// `steps` rungs below `tier`, floored at the lowest rung (never above `tier` itself).
    pub fn step_down(&self, tier: Tier, steps: u8) -> Tier {
        match self.position(tier) {
            Some(_) if steps == 0 => tier,
            Some(i) => self.0[i.saturating_sub(steps as usize)].min(tier),
            None => tier,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_integers_and_both_ladders() {
        assert_eq!("TIER_2K".parse::<Tier>().unwrap(), Tier::Tier2K);
        assert_eq!("tier_1k".parse::<Tier>().unwrap(), Tier::Tier1K);
        assert_eq!("TIER_50".parse::<Tier>().unwrap(), Tier::Tier50);
        assert_eq!("100000".parse::<Tier>().unwrap(), Tier::Tier100K);
        assert_eq!("UNLIMITED".parse::<Tier>().unwrap(), Tier::Unlimited);
        assert!("TIER_3K".parse::<Tier>().is_err());
        assert!("".parse::<Tier>().is_err());
        assert_eq!(Tier::from_limit(250), Some(Tier::Tier250));
        assert_eq!(Tier::from_limit(251), None);
    }

    #[test]
    fn ladder_steps() {
        let l = Ladder::default();
        assert_eq!(l.next_above(Tier::Tier250), Some(Tier::Tier2K));
        assert_eq!(l.next_above(Tier::Tier1K), Some(Tier::Tier2K));
        assert_eq!(l.next_above(Tier::Unlimited), None);
        assert_eq!(l.step_down(Tier::Tier10K, 1), Tier::Tier2K);
        assert_eq!(l.step_down(Tier::Unlimited, 2), Tier::Tier10K);
        assert_eq!(l.step_down(Tier::Tier250, 1), Tier::Tier250);
        assert_eq!(l.step_down(Tier::Tier1K, 1), Tier::Tier250);
        let legacy = Ladder::new(Tier::LEGACY_LADDER.to_vec()).unwrap();
        assert_eq!(legacy.step_down(Tier::Tier10K, 1), Tier::Tier1K);
        assert_eq!(legacy.step_down(Tier::Tier250, 1), Tier::Tier50);
        assert!(Ladder::new(vec![Tier::Tier2K, Tier::Tier250]).is_none());
    }
}
