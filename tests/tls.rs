//! TLS listeners against real clients nobody here wrote: Python's `ssl`
//! (OpenSSL, through `tls/client.py`), `openssl s_client` and GnuTLS's
//! `gnutls-cli`, with certificates made by `openssl` at run time. Here:
//! each protocol version and cipher suite, both kinds of certificate and
//! every key encoding, pipelined and split lines, the metrics. In
//! `tls/reload.rs`: certificates replaced on SIGHUP and `--check-config`;
//! in `tls/hostile.rs`: mutual TLS, stalled and garbage handshakes, PROXY
//! v2 before the handshake; in `tls/flood.rs`: a flood of half handshakes
//! against the memory budget; in `tls/carry.rs`: TLS sessions carried
//! across restarts.

mod carry;
mod certs;
mod clients;
mod flood;
mod hostile;
mod reload;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use self::certs::{Key, Pki};
use self::clients::*;
use crate::util::*;

/// A daemon with a TLS listener serving `cert` with `key`, and a metrics
/// endpoint: the daemon, its TLS address and its metrics address.
fn spawn(name: &str, cert: &Path, key: &Path, extra: &str) -> (Daemon, SocketAddr, SocketAddr) {
    let (daemon, _, metrics) = spawn_with_metrics(
        name,
        &format!(
            "tls_listen = [\"127.0.0.1:0\"]\ntls_certificate = \"{}\"\ntls_private_key = \"{}\"\n{extra}",
            cert.display(),
            key.display()
        ),
    );
    let tls = daemon.logged_addr("listening over TLS");
    (daemon, tls, metrics)
}

/// `oneshotd_tls_handshakes_total{result}`.
fn handshakes(metrics: &BTreeMap<String, u64>, result: &str) -> u64 {
    metrics[&format!("oneshotd_tls_handshakes_total{{result=\"{result}\"}}")]
}

/// Waits until the daemon has logged a line with every one of `parts`.
fn expect_logged(daemon: &Daemon, parts: &[&str]) {
    daemon.wait_until(&format!("a log line with {parts:?}"), SOON, |d| {
        d.stderr()
            .lines()
            .any(|l| parts.iter().all(|p| l.contains(p)))
    });
}

/// TLS 1.3 with each of its cipher suites (`openssl s_client
/// -ciphersuites`): 10 000 pipelined lines in one write answered in
/// order, byte for byte, then a line split over three records.
#[test]
fn tls13_serves_each_cipher_suite_to_s_client() {
    let pki = Pki::new("tls13");
    let cert = pki.server("server", Key::Ec, "/CN=localhost/O=ecdsa");
    let (mut daemon, addr, _) = spawn("tls13", &cert.pem, &cert.key, "");
    for (suite, rustls_name) in [
        ("TLS_AES_128_GCM_SHA256", "TLS13_AES_128_GCM_SHA256"),
        ("TLS_AES_256_GCM_SHA384", "TLS13_AES_256_GCM_SHA384"),
        (
            "TLS_CHACHA20_POLY1305_SHA256",
            "TLS13_CHACHA20_POLY1305_SHA256",
        ),
    ] {
        let mut client = s_client(addr, &pki.ca, &["-tls1_3", "-ciphersuites", suite]);
        expect_echo(&mut client, &lines(suite, 10_000));
        expect_split_line(&mut client, "a line in three records\n", 3);
        let done = client.finish();
        assert!(done.stdout.is_empty(), "{:?}", done.stdout);
        assert!(
            done.stderr.contains("Protocol version: TLSv1.3")
                && done.stderr.contains(&format!("Ciphersuite: {suite}")),
            "{}",
            done.stderr
        );
        expect_logged(
            &daemon,
            &[
                "TLS handshake done",
                "TLSv1.3",
                &format!("cipher_suite=\"{rustls_name}\""),
            ],
        );
    }
    daemon.stop();
}

/// TLS 1.2 with ECDHE-ECDSA and AES-GCM or ChaCha20 (Python's `ssl`):
/// 10 000 lines in one write, then, on another connection, a line split
/// over several records and the lines after it.
#[test]
fn tls12_serves_aes_gcm_and_chacha20_to_python() {
    let pki = Pki::new("tls12");
    let cert = pki.server("server", Key::Ec, "/CN=localhost/O=ecdsa");
    let (mut daemon, addr, _) = spawn("tls12", &cert.pem, &cert.key, "");
    for (cipher, rustls_name) in [
        (
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        ),
        (
            "ECDHE-ECDSA-CHACHA20-POLY1305",
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        ),
    ] {
        let args = ["--version", "1.2", "--ciphers", cipher];
        let input = lines(cipher, 10_000);
        let (replies, stderr) = python_batch(addr, &pki.ca, &args, &input);
        assert!(
            replies == upper(&input),
            "{cipher}: {} bytes back",
            replies.len()
        );
        assert_eq!(reported(&stderr, "version").as_deref(), Some("TLSv1.2"));
        assert_eq!(reported(&stderr, "cipher").as_deref(), Some(cipher));
        expect_logged(
            &daemon,
            &[
                "TLS handshake done",
                "TLSv1.2",
                &format!("cipher_suite=\"{rustls_name}\""),
            ],
        );

        let mut client = python(addr, &pki.ca, &args);
        expect_split_line(&mut client, "split over five records\n", 5);
        expect_echo(&mut client, b"and after it\nmore\n");
        let done = client.finish();
        assert!(done.status.success(), "{}", done.stderr);
    }
    daemon.stop();
}

/// An ECDSA and an RSA certificate, each key in PKCS#8 and in its
/// traditional encoding (SEC1, PKCS#1): each is served, over TLS 1.3 and
/// over TLS 1.2 with the suites of its kind, and the client sees that
/// certificate.
#[test]
fn ecdsa_and_rsa_certificates_with_every_key_encoding() {
    let pki = Pki::new("keys");
    let ec = pki.server("ec", Key::Ec, "/CN=localhost/O=ecdsa");
    let rsa = pki.server("rsa", Key::Rsa, "/CN=localhost/O=rsa");
    let cases = [
        (
            "ECDSA PKCS#8",
            &ec,
            ec.key.clone(),
            "ECDHE-ECDSA-AES256-GCM-SHA384",
        ),
        (
            "ECDSA SEC1",
            &ec,
            pki.traditional_key(&ec, Key::Ec),
            "ECDHE-ECDSA-AES128-GCM-SHA256",
        ),
        (
            "RSA PKCS#8",
            &rsa,
            rsa.key.clone(),
            "ECDHE-RSA-AES128-GCM-SHA256",
        ),
        (
            "RSA PKCS#1",
            &rsa,
            pki.traditional_key(&rsa, Key::Rsa),
            "ECDHE-RSA-CHACHA20-POLY1305",
        ),
    ];
    for (what, cert, key, tls12) in cases {
        let (mut daemon, addr, _) = spawn("keys", &cert.pem, &key, "");
        let expected = certs::fingerprint(&cert.pem);
        for args in [
            vec!["--version", "1.3"],
            vec!["--version", "1.2", "--ciphers", tls12],
        ] {
            let input = lines(what, 100);
            let (replies, stderr) = python_batch(addr, &pki.ca, &args, &input);
            assert!(replies == upper(&input), "{what} {args:?}");
            assert_eq!(
                reported(&stderr, "cert_sha256"),
                Some(expected.clone()),
                "{what}"
            );
            if args.len() > 2 {
                assert_eq!(
                    reported(&stderr, "cipher").as_deref(),
                    Some(tls12),
                    "{what}"
                );
            }
        }
        // And an RSA suite through `s_client`, for the RSA certificate.
        if tls12.contains("RSA") {
            let mut client = s_client(
                addr,
                &pki.ca,
                &["-tls1_2", "-cipher", "ECDHE-RSA-AES256-GCM-SHA384"],
            );
            expect_echo(&mut client, &lines(what, 1000));
            let done = client.finish();
            assert!(
                done.stderr
                    .contains("Ciphersuite: ECDHE-RSA-AES256-GCM-SHA384"),
                "{}",
                done.stderr
            );
        }
        daemon.stop();
    }
}

/// A second TLS stack, GnuTLS: `gnutls-cli` verifies the certificate and
/// exchanges lines over TLS 1.3 and over TLS 1.2.
#[test]
fn gnutls_cli_exchanges_lines() {
    let pki = Pki::new("gnutls");
    let cert = pki.server("server", Key::Ec, "/CN=localhost/O=ecdsa");
    let (mut daemon, addr, _) = spawn("gnutls", &cert.pem, &cert.key, "");
    for (priority, version) in [
        ("NORMAL:-VERS-ALL:+VERS-TLS1.3", "TLS1.3"),
        ("NORMAL:-VERS-ALL:+VERS-TLS1.2", "TLS1.2"),
    ] {
        let log = pki.dir.join(&format!("gnutls-{version}.log"));
        let mut client = gnutls_cli(addr, &pki.ca, &log, &[&format!("--priority={priority}")]);
        expect_echo(&mut client, b"hello from gnutls\n");
        expect_echo(&mut client, &lines(version, 1000));
        let done = client.finish();
        assert!(
            done.stdout.is_empty(),
            "{:?}",
            String::from_utf8_lossy(&done.stdout)
        );
        let info = std::fs::read_to_string(&log).unwrap();
        assert!(
            info.contains("The certificate is trusted")
                && info.contains(&format!("({version}-X.509)")),
            "{info}"
        );
    }
    expect_logged(&daemon, &["TLS handshake done", "TLSv1.2"]);
    daemon.stop();
}

/// `oneshotd_tls_handshakes_total{result="ok"}` counts each handshake,
/// `oneshotd_tls_connections_open` the connections held, back to 0 when
/// they close; the plain listener is not counted.
#[test]
fn metrics_count_handshakes_and_open_tls_connections() {
    let pki = Pki::new("metrics");
    let cert = pki.server("server", Key::Ec, "/CN=localhost/O=ecdsa");
    let (mut daemon, addr, metrics) = spawn("tls-metrics", &cert.pem, &cert.key, "");
    let m = scrape(metrics);
    assert_eq!(
        (handshakes(&m, "ok"), m["oneshotd_tls_connections_open"]),
        (0, 0)
    );
    let mut held: Vec<Tool> = (0..3).map(|_| python(addr, &pki.ca, &[])).collect();
    for client in &mut held {
        expect_echo(client, b"held\n");
    }
    let mut plain = connect(daemon.addr());
    assert_eq!(roundtrip(&mut plain, "plain\n"), "PLAIN\n");
    let m = scrape(metrics);
    assert_eq!(handshakes(&m, "ok"), 3);
    assert_eq!(m["oneshotd_tls_connections_open"], 3);
    assert_eq!(m["oneshotd_connections_open{service=\"upper\"}"], 4);
    for client in held {
        assert!(client.finish().status.success());
    }
    daemon.wait_until("no TLS connection open", SOON, |_| {
        scrape(metrics)["oneshotd_tls_connections_open"] == 0
    });
    let m = scrape(metrics);
    assert_eq!((handshakes(&m, "ok"), handshakes(&m, "failed")), (3, 0));
    drop(plain);
    daemon.stop();
}

/// A client that ends with `close_notify` gets every reply, then the
/// server's own `close_notify` (RFC 8446 6.1: each party MUST send one
/// before closing its write side), so it can tell the end from a cut.
#[test]
fn a_clients_close_notify_is_answered_with_the_servers() {
    let pki = Pki::new("close-notify");
    let cert = pki.server("server", Key::Ec, "/CN=localhost/O=ecdsa");
    let (mut daemon, addr, _) = spawn("close-notify", &cert.pem, &cert.key, "");
    for version in ["1.3", "1.2"] {
        let input = lines(version, 10);
        let (replies, stderr) = python_batch(addr, &pki.ca, &["--version", version], &input);
        assert!(replies == upper(&input), "TLS {version}");
        assert_eq!(
            reported(&stderr, "closed").as_deref(),
            Some("close_notify"),
            "TLS {version}"
        );
    }
    daemon.stop();
}

/// A request that does not complete in time gets its error reply over
/// TLS like any other reply (encrypted, then `close_notify`), never in
/// clear inside the TLS stream.
#[test]
fn a_request_timeout_is_answered_over_tls() {
    let pki = Pki::new("tls-request-timeout");
    let cert = pki.server("server", Key::Ec, "/CN=localhost/O=ecdsa");
    let (mut daemon, addr, _) = spawn(
        "tls-request-timeout",
        &cert.pem,
        &cert.key,
        "request_timeout_ms = 300",
    );
    for version in ["1.3", "1.2"] {
        let mut client = python(addr, &pki.ca, &["--version", version]);
        expect_echo(&mut client, b"first\n");
        client.send(b"never finished");
        assert_eq!(client.read(20), b"ERR request timeout\n", "TLS {version}");
        let done = client.finish();
        assert!(done.status.success(), "TLS {version}: {}", done.stderr);
        assert_eq!(
            reported(&done.stderr, "closed").as_deref(),
            Some("close_notify")
        );
    }
    daemon.stop();
}
