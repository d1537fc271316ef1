//! Generated headers of both versions, and inputs worth throwing at the
//! parser: every valid header parses whatever follows it, and no input
//! panics or changes its verdict as bytes are added.

use super::*;

/// A valid header of either version, and the source it gives.
fn any_header() -> impl Strategy<Value = (Vec<u8>, Option<SocketAddr>)> {
    prop_oneof![any_v1_tcp4(), any_v1_tcp6(), any_v1_unknown(), any_v2()]
}

fn any_v1_tcp4() -> impl Strategy<Value = (Vec<u8>, Option<SocketAddr>)> {
    any::<([u8; 4], [u8; 4], u16, u16)>().prop_map(|(source, destination, port, other)| {
        let source = Ipv4Addr::from(source);
        let destination = Ipv4Addr::from(destination);
        let line = format!("PROXY TCP4 {source} {destination} {port} {other}\r\n");
        (
            line.into_bytes(),
            Some(SocketAddr::new(source.into(), port)),
        )
    })
}

/// IPv6 addresses with many zero groups (so `::` is common) and
/// IPv4-mapped ones, written compressed by `std` or in full.
fn any_ipv6_text() -> impl Strategy<Value = (Ipv6Addr, String)> {
    let address = prop_oneof![
        prop::array::uniform8(prop_oneof![Just(0u16), any::<u16>()]).prop_map(Ipv6Addr::from),
        any::<[u8; 4]>().prop_map(|octets| Ipv4Addr::from(octets).to_ipv6_mapped()),
    ];
    (address, 0..3u8).prop_map(|(address, style)| {
        let groups = address.segments().into_iter().map(|group| match style {
            0 => format!("{group:04x}"),
            _ => format!("{group:X}"),
        });
        let text = match style {
            2 => address.to_string(),
            _ => groups.collect::<Vec<_>>().join(":"),
        };
        (address, text)
    })
}

fn any_v1_tcp6() -> impl Strategy<Value = (Vec<u8>, Option<SocketAddr>)> {
    (any_ipv6_text(), any_ipv6_text(), any::<u16>(), any::<u16>()).prop_map(
        |((source, source_text), (_, destination_text), port, other)| {
            let line = format!("PROXY TCP6 {source_text} {destination_text} {port} {other}\r\n");
            (
                line.into_bytes(),
                Some(SocketAddr::new(source.into(), port)),
            )
        },
    )
}

fn any_v1_unknown() -> impl Strategy<Value = (Vec<u8>, Option<SocketAddr>)> {
    // 13 bytes of "PROXY UNKNOWN", the rest, CRLF: at most 107.
    let rest = prop::collection::vec(
        any::<u8>().prop_filter("no CR or LF", |b| *b != b'\r' && *b != b'\n'),
        0..=92,
    );
    rest.prop_map(|rest| ([&b"PROXY UNKNOWN"[..], &rest, b"\r\n"].concat(), None))
}

/// v2 headers: LOCAL with anything after the fixed part; PROXY with
/// each family and transport, addresses, TLVs of any type but CRC32C,
/// and a CRC32C TLV among them or not.
fn any_v2() -> impl Strategy<Value = (Vec<u8>, Option<SocketAddr>)> {
    let family_transport = prop::sample::select(vec![
        TCP4,
        UDP4,
        TCP6,
        UDP6,
        UNIX_STREAM,
        UNIX_DGRAM,
        UNSPEC,
        0x01,
        0x02,
        0x10,
        0x20,
        0x30,
    ]);
    let tlv_kind = any::<u8>().prop_map(|kind| if kind == PP2_TYPE_CRC32C { 0x04 } else { kind });
    let tlvs = prop::collection::vec((tlv_kind, prop::collection::vec(any::<u8>(), 0..40)), 0..4);
    (
        prop::bool::weighted(0.2),
        family_transport,
        any::<u8>(),
        prop::collection::vec(any::<u8>(), 216),
        tlvs,
        prop::option::of(any::<prop::sample::Index>()),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(
            |(local, family_transport, any_family, pool, tlvs, crc, opaque)| {
                if local {
                    return (v2(LOCAL, any_family, &opaque), None);
                }
                let block = AddressBlock::announced(family_transport).unwrap();
                let Some(block) = block else {
                    return (v2(PROXY, family_transport, &opaque), None);
                };
                let addresses = &pool[..block.len()];
                let tlvs: Vec<Vec<u8>> =
                    tlvs.iter().map(|(kind, value)| tlv(*kind, value)).collect();
                let header = match crc.map(|index| index.index(tlvs.len() + 1)) {
                    None => v2(
                        PROXY,
                        family_transport,
                        &[addresses, &tlvs.concat()].concat(),
                    ),
                    Some(at) => {
                        let before = [addresses, &tlvs[..at].concat()].concat();
                        sealed(PROXY, family_transport, &before, &tlvs[at..].concat())
                    }
                };
                (header, block.source(addresses))
            },
        )
}

/// Inputs worth throwing at the parser: noise; v1 lines of the bytes
/// that matter there; v2 headers with plausible fixed parts and bodies
/// of TLV-shaped bytes, their length right or not; valid headers with a
/// few bytes changed, cut short, and noise after.
fn any_input() -> impl Strategy<Value = Vec<u8>> {
    let noise = prop::collection::vec(any::<u8>(), 0..300);
    let v1_byte = prop_oneof![
        4 => prop::sample::select(b"0123456789abcdefABCDEF:. \r\nTCP46UNKOW".to_vec()),
        1 => any::<u8>(),
    ];
    let v1 =
        prop::collection::vec(v1_byte, 0..120).prop_map(|rest| [&b"PROXY "[..], &rest].concat());
    // An address block of one of the sizes, TLV-shaped bytes (CRC32C
    // and NOOP among them), and a tail of 0 to 3 stray bytes.
    let tlv_kind = prop_oneof![Just(PP2_TYPE_CRC32C), Just(0x04), any::<u8>()];
    let body = (
        prop::sample::select(vec![0, 12, 36, 216])
            .prop_flat_map(|len| prop::collection::vec(any::<u8>(), len)),
        prop::collection::vec((tlv_kind, prop::collection::vec(any::<u8>(), 0..8)), 0..5),
        prop::collection::vec(any::<u8>(), 0..4),
    )
        .prop_map(|(addresses, tlvs, tail)| {
            let tlvs: Vec<u8> = tlvs
                .iter()
                .flat_map(|(kind, value)| tlv(*kind, value))
                .collect();
            [addresses, tlvs, tail].concat()
        });
    let v2_fixed = (
        prop::sample::select(vec![LOCAL, PROXY, 0x22, 0x11]),
        prop::sample::select(vec![
            UNSPEC,
            TCP4,
            UDP4,
            TCP6,
            UDP6,
            UNIX_STREAM,
            0x10,
            0x41,
            0x13,
        ]),
        prop::option::of(0..320u16),
        body,
    );
    let v2 = v2_fixed.prop_map(|(version_command, family_transport, length, body)| {
        let mut header = v2(version_command, family_transport, &body);
        if let Some(length) = length {
            header[14..16].copy_from_slice(&length.to_be_bytes());
        }
        header
    });
    let edited = (
        any_header(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        any::<prop::sample::Index>(),
        noise.clone(),
    )
        .prop_map(|((mut header, _), edits, cut, noise)| {
            for (at, byte) in edits {
                let at = at.index(header.len());
                header[at] = byte;
            }
            header.truncate(cut.index(header.len() + 1));
            [header, noise].concat()
        });
    prop_oneof![noise, v1, v2, edited]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn any_valid_header_parses_whatever_follows_and_waits_before_its_end(
        (bytes, source) in any_header(),
        after in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let expected = Ok(Parsed::Header { length: bytes.len(), source });
        let followed = [&bytes[..], &after].concat();
        prop_assert_eq!(parse(&followed), expected);
        for end in 0..bytes.len() {
            prop_assert_eq!(parse(&followed[..end]), Ok(Parsed::Incomplete), "split at {}", end);
        }
        for end in bytes.len()..=followed.len() {
            prop_assert_eq!(parse(&followed[..end]), expected);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_verdicts_are_final(bytes in any_input()) {
        let verdict = parse(&bytes);
        if let Ok(Parsed::Header { length, .. }) = verdict {
            prop_assert!(length <= bytes.len());
            prop_assert_eq!(parse(&bytes[..length]), verdict);
        }
        // Once a prefix has a verdict, a longer input keeps it.
        for end in 0..bytes.len() {
            let earlier = parse(&bytes[..end]);
            if earlier != Ok(Parsed::Incomplete) {
                prop_assert_eq!(earlier, verdict, "verdict at {} bytes changed", end);
            }
        }
    }
}
