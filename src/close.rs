//! Why a connection was closed, in the few words operators count and a
//! service is told. It sits below both the service seam and the metrics,
//! so that the seam, which names it, need not know the metrics exist.

/// Why a connection was closed, as counted: the `reason` label of
/// `oneshotd_connections_closed_total`. Each of the dispatcher's close reasons maps to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Closed {
    /// The client half-closed and every reply was delivered.
    ClientEof,
    /// No progress for `idle_timeout_ms`.
    Idle,
    /// A request not complete within `request_timeout_ms`.
    RequestTimeout,
    /// The service ended it (a line too long; a metrics reply sent).
    Service,
    /// A socket error, or a bug that cost the connection (a panic).
    Error,
    /// The peer reset the connection or hung up both directions.
    Reset,
    /// Closed by a drain (after its replies, or at the drain's deadline).
    Drain,
    /// Handed over to the next instance at a restart.
    Handover,
    /// A trusted balancer's connection without a valid PROXY header.
    ProxyHeader,
    /// Its client, named by its PROXY header, already held
    /// `max_connections_per_client` (counted as refused too).
    PerClient,
    /// Its TLS handshake failed or did not finish in time.
    Tls,
}

impl Closed {
    /// Every reason, in label order.
    pub const ALL: [Closed; 11] = [
        Closed::ClientEof,
        Closed::Idle,
        Closed::RequestTimeout,
        Closed::Service,
        Closed::Error,
        Closed::Reset,
        Closed::Drain,
        Closed::Handover,
        Closed::ProxyHeader,
        Closed::PerClient,
        Closed::Tls,
    ];
}
