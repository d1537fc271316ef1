//! The metrics endpoint, against the real binary: exact counts after a
//! known workload, and an answer for every bad request.

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::util::*;

#[test]
fn every_counter_is_exact_after_a_known_workload() {
    let (mut daemon, line, metrics) = spawn_with_metrics(
        "metrics-exact",
        "workers = 2\nmax_connections = 10\nmax_line_bytes = 64\nidle_timeout_ms = 1500",
    );
    let mut expected = zero(2);
    expect_settled(metrics, &expected);

    // 10 connections x 100 requests, all held open.
    let mut clients: Vec<TcpStream> = (0..10).map(|_| connect(line)).collect();
    let mut bytes = 0;
    for (i, client) in clients.iter_mut().enumerate() {
        let batch: String = (0..100).map(|j| format!("conn {i} line {j}\n")).collect();
        bytes += batch.len() as u64;
        client.write_all(batch.as_bytes()).unwrap();
        let mut reader = std::io::BufReader::new(&*client);
        let replies = read_lines(&mut reader, 100).concat();
        assert_eq!(replies, batch.to_uppercase());
    }
    // The eleventh is refused: max_connections are held.
    let refused = connect(line);
    assert_eq!(read_to_end(&refused), b"", "refused at once");
    // Every held client half-closes: closed as client EOF.
    for client in &clients {
        client.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_to_end(client), b"");
    }
    drop(clients);
    // A line too long gets its error, then is closed.
    let long = format!("{}\n", "a".repeat(100));
    let mut too_long = connect(line);
    too_long.write_all(long.as_bytes()).unwrap();
    assert_eq!(read_to_end(&too_long), b"ERR line too long\n");
    drop(too_long);
    // One says nothing and is closed when its idle time is up.
    let idle = connect(line);
    assert_eq!(read_to_end(&idle), b"");

    set(&mut expected, "oneshotd_connections_accepted_total{u}", 12);
    set(
        &mut expected,
        "oneshotd_connections_refused_total{u,reason=\"max_connections\"}",
        1,
    );
    set(
        &mut expected,
        "oneshotd_connections_closed_total{u,reason=\"client_eof\"}",
        10,
    );
    set(
        &mut expected,
        "oneshotd_connections_closed_total{u,reason=\"line_too_long\"}",
        1,
    );
    set(
        &mut expected,
        "oneshotd_connections_closed_total{u,reason=\"idle\"}",
        1,
    );
    set(&mut expected, "oneshotd_requests_total{u}", 1000);
    set(
        &mut expected,
        "oneshotd_received_bytes_total{u}",
        bytes + long.len() as u64,
    );
    set(&mut expected, "oneshotd_sent_bytes_total{u}", bytes + 18);
    expect_settled(metrics, &expected);

    // One reload applied, one refused.
    let from = daemon.notify.seen.len();
    daemon.signal(Signal::SIGHUP);
    daemon.expect_notify_from(from, |l| l == "READY=1");
    std::fs::write(&daemon.config, "workers = \"many\"\n").unwrap();
    let from = daemon.notify.seen.len();
    daemon.signal(Signal::SIGHUP);
    daemon.expect_notify_from(from, |l| l.contains("reload failed"));
    set(&mut expected, "oneshotd_reloads_total{result=\"ok\"}", 1);
    set(
        &mut expected,
        "oneshotd_reloads_total{result=\"failed\"}",
        1,
    );
    let last = expect_settled(metrics, &expected);

    // The endpoint counts itself too: every scrape so far was accepted,
    // and the ones before this were answered (the last of them may be
    // counted a moment after its client read the answer).
    let scrapes = last["oneshotd_connections_accepted_total{service=\"metrics\"}"];
    let answered = last["oneshotd_requests_total{service=\"metrics\"}"];
    assert!(scrapes >= 5, "{scrapes}");
    assert!(
        (scrapes - 2..scrapes).contains(&answered),
        "{answered} of {scrapes}"
    );
    daemon.stop();
}

#[test]
fn every_bad_request_gets_its_answer_and_is_closed() {
    let (mut daemon, _, metrics) = spawn_with_metrics("metrics-bad", "request_timeout_ms = 300");
    let mut huge = b"GET /metrics HTTP/1.1\r\nX-Padding: ".to_vec();
    huge.resize(9 * 1024, b'p');
    huge.extend_from_slice(b"\r\n\r\n");
    let cases: &[(&[u8], u16)] = &[
        (b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405),
        (b"DELETE /metrics HTTP/1.1\r\n\r\n", 405),
        (b"GET / HTTP/1.1\r\n\r\n", 404),
        (b"GET /metrics/x HTTP/1.1\r\n\r\n", 404),
        (b"hello\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\nno colon\r\n\r\n", 400),
        (&huge, 431),
        (b"GET /metrics?name[]=x HTTP/1.0\r\n\r\n", 200),
    ];
    for (request, status) in cases {
        let response = exchange(metrics, request);
        let shown = String::from_utf8_lossy(&request[..request.len().min(40)]);
        assert_eq!(response.status, *status, "{shown}: {}", response.body);
        assert_eq!(
            response.headers["content-length"].parse::<usize>().unwrap(),
            response.body.len(),
            "{shown}"
        );
        assert!(response.headers.contains_key("content-type"), "{shown}");
        if *status == 405 {
            assert_eq!(response.headers["allow"], "GET");
        }
    }
    // Half a request, then silence: the request timeout's answer.
    let started = Instant::now();
    let response = exchange(metrics, b"GET /metrics HTTP/1.1\r\nHost: slow\r\n");
    assert_eq!(response.status, 408, "{}", response.body);
    assert!(started.elapsed() >= Duration::from_millis(300));
    // Half a request, then EOF: malformed.
    let mut cut = connect(metrics);
    cut.write_all(b"GET /metr").unwrap();
    cut.shutdown(Shutdown::Write).unwrap();
    assert_eq!(parse_response(&read_to_end(&cut)).status, 400);

    let m = scrape(metrics);
    let closed = |reason: &str| {
        m[&format!("oneshotd_connections_closed_total{{service=\"metrics\",reason=\"{reason}\"}}")]
    };
    assert_eq!(closed("request_timeout"), 1);
    assert!(closed("replied") >= cases.len() as u64, "{m:?}");
    daemon.stop();
}

/// Scrapes have a budget of their own: a daemon holding `max_connections`
/// clients still answers them, and scrapers holding every scrape slot
/// take nothing from the clients.
#[test]
fn a_full_daemon_still_answers_its_scrape() {
    let (mut daemon, line, metrics) = spawn_with_metrics("metrics-full", "max_connections = 2");
    let mut clients: Vec<TcpStream> = (0..2).map(|_| connect(line)).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(
            roundtrip(client, &format!("held {i}\n")),
            format!("HELD {i}\n")
        );
    }
    let refused = connect(line);
    assert_eq!(read_to_end(&refused), b"", "the third client is refused");

    let mut expected = zero(2);
    set(&mut expected, "oneshotd_connections_open{u}", 2);
    set(&mut expected, "oneshotd_connections_accepted_total{u}", 2);
    set(
        &mut expected,
        "oneshotd_connections_refused_total{u,reason=\"max_connections\"}",
        1,
    );
    set(&mut expected, "oneshotd_requests_total{u}", 2);
    set(&mut expected, "oneshotd_received_bytes_total{u}", 14);
    set(&mut expected, "oneshotd_sent_bytes_total{u}", 14);
    expect_settled(metrics, &expected);

    // Every scrape slot held by a scraper that says nothing. Connections
    // are accepted in the order they arrived, so the one after them is the
    // one refused.
    let scrapers: Vec<TcpStream> = (0..oneshotd::metrics::MAX_SCRAPES)
        .map(|_| connect(metrics))
        .collect();
    let over = connect(metrics);
    assert_eq!(read_to_end(&over), b"", "one scrape too many is refused");
    // The clients' budget is untouched: one leaves, a new one is served.
    drop(clients.pop());
    let deadline = Instant::now() + SOON;
    let mut newcomer = loop {
        let mut client = connect(line);
        client.set_read_timeout(Some(SOON)).unwrap();
        if client.write_all(b"new\n").is_ok() {
            let mut reply = [0u8; 4];
            if std::io::Read::read_exact(&mut client, &mut reply).is_ok() {
                assert_eq!(&reply, b"NEW\n");
                break client;
            }
        }
        // Refused: the one that left was not counted out yet.
        assert!(Instant::now() < deadline, "no room for a new client");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(roundtrip(&mut newcomer, "still\n"), "STILL\n");
    for scraper in &scrapers {
        scraper.set_nonblocking(true).unwrap();
        let mut byte = [0u8; 1];
        let read = std::io::Read::read(&mut &*scraper, &mut byte);
        assert!(
            matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "every held scraper is still open: {read:?}"
        );
    }
    drop(scrapers);
    let deadline = Instant::now() + SOON;
    let mut refused_meanwhile = 0;
    let refused_scrapes = loop {
        // Retried (and refused) until the dropped scrapers are counted out.
        let mut client = connect(metrics);
        client
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
            .unwrap();
        // A refused connection may be reset: it was closed with our
        // request unread.
        let mut raw = Vec::new();
        if let Err(e) = std::io::Read::read_to_end(&mut client, &mut raw) {
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
        }
        if !raw.is_empty() {
            let response = parse_response(&raw);
            assert_eq!(response.status, 200);
            break samples(&response.body)
                ["oneshotd_connections_refused_total{service=\"metrics\",reason=\"max_connections\"}"];
        }
        refused_meanwhile += 1;
        assert!(
            Instant::now() < deadline,
            "no scrape after the scrapers left"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(refused_scrapes, 1 + refused_meanwhile);
    daemon.stop();
}
