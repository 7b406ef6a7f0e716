//! Rate-limited logging for failures that repeat: during a store outage
//! every read fails the same way, and a log line per read would bury the
//! one line that matters (and cost more than the read). A [`LogLimit`]
//! lets [`BURST`] messages through per [`PERIOD`], counts the rest, and
//! says how many it held back when the next period lets one through.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Messages let through per period.
pub const BURST: u32 = 5;
/// 10 s: an operator watching the log sees an outage within seconds, and
/// a long one costs a few lines a minute.
pub const PERIOD: Duration = Duration::from_secs(10);

pub struct LogLimit {
    state: Mutex<State>,
}

struct State {
    since: Option<Instant>,
    passed: u32,
    held: u64,
}

impl Default for LogLimit {
    fn default() -> Self {
        Self::new()
    }
}

impl LogLimit {
    pub const fn new() -> Self {
        LogLimit {
            state: Mutex::new(State {
                since: None,
                passed: 0,
                held: 0,
            }),
        }
    }

    /// Whether to log now: `Some(n)` with the number of messages held back
    /// since the last one let through, `None` to stay quiet.
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    /// `log::error!` of `msg()` (built only when it is logged), with how
    /// many similar messages were held back.
    pub fn error(&self, msg: impl FnOnce() -> String) {
        if let Some(held) = self.allow() {
            if held > 0 {
                log::error!("{} ({held} similar messages suppressed)", msg());
            } else {
                log::error!("{}", msg());
            }
        }
    }

    fn allow_at(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.since.is_none_or(|t| now.duration_since(t) >= PERIOD) {
            s.since = Some(now);
            s.passed = 0;
        }
        if s.passed < BURST {
            s.passed += 1;
            Some(std::mem::take(&mut s.held))
        } else {
            s.held += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lets_a_burst_through_then_counts_until_the_next_period() {
        let l = LogLimit::new();
        let t0 = Instant::now();
        for _ in 0..BURST {
            assert_eq!(l.allow_at(t0), Some(0));
        }
        for _ in 0..7 {
            assert_eq!(l.allow_at(t0 + Duration::from_secs(1)), None);
        }
        assert_eq!(l.allow_at(t0 + PERIOD), Some(7));
        assert_eq!(l.allow_at(t0 + PERIOD), Some(0));
    }
}
