//! The contract between the dispatcher and a connection: what one step of a
//! connection is given, and what it decides.
//!
//! Both sides import this module and nothing of each other. The dispatcher
//! turns kernel events into a [`Stimulus`], calls the connection's step, and
//! carries out the [`Next`] it returns (re-arm for an [`Interest`], or
//! close); `dispatcher/epoll.rs` is the only place these types become
//! `EPOLL*` flags. The connection never learns that epoll exists.

use std::io;
use std::time::Duration;

/// What a connection wants to be woken for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Interest {
    /// Input is wanted (not throttled, not half-closed by the peer).
    pub read: bool,
    /// Output is pending.
    pub write: bool,
}

impl Interest {
    /// Input only: listeners, the wake-up eventfd, a fresh or lingering
    /// connection.
    pub(crate) const READ: Interest = Interest {
        read: true,
        write: false,
    };
}

/// What a readiness event told about a socket, as far as a connection acts
/// on it. Readable and writable are not reported: a step always tries both
/// (a read or write that would block costs one `EAGAIN`), so they would
/// change nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Readiness {
    /// A socket error is pending (reading it returns the error).
    pub error: bool,
    /// Both directions are shut, typically by a reset: nothing more can be
    /// delivered.
    pub hangup: bool,
}

/// Why a connection is being stepped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stimulus {
    /// A worker took a readiness event for it: the connection is disarmed
    /// and must be re-armed or closed.
    Event(Readiness),
    /// The housekeeper's periodic look at an armed connection: deadlines.
    /// `None` from the step leaves it armed as it is.
    Tick,
    /// The daemon stops: answer what the client already sent, then close.
    /// Given once per connection; from then on it is in its drain phase.
    Drain,
}

/// What the dispatcher should do with the connection after a step.
#[derive(Debug)]
pub(crate) enum Next {
    /// Re-arm for this interest (never empty).
    Rearm(Interest),
    /// Deregister and close.
    Close(CloseReason),
}

/// Why a connection was closed (logged at debug).
#[derive(Debug)]
pub(crate) enum CloseReason {
    /// The client half-closed and every reply was delivered.
    PeerClosed,
    /// The peer reset the connection or hung up both directions.
    Hangup,
    /// A socket error.
    Error(io::Error),
    /// The service asked to close (e.g. a line too long), replies delivered.
    ServiceClosed,
    /// A request did not complete in time, the timeout reply delivered.
    RequestTimeout,
    /// No progress in either direction for `idle_timeout_ms`.
    Idle,
    /// Closed by a drain after its replies were delivered.
    Drained,
    /// Still busy when the drain's deadline passed.
    DrainTimedOut,
    /// Our replies were delivered but the client kept sending past the
    /// linger period.
    LingerExpired,
    /// The service panicked while serving it.
    Panic,
    /// Handed over to the next instance at a restart (its socket lives on
    /// there).
    Handover,
    /// A trusted balancer's connection without a valid PROXY header.
    ProxyHeader(ProxyHeaderFailure),
    /// Its client, named by its PROXY header, already held
    /// `max_connections_per_client`.
    PerClient,
    /// Its TLS handshake failed or did not finish in time.
    Tls(crate::tls::TlsFailure),
}

/// What was wrong with a connection's PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProxyHeaderFailure {
    /// Not a valid header (or not one at all).
    Invalid(crate::proxy::header::HeaderError),
    /// The connection ended before the header did.
    Ended,
    /// Not complete within `proxy_header_timeout_ms`.
    TimedOut,
}

impl std::fmt::Display for ProxyHeaderFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProxyHeaderFailure::Invalid(e) => write!(f, "bad PROXY header: {e}"),
            ProxyHeaderFailure::Ended => f.write_str("closed before its PROXY header was complete"),
            ProxyHeaderFailure::TimedOut => f.write_str("PROXY header not complete in time"),
        }
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::PeerClosed => f.write_str("client closed"),
            CloseReason::Hangup => f.write_str("hang-up"),
            CloseReason::Error(e) => write!(f, "error: {e}"),
            CloseReason::ServiceClosed => f.write_str("closed by the service"),
            CloseReason::RequestTimeout => f.write_str("request timeout"),
            CloseReason::Idle => f.write_str("idle timeout"),
            CloseReason::Drained => f.write_str("drained"),
            CloseReason::DrainTimedOut => f.write_str("drain timed out"),
            CloseReason::LingerExpired => f.write_str("client kept sending after close"),
            CloseReason::Panic => f.write_str("service panicked"),
            CloseReason::Handover => f.write_str("handed over"),
            CloseReason::ProxyHeader(failure) => failure.fmt(f),
            CloseReason::PerClient => f.write_str("its client's connection limit reached"),
            CloseReason::Tls(failure) => write!(f, "TLS: {failure}"),
        }
    }
}

/// Who decides whether a client may hold one more connection
/// (`max_connections_per_client`): asked by a connection whose PROXY header
/// has just named its client, before a byte of it is served.
pub(crate) trait ClientAdmission {
    /// Counts one more connection for `peer`'s address unless that client
    /// already holds its limit.
    fn admit(&self, peer: &crate::service::Peer, service: u8) -> Admission;
}

/// A client's admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Admitted and counted: uncount it when the connection leaves.
    Counted,
    /// Admitted without counting (a client with no address, over a Unix
    /// socket).
    Uncounted,
    /// Its client already holds `max_connections_per_client`.
    Refused,
}

/// The limits in force, as of the step being taken (reloadable).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Longest request line.
    pub max_line_bytes: usize,
    /// Longest a connection may go without progress.
    pub idle_timeout: Duration,
    /// Longest a request may take to arrive whole.
    pub request_timeout: Duration,
    /// Longest a TLS handshake may take from accept, in milliseconds
    /// (converted only where a tick needs it: every step carries it).
    pub tls_handshake_timeout_ms: u64,
}

/// What steps did that operators count, added up by the connection during
/// a step and taken by the dispatcher after it (plain integers: the
/// counting itself is the dispatcher's business).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Requests the service answered.
    pub requests: u64,
    /// Bytes read from the client and given to the service.
    pub received: u64,
    /// Reply bytes the kernel took.
    pub sent: u64,
    /// TLS handshakes completed.
    pub tls_handshakes: u64,
}
