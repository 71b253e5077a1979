//! A seeded generator of command logs, shared by the replication tests.
#![allow(dead_code)]

use tiergate_core::*;
use tiergate_testkit::SplitMix64;
pub use tiergate_testkit::T0;

pub fn log(seed: u64, n: usize) -> Vec<(u64, Command)> {
    let mut rng = SplitMix64::new(seed);
    let mut at = T0;
    let mut out = vec![(
        at,
        Command::Apply {
            fact: Fact::put_org(
                0,
                OrgConfig::new("o", Tier::Tier50)
                    .with_phone("1", 1)
                    .with_escalation(EscalationPath::new(EscalationKind::Email, "a@b.co").unwrap()),
            ),
        },
    )];
    let mut seq = 0u64;
    for _ in 0..n {
        at += rng.below(4) * rng.below(60_000);
        let cmd = match rng.below(20) {
            0 => Command::Apply {
                fact: Fact::new(
                    0,
                    "o",
                    Change::Rating {
                        rating: if rng.below(2) == 0 {
                            QualityRating::Red
                        } else {
                            QualityRating::Green
                        },
                    },
                ),
            },
            1 => Command::Apply {
                fact: Fact::new(
                    0,
                    "o",
                    Change::Report {
                        seq: rng.below(seq + 1),
                        outcome: SendOutcome::NotSent,
                    },
                ),
            },
            2 => Command::Apply {
                fact: Fact::new(
                    0,
                    "o",
                    Change::Feedback {
                        phone: Some("1".into()),
                        recipient: Some(format!("49151{}", rng.below(80))),
                        template: None,
                        code: [130429, 131056, 131049][rng.below(3) as usize],
                    },
                ),
            },
            3 => Command::Status { org: "o".into() },
            4 if rng.below(4) == 0 => Command::Apply {
                fact: Fact::new(
                    0,
                    "o",
                    Change::AppealFiled {
                        evidence: "support form added".into(),
                    },
                ),
            },
            5 if rng.below(4) == 0 => Command::Apply {
                fact: Fact::new(
                    0,
                    "o",
                    Change::AppealResolved {
                        n: 1 + rng.below(3),
                        approved: rng.below(2) == 0,
                    },
                ),
            },
            6 if rng.below(4) == 0 => Command::Apply {
                fact: Fact::new(
                    0,
                    "o",
                    Change::TemplatePaused {
                        template: "t".into(),
                        until: Some(at + rng.below(3_600_000)),
                    },
                ),
            },
            7 if rng.below(4) == 0 => Command::Apply {
                fact: Fact::new(
                    0,
                    "o",
                    Change::TierRequest {
                        tier: [Tier::Tier50, Tier::Tier250, Tier::Tier1K][rng.below(3) as usize],
                    },
                ),
            },
            // The 2026 codes and the changes that came with them, so replication and snapshots
            // cover their state too.
            8 if rng.below(4) == 0 => Command::Apply {
                fact: Fact::new(
                    0,
                    "o",
                    Change::Feedback {
                        phone: Some("1".into()),
                        recipient: Some(format!("49151{}", rng.below(80))),
                        template: None,
                        code: [130472, 131063, 131064, 131057, 131048][rng.below(5) as usize],
                    },
                ),
            },
            12 if rng.below(2) == 0 => Command::Unwait {
                org: "o".into(),
                waiter: 1 + rng.below(8),
            },
            9 if rng.below(4) == 0 => Command::Apply {
                fact: Fact::new(0, "o", Change::MarketingApiRequired { required: false }),
            },
            10 if rng.below(4) == 0 => Command::Apply {
                fact: Fact::new(0, "o", Change::PacingHeld),
            },
            11 if rng.below(2) == 0 => Command::Apply {
                fact: Fact::new(
                    0,
                    "o",
                    Change::WebhookDelivery {
                        key: format!("d{}", rng.below(20)),
                    },
                ),
            },
            _ => {
                seq += 1;
                // Some sends name a BSUID too, or only one: links must replicate and snapshot.
                let person = rng.below(80);
                let (recipient, user_id) = match rng.below(6) {
                    0 => (
                        format!("49151{person}"),
                        Some(format!("US.{}", 1_000 + person)),
                    ),
                    1 => (String::new(), Some(format!("US.{}", 1_000 + person))),
                    _ => (format!("49151{person}"), None),
                };
                Command::Decide {
                    org: "o".into(),
                    phone: "1".into(),
                    recipient,
                    user_id,
                    template: "t".into(),
                    category: [
                        Category::Marketing,
                        Category::Utility,
                        Category::Authentication,
                    ][rng.below(3) as usize],
                    key: (rng.below(5) == 0).then(|| format!("k{}", rng.below(30))),
                    // Some sends wait: the org's queue must replicate and snapshot too.
                    wait: (rng.below(3) == 0).then(|| WaitTicket {
                        id: 1 + rng.below(8),
                        max_wait_ms: rng.below(4) * 20_000,
                        capacity: 1 + rng.below(4) as u32,
                    }),
                }
            }
        };
        out.push((at, cmd));
    }
    out
}
