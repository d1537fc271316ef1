//! The sending side of a record layer: application data, our alerts and
//! KeyUpdates sealed into records (RFC 8446 §5.2, RFC 5288, RFC 7905),
//! each under a nonce used once.

use ring::aead::{Aad, Nonce};

use super::{
    tls12_aad, RecordError, RecordLayer, Version, ALERT, APPLICATION_DATA, CLOSE_NOTIFY,
    EXPLICIT_NONCE, HANDSHAKE, MAX_PLAINTEXT, TAG, TLS12_RECORDS, TLS13_RECORDS_PER_KEY,
};

impl RecordLayer {
    /// Encrypts `plaintext` as application data records appended to `send`.
    pub(crate) fn seal(&mut self, plaintext: &[u8], send: &mut Vec<u8>) -> Result<(), RecordError> {
        for chunk in plaintext.chunks(MAX_PLAINTEXT) {
            self.seal_record(APPLICATION_DATA, chunk, send)?;
        }
        Ok(())
    }

    /// Appends our `close_notify`.
    pub(crate) fn close_notify(&mut self, send: &mut Vec<u8>) {
        let _ = self.seal_record(ALERT, &[1, CLOSE_NOTIFY], send);
    }

    /// Appends the fatal alert that tells the client why its connection
    /// ends, if `error` has one (RFC 8446 §5.2, §6.2).
    pub(crate) fn fatal_alert(&mut self, error: &RecordError, send: &mut Vec<u8>) {
        let description = match error {
            RecordError::BadRecordMac => 20,
            RecordError::Overflow => 22,
            RecordError::Unexpected(_) => 10,
            RecordError::Alert(_) | RecordError::Exhausted => return,
        };
        let _ = self.seal_record(ALERT, &[2, description], send);
    }

    pub(super) fn seal_record(
        &mut self,
        typ: u8,
        content: &[u8],
        send: &mut Vec<u8>,
    ) -> Result<(), RecordError> {
        match self.suite.version {
            Version::Tls13 if self.tx.seq >= TLS13_RECORDS_PER_KEY && typ != HANDSHAKE => {
                self.update_own_keys(send)?;
            }
            Version::Tls12 if self.tx.seq >= TLS12_RECORDS - u64::from(typ != ALERT) => {
                return Err(RecordError::Exhausted)
            }
            _ => {}
        }
        // On an error nothing of this record stays in `send`: never a
        // plaintext left behind.
        let before = send.len();
        let sealed = self.seal_record_at(typ, content, send);
        if sealed.is_err() {
            send.truncate(before);
        }
        sealed
    }

    fn seal_record_at(
        &mut self,
        typ: u8,
        content: &[u8],
        send: &mut Vec<u8>,
    ) -> Result<(), RecordError> {
        let nonce = self.tx.nonce();
        match self.suite.version {
            Version::Tls13 => {
                let length = content.len() + 1 + TAG;
                let header = [APPLICATION_DATA, 3, 3, (length >> 8) as u8, length as u8];
                send.extend_from_slice(&header);
                let start = send.len();
                send.extend_from_slice(content);
                send.push(typ);
                let tag = self
                    .tx
                    .key
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(header),
                        &mut send[start..],
                    )
                    .map_err(|_| RecordError::Exhausted)?;
                send.extend_from_slice(tag.as_ref());
            }
            Version::Tls12 => {
                let explicit = if self.suite.explicit_nonce() {
                    EXPLICIT_NONCE
                } else {
                    0
                };
                let length = explicit + content.len() + TAG;
                send.extend_from_slice(&[typ, 3, 3, (length >> 8) as u8, length as u8]);
                if explicit > 0 {
                    send.extend_from_slice(&nonce[4..]);
                }
                let start = send.len();
                send.extend_from_slice(content);
                let aad = tls12_aad(self.tx.seq, typ, content.len());
                let tag = self
                    .tx
                    .key
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(aad),
                        &mut send[start..],
                    )
                    .map_err(|_| RecordError::Exhausted)?;
                send.extend_from_slice(tag.as_ref());
            }
        }
        self.tx.seq += 1;
        Ok(())
    }
}
