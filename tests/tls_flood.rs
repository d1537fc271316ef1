//! Hostile TLS handshakes against the memory budget: a flood of clients
//! that open a TLS connection and send half a ClientHello is counted
//! against `max_buffered_bytes`, holds the process's memory within it,
//! and leaves newcomers (plain and TLS) served; each is closed at its
//! handshake deadline and counted.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

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
    let dir = TestDir::new("tls-flood-certs");
    let (cert, key) = self_signed_certificate(&dir);
    let (mut daemon, addr, metrics) = spawn_with_metrics(
        "tls-flood",
        &format!(
            "workers = 2\nmax_connections = {}\nmax_buffered_bytes = {}\n\
             tls_listen = [\"127.0.0.1:0\"]\ntls_certificate = \"{}\"\n\
             tls_private_key = \"{}\"\ntls_handshake_timeout_ms = 60000\nlog_level = \"info\"",
            FLOOD + 100,
            BUDGET_MIB << 20,
            cert.display(),
            key.display()
        ),
    );
    let tls = tls_addr(&daemon);
    let client = client_config(&cert);
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
