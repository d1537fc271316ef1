//! The one way a connection is driven: the event path, the housekeeper's
//! tick and the drain all come through [`Dispatcher::drive`], which calls the
//! connection's step under a panic guard and carries out its decision.

use std::panic::{self, AssertUnwindSafe};
use std::time::Instant;

use tracing::{debug, error};

use super::table::Held;
use super::token::Token;
use super::Dispatcher;
use crate::budget::Ledger;
use crate::close::Closed;
use crate::connection::{Connection, Context, Scratch};
use crate::hosted::ErasedSession;
use crate::metrics::TlsHandshake;
use crate::service::{ConnectionId, Peer};
use crate::step::{CloseReason, Next, Stimulus, Tally};

impl Dispatcher {
    /// Steps the connection in a held slot, then re-arms it, closes it, or
    /// (a tick that changed nothing) leaves it armed as it was. A panic in
    /// the step — a service bug, in any of its callbacks — closes only this
    /// connection, logged, whichever thread drove it.
    pub(super) fn drive(&self, mut held: Held<'_>, stimulus: Stimulus, scratch: &mut Scratch) {
        let connection = held.connection();
        let id = connection.id();
        let service = usize::from(connection.service());
        let mut cx = Context {
            service: self.services[service].get(),
            clients: self,
            limits: self.limits.connection(),
            budget: &self.budget,
            scratch,
            now: Instant::now(),
        };
        let next = panic::catch_unwind(AssertUnwindSafe(|| connection.step(stimulus, &mut cx)))
            .unwrap_or_else(|payload| {
                log_panic(id, connection.peer(), payload.as_ref());
                Some(Next::Close(CloseReason::Panic))
            });
        self.count(service, scratch);
        match next {
            None => {}
            Some(Next::Rearm(interest)) => {
                if let Err((held, e)) = held.rearm(&self.events, interest) {
                    let mut held = held;
                    let peer = *held.connection().peer();
                    error!(conn = %id, %peer, error = %e, "bug: re-arm failed (a second owner?)");
                    self.close(held, CloseReason::Error(e));
                }
            }
            Some(Next::Close(reason)) => self.close(held, reason),
        }
    }

    /// [`Dispatcher::drive`] for a connection known by its token, if it is still
    /// open, with scratch buffers of its own (off the event path).
    pub(super) fn drive_token(&self, token: Token, stimulus: Stimulus) {
        if let Token::Connection { slot, generation } = token {
            if let Some(held) = self.table.hold(slot, generation) {
                self.drive(held, stimulus, &mut Scratch::new());
            }
        }
    }

    /// Adds what a step did to the counters of whoever took it: a
    /// worker's own, or the shared ones off the workers' path.
    fn count(&self, service: usize, scratch: &mut Scratch) {
        let tally = std::mem::take(&mut scratch.tally);
        if tally != Tally::default() {
            if tally.tls_handshakes > 0 {
                self.metrics
                    .tls_handshakes(TlsHandshake::Ok, tally.tls_handshakes);
            }
            let block = match &scratch.counters {
                Some(lease) => lease.block(),
                None => self.metrics.off_path(),
            };
            block.add(service, &tally);
        }
    }

    /// Deregisters and closes the connection in a held slot.
    pub(super) fn close(&self, held: Held<'_>, reason: CloseReason) {
        let connection = self.take_out(held, &reason);
        let service = self.services[usize::from(connection.service())]
            .get()
            .name();
        match connection
            .tls_info()
            .and_then(|tls| tls.client_subject.as_deref())
        {
            Some(client) => {
                debug!(conn = %connection.id(), peer = %connection.peer(), client, service, %reason, "connection closed")
            }
            None => {
                debug!(conn = %connection.id(), peer = %connection.peer(), service, %reason, "connection closed")
            }
        }
    }

    /// Takes the connection in a held slot out of the epoll set, the
    /// counters and the table, for `reason`, its service told of the close:
    /// closed when the caller drops it.
    pub(super) fn take_out(&self, held: Held<'_>, reason: &CloseReason) -> Connection {
        let mut connection = self.take_out_whole(held, reason);
        if let Some(session) = connection.take_session() {
            self.tell_closed(&connection, session, Closed::of(reason));
        }
        connection
    }

    /// Gives a closed connection's session back to its service, whose code
    /// may panic: that is logged, and nothing else happens.
    pub(super) fn tell_closed(&self, connection: &Connection, session: ErasedSession, why: Closed) {
        let service = self.services[usize::from(connection.service())].get();
        if panic::catch_unwind(AssertUnwindSafe(|| service.closed(session, why))).is_err() {
            error!(conn = %connection.id(), "panic in the service's closed(); ignored");
        }
    }

    /// [`Dispatcher::take_out`] without telling the service: for a connection
    /// handed over, whose session lives on in the next instance.
    pub(super) fn take_out_whole(&self, mut held: Held<'_>, reason: &CloseReason) -> Connection {
        // Closing would deregister it too, but only once no other
        // descriptor refers to the socket; say it explicitly, while the
        // slot is still ours.
        let _ = self.events.delete(held.connection().fd());
        // A connection closed after its last step holds nothing; one taken
        // out without a last step gives back what it was charged.
        if held.connection().client_counted() {
            if let Some(address) = super::clients::counted_address(held.connection().peer()) {
                self.clients.leave(address);
            }
        }
        let (charged, throttled) = held.connection().budget_share();
        if charged > 0 || throttled {
            self.budget.charge(
                &mut Ledger::immediate(),
                -(charged as isize),
                -isize::from(throttled),
            );
        }
        // Counted before the socket is closed, so that a client that saw
        // the close and then scrapes sees it counted.
        self.metrics
            .closed(usize::from(held.connection().service()), reason);
        if held.connection().is_tls() {
            self.metrics.tls_connection(false);
            if held.connection().in_handshake() {
                let result = match reason {
                    CloseReason::Tls(crate::tls::TlsFailure::TimedOut) => TlsHandshake::TimedOut,
                    _ => TlsHandshake::Failed,
                };
                self.metrics.tls_handshakes(result, 1);
            }
        }
        self.table.remove(held)
    }
}

fn log_panic(id: ConnectionId, peer: &Peer, payload: &(dyn std::any::Any + Send)) {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".to_owned());
    error!(conn = %id, %peer, panic = %message, "panic while serving a connection; closing it");
}
