//! The header parser against the specification, rule by rule: the
//! helpers and v2 builders every test here shares, then one file per
//! format (`v1.rs`, `v2.rs`) and one of generated inputs
//! (`generated.rs`).

mod generated;
mod v1;
mod v2;

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
