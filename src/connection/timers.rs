//! What happens to a connection without an event: its deadlines, checked
//! on the housekeeper's tick (linger, drain grace, request and idle
//! timeouts), and the drain's transition into its phase.

use std::time::{Duration, Instant};

use super::{Closing, Connection, Context, Phase, DRAIN_GRACE, LINGER};
use crate::hosted::SessionSlot;
use crate::step::{CloseReason, Next, ProxyHeaderFailure};

impl Connection {
    /// The drain's transition, from whatever phase the connection is in.
    pub(super) fn enter_drain(&mut self, now: Instant) {
        self.phase = match self.phase {
            Phase::Open if self.awaiting_first_request(now) => Phase::DrainGrace {
                until: self.last_progress + DRAIN_GRACE,
            },
            // Answered below, before it closes.
            Phase::Open => Phase::DrainGrace { until: now },
            Phase::Closing { why, .. } => Phase::Closing {
                why,
                draining: true,
            },
            Phase::Lingering { since, why, .. } => Phase::Lingering {
                since,
                why,
                draining: true,
            },
            drained @ Phase::DrainGrace { .. } => drained,
        };
    }

    /// Accepted moments ago and silent so far.
    fn awaiting_first_request(&self, now: Instant) -> bool {
        !self.spoke && !self.peer_closed && now < self.last_progress + DRAIN_GRACE
    }

    /// Checks the connection's deadlines; `None` leaves it as it is.
    pub(super) fn on_tick(&mut self, cx: &mut Context<'_>) -> Option<Next> {
        let now = cx.now;
        if self.header_overdue(now) {
            return Some(Next::Close(CloseReason::ProxyHeader(
                ProxyHeaderFailure::TimedOut,
            )));
        }
        let handshake_timeout = Duration::from_millis(cx.limits.tls_handshake_timeout_ms);
        if self.handshake_overdue(now, handshake_timeout) {
            return Some(Next::Close(CloseReason::Tls(
                crate::tls::TlsFailure::TimedOut,
            )));
        }
        match self.phase {
            Phase::Lingering { since, why, .. } if now >= since + LINGER => {
                return Some(Next::Close(match why {
                    Closing::Service => CloseReason::LingerExpired,
                    other => other.reason(),
                }));
            }
            // A lingering connection gets no event when the client reads
            // our last bytes; during a drain, look again each tick.
            Phase::Lingering {
                why,
                draining: true,
                ..
            } => return Some(self.linger(why, true)),
            Phase::DrainGrace { until } if now >= until => {
                self.stop_input(Closing::Drain);
                return Some(self.next(cx));
            }
            Phase::Open => {
                // A throttled connection is not reading, so its incomplete
                // request cannot be the client's fault.
                let paused = self.awaiting_room || self.throttled(cx.budget);
                let started = self.request_started.filter(|_| !paused);
                if started.is_some_and(|t| now >= t + cx.limits.request_timeout) {
                    self.stop_input(Closing::RequestTimeout);
                    let mut reply = Vec::new();
                    let slot = SessionSlot::new(&mut self.session, self.id, &self.peer);
                    cx.service.request_timeout(slot, &mut reply);
                    debug_assert!(!reply.is_empty(), "a timeout reply is owed");
                    self.queue_reply(&reply);
                    if let Err(e) = self.flush(&mut cx.scratch.tally) {
                        return Some(Next::Close(CloseReason::Error(e)));
                    }
                    return Some(self.next(cx));
                }
            }
            _ => {}
        }
        self.took_replies(now);
        if now >= self.last_progress + cx.limits.idle_timeout {
            return Some(Next::Close(CloseReason::Idle));
        }
        None
    }
}
