//! Connection limits: refused connections are closed at once, the accept
//! loop never spins, and service resumes when room is made.

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use crate::util::*;

/// A connection that gets closed without a reply.
fn expect_refused(stream: &TcpStream) {
    expect_refused_after(stream, b"refused?\n");
}

#[test]
fn max_connections_closes_the_excess_at_once_without_spinning() {
    let mut daemon = Daemon::builder("maxconn")
        .config("max_connections = 10")
        .spawn();
    let addr = daemon.addr();
    let mut held: Vec<TcpStream> = (0..10).map(|_| connect(addr)).collect();
    for (i, client) in held.iter_mut().enumerate() {
        assert_eq!(
            roundtrip(client, &format!("held {i}\n")),
            format!("HELD {i}\n")
        );
    }
    let refused: Vec<TcpStream> = (0..10).map(|_| connect(addr)).collect();
    for client in &refused {
        expect_refused(client);
    }
    let cpu = daemon.cpu_during(|| std::thread::sleep(Duration::from_secs(2)));
    eprintln!("max_connections: {cpu:?} CPU over 2 s while full");
    assert!(cpu < Duration::from_millis(200), "{cpu:?}");
    assert!(daemon.stderr().contains("connection limit reached"));

    // Room again once a client leaves.
    held.pop().unwrap().shutdown(Shutdown::Both).unwrap();
    daemon.expect_notify_from(0, |l| l.contains("connections=9"));
    let mut fresh = connect(addr);
    assert_eq!(roundtrip(&mut fresh, "room\n"), "ROOM\n");
    for client in &mut held {
        assert_eq!(roundtrip(client, "still\n"), "STILL\n");
    }
    daemon.stop();
}

#[test]
fn out_of_descriptors_refuses_without_spinning_and_recovers() {
    let mut daemon = Daemon::builder("emfile")
        .wrap(&["prlimit", "--nofile=64:64", "--"])
        .spawn();
    let addr = daemon.addr();
    let clients: Vec<TcpStream> = (0..100).map(|_| connect(addr)).collect();
    // Each client either got a slot (and is answered) or was closed.
    let mut served = Vec::new();
    for (i, mut client) in clients.into_iter().enumerate() {
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut reply = String::new();
        let _ = client.write_all(format!("c{i}\n").as_bytes());
        let read = std::io::BufRead::read_line(&mut std::io::BufReader::new(&client), &mut reply);
        if let Err(e) = &read {
            // Closed at once (a reset, since we wrote): fine. Left hanging
            // in the backlog: not fine.
            assert_eq!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset,
                "client {i}: {e}"
            );
        }
        if reply == format!("C{i}\n") {
            served.push(client);
        } else {
            assert!(reply.is_empty(), "client {i} got {reply:?}");
        }
    }
    eprintln!("RLIMIT_NOFILE 64: {} of 100 clients served", served.len());
    assert!(served.len() >= 40 && served.len() < 64, "{}", served.len());
    let cpu = daemon.cpu_during(|| std::thread::sleep(Duration::from_secs(2)));
    eprintln!("out of fds: {cpu:?} CPU over 2 s");
    assert!(cpu < Duration::from_millis(200), "{cpu:?}");
    assert!(
        daemon.stderr().contains("out of file descriptors"),
        "{}",
        daemon.stderr()
    );
    assert_eq!(
        daemon.stderr().matches("out of file descriptors").count(),
        1,
        "rate-limited"
    );

    for client in &mut served {
        assert_eq!(roundtrip(client, "again\n"), "AGAIN\n");
    }
    // Free some descriptors; new clients are served.
    let keep = served.split_off(10);
    drop(served);
    // The daemon notices the closes asynchronously; retry briefly.
    let mut later = None;
    for _ in 0..100 {
        let mut client = connect(addr);
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let _ = client.write_all(b"later\n");
        let mut reply = String::new();
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(&client), &mut reply);
        if reply == "LATER\n" {
            later = Some(client);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(later.is_some(), "no new client served after others closed");
    drop(keep);
    daemon.stop();
}

#[test]
fn max_connections_per_client_counts_each_client_address() {
    let (mut daemon, addr, metrics) =
        spawn_with_metrics("per-client", "max_connections_per_client = 2");
    let first: std::net::Ipv4Addr = "127.0.0.2".parse().unwrap();
    let second: std::net::Ipv4Addr = "127.0.0.3".parse().unwrap();
    let mut held: Vec<TcpStream> = (0..2).map(|_| connect_from(first, addr)).collect();
    for client in &mut held {
        assert_eq!(roundtrip(client, "held\n"), "HELD\n");
    }
    expect_refused(&connect_from(first, addr));
    // Another client is its own.
    let mut other = connect_from(second, addr);
    assert_eq!(roundtrip(&mut other, "other\n"), "OTHER\n");
    let refused = |m: &std::collections::BTreeMap<String, u64>| {
        m["oneshotd_connections_refused_total{service=\"upper\",reason=\"per_client\"}"]
    };
    assert_eq!(refused(&scrape(metrics)), 1);
    assert!(
        daemon
            .stderr()
            .contains("a client's connection limit reached"),
        "{}",
        daemon.stderr()
    );

    // Room for the first client once one of its connections leaves.
    held.pop().unwrap().shutdown(Shutdown::Both).unwrap();
    daemon.wait_until("the close to be counted", SOON, |_| {
        scrape(metrics)["oneshotd_connections_open{service=\"upper\"}"] == 2
    });
    let mut again = connect_from(first, addr);
    assert_eq!(roundtrip(&mut again, "again\n"), "AGAIN\n");

    // A reload lifts the limit.
    daemon.set_config("max_connections_per_client", "0");
    let from = daemon.notify.seen.len();
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    daemon.expect_notify_from(from, |l| l == "READY=1");
    let mut more: Vec<TcpStream> = (0..3).map(|_| connect_from(first, addr)).collect();
    for client in &mut more {
        assert_eq!(roundtrip(client, "more\n"), "MORE\n");
    }
    assert_eq!(refused(&scrape(metrics)), 1);
    daemon.stop();
}
