//! Spinning before sleeping: when a leader runs out of events, whether it
//! polls for a little while before it sleeps in `epoll_wait`.
//!
//! A sleeping leader is expensive to wake: whoever makes a socket ready (on
//! loopback, the client's own `send`) pays a cross-CPU wake-up, and the
//! leader pays a context switch (what they cost here, and what spinning
//! gained, is in `docs/performance.md`). When the next event is only microseconds away, polling
//! for it is cheaper than that round trip; when it is not, polling is
//! wasted CPU. The classic answer (two-phase waiting) is to poll for about
//! as long as a sleep and wake-up cost, then sleep: never more than twice
//! the CPU of the better choice, and much better when events come in quick
//! succession.
//!
//! On top of that, the worker only polls while polling has been paying:
//! if the last gap between batches was longer than the spin limit, a spin
//! would most likely have been wasted, so the next wait sleeps at once. An
//! idle daemon therefore never spins, and a lightly loaded one spins at
//! most once per gap that the limit could not bridge.

use std::time::Duration;

/// One worker's spin-before-sleep decision, fed with how long its waits
/// took.
#[derive(Debug)]
pub(super) struct SpinBeforeSleep {
    /// Whether the last wait ended within the limit.
    last_gap_short: bool,
}

impl SpinBeforeSleep {
    pub(super) fn new() -> Self {
        SpinBeforeSleep {
            last_gap_short: true,
        }
    }

    /// How long the next wait should poll before sleeping, given the
    /// configured `limit` (zero disables spinning).
    pub(super) fn budget(&self, limit: Duration) -> Duration {
        if self.last_gap_short {
            limit
        } else {
            Duration::ZERO
        }
    }

    /// Records that the last wait, polling and sleeping together, took
    /// `waited`.
    pub(super) fn waited(&mut self, waited: Duration, limit: Duration) {
        self.last_gap_short = waited <= limit;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_micros(10);

    #[test]
    fn a_worker_spins_while_events_come_within_the_limit() {
        let mut spin = SpinBeforeSleep::new();
        assert_eq!(spin.budget(LIMIT), LIMIT);
        spin.waited(Duration::ZERO, LIMIT);
        assert_eq!(spin.budget(LIMIT), LIMIT);
        spin.waited(Duration::from_micros(9), LIMIT);
        assert_eq!(spin.budget(LIMIT), LIMIT);
    }

    #[test]
    fn a_gap_longer_than_the_limit_makes_the_next_wait_sleep_at_once() {
        let mut spin = SpinBeforeSleep::new();
        spin.waited(Duration::from_micros(11), LIMIT);
        assert_eq!(spin.budget(LIMIT), Duration::ZERO);
        // Still sleeping at once through a long idle spell...
        spin.waited(Duration::from_secs(3), LIMIT);
        assert_eq!(spin.budget(LIMIT), Duration::ZERO);
        // ...until events come quickly again.
        spin.waited(Duration::from_micros(2), LIMIT);
        assert_eq!(spin.budget(LIMIT), LIMIT);
    }

    #[test]
    fn a_zero_limit_never_spins() {
        let mut spin = SpinBeforeSleep::new();
        assert_eq!(spin.budget(Duration::ZERO), Duration::ZERO);
        spin.waited(Duration::ZERO, Duration::ZERO);
        assert_eq!(spin.budget(Duration::ZERO), Duration::ZERO);
    }
}
