//! The decision after a step: what a connection waits for next, or how it
//! ends (its replies delivered, our side shut down, the client's last
//! bytes drained so that the close is a FIN and never a reset).

use std::os::fd::AsFd;

use super::{io, Closing, Connection, Context, Phase, FIN};
use crate::step::{CloseReason, Interest, Next};

impl Connection {
    /// Stops serving input; pending replies are still delivered.
    pub(super) fn stop_input(&mut self, why: Closing) {
        let draining = why == Closing::Drain
            || matches!(
                self.phase,
                Phase::DrainGrace { .. }
                    | Phase::Closing { draining: true, .. }
                    | Phase::Lingering { draining: true, .. }
            );
        self.phase = Phase::Closing { why, draining };
        self.input = Vec::new();
        self.request_started = None;
    }

    /// Reads and drops input while lingering (our side shut down); closes
    /// at the client's EOF, and during a drain as soon as nothing is left
    /// in either queue (see [`Connection::discard_and_settle`]).
    pub(super) fn linger(&mut self, why: Closing, draining: bool) -> Next {
        self.discard_and_settle(why, draining, FIN)
    }

    /// Reads and drops what the client sent; closes at its EOF. During a
    /// drain it closes as soon as nothing is left in either queue: no
    /// client bytes unread (so the close sends a FIN, not a reset) and no
    /// reply byte unacknowledged (so nothing a reset could destroy). What
    /// the kernel counts as unacknowledged may exceed the reply bytes by
    /// `not_replies`: [`FIN`] once our side is shut down, nothing before.
    pub(super) fn discard_and_settle(
        &mut self,
        why: Closing,
        draining: bool,
        not_replies: usize,
    ) -> Next {
        match io::discard_input(self.fd.as_fd()) {
            Ok(io::Discarded::Empty) => {}
            // Closing with client bytes unread would send a reset: drop
            // the rest first, on the next step.
            Ok(io::Discarded::More) => return Next::Rearm(Interest::READ),
            Ok(io::Discarded::Eof) | Err(_) => return Next::Close(why.reason()),
        }
        if draining && matches!(io::unsent_bytes(self.fd.as_fd()), Ok(n) if n <= not_replies) {
            return Next::Close(why.reason());
        }
        Next::Rearm(Interest::READ)
    }

    /// What a connection still serving input waits for: input unless the
    /// client half-closed or it is `throttled`, output while some is
    /// pending or while it waits for room to write before it reads.
    pub(super) fn serving_interest(&self, throttled: bool) -> Interest {
        let waits_for_room = self.awaiting_room && !self.peer_closed;
        Interest {
            read: !self.peer_closed && !throttled && !waits_for_room,
            write: self.pending() > 0 || waits_for_room,
        }
    }

    /// [`Connection::serving_interest`] for a connection that may hold
    /// something against the budget: settles with it, and the budget
    /// decides whether it reads. Out of line, so that the common decision
    /// (owes nothing: read) stays cheap.
    #[inline(never)]
    pub(super) fn owing_interest(&mut self, cx: &mut Context<'_>) -> Interest {
        let throttled = self.throttled(cx.budget);
        self.settle_budget(throttled, cx);
        self.serving_interest(throttled)
    }

    /// The decision after a step: what to wait for, or close.
    /// Over TLS, queues our `close_notify` (once) before the connection
    /// ends, so that the client can tell the end from a cut: `Some` while
    /// it is still on its way.
    fn send_close_notify(&mut self, cx: &mut Context<'_>) -> Option<Next> {
        if self.notify_close(&mut cx.scratch.tally) && self.pending() > 0 {
            self.settle_budget(false, cx);
            return Some(Next::Rearm(Interest {
                read: false,
                write: true,
            }));
        }
        None
    }

    pub(super) fn next(&mut self, cx: &mut Context<'_>) -> Next {
        let now = cx.now;
        let pending = self.pending() > 0;
        match self.phase {
            Phase::Open | Phase::DrainGrace { .. } => {
                if self.peer_closed && !pending {
                    if let Some(flushing) = self.send_close_notify(cx) {
                        return flushing;
                    }
                    return Next::Close(CloseReason::PeerClosed);
                }
                if !self.may_hold {
                    return Next::Rearm(Interest::READ);
                }
                Next::Rearm(self.owing_interest(cx))
            }
            Phase::Closing { .. } if pending => {
                self.settle_budget(false, cx);
                Next::Rearm(Interest {
                    read: false,
                    write: true,
                })
            }
            Phase::Closing { why, draining } => {
                if let Some(flushing) = self.send_close_notify(cx) {
                    return flushing;
                }
                if self.peer_closed {
                    return Next::Close(why.reason());
                }
                // A drained connection with nothing left to read or to
                // deliver closes at once. Shutting our side down first
                // would change nothing for the client (the close sends the
                // same FIN) but would wake the epoll set for a socket that
                // is still registered: a wake-up and a stale event per
                // connection, most of what draining an idle one cost.
                if draining {
                    if let close @ Next::Close(_) = self.discard_and_settle(why, true, 0) {
                        return close;
                    }
                }
                // Closing now with client bytes unread would send a reset,
                // which can destroy our last reply before the client reads
                // it. Shut our side down and drain theirs for a while.
                match io::shut_write(self.fd.as_fd()) {
                    Ok(()) => {
                        self.phase = Phase::Lingering {
                            since: now,
                            why,
                            draining,
                        };
                        self.linger(why, draining)
                    }
                    Err(_) => Next::Close(why.reason()),
                }
            }
            Phase::Lingering { .. } => Next::Rearm(Interest::READ),
        }
    }
}
