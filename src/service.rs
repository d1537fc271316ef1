//! The protocol seam: what the dispatcher asks of a service, and what a
//! service may and may not do.
//!
//! A [`Service`] turns the bytes a client sent into the bytes it gets back.
//! It never sees a socket, epoll or a thread: the dispatcher reads, calls
//! [`Service::serve`] with everything not yet consumed, writes what the
//! service appended to `output`, and keeps the unconsumed tail for the next
//! call. So framing (lines, here) is entirely the service's business, and
//! the dispatcher stays the same for any request/reply protocol.
//!
//! The dispatcher guarantees that calls for one connection never overlap
//! (that is what `EPOLLONESHOT` buys) and come in stream order; calls for
//! different connections run concurrently on different workers, hence
//! `Send + Sync`.
//!
//! A protocol that remembers something per connection implements
//! [`Stateful`] instead: its session is handed mutably to every call for
//! its connection — no lock, since one worker owns a connection at a time
//! — told of the close, and carried across a restart. Every [`Service`] is
//! a [`Stateful`] whose session is `()`, at no cost.

use std::fmt;
use std::net::SocketAddr;

use crate::close::Closed;

/// Identifies a connection for as long as it is open; never reused while
/// the daemon runs. Also the `conn` field of per-connection log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u64);

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Who a connection's client is: the address a trusted load balancer gave
/// in a PROXY protocol header, else the transport's peer. The `peer` of
/// every log line about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    /// A client over IP: its address and port.
    Ip(SocketAddr),
    /// A client over a Unix stream socket (which has no address of its
    /// own) that no PROXY header named.
    Unix,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Ip(addr) => write!(f, "{addr}"),
            Peer::Unix => f.write_str("unix"),
        }
    }
}

/// What the dispatcher hands a service.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The connection these bytes came from.
    pub connection: ConnectionId,
    /// Its client.
    pub peer: &'a Peer,
    /// Over TLS: what was negotiated, and the client's certificate subject
    /// with mutual TLS. `None` on a plain connection.
    pub tls: Option<&'a crate::tls::TlsInfo>,
    /// Bytes received and not yet consumed, in stream order: the tail the
    /// previous call left unconsumed, followed by what arrived since.
    pub bytes: &'a [u8],
    /// How many leading bytes of `bytes` an earlier call was given already
    /// (and left unconsumed). A service that looks at every byte it leaves
    /// unconsumed can start looking after them, so that its work stays
    /// linear however the client segments its requests
    /// (`framing::serve_lines` does).
    pub seen: usize,
    /// The client has half-closed: no more bytes will follow `bytes`, so an
    /// incomplete request at the end is all there will ever be of it.
    pub eof: bool,
    /// The largest request the service should accept (`max_line_bytes` for
    /// a line protocol). The connection enforces it too: a call that leaves
    /// more than this unconsumed ends the connection with
    /// [`Service::request_too_long`], so no service can let a client make
    /// the server buffer without limit. A service refuses earlier, with a
    /// reply of its own, when it can tell sooner.
    pub max_request_bytes: usize,
}

/// What a service did with an [`Input`]. The default consumed nothing,
/// answered nothing and keeps the connection open: wait for more bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Served {
    /// How many leading bytes of `Input::bytes` were used up. The rest is
    /// handed back on the next call, after more bytes have arrived.
    pub consumed: usize,
    /// Close the connection once `output` has been delivered: no further
    /// input is read or served.
    pub close: bool,
    /// How many requests were answered: counted for operators
    /// (`oneshotd_requests_total`), since only the service knows what a
    /// request is.
    pub requests: usize,
}

/// A request/reply protocol served by the dispatcher.
///
/// Implementations must be deterministic in what they consume: a request
/// left unconsumed is presented again with more bytes after it, and must
/// then be either consumed whole or refused.
pub trait Service: Send + Sync + 'static {
    /// Serves every complete request at the start of `input.bytes`,
    /// appending the replies to `output` in request order.
    fn serve(&self, input: Input<'_>, output: &mut Vec<u8>) -> Served;

    /// Appends the reply for a request that did not complete within
    /// `request_timeout_ms` of its first byte. The connection is closed
    /// once the replies before it and this one have been delivered.
    fn request_timeout(&self, output: &mut Vec<u8>);

    /// Appends the reply for a request that grew past
    /// [`Input::max_request_bytes`] without the service refusing it (the
    /// connection's own guard). The connection is then closed, counted
    /// with [`Service::closed_by_service`]'s reason, once the replies
    /// before it and this one are delivered. The default appends nothing:
    /// the connection just closes after the earlier replies.
    fn request_too_long(&self, _output: &mut Vec<u8>) {}

    /// A short lowercase name: the `service` label of its counters.
    fn name(&self) -> &'static str {
        "service"
    }

    /// The `reason` label of the connections closed because the service
    /// said so ([`Served::close`]), e.g. `line_too_long`.
    fn closed_by_service(&self) -> &'static str {
        "service"
    }

    /// What a connection gets as it opens, before it sends anything:
    /// appended to `output`. Returns `true` to close the connection once
    /// that is delivered (a service that only announces something, such as
    /// the load-balancer agent). The default sends nothing and keeps it
    /// open.
    fn greeting(&self, _output: &mut Vec<u8>) -> bool {
        false
    }

    /// Whether connections from the sources in `proxy_protocol_from` must
    /// begin with a PROXY protocol header for this service. The default:
    /// `true`; a service balancers reach without one (their agent checks)
    /// says `false`.
    fn proxy_protocol(&self) -> bool {
        true
    }

    /// Whether a connection's first request must be complete within
    /// `request_timeout_ms` of its accept, not of its first byte. For a
    /// service with a small connection budget of its own (the metrics
    /// endpoint), so that clients that connect and say nothing cannot hold
    /// every slot until the idle timeout. The default: `false`.
    fn deadline_from_accept(&self) -> bool {
        false
    }

    /// How many of this service's connections may be held at once, if it
    /// has a budget of its own. `None` (the default): its connections count
    /// against `max_connections`, together with those of every other
    /// service without a budget of its own. A service for operators (the
    /// metrics endpoint) has its own, so that a daemon holding
    /// `max_connections` clients still answers them.
    fn connection_limit(&self) -> Option<usize> {
        None
    }
}

/// A service that keeps a session per connection: what a stateful protocol
/// remembers between requests (a selected database, a client's name, an
/// authenticated user, a transaction under way).
///
/// A session is opened when the connection first needs it — as it opens,
/// or once a balancer's PROXY header has named its client — with the
/// connection's id and client; it is handed mutably to every call for that
/// connection, and the dispatcher guarantees that one worker at a time
/// owns a connection (`EPOLLONESHOT`), so a session needs no lock. When the
/// connection closes, [`Stateful::closed`] gets it back with the reason.
///
/// At a restart the connection moves to the next process, and its session
/// with it if the service can write it down ([`Stateful::save`]) and read
/// it back ([`Stateful::restore`]); the state record holds the bytes
/// tagged with the service's name and [`Stateful::session_format`]. A
/// connection whose session cannot be carried is closed at the restart,
/// with a warning, rather than served on without it.
///
/// Every [`Service`] is a `Stateful` whose session is `()`.
pub trait Stateful: Send + Sync + 'static {
    /// What the service keeps per connection.
    type Session: Send + 'static;

    /// Whether its sessions hold nothing and its `open` and `closed` do
    /// nothing, so that the dispatcher may skip them: true of every
    /// [`Service`]; leave it `false` in a `Stateful` of one's own.
    const STATELESS: bool = false;

    /// A session for a connection that has just opened (or whose PROXY
    /// header has just named its client).
    fn open(&self, connection: ConnectionId, peer: &Peer) -> Self::Session;

    /// [`Service::serve`], with the connection's session.
    fn serve(&self, session: &mut Self::Session, input: Input<'_>, output: &mut Vec<u8>) -> Served;

    /// [`Service::request_timeout`], with the connection's session.
    fn request_timeout(&self, session: &mut Self::Session, output: &mut Vec<u8>);

    /// [`Service::request_too_long`], with the connection's session.
    fn request_too_long(&self, _session: &mut Self::Session, _output: &mut Vec<u8>) {}

    /// [`Service::greeting`], with the connection's session.
    fn greeting(&self, _session: &mut Self::Session, _output: &mut Vec<u8>) -> bool {
        false
    }

    /// The connection has closed, for `why`: the session's last call. Not
    /// called when the connection is handed to the next process at a
    /// restart (it is not closed; its session goes with it).
    fn closed(&self, _session: Self::Session, _why: Closed) {}

    /// Writes the session down for the next process at a restart, appending
    /// to `out`; `false`: this service cannot carry its sessions (the
    /// default), and the connection is closed at a restart.
    fn save(&self, _session: &Self::Session, _out: &mut Vec<u8>) -> bool {
        false
    }

    /// Reads back a session written by [`Stateful::save`] in format
    /// `format` (a previous build's [`Stateful::session_format`]); `None`
    /// if it cannot (a format it does not know, or corrupt bytes): the
    /// connection is then closed, with a warning.
    fn restore(&self, _saved: &[u8], _format: u32) -> Option<Self::Session> {
        None
    }

    /// The version of what [`Stateful::save`] writes, for the next build's
    /// [`Stateful::restore`].
    fn session_format(&self) -> u32 {
        1
    }

    /// [`Service::name`].
    fn name(&self) -> &'static str {
        "service"
    }

    /// [`Service::closed_by_service`].
    fn closed_by_service(&self) -> &'static str {
        "service"
    }

    /// [`Service::proxy_protocol`].
    fn proxy_protocol(&self) -> bool {
        true
    }

    /// [`Service::deadline_from_accept`].
    fn deadline_from_accept(&self) -> bool {
        false
    }

    /// [`Service::connection_limit`].
    fn connection_limit(&self) -> Option<usize> {
        None
    }
}

/// A stateless service keeps `()` per connection, which carries across a
/// restart as nothing at all.
impl<S: Service + ?Sized> Stateful for S {
    type Session = ();
    const STATELESS: bool = true;

    fn open(&self, _connection: ConnectionId, _peer: &Peer) {}

    fn serve(&self, _session: &mut (), input: Input<'_>, output: &mut Vec<u8>) -> Served {
        Service::serve(self, input, output)
    }

    fn request_timeout(&self, _session: &mut (), output: &mut Vec<u8>) {
        Service::request_timeout(self, output)
    }

    fn request_too_long(&self, _session: &mut (), output: &mut Vec<u8>) {
        Service::request_too_long(self, output)
    }

    fn greeting(&self, _session: &mut (), output: &mut Vec<u8>) -> bool {
        Service::greeting(self, output)
    }

    fn save(&self, _session: &(), _out: &mut Vec<u8>) -> bool {
        true
    }

    fn restore(&self, saved: &[u8], _format: u32) -> Option<()> {
        saved.is_empty().then_some(())
    }

    fn name(&self) -> &'static str {
        Service::name(self)
    }

    fn closed_by_service(&self) -> &'static str {
        Service::closed_by_service(self)
    }

    fn proxy_protocol(&self) -> bool {
        Service::proxy_protocol(self)
    }

    fn deadline_from_accept(&self) -> bool {
        Service::deadline_from_accept(self)
    }

    fn connection_limit(&self) -> Option<usize> {
        Service::connection_limit(self)
    }
}
