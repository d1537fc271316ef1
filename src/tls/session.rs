//! One connection's TLS: its handshake (rustls's), then its records (the
//! daemon's own record layer, `records.rs`), fed with the ciphertext the
//! connection reads and giving back the plaintext for its service and the
//! ciphertext it must send.
//!
//! The handshake is fed one whole record at a time, so that when it
//! completes nothing after it is inside rustls: the records that follow
//! (application data the client sent right behind its Finished) go to the
//! record layer, which starts from the secrets rustls hands over.

use std::cell::RefCell;
use std::sync::Arc;

use rustls::crypto::cipher::{AeadKey, Iv};
use rustls::{ConnectionTrafficSecrets, ProtocolVersion, ServerConfig, ServerConnection};
use zeroize::Zeroizing;

use super::records::{Keys, RecordLayer, Suite, Version};
use super::TlsInfo;

/// The most ciphertext a partial record can leave behind between reads (a
/// TLS 1.2 record with the largest expansion, and its header): a read of
/// `n` bytes gives at most `n` plus this much plaintext.
pub(crate) const LARGEST_RECORD: usize = 5 + 16 * 1024 + 2048;

/// Why a TLS connection was closed by its TLS: a handshake that did not
/// complete, or a record that could not be taken after it; as the log and
/// metrics say it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsFailure {
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
    /// After the handshake: a record that does not decrypt, an alert from
    /// the client, or a message the record layer does not take.
    Record(String),
}

impl std::fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsFailure::TimedOut => f.write_str("handshake timeout"),
            TlsFailure::NoSharedCipher => f.write_str("no shared cipher"),
            TlsFailure::CertificateRequired => f.write_str("certificate required"),
            TlsFailure::BadCertificate(why) => write!(f, "bad client certificate: {why}"),
            TlsFailure::NotTls => f.write_str("not TLS"),
            TlsFailure::Ended => f.write_str("client closed during the handshake"),
            TlsFailure::Refused(why) => f.write_str(why),
            TlsFailure::Record(why) => f.write_str(why),
        }
    }
}

impl TlsFailure {
    fn from_rustls(error: &rustls::Error) -> Self {
        use rustls::{Error, PeerIncompatible, PeerMisbehaved};
        match error {
            Error::PeerIncompatible(
                PeerIncompatible::NoCipherSuitesInCommon
                | PeerIncompatible::NoKxGroupsInCommon
                | PeerIncompatible::NoSignatureSchemesInCommon
                | PeerIncompatible::SupportedVersionsExtensionRequired,
            ) => TlsFailure::NoSharedCipher,
            Error::PeerIncompatible(_) => TlsFailure::NoSharedCipher,
            Error::NoCertificatesPresented => TlsFailure::CertificateRequired,
            Error::InvalidCertificate(why) => TlsFailure::BadCertificate(why.to_string()),
            Error::InvalidMessage(_) | Error::InappropriateMessage { .. } => TlsFailure::NotTls,
            Error::PeerMisbehaved(PeerMisbehaved::TooManyEmptyFragments) => TlsFailure::NotTls,
            other => TlsFailure::Refused(other.to_string()),
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

thread_local! {
    /// The traffic secrets rustls logs while it drives a handshake on this
    /// thread (see [`CaptureSecrets`]); taken by that connection's session
    /// right after each call into rustls. One worker drives a connection
    /// at a time, so the slot never mixes two connections.
    static LOGGED: RefCell<Logged> = RefCell::new(Logged::default());
}

/// TLS 1.3 application traffic secrets, as rustls derives them.
#[derive(Default)]
struct Logged {
    client: Option<Zeroizing<Vec<u8>>>,
    server: Option<Zeroizing<Vec<u8>>>,
}

/// rustls's key log, used to learn the TLS 1.3 traffic secrets (which
/// rustls keeps to itself otherwise): the record layer needs them for
/// KeyUpdate, and a restart carries them. Nothing is written anywhere.
#[derive(Debug)]
pub(super) struct CaptureSecrets;

impl rustls::KeyLog for CaptureSecrets {
    fn will_log(&self, label: &str) -> bool {
        matches!(label, "CLIENT_TRAFFIC_SECRET_0" | "SERVER_TRAFFIC_SECRET_0")
    }

    fn log(&self, label: &str, _client_random: &[u8], secret: &[u8]) {
        LOGGED.with(|logged| {
            let mut logged = logged.borrow_mut();
            let secret = Some(Zeroizing::new(secret.to_vec()));
            match label {
                "CLIENT_TRAFFIC_SECRET_0" => logged.client = secret,
                "SERVER_TRAFFIC_SECRET_0" => logged.server = secret,
                _ => {}
            }
        });
    }
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
        let opened = records
            .open(ciphertext, plain, send)
            .map_err(|e| TlsFailure::Record(e.to_string()))?;
        received.plaintext = opened.plaintext;
        received.closed = opened.closed;
        Ok(received)
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
        let Some(length) = partial
            .get(fed + 3..fed + 5)
            .map(|l| 5 + usize::from(u16::from_be_bytes([l[0], l[1]])))
        else {
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

/// The record layer and what was negotiated, from a handshake just done.
fn established(
    conn: ServerConnection,
    logged: Logged,
) -> Result<(RecordLayer, TlsInfo), TlsFailure> {
    let info = negotiated(&conn);
    let refused = |why: &str| TlsFailure::Refused(format!("cannot take over the records: {why}"));
    let suite = conn
        .negotiated_cipher_suite()
        .and_then(|s| Suite::by_id(u16::from(s.suite())))
        .ok_or_else(|| refused("a cipher suite this build does not know"))?;
    let secrets = conn
        .dangerous_extract_secrets()
        .map_err(|e| refused(&e.to_string()))?;
    let (tx_seq, tx) = secrets.tx;
    let (rx_seq, rx) = secrets.rx;
    let records = match suite.version {
        Version::Tls13 => {
            let (Some(client), Some(server)) = (&logged.client, &logged.server) else {
                return Err(refused("the traffic secrets were not logged"));
            };
            let records = RecordLayer::new(
                suite,
                (Keys::Secret(server), tx_seq),
                (Keys::Secret(client), rx_seq),
                &[],
            )
            .ok_or_else(|| refused("bad traffic secrets"))?;
            // The keys derived from the logged secrets must be the ones
            // rustls used: a check that the secrets are this connection's.
            let [ours_tx, ours_rx] = records.current_keys();
            if ours_tx != key_iv(&tx) || ours_rx != key_iv(&rx) {
                return Err(refused("the logged secrets are not this connection's"));
            }
            records
        }
        Version::Tls12 => {
            let (tx_key, tx_iv) = key_iv(&tx);
            let (rx_key, rx_iv) = key_iv(&rx);
            RecordLayer::new(
                suite,
                (Keys::KeyIv(tx_key, tx_iv), tx_seq),
                (Keys::KeyIv(rx_key, rx_iv), rx_seq),
                &[],
            )
            .ok_or_else(|| refused("bad keys"))?
        }
    };
    Ok((records, info))
}

fn key_iv(secrets: &ConnectionTrafficSecrets) -> (&[u8], &[u8]) {
    let (key, iv): (&AeadKey, &Iv) = match secrets {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv }
        | ConnectionTrafficSecrets::Aes256Gcm { key, iv }
        | ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (key, iv),
        _ => return (&[], &[]),
    };
    (key.as_ref(), iv.as_ref())
}

fn negotiated(conn: &ServerConnection) -> TlsInfo {
    let version = match conn.protocol_version() {
        Some(ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "TLS",
    };
    let cipher_suite = conn
        .negotiated_cipher_suite()
        .and_then(|s| s.suite().as_str())
        .unwrap_or("unknown");
    let client_subject = conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| super::subject::of_certificate(leaf.as_ref()));
    TlsInfo {
        version,
        cipher_suite,
        client_subject,
    }
}

/// The version of what [`Session::write_state`] writes.
const STATE_FORMAT: u8 = 1;

impl Session {
    /// Writes an established session down for the next instance: what was
    /// negotiated and the whole record layer (traffic secrets or keys,
    /// sequence numbers, a record begun). `false` for a session still in
    /// its handshake, which cannot be carried. What it writes is secret:
    /// the caller wipes it once it has gone where it goes.
    pub(crate) fn write_state(&self, out: &mut Vec<u8>) -> bool {
        let State::Established { records, info } = &self.state else {
            return false;
        };
        out.push(STATE_FORMAT);
        let subject = info.client_subject.as_deref().unwrap_or("");
        out.extend_from_slice(&(subject.len().min(u16::MAX as usize) as u16).to_be_bytes());
        out.extend_from_slice(&subject.as_bytes()[..subject.len().min(u16::MAX as usize)]);
        out.push(u8::from(info.client_subject.is_some()));
        records.write(out);
        true
    }

    /// An established session from what [`Session::write_state`] wrote;
    /// `None` if it is not whole, or of a suite or format this build does
    /// not know.
    pub(crate) fn read_state(bytes: &[u8]) -> Option<Session> {
        let (&format, rest) = bytes.split_first()?;
        if format != STATE_FORMAT {
            return None;
        }
        let length = usize::from(u16::from_be_bytes(rest.get(..2)?.try_into().ok()?));
        let subject = std::str::from_utf8(rest.get(2..2 + length)?).ok()?;
        let has_subject = *rest.get(2 + length)? == 1;
        let records = RecordLayer::read(rest.get(3 + length..)?)?;
        let suite = records.suite();
        let info = TlsInfo {
            version: match suite.version {
                Version::Tls13 => "TLSv1.3",
                Version::Tls12 => "TLSv1.2",
            },
            cipher_suite: rustls::CipherSuite::from(suite.id)
                .as_str()
                .unwrap_or("unknown"),
            client_subject: has_subject.then(|| subject.to_owned()),
        };
        Some(Session {
            state: State::Established {
                records: Box::new(records),
                info: Box::new(info),
            },
        })
    }
}
