//! The cipher suites a record layer serves, and each direction's keys:
//! derived from a TLS 1.3 traffic secret (RFC 8446 §7.1, §7.3) and renewed
//! by a KeyUpdate (§7.2), or given whole for TLS 1.2; and the nonce of each
//! record (§5.3).

use ring::aead::{self, LessSafeKey, UnboundKey};
use ring::hkdf;
use zeroize::Zeroizing;

/// The protocol a record layer speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    Tls12,
    Tls13,
}

/// The cipher suites this record layer serves (rustls's ring provider's
/// defaults), by their IANA numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Suite {
    pub id: u16,
    pub version: Version,
    pub(super) aead: &'static aead::Algorithm,
    /// TLS 1.3's hash, for HKDF.
    pub(super) hkdf: Option<hkdf::Algorithm>,
}

impl Suite {
    pub(crate) fn by_id(id: u16) -> Option<Suite> {
        let tls13 = |aead, hkdf| Suite {
            id,
            version: Version::Tls13,
            aead,
            hkdf: Some(hkdf),
        };
        let tls12 = |aead| Suite {
            id,
            version: Version::Tls12,
            aead,
            hkdf: None,
        };
        Some(match id {
            0x1301 => tls13(&aead::AES_128_GCM, hkdf::HKDF_SHA256),
            0x1302 => tls13(&aead::AES_256_GCM, hkdf::HKDF_SHA384),
            0x1303 => tls13(&aead::CHACHA20_POLY1305, hkdf::HKDF_SHA256),
            // ECDHE_ECDSA_ and ECDHE_RSA_ with each AEAD.
            0xc02b | 0xc02f => tls12(&aead::AES_128_GCM),
            0xc02c | 0xc030 => tls12(&aead::AES_256_GCM),
            0xcca9 | 0xcca8 => tls12(&aead::CHACHA20_POLY1305),
            _ => return None,
        })
    }

    pub(super) fn explicit_nonce(&self) -> bool {
        self.version == Version::Tls12 && self.aead != &aead::CHACHA20_POLY1305
    }
}

/// One direction's keys and position.
pub(crate) struct Direction {
    pub(super) key: LessSafeKey,
    pub(super) key_bytes: Zeroizing<Vec<u8>>,
    pub(super) iv: [u8; aead::NONCE_LEN],
    pub(super) seq: u64,
    /// TLS 1.3: the traffic secret the key and IV come from.
    pub(super) secret: Option<Zeroizing<Vec<u8>>>,
}

impl Direction {
    pub(super) fn new(suite: &Suite, key: &[u8], iv: &[u8], seq: u64) -> Option<Direction> {
        let unbound = UnboundKey::new(suite.aead, key).ok()?;
        Some(Direction {
            key: LessSafeKey::new(unbound),
            key_bytes: Zeroizing::new(key.to_vec()),
            iv: iv.try_into().ok()?,
            seq,
            secret: None,
        })
    }

    /// TLS 1.3: the key and IV of `secret` (RFC 8446 §7.3), at `seq`.
    pub(super) fn from_secret(suite: &Suite, secret: &[u8], seq: u64) -> Option<Direction> {
        let hkdf = suite.hkdf?;
        let key = Zeroizing::new(expand_label(hkdf, secret, b"key", suite.aead.key_len())?);
        let iv = expand_label(hkdf, secret, b"iv", aead::NONCE_LEN)?;
        let mut direction = Direction::new(suite, &key, &iv, seq)?;
        direction.secret = Some(Zeroizing::new(secret.to_vec()));
        Some(direction)
    }

    /// TLS 1.3: the next generation (RFC 8446 §7.2), from sequence 0.
    pub(super) fn updated(&self, suite: &Suite) -> Option<Direction> {
        let hkdf = suite.hkdf?;
        let secret = self.secret.as_ref()?;
        let next = Zeroizing::new(expand_label(hkdf, secret, b"traffic upd", secret.len())?);
        Direction::from_secret(suite, &next, 0)
    }

    /// The nonce of the record at `seq`: the IV with the sequence number
    /// XORed into its last eight bytes.
    pub(super) fn nonce(&self) -> [u8; aead::NONCE_LEN] {
        let mut nonce = self.iv;
        for (n, s) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        nonce
    }
}

/// HKDF-Expand-Label (RFC 8446 §7.1) with an empty context.
fn expand_label(hkdf: hkdf::Algorithm, secret: &[u8], label: &[u8], len: usize) -> Option<Vec<u8>> {
    struct Len(usize);
    impl hkdf::KeyType for Len {
        fn len(&self) -> usize {
            self.0
        }
    }
    let length = (len as u16).to_be_bytes();
    let label_len = [(6 + label.len()) as u8];
    let info: [&[u8]; 5] = [&length, &label_len, b"tls13 ", label, &[0]];
    let prk = hkdf::Prk::new_less_safe(hkdf, secret);
    let mut out = vec![0; len];
    prk.expand(&info, Len(len)).ok()?.fill(&mut out).ok()?;
    Some(out)
}
