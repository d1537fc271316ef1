//! The header parser against the specification, rule by rule.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::crc32c::Crc32c;
use super::v2::{AddressBlock, PP2_TYPE_CRC32C, TLV_HEAD, V2_FIXED};
use super::HeaderError::*;
use super::*;
use proptest::prelude::*;

/// What a client sends after the header; never part of it.
const FIRST_BYTES: &[u8] = b"GET / HTTP/1.1\r\n";

fn header(length: usize, source: Option<&str>) -> Result<Parsed, HeaderError> {
    Ok(Parsed::Header {
        length,
        source: source.map(|text| text.parse().unwrap()),
    })
}

/// The whole contract for one valid header: each proper prefix waits,
/// the header alone is parsed, and bytes after it are not consumed.
fn assert_valid(bytes: &[u8], source: Option<&str>) {
    for end in 0..bytes.len() {
        assert_eq!(
            parse(&bytes[..end]),
            Ok(Parsed::Incomplete),
            "the first {end} bytes of {:?}",
            bytes.escape_ascii().to_string()
        );
    }
    let expected = header(bytes.len(), source);
    assert_eq!(parse(bytes), expected, "{}", bytes.escape_ascii());
    let followed = [bytes, FIRST_BYTES].concat();
    for end in bytes.len()..=followed.len() {
        assert_eq!(parse(&followed[..end]), expected);
    }
}

/// The whole contract for a malformed input: each prefix shorter than
/// `decided_at` waits, and from there on the same error comes, even
/// with more bytes after.
fn assert_refused(bytes: &[u8], decided_at: usize, error: HeaderError) {
    let shown = bytes.escape_ascii().to_string();
    for end in 0..decided_at {
        assert_eq!(
            parse(&bytes[..end]),
            Ok(Parsed::Incomplete),
            "the first {end} bytes of {shown:?}"
        );
    }
    let followed = [bytes, FIRST_BYTES].concat();
    for end in decided_at..=followed.len() {
        assert_eq!(
            parse(&followed[..end]),
            Err(error),
            "the first {end} bytes of {shown:?}"
        );
    }
}

// --- v2 builders ---

fn v2(version_command: u8, family_transport: u8, body: &[u8]) -> Vec<u8> {
    let length = u16::try_from(body.len()).unwrap();
    [
        &V2_SIGNATURE[..],
        &[version_command, family_transport],
        &length.to_be_bytes(),
        body,
    ]
    .concat()
}

fn tlv(kind: u8, value: &[u8]) -> Vec<u8> {
    let length = u16::try_from(value.len()).unwrap();
    [&[kind][..], &length.to_be_bytes(), value].concat()
}

/// An IPv4 address block: addresses, then ports.
fn inet(source: &str, destination: &str) -> Vec<u8> {
    let source: std::net::SocketAddrV4 = source.parse().unwrap();
    let destination: std::net::SocketAddrV4 = destination.parse().unwrap();
    [
        &source.ip().octets()[..],
        &destination.ip().octets(),
        &source.port().to_be_bytes(),
        &destination.port().to_be_bytes(),
    ]
    .concat()
}

/// An IPv6 address block: addresses, then ports.
fn inet6(source: &str, destination: &str) -> Vec<u8> {
    let source: std::net::SocketAddrV6 = source.parse().unwrap();
    let destination: std::net::SocketAddrV6 = destination.parse().unwrap();
    [
        &source.ip().octets()[..],
        &destination.ip().octets(),
        &source.port().to_be_bytes(),
        &destination.port().to_be_bytes(),
    ]
    .concat()
}

/// A v2 header whose body is `before`, a CRC32C TLV, then `after`, with
/// the checksum computed by [`reference_crc32c`].
fn sealed(version_command: u8, family_transport: u8, before: &[u8], after: &[u8]) -> Vec<u8> {
    let body = [before, &tlv(PP2_TYPE_CRC32C, &[0; 4]), after].concat();
    let mut header = v2(version_command, family_transport, &body);
    let value_at = V2_FIXED + before.len() + TLV_HEAD;
    let crc = reference_crc32c(&header);
    header[value_at..value_at + 4].copy_from_slice(&crc.to_be_bytes());
    header
}

/// CRC-32C a bit at a time, written apart from the table-driven one.
fn reference_crc32c(bytes: &[u8]) -> u32 {
    let mut crc = u32::MAX;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let low_bit = crc & 1;
            crc >>= 1;
            if low_bit == 1 {
                crc ^= 0x82F6_3B78;
            }
        }
    }
    !crc
}

fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = Crc32c::new();
    crc.update(bytes);
    crc.finish()
}

const PROXY: u8 = 0x21;
const LOCAL: u8 = 0x20;
const TCP4: u8 = 0x11;
const UDP4: u8 = 0x12;
const TCP6: u8 = 0x21;
const UDP6: u8 = 0x22;
const UNIX_STREAM: u8 = 0x31;
const UNIX_DGRAM: u8 = 0x32;
const UNSPEC: u8 = 0x00;

// --- CRC-32C ---

#[test]
fn crc32c_has_the_standard_check_value() {
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    assert_eq!(reference_crc32c(b"123456789"), 0xE306_9283);
}

#[test]
fn crc32c_matches_the_iscsi_test_vectors() {
    // RFC 3720, B.4: 32 bytes of zeros, of ones, ascending, descending.
    let ascending: Vec<u8> = (0..32).collect();
    let descending: Vec<u8> = (0..32).rev().collect();
    assert_eq!(crc32c(&[0; 32]), 0x8A91_36AA);
    assert_eq!(crc32c(&[0xFF; 32]), 0x62A8_AB43);
    assert_eq!(crc32c(&ascending), 0x46DD_794E);
    assert_eq!(crc32c(&descending), 0x113F_DB5C);
}

// --- valid headers ---

#[test]
fn valid_v1_headers() {
    let full6 = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
    let longest_tcp6 = format!("PROXY TCP6 {full6} {full6} 65535 65535\r\n");
    let longest_unknown = format!("PROXY UNKNOWN {full6} {full6} 65535 65535\r\n");
    assert_eq!((longest_tcp6.len(), longest_unknown.len()), (104, 107));
    let cases: &[(&str, Option<&str>)] = &[
        (
            "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
            Some("192.168.0.1:56324"),
        ),
        (
            "PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n",
            Some("0.0.0.0:0"),
        ),
        (
            "PROXY TCP4 10.0.0.200 10.100.0.9 65535 0\r\n",
            Some("10.0.0.200:65535"),
        ),
        (
            "PROXY TCP6 2001:db8::1 ::1 443 8080\r\n",
            Some("[2001:db8::1]:443"),
        ),
        (
            &longest_tcp6,
            Some("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"),
        ),
        (
            "PROXY TCP6 FE80::A 2001:0DB8:0:0:0:0:0:1 10 20\r\n",
            Some("[fe80::a]:10"),
        ),
        (
            "PROXY TCP6 ::ffff:192.0.2.1 ::ffff:192.0.2.2 1 2\r\n",
            Some("[::ffff:192.0.2.1]:1"),
        ),
        ("PROXY TCP6 :: :: 0 0\r\n", Some("[::]:0")),
        (
            "PROXY TCP6 0000:0000:0000:0000:0000:0000:255.255.255.255 ::1 1 2\r\n",
            Some("[::255.255.255.255]:1"),
        ),
        ("PROXY UNKNOWN\r\n", None),
        (&longest_unknown, None),
        ("PROXY UNKNOWN 192.168.0.1 192.168.0.11 56324 443\r\n", None),
        ("PROXY UNKNOWN anything \t at\x01all\r\n", None),
        ("PROXY UNKNOWNxyz\r\n", None),
    ];
    for (line, source) in cases {
        assert_valid(line.as_bytes(), *source);
    }
}

#[test]
fn valid_v2_headers() {
    let tcp4 = inet("203.0.113.7:51000", "192.0.2.1:443");
    let tcp6 = inet6("[2001:db8::7]:51000", "[2001:db8::1]:443");
    let ssl = [
        &[0x01, 0, 0, 0, 0][..],
        &tlv(0x21, b"TLSv1.3"),
        &tlv(0x22, b"client.example"),
    ]
    .concat();
    let cases: &[(Vec<u8>, Option<&str>)] = &[
        (v2(PROXY, TCP4, &tcp4), Some("203.0.113.7:51000")),
        (
            v2(
                PROXY,
                TCP4,
                &[&tcp4[..], &tlv(0x01, b"h2"), &tlv(0x02, b"example.org")].concat(),
            ),
            Some("203.0.113.7:51000"),
        ),
        // NOOP padding, empty and not, and a TLV type nobody knows.
        (
            v2(
                PROXY,
                TCP4,
                &[
                    &tcp4[..],
                    &tlv(0x04, b""),
                    &tlv(0x04, &[0; 5]),
                    &tlv(0xE7, b"x"),
                ]
                .concat(),
            ),
            Some("203.0.113.7:51000"),
        ),
        // A PP2_TYPE_SSL TLV with sub-TLVs is skipped as one.
        (
            v2(PROXY, TCP4, &[&tcp4[..], &tlv(0x20, &ssl)].concat()),
            Some("203.0.113.7:51000"),
        ),
        (sealed(PROXY, TCP4, &tcp4, &[]), Some("203.0.113.7:51000")),
        (
            sealed(
                PROXY,
                TCP4,
                &[&tcp4[..], &tlv(0x01, b"h2")].concat(),
                &tlv(0x05, b"id-1"),
            ),
            Some("203.0.113.7:51000"),
        ),
        (v2(PROXY, TCP6, &tcp6), Some("[2001:db8::7]:51000")),
        (
            sealed(PROXY, TCP6, &tcp6, &tlv(0x04, &[0; 3])),
            Some("[2001:db8::7]:51000"),
        ),
        // LOCAL, as a balancer's health check sends it.
        (v2(LOCAL, UNSPEC, b""), None),
        // LOCAL ignores the family and everything after the fixed part,
        // even bytes that would not parse as addresses and TLVs.
        (v2(LOCAL, TCP4, &[&tcp4[..], &[0x04, 0x00]].concat()), None),
        (v2(LOCAL, 0xFF, b"\x03\x00\x04junk"), None),
        // Families and transports that keep the transport's address.
        (v2(PROXY, UDP4, &tcp4), None),
        (v2(PROXY, UDP6, &tcp6), None),
        (v2(PROXY, UNIX_STREAM, &[0x2F; 216]), None),
        (sealed(PROXY, UNIX_DGRAM, &[0x2F; 216], &[]), None),
        (v2(PROXY, UNSPEC, b""), None),
        (v2(PROXY, UNSPEC, b"\x00\x01 not TLVs"), None),
        (v2(PROXY, 0x10, &tcp4[..8]), None),
        (v2(PROXY, 0x01, b""), None),
    ];
    for (bytes, source) in cases {
        assert_valid(bytes, *source);
    }
}

// --- malformed headers ---

#[test]
fn malformed_v1_headers() {
    // Each input is refused at its last byte and not before.
    let cases: &[(&str, HeaderError)] = &[
        // The first byte starts neither signature.
        ("G", NotProxy),
        ("\x16", NotProxy),
        ("p", NotProxy),
        ("PROXI", NotProxy),
        // One space between fields.
        ("PROXY\t", V1Spacing),
        ("PROXY  ", V1Spacing),
        ("PROXY TCP4  ", V1Spacing),
        ("PROXY TCP44", V1Spacing),
        ("PROXY TCP4 1.2.3.4  ", V1Spacing),
        ("PROXY TCP4 1.2.3.4 5.6.7.8 1  ", V1Spacing),
        // The protocol, in upper case.
        ("PROXY TCP5", V1BadProtocol),
        ("PROXY t", V1BadProtocol),
        ("PROXY UNKNOWX", V1BadProtocol),
        ("PROXY UD", V1BadProtocol),
        // Fields missing or extra.
        ("PROXY \r", V1MissingField),
        ("PROXY TCP4\r", V1MissingField),
        ("PROXY TCP4 1.2.3.4\r", V1MissingField),
        ("PROXY TCP6 ::1 ::2\r", V1MissingField),
        ("PROXY TCP4 1.2.3.4 5.6.7.8 80\r", V1MissingField),
        ("PROXY TCP4 1.2.3.4 5.6.7.8 80 443 ", V1ExtraField),
        // CRLF, and only CRLF, ends the line.
        ("PROXY TCP4 1.2.3.4 5.6.7.8 80 443\n", V1NoCrlf),
        ("PROXY TCP4 1.2.3.4 5.6.7.8 80 443\r\r", V1NoCrlf),
        ("PROXY UNKNOWN foo\n", V1NoCrlf),
        ("PROXY UNKNOWN foo\rb", V1NoCrlf),
        ("PROXY UNKNOWN\n", V1NoCrlf),
        // IPv4 text: numbers 0..=255, no leading zeros, four of them.
        ("PROXY TCP4 01.", V1BadAddress),
        ("PROXY TCP4 256.", V1BadAddress),
        ("PROXY TCP4 12345", V1BadAddress),
        ("PROXY TCP4 1.02", V1BadAddress),
        ("PROXY TCP4 1.2.3.256", V1BadAddress),
        ("PROXY TCP4 1.2.3.00", V1BadAddress),
        ("PROXY TCP4 1..", V1BadAddress),
        ("PROXY TCP4 1.2.3 ", V1BadAddress),
        ("PROXY TCP4 1.2.3.4.", V1BadAddress),
        ("PROXY TCP4 1.2.3.4 5.6.7.8x", V1BadAddress),
        ("PROXY TCP4 1.2.3.4:", V1BadAddress),
        ("PROXY TCP4 x", V1BadAddress),
        // IPv6 text, as std parses it.
        ("PROXY TCP6 ::g", V1BadAddress),
        ("PROXY TCP6 fe80::1%", V1BadAddress),
        ("PROXY TCP6 1:2:3:4:5:6:7:8:9 ", V1BadAddress),
        ("PROXY TCP6 1::2::3 ", V1BadAddress),
        ("PROXY TCP6 ab.", V1BadAddress),
        ("PROXY TCP6 ::ffff:1.2.3.04 ", V1BadAddress),
        // Longer than any IPv6 text: refused at its 46th character.
        (
            "PROXY TCP6 0000:0000:0000:0000:0000:0000:0000:0000:0000:0",
            V1BadAddress,
        ),
        // The family must match the protocol.
        ("PROXY TCP4 :", V1FamilyMismatch),
        ("PROXY TCP4 2001:", V1FamilyMismatch),
        ("PROXY TCP4 fe80:", V1FamilyMismatch),
        ("PROXY TCP4 1.2.3.4 :", V1FamilyMismatch),
        ("PROXY TCP6 1.", V1FamilyMismatch),
        ("PROXY TCP6 ::1 192.", V1FamilyMismatch),
        // Ports: decimal 0..=65535, no leading zeros.
        ("PROXY TCP4 1.2.3.4 5.6.7.8 08", V1BadPort),
        ("PROXY TCP4 1.2.3.4 5.6.7.8 00", V1BadPort),
        ("PROXY TCP4 1.2.3.4 5.6.7.8 80 00", V1BadPort),
        ("PROXY TCP4 1.2.3.4 5.6.7.8 65536", V1BadPort),
        ("PROXY TCP4 1.2.3.4 5.6.7.8 1 99999", V1BadPort),
        ("PROXY TCP4 1.2.3.4 5.6.7.8 -", V1BadPort),
        ("PROXY TCP4 1.2.3.4 5.6.7.8 +", V1BadPort),
        ("PROXY TCP4 1.2.3.4 5.6.7.8 80x", V1BadPort),
        ("PROXY TCP4 1.2.3.4 5.6.7.8 80 443x", V1BadPort),
    ];
    for (bytes, error) in cases {
        assert_refused(bytes.as_bytes(), bytes.len(), *error);
    }
}
#[test]
fn a_v1_line_is_refused_at_its_107th_byte_without_crlf() {
    let unknown = format!("PROXY UNKNOWN {}", "x".repeat(93));
    assert_eq!(unknown.len(), 107);
    assert_refused(
        format!("{unknown}\r\n").as_bytes(),
        107,
        HeaderError::V1TooLong,
    );
    // A CR as the 107th byte would need a 108th for its LF.
    let unknown = format!("PROXY UNKNOWN {}\r\n", "x".repeat(92));
    assert_eq!(unknown.len(), 108);
    assert_refused(unknown.as_bytes(), 107, HeaderError::V1TooLong);
    // The same line one byte shorter is whole.
    assert_valid(
        format!("PROXY UNKNOWN {}\r\n", "x".repeat(91)).as_bytes(),
        None,
    );
    // TCP6 text as long as std takes it is too long a line with two of them.
    let long = "0000:0000:0000:0000:0000:0000:255.255.255.255";
    let line = format!("PROXY TCP6 {long} {long} 1 2\r\n");
    assert_refused(line.as_bytes(), 107, HeaderError::V1TooLong);
}

#[test]
fn malformed_v2_headers() {
    let tcp4 = inet("203.0.113.7:51000", "192.0.2.1:443");
    let tcp6 = inet6("[2001:db8::7]:51000", "[2001:db8::1]:443");
    let fixed = |version_command, family_transport, length: u16| {
        let mut bytes = v2(version_command, family_transport, b"");
        bytes[14..16].copy_from_slice(&length.to_be_bytes());
        bytes
    };
    let after_tcp4 = |tlvs: &[u8]| v2(PROXY, TCP4, &[&tcp4[..], tlvs].concat());
    // Judged as they arrive: the signature, then the fixed part.
    let early: &[(usize, &[u8], HeaderError)] = &[
        (2, b"\r\r", NotProxy),
        (5, b"\r\n\r\n\x01", NotProxy),
        (11, b"\r\n\r\n\0\r\nQUIX", NotProxy),
        (12, b"\r\n\r\n\0\r\nQUIT\r", NotProxy),
        (13, &fixed(0x11, TCP4, 12), V2BadVersion),
        (13, &fixed(0x31, TCP4, 12), V2BadVersion),
        (13, &fixed(0x01, TCP4, 12), V2BadVersion),
        (13, &fixed(0x22, TCP4, 12), V2BadCommand),
        (13, &fixed(0x2F, TCP4, 12), V2BadCommand),
        (14, &fixed(PROXY, 0x41, 12), V2BadFamily),
        (14, &fixed(PROXY, 0xF1, 12), V2BadFamily),
        (14, &fixed(PROXY, 0x13, 12), V2BadTransport),
        (14, &fixed(PROXY, 0x0F, 12), V2BadTransport),
        (16, &fixed(PROXY, TCP4, 11), V2ShortAddresses),
        (16, &fixed(PROXY, UDP4, 0), V2ShortAddresses),
        (16, &fixed(PROXY, TCP6, 35), V2ShortAddresses),
        (16, &fixed(PROXY, TCP6, 12), V2ShortAddresses),
        (16, &fixed(PROXY, UNIX_STREAM, 215), V2ShortAddresses),
    ];
    for (decided_at, bytes, error) in early {
        assert_refused(bytes, *decided_at, *error);
    }
    let mut corrupted = sealed(PROXY, TCP4, &tcp4, &tlv(0x01, b"h2"));
    corrupted[V2_FIXED] ^= 0x01;
    let mut wrong_value = sealed(PROXY, TCP4, &tcp4, &[]);
    *wrong_value.last_mut().unwrap() ^= 0x80;
    let overrun_after_tlv = [&tlv(0x04, b"")[..], &[0x01, 0xFF, 0xFF]].concat();
    // Judged once the whole header is there.
    let whole: &[(Vec<u8>, HeaderError)] = &[
        (after_tcp4(&[0x04]), V2TlvOverrun),
        (after_tcp4(&[0x04, 0x00]), V2TlvOverrun),
        (after_tcp4(&[0x04, 0x00, 0x03, 1, 2]), V2TlvOverrun),
        (after_tcp4(&overrun_after_tlv), V2TlvOverrun),
        (
            v2(PROXY, TCP6, &[&tcp6[..], &[0x04]].concat()),
            V2TlvOverrun,
        ),
        (v2(PROXY, UNIX_STREAM, &[0; 217]), V2TlvOverrun),
        (after_tcp4(&tlv(PP2_TYPE_CRC32C, &[0; 3])), V2CrcLength),
        (after_tcp4(&tlv(PP2_TYPE_CRC32C, &[0; 8])), V2CrcLength),
        (after_tcp4(&tlv(PP2_TYPE_CRC32C, &[0; 4])), V2CrcMismatch),
        (corrupted, V2CrcMismatch),
        (wrong_value, V2CrcMismatch),
        (
            sealed(PROXY, TCP4, &tcp4, &tlv(PP2_TYPE_CRC32C, &[0; 4])),
            V2CrcRepeated,
        ),
    ];
    for (bytes, error) in whole {
        assert_refused(bytes, bytes.len(), *error);
    }
}

#[test]
fn a_v2_header_is_read_no_further_than_its_length() {
    // A length of 65535 with 16 bytes there: wait, whatever follows.
    let mut bytes = v2(PROXY, TCP4, b"");
    bytes[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
    assert_eq!(parse(&bytes), Ok(Parsed::Incomplete));
    // Bytes after a header that would overrun it as TLVs are not its.
    let tcp4 = inet("203.0.113.7:51000", "192.0.2.1:443");
    let followed = [&v2(PROXY, TCP4, &tcp4)[..], &[0x04, 0xFF, 0xFF]].concat();
    assert_eq!(parse(&followed), header(28, Some("203.0.113.7:51000")));
}

#[test]
fn the_errors_read_as_short_lowercase_phrases() {
    for error in [
        HeaderError::NotProxy,
        HeaderError::V1TooLong,
        HeaderError::V1BadPort,
        HeaderError::V2ShortAddresses,
        HeaderError::V2CrcMismatch,
    ] {
        let message = error.to_string();
        assert!(
            message.starts_with(|c: char| c.is_ascii_lowercase()),
            "{message}"
        );
        assert!(!message.ends_with('.'), "{message}");
    }
    assert_eq!(
        HeaderError::V2TlvOverrun.to_string(),
        "v2 TLV overruns the header"
    );
}

// --- generated headers ---

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
