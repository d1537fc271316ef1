//! The drain: stop accepting, give every connection its drain step, wait
//! for the table to empty, close what is left at the deadline.
//!
//! The dispatcher's part ends there; the deadline and what is reported
//! while waiting belong to the caller (`lifecycle.rs` under systemd). What a
//! connection does once drained is its own phase machine's business
//! (`connection/mod.rs`): answer what the client already sent, flush, close.

use std::ops::Range;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use tracing::info;

use super::Dispatcher;
use crate::connection::Scratch;
use crate::step::{CloseReason, Stimulus};

/// The housekeeper's tick while draining: a drain is short and waits on
/// short deadlines (a new connection's grace, a lingering close).
pub(super) const TICK: Duration = Duration::from_millis(10);

/// Fewest slots a thread walks to give each connection its drain step. A
/// drained idle connection is closed in its step, and a close
/// (deregistering, the FIN, freeing the socket) is most of a drain's CPU:
/// walking the table in parts, as many as there are workers (and cores),
/// spreads it over the cores. A part is large enough that a thread costs
/// far less than the closes it makes (see `docs/performance.md` for what a
/// close costs).
const SLOTS_PER_WALKER: u32 = 1024;

impl Dispatcher {
    pub(super) fn draining(&self) -> bool {
        // SeqCst: see `Dispatcher::admit`.
        self.draining.load(Ordering::SeqCst)
    }

    /// Stops accepting and gives every connection its drain step. A
    /// connection a worker holds is waited for, then drained.
    pub(super) fn begin_drain(&self) {
        if self.draining() {
            return;
        }
        self.stop_accepting();
        info!(connections = self.table.live(), "draining");
        let slots = self.table.high_water();
        let cores = thread::available_parallelism().map_or(1, |n| n.get());
        let walkers = self.pool.live().min(cores).max(1) as u32;
        let share = slots.div_ceil(walkers).max(SLOTS_PER_WALKER);
        // The first part is walked here, the others each on a thread of
        // its own: a table of one part spawns nothing.
        thread::scope(|scope| {
            for first in (share..slots).step_by(share as usize) {
                let part = first..slots.min(first + share);
                let walk = move || self.drain_slots(part);
                let spawned = thread::Builder::new()
                    .name("oneshotd-drain".into())
                    .spawn_scoped(scope, walk.clone());
                if spawned.is_err() {
                    walk();
                }
            }
            self.drain_slots(0..slots.min(share));
        });
    }

    /// Gives the drain step to every connection in the slots numbered
    /// `slots`.
    fn drain_slots(&self, slots: Range<u32>) {
        let mut scratch = Scratch::new();
        self.table.for_each_in(slots, true, |held| {
            self.drive(held, Stimulus::Drain, &mut scratch)
        });
    }

    /// Waits until no connection is left or `until` passes; returns how
    /// many are left.
    pub(super) fn wait_until_empty(&self, until: Instant) -> usize {
        self.table.wait_live_below(1, until)
    }

    /// Closes every connection left, replies or not; returns how many.
    pub(super) fn close_remaining(&self) -> usize {
        let mut closed = 0;
        self.table.for_each(true, |held| {
            closed += 1;
            self.close(held, CloseReason::DrainTimedOut);
        });
        closed
    }
}
