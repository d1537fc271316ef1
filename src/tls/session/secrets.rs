//! The switch from rustls's handshake to the daemon's record layer: the
//! secrets rustls hands over (the keys and sequence numbers of each
//! direction, and for TLS 1.3 the traffic secrets, which only its key log
//! tells), checked against each other, and what was negotiated.

use std::cell::RefCell;

use rustls::crypto::cipher::{AeadKey, Iv};
use rustls::{ConnectionTrafficSecrets, ProtocolVersion, ServerConnection};
use zeroize::Zeroizing;

use super::super::records::{Keys, RecordLayer, Suite, Version};
use super::super::{TlsFailure, TlsInfo};

thread_local! {
    /// The traffic secrets rustls logs while it drives a handshake on this
    /// thread (see [`CaptureSecrets`]); taken by that connection's session
    /// right after each call into rustls. One worker drives a connection
    /// at a time, so the slot never mixes two connections.
    pub(super) static LOGGED: RefCell<Logged> = RefCell::new(Logged::default());
}

/// TLS 1.3 application traffic secrets, as rustls derives them.
#[derive(Default)]
pub(super) struct Logged {
    pub(super) client: Option<Zeroizing<Vec<u8>>>,
    pub(super) server: Option<Zeroizing<Vec<u8>>>,
}

/// rustls's key log, used to learn the TLS 1.3 traffic secrets (which
/// rustls keeps to itself otherwise): the record layer needs them for
/// KeyUpdate, and a restart carries them. Nothing is written anywhere.
#[derive(Debug)]
pub(in crate::tls) struct CaptureSecrets;

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

/// The record layer and what was negotiated, from a handshake just done.
pub(super) fn established(
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
        .map(|leaf| super::super::subject::of_certificate(leaf.as_ref()));
    TlsInfo {
        version,
        cipher_suite,
        client_subject,
    }
}
