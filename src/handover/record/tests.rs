use super::*;

fn sample() -> Vec<(SocketKey, Carried)> {
    vec![
        (
            SocketKey { dev: 8, ino: 1234 },
            Carried {
                id: ConnectionId(7),
                input: b"partial li".to_vec(),
                output: b"REPLY ONE\nREPLY TWO\n".to_vec(),
                peer_closed: false,
                spoke: true,
                phase: CarriedPhase::Open,
                idle_for: Duration::from_micros(1500),
                request_for: Some(Duration::from_millis(20)),
                peer: Some(Peer::Ip("192.0.2.10:40000".parse().unwrap())),
                header: None,
                session: Some(CarriedSession {
                    service: "resp".to_owned(),
                    format: 2,
                    bytes: b"db=3 name=worker-7".to_vec(),
                }),
                tls: Some(CarriedTls {
                    state: zeroize::Zeroizing::new(b"secret record layer".to_vec()),
                    // What a record says until the restore proves it usable.
                    usable: false,
                }),
            },
        ),
        (
            SocketKey {
                dev: 8,
                ino: u64::MAX,
            },
            Carried {
                id: ConnectionId(u64::MAX),
                input: Vec::new(),
                output: Vec::new(),
                peer_closed: true,
                spoke: false,
                phase: CarriedPhase::Lingering {
                    timed_out: true,
                    for_: Duration::from_secs(1),
                },
                idle_for: Duration::ZERO,
                request_for: None,
                peer: Some(Peer::Ip("[2001:db8::1]:65535".parse().unwrap())),
                header: Some(CarriedHeader {
                    left: Duration::from_millis(2500),
                    partial: b"PROXY TCP4 1".to_vec(),
                }),
                session: None,
                tls: None,
            },
        ),
        (
            SocketKey { dev: 0, ino: 0 },
            Carried {
                id: ConnectionId(1),
                input: vec![0, 10, 255],
                output: b"ERR line too long\n".to_vec(),
                peer_closed: false,
                spoke: true,
                phase: CarriedPhase::Closing { timed_out: false },
                idle_for: Duration::from_secs(299),
                request_for: None,
                peer: Some(Peer::Unix),
                header: None,
                session: Some(CarriedSession {
                    service: "upper".to_owned(),
                    format: 1,
                    bytes: Vec::new(),
                }),
                tls: None,
            },
        ),
    ]
}

fn encoded() -> Vec<u8> {
    let records = sample();
    let refs: Vec<_> = records.iter().map(|(k, c)| (*k, c)).collect();
    encode(Duration::from_secs(12345), &refs).to_vec()
}

#[test]
fn round_trips() {
    let file = decode(&encoded()).unwrap();
    assert_eq!(file.handed_over_at, Duration::from_secs(12345));
    assert_eq!(file.records, sample());
    let empty = encode(Duration::ZERO, &[]);
    assert_eq!(decode(&empty).unwrap().records, Vec::new());
}

/// A file an older build wrote (version 1: no client, no header) is
/// still read: its connections' clients are their sockets' peers.
#[test]
fn version_1_files_are_still_read() {
    let records: Vec<_> = sample()
        .into_iter()
        .map(|(key, carried)| {
            (
                key,
                Carried {
                    peer: None,
                    header: None,
                    session: None,
                    tls: None,
                    ..carried
                },
            )
        })
        .collect();
    let refs: Vec<_> = records.iter().map(|(k, c)| (*k, c)).collect();
    let bytes = encode_version(1, Duration::from_secs(5), &refs);
    assert_eq!(bytes[8..12], 1u32.to_le_bytes());
    let file = decode(&bytes).unwrap();
    assert_eq!(file.records, records);
    assert!(encode(Duration::from_secs(5), &refs).len() > bytes.len());
}

/// A file a build before TLS wrote (version 3) is still read: none of its
/// connections is over TLS.
#[test]
fn version_3_files_are_still_read() {
    let records: Vec<_> = sample()
        .into_iter()
        .map(|(key, carried)| {
            (
                key,
                Carried {
                    tls: None,
                    ..carried
                },
            )
        })
        .collect();
    let refs: Vec<_> = records.iter().map(|(k, c)| (*k, c)).collect();
    let bytes = encode_version(3, Duration::from_secs(5), &refs);
    assert_eq!(decode(&bytes).unwrap().records, records);
}

#[test]
fn every_truncation_is_rejected() {
    let bytes = encoded();
    for len in 0..bytes.len() {
        assert!(decode(&bytes[..len]).is_err(), "accepted {len} bytes");
    }
}

#[test]
fn every_flipped_byte_is_rejected() {
    let bytes = encoded();
    for at in 0..bytes.len() {
        let mut corrupt = bytes.clone();
        corrupt[at] ^= 0x41;
        assert!(decode(&corrupt).is_err(), "accepted a flip at byte {at}");
    }
}

#[test]
fn an_unknown_version_or_magic_is_named() {
    let mut bytes = encoded();
    bytes[8..12].copy_from_slice(&5u32.to_le_bytes());
    assert_eq!(decode(&bytes), Err(FormatError::UnknownVersion(5)));
    bytes[8..12].copy_from_slice(&0u32.to_le_bytes());
    assert_eq!(decode(&bytes), Err(FormatError::UnknownVersion(0)));
    assert_eq!(decode(b"NOTOURS!...."), Err(FormatError::BadMagic));
}

#[test]
fn a_consistent_but_impossible_record_is_rejected() {
    // A checksum that matches does not make a phase valid.
    let mut bytes = encoded();
    let phase_at = 8 + 4 + 8 + 4 + 4 + 8 + 8 + 8 + 1;
    bytes[phase_at] = 9;
    let body_end = bytes.len() - 8;
    let checksum = fnv1a(&bytes[..body_end]);
    bytes[body_end..].copy_from_slice(&checksum.to_le_bytes());
    assert_eq!(decode(&bytes), Err(FormatError::Corrupt("phase")));
}

/// A file shorter than its header whose last eight bytes happen to be
/// the checksum of the rest is refused before anything is sliced.
#[test]
fn a_short_file_with_a_matching_checksum_is_truncated() {
    for len in 0..24 {
        let mut bytes: Vec<u8> = (0..len as u8).collect();
        bytes.extend_from_slice(&fnv1a(&bytes).to_le_bytes());
        assert_eq!(checked_body(&bytes), Err(FormatError::Truncated), "{len}");
    }
}

/// Offsets and values of the fields a mutation should reach: what
/// random bytes never would, since they never pass the magic.
fn mutated(
    mut bytes: Vec<u8>,
    edits: &[(proptest::sample::Index, u8)],
    cut: Option<proptest::sample::Index>,
) -> Vec<u8> {
    for (at, value) in edits {
        let at = at.index(bytes.len());
        bytes[at] = *value;
    }
    if let Some(cut) = cut {
        bytes.truncate(cut.index(bytes.len()) + 1);
    }
    // The checksum fixed up, so that the mutation reaches the parser.
    if let Some(body_end) = bytes.len().checked_sub(8) {
        let checksum = fnv1a(&bytes[..body_end]);
        bytes[body_end..].copy_from_slice(&checksum.to_le_bytes());
    }
    bytes
}

proptest::proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
        let _ = decode(&bytes);
    }

    /// A valid file with bytes changed (past the magic and version,
    /// which are checked first) or cut short, checksum fixed up: the
    /// decoder refuses it or reads it, never panics, and never returns
    /// more records than the file's bytes could hold.
    #[test]
    fn mutated_valid_files_never_panic(
        edits in proptest::collection::vec(
            (proptest::prelude::any::<proptest::sample::Index>(), proptest::prelude::any::<u8>()),
            0..6,
        ),
        cut in proptest::option::of(proptest::prelude::any::<proptest::sample::Index>()),
    ) {
        let bytes = encoded();
        let edits: Vec<_> = edits
            .into_iter()
            .filter(|(at, _)| at.index(bytes.len()) >= 12)
            .collect();
        let bytes = mutated(bytes, &edits, cut);
        if let Ok(file) = decode(&bytes) {
            proptest::prop_assert!(file.records.len() * 50 <= bytes.len());
        }
    }
}
