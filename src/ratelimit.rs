//! A warning that may repeat thousands of times a second (every refused
//! connection) is logged at most once per period, with a count of what was
//! held back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Lets a warning through at most once per period; counts what it held back.
#[derive(Debug)]
pub(crate) struct RateLimited {
    period_ms: u64,
    origin: Instant,
    /// Milliseconds since `origin` of the last warning let through, plus one
    /// (zero: never).
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl RateLimited {
    pub(crate) fn new(period: Duration) -> Self {
        RateLimited {
            period_ms: period.as_millis() as u64,
            origin: Instant::now(),
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(suppressed since the last one)` if a warning may be logged now.
    pub(crate) fn allow(&self) -> Option<u64> {
        let now = self.origin.elapsed().as_millis() as u64 + 1;
        let last = self.last.load(Ordering::Relaxed);
        if last != 0 && now < last + self.period_ms
            || self
                .last
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}
