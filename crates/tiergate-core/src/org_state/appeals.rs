//! An org's appeals against a low rating: filed, pending, resolved. Approval clears RED and the
//! restriction that followed it.

use crate::appeal::{Appeal, AppealId, AppealStatus};
use crate::error::EngineError;
use crate::quality::QualityRating;

use super::OrgState;

/// Appeals kept per org (the newest).
const APPEALS_KEPT: usize = 8;

impl OrgState {
    /// Files an appeal; one may be pending at a time.
    pub(super) fn file_appeal(&mut self, evidence: &str, now: u64) -> Result<Appeal, EngineError> {
        if let Some(a) = self
            .appeals
            .back()
            .filter(|a| a.status == AppealStatus::Pending)
        {
            return Err(EngineError::AppealConflict(format!(
                "appeal {} is still pending",
                a.appeal_id
            )));
        }
        self.appeals_filed += 1;
        let appeal = Appeal {
            appeal_id: AppealId {
                org_id: self.id.to_string(),
                n: self.appeals_filed,
            },
            status: AppealStatus::Pending,
            evidence: evidence.trim().to_owned(),
            filed_at_ms: now,
        };
        if self.appeals.len() == APPEALS_KEPT {
            self.appeals.pop_front();
        }
        self.appeals.push_back(appeal.clone());
        Ok(appeal)
    }

    /// Resolves a pending appeal; approval clears RED and the restriction.
    pub(super) fn resolve_appeal(
        &mut self,
        id: &AppealId,
        approved: bool,
    ) -> Result<Appeal, EngineError> {
        let a = self
            .appeals
            .iter_mut()
            .find(|a| a.appeal_id.n == id.n)
            .ok_or_else(|| EngineError::UnknownAppeal(id.to_string()))?;
        if a.status != AppealStatus::Pending {
            return Err(EngineError::AppealConflict(format!(
                "appeal {id} was already resolved"
            )));
        }
        a.status = if approved {
            AppealStatus::Approved
        } else {
            AppealStatus::Rejected
        };
        let out = a.clone();
        if approved && self.config.quality_rating == QualityRating::Red {
            self.config.quality_rating = QualityRating::Unknown;
            self.flagged_since = None;
        }
        Ok(out)
    }

    /// Finds an appeal by number (for the engine's lookup by id).
    pub(crate) fn appeal(&self, n: u64) -> Option<&Appeal> {
        self.appeals.iter().find(|a| a.appeal_id.n == n)
    }
}
