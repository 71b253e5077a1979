//! The one function that applies a [`Change`] to an org, for live calls and replays alike.
//!
//! The engine has already validated the change ([`Change::validate`]), locked the org and
//! advanced its clock; `now` is that advanced time. Each arm is one of the org's own methods,
//! and its answer is the [`Outcome`] the caller of the original call waits for.

use crate::appeal::AppealId;
use crate::change::Change;
use crate::command::Outcome;
use crate::decision::{Category, SendRequest};
use crate::error::{EngineError, ValidationError};
use crate::policy::Policy;
use crate::reserve;
use crate::validate::{self, Bsuid, RecipientKey};

use super::{CheckedSend, OrgState, Recipient, SendFields};

impl OrgState {
    /// Applies `change` at `now`. On an error nothing was changed.
    pub(crate) fn apply(
        &mut self,
        policy: &Policy,
        change: &Change,
        now: u64,
    ) -> Result<Outcome, EngineError> {
        let org = |st: &mut OrgState| Ok(Outcome::Org(Box::new(st.status(policy, now))));
        match change {
            Change::PutOrg { config } => {
                self.check_phones(&config.phone_numbers)?;
                self.update(config.clone(), policy, now);
                org(self)
            }
            Change::Send {
                phone,
                recipient,
                user_id,
                key,
                seq,
                category,
            } => {
                let req = SendRequest {
                    org_id: &self.id.clone(),
                    phone_number_id: phone,
                    recipient,
                    recipient_user_id: user_id.as_deref(),
                    // A recorded send was judged already; its template and category do not
                    // change how it counts, only which category its slot is shown under.
                    template_name: "restored",
                    category: category.unwrap_or(Category::Utility),
                    idempotency_key: key.as_deref(),
                };
                let send = CheckedSend::find(self, &req, SendFields::check(&req)?)?;
                let class = category.map_or(0, reserve::class_of);
                let got = self.restore(policy, send, class, now);
                if got != *seq {
                    return Err(ValidationError::new(
                        "fact.seq",
                        format!("replayed permit {got} where the journal says {seq}"),
                    )
                    .into());
                }
                Ok(Outcome::Restored)
            }
            Change::Report { seq, outcome } => self
                .report(policy, *seq, *outcome, now)
                .map(Outcome::Reaction),
            Change::EscalationSet { path } => {
                self.set_escalation_path(path.clone(), policy);
                org(self)
            }
            Change::EscalationCleared => {
                self.clear_escalation_path();
                org(self)
            }
            Change::Rating { rating } => {
                self.set_quality_rating(*rating, now);
                org(self)
            }
            Change::TierRequest { tier } => Ok(Outcome::Tier(self.change_tier(*tier, policy))),
            Change::AccountRestricted { restricted } => {
                self.set_account_restricted(*restricted);
                org(self)
            }
            Change::TemplatePaused { template, until } => {
                self.pause_template(template, *until, now)?;
                org(self)
            }
            Change::TemplateReinstated { template } => {
                self.reinstate_template(template);
                org(self)
            }
            Change::AppealFiled { evidence } => {
                self.file_appeal(evidence, now).map(Outcome::Appeal)
            }
            Change::AppealResolved { n, approved } => {
                let id = AppealId {
                    org_id: self.id.to_string(),
                    n: *n,
                };
                self.resolve_appeal(&id, *approved).map(Outcome::Appeal)
            }
            Change::Feedback {
                phone,
                recipient,
                template,
                code,
            } => {
                let slot = match phone {
                    Some(id) => Some(self.slot_of(id, validate::phone_key(id)?)?),
                    None => None,
                };
                let recipient = match recipient {
                    Some(r) => Some(self.person(&Recipient::parse(r, None)?)),
                    None => None,
                };
                let r = self.feedback(policy, slot, recipient, template.as_deref(), *code, now);
                Ok(Outcome::Reaction(r))
            }
            Change::MarketingApiRequired { required } => {
                self.set_marketing_api_required(*required);
                org(self)
            }
            Change::PacingHeld => {
                self.note_pacing_hold(now);
                org(self)
            }
            Change::RecipientIds { phone, user_ids } => {
                let phone = RecipientKey::parse(phone)?;
                let mut users = [None, None];
                for (slot, u) in users.iter_mut().zip(user_ids) {
                    *slot = Some(Bsuid::parse("user_ids", u)?);
                }
                let to = Recipient::linked(phone, users);
                self.learn(&to, phone, policy.recipient_links_capacity);
                org(self)
            }
            Change::UserIdChanged { previous, current } => {
                let previous = Bsuid::parse("previous", previous)?;
                let current = Bsuid::parse("current", current)?;
                self.rename(previous, current, policy.recipient_links_capacity);
                org(self)
            }
            Change::WebhookDelivery { key } => Ok(Outcome::Delivery {
                first: self.deliveries.first_time(
                    key,
                    now,
                    policy.webhook_dedupe_ttl_ms,
                    policy.webhook_dedupe_capacity,
                ),
            }),
            Change::NumberThroughput { phone, mps } => {
                let slot = self.slot_of(phone, validate::phone_key(phone)?)?;
                self.set_number_throughput(slot, *mps, policy);
                org(self)
            }
        }
    }
}
