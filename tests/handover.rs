//! Restart without dropping a connection. The test plays systemd: it owns
//! the listening socket (the socket unit), its notify socket keeps what a
//! daemon stores with `FDSTORE=1` (the fd store), and it starts the next
//! instance with the listener first and the stored fds after it, named.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::util::*;

/// The socket unit: a listener the test keeps for every instance.
struct SocketUnit {
    listener: TcpListener,
}

impl SocketUnit {
    fn new() -> SocketUnit {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        // The socket unit's Backlog=4096: thousands of connections at once
        // wait in the queue instead of having their SYNs dropped.
        nix::sys::socket::listen(&listener, nix::sys::socket::Backlog::new(4096).unwrap()).unwrap();
        SocketUnit { listener }
    }

    fn addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap()
    }

    fn start(&self, name: &str, config: &str) -> Daemon {
        Daemon::builder(name)
            .config(config)
            .inherit_named(self.listener.as_raw_fd(), "oneshotd.socket")
            .spawn()
    }

    /// SIGUSR2 to `old`; waits until it has stored its connections and
    /// exited 0. Returns the fd store.
    fn hand_over(&self, old: &mut Daemon) -> Vec<(String, std::os::fd::OwnedFd)> {
        let from = old.notify.seen.len();
        old.signal(Signal::SIGUSR2);
        old.expect_notify_from(from, |l| l == "STOPPING=1");
        old.expect_notify_from(from, |l| l == "BARRIER=1");
        let status = old.wait_exit(SOON);
        assert!(status.success(), "{status:?}\n{}", old.stderr());
        old.notify.take_stored()
    }

    /// The next instance, started from `store`; waits for READY=1.
    fn restart(
        &self,
        name: &str,
        config: &str,
        store: Vec<(String, std::os::fd::OwnedFd)>,
    ) -> Daemon {
        Daemon::builder(name)
            .config(config)
            .inherit_named(self.listener.as_raw_fd(), "oneshotd.socket")
            .with_fd_store(store)
            .spawn()
    }
}

fn names(store: &[(String, std::os::fd::OwnedFd)]) -> (usize, usize) {
    let count = |name: &str| store.iter().filter(|(n, _)| n == name).count();
    (count("conn"), count("state"))
}

/// Line `n` of client `c`, with lowercase to be uppercased.
fn line(c: usize, n: u64) -> String {
    format!("client {c} request {n} abcdefghijklmnopqrstuvwxyz\n")
}

#[test]
fn two_hundred_pipelining_connections_carry_on_across_two_handovers() {
    const CLIENTS: usize = 200;
    let unit = SocketUnit::new();
    let addr = unit.addr();
    let mut first = unit.start("handover-1", "workers = 2");
    let stop = Arc::new(AtomicBool::new(false));
    let verified = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let stop = Arc::clone(&stop);
            let verified = Arc::clone(&verified);
            let mut client = connect(addr);
            thread::spawn(move || {
                let mut reader = BufReader::new(client.try_clone().unwrap());
                let mut n = 0;
                let mut longest = Duration::ZERO;
                while !stop.load(Ordering::Relaxed) {
                    let batch: String = (n..n + 4).map(|i| line(c, i)).collect();
                    let sent = Instant::now();
                    client.write_all(batch.as_bytes()).unwrap();
                    for i in n..n + 4 {
                        let mut reply = String::new();
                        reader.read_line(&mut reply).unwrap();
                        assert_eq!(reply, line(c, i).to_ascii_uppercase(), "client {c}");
                        verified.fetch_add(1, Ordering::Relaxed);
                    }
                    longest = longest.max(sent.elapsed());
                    n += 4;
                    thread::sleep(Duration::from_millis(10));
                }
                client.shutdown(Shutdown::Write).unwrap();
                assert_eq!(read_to_end(&client), b"", "client {c}: nothing more");
                longest
            })
        })
        .collect();
    let wait_for_more = |at_least: u64| {
        let deadline = Instant::now() + SOON;
        while verified.load(Ordering::Relaxed) < at_least {
            assert!(Instant::now() < deadline, "the clients stalled");
            thread::sleep(Duration::from_millis(5));
        }
    };
    wait_for_more(CLIENTS as u64 * 8);
    first.expect_notify_from(0, |l| l.contains(&format!("connections={CLIENTS}")));

    let store = unit.hand_over(&mut first);
    assert_eq!(
        names(&store),
        (CLIENTS, 1),
        "one conn per client, one state"
    );
    assert!(first
        .notify
        .seen
        .iter()
        .any(|l| l == &format!("STATUS=handed over: workers=0 connections={CLIENTS}")));
    let mut second = unit.restart("handover-2", "workers = 2", store);
    assert!(
        second.notify.stored.is_empty(),
        "FDSTOREREMOVE for conn and state"
    );
    let ready = second
        .notify
        .seen
        .iter()
        .find(|l| l.contains("restored="))
        .cloned()
        .unwrap_or_default();
    assert!(ready.contains(&format!("restored={CLIENTS}")), "{ready}");
    let after_first = verified.load(Ordering::Relaxed);
    wait_for_more(after_first + CLIENTS as u64 * 8);

    let store = unit.hand_over(&mut second);
    assert_eq!(names(&store), (CLIENTS, 1));
    let mut third = unit.restart("handover-3", "workers = 2", store);
    let after_second = verified.load(Ordering::Relaxed);
    wait_for_more(after_second + CLIENTS as u64 * 8);

    stop.store(true, Ordering::Relaxed);
    let longest = clients
        .into_iter()
        .map(|c| c.join().expect("a client saw a wrong reply or an error"))
        .max()
        .unwrap();
    eprintln!(
        "handover: {CLIENTS} connections, {} replies verified, longest wait for a batch {longest:?}",
        verified.load(Ordering::Relaxed)
    );
    third.stop();
}

#[test]
fn what_was_in_flight_is_carried_over() {
    let unit = SocketUnit::new();
    let mut first = unit.start("inflight-1", "");

    // A partial line, completed after the restart.
    let mut partial = connect(unit.addr());
    partial.write_all(b"first half, ").unwrap();
    // A client that does not read: its replies pile up in the daemon,
    // beyond what the kernel holds, and it reads them after the restart.
    // And one that also half-closed. Each has a send buffer large enough
    // to take all it sends at once (the daemon stops reading it).
    let big = format!("{}\n", "x".repeat(4000));
    let lines = 2000;
    let stuffed = || {
        let client = connect_with_receive_buffer(unit.addr(), 64 * 1024);
        let force = 4 * lines * big.len();
        nix::sys::socket::setsockopt(&client, nix::sys::socket::sockopt::SndBufForce, &force)
            .unwrap();
        (&client).write_all(big.repeat(lines).as_bytes()).unwrap();
        client
    };
    let nonreader = stuffed();
    let half = stuffed();
    half.shutdown(Shutdown::Write).unwrap();
    // Closes during the gap; and one that sends during the gap.
    let quitter = connect(unit.addr());
    let mut gap_sender = connect(unit.addr());
    assert_eq!(roundtrip(&mut gap_sender, "before\n"), "BEFORE\n");
    // Everything above has reached the daemon before it is told to go.
    first.expect_notify_from(0, |l| l.contains("connections=5"));
    wait_until_unacked(&nonreader, &half);

    let store = unit.hand_over(&mut first);
    assert_eq!(names(&store), (5, 1));
    drop(quitter);
    gap_sender.write_all(b"sent during the gap\n").unwrap();
    let mut second = unit.restart("inflight-2", "", store);
    // The quitter came back (its socket was stored) and is closed at its
    // EOF; the other four are still held.
    assert!(second.notify.seen.iter().any(|l| l.contains("restored=5")));
    second.expect_notify_from(0, |l| l.contains("connections=4"));

    partial.write_all(b"second half\n").unwrap();
    let mut reader = BufReader::new(&partial);
    assert_eq!(read_lines(&mut reader, 1), ["FIRST HALF, SECOND HALF\n"]);
    let mut reader = BufReader::new(&gap_sender);
    assert_eq!(read_lines(&mut reader, 1), ["SENT DURING THE GAP\n"]);
    let expected = big.to_ascii_uppercase().repeat(lines).into_bytes();
    nonreader.shutdown(Shutdown::Write).unwrap();
    assert!(
        read_to_end(&nonreader) == expected,
        "every pending reply, in order"
    );
    assert!(
        read_to_end(&half) == expected,
        "the half-closed client's replies, then EOF"
    );
    // Only the two that are still open are left.
    second.expect_notify_from(0, |l| l.contains("connections=2"));
    second.stop();
}

/// Waits until the daemon has read what both clients sent as far as it
/// will (it throttles them): their sends are no longer moving.
fn wait_until_unacked(a: &TcpStream, b: &TcpStream) {
    let mut last = (usize::MAX, usize::MAX);
    let deadline = Instant::now() + SOON;
    loop {
        let now = (unacked_bytes(a), unacked_bytes(b));
        if now == last {
            return;
        }
        assert!(Instant::now() < deadline, "the daemon never settled");
        last = now;
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_corrupt_state_record_closes_only_what_it_described() {
    let unit = SocketUnit::new();
    let mut first = unit.start("corrupt-1", "");
    let mut clients: Vec<TcpStream> = (0..3).map(|_| connect(unit.addr())).collect();
    for c in &mut clients {
        assert_eq!(roundtrip(c, "hello\n"), "HELLO\n");
    }
    let mut store = unit.hand_over(&mut first);
    // One byte of the state file flipped (in a copy: the daemon seals its
    // own): the whole file is rejected.
    let at = store.iter().position(|(n, _)| n == "state").unwrap();
    let mut bytes = Vec::new();
    let mut file = std::fs::File::from(store.remove(at).1);
    std::io::Seek::rewind(&mut file).unwrap();
    file.read_to_end(&mut bytes).unwrap();
    bytes[20] ^= 0xff;
    let copy =
        nix::sys::memfd::memfd_create("corrupt", nix::sys::memfd::MFdFlags::empty()).unwrap();
    let mut copy = std::fs::File::from(copy);
    copy.write_all(&bytes).unwrap();
    store.push(("state".to_owned(), copy.into()));
    // A fourth connection the next instance has a record for: none. Its
    // socket is stored but described nowhere.
    let stray_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let stray_client = TcpStream::connect(stray_listener.local_addr().unwrap()).unwrap();
    let (stray_server, _) = stray_listener.accept().unwrap();
    store.push(("conn".to_owned(), stray_server.into()));

    let mut second = unit.restart("corrupt-2", "", store);
    assert!(
        second.stderr().contains("unreadable handover state"),
        "{}",
        second.stderr()
    );
    for c in clients.iter().chain([&stray_client]) {
        assert_eq!(
            read_to_end(c),
            b"",
            "closed, not served with its state missing"
        );
    }
    let mut newcomer = connect(unit.addr());
    assert_eq!(roundtrip(&mut newcomer, "new\n"), "NEW\n");
    second.stop();
}

#[test]
fn sigusr2_without_a_manager_drains() {
    let unit = SocketUnit::new();
    let mut daemon = Daemon::builder("usr2-alone")
        .inherit_named(unit.listener.as_raw_fd(), "oneshotd.socket")
        .env("NOTIFY_SOCKET", "")
        .launch();
    // Waits in the backlog until the daemon serves (signals are handled
    // by then).
    let mut client = connect(unit.addr());
    assert_eq!(roundtrip(&mut client, "hi\n"), "HI\n");
    daemon.signal(Signal::SIGUSR2);
    assert_eq!(
        read_to_end(&client),
        b"",
        "drained: closed after its replies"
    );
    let status = daemon.wait_exit(SOON);
    assert!(status.success(), "{status:?}");
    assert!(
        daemon.stderr().contains("SIGUSR2 without NOTIFY_SOCKET"),
        "{}",
        daemon.stderr()
    );
}

/// Many idle connections: all come back and answer. Prints how long from
/// SIGUSR2 to the next instance's READY=1 (a figure, not a limit: speed is
/// measured in the benchmark). `ONESHOTD_HANDOVER_CONNECTIONS` sets the
/// count (default 2000; the test process holds each client and the fd
/// store's copy of each socket, so this machine's 20 000-descriptor cap
/// allows up to about 9 500).
#[test]
fn many_idle_connections_come_back_and_answer() {
    let count: usize = std::env::var("ONESHOTD_HANDOVER_CONNECTIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000);
    let unit = SocketUnit::new();
    let mut first = unit.start("many-1", "workers = 2");
    let mut clients: Vec<TcpStream> = (0..count).map(|_| connect(unit.addr())).collect();
    first.expect_notify_from(0, |l| l.contains(&format!("connections={count}")));
    let rss_before = first.rss_kib();

    let signalled = Instant::now();
    let store = unit.hand_over(&mut first);
    let stored = signalled.elapsed();
    assert_eq!(names(&store), (count, 1));
    // A drain that misses a connection would wait out its whole timeout:
    // long enough here that `stop` fails instead.
    let mut second = unit.restart("many-2", "workers = 2\ndrain_timeout_ms = 60000", store);
    let ready = signalled.elapsed();
    assert!(
        second.notify.stored.is_empty(),
        "FDSTOREREMOVE for conn and state"
    );
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(
            roundtrip(client, "still here\n"),
            "STILL HERE\n",
            "client {i}"
        );
    }
    eprintln!(
        "handover of {count} idle connections: SIGUSR2 to exit {stored:?}, to the next READY=1 {ready:?}; \
         RSS {rss_before} KiB before, {} KiB after; {} fds after",
        second.rss_kib(),
        second.fd_count()
    );
    // The drain (at this count its walk of the table is split between two
    // threads) closes every connection at once.
    second.stop();
    for (i, client) in clients.into_iter().enumerate() {
        assert_eq!(read_to_end(client), b"", "client {i}");
    }
}

/// Only the line protocol's connections are carried; a metrics
/// connection open at the restart is closed, and the next instance's
/// counters say how many came back.
#[test]
fn the_metrics_count_the_handover_and_its_connections_are_not_carried() {
    let unit = SocketUnit::new();
    // The metrics socket unit, kept by "systemd" like the line one.
    let metrics = TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics_addr = metrics.local_addr().unwrap();
    let start = |name: &str, store| {
        Daemon::builder(name)
            .inherit_named(unit.listener.as_raw_fd(), "oneshotd.socket")
            .inherit_named(metrics.as_raw_fd(), "metrics")
            .with_fd_store(store)
            .spawn()
    };
    let mut first = start("metrics-handover-1", Vec::new());
    let scrape_conn = connect(metrics_addr);
    let mut clients: Vec<TcpStream> = (0..3).map(|_| connect(unit.addr())).collect();
    for c in &mut clients {
        assert_eq!(roundtrip(c, "counted\n"), "COUNTED\n");
    }
    first.expect_notify_from(0, |l| l.contains("connections=4"));
    let store = unit.hand_over(&mut first);
    assert_eq!(
        names(&store),
        (3, 1),
        "the metrics connection is not stored"
    );
    assert_eq!(read_to_end(&scrape_conn), b"", "and it is closed");

    let mut second = start("metrics-handover-2", store);
    let samples = scrape(metrics_addr);
    assert_eq!(
        samples["oneshotd_connections_restored_total"], 3,
        "{samples:#?}"
    );
    for c in &mut clients {
        assert_eq!(roundtrip(c, "still counted\n"), "STILL COUNTED\n");
    }
    second.stop();
}

/// A client's address from its PROXY header survives the restart (the
/// header is gone from the socket once read): the per-client limit still
/// counts it, and the logs still name it. A connection caught halfway
/// through its header finishes it with the next instance.
#[test]
fn a_client_address_from_a_proxy_header_survives_a_handover() {
    let unit = SocketUnit::new();
    let config = "proxy_protocol_from = [\"127.0.0.1/32\"]\nmax_connections_per_client = 2\nlog_level = \"debug\"";
    let header = |port: u16| format!("PROXY TCP4 203.0.113.5 192.0.2.2 {port} 7878\r\n");
    let mut old = unit.start("proxy-handover-old", config);
    let mut held: Vec<TcpStream> = [1000, 1001]
        .into_iter()
        .map(|port| {
            let mut client = connect(unit.addr());
            client.write_all(header(port).as_bytes()).unwrap();
            assert_eq!(roundtrip(&mut client, "before\n"), "BEFORE\n");
            client
        })
        .collect();
    let mut halfway = connect(unit.addr());
    halfway
        .write_all(b"PROXY TCP4 203.0.113.9 192.0.2.2 ")
        .unwrap();
    wait_until_unacked(&halfway, &halfway);

    let store = unit.hand_over(&mut old);
    assert_eq!(names(&store), (3, 1));
    let mut new = unit.restart("proxy-handover-new", config, store);
    new.expect_notify_from(0, |l| l.contains("restored=3"));

    // Still two connections of 203.0.113.5: a third is refused.
    let third = connect(unit.addr());
    expect_refused_after(&third, format!("{}third\n", header(1002)).as_bytes());
    halfway.write_all(b"4000 7878\r\n").unwrap();
    assert_eq!(roundtrip(&mut halfway, "late\n"), "LATE\n");
    for client in &mut held {
        assert_eq!(roundtrip(client, "after\n"), "AFTER\n");
    }
    drop(held);
    drop(halfway);
    for peer in ["203.0.113.5:1000", "203.0.113.5:1001", "203.0.113.9:4000"] {
        let field = format!("peer={peer} ");
        new.wait_until(&format!("the close of {peer} logged"), SOON, |d| {
            d.stderr()
                .lines()
                .any(|l| l.contains("connection closed") && l.contains(&field))
        });
    }
    new.stop();
}

/// A restored connection is served only once the manager has dropped its
/// copy and its record (`FDSTOREREMOVE=1`, then a barrier): were the new
/// instance to die after serving with the record still stored, a third
/// would send the same replies again. The test is the manager, and it does
/// not answer the barrier until it has seen that nothing was served.
#[test]
fn a_restored_connection_is_served_only_after_the_manager_forgot_it() {
    let unit = SocketUnit::new();
    let mut first = unit.start("once-1", "");
    let mut client = connect(unit.addr());
    client.write_all(b"first half, ").unwrap();
    first.expect_notify_from(0, |l| l.contains("connections=1"));
    let store = unit.hand_over(&mut first);
    assert_eq!(names(&store), (1, 1));

    let mut second = Daemon::builder("once-2")
        .inherit_named(unit.listener.as_raw_fd(), "oneshotd.socket")
        .with_fd_store(store)
        .launch();
    client.write_all(b"second half\n").unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut early = [0u8; 64];
    match client.read(&mut early) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        other => panic!(
            "served before the manager forgot the connection: {other:?} {:?}\n{}",
            String::from_utf8_lossy(&early),
            second.stderr()
        ),
    }
    // Now the manager reads what was sent: the removal, then the barrier,
    // which it answers; the store is empty before READY=1.
    second.expect_notify("READY=1");
    let removal = second
        .notify
        .seen
        .iter()
        .position(|l| l == "FDSTOREREMOVE=1");
    let barrier = second.notify.seen.iter().position(|l| l == "BARRIER=1");
    let ready = second.notify.seen.iter().position(|l| l == "READY=1");
    assert!(
        removal < barrier && barrier < ready && removal.is_some(),
        "{:?}",
        second.notify.seen
    );
    assert!(
        second.notify.stored.is_empty(),
        "the store still holds a record"
    );
    client.set_read_timeout(Some(SOON)).unwrap();
    let mut reader = BufReader::new(&client);
    assert_eq!(read_lines(&mut reader, 1), ["FIRST HALF, SECOND HALF\n"]);
    second.stop();
}
