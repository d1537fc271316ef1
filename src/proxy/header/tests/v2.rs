//! Version 2, the binary header: its checksum, valid headers, and each way
//! a header is refused.

use super::*;

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
