//! An error with its causes on one line, for logs and gRPC messages.
//!
//! The errors of this workspace keep their cause as `source()` and leave it out of their own
//! message (so a report that walks the chain, like `anyhow`'s `{:#}`, says each part once).
//! A log line or a status message has one string to fill: [`ErrorChain`] writes them all.

use std::error::Error;
use std::fmt;

/// Displays an error and each of its sources, separated by `": "`. A source whose message its
/// parent's already ends with is not repeated: some libraries (redis, for one) both print their
/// cause and return it as `source()`.
#[derive(Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut last = self.0.to_string();
        f.write_str(&last)?;
        let mut cause = self.0.source();
        while let Some(e) = cause {
            let msg = e.to_string();
            if !last.ends_with(&msg) {
                write!(f, ": {msg}")?;
            }
            last = msg;
            cause = e.source();
        }
        Ok(())
    }
}

impl fmt::Debug for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("refused: {0}")]
    struct Repeats(#[source] std::io::Error);

    #[test]
    fn every_cause_once() {
        let e = Outer(std::io::Error::other("disk full"));
        assert_eq!(ErrorChain(&e).to_string(), "outer: disk full");
        let e = Outer(std::io::Error::other(Repeats(std::io::Error::other(
            "os 111",
        ))));
        assert_eq!(ErrorChain(&e).to_string(), "outer: refused: os 111");
    }
}
