//! The same command log, applied by two engines at the log's times, gives the same answers and
//! the same state: what replicas sharing a Redis log rely on. A third engine that reads its
//! clock between commands (as a misused replica would) is the control: it must be able to
//! differ, or the test proves nothing.

use std::sync::Arc;

use tiergate_core::*;

const T0: u64 = 1_700_000_000_000;

/// A small deterministic generator (SplitMix64), so a failure replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn log(seed: u64, n: usize) -> Vec<(u64, Command)> {
    let mut rng = Rng(seed);
    let mut at = T0;
    let mut out = vec![(
        at,
        Command::Apply {
            fact: Fact::PutOrg {
                at: 0,
                org: OrgConfig::new("o", Tier::Tier50)
                    .with_phone("1", 5)
                    .with_escalation(EscalationPath::new(EscalationKind::Email, "a@b.co").unwrap()),
            },
        },
    )];
    let mut seq = 0u64;
    for _ in 0..n {
        at += rng.below(4) * rng.below(60_000);
        let cmd = match rng.below(20) {
            0 => Command::Apply {
                fact: Fact::Rating {
                    at: 0,
                    org: "o".into(),
                    rating: if rng.below(2) == 0 {
                        QualityRating::Red
                    } else {
                        QualityRating::Green
                    },
                },
            },
            1 => Command::Apply {
                fact: Fact::Report {
                    at: 0,
                    org: "o".into(),
                    seq: rng.below(seq + 1),
                    outcome: Some(0),
                },
            },
            2 => Command::Apply {
                fact: Fact::Feedback {
                    at: 0,
                    org: "o".into(),
                    phone: Some("1".into()),
                    recipient: Some(format!("49151{}", rng.below(80))),
                    template: None,
                    code: [130429, 131056, 131049][rng.below(3) as usize],
                },
            },
            3 => Command::Status { org: "o".into() },
            _ => {
                seq += 1;
                Command::Decide {
                    org: "o".into(),
                    phone: "1".into(),
                    recipient: format!("49151{}", rng.below(80)),
                    template: "t".into(),
                    category: Category::Marketing,
                    key: (rng.below(5) == 0).then(|| format!("k{}", rng.below(30))),
                }
            }
        };
        out.push((at, cmd));
    }
    out
}

fn engine(clock: Arc<ManualClock>) -> Engine {
    Engine::new(Policy::default(), clock).unwrap()
}

#[test]
fn the_same_log_gives_the_same_answers_and_state() {
    let mut differed = 0;
    for seed in 0..40 {
        let cmds = log(seed, 600);
        // Replicas whose own clocks are anywhere: the log's time is what counts.
        let a = engine(Arc::new(ManualClock::new(T0 + 5 * 86_400_000)));
        let b = engine(Arc::new(ManualClock::new(0)));
        let wall = Arc::new(ManualClock::new(T0));
        let control = engine(wall.clone());
        let mut control_differs = false;
        for (i, (at, cmd)) in cmds.iter().enumerate() {
            let ra = a.execute_at(cmd, *at);
            let rb = b.execute_at(cmd, *at);
            assert_eq!(ra, rb, "seed {seed}, command {i}: {cmd:?}");
            // The control runs the same commands on its own clock, a little later each time.
            wall.advance_to(*at + 1_500);
            control_differs |= control.execute(cmd) != ra;
        }
        let last = cmds.last().map_or(T0, |c| c.0) + 1;
        let status = Command::Status { org: "o".into() };
        assert_eq!(
            a.execute_at(&status, last),
            b.execute_at(&status, last),
            "seed {seed}"
        );
        differed += usize::from(control_differs);
    }
    assert!(
        differed > 0,
        "a clock outside the log never changed an answer: the test cannot fail"
    );
}
