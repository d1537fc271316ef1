//! Talking to the metrics endpoint: raw HTTP requests, scrapes parsed into
//! samples, and the line service's figures awaited until they settle.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{connect, read_to_end, Daemon, SOON};

/// The metrics endpoint's address, from the daemon's log.
pub fn metrics_addr(daemon: &Daemon) -> SocketAddr {
    daemon.logged_addr("metrics endpoint")
}

/// A daemon with a metrics endpoint on an ephemeral port.
pub fn spawn_with_metrics(name: &str, config: &str) -> (Daemon, SocketAddr, SocketAddr) {
    // `listen` explicitly: the builder adds its own only to a config
    // without the word, and `metrics_listen` contains it.
    let daemon = Daemon::builder(name)
        .config("listen = [\"127.0.0.1:0\"]\nmetrics_listen = [\"127.0.0.1:0\"]")
        .config(config)
        .spawn();
    let (line, metrics) = (daemon.addr(), metrics_addr(&daemon));
    (daemon, line, metrics)
}

/// A response: status code, headers (lowercase names), body.
pub struct Response {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

/// Sends `request` as it is, reads the response to EOF.
pub fn exchange(addr: SocketAddr, request: &[u8]) -> Response {
    let mut client = connect(addr);
    client.write_all(request).unwrap();
    parse_response(&read_to_end(&client))
}

pub fn parse_response(raw: &[u8]) -> Response {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {text:?}"));
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap();
    assert!(status.starts_with("HTTP/1.1 "), "{status}");
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect();
    Response {
        status: status[9..12].parse().unwrap(),
        headers,
        body: body.to_owned(),
    }
}

/// The samples of a scrape: `name{labels}` → value.
pub fn scrape(addr: SocketAddr) -> BTreeMap<String, u64> {
    let response = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(
        response.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert_eq!(
        response.headers["content-length"].parse::<usize>().unwrap(),
        response.body.len()
    );
    samples(&response.body)
}

pub fn samples(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (key, value) = l.rsplit_once(' ').unwrap();
            (key.to_owned(), value.parse().unwrap())
        })
        .collect()
}

/// The samples of the line service (`service="upper"`) and the daemon-wide
/// ones, which the test's own scrapes do not change.
pub fn upper_and_global(all: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    all.iter()
        .filter(|(k, _)| !k.contains("service=\"metrics\""))
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

/// Scrapes until the line service's figures are `expected` (a step's
/// counts land a moment after its reply), then once more to see that they
/// stay so; returns the last scrape.
pub fn expect_settled(addr: SocketAddr, expected: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    let deadline = Instant::now() + SOON;
    loop {
        let got = upper_and_global(&scrape(addr));
        if &got == expected {
            break;
        }
        if Instant::now() >= deadline {
            let diff: Vec<_> = expected
                .iter()
                .filter(|(k, v)| got.get(*k) != Some(v))
                .map(|(k, v)| format!("{k}: expected {v}, got {:?}", got.get(k)))
                .chain(
                    got.keys()
                        .filter(|k| !expected.contains_key(*k))
                        .map(|k| format!("unexpected {k}")),
                )
                .collect();
            panic!("metrics never settled:\n{}", diff.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let again = scrape(addr);
    assert_eq!(
        &upper_and_global(&again),
        expected,
        "changed after settling"
    );
    again
}

/// What a daemon that did nothing shows for the line service, with
/// `workers` workers.
pub fn zero(workers: u64) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    let u = "service=\"upper\"";
    m.insert("oneshotd_build_info{version=\"0.1.0\"}".to_owned(), 1);
    m.insert("oneshotd_workers".to_owned(), workers);
    m.insert("oneshotd_buffered_bytes".to_owned(), 0);
    m.insert("oneshotd_buffer_budget_bytes".to_owned(), 256 << 20);
    m.insert("oneshotd_connections_throttled".to_owned(), 0);
    for name in [
        "oneshotd_connections_open",
        "oneshotd_connections_accepted_total",
        "oneshotd_requests_total",
        "oneshotd_received_bytes_total",
        "oneshotd_sent_bytes_total",
    ] {
        m.insert(format!("{name}{{{u}}}"), 0);
    }
    for reason in ["max_connections", "out_of_descriptors", "per_client"] {
        m.insert(
            format!("oneshotd_connections_refused_total{{{u},reason=\"{reason}\"}}"),
            0,
        );
    }
    for reason in [
        "client_eof",
        "idle",
        "request_timeout",
        "line_too_long",
        "error",
        "reset",
        "drain",
        "handover",
        "proxy_header",
        "per_client",
        "tls",
    ] {
        m.insert(
            format!("oneshotd_connections_closed_total{{{u},reason=\"{reason}\"}}"),
            0,
        );
    }
    for result in ["ok", "failed"] {
        m.insert(format!("oneshotd_reloads_total{{result=\"{result}\"}}"), 0);
    }
    m.insert("oneshotd_connections_handed_over_total".to_owned(), 0);
    m.insert("oneshotd_connections_restored_total".to_owned(), 0);
    for result in ["ok", "failed", "timeout"] {
        m.insert(
            format!("oneshotd_tls_handshakes_total{{result=\"{result}\"}}"),
            0,
        );
    }
    m.insert("oneshotd_tls_connections_open".to_owned(), 0);
    m
}

pub fn set(m: &mut BTreeMap<String, u64>, key: &str, value: u64) {
    let key = key.replace("{u", "{service=\"upper\"");
    assert!(m.contains_key(&key), "no such sample {key}");
    m.insert(key, value);
}
