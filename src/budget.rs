//! One memory budget for every connection: the bytes held for clients that
//! owe replies (`max_buffered_bytes`).
//!
//! A connection that owes replies holds the replies the kernel has not
//! taken and the input received behind them. Each step reports how that
//! changed (`Tally::held`); the dispatcher adds it to the [`Ledger`] of the
//! thread that took the step, and the ledger is folded into the shared
//! total once it has moved by [`WORKER_BATCH`] either way, or before its
//! worker waits for events. So the shared total is written about once per
//! 64 KiB of change, never per request (a request whose reply the kernel
//! takes at once changes nothing at all), and read once per step: a line
//! that stays in every core's cache. What it costs is a total that lags the
//! truth by at most [`WORKER_BATCH`] per worker: part of the margin the
//! budget is allowed per worker.
//!
//! Connections read the total at the start of each step (`Limits::
//! buffer_free`) and decide for themselves whether they may read
//! (`connection/buffers.rs`): the ones holding the most stop first, and
//! once it is spent every connection that owes replies waits for its client
//! to take them.

use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};
use std::time::Duration;

use tracing::{info, warn};

use crate::ratelimit::RateLimited;

/// How far a worker's ledger may move before it is folded into the shared
/// total: large enough that a flood of small changes costs one shared
/// write per 64 KiB, small enough to be a small part of the margin.
pub(crate) const WORKER_BATCH: usize = 64 * 1024;

/// What one connection may leave queued in the kernel, not yet sent,
/// outside the budget (`TCP_NOTSENT_LOWAT`, set on every TCP connection).
/// Without a bound the kernel grows a non-reader's send buffer to a few
/// MiB, so a few hundred of them put the host's TCP memory past
/// `tcp_mem`'s pressure mark, where the kernel drops every client's
/// segments, readers' included. With it, replies past this stay in the
/// connection's own buffers, which the budget counts and throttles. Large
/// enough that a reader is never waiting for us to refill the queue (see
/// `docs/performance.md`).
pub(crate) const KERNEL_UNSENT_ALLOWANCE: u32 = 64 * 1024;

/// The budget and what all connections hold against it.
#[derive(Debug)]
pub(crate) struct Budget {
    /// `max_buffered_bytes` (reloadable).
    limit: AtomicUsize,
    /// What every ledger has folded in: bytes held by connections that owe
    /// replies. Signed: one thread's release can be folded before another
    /// thread's charge it undoes.
    held: AtomicIsize,
    /// Connections that are not reading because they owe replies.
    throttled: AtomicIsize,
    /// Held has reached the limit, as of the last fold: what a connection
    /// that owes nothing asks on every read, so one load.
    exhausted: AtomicBool,
    /// Spent, as last logged: a warning when it becomes so, an `info` line
    /// when it has room again.
    spent: AtomicBool,
    warnings: RateLimited,
}

/// What one thread's steps changed and have not folded into the
/// [`Budget`] yet.
#[derive(Debug)]
pub(crate) struct Ledger {
    held: isize,
    throttled: isize,
    /// Fold once `held` moved this far (0: at once).
    batch: usize,
}

impl Ledger {
    /// A worker's ledger, folded every [`WORKER_BATCH`] and before each
    /// wait.
    pub(crate) fn worker() -> Self {
        Ledger {
            held: 0,
            throttled: 0,
            batch: WORKER_BATCH,
        }
    }

    /// A ledger off the workers' path (the housekeeper, the drain), whose
    /// steps are rare: folded at once.
    pub(crate) fn immediate() -> Self {
        Ledger {
            held: 0,
            throttled: 0,
            batch: 0,
        }
    }
}

impl Budget {
    pub(crate) fn new(limit: usize) -> Self {
        Budget {
            limit: AtomicUsize::new(limit),
            held: AtomicIsize::new(0),
            throttled: AtomicIsize::new(0),
            exhausted: AtomicBool::new(false),
            spent: AtomicBool::new(false),
            warnings: RateLimited::new(Duration::from_secs(10)),
        }
    }

    /// A reload's new `max_buffered_bytes`. Lowering it below what is held
    /// drops nothing: connections that owe replies stop reading until their
    /// clients take enough of them.
    pub(crate) fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
        self.note(self.held.load(Ordering::Relaxed));
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Bytes held by connections that owe replies, as folded so far.
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed).max(0) as usize
    }

    /// Connections not reading because they owe replies, as folded so far.
    pub(crate) fn throttled(&self) -> usize {
        self.throttled.load(Ordering::Relaxed).max(0) as usize
    }

    /// What is left of the budget (0 once it is spent).
    pub(crate) fn free(&self) -> usize {
        self.limit().saturating_sub(self.held())
    }

    /// Nothing is left of it.
    pub(crate) fn exhausted(&self) -> bool {
        self.exhausted.load(Ordering::Relaxed)
    }

    /// Looks at the total again: folds racing each other may have left
    /// `exhausted` (and the log's state) as of an older total, and nothing
    /// folds while every connection is quiet. The housekeeper calls it on
    /// every tick.
    pub(crate) fn refresh(&self) {
        self.note(self.held.load(Ordering::Relaxed));
    }

    /// Adds a step's changes to `ledger`, folding it if it moved far enough.
    pub(crate) fn charge(&self, ledger: &mut Ledger, held: isize, throttled: isize) {
        ledger.held += held;
        ledger.throttled += throttled;
        if ledger.held.unsigned_abs() >= ledger.batch.max(1) || ledger.batch == 0 {
            self.fold(ledger);
        }
    }

    /// Folds what `ledger` holds into the shared total (a worker calls it
    /// before every wait: nearly always there is nothing to fold).
    #[inline]
    pub(crate) fn fold(&self, ledger: &mut Ledger) {
        if ledger.held != 0 || ledger.throttled != 0 {
            self.fold_changes(ledger);
        }
    }

    #[inline(never)]
    fn fold_changes(&self, ledger: &mut Ledger) {
        if ledger.throttled != 0 {
            self.throttled
                .fetch_add(std::mem::take(&mut ledger.throttled), Ordering::Relaxed);
        }
        if ledger.held != 0 {
            let change = std::mem::take(&mut ledger.held);
            let total = self.held.fetch_add(change, Ordering::Relaxed) + change;
            self.note(total);
        }
    }

    /// Logs the budget becoming spent (a warning, at most one per 10 s) and
    /// having room again (below three quarters, so that a total hovering at
    /// the limit does not log on every fold).
    fn note(&self, total: isize) {
        let limit = self.limit();
        let total = total.max(0) as usize;
        self.exhausted.store(total >= limit, Ordering::Relaxed);
        let spent = self.spent.load(Ordering::Relaxed);
        if !spent && total >= limit {
            if self.spent.swap(true, Ordering::Relaxed) {
                return;
            }
            if let Some(suppressed) = self.warnings.allow() {
                warn!(
                    held_bytes = total,
                    max_buffered_bytes = limit,
                    suppressed,
                    "memory budget spent: clients that owe replies are not read until they take them"
                );
            }
        } else if spent && total < limit - limit / 4 && self.spent.swap(false, Ordering::Relaxed) {
            info!(
                held_bytes = total,
                max_buffered_bytes = limit,
                "memory budget has room again"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_ledger_folds_in_batches_and_on_demand() {
        let budget = Budget::new(1 << 20);
        let mut ledger = Ledger::worker();
        budget.charge(&mut ledger, 1000, 1);
        assert_eq!((budget.held(), budget.throttled()), (0, 0), "not yet");
        budget.charge(&mut ledger, WORKER_BATCH as isize, 0);
        assert_eq!(budget.held(), WORKER_BATCH + 1000);
        assert_eq!(budget.throttled(), 1);
        budget.charge(&mut ledger, -1000, -1);
        budget.fold(&mut ledger);
        assert_eq!((budget.held(), budget.throttled()), (WORKER_BATCH, 0));
        assert_eq!(budget.free(), (1 << 20) - WORKER_BATCH);
    }

    #[test]
    fn spent_when_held_reaches_the_limit_and_lowering_it_spends_it() {
        let budget = Budget::new(1 << 20);
        let mut ledger = Ledger::immediate();
        budget.charge(&mut ledger, 1 << 19, 0);
        assert_eq!(budget.free(), 1 << 19);
        budget.set_limit(1 << 18);
        assert_eq!(budget.free(), 0);
        assert!(budget.spent.load(Ordering::Relaxed));
        budget.charge(&mut ledger, -(1 << 19), 0);
        assert!(!budget.spent.load(Ordering::Relaxed));
    }
}
