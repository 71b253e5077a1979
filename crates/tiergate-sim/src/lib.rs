//! # tiergate-sim: "what would it have done with last week's traffic?"
//!
//! * [`trace`]: the JSONL trace format (documented in `docs/trace-format.md`);
//! * [`replay`]: a trace through the engine: parsed on one thread, each org's sends replayed in order on one of a few others, each at its own time;
//! * [`report`]: per-org and total counts, as a table or JSON;
//! * [`plot`]: one org's window fill, effective tier and rating over time, as SVG (and a
//!   campaign plan's cumulative sends against the tier limit, for `tiergate plan --plot`);
//! * [`tracegen`]: synthetic week-long traces.
#![forbid(unsafe_code)]

pub mod plot;
pub mod replay;
pub mod report;
mod send_line;
mod send_side;
pub mod trace;
pub mod tracegen;
