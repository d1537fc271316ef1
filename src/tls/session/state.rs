//! An established session written down for the next instance at a
//! restart, and read back there.

use super::super::records::{RecordLayer, Version};
use super::super::TlsInfo;
use super::{Session, State};

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
        // Sized once: a buffer that grew would leave copies behind, unwiped.
        let subject = info.client_subject.as_deref().unwrap_or("");
        out.reserve(256 + subject.len() + records.buffered());
        out.push(STATE_FORMAT);
        // At most 65 535 bytes, cut at a character's start.
        let cut = (0..=subject.len().min(u16::MAX as usize))
            .rev()
            .find(|&i| subject.is_char_boundary(i))
            .unwrap_or(0);
        out.extend_from_slice(&(cut as u16).to_be_bytes());
        out.extend_from_slice(&subject.as_bytes()[..cut]);
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
