//! The record layer after the handshake: the daemon's own, so that its
//! whole state (per direction: the cipher suite, the traffic secret or key
//! and IV, the sequence number; and the ciphertext of a record not yet
//! complete) is known, and can be written down for the next instance at a
//! restart and carried on there.
//!
//! rustls does the handshake; its secrets come out of it once it is done
//! (see `session.rs`). The AEADs and HKDF are ring's, as rustls's ring
//! provider uses them. What this layer covers:
//!
//! - TLS 1.3 (RFC 8446 §5.2): application data, alerts, and KeyUpdate in
//!   both directions (a client's `update_requested` is answered with our
//!   own), each generation's secret derived from the one before
//!   (§7.2) — which is why the traffic secret is kept, not only the key;
//!   before its sequence numbers run out of AES-GCM's margin (§5.5) it
//!   updates its own keys.
//! - TLS 1.2 (RFC 5288, RFC 7905): application data and alerts. TLS 1.2
//!   has no rekeying, so the connection is closed (with `close_notify`)
//!   before its sequence number reaches the confidentiality limit, as
//!   rustls does; a renegotiation request is refused with a
//!   `no_renegotiation` warning, as rustls refuses it.
//! - Anything else after the handshake (a handshake message other than
//!   KeyUpdate, a ChangeCipherSpec, an unknown record type) closes the
//!   connection: rustls would not accept it either with our settings (no
//!   session tickets, no post-handshake authentication).

use ring::aead::{Aad, Nonce};
use zeroize::Zeroizing;

/// A record's largest plaintext (RFC 8446 §5.1).
const MAX_PLAINTEXT: usize = 16 * 1024;
/// AEAD tag of every suite here.
const TAG: usize = 16;
/// The explicit nonce TLS 1.2's AES-GCM sends in each record.
const EXPLICIT_NONCE: usize = 8;
const HEADER: usize = 5;
/// The longest record either version allows (TLS 1.2's expansion, with its
/// header): also the most ciphertext a partial record can leave behind
/// between reads, so a read of `n` bytes gives at most `n` plus this much
/// plaintext.
pub(crate) const LARGEST_RECORD: usize = HEADER + MAX_PLAINTEXT + 2048;

const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const APPLICATION_DATA: u8 = 23;
const KEY_UPDATE: u8 = 24;
const CLIENT_HELLO: u8 = 1;
const CLOSE_NOTIFY: u8 = 0;
const NO_RENEGOTIATION: u8 = 100;

/// Records sealed under one TLS 1.3 key before it is updated: well inside
/// AES-GCM's 2^24.5 (RFC 8446 §5.5).
const TLS13_RECORDS_PER_KEY: u64 = 1 << 23;
/// Records sealed on a TLS 1.2 connection before it is closed: the last
/// sequence number is kept for its `close_notify`.
const TLS12_RECORDS: u64 = 1 << 24;
/// Messages that carry no application data a client may send in a row
/// (KeyUpdates, warnings, renegotiation requests), as rustls allows: past
/// them it is a client making the server work for nothing.
const QUIET_MESSAGES: u8 = 32;
/// TLS 1.3's largest ciphertext (RFC 8446 §5.2) and inner plaintext
/// (§5.4, content and type); TLS 1.2's largest plaintext.
const TLS13_CIPHERTEXT: usize = MAX_PLAINTEXT + 256;
const TLS13_INNER: usize = MAX_PLAINTEXT + 1;

/// Why a record could not be taken: the connection is closed (with the
/// alert, when there is one, already queued).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RecordError {
    #[error("a record does not decrypt (bad_record_mac)")]
    BadRecordMac,
    #[error("a record too long (record_overflow)")]
    Overflow,
    #[error("an unexpected record after the handshake (type {0})")]
    Unexpected(u8),
    #[error("the client sent alert {0}")]
    Alert(u8),
    #[error("the connection's records are used up")]
    Exhausted,
}

/// What [`RecordLayer::open`] got out of the ciphertext it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Opened {
    /// Plaintext bytes at the start of the buffer given.
    pub plaintext: usize,
    /// The client sent `close_notify`.
    pub closed: bool,
}

/// A connection's record protection after its handshake.
pub(crate) struct RecordLayer {
    suite: Suite,
    tx: Direction,
    rx: Direction,
    /// The start of a record not yet complete.
    partial: Zeroizing<Vec<u8>>,
    /// Records in a row without application data (see [`QUIET_MESSAGES`]).
    quiet: u8,
}

impl std::fmt::Debug for RecordLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordLayer")
            .field("suite", &self.suite.id)
            .field("tx_seq", &self.tx.seq)
            .field("rx_seq", &self.rx.seq)
            .finish_non_exhaustive()
    }
}

/// What a record layer needs to start, per direction.
pub(crate) enum Keys<'a> {
    /// TLS 1.3: the traffic secret.
    Secret(&'a [u8]),
    /// TLS 1.2: the key and the IV (salt and implicit part, 12 bytes).
    KeyIv(&'a [u8], &'a [u8]),
}

impl RecordLayer {
    /// A record layer of `suite` from each direction's keys and sequence
    /// number, and the ciphertext of a record begun but not complete.
    pub(crate) fn new(
        suite: Suite,
        tx: (Keys<'_>, u64),
        rx: (Keys<'_>, u64),
        partial: &[u8],
    ) -> Option<RecordLayer> {
        let direction = |(keys, seq): (Keys<'_>, u64)| match (keys, suite.version) {
            (Keys::Secret(secret), Version::Tls13) => Direction::from_secret(&suite, secret, seq),
            (Keys::KeyIv(key, iv), Version::Tls12) => Direction::new(&suite, key, iv, seq),
            _ => None,
        };
        Some(RecordLayer {
            suite,
            tx: direction(tx)?,
            rx: direction(rx)?,
            partial: Zeroizing::new(partial.to_vec()),
            quiet: 0,
        })
    }

    /// Bytes of a record begun and not complete: a TLS buffer, counted
    /// against the memory budget.
    pub(crate) fn buffered(&self) -> usize {
        self.partial.capacity()
    }

    pub(crate) fn suite(&self) -> Suite {
        self.suite
    }

    /// The key and IV each direction uses now, to check them against what
    /// the handshake gave.
    pub(crate) fn current_keys(&self) -> [(&[u8], &[u8]); 2] {
        [
            (&self.tx.key_bytes, &self.tx.iv),
            (&self.rx.key_bytes, &self.rx.iv),
        ]
    }

    /// Takes all of `ciphertext`: the application data it completes goes to
    /// the start of `plain` (which must have room for `ciphertext.len()`
    /// plus one record), what must be sent in answer (a KeyUpdate, a
    /// warning) is appended to `send`.
    pub(crate) fn open(
        &mut self,
        ciphertext: &[u8],
        plain: &mut [u8],
        send: &mut Vec<u8>,
    ) -> Result<Opened, RecordError> {
        let mut opened = Opened::default();
        let mut rest = ciphertext;
        // A record begun in an earlier read is completed first.
        while !self.partial.is_empty() && !rest.is_empty() {
            let wanted = record_length(&self.partial).unwrap_or(HEADER);
            if wanted > LARGEST_RECORD {
                return Err(RecordError::Overflow);
            }
            let take = (wanted - self.partial.len()).min(rest.len());
            self.partial.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if record_length(&self.partial) == Some(self.partial.len()) {
                // Wiped as it is dropped.
                let record = std::mem::take(&mut self.partial);
                self.open_record(&record, plain, &mut opened, send)?;
            }
        }
        // The rest is read in place, record by record.
        while !rest.is_empty() && !opened.closed {
            let Some(total) = record_length(rest) else {
                break;
            };
            if total > LARGEST_RECORD {
                return Err(RecordError::Overflow);
            }
            if total > rest.len() {
                break;
            }
            self.open_record(&rest[..total], plain, &mut opened, send)?;
            rest = &rest[total..];
        }
        if !opened.closed {
            self.partial.extend_from_slice(rest);
        }
        Ok(opened)
    }

    /// Decrypts one whole record into `plain` after what is there, and acts
    /// on what it holds.
    fn open_record(
        &mut self,
        record: &[u8],
        plain: &mut [u8],
        opened: &mut Opened,
        send: &mut Vec<u8>,
    ) -> Result<(), RecordError> {
        let typ = record[0];
        let start = opened.plaintext;
        let payload = &record[HEADER..];
        if self.suite.version == Version::Tls13 && payload.len() > TLS13_CIPHERTEXT {
            return Err(RecordError::Overflow);
        }
        let buffer = plain
            .get_mut(start..start + payload.len())
            .ok_or(RecordError::Overflow)?;
        buffer.copy_from_slice(payload);
        let (content_type, length) = match self.suite.version {
            Version::Tls13 => {
                if typ != APPLICATION_DATA {
                    return Err(RecordError::Unexpected(typ));
                }
                let nonce = Nonce::assume_unique_for_key(self.rx.nonce());
                let inner = self
                    .rx
                    .key
                    .open_in_place(nonce, Aad::from(&record[..HEADER]), buffer)
                    .map_err(|_| RecordError::BadRecordMac)?;
                // The real type is the last byte that is not padding.
                if inner.len() > TLS13_INNER {
                    return Err(RecordError::Overflow);
                }
                let end = inner
                    .iter()
                    .rposition(|&b| b != 0)
                    .ok_or(RecordError::Unexpected(0))?;
                (inner[end], end)
            }
            Version::Tls12 => {
                let explicit = if self.suite.explicit_nonce() {
                    EXPLICIT_NONCE
                } else {
                    0
                };
                if payload.len() < explicit + TAG {
                    return Err(RecordError::BadRecordMac);
                }
                let length = payload.len() - explicit - TAG;
                if length > MAX_PLAINTEXT {
                    return Err(RecordError::Overflow);
                }
                let mut nonce = self.rx.nonce();
                if explicit > 0 {
                    nonce[4..].copy_from_slice(&payload[..EXPLICIT_NONCE]);
                }
                let aad = tls12_aad(self.rx.seq, typ, length);
                self.rx
                    .key
                    .open_in_place(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(aad),
                        &mut buffer[explicit..],
                    )
                    .map_err(|_| RecordError::BadRecordMac)?;
                buffer.copy_within(explicit..explicit + length, 0);
                (typ, length)
            }
        };
        self.rx.seq += 1;
        if content_type == APPLICATION_DATA {
            self.quiet = 0;
        } else {
            self.quiet += 1;
            if self.quiet > QUIET_MESSAGES {
                return Err(RecordError::Unexpected(content_type));
            }
        }
        let content = &plain[start..start + length];
        match content_type {
            APPLICATION_DATA => opened.plaintext += length,
            ALERT => match content {
                [_, CLOSE_NOTIFY] => opened.closed = true,
                // TLS 1.2 warnings other than close_notify are ignored.
                [1, _] if self.suite.version == Version::Tls12 => {}
                [_, description] => return Err(RecordError::Alert(*description)),
                _ => return Err(RecordError::Unexpected(ALERT)),
            },
            HANDSHAKE => {
                let content = content.to_vec();
                self.handshake_message(&content, send)?;
            }
            // ChangeCipherSpec (20) included: none may follow a handshake.
            _ => return Err(RecordError::Unexpected(content_type)),
        }
        Ok(())
    }

    /// A handshake message after the handshake: a TLS 1.3 KeyUpdate, or a
    /// TLS 1.2 renegotiation, refused.
    fn handshake_message(&mut self, message: &[u8], send: &mut Vec<u8>) -> Result<(), RecordError> {
        match (self.suite.version, message) {
            (Version::Tls13, [KEY_UPDATE, 0, 0, 1, requested @ (0 | 1)]) => {
                self.rx = self
                    .rx
                    .updated(&self.suite)
                    .ok_or(RecordError::Unexpected(KEY_UPDATE))?;
                if *requested == 1 {
                    self.update_own_keys(send)?;
                }
                Ok(())
            }
            (Version::Tls12, [CLIENT_HELLO, ..]) => {
                self.seal_record(ALERT, &[1, NO_RENEGOTIATION], send)
            }
            _ => Err(RecordError::Unexpected(HANDSHAKE)),
        }
    }

    /// Sends a KeyUpdate (not asking for one back) and moves on to the next
    /// generation of our keys.
    fn update_own_keys(&mut self, send: &mut Vec<u8>) -> Result<(), RecordError> {
        self.seal_record(HANDSHAKE, &[KEY_UPDATE, 0, 0, 1, 0], send)?;
        self.tx = self.tx.updated(&self.suite).ok_or(RecordError::Exhausted)?;
        Ok(())
    }
}

/// The additional data of a TLS 1.2 record: its sequence number, type,
/// version and plaintext length.
fn tls12_aad(seq: u64, typ: u8, length: usize) -> [u8; 13] {
    let mut aad = [0; 13];
    aad[..8].copy_from_slice(&seq.to_be_bytes());
    aad[8..].copy_from_slice(&[typ, 3, 3, (length >> 8) as u8, length as u8]);
    aad
}

/// A whole record's length (header included), once its header is in.
pub(crate) fn record_length(bytes: &[u8]) -> Option<usize> {
    let header = bytes.get(..HEADER)?;
    Some(HEADER + usize::from(u16::from_be_bytes([header[3], header[4]])))
}

mod keys;
mod seal;
mod state;
#[cfg(test)]
mod tests;

use keys::Direction;
pub(crate) use keys::{Suite, Version};
