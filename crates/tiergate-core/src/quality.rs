//! The quality rating WhatsApp gives a business's phone numbers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::ValidationError;

/// WhatsApp's quality rating. `RED` ("low") is what the escalation-path policy punishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum QualityRating {
    /// High quality.
    Green,
    /// Medium quality.
    Yellow,
    /// Low quality: flagged; limited after the grace period.
    Red,
    /// Not rated yet (Meta also writes `NA`).
    #[default]
    Unknown,
}

impl QualityRating {
    /// The name used in webhooks and the gRPC contract.
    pub const fn name(self) -> &'static str {
        match self {
            QualityRating::Green => "GREEN",
            QualityRating::Yellow => "YELLOW",
            QualityRating::Red => "RED",
            QualityRating::Unknown => "UNKNOWN",
        }
    }
}

impl fmt::Display for QualityRating {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for QualityRating {
    type Err = ValidationError;

    /// Accepts GREEN, YELLOW, RED, UNKNOWN and NA (any case; also the `QUALITY_RATING_` prefix).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let up = s.trim().to_ascii_uppercase();
        match up.strip_prefix("QUALITY_RATING_").unwrap_or(&up) {
            "GREEN" | "HIGH" => Ok(QualityRating::Green),
            "YELLOW" | "MEDIUM" => Ok(QualityRating::Yellow),
            "RED" | "LOW" => Ok(QualityRating::Red),
            "UNKNOWN" | "NA" => Ok(QualityRating::Unknown),
            _ => Err(ValidationError::new(
                "quality_rating",
                format!("{s:?} is not GREEN, YELLOW, RED, UNKNOWN or NA"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn na_means_unknown() {
        assert_eq!(
            "NA".parse::<QualityRating>().unwrap(),
            QualityRating::Unknown
        );
        assert_eq!("red".parse::<QualityRating>().unwrap(), QualityRating::Red);
        assert!("PURPLE".parse::<QualityRating>().is_err());
    }
}
