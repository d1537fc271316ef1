//! The metrics endpoint against hostile clients, which must disturb
//! nothing else; its output checked by `promtool`; its socket-activated fd.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::util::*;

/// Connects and runs `send` on the stream while another thread reads the
/// whole answer (a server may answer before the client is done sending);
/// returns the answer. `send` is given the reader, to stop once it is done.
fn answer_while_sending(
    addr: SocketAddr,
    send: impl FnOnce(&mut TcpStream, &JoinHandle<Vec<u8>>),
) -> Response {
    let mut client = connect(addr);
    let mut reader = client.try_clone().unwrap();
    let answer = std::thread::spawn(move || {
        let mut raw = Vec::new();
        let _ = reader.read_to_end(&mut raw);
        raw
    });
    send(&mut client, &answer);
    parse_response(&answer.join().unwrap())
}

/// Sends the start of a request one byte at a time, slower than the
/// request timeout allows; returns the response.
fn slowloris(addr: SocketAddr) -> Response {
    answer_while_sending(addr, |client, answer| {
        for byte in b"GET /metrics HTTP/1.1\r\nX-Slow: "
            .iter()
            .cycle()
            .take(200)
        {
            if client.write_all(&[*byte]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
            if answer.is_finished() {
                break;
            }
        }
    })
}

/// 1 MiB of garbage, written while the answer is read.
fn garbage(addr: SocketAddr) -> Response {
    answer_while_sending(addr, |client, _| {
        let junk: Vec<u8> = (0..1 << 20)
            .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        // The server may close before it has read it all: a reset is fine.
        let _ = client.write_all(&junk);
        let _ = client.shutdown(Shutdown::Write);
    })
}

#[test]
fn hostile_clients_on_the_metrics_port_disturb_nothing_else() {
    let (mut daemon, line, metrics) =
        spawn_with_metrics("metrics-hostile", "workers = 2\nrequest_timeout_ms = 500");
    let mut client = connect(line);
    assert_eq!(roundtrip(&mut client, "before\n"), "BEFORE\n");
    let mut expected = zero(2);
    set(&mut expected, "oneshotd_connections_accepted_total{u}", 1);
    set(&mut expected, "oneshotd_connections_open{u}", 1);
    set(&mut expected, "oneshotd_requests_total{u}", 1);
    set(&mut expected, "oneshotd_received_bytes_total{u}", 7);
    set(&mut expected, "oneshotd_sent_bytes_total{u}", 7);
    let before = expect_settled(metrics, &expected);

    let slow = std::thread::spawn(move || slowloris(metrics));
    let junk = std::thread::spawn(move || garbage(metrics));
    // The line service is answered all the while.
    let mut rounds = 0u64;
    while !(slow.is_finished() && junk.is_finished()) || rounds < 10 {
        assert_eq!(roundtrip(&mut client, "during\n"), "DURING\n");
        rounds += 1;
    }
    let slow = slow.join().unwrap();
    let junk = junk.join().unwrap();
    assert_eq!(slow.status, 408, "{}", slow.body);
    assert!([400, 431].contains(&junk.status), "{}", junk.status);

    set(&mut expected, "oneshotd_requests_total{u}", 1 + rounds);
    set(
        &mut expected,
        "oneshotd_received_bytes_total{u}",
        7 + 7 * rounds,
    );
    set(
        &mut expected,
        "oneshotd_sent_bytes_total{u}",
        7 + 7 * rounds,
    );
    let after = expect_settled(metrics, &expected);
    // On the metrics side, the two hostile connections count as what they
    // were: one more timed out, one more answered, nothing else.
    let m = |snapshot: &BTreeMap<String, u64>, reason: &str| {
        snapshot[&format!(
            "oneshotd_connections_closed_total{{service=\"metrics\",reason=\"{reason}\"}}"
        )]
    };
    assert_eq!(
        m(&after, "request_timeout"),
        m(&before, "request_timeout") + 1
    );
    for reason in ["client_eof", "idle", "error", "reset", "drain", "handover"] {
        assert_eq!(m(&after, reason), m(&before, reason), "{reason}");
    }
    daemon.stop();
}

#[test]
fn the_output_passes_promtool() {
    let (mut daemon, line, metrics) = spawn_with_metrics("metrics-promtool", "");
    let mut client = connect(line);
    assert_eq!(roundtrip(&mut client, "x\n"), "X\n");
    let response = exchange(metrics, b"GET /metrics HTTP/1.1\r\n\r\n");
    // Every family has HELP and TYPE, and is named by the conventions.
    let families: Vec<&str> = response
        .body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .collect();
    assert!(families.len() >= 12, "{families:?}");
    for family in &families {
        let (name, kind) = family.split_once(' ').unwrap();
        assert!(name.starts_with("oneshotd_"), "{name}");
        assert!(response.body.contains(&format!("# HELP {name} ")), "{name}");
        assert_eq!(kind == "counter", name.ends_with("_total"), "{family}");
    }
    let promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let Ok(mut promtool) = promtool else {
        // Optional tool (Debian: prometheus); the checks above still ran.
        eprintln!("promtool not installed: `promtool check metrics` skipped");
        daemon.stop();
        return;
    };
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(response.body.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    daemon.stop();
}

#[test]
fn a_socket_activated_fd_named_metrics_serves_the_metrics() {
    let line = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (line_addr, metrics_addr) = (line.local_addr().unwrap(), metrics.local_addr().unwrap());
    use std::os::fd::AsRawFd;
    let ignored = free_port();
    let mut daemon = Daemon::builder("metrics-activated")
        .config(&format!("metrics_listen = [\"127.0.0.1:{ignored}\"]"))
        .inherit_named(metrics.as_raw_fd(), "metrics")
        .inherit_named(line.as_raw_fd(), "oneshotd.socket")
        .spawn();
    let mut client = connect(line_addr);
    assert_eq!(roundtrip(&mut client, "line\n"), "LINE\n");
    let m = scrape(metrics_addr);
    assert_eq!(m["oneshotd_requests_total{service=\"upper\"}"], 1);
    // And the line listener does not speak HTTP.
    let mut http = connect(line_addr);
    assert_eq!(
        roundtrip(&mut http, "GET /metrics HTTP/1.1\r\n"),
        "GET /METRICS HTTP/1.1\r\n"
    );
    assert!(
        TcpStream::connect(("127.0.0.1", ignored)).is_err(),
        "metrics_listen ignored"
    );
    daemon.stop();
}

/// Clients that connect to the metrics endpoint and say nothing hold its
/// slots only until the request timeout, counted from their accept: 64 of
/// them (all its slots) cannot blind it for the idle timeout.
#[test]
fn silent_connections_cannot_hold_the_metrics_endpoint() {
    let (mut daemon, _, metrics) = spawn_with_metrics("metrics-silent", "request_timeout_ms = 500");
    let silent: Vec<TcpStream> = (0..64).map(|_| connect(metrics)).collect();
    let started = std::time::Instant::now();
    // Answered once they are timed out: a refused scrape reads nothing.
    let deadline = started + SOON;
    let scraped = loop {
        let mut client = connect(metrics);
        let _ = client.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
        let mut raw = Vec::new();
        let _ = client.read_to_end(&mut raw);
        if raw.starts_with(b"HTTP/1.1 200") {
            break started.elapsed();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the endpoint stayed full of silent clients"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!("metrics endpoint answered again {scraped:?} after 64 silent clients took it");
    for client in &silent {
        let response = parse_response(&read_to_end(client));
        assert_eq!(response.status, 408, "{}", response.body);
    }
    daemon.stop();
}
