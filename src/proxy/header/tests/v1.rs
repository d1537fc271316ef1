//! Version 1, the text line: valid lines, and each way a line is refused.

use super::*;

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
