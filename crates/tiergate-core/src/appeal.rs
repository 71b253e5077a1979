//! Appeals against a low quality rating.
//!
//! An org that thinks it was flagged by mistake appeals with evidence. The appeal is pending
//! until resolved; approval clears the RED flag and with it the restriction, rejection changes
//! nothing. An appeal id names its org (`org_id:appeal:n`) so that resolving needs no global
//! index.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::ValidationError;

/// Longest evidence text accepted, in bytes.
pub const MAX_EVIDENCE_LEN: usize = 4_096;

/// Where an appeal stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum AppealStatus {
    /// Filed, not yet resolved.
    Pending,
    /// Approved: the RED flag was cleared.
    Approved,
    /// Rejected: nothing changed.
    Rejected,
}

/// One appeal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appeal {
    /// `org_id:appeal:n`.
    pub appeal_id: AppealId,
    /// Where it stands.
    pub status: AppealStatus,
    /// What the org submitted.
    pub evidence: String,
    /// When it was filed.
    pub filed_at_ms: u64,
}

/// An appeal's id: its org and its number within the org.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AppealId {
    /// The org.
    pub org_id: String,
    /// 1 for the org's first appeal.
    pub n: u64,
}

impl fmt::Display for AppealId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:appeal:{}", self.org_id, self.n)
    }
}

impl FromStr for AppealId {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ValidationError::new("appeal_id", format!("{s:?} is not an appeal id"));
        let (org, n) = s.rsplit_once(":appeal:").ok_or_else(bad)?;
        crate::validate::org_id(org).map_err(|_| bad())?;
        Ok(AppealId {
            org_id: org.to_owned(),
            n: n.parse().map_err(|_| bad())?,
        })
    }
}

/// Checks evidence: non-empty, bounded, no control characters other than newlines and tabs.
pub fn validate_evidence(evidence: &str) -> Result<(), ValidationError> {
    let e = evidence.trim();
    if e.is_empty() {
        return Err(ValidationError::new("evidence", "must not be empty"));
    }
    if e.len() > MAX_EVIDENCE_LEN {
        return Err(ValidationError::new(
            "evidence",
            format!("at most {MAX_EVIDENCE_LEN} bytes"),
        ));
    }
    if e.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(ValidationError::new(
            "evidence",
            "contains control characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        let id = AppealId {
            org_id: "acme".into(),
            n: 3,
        };
        assert_eq!(id.to_string().parse::<AppealId>().unwrap(), id);
        assert!("acme:3".parse::<AppealId>().is_err());
        assert!(validate_evidence("  ").is_err());
        assert!(validate_evidence("we added a support form").is_ok());
    }
}
