//! The stored shape of a [`Fact`]: one flat, tagged JSON object per fact, as every version so
//! far has written it. The envelope is how the engine thinks of a fact; this is how stores keep
//! it, so that data written before the envelope replays unchanged.

use serde::{Deserialize, Serialize};

use crate::change::Change;
use crate::decision::Category;
use crate::decision::SendOutcome;
use crate::escalation::EscalationPath;
use crate::journal::Fact;
use crate::org::OrgConfig;
use crate::quality::QualityRating;
use crate::tier::Tier;

#[derive(Serialize, Deserialize)]
#[serde(tag = "fact", rename_all = "snake_case")]
pub(crate) enum WireFact {
    PutOrg {
        at: u64,
        org: OrgConfig,
    },
    Send {
        at: u64,
        org: String,
        phone: String,
        recipient: String,
        // Absent in facts written before BSUIDs, and whenever the send named none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user_id: Option<String>,
        key: Option<String>,
        seq: u64,
        // Absent in facts written before category reserves.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        category: Option<Category>,
    },
    Report {
        at: u64,
        org: String,
        seq: u64,
        /// `None`: sent; `Some(0)`: not sent; `Some(code)`: rejected with a WhatsApp code.
        outcome: Option<i32>,
    },
    EscalationSet {
        at: u64,
        org: String,
        path: EscalationPath,
    },
    EscalationCleared {
        at: u64,
        org: String,
    },
    Rating {
        at: u64,
        org: String,
        rating: QualityRating,
    },
    TierRequest {
        at: u64,
        org: String,
        tier: Tier,
    },
    AccountRestricted {
        at: u64,
        org: String,
        restricted: bool,
    },
    TemplatePaused {
        at: u64,
        org: String,
        template: String,
        until: Option<u64>,
    },
    TemplateReinstated {
        at: u64,
        org: String,
        template: String,
    },
    AppealFiled {
        at: u64,
        org: String,
        evidence: String,
    },
    AppealResolved {
        at: u64,
        org: String,
        n: u64,
        approved: bool,
    },
    Feedback {
        at: u64,
        org: String,
        phone: Option<String>,
        recipient: Option<String>,
        template: Option<String>,
        code: i32,
    },
    NumberThroughput {
        at: u64,
        org: String,
        phone: String,
        mps: u32,
    },
    MarketingApiRequired {
        at: u64,
        org: String,
        required: bool,
    },
    RecipientIds {
        at: u64,
        org: String,
        phone: String,
        user_ids: Vec<String>,
    },
    UserIdChanged {
        at: u64,
        org: String,
        previous: String,
        current: String,
    },
    PacingHeld {
        at: u64,
        org: String,
    },
    WebhookDelivery {
        at: u64,
        org: String,
        key: String,
    },
}

/// A send as [`WireFact::Send`] writes it, by reference: a store writes one per allowed send,
/// and going through an owned `WireFact` cloned each of its strings first (measured on the
/// embedded store's hot path).
#[derive(Serialize)]
#[serde(tag = "fact", rename = "send")]
struct SendRef<'a> {
    at: u64,
    org: &'a str,
    phone: &'a str,
    recipient: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
    key: Option<&'a str>,
    seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    category: Option<Category>,
}

/// A report as [`WireFact::Report`] writes it, by reference.
#[derive(Serialize)]
#[serde(tag = "fact", rename = "report")]
struct ReportRef<'a> {
    at: u64,
    org: &'a str,
    seq: u64,
    outcome: Option<i32>,
}

/// `None`: sent; `Some(0)`: not sent; `Some(code)`: rejected with a WhatsApp code.
fn outcome_code(outcome: SendOutcome) -> Option<i32> {
    match outcome {
        SendOutcome::Sent => None,
        SendOutcome::NotSent => Some(0),
        SendOutcome::Rejected { error_code } => Some(error_code),
    }
}

impl Serialize for Fact {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.change {
            Change::Send {
                phone,
                recipient,
                user_id,
                key,
                seq,
                category,
            } => SendRef {
                at: self.at,
                org: &self.org,
                phone,
                recipient,
                user_id: user_id.as_deref(),
                key: key.as_deref(),
                seq: *seq,
                category: *category,
            }
            .serialize(s),
            Change::Report { seq, outcome } => ReportRef {
                at: self.at,
                org: &self.org,
                seq: *seq,
                outcome: outcome_code(*outcome),
            }
            .serialize(s),
            _ => WireFact::from(self.clone()).serialize(s),
        }
    }
}

impl From<Fact> for WireFact {
    fn from(Fact { at, org, change }: Fact) -> Self {
        match change {
            // The config names its org; the envelope's is the same (see `Fact::validate`).
            Change::PutOrg { config } => WireFact::PutOrg { at, org: config },
            Change::Send {
                phone,
                recipient,
                user_id,
                key,
                seq,
                category,
            } => WireFact::Send {
                at,
                org,
                phone,
                recipient,
                user_id,
                key,
                seq,
                category,
            },
            Change::Report { seq, outcome } => WireFact::Report {
                at,
                org,
                seq,
                outcome: outcome_code(outcome),
            },
            Change::EscalationSet { path } => WireFact::EscalationSet { at, org, path },
            Change::EscalationCleared => WireFact::EscalationCleared { at, org },
            Change::Rating { rating } => WireFact::Rating { at, org, rating },
            Change::TierRequest { tier } => WireFact::TierRequest { at, org, tier },
            Change::AccountRestricted { restricted } => WireFact::AccountRestricted {
                at,
                org,
                restricted,
            },
            Change::TemplatePaused { template, until } => WireFact::TemplatePaused {
                at,
                org,
                template,
                until,
            },
            Change::TemplateReinstated { template } => {
                WireFact::TemplateReinstated { at, org, template }
            }
            Change::AppealFiled { evidence } => WireFact::AppealFiled { at, org, evidence },
            Change::AppealResolved { n, approved } => WireFact::AppealResolved {
                at,
                org,
                n,
                approved,
            },
            Change::Feedback {
                phone,
                recipient,
                template,
                code,
            } => WireFact::Feedback {
                at,
                org,
                phone,
                recipient,
                template,
                code,
            },
            Change::NumberThroughput { phone, mps } => WireFact::NumberThroughput {
                at,
                org,
                phone,
                mps,
            },
            Change::MarketingApiRequired { required } => {
                WireFact::MarketingApiRequired { at, org, required }
            }
            Change::PacingHeld => WireFact::PacingHeld { at, org },
            Change::RecipientIds { phone, user_ids } => WireFact::RecipientIds {
                at,
                org,
                phone,
                user_ids,
            },
            Change::UserIdChanged { previous, current } => WireFact::UserIdChanged {
                at,
                org,
                previous,
                current,
            },
            Change::WebhookDelivery { key } => WireFact::WebhookDelivery { at, org, key },
        }
    }
}

impl From<WireFact> for Fact {
    fn from(w: WireFact) -> Self {
        let (at, org, change) = match w {
            WireFact::PutOrg { at, org } => {
                (at, org.org_id.clone(), Change::PutOrg { config: org })
            }
            WireFact::Send {
                at,
                org,
                phone,
                recipient,
                user_id,
                key,
                seq,
                category,
            } => (
                at,
                org,
                Change::Send {
                    phone,
                    recipient,
                    user_id,
                    key,
                    seq,
                    category,
                },
            ),
            WireFact::Report {
                at,
                org,
                seq,
                outcome,
            } => {
                let outcome = match outcome {
                    None => SendOutcome::Sent,
                    Some(0) => SendOutcome::NotSent,
                    Some(error_code) => SendOutcome::Rejected { error_code },
                };
                (at, org, Change::Report { seq, outcome })
            }
            WireFact::EscalationSet { at, org, path } => (at, org, Change::EscalationSet { path }),
            WireFact::EscalationCleared { at, org } => (at, org, Change::EscalationCleared),
            WireFact::Rating { at, org, rating } => (at, org, Change::Rating { rating }),
            WireFact::TierRequest { at, org, tier } => (at, org, Change::TierRequest { tier }),
            WireFact::AccountRestricted {
                at,
                org,
                restricted,
            } => (at, org, Change::AccountRestricted { restricted }),
            WireFact::TemplatePaused {
                at,
                org,
                template,
                until,
            } => (at, org, Change::TemplatePaused { template, until }),
            WireFact::TemplateReinstated { at, org, template } => {
                (at, org, Change::TemplateReinstated { template })
            }
            WireFact::AppealFiled { at, org, evidence } => {
                (at, org, Change::AppealFiled { evidence })
            }
            WireFact::AppealResolved {
                at,
                org,
                n,
                approved,
            } => (at, org, Change::AppealResolved { n, approved }),
            WireFact::Feedback {
                at,
                org,
                phone,
                recipient,
                template,
                code,
            } => (
                at,
                org,
                Change::Feedback {
                    phone,
                    recipient,
                    template,
                    code,
                },
            ),
            WireFact::NumberThroughput {
                at,
                org,
                phone,
                mps,
            } => (at, org, Change::NumberThroughput { phone, mps }),
            WireFact::MarketingApiRequired { at, org, required } => {
                (at, org, Change::MarketingApiRequired { required })
            }
            WireFact::PacingHeld { at, org } => (at, org, Change::PacingHeld),
            WireFact::RecipientIds {
                at,
                org,
                phone,
                user_ids,
            } => (at, org, Change::RecipientIds { phone, user_ids }),
            WireFact::UserIdChanged {
                at,
                org,
                previous,
                current,
            } => (at, org, Change::UserIdChanged { previous, current }),
            WireFact::WebhookDelivery { at, org, key } => {
                (at, org, Change::WebhookDelivery { key })
            }
        };
        Fact { at, org, change }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fact as the pre-envelope versions wrote it still reads, and writes back byte for byte.
    #[test]
    fn stored_facts_keep_their_shape() {
        for old in [
            r#"{"fact":"send","at":5,"org":"acme","phone":"1001","recipient":"4915112345678","key":null,"seq":3}"#,
            r#"{"fact":"report","at":6,"org":"acme","seq":3,"outcome":0}"#,
            r#"{"fact":"report","at":6,"org":"acme","seq":4,"outcome":131056}"#,
            r#"{"fact":"escalation_cleared","at":7,"org":"acme"}"#,
            r#"{"fact":"template_paused","at":8,"org":"acme","template":"t","until":null}"#,
            r#"{"fact":"feedback","at":9,"org":"acme","phone":"1001","recipient":null,"template":null,"code":130429}"#,
        ] {
            let fact: Fact = serde_json::from_str(old).unwrap();
            assert_eq!(fact.org, "acme");
            assert_eq!(serde_json::to_string(&fact).unwrap(), old);
        }
        // Sends and reports are written by reference: byte for byte what the owned shape
        // writes, with and without their optional fields.
        for fact in [
            Fact::new(
                5,
                "acme",
                Change::Send {
                    phone: "1001".into(),
                    recipient: "4915112345678".into(),
                    user_id: Some("US.abc".into()),
                    key: Some("k\"1".into()),
                    seq: 3,
                    category: Some(Category::Marketing),
                },
            ),
            Fact::new(
                5,
                "acme",
                Change::Send {
                    phone: "1001".into(),
                    recipient: String::new(),
                    user_id: None,
                    key: None,
                    seq: 4,
                    category: None,
                },
            ),
            Fact::new(
                6,
                "acme",
                Change::Report {
                    seq: 3,
                    outcome: SendOutcome::Rejected {
                        error_code: 131_049,
                    },
                },
            ),
            Fact::new(
                6,
                "acme",
                Change::Report {
                    seq: 3,
                    outcome: SendOutcome::Sent,
                },
            ),
        ] {
            let owned = serde_json::to_string(&WireFact::from(fact.clone())).unwrap();
            assert_eq!(serde_json::to_string(&fact).unwrap(), owned);
            assert_eq!(serde_json::from_str::<Fact>(&owned).unwrap(), fact);
        }
        let report: Fact =
            serde_json::from_str(r#"{"fact":"report","at":6,"org":"a","seq":3,"outcome":null}"#)
                .unwrap();
        assert_eq!(
            report.change,
            Change::Report {
                seq: 3,
                outcome: SendOutcome::Sent
            }
        );
    }
}
