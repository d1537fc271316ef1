//! Clients a TLS listener must judge: mutual TLS (a certificate from the
//! right CA, none, one from another CA), handshakes that stall or are not
//! TLS at all, and a balancer's PROXY v2 header before the handshake.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::*;

/// `oneshotd_connections_closed_total{service="upper",reason="tls"}`.
fn closed_tls(metrics: &BTreeMap<String, u64>) -> u64 {
    metrics["oneshotd_connections_closed_total{service=\"upper\",reason=\"tls\"}"]
}

/// With `tls_client_ca`, a client whose certificate chains to it is
/// served, and named by its subject in the log; one with no certificate,
/// or with one from another CA, is refused in the handshake and never
/// served a byte.
#[test]
fn mutual_tls_serves_clients_of_its_ca_and_refuses_others() {
    let pki = Pki::new("mtls");
    let server = pki.server("server", Key::Ec, "/CN=localhost/O=ecdsa");
    let client_ca = pki.new_ca("client-ca", "/CN=oneshotd client CA");
    let alice = pki.issue("alice", Key::Ec, "/CN=alice/O=tests", "client-ca", true);
    // Signed by the CA the server's certificate comes from: not the one
    // clients must chain to.
    let mallory = pki.issue("mallory", Key::Ec, "/CN=mallory", "ca", true);
    let extra = format!("tls_client_ca = \"{}\"", client_ca.display());
    let (mut daemon, addr, metrics) = spawn("mtls", &server.pem, &server.key, &extra);

    let (alice_pem, alice_key) = (path_str(&alice.pem), path_str(&alice.key));
    for version in ["1.3", "1.2"] {
        let args = [
            "--version",
            version,
            "--cert",
            &alice_pem,
            "--key",
            &alice_key,
        ];
        let input = lines(&format!("alice over {version}"), 100);
        let (replies, _) = python_batch(addr, &pki.ca, &args, &input);
        assert!(replies == upper(&input), "alice over TLS {version}");
    }
    let subject = "client=\"CN=alice,O=tests\"";
    expect_logged(&daemon, &["TLS handshake done", subject]);
    expect_logged(&daemon, &["connection closed", subject]);

    let (mallory_pem, mallory_key) = (path_str(&mallory.pem), path_str(&mallory.key));
    let refused: [&[&str]; 3] = [
        &["--version", "1.3"],
        &["--version", "1.2"],
        &["--cert", &mallory_pem, "--key", &mallory_key],
    ];
    for args in refused {
        let client = python(addr, &pki.ca, args);
        client.send(b"let me in\n");
        let done = client.finish();
        assert_eq!(
            done.status.code(),
            Some(3),
            "{args:?} was not refused: {}",
            done.stderr
        );
        assert!(done.stdout.is_empty(), "{args:?} got {:?}", done.stdout);
        assert!(reported(&done.stderr, "error").is_some(), "{}", done.stderr);
    }
    // And `s_client` without a certificate.
    let client = s_client(addr, &pki.ca, &["-tls1_2"]);
    client.send(b"let me in\n");
    let done = client.finish();
    assert!(
        done.stdout.is_empty() && !done.status.success(),
        "{}",
        done.stderr
    );

    daemon.wait_until("4 failed handshakes counted", SOON, |_| {
        handshakes(&scrape(metrics), "failed") == 4
    });
    let m = scrape(metrics);
    assert_eq!((handshakes(&m, "ok"), closed_tls(&m)), (2, 4));
    assert_eq!(m["oneshotd_requests_total{service=\"upper\"}"], 200);
    let log = daemon.stderr();
    assert!(
        log.contains("certificate required") && log.contains("bad client certificate"),
        "{log}"
    );
    daemon.stop();
}

/// Reads until the daemon closes `stream` (EOF or reset): what it sent,
/// and when.
fn until_closed(mut stream: &TcpStream) -> (Vec<u8>, Instant) {
    let mut got = Vec::new();
    let mut buf = [0; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("waiting for the close: {e}"),
        }
    }
    (got, Instant::now())
}

/// A ClientHello's first 43 bytes: a record that says 512 bytes follow,
/// the handshake header, the version and the random.
fn half_a_client_hello() -> Vec<u8> {
    let mut bytes = vec![
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    bytes.extend([0x5a; 32]);
    bytes
}

/// With `tls_handshake_timeout_ms = 300` and one worker: clients that
/// connect and say nothing, or half a ClientHello, are closed at about
/// 300 ms and counted as timeouts; HTTP sent to the TLS port is closed at
/// once, with no more than an alert, and counted failed; meanwhile a real
/// client is served.
#[test]
fn stalled_and_garbage_handshakes_are_closed_and_counted() {
    let pki = Pki::new("stall");
    let server = pki.server("server", Key::Ec, "/CN=localhost/O=ecdsa");
    let extra = "tls_handshake_timeout_ms = 300\nworkers = 1";
    let (mut daemon, addr, metrics) = spawn("tls-stall", &server.pem, &server.key, extra);

    let started = Instant::now();
    let mut stalled: Vec<TcpStream> = (0..3).map(|_| connect(addr)).collect();
    let half = connect(addr);
    (&half).write_all(&half_a_client_hello()).unwrap();
    stalled.push(half);

    let garbage = connect(addr);
    let sent = Instant::now();
    (&garbage)
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let (got, closed) = until_closed(&garbage);
    assert!(got.is_empty() || got[0] == 0x15, "not an alert: {got:?}");
    assert!(
        closed - sent < Duration::from_millis(250),
        "garbage closed after {:?}",
        closed - sent
    );

    // The stalled handshakes hold no worker: the one worker serves this.
    let input = lines("meanwhile", 100);
    let (replies, _) = python_batch(addr, &pki.ca, &[], &input);
    assert!(replies == upper(&input));

    for (i, stream) in stalled.iter().enumerate() {
        let (got, closed) = until_closed(stream);
        let after = closed - started;
        assert!(got.is_empty() || got[0] == 0x15, "stalled {i} got {got:?}");
        assert!(
            after >= Duration::from_millis(250) && after < Duration::from_millis(1300),
            "stalled {i} closed after {after:?}"
        );
    }
    daemon.wait_until("4 timeouts counted", SOON, |_| {
        handshakes(&scrape(metrics), "timeout") == 4
    });
    let m = scrape(metrics);
    assert_eq!((handshakes(&m, "ok"), handshakes(&m, "failed")), (1, 1));
    assert_eq!((closed_tls(&m), m["oneshotd_tls_connections_open"]), (5, 0));
    let log = daemon.stderr();
    assert!(
        log.contains("handshake timeout") && log.contains("not TLS"),
        "{log}"
    );
    daemon.stop();
}

/// Behind a balancer (HAProxy's `send-proxy-v2`, TLS passed through):
/// the PROXY v2 header comes first in clear, the handshake after it on
/// the same socket, and the log names the header's client.
#[test]
fn a_proxy_v2_header_then_tls_names_the_balancers_client() {
    let pki = Pki::new("proxy");
    let server = pki.server("server", Key::Ec, "/CN=localhost/O=ecdsa");
    let extra = "proxy_protocol_from = [\"127.0.0.1/32\"]";
    let (mut daemon, addr, _) = spawn("tls-proxy", &server.pem, &server.key, extra);
    let client: SocketAddr = "192.0.2.7:4242".parse().unwrap();
    let header = crate::proxy::v2(1, client, "192.0.2.2:7443".parse().unwrap(), &[], None);
    let hex: String = header.iter().map(|b| format!("{b:02x}")).collect();
    for version in ["1.3", "1.2"] {
        let input = lines(&format!("proxied {version}"), 1000);
        let args = ["--proxy", &hex, "--version", version];
        let (replies, _) = python_batch(addr, &pki.ca, &args, &input);
        assert!(replies == upper(&input), "TLS {version} after PROXY v2");
    }
    let peer = format!("peer={client} ");
    expect_logged(&daemon, &["TLS handshake done", &peer, "TLSv1.3"]);
    expect_logged(&daemon, &["TLS handshake done", &peer, "TLSv1.2"]);
    expect_logged(&daemon, &["connection closed", &peer]);
    daemon.stop();
}
