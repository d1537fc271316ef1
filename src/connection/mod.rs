//! One client connection: its phase machine, driven one step at a time.
//!
//! A [`Connection`] is only ever touched by whoever holds its slot in the
//! connection table: the worker that took its epoll event, or the
//! housekeeper and the drain, under the same slot lock. Each step is given
//! a [`Stimulus`] (an event, a tick, the drain) and returns what to do next
//! ([`Next`]); the connection never sees epoll (see `step.rs`).
//!
//! Its life is a phase machine:
//!
//! ```text
//!   Open ──(line too long, request timeout)──> Closing ──> Lingering ──> closed
//!    │  └────(client EOF, replies delivered; error; idle)───────────────> closed
//!    └─(drain)─> DrainGrace ─(its first request, or grace over)─> Closing
//!
//!   Closing ──(drained, nothing left to read or to deliver)──> closed
//!           (without the shutdown: the close sends the same FIN)
//! ```
//!
//! The drain is entered once ([`Stimulus::Drain`]): from then on the
//! connection reads what the kernel holds for it, answers it and closes,
//! whatever phase it was in.

mod buffers;
mod deciding;
mod handover;
mod io;
mod proxied;
mod reading;
#[cfg(test)]
mod tests;
mod timers;
mod tls;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

pub(crate) use buffers::Scratch;

use crate::budget::Budget;
use crate::hosted::{Erased, ErasedSession, SessionSlot};
use crate::service::{ConnectionId, Peer};
use crate::step::{ClientAdmission, CloseReason, Interest, Limits, Next, Readiness, Stimulus};

/// Reads per event before the worker re-arms and moves on, so that one busy
/// connection cannot starve the others on its worker. Nothing is lost by
/// stopping: `EPOLL_CTL_MOD` fires again at once if bytes are still queued.
const READS_PER_EVENT: usize = 4;

/// What a connection that owes nothing reads per event while the memory
/// budget is spent (and only once the kernel has room for its replies):
/// it is still served, but each one that turns out not to read its replies
/// adds little beyond the budget.
const READ_WHILE_SPENT: usize = 4096;

/// Longest a closing connection keeps reading (and discarding) what the
/// client still sends, so that closing with unread input does not turn our
/// last reply into a reset.
pub(crate) const LINGER: Duration = Duration::from_secs(2);

/// What our shut-down side still counts as unacknowledged once every reply
/// byte is: on TCP the FIN takes one sequence number, and a client that
/// sends nothing back may delay acknowledging it (the delayed-ACK timer,
/// 40 ms on Linux). Waiting for that ACK would hold a drain up for
/// nothing: the FIN is the kernel's to deliver (and retransmit) after the
/// close. Only a shut-down side has sent one: before the shutdown, every
/// byte counted is a reply byte. (A Unix socket counts no FIN; there the
/// count is the memory of what the peer has not read yet.)
const FIN: usize = 1;

/// How long a drain waits for the first request of a connection that was
/// accepted but has not sent a byte yet. Clients send right after connecting,
/// but the drain can catch a connection between the two; closing it then
/// would lose a connection attempt that was already accepted.
pub(crate) const DRAIN_GRACE: Duration = Duration::from_millis(250);

/// Everything a connection needs from its worker for one step.
pub(crate) struct Context<'a> {
    pub service: &'a dyn Erased,
    /// Asked once a PROXY header has named the client.
    pub clients: &'a dyn ClientAdmission,
    /// The memory budget, looked at only by connections that owe replies
    /// (and by those that owe none, once per read, for whether it is
    /// spent).
    pub budget: &'a Budget,
    pub limits: Limits,
    pub scratch: &'a mut Scratch,
    pub now: Instant,
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading requests and writing replies.
    Open,
    /// Drained before the client's first byte: it may still send its first
    /// request until `until`, then is closed.
    DrainGrace { until: Instant },
    /// No more input is served; closes once the pending replies are out.
    Closing { why: Closing, draining: bool },
    /// Replies delivered and our side shut down; discarding client input
    /// until its EOF or [`LINGER`] after `since` (during a drain: until
    /// nothing of ours is left unacknowledged).
    Lingering {
        since: Instant,
        why: Closing,
        draining: bool,
    },
}

/// Why a connection stopped serving input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    Service,
    RequestTimeout,
    Drain,
}

impl Closing {
    fn reason(self) -> CloseReason {
        match self {
            Closing::Service => CloseReason::ServiceClosed,
            Closing::RequestTimeout => CloseReason::RequestTimeout,
            Closing::Drain => CloseReason::Drained,
        }
    }
}

/// How much a step may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadBudget {
    /// A bounded batch, stopping when throttled: fairness and memory.
    Event,
    /// Everything the kernel holds, even past the throttle, up to a receive
    /// buffer's worth: a drain answers every byte the client already sent.
    Drain,
}

/// A client connection's state.
#[derive(Debug)]
pub(crate) struct Connection {
    fd: OwnedFd,
    id: ConnectionId,
    /// Its client (logs, the service, per-client limits).
    peer: Peer,
    /// The start of an incomplete request, kept until the rest arrives.
    input: Vec<u8>,
    /// Replies the kernel has not taken yet: `output[sent..]` is pending.
    output: Vec<u8>,
    sent: usize,
    /// Last progress: a byte received, or the client taking reply bytes
    /// (the idle clock).
    last_progress: Instant,
    /// What was owed to the client (pending output plus the kernel's send
    /// queue) at the last look; less at the next look is progress. Or one
    /// of two marks instead of a measure (see `took_replies`):
    /// [`buffers::RECEIVED_SINCE`], [`buffers::UNMEASURED`].
    owed_seen: usize,
    /// Bytes were written to the socket since the last look at `owed_seen`.
    wrote: bool,
    /// When the first byte of the incomplete request in `input` arrived.
    request_started: Option<Instant>,
    /// The client half-closed (read returned 0).
    peer_closed: bool,
    /// The client has sent at least one byte. Until then `last_progress`
    /// is the time the connection was accepted.
    spoke: bool,
    /// Which of the dispatcher's services serves it (an index, not a
    /// pointer: a byte per connection, where an `Arc` would be eight).
    service: u8,
    /// What its service keeps for it; opened when first needed (see
    /// [`Connection::session`]).
    session: Option<ErasedSession>,
    phase: Phase,
    /// What its last step reported holding against the memory budget.
    charged: usize,
    /// Its last step reported it throttled (for the gauge).
    counted_throttled: bool,
    /// It may hold something against the budget: it owed replies, or
    /// waited for room, at some point since it last held nothing. Its step
    /// then ends by settling with the budget.
    may_hold: bool,
    /// Counted among its client's connections (`max_connections_per_client`).
    client_counted: bool,
    /// From a trusted balancer, and its PROXY header not read yet.
    awaiting_header: Option<Box<proxied::AwaitingHeader>>,
    /// It owes nothing but the budget is spent, and the kernel had no room
    /// for more replies: it waits to be writable before it reads again.
    awaiting_room: bool,
    /// Over TLS: its session (then `output` holds ciphertext).
    tls: Option<Box<tls::TlsLayer>>,
}

impl Connection {
    /// Wraps a freshly accepted, nonblocking socket from `peer`.
    pub(crate) fn new(fd: OwnedFd, id: ConnectionId, peer: Peer, now: Instant) -> Self {
        Connection {
            fd,
            id,
            peer,
            input: Vec::new(),
            output: Vec::new(),
            sent: 0,
            last_progress: now,
            owed_seen: 0,
            wrote: false,
            request_started: None,
            peer_closed: false,
            spoke: false,
            service: 0,
            session: None,
            phase: Phase::Open,
            charged: 0,
            counted_throttled: false,
            may_hold: false,
            client_counted: false,
            awaiting_header: None,
            awaiting_room: false,
            tls: None,
        }
    }

    /// The same connection, served by the dispatcher's service number
    /// `service` (the first, 0, by default).
    pub(crate) fn serving(self, service: u8) -> Self {
        Connection { service, ..self }
    }

    /// Opens its session and gives the new connection what its service
    /// says as it opens (`Stateful::greeting`), to be written as soon as
    /// the socket is writable; if the service says so, nothing it sends is
    /// served, and it closes once that is delivered. A TLS connection opens
    /// once its handshake is done, and its greeting is encrypted like any
    /// reply.
    pub(crate) fn open(&mut self, service: &dyn Erased) {
        let mut greeting = Vec::new();
        let close = service.greeting(self.slot(), &mut greeting);
        if !greeting.is_empty() {
            self.queue_reply(&greeting);
        }
        if close {
            self.stop_input(Closing::Service);
        }
    }

    /// Where its service finds (or opens) its session.
    pub(super) fn slot(&mut self) -> SessionSlot<'_> {
        SessionSlot::new(&mut self.session, self.id, &self.peer)
    }

    /// Its session, if it was ever opened: for the service's `closed`.
    pub(crate) fn take_session(&mut self) -> Option<ErasedSession> {
        self.session.take()
    }

    /// What a new connection is first armed for: input, and output if it
    /// was greeted.
    pub(crate) fn opening_interest(&self) -> Interest {
        // Closed at once without a greeting: woken as writable, its first
        // step closes it.
        Interest {
            read: self.reads_input(),
            write: self.pending() > 0 || !self.reads_input(),
        }
    }

    /// Starts the request timeout now, before the first byte: the first
    /// request must be complete within `request_timeout_ms` of `now`.
    pub(crate) fn start_request_clock(&mut self, now: Instant) {
        self.request_started = Some(now);
    }

    pub(crate) fn id(&self) -> ConnectionId {
        self.id
    }

    pub(crate) fn peer(&self) -> &Peer {
        &self.peer
    }

    /// Marks it counted among its client's connections, to be uncounted
    /// when it leaves.
    pub(crate) fn count_client(&mut self) {
        self.client_counted = true;
    }

    pub(crate) fn client_counted(&self) -> bool {
        self.client_counted
    }

    /// The index of the service that serves it.
    pub(crate) fn service(&self) -> u8 {
        self.service
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Takes one step. `None` (only ever for a tick) leaves the connection
    /// armed as it is; otherwise the dispatcher re-arms or closes it.
    pub(crate) fn step(&mut self, stimulus: Stimulus, cx: &mut Context<'_>) -> Option<Next> {
        let next = match stimulus {
            Stimulus::Event(ready) => Some(self.on_event(ready, cx)),
            Stimulus::Tick => self.on_tick(cx),
            Stimulus::Drain => {
                self.enter_drain(cx.now);
                Some(self.on_event(Readiness::default(), cx))
            }
        };
        // What it holds is settled with the budget where it may hold
        // something (`next`); a closing one gives its share back as it
        // leaves the table.
        debug_assert!(
            matches!(next, Some(Next::Close(_))) || self.may_hold || self.pending() == 0,
            "replies owed but not counted against the budget"
        );
        next
    }

    /// Handles readiness: flush, read and serve, decide.
    fn on_event(&mut self, ready: Readiness, cx: &mut Context<'_>) -> Next {
        if ready.error {
            return Next::Close(CloseReason::Error(io::pending_error(self.fd.as_fd())));
        }
        if let Phase::Lingering { why, draining, .. } = self.phase {
            return self.linger(why, draining);
        }
        if ready.hangup {
            // Both directions are gone (typically a reset): nothing we
            // write can be delivered any more.
            return Next::Close(CloseReason::Hangup);
        }
        if let Err(e) = self.flush(&mut cx.scratch.tally) {
            return Next::Close(CloseReason::Error(e));
        }
        let budget = match self.phase {
            Phase::Open => Some(ReadBudget::Event),
            Phase::DrainGrace { .. } => Some(ReadBudget::Drain),
            Phase::Closing { .. } | Phase::Lingering { .. } => None,
        };
        if let Some(budget) = budget {
            if let Err(reason) = self.read_and_serve(budget, cx) {
                return Next::Close(reason);
            }
        }
        if let Phase::DrainGrace { until } = self.phase {
            if self.spoke || self.peer_closed || cx.now >= until {
                self.stop_input(Closing::Drain);
            }
        }
        self.next(cx)
    }

    /// Input is still served in this phase.
    fn reads_input(&self) -> bool {
        matches!(self.phase, Phase::Open | Phase::DrainGrace { .. })
    }
}
