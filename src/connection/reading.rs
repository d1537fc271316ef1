//! Reading a connection's input and serving it: how much one step may
//! read (fairness between connections, and the memory budget), the PROXY
//! header and TLS before the service, and the service itself.

use std::os::fd::AsFd;

use nix::errno::Errno;

use super::{buffers, io, Connection, Context, ReadBudget, READS_PER_EVENT, READ_WHILE_SPENT};
use crate::step::{CloseReason, ProxyHeaderFailure};

impl Connection {
    /// Reads what may be read now and serves it, within `budget`: the
    /// PROXY header first, if one is awaited.
    pub(super) fn read_and_serve(
        &mut self,
        budget: ReadBudget,
        cx: &mut Context<'_>,
    ) -> Result<(), CloseReason> {
        let mut reads = 0;
        // A drain's bound is only asked for once there is something to
        // read: most drained connections are idle, and their first read
        // already finds nothing.
        let mut drain_left: Option<usize> = None;
        while self.reads_input() && !self.peer_closed && drain_left != Some(0) {
            let mut read_size = cx.scratch.input.len();
            if self.tls.is_some() {
                // Room for the plaintext of a record split by the last read.
                read_size -= crate::tls::LARGEST_RECORD;
            }
            // The budget has a say only for a connection that may hold
            // something, or once it is spent: one flag and one load on
            // every other read.
            if budget == ReadBudget::Event && (self.may_hold || cx.budget.exhausted()) {
                match self.budget_allows(reads, cx) {
                    Some(size) => read_size = read_size.min(size),
                    None => break,
                }
            }
            let n = match io::receive(self.fd.as_fd(), &mut cx.scratch.input[..read_size]) {
                Ok(n) => n,
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(CloseReason::Error(e.into())),
            };
            if n == 0 {
                if self.awaiting_header.is_some() {
                    return Err(CloseReason::ProxyHeader(ProxyHeaderFailure::Ended));
                }
                if self.in_handshake() {
                    return Err(CloseReason::Tls(crate::tls::TlsFailure::Ended));
                }
                if self.is_tls() {
                    // A TCP end without close_notify may be a cut made by
                    // someone on the path: an incomplete last request is
                    // dropped, not served as if the client had ended it.
                    self.input = Vec::new();
                    self.request_started = None;
                }
                self.peer_closed = true;
                self.serve(0..0, cx).map_err(CloseReason::Error)?;
                break;
            }
            self.last_progress = cx.now;
            self.owed_seen = buffers::RECEIVED_SINCE;
            self.spoke = true;
            if self.awaiting_header.is_none() && self.tls.is_none() {
                // The common case, kept as short as it was before TLS.
                self.serve(0..n, cx).map_err(CloseReason::Error)?;
            } else if self.read_behind_header_or_tls(n, cx)? {
                break;
            }
            reads += 1;
            if budget == ReadBudget::Drain {
                let left = drain_left.unwrap_or_else(|| io::receive_buffer_size(self.fd.as_fd()));
                drain_left = Some(left.saturating_sub(n));
            }
            // A short read means the socket is (very likely) empty; skipping
            // the read that would return EAGAIN is safe because re-arming
            // re-checks readiness.
            let drained = n < read_size;
            if budget == ReadBudget::Event && (drained || reads == READS_PER_EVENT) {
                break;
            }
        }
        Ok(())
    }

    /// How much the memory budget lets this connection read now, if
    /// anything: nothing once it owes as much as the budget has left (see
    /// [`Connection::throttled`]). While the budget is spent, one that owes
    /// nothing reads a little per event, and only once the kernel can take
    /// its replies, so that a client that never reads adds almost nothing
    /// before it owes replies and stops being read.
    #[inline(never)]
    pub(super) fn budget_allows(&mut self, reads: usize, cx: &Context<'_>) -> Option<usize> {
        self.awaiting_room = false;
        if self.throttled(cx.budget) {
            return None;
        }
        if self.pending() > 0 || !cx.budget.exhausted() {
            return Some(cx.scratch.input.len());
        }
        if reads > 0 {
            return None;
        }
        if !io::writable(self.fd.as_fd()) {
            self.awaiting_room = true;
            self.may_hold = true;
            return None;
        }
        Some(READ_WHILE_SPENT)
    }

    /// The bytes just read into `scratch.input[..n]` on a connection that
    /// awaits its PROXY header or speaks TLS: the header first, then the
    /// ciphertext decrypted, then the service. `true` once the client's
    /// `close_notify` ended its input.
    #[inline(never)]
    fn read_behind_header_or_tls(
        &mut self,
        n: usize,
        cx: &mut Context<'_>,
    ) -> Result<bool, CloseReason> {
        let start = if self.awaiting_header.is_none() {
            Some(0)
        } else {
            self.read_header(n, cx)?
        };
        // (A greeting that closes leaves nothing to serve.)
        let Some(start) = start.filter(|&start| start < n && self.reads_input()) else {
            return Ok(false);
        };
        if self.tls.is_none() {
            self.serve(start..n, cx).map_err(CloseReason::Error)?;
            return Ok(false);
        }
        let (plaintext, closed) = self.decrypt(start..n, cx)?;
        if plaintext > 0 && self.reads_input() {
            self.serve(0..plaintext, cx).map_err(CloseReason::Error)?;
        }
        if closed {
            self.peer_closed = true;
            if self.reads_input() {
                self.serve(0..0, cx).map_err(CloseReason::Error)?;
            }
        }
        Ok(closed)
    }
}
