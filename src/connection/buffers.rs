//! A connection's buffers: the worker's scratch space it borrows for a
//! step, the incomplete request and the unsent replies it keeps, and the
//! one place where the service is called.
//!
//! Buffers are allocated only while needed: an idle connection holds no
//! heap memory at all. Reads go into the worker's scratch buffer, replies
//! are written from the worker's scratch output straight to the socket, and
//! only the bytes the kernel did not take (a partial write) or the start of
//! an incomplete request are copied into the connection.

use std::io;
use std::os::fd::AsFd;
use std::time::Instant;

use super::io::write_some;
use super::{Closing, Connection, Context};
use crate::budget::Budget;
use crate::budget::Ledger;
use crate::hosted::SessionSlot;
use crate::metrics::Lease;
use crate::service::Input;
use crate::step::Tally;

/// `owed_seen` once bytes were received since the last look: progress
/// already, so the next look need not ask the kernel. (No connection can
/// owe this much, nor the next value down.)
pub(super) const RECEIVED_SINCE: usize = usize::MAX;
/// `owed_seen` after a look that did not ask: nothing to compare with.
pub(super) const UNMEASURED: usize = usize::MAX - 1;

/// What a TLS handshake under way is counted as holding: its session's
/// state and, at most, one record not yet complete (a ClientHello split
/// over reads). Measured, a half ClientHello costs the process about
/// 6.4 KB per connection; a padded one can fill a whole record.
pub(super) const HANDSHAKE_HELD: usize = crate::tls::LARGEST_RECORD;

/// Pending output past which the connection stops reading: a client that
/// sends but never reads is throttled here instead of growing our memory.
pub(crate) const OUTPUT_HIGH_WATER: usize = 1 << 20;

/// The per-worker buffers a connection borrows while it is being handled,
/// and what its steps did, for the counters.
#[derive(Debug)]
pub(crate) struct Scratch {
    pub(super) input: Box<[u8]>,
    /// Where a TLS connection's plaintext is decrypted to (then swapped
    /// with `input`); allocated by the first TLS step, so a daemon without
    /// TLS has none.
    pub(super) plaintext: Box<[u8]>,
    pub(super) output: Vec<u8>,
    /// Added to by the step, taken by the dispatcher after it.
    pub(crate) tally: Tally,
    /// A worker's own counters; `None` off the workers' path.
    pub(crate) counters: Option<Lease>,
    /// What its steps changed of the memory budget, not folded yet.
    pub(crate) ledger: Ledger,
}

impl Scratch {
    /// A worker's buffers: one read's worth of input, and the replies to it.
    pub(crate) fn new() -> Self {
        Scratch {
            input: vec![0; 64 * 1024].into_boxed_slice(),
            plaintext: Box::default(),
            output: Vec::with_capacity(64 * 1024),
            tally: Tally::default(),
            counters: None,
            ledger: Ledger::immediate(),
        }
    }

    /// The same, counting into a worker's own counters and ledger.
    pub(crate) fn counting(counters: Lease) -> Self {
        Scratch {
            counters: Some(counters),
            ledger: Ledger::worker(),
            ..Scratch::new()
        }
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch::new()
    }
}

impl Connection {
    /// Replies produced and not yet taken by the kernel.
    pub(super) fn pending(&self) -> usize {
        self.output.len() - self.sent
    }

    /// Bytes held against the memory budget: while the connection owes
    /// replies, the buffers of those the kernel has not taken and of the
    /// input received behind them (their capacity: what is allocated, not
    /// only what is used); nothing while it owes none (a partial request
    /// alone is bounded by `max_line_bytes` and `request_timeout_ms`).
    /// A TLS handshake under way holds its session's state too (see
    /// [`HANDSHAKE_HELD`]), so that a flood of handshakes is bounded by the
    /// budget like clients that do not read.
    pub(super) fn held(&self) -> usize {
        let handshake = if self.in_handshake() {
            HANDSHAKE_HELD
        } else {
            0
        };
        match self.pending() {
            0 => handshake,
            _ => {
                // A TLS record begun is input received behind the replies.
                let record = self.tls.as_ref().map_or(0, |tls| tls.session.buffered());
                self.output.capacity() + self.input.capacity() + record + handshake
            }
        }
    }

    /// Whether a connection that owes replies must stop reading until its
    /// client takes some: past its own bound, or when what it holds is as
    /// much as the budget has left. So as the budget runs out, the
    /// connections holding the most stop first, and once it is spent every
    /// one that owes replies waits. (The budget counts this connection as
    /// holding `charged`, what its last step reported; what it holds now
    /// replaces that.) One that owes nothing is never throttled, a TLS
    /// handshake under way included: like a partial request, what it holds
    /// is bounded per connection and in time (its deadline), and it counts
    /// against the budget, so a flood of them throttles the clients that do
    /// not read, while a newcomer's handshake still goes through.
    pub(super) fn throttled(&self, budget: &Budget) -> bool {
        if self.pending() == 0 {
            return false;
        }
        let held = self.held();
        let free = (budget.free() + self.charged).saturating_sub(held);
        self.pending() > OUTPUT_HIGH_WATER || held >= free
    }

    /// Charges the budget (through the ledger of whoever took the step) for
    /// how what it holds changed since it last settled, and for whether it
    /// is throttled (by the budget: `budget_throttled`, or waiting for
    /// room). Only when it `may_hold` something: nearly every step owes
    /// nothing before and after, and costs the budget one test of a flag.
    /// A closing connection does not settle: it gives back what it was
    /// charged as it leaves the table ([`Connection::budget_share`]).
    pub(super) fn settle_budget(&mut self, budget_throttled: bool, cx: &mut Context<'_>) {
        if self.peer_closed {
            // Nothing more is read: no room to wait for.
            self.awaiting_room = false;
        }
        let held = self.held();
        let throttled = self.reads_input() && (self.awaiting_room || budget_throttled);
        let held_change = held as isize - self.charged as isize;
        self.charged = held;
        let throttled_change = match (self.counted_throttled, throttled) {
            (false, true) => 1,
            (true, false) => -1,
            _ => 0,
        };
        self.counted_throttled = throttled;
        self.may_hold = held > 0 || throttled;
        cx.budget
            .charge(&mut cx.scratch.ledger, held_change, throttled_change);
    }

    /// What it was last reported holding against the budget, and whether
    /// it was counted throttled: to be taken back if it goes without a
    /// last step (a panic, a handover, the drain's deadline).
    pub(crate) fn budget_share(&self) -> (usize, bool) {
        (self.charged, self.counted_throttled)
    }

    /// Serves `scratch.input[fresh]` after whatever was buffered, then
    /// writes the replies.
    pub(super) fn serve(
        &mut self,
        fresh: std::ops::Range<usize>,
        cx: &mut Context<'_>,
    ) -> io::Result<()> {
        let Scratch {
            input,
            output,
            tally,
            ..
        } = &mut *cx.scratch;
        let fresh = &input[fresh];
        tally.received += fresh.len() as u64;
        // Replies go straight from the worker's buffer to the socket unless
        // older ones are still queued, which they must follow.
        // Over TLS they are plaintext here, encrypted below.
        let direct = self.pending() == 0 || self.tls.is_some();
        let out = if direct {
            output.clear();
            output
        } else {
            &mut self.output
        };
        let max_request_bytes = cx.limits.max_line_bytes;
        let tls = self.tls.as_deref().and_then(|tls| tls.session.info());
        let mut request = Input {
            connection: self.id,
            peer: &self.peer,
            tls,
            bytes: fresh,
            seen: 0,
            eof: self.peer_closed,
            max_request_bytes,
        };
        let id = self.id;
        let served = if self.input.is_empty() {
            let slot = SessionSlot::new(&mut self.session, id, &self.peer);
            let served = cx.service.serve(slot, request, out);
            self.input.extend_from_slice(&fresh[served.consumed..]);
            served
        } else {
            request.seen = self.input.len();
            self.input.extend_from_slice(fresh);
            request.bytes = &self.input;
            let slot = SessionSlot::new(&mut self.session, id, &self.peer);
            let served = cx.service.serve(slot, request, out);
            self.input.drain(..served.consumed);
            served
        };
        // The service should have refused a request this long; whether it
        // did or not, the connection does not buffer more of it.
        let overlong = !served.close && self.input.len() > max_request_bytes;
        if overlong {
            let slot = SessionSlot::new(&mut self.session, id, &self.peer);
            cx.service.request_too_long(slot, out);
        }
        if self.input.is_empty() {
            self.input = Vec::new();
            self.request_started = None;
        } else if served.consumed > 0 || self.request_started.is_none() {
            self.request_started = Some(cx.now);
        }
        tally.requests += served.requests as u64;
        if served.close || overlong {
            self.stop_input(Closing::Service);
        }
        if self.tls.is_some() {
            let plaintext = std::mem::take(&mut cx.scratch.output);
            self.encrypt(&plaintext);
            cx.scratch.output = plaintext;
            self.flush(&mut cx.scratch.tally)
        } else if direct {
            let written = write_some(self.fd.as_fd(), &cx.scratch.output)?;
            self.wrote |= written > 0;
            cx.scratch.tally.sent += written as u64;
            if written < cx.scratch.output.len() {
                self.output.extend_from_slice(&cx.scratch.output[written..]);
                self.may_hold = true;
            }
            Ok(())
        } else {
            self.flush(&mut cx.scratch.tally)
        }
    }

    /// Queues a reply written off the serving path (a request timeout's),
    /// after the pending ones: encrypted over TLS.
    pub(super) fn queue_reply(&mut self, reply: &[u8]) {
        if self.tls.is_some() {
            self.encrypt(reply);
        } else {
            self.output.extend_from_slice(reply);
        }
        self.may_hold = true;
    }

    /// Writes pending replies until done or the kernel's buffer is full.
    pub(super) fn flush(&mut self, tally: &mut Tally) -> io::Result<()> {
        if self.pending() == 0 {
            return Ok(());
        }
        let written = write_some(self.fd.as_fd(), &self.output[self.sent..])?;
        self.wrote |= written > 0;
        tally.sent += written as u64;
        self.sent += written;
        if self.sent == self.output.len() {
            // Release the memory: an idle connection holds no buffer.
            self.output = Vec::new();
            self.sent = 0;
        } else if self.sent > self.output.len() / 2 {
            self.output.drain(..self.sent);
            self.sent = 0;
        }
        Ok(())
    }

    /// Whether the client took reply bytes since the last look: what is
    /// still owed to it (our pending output plus the kernel's send queue)
    /// went down. Asks the kernel (`SIOCOUTQ`) only when the answer can
    /// matter: not when bytes were received since the last look, which is
    /// progress already and what every busy connection shows (asking every
    /// busy connection on every tick costs measurable CPU at scale, see
    /// `docs/performance.md`, and takes each socket's lock from the
    /// workers), nor when nothing was written or owed. A look after one
    /// that did not ask only measures, so replies taken before the second
    /// look after a connection's last request are not counted: a client
    /// that took them so soon and then went quiet is idle from its request,
    /// at most two ticks (a quarter of the shortest timeout) earlier than
    /// by the exact account.
    pub(super) fn took_replies(&mut self, now: Instant) -> bool {
        match self.owed_seen {
            RECEIVED_SINCE => {
                self.owed_seen = UNMEASURED;
                return false;
            }
            0 if !self.wrote => return false,
            _ => {}
        }
        let Ok(queued) = super::io::unsent_bytes(self.fd.as_fd()) else {
            return false;
        };
        let owed = self.pending() + queued;
        // Owed grows only with new replies, and those follow received
        // bytes, which are progress of their own.
        let progressed = self.owed_seen != UNMEASURED && owed < self.owed_seen;
        if progressed {
            self.last_progress = now;
        }
        self.owed_seen = owed;
        self.wrote = false;
        progressed
    }
}
