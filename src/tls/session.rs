//! One connection's TLS: its handshake (rustls's), then its records (the
//! daemon's own record layer, `records.rs`), fed with the ciphertext the
//! connection reads and giving back the plaintext for its service and the
//! ciphertext it must send.
//!
//! The handshake is fed one whole record at a time, so that when it
//! completes nothing after it is inside rustls: the records that follow
//! (application data the client sent right behind its Finished) go to the
//! record layer, which starts from the secrets rustls hands over.

use std::sync::Arc;

use rustls::{ServerConfig, ServerConnection};

use super::records::{record_length, RecordLayer, LARGEST_RECORD};
use super::{TlsFailure, TlsInfo};

/// Where a session's handshake is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handshake {
    /// Still under way: nothing to serve yet.
    InProgress,
    /// Completed by the bytes just received.
    JustDone,
    /// Completed earlier.
    Done,
}

/// What [`Session::receive`] got out of the ciphertext it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Received {
    /// Plaintext bytes written to the start of the buffer given.
    pub plaintext: usize,
    /// The client sent `close_notify`: no more plaintext will follow.
    pub closed: bool,
    pub handshake: Handshake,
}

/// Where a connection's TLS is.
enum State {
    Handshaking {
        conn: Box<ServerConnection>,
        /// Ciphertext not yet fed to rustls: the start of a record.
        partial: Vec<u8>,
        logged: Logged,
    },
    Established {
        records: Box<RecordLayer>,
        info: Box<TlsInfo>,
    },
    /// Failed: nothing more is taken.
    Failed,
}

/// A connection's TLS session.
pub(crate) struct Session {
    state: State,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = f.debug_struct("Session");
        match &self.state {
            State::Handshaking { .. } => out.field("state", &"handshaking"),
            State::Established { records, info } => {
                out.field("records", records).field("info", info)
            }
            State::Failed => out.field("state", &"failed"),
        }
        .finish()
    }
}

impl Session {
    pub(super) fn new(config: Arc<ServerConfig>) -> Result<Session, rustls::Error> {
        let mut conn = ServerConnection::new(config)?;
        // What it encrypts is taken out at once, into the connection's own
        // buffer (which the memory budget counts): no limit of its own.
        conn.set_buffer_limit(None);
        Ok(Session {
            state: State::Handshaking {
                conn: Box::new(conn),
                partial: Vec::new(),
                logged: Logged::default(),
            },
        })
    }

    /// The handshake is done.
    pub(crate) fn established(&self) -> bool {
        matches!(self.state, State::Established { .. })
    }

    /// What was negotiated, once the handshake is done.
    pub(crate) fn info(&self) -> Option<&TlsInfo> {
        match &self.state {
            State::Established { info, .. } => Some(info),
            _ => None,
        }
    }

    /// Takes all of `ciphertext`: the plaintext it holds goes to the start
    /// of `plain` (which must have room for `ciphertext.len()` plus
    /// [`LARGEST_RECORD`] bytes), what the session must send (handshake
    /// messages, a KeyUpdate) is appended to `send`. On an error, `send`
    /// gets the alert that tells the client why, where there is one.
    pub(crate) fn receive(
        &mut self,
        ciphertext: &[u8],
        plain: &mut [u8],
        send: &mut Vec<u8>,
    ) -> Result<Received, TlsFailure> {
        let mut received = Received {
            plaintext: 0,
            closed: false,
            handshake: Handshake::Done,
        };
        let after_handshake = match &mut self.state {
            State::Established { .. } => ciphertext,
            State::Failed => return Err(TlsFailure::Refused("failed before".to_owned())),
            State::Handshaking {
                conn,
                partial,
                logged,
            } => {
                partial.extend_from_slice(ciphertext);
                let fed = match feed_handshake(conn, partial, logged, send) {
                    Ok(fed) => fed,
                    Err(failure) => {
                        self.state = State::Failed;
                        return Err(failure);
                    }
                };
                if conn.is_handshaking() {
                    partial.drain(..fed);
                    received.handshake = Handshake::InProgress;
                    return Ok(received);
                }
                received.handshake = Handshake::JustDone;
                // What came after the handshake stays with us, not rustls.
                let rest = partial.split_off(fed);
                let State::Handshaking { conn, logged, .. } =
                    std::mem::replace(&mut self.state, State::Failed)
                else {
                    unreachable!()
                };
                let (records, info) = established(*conn, logged)?;
                self.state = State::Established {
                    records: Box::new(records),
                    info: Box::new(info),
                };
                return self.open_after(&rest, plain, send, received);
            }
        };
        self.open_after(after_handshake, plain, send, received)
    }

    fn open_after(
        &mut self,
        ciphertext: &[u8],
        plain: &mut [u8],
        send: &mut Vec<u8>,
        mut received: Received,
    ) -> Result<Received, TlsFailure> {
        let State::Established { records, .. } = &mut self.state else {
            unreachable!("only after the handshake");
        };
        let opened = records.open(ciphertext, plain, send).map_err(|e| {
            records.fatal_alert(&e, send);
            TlsFailure::Record(e.to_string())
        })?;
        received.plaintext = opened.plaintext;
        received.closed = opened.closed;
        Ok(received)
    }

    /// TLS bytes it holds beyond the connection's own buffers: a record
    /// begun and not complete.
    pub(crate) fn buffered(&self) -> usize {
        match &self.state {
            State::Established { records, .. } => records.buffered(),
            _ => 0,
        }
    }

    /// Encrypts `plaintext`, appending the records to `send`; `false` if
    /// the connection can carry no more (TLS 1.2's limit) and must close.
    pub(crate) fn encrypt(&mut self, plaintext: &[u8], send: &mut Vec<u8>) -> bool {
        match &mut self.state {
            State::Established { records, .. } => records.seal(plaintext, send).is_ok(),
            _ => false,
        }
    }

    /// Appends a `close_notify` alert to `send`: the client can tell our
    /// close from a truncation.
    pub(crate) fn close_notify(&mut self, send: &mut Vec<u8>) {
        if let State::Established { records, .. } = &mut self.state {
            records.close_notify(send);
        }
    }
}

/// Feeds rustls the whole records at the start of `partial`, one at a
/// time, until its handshake is done; returns how many bytes it took.
fn feed_handshake(
    conn: &mut ServerConnection,
    partial: &[u8],
    logged: &mut Logged,
    send: &mut Vec<u8>,
) -> Result<usize, TlsFailure> {
    let mut fed = 0;
    while conn.is_handshaking() {
        // What is not a record's start is not TLS: said at once, not after
        // waiting for a "record" as long as its bytes 3 and 4 say.
        let start = &partial[fed..partial.len().min(fed + 2)];
        let is_record = match start {
            [] => true,
            [typ] => (20..=23).contains(typ),
            [typ, major, ..] => (20..=23).contains(typ) && *major == 3,
        };
        if !is_record {
            return Err(TlsFailure::NotTls);
        }
        let Some(length) = record_length(&partial[fed..]) else {
            break;
        };
        if length > LARGEST_RECORD {
            return Err(TlsFailure::NotTls);
        }
        let Some(mut record) = partial.get(fed..fed + length) else {
            break;
        };
        while !record.is_empty() {
            if conn.read_tls(&mut record).is_err() {
                return Err(TlsFailure::Refused("TLS buffer full".to_owned()));
            }
        }
        // Nothing another connection's handshake left (had it panicked
        // mid-call) is taken for this one's.
        LOGGED.with(|slot| *slot.borrow_mut() = Logged::default());
        let processed = conn.process_new_packets();
        LOGGED.with(|slot| {
            let mut slot = slot.borrow_mut();
            if let Some(client) = slot.client.take() {
                logged.client = Some(client);
            }
            if let Some(server) = slot.server.take() {
                logged.server = Some(server);
            }
        });
        take_output(conn, send);
        if let Err(e) = processed {
            return Err(TlsFailure::from_rustls(&e));
        }
        fed += length;
    }
    Ok(fed)
}

fn take_output(conn: &mut ServerConnection, send: &mut Vec<u8>) {
    while conn.wants_write() {
        if conn.write_tls(send).is_err() {
            break;
        }
    }
}

mod secrets;
mod state;

pub(super) use secrets::CaptureSecrets;
use secrets::{established, Logged, LOGGED};
