//! Behind a load balancer: PROXY protocol headers (versions 1 and 2) from
//! trusted sources, built by hand; the client's address in the logs and
//! counted by `max_connections_per_client`; anything malformed closed
//! without a reply.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::util::*;

/// The balancer connects from 127.0.0.1; clients with no balancer from
/// 127.0.0.2 (outside the trusted block).
const TRUSTED: &str = "proxy_protocol_from = [\"127.0.0.1/32\", \"::1/128\"]";
const UNTRUSTED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

fn balancer(addr: SocketAddr) -> TcpStream {
    connect_from(Ipv4Addr::LOCALHOST, addr)
}

/// CRC-32C (Castagnoli), bit by bit: the check value of `PP2_TYPE_CRC32C`.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// A version 2 header: `command` 0 LOCAL or 1 PROXY, `family` byte (0x11
/// TCP over IPv4, 0x21 TCP over IPv6), addresses, then `tlvs` (type,
/// value); with `crc` a `PP2_TYPE_CRC32C` last, correct or off by one.
pub(crate) fn v2(
    command: u8,
    source: SocketAddr,
    destination: SocketAddr,
    tlvs: &[(u8, &[u8])],
    crc: Option<bool>,
) -> Vec<u8> {
    let mut body = Vec::new();
    let family = match (source, destination) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            body.extend_from_slice(&s.ip().octets());
            body.extend_from_slice(&d.ip().octets());
            body.extend_from_slice(&s.port().to_be_bytes());
            body.extend_from_slice(&d.port().to_be_bytes());
            0x11
        }
        (SocketAddr::V6(s), SocketAddr::V6(d)) => {
            body.extend_from_slice(&s.ip().octets());
            body.extend_from_slice(&d.ip().octets());
            body.extend_from_slice(&s.port().to_be_bytes());
            body.extend_from_slice(&d.port().to_be_bytes());
            0x21
        }
        _ => panic!("mixed families"),
    };
    for (kind, value) in tlvs {
        body.push(*kind);
        body.extend_from_slice(&(value.len() as u16).to_be_bytes());
        body.extend_from_slice(value);
    }
    let crc_at = crc.map(|_| {
        body.extend_from_slice(&[0x03, 0, 4]);
        body.extend_from_slice(&[0; 4]);
        body.len() - 4
    });
    let mut header = V2_SIGNATURE.to_vec();
    header.push(0x20 | command);
    header.push(family);
    header.extend_from_slice(&(body.len() as u16).to_be_bytes());
    let crc_at = crc_at.map(|at| header.len() + at);
    header.extend_from_slice(&body);
    if let (Some(at), Some(right)) = (crc_at, crc) {
        let sum = crc32c(&header).wrapping_add(u32::from(!right));
        header[at..at + 4].copy_from_slice(&sum.to_be_bytes());
    }
    header
}

fn sa(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

/// Sends `bytes` (header and requests) then half-closes; returns what came
/// back before the server closed.
fn exchange_through(client: TcpStream, bytes: &[u8]) -> Vec<u8> {
    (&client).write_all(bytes).unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    read_to_end(&client)
}

/// Waits until the daemon logs closing a connection from client `peer`.
fn expect_closed_with_peer(daemon: &Daemon, peer: &str) {
    let field = format!("peer={peer} ");
    daemon.wait_until(&format!("a close logged with {field}"), SOON, |d| {
        d.stderr()
            .lines()
            .any(|l| l.contains("connection closed") && l.contains(&field))
    });
}

fn spawn(name: &str, extra: &str) -> (Daemon, SocketAddr, SocketAddr) {
    spawn_with_metrics(
        name,
        &format!("{TRUSTED}\nproxy_header_timeout_ms = 300\nlog_level = \"debug\"\n{extra}"),
    )
}

/// A scrape through the balancer: the metrics endpoint wants a header from
/// a trusted source too (here `UNKNOWN`: the balancer's own request).
fn scrape_through_balancer(metrics: SocketAddr) -> BTreeMap<String, u64> {
    let client = balancer(metrics);
    let raw = exchange_through(
        client,
        b"PROXY UNKNOWN\r\nGET /metrics HTTP/1.1\r\nHost: test\r\n\r\n",
    );
    let response = parse_response(&raw);
    assert_eq!(response.status, 200, "{}", response.body);
    samples(&response.body)
}

fn closed(metrics: &BTreeMap<String, u64>, reason: &str) -> u64 {
    metrics[&format!("oneshotd_connections_closed_total{{service=\"upper\",reason=\"{reason}\"}}")]
}

/// Every valid form gives the client's address (or keeps the transport's)
/// and the bytes after the header are the protocol's first: a header and
/// three lines in one segment come back as three replies.
#[test]
fn valid_headers_name_the_client_and_what_follows_is_served() {
    let (mut daemon, addr, _) = spawn("proxy-valid", "");
    let three = b"one\ntwo\nthree\n";
    let v4 = (sa("192.0.2.1:5000"), sa("192.0.2.2:7878"));
    let v6 = (sa("[2001:db8::1]:6000"), sa("[2001:db8::2]:7878"));
    let cases: Vec<(&str, Vec<u8>, Option<&str>)> = vec![
        (
            "v1 TCP4",
            b"PROXY TCP4 192.0.2.1 192.0.2.2 5000 7878\r\n".to_vec(),
            Some("192.0.2.1:5000"),
        ),
        (
            "v1 TCP6",
            b"PROXY TCP6 2001:db8::1 2001:db8::2 6000 7878\r\n".to_vec(),
            Some("[2001:db8::1]:6000"),
        ),
        ("v1 UNKNOWN", b"PROXY UNKNOWN\r\n".to_vec(), None),
        (
            "v1 UNKNOWN with addresses",
            b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n".to_vec(),
            None,
        ),
        (
            "v2 TCP4",
            v2(1, v4.0, v4.1, &[], None),
            Some("192.0.2.1:5000"),
        ),
        (
            "v2 TCP6",
            v2(1, v6.0, v6.1, &[], None),
            Some("[2001:db8::1]:6000"),
        ),
        ("v2 LOCAL", v2(0, v4.0, v4.1, &[], None), None),
        (
            "v2 NOOP TLV",
            v2(1, v4.0, v4.1, &[(0x04, b"pad"), (0x02, b"authority")], None),
            Some("192.0.2.1:5000"),
        ),
        (
            "v2 CRC32C",
            v2(1, v6.0, v6.1, &[(0x04, b"x")], Some(true)),
            Some("[2001:db8::1]:6000"),
        ),
    ];
    for (what, header, client) in cases {
        let connection = balancer(addr);
        let local = connection.local_addr().unwrap();
        let mut segment = header.clone();
        segment.extend_from_slice(three);
        let replies = exchange_through(connection, &segment);
        assert_eq!(replies, b"ONE\nTWO\nTHREE\n", "{what}");
        let expected = client.map_or(local.to_string(), str::to_owned);
        expect_closed_with_peer(&daemon, &expected);
    }
    daemon.stop();
}

/// A header split byte by byte over many segments, then lines.
#[test]
fn a_header_split_byte_by_byte_is_read_whole() {
    let (mut daemon, addr, _) = spawn("proxy-split", "");
    for (header, client) in [
        (
            b"PROXY TCP4 198.51.100.7 192.0.2.2 4444 7878\r\n".to_vec(),
            "198.51.100.7:4444",
        ),
        (
            v2(
                1,
                sa("198.51.100.8:4444"),
                sa("192.0.2.2:7878"),
                &[(0x04, b"noop")],
                Some(true),
            ),
            "198.51.100.8:4444",
        ),
    ] {
        let mut connection = balancer(addr);
        for byte in &header {
            connection.write_all(std::slice::from_ref(byte)).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(roundtrip(&mut connection, "split\n"), "SPLIT\n");
        drop(connection);
        expect_closed_with_peer(&daemon, client);
    }
    daemon.stop();
}

/// Every malformed or incomplete header closes the connection without a
/// byte of reply, counted as `proxy_header`; a trusted peer that sends
/// nothing is closed at the header timeout.
#[test]
fn malformed_headers_are_closed_without_a_reply() {
    let (mut daemon, addr, metrics) = spawn("proxy-bad", "");
    let good_v2 = v2(1, sa("192.0.2.1:5000"), sa("192.0.2.2:7878"), &[], None);
    let mut bad_version = good_v2.clone();
    bad_version[12] = 0x11;
    let mut bad_command = good_v2.clone();
    bad_command[12] = 0x22;
    let mut short_length = good_v2.clone();
    short_length[14..16].copy_from_slice(&4u16.to_be_bytes());
    short_length.truncate(16 + 4);
    let mut overrun_tlv = v2(
        1,
        sa("192.0.2.1:5000"),
        sa("192.0.2.2:7878"),
        &[(0x04, b"abcd")],
        None,
    );
    let end = overrun_tlv.len();
    overrun_tlv[end - 5..end - 4].copy_from_slice(&[9]); // the TLV claims 9 bytes
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a plain request", b"hello\n".to_vec()),
        (
            "lowercase proxy",
            b"proxy TCP4 192.0.2.1 192.0.2.2 5000 7878\r\n".to_vec(),
        ),
        (
            "no CRLF, only LF",
            b"PROXY TCP4 192.0.2.1 192.0.2.2 5000 7878\n".to_vec(),
        ),
        (
            "unknown protocol",
            b"PROXY UDP4 192.0.2.1 192.0.2.2 5000 7878\r\n".to_vec(),
        ),
        (
            "a port past 65535",
            b"PROXY TCP4 192.0.2.1 192.0.2.2 65536 7878\r\n".to_vec(),
        ),
        (
            "a port with a leading zero",
            b"PROXY TCP4 192.0.2.1 192.0.2.2 05000 7878\r\n".to_vec(),
        ),
        (
            "an address with a leading zero",
            b"PROXY TCP4 192.0.2.01 192.0.2.2 5000 7878\r\n".to_vec(),
        ),
        (
            "an IPv6 address as TCP4",
            b"PROXY TCP4 2001:db8::1 192.0.2.2 5000 7878\r\n".to_vec(),
        ),
        (
            "a double space",
            b"PROXY TCP4  192.0.2.1 192.0.2.2 5000 7878\r\n".to_vec(),
        ),
        (
            "a v1 line over 107 bytes",
            format!("PROXY UNKNOWN {}\r\n", "x".repeat(100)).into_bytes(),
        ),
        ("v2 version 1", bad_version),
        ("v2 command 2", bad_command),
        ("v2 length short of its addresses", short_length),
        ("v2 TLV overrunning the header", overrun_tlv),
        (
            "v2 wrong CRC32C",
            v2(
                1,
                sa("192.0.2.1:5000"),
                sa("192.0.2.2:7878"),
                &[],
                Some(false),
            ),
        ),
        ("v2 truncated, then EOF", good_v2[..20].to_vec()),
        ("v1 truncated, then EOF", b"PROXY TCP4 192.0.2.1 1".to_vec()),
    ];
    let before = closed(&scrape_through_balancer(metrics), "proxy_header");
    for (what, bytes) in &cases {
        eprintln!("{what}");
        expect_refused_after(&balancer(addr), bytes);
    }
    // Silent: closed at the header timeout (300 ms), not the idle timeout.
    let silent = balancer(addr);
    let started = Instant::now();
    assert!(read_to_end(&silent).is_empty());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < SOON,
        "{waited:?}"
    );
    let expected = before + cases.len() as u64 + 1;
    daemon.wait_until("every bad header counted", SOON, |_| {
        closed(&scrape_through_balancer(metrics), "proxy_header") == expected
    });
    assert!(
        daemon.stderr().contains("bad PROXY header")
            && daemon
                .stderr()
                .contains("PROXY header not complete in time"),
        "{}",
        daemon.stderr()
    );
    // Nothing else was disturbed.
    let mut after = balancer(addr);
    after.write_all(b"PROXY UNKNOWN\r\n").unwrap();
    assert_eq!(roundtrip(&mut after, "still\n"), "STILL\n");
    daemon.stop();
}

/// A source outside the list is never parsed: its `PROXY ...` line is an
/// ordinary request.
#[test]
fn an_untrusted_peer_is_served_as_it_is() {
    let (mut daemon, addr, _) = spawn("proxy-untrusted", "");
    let mut client = connect_from(UNTRUSTED, addr);
    let line = "PROXY TCP4 192.0.2.1 192.0.2.2 5000 7878\r\n";
    assert_eq!(roundtrip(&mut client, line), line);
    drop(client);
    daemon.stop();
}

/// The limit counts the header's address: two balancer connections for one
/// client, a third refused; another client served; and a client without a
/// balancer counted by its own address.
#[test]
fn the_per_client_limit_counts_the_address_from_the_header() {
    let (mut daemon, addr, metrics) = spawn("proxy-per-client", "max_connections_per_client = 2");
    let for_client = |client: &str| {
        let mut connection = balancer(addr);
        connection
            .write_all(&v2(1, sa(client), sa("192.0.2.2:7878"), &[], None))
            .unwrap();
        connection
    };
    let mut held = vec![
        for_client("203.0.113.5:1000"),
        for_client("203.0.113.5:1001"),
    ];
    for connection in &mut held {
        assert_eq!(roundtrip(connection, "held\n"), "HELD\n");
    }
    expect_refused_after(&for_client("203.0.113.5:1002"), b"refused?\n");
    let mut other = for_client("203.0.113.6:1000");
    assert_eq!(roundtrip(&mut other, "other\n"), "OTHER\n");
    // Without a header, the transport's address counts (the balancer's own
    // 127.0.0.1 is not a client: its connections are counted by header).
    let mut direct: Vec<TcpStream> = (0..2).map(|_| connect_from(UNTRUSTED, addr)).collect();
    for connection in &mut direct {
        assert_eq!(roundtrip(connection, "direct\n"), "DIRECT\n");
    }
    expect_refused_after(&connect_from(UNTRUSTED, addr), b"refused?\n");
    let m = scrape_through_balancer(metrics);
    assert_eq!(
        m["oneshotd_connections_refused_total{service=\"upper\",reason=\"per_client\"}"],
        2
    );
    assert_eq!(
        closed(&m, "per_client"),
        1,
        "the one refused after its header"
    );
    daemon.stop();
}
