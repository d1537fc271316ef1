//! What crosses from one instance to the next for each connection, beside
//! its socket (which carries what the kernel holds in both directions):
//! everything the next instance needs to carry on exactly where this one
//! stopped. `record.rs` writes it down; a connection takes itself apart
//! into it and back (`connection/handover.rs`).

use std::time::Duration;

use crate::service::{ConnectionId, Peer};

/// A connection's state, as carried to the next instance (beside its
/// socket, which carries what the kernel holds in both directions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Carried {
    pub id: ConnectionId,
    /// Received and not yet consumed: the start of an incomplete request.
    pub input: Vec<u8>,
    /// Replies produced and not yet taken by the kernel.
    pub output: Vec<u8>,
    /// The client half-closed.
    pub peer_closed: bool,
    /// The client has sent at least one byte.
    pub spoke: bool,
    pub phase: CarriedPhase,
    /// Time since the last progress (the idle clock).
    pub idle_for: Duration,
    /// Time since the incomplete request's first byte arrived.
    pub request_for: Option<Duration>,
    /// Its client (from its PROXY header, else its socket's peer); `None`
    /// from a record that did not say (version 1): then its socket's peer.
    pub peer: Option<Peer>,
    /// Still waiting for its PROXY header.
    pub header: Option<CarriedHeader>,
    /// Its service's session, written down; `None` if it had none yet (or
    /// from a record older than sessions).
    pub session: Option<CarriedSession>,
    /// Over TLS: its session's state (`None`: a plain connection).
    pub tls: Option<CarriedTls>,
}

/// A TLS connection's session as carried: its keys and sequence numbers,
/// secret. Wiped from memory when dropped; never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct CarriedTls {
    /// What `tls::Session::write_state` wrote.
    pub state: zeroize::Zeroizing<Vec<u8>>,
    /// It can be proven used at most once: its state file was sealed, and
    /// the manager confirmed it forgot the record before any byte is sent.
    /// Otherwise the connection is closed instead of carried on.
    pub usable: bool,
}

impl std::fmt::Debug for CarriedTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CarriedTls")
            .field(
                "state",
                &format_args!("<{} secret bytes>", self.state.len()),
            )
            .field("usable", &self.usable)
            .finish()
    }
}

/// A session as carried: its service's words for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CarriedSession {
    /// The service that wrote it (`Stateful::name`): only that one reads it.
    pub service: String,
    /// The service's `session_format` when it wrote it.
    pub format: u32,
    pub bytes: Vec<u8>,
}

/// A connection still waiting for its PROXY header, as carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CarriedHeader {
    /// Time left until its deadline.
    pub left: Duration,
    /// The part of the header received so far.
    pub partial: Vec<u8>,
}

/// The phases a connection can be handed over in. (A handover never
/// happens during a drain, so there is no drain phase to carry.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CarriedPhase {
    Open,
    /// No more input is served: the service asked to close, or a request
    /// timed out; the pending replies are still delivered.
    Closing {
        timed_out: bool,
    },
    /// Replies delivered, our side shut down, client input discarded, for
    /// `for_` so far.
    Lingering {
        timed_out: bool,
        for_: Duration,
    },
}

impl Carried {
    /// Moves every timer on by `gap`, the time the restart took: a client
    /// idle or a request incomplete since before the restart has been so
    /// for that much longer, and a PROXY header deadline is that much
    /// nearer.
    pub(crate) fn age_by(&mut self, gap: Duration) {
        self.idle_for += gap;
        self.request_for = self.request_for.map(|d| d + gap);
        if let Some(header) = &mut self.header {
            header.left = header.left.saturating_sub(gap);
        }
        if let CarriedPhase::Lingering { for_, .. } = &mut self.phase {
            *for_ += gap;
        }
    }
}
