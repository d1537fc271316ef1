//! Hostile clients: slowloris, many clients that never read, garbage,
//! resets and connect storms. The daemon keeps serving the others, keeps
//! its memory bounded, and leaks nothing.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::util::*;

/// Round trips on one connection until `stop`; returns latencies in µs.
fn measure_latency(addr: SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<u64>> {
    std::thread::spawn(move || {
        let mut client = connect(addr);
        let mut reader = BufReader::new(client.try_clone().unwrap());
        let mut latencies = Vec::new();
        let mut reply = String::new();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let start = Instant::now();
            client.write_all(format!("probe {n}\n").as_bytes()).unwrap();
            reply.clear();
            reader.read_line(&mut reply).unwrap();
            assert_eq!(reply, format!("PROBE {n}\n"));
            latencies.push(start.elapsed().as_micros() as u64);
            n += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
        latencies
    })
}

fn p99(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

#[test]
fn slowloris_clients_time_out_and_others_are_not_slowed() {
    let daemon = Daemon::builder("slowloris")
        .config("request_timeout_ms = 1000\nlog_level = \"info\"")
        .spawn();
    let addr = daemon.addr();

    let stop = Arc::new(AtomicBool::new(false));
    let quiet = measure_latency(addr, Arc::clone(&stop));
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let before = p99(quiet.join().unwrap());

    // 500 clients, one byte each every 100 ms, never a LF.
    let mut loris: Vec<TcpStream> = (0..500).map(|_| connect(addr)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let busy = measure_latency(addr, Arc::clone(&stop));
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1600) {
        for client in &mut loris {
            let _ = client.write_all(b"s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let during = p99(busy.join().unwrap());
    eprintln!("slowloris: probe p99 {before} us before, {during} us during 500 trickling clients");

    for (i, client) in loris.iter().enumerate() {
        let mut got = Vec::new();
        let _ = (&*client).read_to_end(&mut got);
        assert_eq!(got, b"ERR request timeout\n", "client {i}");
    }
    // A gross-starvation guard, not a speed target: the figures are printed.
    assert!(
        during < before.max(1000) * 20,
        "probe p99 {during} us during vs {before} us before"
    );
}

/// 100 clients send without reading until the daemon stops reading from
/// them. How much that takes depends on the kernel's buffers (autotuned up
/// to `tcp_rmem`'s maximum, 32 MiB on some machines), so the clients write
/// until they are stuck rather than a fixed amount; then the daemon's RSS
/// must be bounded, and every reply must arrive once they read.
#[test]
fn a_hundred_clients_that_never_read_cannot_grow_memory() {
    let daemon = Daemon::builder("nonreaders").config("workers = 2").spawn();
    let addr = daemon.addr();
    let baseline = daemon.rss_kib();
    const CLIENTS: usize = 100;
    const LINE: usize = 1024;
    const CHUNK_LINES: u64 = 64;
    // A bound on any one writer, far above what any buffers hold.
    const MAX_CHUNKS: u64 = 64 * 1024;
    let line = |c: usize| {
        let mut l = format!("client {c:03} ").repeat(LINE / 11);
        l.truncate(LINE - 1);
        l.push('\n');
        l
    };
    let written = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<TcpStream> = (0..CLIENTS).map(|_| connect(addr)).collect();
    // Each writer returns how many lines it sent, then half-closes.
    let writers: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(c, client)| {
            let mut client = client.try_clone().unwrap();
            client
                .set_write_timeout(Some(Duration::from_secs(120)))
                .unwrap();
            let written = Arc::clone(&written);
            let stop = Arc::clone(&stop);
            let chunk = line(c).repeat(CHUNK_LINES as usize);
            std::thread::spawn(move || {
                let mut lines = 0;
                for _ in 0..MAX_CHUNKS {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    client.write_all(chunk.as_bytes()).unwrap();
                    lines += CHUNK_LINES;
                    written.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
                client.shutdown(Shutdown::Write).unwrap();
                lines
            })
        })
        .collect();

    // Wait until every writer is stuck: the daemon stopped reading.
    let mut last = u64::MAX;
    daemon.wait_until(
        "the writers to be throttled",
        Duration::from_secs(60),
        |_| {
            std::thread::sleep(Duration::from_millis(200));
            let now = written.load(Ordering::Relaxed);
            std::mem::replace(&mut last, now) == now
        },
    );
    let stalled = daemon.rss_kib();
    let growth = stalled.saturating_sub(baseline);
    eprintln!(
        "100 non-readers: {} MiB accepted from clients, daemon RSS {baseline} -> {stalled} KiB (+{growth} KiB)",
        written.load(Ordering::Relaxed) >> 20
    );
    assert!(
        writers.iter().all(|w| !w.is_finished()),
        "every writer must be held up by the daemon"
    );
    // Bound: 1 MiB of pending replies per client plus a read's worth.
    assert!(growth < 160 * 1024, "RSS grew by {growth} KiB");

    // Now read everything back: nothing lost.
    stop.store(true, Ordering::Relaxed);
    let readers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(c, client)| {
            let expected = line(c).to_ascii_uppercase();
            std::thread::spawn(move || {
                client
                    .set_read_timeout(Some(Duration::from_secs(120)))
                    .unwrap();
                let mut reader = BufReader::with_capacity(1 << 16, client);
                let mut reply = String::new();
                let mut replies = 0u64;
                while reader.read_line(&mut reply).unwrap() > 0 {
                    assert!(reply == expected, "client {c} reply {replies}");
                    replies += 1;
                    reply.clear();
                }
                replies
            })
        })
        .collect();
    for (c, (writer, reader)) in writers.into_iter().zip(readers).enumerate() {
        let sent = writer.join().unwrap();
        assert_eq!(reader.join().unwrap(), sent, "client {c}: replies");
    }
}

#[test]
fn garbage_resets_and_storms_leave_others_unaffected() {
    let daemon = Daemon::builder("garbage")
        .config("max_line_bytes = 4096")
        .spawn();
    let addr = daemon.addr();
    let baseline = daemon.resting_fd_count();
    let stop = Arc::new(AtomicBool::new(false));
    let probe = measure_latency(addr, Arc::clone(&stop));

    // Random binary bytes (LF included), with and without reading back.
    let mut seed = 0x1234_5678_9abc_def0u64;
    let mut random = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..50 {
        let client = connect(addr);
        let bytes: Vec<u8> = (0..2000).map(|_| (random() >> 32) as u8).collect();
        (&client).write_all(&bytes).unwrap();
        if round % 2 == 0 {
            client.shutdown(Shutdown::Write).unwrap();
            let got = read_to_end(&client);
            // Every line comes back uppercased, binary bytes unchanged, and
            // the last one, cut off by EOF, is answered as if it had an LF.
            let mut expected = bytes.to_ascii_uppercase();
            if expected.last() != Some(&b'\n') {
                expected.push(b'\n');
            }
            let first_difference = got.iter().zip(&expected).position(|(a, b)| a != b);
            assert!(
                got == expected,
                "round {round}: {} bytes back, {} expected, first difference at {first_difference:?}",
                got.len(),
                expected.len()
            );
        }
    }
    // NUL bytes are ordinary bytes.
    let mut client = connect(addr);
    assert_eq!(roundtrip(&mut client, "a\0b\0\n"), "A\0B\0\n");
    // A huge line: refused, connection closed.
    let huge = connect(addr);
    let writer = {
        let mut huge = huge.try_clone().unwrap();
        std::thread::spawn(move || {
            let _ = huge.write_all(&vec![b'h'; 1 << 20]);
            let _ = huge.shutdown(Shutdown::Write);
        })
    };
    assert_eq!(read_to_end(&huge), b"ERR line too long\n");
    writer.join().unwrap();
    // Resets in the middle of a reply.
    for _ in 0..50 {
        reset_mid_reply(addr, "reset mid reply\n", 5000);
    }
    // A connect-and-close storm.
    for _ in 0..1000 {
        drop(TcpStream::connect(addr).unwrap());
    }

    stop.store(true, Ordering::Relaxed);
    let latencies = probe.join().expect("the well-behaved client saw an error");
    eprintln!(
        "garbage: probe p99 {} us over {} round trips",
        p99(latencies.clone()),
        latencies.len()
    );
    let mut after = connect(addr);
    assert_eq!(roundtrip(&mut after, "still alive\n"), "STILL ALIVE\n");
    drop(after);
    drop(client);
    daemon.wait_fds_back_to(baseline, SOON);
}

#[test]
fn a_throttled_client_that_half_closes_does_not_make_the_daemon_spin() {
    // The client sends more than the daemon may answer while the client
    // reads nothing, then half-closes: the daemon is throttled with the
    // FIN already received. It must wait for the client to read, not spin.
    let daemon = Daemon::builder("halfclose-throttled").spawn();
    let client = connect(daemon.addr());
    let writer = {
        let mut client = client.try_clone().unwrap();
        std::thread::spawn(move || {
            client
                .write_all("fill\n".repeat(1 << 20).as_bytes())
                .unwrap();
            client.shutdown(Shutdown::Write).unwrap();
        })
    };
    let start = Instant::now();
    while !writer.is_finished() {
        assert!(
            start.elapsed() < SOON,
            "5 MiB did not fit in the socket buffers"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    writer.join().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let cpu = daemon.cpu_during(|| std::thread::sleep(Duration::from_secs(1)));
    eprintln!("throttled + half-closed: {cpu:?} CPU in 1 s");
    assert!(
        cpu < Duration::from_millis(200),
        "the daemon spins: {cpu:?} CPU in 1 s"
    );
    // Everything is still answered once the client reads.
    let replies = read_to_end(&client);
    assert_eq!(replies.len(), 5 << 20);
    assert!(replies.chunks(5).all(|r| r == b"FILL\n"));
}
