//! A connection over TLS: its handshake (with a deadline from accept), the
//! ciphertext it reads turned into plaintext for its service, and the
//! plaintext replies turned into records in its output buffer.
//!
//! Everything the service sees and writes is plaintext, through the same
//! seams as on a plain connection. The ciphertext of the replies is what
//! the connection's output holds, so the memory budget, the throttle and
//! the idle rule count what is really on its way to the client.

use std::time::Instant;

use super::{Connection, Context};
use crate::step::{CloseReason, Tally};
use crate::tls::{Handshake, Session, TlsInfo};

/// A TLS connection's own state.
#[derive(Debug)]
pub(crate) struct TlsLayer {
    pub(super) session: Session,
    /// When it was accepted: the handshake must be done
    /// `tls_handshake_timeout_ms` later (as that is now: a reload applies
    /// to handshakes under way too).
    since: Instant,
    /// Our `close_notify` is queued: never twice.
    notified: bool,
}

impl Connection {
    /// Serves the connection over TLS: nothing reaches the service before
    /// `session`'s handshake is done, within the handshake timeout of
    /// `since` (its accept).
    pub(crate) fn start_tls(&mut self, session: Session, since: Instant) {
        self.tls = Some(Box::new(TlsLayer {
            session,
            since,
            notified: false,
        }));
        // It holds its handshake against the budget from its first step.
        self.may_hold = true;
    }

    /// Carries on a TLS session restored from the previous instance.
    pub(crate) fn resume_tls(&mut self, session: Session, now: Instant) {
        self.start_tls(session, now);
        // Its handshake was done long ago: nothing held for it.
        self.may_hold = self.pending() > 0;
    }

    /// Over TLS (whether its handshake is done or not).
    pub(crate) fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// What its TLS negotiated, once the handshake is done.
    pub(crate) fn tls_info(&self) -> Option<&TlsInfo> {
        self.tls.as_ref().and_then(|tls| tls.session.info())
    }

    /// Its handshake is still under way.
    pub(crate) fn in_handshake(&self) -> bool {
        self.tls
            .as_ref()
            .is_some_and(|tls| !tls.session.established())
    }

    /// Its handshake has taken longer than `timeout`.
    pub(super) fn handshake_overdue(&self, now: Instant, timeout: std::time::Duration) -> bool {
        self.tls
            .as_ref()
            .is_some_and(|tls| !tls.session.established() && now >= tls.since + timeout)
    }

    /// Turns the ciphertext `scratch.input[range]` into plaintext, left at
    /// the start of `scratch.input` for [`Connection::serve`]; queues what
    /// the session must send. `Ok((plaintext, closed))`: how many bytes,
    /// and whether the client sent `close_notify`. Opens the service's
    /// session once the handshake is done.
    pub(super) fn decrypt(
        &mut self,
        range: std::ops::Range<usize>,
        cx: &mut Context<'_>,
    ) -> Result<(usize, bool), CloseReason> {
        let Some(tls) = self.tls.as_mut() else {
            unreachable!("only called on a TLS connection");
        };
        let scratch = &mut *cx.scratch;
        if scratch.plaintext.len() != scratch.input.len() {
            scratch.plaintext = vec![0; scratch.input.len()].into_boxed_slice();
        }
        let received = tls.session.receive(
            &scratch.input[range],
            &mut scratch.plaintext,
            &mut self.output,
        );
        // The plaintext takes the read buffer's place (a swap of two
        // pointers), so that serving it is the same as on a plain socket.
        std::mem::swap(&mut scratch.input, &mut scratch.plaintext);
        let received = match received {
            Ok(received) => received,
            Err(failure) => {
                // The alert, if there is one, goes out before the close.
                let _ = self.flush(&mut cx.scratch.tally);
                return Err(CloseReason::Tls(failure));
            }
        };
        if received.handshake == Handshake::JustDone {
            if let Some(info) = tls.session.info() {
                tracing::debug!(
                    conn = %self.id,
                    peer = %self.peer,
                    version = info.version,
                    cipher_suite = info.cipher_suite,
                    client = info.client_subject.as_deref().unwrap_or("-"),
                    "TLS handshake done"
                );
            }
            cx.scratch.tally.tls_handshakes += 1;
            self.open(cx.service);
        }
        if self.pending() > 0 {
            self.may_hold = true;
            self.flush(&mut cx.scratch.tally)
                .map_err(CloseReason::Error)?;
        }
        Ok((received.plaintext, received.closed))
    }

    /// Appends `plaintext`, encrypted, to the pending output.
    pub(super) fn encrypt(&mut self, plaintext: &[u8]) {
        if plaintext.is_empty() {
            return;
        }
        if let Some(tls) = self.tls.as_mut() {
            let more = tls.session.encrypt(plaintext, &mut self.output);
            self.may_hold |= self.output.len() > self.sent;
            if !more {
                // TLS 1.2's records are used up: it ends here, and its
                // client connects again.
                self.stop_input(super::Closing::Service);
            }
        }
    }

    /// Queues our `close_notify` once, as the last thing we send, and
    /// tries to send it; `false` on a plain connection.
    pub(super) fn notify_close(&mut self, tally: &mut Tally) -> bool {
        let Some(tls) = self.tls.as_mut() else {
            return false;
        };
        if !tls.notified && tls.session.established() {
            tls.notified = true;
            tls.session.close_notify(&mut self.output);
            let _ = self.flush(tally);
        }
        true
    }
}
