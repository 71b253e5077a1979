//! The same command log, applied by two engines at the log's times, gives the same answers and
//! the same state: what replicas sharing a Redis log rely on. A third engine that reads its
//! clock between commands (as a misused replica would) is the control: it must be able to
//! differ, or the test proves nothing.

use std::sync::Arc;

use tiergate_core::*;

mod common;

use common::{T0, log};

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
