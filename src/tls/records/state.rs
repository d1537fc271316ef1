//! A record layer's whole state, written down for the next instance at a
//! restart and read back there: secret material, wiped by the caller once
//! it has gone where it goes.

use ring::aead;
use zeroize::Zeroizing;

use super::{Keys, RecordLayer, Suite, Version};

impl RecordLayer {
    /// Writes the whole state down, for the next instance (see
    /// [`RecordLayer::read`]): secret material, to be wiped once written.
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.suite.id.to_be_bytes());
        for direction in [&self.tx, &self.rx] {
            out.extend_from_slice(&direction.seq.to_be_bytes());
            match &direction.secret {
                Some(secret) => {
                    out.push(secret.len() as u8);
                    out.extend_from_slice(secret);
                }
                None => {
                    out.push(direction.key_bytes.len() as u8);
                    out.extend_from_slice(&direction.key_bytes);
                    out.extend_from_slice(&direction.iv);
                }
            }
        }
        out.extend_from_slice(&(self.partial.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.partial);
    }

    /// The state [`RecordLayer::write`] wrote, if it is whole and of a
    /// suite this build knows.
    pub(crate) fn read(bytes: &[u8]) -> Option<RecordLayer> {
        let mut reader = Reader(bytes);
        let suite = Suite::by_id(u16::from_be_bytes(reader.take(2)?.try_into().ok()?))?;
        let mut direction = || -> Option<ReadDirection> {
            let seq = u64::from_be_bytes(reader.take(8)?.try_into().ok()?);
            let len = usize::from(reader.take(1)?[0]);
            let key = Zeroizing::new(reader.take(len)?.to_vec());
            let iv = match suite.version {
                Version::Tls13 => None,
                Version::Tls12 => Some(reader.take(aead::NONCE_LEN)?.try_into().ok()?),
            };
            Some((key, iv, seq))
        };
        let tx = direction()?;
        let rx = direction()?;
        let len = u32::from_be_bytes(reader.take(4)?.try_into().ok()?) as usize;
        let partial = reader.take(len)?;
        if !reader.0.is_empty() {
            return None;
        }
        RecordLayer::new(suite, keys(&tx), keys(&rx), partial)
    }
}

/// One direction as read back: its key or secret, IV (TLS 1.2) and
/// sequence number.
type ReadDirection = (Zeroizing<Vec<u8>>, Option<[u8; aead::NONCE_LEN]>, u64);

fn keys(direction: &ReadDirection) -> (Keys<'_>, u64) {
    match &direction.1 {
        None => (Keys::Secret(&direction.0), direction.2),
        Some(iv) => (Keys::KeyIv(&direction.0, iv), direction.2),
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (taken, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(taken)
    }
}
