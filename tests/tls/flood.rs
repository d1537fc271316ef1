//! Hostile TLS handshakes against the memory budget: a flood of clients
//! that open a TLS connection and send half a ClientHello is counted
//! against `max_buffered_bytes`, holds the process's memory within it,
//! and leaves newcomers (plain and TLS) served; each is closed at its
//! handshake deadline and counted. The flood is hand-made bytes (no client
//! library sends half a ClientHello); the TLS newcomer is a rustls client,
//! the library the daemon uses.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::certs::{Key, Pki};
use super::spawn;
use crate::util::*;

/// The first bytes of a ClientHello: a handshake record announcing 512
/// bytes, of which only these come. A TLS server can only wait for more.
fn half_a_client_hello() -> Vec<u8> {
    let mut bytes = vec![
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    bytes.resize(200, 0x2a);
    bytes
}

#[test]
fn a_flood_of_half_handshakes_stays_within_the_budget_and_newcomers_are_served() {
    const FLOOD: usize = 10_000;
    const BUDGET_MIB: u64 = 128;
    let pki = Pki::new("tls-flood");
    let cert = pki.server("server", Key::Ec, "/CN=localhost/O=flood");
    let (mut daemon, tls, metrics) = spawn(
        "tls-flood",
        &cert.pem,
        &cert.key,
        &format!(
            "workers = 2\nmax_connections = {}\nmax_buffered_bytes = {}\n\
             tls_handshake_timeout_ms = 60000\nlog_level = \"info\"",
            FLOOD + 100,
            BUDGET_MIB << 20,
        ),
    );
    let addr = daemon.addr();
    let client = client_config(&pki.ca);
    assert_eq!(tls_roundtrip(tls, &client, "before\n"), "BEFORE\n");
    let baseline = daemon.rss_kib();

    let started = Instant::now();
    let hello = half_a_client_hello();
    let flood: Vec<TcpStream> = (0..FLOOD)
        .map(|_| {
            let mut socket = TcpStream::connect(tls).unwrap();
            socket.write_all(&hello).unwrap();
            socket
        })
        .collect();
    eprintln!("flood connected in {:?}", started.elapsed());
    // Until every half handshake has been read and counted.
    daemon.wait_until("the flood to be counted", Duration::from_secs(60), |_| {
        let gauges = scrape(metrics);
        gauges["oneshotd_tls_connections_open"] >= FLOOD as u64
            && gauges["oneshotd_buffered_bytes"] >= (FLOOD * hello.len()) as u64
    });
    let gauges = scrape(metrics);
    let growth_kib = daemon.rss_kib().saturating_sub(baseline);
    eprintln!(
        "{FLOOD} half handshakes in {:?}: {} MiB counted against a {BUDGET_MIB} MiB budget, \
         RSS +{} MiB",
        started.elapsed(),
        gauges["oneshotd_buffered_bytes"] >> 20,
        growth_kib >> 10
    );
    assert!(
        growth_kib < BUDGET_MIB << 10,
        "RSS grew by {growth_kib} KiB against a {BUDGET_MIB} MiB budget"
    );

    // Newcomers, plain and TLS, are served meanwhile.
    let asked = Instant::now();
    let mut plain = connect(addr);
    assert_eq!(
        roundtrip(&mut plain, "plain newcomer\n"),
        "PLAIN NEWCOMER\n"
    );
    assert_eq!(
        tls_roundtrip(tls, &client, "tls newcomer\n"),
        "TLS NEWCOMER\n"
    );
    let waited = asked.elapsed();
    eprintln!("newcomers answered in {waited:?} during the flood");
    assert!(waited < Duration::from_secs(2), "{waited:?}");

    // Each is closed at its deadline (a reload shortens it for the
    // handshakes under way too), counted, and gives its share back.
    daemon.set_config("tls_handshake_timeout_ms", "100");
    let from = daemon.notify.seen.len();
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    daemon.expect_notify_from(from, |l| l == "READY=1");
    daemon.wait_until("the flood's handshakes to time out", SOON, |_| {
        scrape(metrics)["oneshotd_tls_handshakes_total{result=\"timeout\"}"] == FLOOD as u64
    });
    daemon.wait_until("the budget to be given back", SOON, |_| {
        scrape(metrics)["oneshotd_buffered_bytes"] == 0
    });
    let gauges = scrape(metrics);
    assert_eq!(gauges["oneshotd_tls_handshakes_total{result=\"ok\"}"], 2);
    assert_eq!(
        gauges["oneshotd_tls_handshakes_total{result=\"failed\"}"],
        0
    );
    drop(flood);
    daemon.stop();
}

/// A TLS client that trusts `ca` (a PEM file).
pub fn client_config(ca: &Path) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Connects over TLS, sends `request`, reads until as many lines came back.
pub fn tls_roundtrip(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    request: &str,
) -> String {
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let connection = rustls::ClientConnection::new(Arc::clone(config), name).unwrap();
    let socket = TcpStream::connect(addr).unwrap();
    socket.set_read_timeout(Some(SOON)).unwrap();
    let mut stream = rustls::StreamOwned::new(connection, socket);
    stream.write_all(request.as_bytes()).unwrap();
    let lines = request.matches('\n').count();
    let mut reply = Vec::new();
    let mut chunk = [0u8; 4096];
    while reply.iter().filter(|&&b| b == b'\n').count() < lines {
        let n = stream.read(&mut chunk).expect("TLS reply");
        assert!(n > 0, "closed after {reply:?}");
        reply.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8(reply).unwrap()
}
