//! The record layer against itself: a server and a client end built from
//! the same secrets, each direction resumed at a sequence number above 0,
//! thousands of records through every suite, records split at every
//! byte, KeyUpdates, and the state written down and read back mid-stream.

use super::*;
use ring::hkdf;

const TLS13: [u16; 3] = [0x1301, 0x1302, 0x1303];
const TLS12: [u16; 3] = [0xc02b, 0xc030, 0xcca9];

/// A server end and the client end that talks to it, at `seq` in each
/// direction (as after a restart, or a server that sent tickets).
fn pair(id: u16, seq: (u64, u64)) -> (RecordLayer, RecordLayer) {
    let suite = Suite::by_id(id).unwrap();
    let (a, b) = (vec![0x11; 48], vec![0x22; 48]);
    let len = suite
        .hkdf
        .map_or(32, |h| if h == hkdf::HKDF_SHA384 { 48 } else { 32 });
    let key = suite.aead.key_len();
    fn keys(suite: Suite, material: &[u8], len: usize, key: usize) -> Keys<'_> {
        match suite.version {
            Version::Tls13 => Keys::Secret(&material[..len]),
            Version::Tls12 => Keys::KeyIv(&material[..key], &material[key..key + 12]),
        }
    }
    let (ka, kb) = (keys(suite, &a, len, key), keys(suite, &b, len, key));
    let server = RecordLayer::new(suite, (ka, seq.0), (kb, seq.1), &[]).unwrap();
    let (ka, kb) = (keys(suite, &a, len, key), keys(suite, &b, len, key));
    let client = RecordLayer::new(suite, (kb, seq.1), (ka, seq.0), &[]).unwrap();
    (server, client)
}

/// Sends `message` from `from` to `to`, fed in pieces of `piece` bytes;
/// returns what `to` opened.
fn through(from: &mut RecordLayer, to: &mut RecordLayer, message: &[u8], piece: usize) -> Vec<u8> {
    let mut wire = Vec::new();
    from.seal(message, &mut wire).unwrap();
    let mut got = Vec::new();
    let mut plain = vec![0; piece + LARGEST_RECORD];
    for chunk in wire.chunks(piece) {
        let mut answer = Vec::new();
        let opened = to.open(chunk, &mut plain, &mut answer).unwrap();
        got.extend_from_slice(&plain[..opened.plaintext]);
    }
    got
}

#[test]
fn thousands_of_records_from_a_sequence_above_zero_in_every_suite_and_both_directions() {
    for id in TLS13.into_iter().chain(TLS12) {
        let (mut server, mut client) = pair(id, (2, 7));
        for n in 0..3000u32 {
            let message = format!("record {n} of suite {id:#x}\n").repeat(1 + n as usize % 5);
            assert_eq!(
                through(&mut server, &mut client, message.as_bytes(), 1 << 16),
                message.as_bytes(),
                "{id:#x} out {n}"
            );
            assert_eq!(
                through(&mut client, &mut server, message.as_bytes(), 1 << 16),
                message.as_bytes(),
                "{id:#x} in {n}"
            );
        }
        assert_eq!((server.tx.seq, server.rx.seq), (3002, 3007), "{id:#x}");
    }
}

#[test]
fn a_record_split_at_any_byte_is_opened_once_whole() {
    for id in TLS13.into_iter().chain(TLS12) {
        let (mut server, mut client) = pair(id, (1, 1));
        let message = vec![b'x'; 40_000];
        for piece in [1, 2, 5, 4096, 16_389, 40_000] {
            assert_eq!(
                through(&mut client, &mut server, &message, piece),
                message,
                "{id:#x} by {piece}"
            );
        }
    }
}

#[test]
fn a_sequence_number_off_by_one_is_a_bad_record_mac() {
    for id in TLS13.into_iter().chain(TLS12) {
        let (mut server, mut client) = pair(id, (5, 5));
        client.tx.seq += 1;
        let mut wire = Vec::new();
        client.seal(b"hello\n", &mut wire).unwrap();
        let mut plain = vec![0; 1 << 16];
        let opened = server.open(&wire, &mut plain, &mut Vec::new());
        assert_eq!(opened, Err(RecordError::BadRecordMac), "{id:#x}");
    }
}

#[test]
fn key_updates_in_both_directions_with_and_without_a_request() {
    for id in TLS13 {
        let (mut server, mut client) = pair(id, (3, 4));
        // The client updates its keys and asks for ours: the server's
        // answer is a KeyUpdate of its own, which the client takes.
        let mut wire = Vec::new();
        client
            .seal_record(HANDSHAKE, &[KEY_UPDATE, 0, 0, 1, 1], &mut wire)
            .unwrap();
        client.tx = client.tx.updated(&client.suite).unwrap();
        let mut plain = vec![0; 1 << 16];
        let mut answer = Vec::new();
        assert_eq!(
            server
                .open(&wire, &mut plain, &mut answer)
                .unwrap()
                .plaintext,
            0
        );
        assert!(!answer.is_empty(), "{id:#x}: no KeyUpdate back");
        assert_eq!(
            client
                .open(&answer, &mut plain, &mut Vec::new())
                .unwrap()
                .plaintext,
            0
        );
        assert_eq!((server.rx.seq, server.tx.seq, client.rx.seq), (0, 0, 0));
        assert_eq!(
            through(&mut client, &mut server, b"after\n", 1 << 16),
            b"after\n"
        );
        assert_eq!(
            through(&mut server, &mut client, b"AFTER\n", 1 << 16),
            b"AFTER\n"
        );
        // One without a request: nothing back.
        let mut wire = Vec::new();
        client.update_own_keys(&mut wire).unwrap();
        let mut answer = Vec::new();
        server.open(&wire, &mut plain, &mut answer).unwrap();
        assert!(answer.is_empty());
        assert_eq!(
            through(&mut client, &mut server, b"again\n", 1 << 16),
            b"again\n"
        );
    }
}

#[test]
fn the_state_written_mid_stream_carries_on_where_it_stopped() {
    for id in TLS13.into_iter().chain(TLS12) {
        let (mut server, mut client) = pair(id, (2, 2));
        through(&mut server, &mut client, b"before\n", 1 << 16);
        // Half a record from the client, then the server is carried.
        let mut wire = Vec::new();
        client.seal(b"crossing the restart\n", &mut wire).unwrap();
        let mut plain = vec![0; 1 << 16];
        let half = wire.len() / 2;
        assert_eq!(
            server
                .open(&wire[..half], &mut plain, &mut Vec::new())
                .unwrap()
                .plaintext,
            0
        );
        let mut state = Vec::new();
        server.write(&mut state);
        let mut next = RecordLayer::read(&state).unwrap();
        let opened = next
            .open(&wire[half..], &mut plain, &mut Vec::new())
            .unwrap();
        assert_eq!(
            &plain[..opened.plaintext],
            b"crossing the restart\n",
            "{id:#x}"
        );
        assert_eq!(
            through(&mut next, &mut client, b"after\n", 1 << 16),
            b"after\n"
        );
        // A truncated or altered state is refused, never half believed.
        for len in 0..state.len() {
            assert!(
                RecordLayer::read(&state[..len]).is_none(),
                "{id:#x}: {len} bytes"
            );
        }
    }
}

#[test]
fn a_client_that_only_sends_key_updates_is_cut_off() {
    let (mut server, mut client) = pair(0x1301, (0, 0));
    let mut plain = vec![0; 1 << 16];
    let mut sent_back = Vec::new();
    let mut result = Ok(Opened::default());
    for _ in 0..=QUIET_MESSAGES {
        let mut wire = Vec::new();
        client.update_own_keys(&mut wire).unwrap();
        result = server.open(&wire, &mut plain, &mut sent_back);
    }
    assert_eq!(result, Err(RecordError::Unexpected(HANDSHAKE)));
    // Application data in between resets the count.
    let (mut server, mut client) = pair(0x1301, (0, 0));
    for _ in 0..3 * QUIET_MESSAGES {
        let mut wire = Vec::new();
        client.update_own_keys(&mut wire).unwrap();
        client.seal(b"data\n", &mut wire).unwrap();
        server.open(&wire, &mut plain, &mut sent_back).unwrap();
    }
}

#[test]
fn a_bad_record_gets_a_fatal_alert_the_client_can_read() {
    for id in TLS13.into_iter().chain(TLS12) {
        let (mut server, mut client) = pair(id, (0, 1));
        let mut wire = Vec::new();
        client.seal(b"hello\n", &mut wire).unwrap();
        let last = wire.len() - 1;
        wire[last] ^= 1;
        let mut plain = vec![0; 1 << 16];
        let error = server.open(&wire, &mut plain, &mut Vec::new()).unwrap_err();
        let mut alert = Vec::new();
        server.fatal_alert(&error, &mut alert);
        assert_eq!(
            client.open(&alert, &mut plain, &mut Vec::new()),
            Err(RecordError::Alert(20)),
            "{id:#x}"
        );
    }
}

#[test]
fn tls12_keeps_its_last_record_for_close_notify() {
    let (mut server, mut client) = pair(0xc02b, (TLS12_RECORDS - 2, 0));
    let mut wire = Vec::new();
    server.seal(b"last reply\n", &mut wire).unwrap();
    assert_eq!(
        server.seal(b"one too many\n", &mut wire),
        Err(RecordError::Exhausted)
    );
    server.close_notify(&mut wire);
    let mut plain = vec![0; 1 << 16];
    let opened = client.open(&wire, &mut plain, &mut Vec::new()).unwrap();
    assert_eq!(
        (&plain[..opened.plaintext], opened.closed),
        (&b"last reply\n"[..], true)
    );
}

#[test]
fn a_tls13_record_past_its_size_is_an_overflow() {
    let (mut server, _) = pair(0x1301, (0, 0));
    let mut record = vec![APPLICATION_DATA, 3, 3];
    let length = TLS13_CIPHERTEXT + 1;
    record.extend_from_slice(&(length as u16).to_be_bytes());
    record.resize(HEADER + length, 0);
    let mut plain = vec![0; 1 << 17];
    assert_eq!(
        server.open(&record, &mut plain, &mut Vec::new()),
        Err(RecordError::Overflow)
    );
}
