//! One connection's TLS: its handshake, then its records, fed with the
//! ciphertext the connection reads and giving back the plaintext for its
//! service and the ciphertext it must send.

use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::{ProtocolVersion, ServerConfig, ServerConnection};

use super::TlsInfo;

/// The most ciphertext a partial record can leave behind between reads (a
/// TLS 1.2 record with the largest expansion, and its header): a read of
/// `n` bytes gives at most `n` plus this much plaintext.
pub(crate) const LARGEST_RECORD: usize = 5 + 16 * 1024 + 2048;

/// Why a handshake did not complete, as the log and metrics say it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// Not done within `tls_handshake_timeout_ms` of accept.
    TimedOut,
    /// The client offered no cipher suite (or version) we have.
    NoSharedCipher,
    /// Mutual TLS, and the client showed no certificate.
    CertificateRequired,
    /// Its certificate does not chain to `tls_client_ca`, or is not valid.
    BadCertificate(String),
    /// What it sent is not TLS.
    NotTls,
    /// It closed before the handshake was done.
    Ended,
    /// Anything else the protocol refused.
    Refused(String),
}

impl std::fmt::Display for HandshakeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeFailure::TimedOut => f.write_str("handshake timeout"),
            HandshakeFailure::NoSharedCipher => f.write_str("no shared cipher"),
            HandshakeFailure::CertificateRequired => f.write_str("certificate required"),
            HandshakeFailure::BadCertificate(why) => write!(f, "bad client certificate: {why}"),
            HandshakeFailure::NotTls => f.write_str("not TLS"),
            HandshakeFailure::Ended => f.write_str("client closed during the handshake"),
            HandshakeFailure::Refused(why) => f.write_str(why),
        }
    }
}

impl HandshakeFailure {
    fn from_rustls(error: &rustls::Error) -> Self {
        use rustls::{Error, PeerIncompatible, PeerMisbehaved};
        match error {
            Error::PeerIncompatible(
                PeerIncompatible::NoCipherSuitesInCommon
                | PeerIncompatible::NoKxGroupsInCommon
                | PeerIncompatible::NoSignatureSchemesInCommon
                | PeerIncompatible::SupportedVersionsExtensionRequired,
            ) => HandshakeFailure::NoSharedCipher,
            Error::PeerIncompatible(_) => HandshakeFailure::NoSharedCipher,
            Error::NoCertificatesPresented => HandshakeFailure::CertificateRequired,
            Error::InvalidCertificate(why) => HandshakeFailure::BadCertificate(why.to_string()),
            Error::InvalidMessage(_) | Error::InappropriateMessage { .. } => {
                HandshakeFailure::NotTls
            }
            Error::PeerMisbehaved(PeerMisbehaved::TooManyEmptyFragments) => {
                HandshakeFailure::NotTls
            }
            other => HandshakeFailure::Refused(other.to_string()),
        }
    }
}

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

/// A connection's TLS session.
pub(crate) struct Session {
    conn: ServerConnection,
    info: Option<Box<TlsInfo>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Session {
    pub(super) fn new(config: Arc<ServerConfig>) -> Result<Session, rustls::Error> {
        let mut conn = ServerConnection::new(config)?;
        // What it encrypts is taken out at once, into the connection's own
        // buffer (which the memory budget counts): no limit of its own.
        conn.set_buffer_limit(None);
        Ok(Session { conn, info: None })
    }

    /// The handshake is done.
    pub(crate) fn established(&self) -> bool {
        self.info.is_some()
    }

    /// What was negotiated, once the handshake is done.
    pub(crate) fn info(&self) -> Option<&TlsInfo> {
        self.info.as_deref()
    }

    /// Takes all of `ciphertext`: the plaintext it holds goes to the start
    /// of `plain` (which must have room for `ciphertext.len()` plus
    /// [`LARGEST_RECORD`] bytes), what the session must send (handshake
    /// messages) is appended to `send`. On an error, `send` gets the alert
    /// that tells the client why, where the protocol has one.
    pub(crate) fn receive(
        &mut self,
        mut ciphertext: &[u8],
        plain: &mut [u8],
        send: &mut Vec<u8>,
    ) -> Result<Received, HandshakeFailure> {
        let was_established = self.established();
        let mut received = Received {
            plaintext: 0,
            closed: false,
            handshake: Handshake::InProgress,
        };
        while !ciphertext.is_empty() {
            if self.conn.read_tls(&mut ciphertext).is_err() {
                // Only a full buffer, which draining below prevents.
                return Err(HandshakeFailure::Refused("TLS buffer full".to_owned()));
            }
            let state = match self.conn.process_new_packets() {
                Ok(state) => state,
                Err(e) => {
                    self.take_output(send);
                    return Err(HandshakeFailure::from_rustls(&e));
                }
            };
            received.closed |= state.peer_has_closed();
            loop {
                match self.conn.reader().read(&mut plain[received.plaintext..]) {
                    Ok(0) => break,
                    Ok(n) => received.plaintext += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => break,
                }
            }
        }
        self.take_output(send);
        if !self.conn.is_handshaking() && self.info.is_none() {
            self.info = Some(Box::new(self.negotiated()));
        }
        received.handshake = match (was_established, self.established()) {
            (true, _) => Handshake::Done,
            (false, true) => Handshake::JustDone,
            (false, false) => Handshake::InProgress,
        };
        Ok(received)
    }

    /// Encrypts `plaintext`, appending the records to `send`.
    pub(crate) fn encrypt(&mut self, plaintext: &[u8], send: &mut Vec<u8>) {
        // Without a buffer limit the writer takes everything.
        let _ = self.conn.writer().write_all(plaintext);
        self.take_output(send);
    }

    /// Appends a `close_notify` alert to `send`: the client can tell our
    /// close from a truncation.
    pub(crate) fn close_notify(&mut self, send: &mut Vec<u8>) {
        self.conn.send_close_notify();
        self.take_output(send);
    }

    fn take_output(&mut self, send: &mut Vec<u8>) {
        while self.conn.wants_write() {
            if self.conn.write_tls(send).is_err() {
                break;
            }
        }
    }

    fn negotiated(&self) -> TlsInfo {
        let version = match self.conn.protocol_version() {
            Some(ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "TLS",
        };
        let cipher_suite = self
            .conn
            .negotiated_cipher_suite()
            .and_then(|s| s.suite().as_str())
            .unwrap_or("unknown");
        let client_subject = self
            .conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| super::subject::of_certificate(leaf.as_ref()));
        TlsInfo {
            version,
            cipher_suite,
            client_subject,
        }
    }
}
