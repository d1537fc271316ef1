//! One worker's life: take the lead, wait, dispatch each event, until told
//! to retire. See `leader.rs` for who waits when, `spin.rs` for how long a
//! leader polls before it sleeps.

use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use tracing::{debug, error};

use super::epoll::EventBuffer;
use super::spin::SpinBeforeSleep;
use super::token::Token;
use super::Dispatcher;
use crate::connection::Scratch;
use crate::step::{Interest, Readiness, Stimulus};

/// Events taken per `epoll_wait`. Each is owned by the worker that took it
/// (oneshot), so a batch is safe. Large, so that one wait collects what
/// arrived while the last batch was handled (fewer waits per request); a
/// full batch is the sign to share the load (`leader.rs`).
const EVENTS_PER_WAIT: usize = 64;

impl Dispatcher {
    /// Runs one worker until it retires.
    pub(super) fn work(&self) {
        let mut scratch = Scratch::counting(self.metrics.lease());
        let mut buffer = EventBuffer::new(EVENTS_PER_WAIT);
        let mut spin = SpinBeforeSleep::new();
        loop {
            let term = self.leadership.follow();
            loop {
                // About to wait: what this worker's steps changed of the
                // budget is shown now, not after the next 64 KiB.
                self.budget.fold(&mut scratch.ledger);
                let limit = self.limits.spin();
                let started = Instant::now();
                let waited = self
                    .leadership
                    .wait(|| self.events.wait(&mut buffer, spin.budget(limit)));
                spin.waited(started.elapsed(), limit);
                let events = match waited {
                    Ok(events) => events,
                    Err(e) => {
                        error!(error = %e, "epoll_wait failed");
                        thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                };
                // A full batch: more events are probably waiting than this
                // worker will reach soon; let another wait for them.
                let full = events.len() == EVENTS_PER_WAIT;
                if full {
                    self.leadership.step_down(&term);
                }
                let mut retire = false;
                for event in events {
                    match event.token {
                        Token::Connection { slot, generation } => self.on_connection_event(
                            slot,
                            generation,
                            event.readiness,
                            &mut scratch,
                        ),
                        Token::Listener(index) => self.on_listener_event(index as usize),
                        Token::Wake => retire |= self.on_wake(),
                    }
                }
                if retire {
                    self.budget.fold(&mut scratch.ledger);
                    self.leadership.step_down(&term);
                    return;
                }
                if full || !self.leadership.leads(&term) {
                    break;
                }
            }
        }
    }

    /// Own the connection (its slot, if the event is not stale), step it,
    /// re-arm or close it.
    fn on_connection_event(
        &self,
        slot: u32,
        generation: u32,
        readiness: Readiness,
        scratch: &mut Scratch,
    ) {
        match self.table.hold(slot, generation) {
            Some(held) => self.drive(held, Stimulus::Event(readiness), scratch),
            // Closed (by the housekeeper or the drain) while this event was
            // in flight; the slot may hold a new connection already.
            None => debug!(slot, generation, "stale event dropped"),
        }
    }

    /// A worker took the wake-up event: retire if the pool is too big, and
    /// pass the wake-up on while it still is.
    fn on_wake(&self) -> bool {
        let _ = self.wake.read();
        self.heartbeat.fetch_add(1, Ordering::AcqRel);
        let retire = self.pool.try_retire();
        if self.pool.excess() > 0 {
            let _ = self.wake.write(1);
        }
        if let Err(e) = self
            .events
            .rearm(self.wake.as_fd(), Token::Wake, Interest::READ)
        {
            error!(error = %e, "cannot re-arm the wake-up descriptor");
        }
        retire
    }
}
