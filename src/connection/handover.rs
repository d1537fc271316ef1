//! A connection's side of the handover (see `handover/mod.rs`): the second
//! way out of its phase machine. A connection leaves this instance not
//! closed but carried — its socket and everything the next instance needs
//! to carry on exactly where this one stopped — and comes back from that in
//! the next. Only this file knows both a connection's fields and
//! [`Carried`]'s.

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use super::{Closing, Connection, Phase};
use crate::handover::{Carried, CarriedHeader, CarriedPhase, CarriedSession, CarriedTls};
use crate::hosted::{Erased, ErasedSession};
use crate::service::Peer;

impl Connection {
    /// Takes the connection apart for the next instance, as of `now`, its
    /// session written down by `service`; back whole if `service` cannot
    /// carry it.
    pub(crate) fn hand_over(
        mut self,
        now: Instant,
        service: &dyn Erased,
    ) -> Result<(OwnedFd, Carried), Box<Connection>> {
        // Over TLS its session's keys and sequence numbers go too; one still
        // in its handshake has none to carry, and is closed.
        let tls = match &self.tls {
            None => None,
            Some(layer) => {
                let mut state = zeroize::Zeroizing::new(Vec::new());
                if !layer.session.write_state(&mut state) {
                    return Err(Box::new(self));
                }
                Some(CarriedTls {
                    state,
                    usable: true,
                })
            }
        };
        let session = match self.session.take() {
            None => None,
            Some(session) => {
                let mut bytes = Vec::new();
                if !service.save(&session, &mut bytes) {
                    self.session = Some(session);
                    return Err(Box::new(self));
                }
                Some(CarriedSession {
                    service: service.name().to_owned(),
                    format: service.session_format(),
                    bytes,
                })
            }
        };
        let timed_out = |why| why == Closing::RequestTimeout;
        let phase = match self.phase {
            Phase::Open | Phase::DrainGrace { .. } => CarriedPhase::Open,
            Phase::Closing { why, .. } => CarriedPhase::Closing {
                timed_out: timed_out(why),
            },
            Phase::Lingering { since, why, .. } => CarriedPhase::Lingering {
                timed_out: timed_out(why),
                for_: now.saturating_duration_since(since),
            },
        };
        let carried = Carried {
            id: self.id,
            input: self.input,
            output: self.output[self.sent..].to_vec(),
            peer_closed: self.peer_closed,
            spoke: self.spoke,
            phase,
            idle_for: now.saturating_duration_since(self.last_progress),
            request_for: self
                .request_started
                .map(|t| now.saturating_duration_since(t)),
            peer: Some(self.peer),
            header: self.awaiting_header.map(|waiting| CarriedHeader {
                left: waiting.deadline.saturating_duration_since(now),
                partial: waiting.partial,
            }),
            session,
            tls,
        };
        Ok((self.fd, carried))
    }

    /// Puts a carried connection back together, as of `now` (`carried`'s
    /// durations already include the time the handover took).
    pub(crate) fn restore(
        fd: OwnedFd,
        carried: Carried,
        peer: Peer,
        session: Option<ErasedSession>,
        now: Instant,
    ) -> Connection {
        let ago = |d: Duration| now.checked_sub(d).unwrap_or(now);
        let why = |timed_out| {
            if timed_out {
                Closing::RequestTimeout
            } else {
                Closing::Service
            }
        };
        let phase = match carried.phase {
            CarriedPhase::Open => Phase::Open,
            CarriedPhase::Closing { timed_out } => Phase::Closing {
                why: why(timed_out),
                draining: false,
            },
            CarriedPhase::Lingering { timed_out, for_ } => Phase::Lingering {
                since: ago(for_),
                why: why(timed_out),
                draining: false,
            },
        };
        // An older build may not have bounded the socket's queue; a socket
        // that refuses is served all the same.
        let _ = crate::listeners::bound_kernel_queue(fd.as_fd());
        let mut connection = Connection::new(fd, carried.id, peer, ago(carried.idle_for));
        connection.input = carried.input;
        connection.session = session;
        connection.may_hold = !carried.output.is_empty();
        connection.output = carried.output;
        connection.peer_closed = carried.peer_closed;
        connection.spoke = carried.spoke;
        connection.request_started = carried.request_for.map(ago);
        connection.phase = phase;
        if let Some(header) = carried.header {
            connection.awaiting_header = Some(Box::new(super::proxied::AwaitingHeader {
                deadline: now + header.left,
                partial: header.partial,
            }));
        }
        // The kernel's send queue is unknown here: have the next tick look.
        connection.wrote = true;
        connection
    }

    /// What the connection should first be armed for after a restore.
    pub(crate) fn restored_interest(&self) -> crate::step::Interest {
        match self.phase {
            // The budget is unknown here; the first step looks at it.
            Phase::Open | Phase::DrainGrace { .. } => {
                self.serving_interest(self.pending() > super::buffers::OUTPUT_HIGH_WATER)
            }
            // Writable at once if the kernel has room: the step then
            // flushes and decides (shut down and linger, or close).
            Phase::Closing { .. } => crate::step::Interest {
                read: false,
                write: true,
            },
            Phase::Lingering { .. } => crate::step::Interest::READ,
        }
    }
}
