//! Notifications, reload and drain, with real signals.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::util::*;

#[test]
fn ready_and_status_report_the_pool() {
    let mut daemon = Daemon::builder("ready").config("workers = 3").spawn();
    daemon.expect_notify_from(0, |l| l == "STATUS=serving: workers=3 connections=0");
    let _client = connect(daemon.addr());
    daemon.expect_notify_from(0, |l| {
        l.starts_with("STATUS=") && l.contains("connections=1")
    });
    daemon.stop();
    daemon.expect_notify_from(0, |l| l == "STOPPING=1");
}

#[test]
fn reload_resizes_the_pool_under_load_without_dropping_anything() {
    let mut daemon = Daemon::builder("reload").config("workers = 2").spawn();
    let addr = daemon.addr();
    let base_threads = daemon.threads();

    // 50 clients keep talking through both reloads; each reply is checked
    // and any error (reset, timeout, wrong reply) fails the test.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..50)
        .map(|c| {
            let stop = Arc::clone(&stop);
            let answered = Arc::clone(&answered);
            std::thread::spawn(move || {
                let mut client = connect(addr);
                let mut r = 0;
                while !stop.load(Ordering::Relaxed) {
                    let reply = roundtrip(&mut client, &format!("client {c} request {r}\n"));
                    assert_eq!(reply, format!("CLIENT {c} REQUEST {r}\n"));
                    answered.fetch_add(1, Ordering::Relaxed);
                    r += 1;
                }
            })
        })
        .collect();

    for workers in [6, 1] {
        daemon.set_config("workers", &workers.to_string());
        let from = daemon.notify.seen.len();
        let before = answered.load(Ordering::Relaxed);
        daemon.signal(Signal::SIGHUP);
        daemon.expect_notify_from(from, |l| l == "RELOADING=1");
        daemon.expect_notify_from(from, |l| l.starts_with("MONOTONIC_USEC="));
        daemon.expect_notify_from(from, |l| l.contains(&format!("workers={workers} ")));
        daemon.expect_notify_from(from, |l| l == "READY=1");
        let expected = base_threads - 2 + workers;
        daemon.wait_until("thread count to follow the pool", SOON, |d| {
            d.threads() == expected
        });
        daemon.wait_until("clients to make progress", SOON, |_| {
            answered.load(Ordering::Relaxed) > before + 1000
        });
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().expect("a client saw an error");
    }
    eprintln!(
        "reload under load: {} requests answered",
        answered.load(Ordering::Relaxed)
    );
    let log = daemon.stderr();
    assert!(
        log.contains("reload applied")
            && log.contains("workers=2 -> 6")
            && log.contains("workers=6 -> 1"),
        "{log}"
    );
    daemon.stop();
}

#[test]
fn a_broken_reload_keeps_the_old_config() {
    let mut daemon = Daemon::builder("badreload").config("workers = 2").spawn();
    daemon.set_config("workers", "0");
    let from = daemon.notify.seen.len();
    daemon.signal(Signal::SIGHUP);
    let status = daemon.expect_notify_from(from, |l| l.contains("reload failed"));
    assert!(
        status.contains("oneshotd.toml: 1: workers = 0 is out of range"),
        "{status}"
    );
    assert!(status.contains("workers=2 "), "old figures stay: {status}");
    daemon.expect_notify_from(from, |l| l == "READY=1");
    let mut client = connect(daemon.addr());
    assert_eq!(roundtrip(&mut client, "still\n"), "STILL\n");
    assert!(
        daemon.stderr().contains("reload failed"),
        "{}",
        daemon.stderr()
    );
    daemon.stop();
}

#[test]
fn drain_answers_what_was_sent_and_exits_zero() {
    let mut daemon = Daemon::builder("drain").config("workers = 2").spawn();
    let client = connect(daemon.addr());
    // Pipeline 4 MiB without reading; whatever the kernel took must be answered.
    let line = "drain line abcdefghijklmnopqrstuvwxyz\n";
    let mut sent = 0usize;
    client.set_nonblocking(true).unwrap();
    let payload = line.repeat(1024);
    while sent < 4 << 20 {
        match (&client).write(payload.as_bytes()) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    client.set_nonblocking(false).unwrap();
    // What the daemon's kernel has acknowledged by now was "received before
    // the signal": all of it must be answered.
    let mut unacked = usize::MAX;
    daemon.wait_until("the client's send queue to settle", SOON, |_| {
        std::thread::sleep(Duration::from_millis(20));
        let now = unacked_bytes(&client);
        std::mem::replace(&mut unacked, now) == now
    });
    let acked_lines = (sent - unacked) / line.len();
    daemon.signal(Signal::SIGTERM);
    let replies = read_to_end(&client);
    assert_eq!(
        replies.len() % line.len(),
        0,
        "replies end on a line boundary"
    );
    let answered = replies.len() / line.len();
    eprintln!("drain: sent {sent} bytes, {acked_lines} lines acknowledged, {answered} answered");
    assert!(answered >= acked_lines, "{answered} < {acked_lines}");
    assert!(answered <= sent / line.len());
    assert!(replies
        .chunks(line.len())
        .all(|r| r == line.to_ascii_uppercase().as_bytes()));
    daemon.expect_notify_from(0, |l| l == "STOPPING=1");
    let status = daemon.wait_exit(SOON);
    assert_eq!(status.code(), Some(0));
}

#[test]
fn drain_with_only_idle_connections_is_quick() {
    let mut daemon = Daemon::builder("idledrain").spawn();
    let clients: Vec<_> = (0..20).map(|_| connect(daemon.addr())).collect();
    let mut first = connect(daemon.addr());
    assert_eq!(roundtrip(&mut first, "hi\n"), "HI\n");
    daemon.expect_notify_from(0, |l| l.contains("connections=21"));
    let start = Instant::now();
    daemon.signal(Signal::SIGTERM);
    let status = daemon.wait_exit(SOON);
    let took = start.elapsed();
    assert_eq!(status.code(), Some(0));
    assert!(
        took < Duration::from_millis(900),
        "idle drain took {took:?}"
    );
    for client in clients {
        assert_eq!(read_to_end(client), b"");
    }
}

#[test]
fn drain_timeout_closes_a_client_that_never_reads() {
    let mut daemon = Daemon::builder("draintimeout")
        .config("drain_timeout_ms = 500")
        .spawn();
    let client = connect(daemon.addr());
    let written = Arc::new(AtomicUsize::new(0));
    let writer = {
        let mut client = client.try_clone().unwrap();
        let written = Arc::clone(&written);
        std::thread::spawn(move || {
            let chunk = "x\n".repeat(32 * 1024);
            while client.write_all(chunk.as_bytes()).is_ok() {
                written.fetch_add(chunk.len(), Ordering::Relaxed);
            }
        })
    };
    // Wait until the daemon throttles this client: the writer stops moving.
    let mut last = usize::MAX;
    daemon.wait_until("the writer to be throttled", SOON, |_| {
        std::thread::sleep(Duration::from_millis(50));
        let now = written.load(Ordering::Relaxed);
        std::mem::replace(&mut last, now) == now && now > 0
    });
    // An idle bystander, closed at once by the drain: STATUS follows.
    let idle = connect(daemon.addr());
    daemon.expect_notify_from(0, |l| l.contains("connections=2"));
    let start = Instant::now();
    daemon.signal(Signal::SIGTERM);
    let status = daemon.wait_exit(SOON);
    let took = start.elapsed();
    assert_eq!(status.code(), Some(0));
    assert!(took < Duration::from_millis(1500), "drain took {took:?}");
    daemon.expect_notify_from(0, |l| {
        l.starts_with("STATUS=draining:") && l.contains("connections=2")
    });
    daemon.expect_notify_from(0, |l| {
        l.starts_with("STATUS=draining:") && l.contains("connections=1")
    });
    assert_eq!(read_to_end(idle), b"");
    assert!(
        daemon.stderr().contains("drain timed out"),
        "{}",
        daemon.stderr()
    );
    drop(client);
    let _ = writer.join();
}

#[test]
fn watchdog_keepalives_arrive_at_half_the_period() {
    let mut daemon = Daemon::builder("watchdog")
        .env("WATCHDOG_USEC", "400000")
        .spawn();
    let start = Instant::now();
    let mut arrivals = Vec::new();
    let mut from = daemon.notify.seen.len();
    for _ in 0..5 {
        daemon.expect_notify_from(from, |l| l == "WATCHDOG=1");
        from = daemon.notify.seen.len();
        arrivals.push(start.elapsed());
    }
    let gaps: Vec<_> = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!("watchdog gaps: {gaps:?}");
    for gap in gaps {
        assert!(
            gap >= Duration::from_millis(150) && gap <= Duration::from_millis(300),
            "WATCHDOG=1 every {gap:?}, expected about 200 ms"
        );
    }
    daemon.stop();
}

#[test]
fn watchdog_for_another_pid_is_ignored() {
    let mut daemon = Daemon::builder("watchdog-other")
        .env("WATCHDOG_USEC", "200000")
        .env("WATCHDOG_PID", "1")
        .spawn();
    let mut client = connect(daemon.addr());
    assert_eq!(roundtrip(&mut client, "x\n"), "X\n");
    daemon.stop();
    daemon.expect_notify_from(0, |l| l == "STOPPING=1");
    assert!(!daemon.notify.seen.iter().any(|l| l == "WATCHDOG=1"));
}

#[test]
fn a_second_sigterm_during_a_drain_is_harmless() {
    let mut daemon = Daemon::builder("twice")
        .config("drain_timeout_ms = 400")
        .spawn();
    // A client that never reads keeps the drain busy until its timeout.
    let client = connect(daemon.addr());
    let mut writer = client.try_clone().unwrap();
    let hog = std::thread::spawn(move || {
        let chunk = "y\n".repeat(32 * 1024);
        while writer.write_all(chunk.as_bytes()).is_ok() {}
    });
    daemon.expect_notify_from(0, |l| l.contains("connections=1"));
    daemon.signal(Signal::SIGTERM);
    daemon.expect_notify_from(0, |l| l == "STOPPING=1");
    daemon.signal(Signal::SIGTERM);
    daemon.signal(Signal::SIGINT);
    assert_eq!(daemon.wait_exit(SOON).code(), Some(0));
    drop(client);
    let _ = hog.join();
}

#[test]
fn under_journal_stream_logs_go_to_the_journal_or_say_why_not() {
    let mut daemon = Daemon::builder("journal").journal_stream().spawn();
    let mut client = connect(daemon.listening_addr());
    assert_eq!(roundtrip(&mut client, "j\n"), "J\n");
    daemon.stop();
    let log = daemon.stderr();
    if std::path::Path::new("/run/systemd/journal/socket").exists() {
        assert!(
            !log.contains("starting"),
            "lifecycle lines must go to the journal:\n{log}"
        );
    } else {
        assert_eq!(log.matches("cannot reach journald").count(), 1, "{log}");
        assert!(
            log.contains("INFO starting"),
            "falls back to stderr:\n{log}"
        );
    }
}

#[test]
fn a_connection_accepted_just_before_a_drain_still_gets_its_reply() {
    // The drain can catch a client between its connect and its first
    // request; that accepted connection attempt must not be lost.
    let mut daemon = Daemon::builder("drain-grace").spawn();
    let mut client = connect(daemon.addr());
    daemon.wait_until("the connection to be accepted", SOON, |d| {
        d.stderr().contains("connection accepted")
    });
    daemon.signal(Signal::SIGTERM);
    daemon.expect_notify_from(0, |l| l == "STOPPING=1");
    daemon.wait_until("the drain to start", SOON, |d| {
        d.stderr().contains("draining")
    });
    // Deliberately late, yet inside the drain's grace for a silent new
    // connection (250 ms): the drain has already visited this connection.
    std::thread::sleep(Duration::from_millis(100));
    client.write_all(b"just in time\n").unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&client), b"JUST IN TIME\n");
    assert_eq!(daemon.wait_exit(SOON).code(), Some(0));
}

#[test]
fn a_manager_that_stops_reading_does_not_stall_the_daemon() {
    // The test never reads its NOTIFY_SOCKET after READY: its queue fills
    // (10 datagrams by default) with STATUS updates. SIGTERM must still be
    // handled promptly, and no descriptor may be stuck in a blocked send.
    let mut daemon = Daemon::builder("deaf-manager").spawn();
    let addr = daemon.addr();
    let baseline = daemon.resting_fd_count();
    // A growing number of connections: every STATUS sample differs.
    let mut clients = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(4000) {
        let mut client = connect(addr);
        assert_eq!(roundtrip(&mut client, "more\n"), "MORE\n");
        clients.push(client);
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(clients);
    daemon.wait_fds_back_to(baseline, SOON);
    let stop = Instant::now();
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(SOON).code(), Some(0));
    let took = stop.elapsed();
    assert!(took < Duration::from_secs(3), "SIGTERM took {took:?}");
}
