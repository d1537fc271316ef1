//! Cooperating with load balancers: the agent (HAProxy's `agent-check`),
//! the readiness check (`GET /ready`) and the drain grace.

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::util::*;

/// A daemon with a metrics endpoint and an agent, on ephemeral ports.
fn spawn(name: &str, config: &str) -> (Daemon, SocketAddr, SocketAddr, SocketAddr) {
    let (daemon, line, metrics) = spawn_with_metrics(
        name,
        &format!("agent_listen = [\"127.0.0.1:0\"]\nmax_connections = 500\n{config}"),
    );
    let agent = daemon
        .stderr()
        .lines()
        .filter(|l| l.contains("load-balancer agent"))
        .filter_map(|l| l.split("address=").nth(1))
        .find_map(|a| a.trim().parse().ok())
        .expect("the agent's address in the log");
    (daemon, line, metrics, agent)
}

/// What the agent says to one check.
fn agent_says(agent: SocketAddr) -> String {
    String::from_utf8(read_to_end(&connect(agent))).unwrap()
}

/// `GET /ready`: status and body.
fn ready(metrics: SocketAddr) -> (u16, String) {
    let response = exchange(metrics, b"GET /ready HTTP/1.1\r\nHost: balancer\r\n\r\n");
    (response.status, response.body)
}

#[test]
fn the_agent_and_ready_say_ready_while_serving_and_drain_in_the_grace() {
    let (mut daemon, line, metrics, agent) = spawn("balancer-grace", "drain_grace_ms = 1500");
    assert_eq!(agent_says(agent), "up ready maxconn:500\n");
    assert_eq!(ready(metrics), (200, "ready\n".to_owned()));
    // A reload's max_connections is what the agent says next.
    daemon.set_config("max_connections", "700");
    let from = daemon.notify.seen.len();
    daemon.signal(Signal::SIGHUP);
    daemon.expect_notify_from(from, |l| l == "READY=1");
    assert_eq!(agent_says(agent), "up ready maxconn:700\n");
    let mut before = connect(line);
    assert_eq!(roundtrip(&mut before, "before\n"), "BEFORE\n");

    let from = daemon.notify.seen.len();
    let signalled = Instant::now();
    daemon.signal(Signal::SIGTERM);
    daemon.expect_notify_from(from, |l| l == "STOPPING=1");
    daemon.expect_notify_from(from, |l| l.starts_with("STATUS=draining"));
    assert_eq!(agent_says(agent), "drain\n");
    assert_eq!(ready(metrics), (503, "draining\n".to_owned()));
    // Still accepting and serving, old connections and new.
    let mut during = connect(line);
    assert_eq!(roundtrip(&mut during, "during\n"), "DURING\n");
    assert_eq!(roundtrip(&mut before, "still\n"), "STILL\n");
    assert!(
        signalled.elapsed() < Duration::from_millis(1500),
        "the checks took the whole grace"
    );

    // After the grace: the drain closes them, and new ones are not served.
    during.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(read_to_end(&during).is_empty());
    let status = daemon.wait_exit(SOON);
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0));
    assert!(
        took >= Duration::from_millis(1500),
        "exited {took:?} after SIGTERM"
    );
    eprintln!("grace of 1.5 s: exited {took:?} after SIGTERM");
    let mut after = Vec::new();
    if let Ok(late) = std::net::TcpStream::connect(line) {
        let _ = (&late).write_all(b"late\n");
        let _ = std::io::Read::read_to_end(&mut &late, &mut after);
    }
    assert!(after.is_empty(), "a connection after the grace was served");
}

#[test]
fn a_second_sigterm_ends_a_long_grace_at_once() {
    let (mut daemon, line, _, agent) = spawn("balancer-second", "drain_grace_ms = 600000");
    let mut client = connect(line);
    assert_eq!(roundtrip(&mut client, "hi\n"), "HI\n");
    let from = daemon.notify.seen.len();
    daemon.signal(Signal::SIGTERM);
    daemon.expect_notify_from(from, |l| l == "STOPPING=1");
    assert_eq!(agent_says(agent), "drain\n");
    assert_eq!(roundtrip(&mut client, "in the grace\n"), "IN THE GRACE\n");
    let second = Instant::now();
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(SOON).code(), Some(0));
    let took = second.elapsed();
    eprintln!("second SIGTERM: exited {took:?} after it");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(read_to_end(&client).is_empty(), "closed by the drain");
}

#[test]
fn without_a_grace_sigterm_stops_accepting_at_once() {
    let (mut daemon, line, _, agent) = spawn("balancer-nograce", "");
    assert_eq!(agent_says(agent), "up ready maxconn:500\n");
    let mut client = connect(line);
    assert_eq!(roundtrip(&mut client, "hi\n"), "HI\n");
    let signalled = Instant::now();
    let from = daemon.notify.seen.len();
    daemon.signal(Signal::SIGTERM);
    daemon.expect_notify_from(from, |l| l == "STOPPING=1");
    assert_eq!(daemon.wait_exit(SOON).code(), Some(0));
    let took = signalled.elapsed();
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert!(read_to_end(&client).is_empty());
}

/// The agent takes no PROXY header, even from a listed balancer: HAProxy's
/// agent checks carry none.
#[test]
fn the_agent_answers_a_listed_balancer_without_a_header() {
    let (mut daemon, _, _, agent) = spawn(
        "balancer-agent-proxy",
        "proxy_protocol_from = [\"127.0.0.1/32\"]",
    );
    assert_eq!(agent_says(agent), "up ready maxconn:500\n");
    daemon.stop();
}
