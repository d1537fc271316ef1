//! Hostile clients against the whole daemon: work linear in the bytes
//! received however they are segmented, and one memory budget for every
//! client that owes replies.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::util::*;

/// Sends `stream` one byte per segment: each byte is written only once the
/// daemon has read the one before (on a Unix socket, the sender's queue
/// empties when the receiver reads), so every byte is a read of its own.
fn send_one_byte_per_read(client: &mut UnixStream, stream: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for byte in stream {
        client.write_all(std::slice::from_ref(byte)).unwrap();
        while unacked_bytes(client) > 0 {
            assert!(Instant::now() < deadline, "the daemon stopped reading");
            std::hint::spin_loop();
        }
    }
}

/// A line that arrives one byte per read costs the daemon the same CPU per
/// byte whether the line is 8 KiB or 64 KiB long: nothing rescans the line
/// from its start on every read.
#[test]
fn a_line_paced_one_byte_per_segment_costs_the_same_per_byte_at_any_length() {
    let dir = TestDir::new("paced-sock");
    let path = dir.join("paced.sock");
    let mut daemon = Daemon::builder("paced")
        .config(&format!(
            "listen = [\"{}\"]\nworkers = 1\nmax_line_bytes = 65536",
            path.display()
        ))
        .spawn();
    daemon.expect_notify_from(0, |l| l == "READY=1");
    // The same 64 KiB of stream either way: eight lines of 8 KiB, or one.
    const TOTAL: usize = 64 * 1024;
    let mut cost = Vec::new();
    for line_bytes in [8 * 1024, 64 * 1024] {
        let line: Vec<u8> = (0..line_bytes - 1)
            .map(|i| b'a' + (i % 26) as u8)
            .chain([b'\n'])
            .collect();
        let stream = line.repeat(TOTAL / line_bytes);
        let mut client = UnixStream::connect(&path).unwrap();
        client.set_read_timeout(Some(SOON)).unwrap();
        let cpu = daemon.cpu_during(|| send_one_byte_per_read(&mut client, &stream));
        client.shutdown(std::net::Shutdown::Write).unwrap();
        let mut replies = Vec::new();
        client.read_to_end(&mut replies).unwrap();
        assert!(
            replies == stream.to_ascii_uppercase(),
            "{line_bytes}-byte lines: {} bytes back",
            replies.len()
        );
        let per_kib = cpu.as_secs_f64() * 1e3 / (TOTAL / 1024) as f64;
        eprintln!("paced {line_bytes}-byte lines: {cpu:?} of daemon CPU, {per_kib:.2} ms per KiB");
        cost.push(cpu.as_secs_f64());
    }
    // Each read costs about the same at either length; CPU time is counted
    // in 10 ms ticks, hence the small floor.
    assert!(
        cost[1] <= cost[0].max(0.05) * 1.5,
        "64 KiB lines cost {:.3} s against {:.3} s for 8 KiB lines",
        cost[1],
        cost[0]
    );
    daemon.stop();
}

/// What a client sends: `lines` lines of its own, 1 KiB each.
fn pipelined_lines(client: usize, lines: usize) -> Vec<u8> {
    let mut line = format!("client {client:04} ").repeat(1024 / 12);
    line.truncate(1023);
    line.push('\n');
    line.repeat(lines).into_bytes()
}

/// `count` clients behind small receive windows (so that the kernel holds
/// little of the replies for them, and the daemon must), each pipelining
/// `lines` of its lines from a thread of its own without reading, then
/// half-closing; `written` counts the bytes they wrote.
fn pipeliners(
    addr: std::net::SocketAddr,
    count: usize,
    lines: usize,
    written: &Arc<AtomicU64>,
) -> (Vec<TcpStream>, Vec<std::thread::JoinHandle<()>>) {
    let clients: Vec<TcpStream> = (0..count)
        .map(|_| connect_with_receive_buffer(addr, 16 * 1024))
        .collect();
    let writers = clients
        .iter()
        .enumerate()
        .map(|(c, client)| {
            let mut client = client.try_clone().unwrap();
            client
                .set_write_timeout(Some(Duration::from_secs(120)))
                .unwrap();
            let written = Arc::clone(written);
            std::thread::spawn(move || {
                for chunk in pipelined_lines(c, lines).chunks(64 * 1024) {
                    client.write_all(chunk).unwrap();
                    written.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
                client.shutdown(Shutdown::Write).unwrap();
            })
        })
        .collect();
    (clients, writers)
}

/// Waits until `writers_started` and the daemon has received nothing more
/// for 500 ms: it stopped reading its clients (the budget, or nothing left
/// to read). Returns the bytes it received.
fn wait_until_reading_stops(
    daemon: &Daemon,
    metrics: SocketAddr,
    writers_started: impl Fn() -> bool,
) -> u64 {
    let received = || scrape(metrics)["oneshotd_received_bytes_total{service=\"upper\"}"];
    let mut last = u64::MAX;
    daemon.wait_until(
        "the daemon to stop reading",
        Duration::from_secs(60),
        |_| {
            std::thread::sleep(Duration::from_millis(500));
            let now = received();
            std::mem::replace(&mut last, now) == now && writers_started()
        },
    );
    last
}

/// Hundreds of clients pipeline without reading: the daemon holds no more
/// for them than its budget (plus a margin), a newcomer is answered at
/// once meanwhile, and every reply arrives once they read.
#[test]
fn clients_that_pipeline_without_reading_stay_within_the_budget() {
    const CLIENTS: usize = 200;
    // More than the kernel holds for a client (its send buffer grows to
    // 4 MiB): 6 MiB each, 1.2 GiB in all.
    const LINES: usize = 6 * 1024;
    const BUDGET_MIB: u64 = 32;
    let (daemon, addr, metrics) = spawn_with_metrics(
        "budget",
        &format!("workers = 2\nmax_buffered_bytes = {}", BUDGET_MIB << 20),
    );
    let baseline = daemon.rss_kib();
    let written = Arc::new(AtomicU64::new(0));
    let (clients, writers) = pipeliners(addr, CLIENTS, LINES, &written);

    // Until the daemon is held up (what the writers wrote can still be
    // waiting in the kernel's buffers).
    let read = wait_until_reading_stops(&daemon, metrics, || true);
    let stalled = daemon.rss_kib();
    let growth = stalled.saturating_sub(baseline);
    let gauges = scrape(metrics);
    let held = gauges["oneshotd_buffered_bytes"];
    let throttled = gauges["oneshotd_connections_throttled"];
    eprintln!(
        "{CLIENTS} pipelining non-readers: {} MiB written, {} MiB read by the daemon, \
         daemon RSS +{} MiB, {} MiB held against a {BUDGET_MIB} MiB budget, \
         {throttled} connections throttled",
        written.load(Ordering::Relaxed) >> 20,
        read >> 20,
        growth >> 10,
        held >> 20,
    );
    assert_eq!(gauges["oneshotd_buffer_budget_bytes"], BUDGET_MIB << 20);
    assert!(throttled > 0, "the budget was never spent");
    // The margin: 2 workers' unfolded ledgers and last reads, a few KiB
    // per connection that began to owe while the budget was spent, and the
    // allocator's own slack.
    let margin_mib = 16;
    assert!(
        held <= (BUDGET_MIB + 1) << 20,
        "held {held} bytes against a {BUDGET_MIB} MiB budget"
    );
    assert!(
        growth <= (BUDGET_MIB + margin_mib) << 10,
        "RSS grew by {growth} KiB with a {BUDGET_MIB} MiB budget"
    );
    assert!(
        daemon.stderr().contains("memory budget spent"),
        "{}",
        daemon.stderr()
    );

    // A newcomer is served at once meanwhile.
    let started = Instant::now();
    let mut newcomer = connect(addr);
    assert_eq!(roundtrip(&mut newcomer, "newcomer\n"), "NEWCOMER\n");
    let waited = started.elapsed();
    eprintln!("newcomer answered in {waited:?} while the budget was spent");
    assert!(waited < Duration::from_millis(500), "{waited:?}");

    // Everyone reads now: every reply, in order.
    let readers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(c, client)| {
            std::thread::spawn(move || {
                client
                    .set_read_timeout(Some(Duration::from_secs(120)))
                    .unwrap();
                let expected = pipelined_lines(c, LINES).to_ascii_uppercase();
                let got = read_to_end(&client);
                assert!(
                    got == expected,
                    "client {c}: {} of {} reply bytes",
                    got.len(),
                    expected.len()
                );
            })
        })
        .collect();
    for (writer, reader) in writers.into_iter().zip(readers) {
        writer.join().unwrap();
        reader.join().unwrap();
    }
    // Nothing is held any more, and the log says the budget has room.
    let deadline = Instant::now() + SOON;
    loop {
        let gauges = scrape(metrics);
        let at_rest = (
            gauges["oneshotd_buffered_bytes"],
            gauges["oneshotd_connections_throttled"],
        );
        if at_rest == (0, 0) {
            break;
        }
        assert!(Instant::now() < deadline, "still held: {at_rest:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(daemon.stderr().contains("memory budget has room again"));
}

/// A reload that lowers the budget below what is held drops nothing: the
/// connections that owe replies stop being read, and every reply still
/// arrives once their clients read.
#[test]
fn lowering_the_budget_on_reload_throttles_and_drops_nothing() {
    const CLIENTS: usize = 20;
    const LINES: usize = 6 * 1024;
    let (mut daemon, addr, metrics) = spawn_with_metrics("budget-reload", "workers = 2");
    let (clients, writers) = pipeliners(addr, CLIENTS, LINES, &Arc::default());
    let held = || scrape(metrics)["oneshotd_buffered_bytes"];
    daemon.wait_until("replies to be held", SOON, |_| held() > 2 << 20);

    daemon.set_config("max_buffered_bytes", &(1 << 20).to_string());
    let from = daemon.notify.seen.len();
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    daemon.expect_notify_from(from, |l| l == "READY=1");
    let gauges = scrape(metrics);
    assert_eq!(gauges["oneshotd_buffer_budget_bytes"], 1 << 20);
    assert!(gauges["oneshotd_buffered_bytes"] > 1 << 20);
    assert!(
        daemon.stderr().contains("memory budget spent"),
        "{}",
        daemon.stderr()
    );

    for (c, (client, writer)) in clients.into_iter().zip(writers).enumerate() {
        client
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let got = read_to_end(&client);
        writer.join().unwrap();
        assert!(
            got == pipelined_lines(c, LINES).to_ascii_uppercase(),
            "client {c}: {} reply bytes",
            got.len()
        );
    }
    let closed = scrape(metrics);
    for (key, value) in &closed {
        if key.starts_with("oneshotd_connections_closed_total{service=\"upper\"")
            && !key.contains("client_eof")
        {
            assert_eq!(*value, 0, "{key}");
        }
    }
    daemon.stop();
}

/// What a client of the starvation test sends: `lines` lines of 100
/// bytes, each naming its client and number (cheap to make in a debug
/// build: one line formatted, the others patched).
fn hundred_byte_lines(client: usize, lines: usize) -> Vec<u8> {
    let template = format!("client {client:04} line 0000000 {:>74}\n", "pace").into_bytes();
    let mut stream = template.repeat(lines);
    for (l, line) in stream.chunks_mut(100).enumerate() {
        line[17..24].copy_from_slice(format!("{l:07}").as_bytes());
    }
    stream
}

/// Bytes the kernel holds unsent or unacknowledged on each connected TCP
/// socket whose local port is `port` (`tx_queue` in `/proc/net/tcp`: what
/// `ss` shows as Send-Q), also after the daemon closed it.
fn kernel_send_queues(port: u16) -> Vec<usize> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter_map(|row| {
            let fields: Vec<&str> = row.split_whitespace().collect();
            let local_port = u16::from_str_radix(fields[1].split(':').nth(1)?, 16).ok()?;
            let listening = fields[3] == "0A";
            let tx_queue = usize::from_str_radix(fields[4].split(':').next()?, 16).ok()?;
            (local_port == port && !listening).then_some(tx_queue)
        })
        .collect()
}

/// Many clients pipeline 2 MiB each behind 4 KiB receive windows and do
/// not read, so the budget stays spent; then some of them, one after
/// another, read. The daemon parks no more in the kernel for a non-reader
/// than a small allowance (a kernel that grows each one's send buffer to
/// MiBs puts the host into TCP memory pressure, where it drops every
/// client's segments), and each reader gets every reply at its own pace
/// while the others keep the budget spent.
#[test]
fn a_client_that_reads_is_served_at_its_pace_while_others_keep_the_budget_spent() {
    const CLIENTS: usize = 150;
    const READERS: usize = 12;
    const LINES: usize = 20 * 1024;
    const BUDGET_MIB: u64 = 8;
    // What the contract calls a small per-connection allowance in the
    // kernel's send queue.
    const KERNEL_ALLOWANCE: usize = 128 * 1024;
    let (mut daemon, addr, metrics) = spawn_with_metrics(
        "budget-pace",
        &format!("workers = 2\nmax_buffered_bytes = {}", BUDGET_MIB << 20),
    );
    let clients: Vec<TcpStream> = (0..CLIENTS)
        .map(|_| connect_with_receive_buffer(addr, 4096))
        .collect();
    let writing = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(c, client)| {
            let mut client = client.try_clone().unwrap();
            client
                .set_write_timeout(Some(Duration::from_secs(120)))
                .unwrap();
            let writing = Arc::clone(&writing);
            std::thread::spawn(move || {
                let stream = hundred_byte_lines(c, LINES);
                writing.fetch_add(1, Ordering::Relaxed);
                // The clients that never read are reset at the end: their
                // writes then fail, which is no concern of this test.
                for chunk in stream.chunks(64 * 1024) {
                    if client.write_all(chunk).is_err() {
                        return;
                    }
                }
                let _ = client.shutdown(Shutdown::Write);
            })
        })
        .collect();

    wait_until_reading_stops(&daemon, metrics, || {
        writing.load(Ordering::Relaxed) == CLIENTS as u64
    });
    let gauges = scrape(metrics);
    let queues = kernel_send_queues(addr.port());
    assert_eq!(queues.len(), CLIENTS, "{queues:?}");
    let parked: usize = queues.iter().sum();
    let largest = queues.iter().copied().max().unwrap_or(0);
    eprintln!(
        "{CLIENTS} non-readers: {} MiB held by the daemon against {BUDGET_MIB} MiB, \
         {} KiB parked in the kernel in all, {} KiB at most for one",
        gauges["oneshotd_buffered_bytes"] >> 20,
        parked >> 10,
        largest >> 10
    );
    assert!(
        largest <= KERNEL_ALLOWANCE,
        "the kernel holds {largest} bytes unread by one client"
    );
    assert!(
        gauges["oneshotd_connections_throttled"] > 0,
        "the budget was never spent: {gauges:?}"
    );

    for (c, client) in clients.iter().enumerate().take(READERS) {
        let expected = hundred_byte_lines(c, LINES).to_ascii_uppercase();
        let (mut got, mut longest_wait) = (0, Duration::ZERO);
        let mut chunk = vec![0; 4096];
        let started = Instant::now();
        let mut last_byte = started;
        let mut reader = client;
        reader
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut replies = Vec::with_capacity(expected.len());
        loop {
            let n = reader.read(&mut chunk).unwrap_or_else(|e| {
                panic!(
                    "reader {c}: {e} after {got} of {} reply bytes",
                    expected.len()
                )
            });
            if n == 0 {
                break;
            }
            longest_wait = longest_wait.max(last_byte.elapsed());
            last_byte = Instant::now();
            got += n;
            replies.extend_from_slice(&chunk[..n]);
        }
        let took = started.elapsed();
        eprintln!("reader {c}: {got} bytes in {took:?}, longest wait {longest_wait:?}");
        assert!(replies == expected, "reader {c}: {got} reply bytes");
        assert!(
            took < Duration::from_secs(10) && longest_wait < Duration::from_secs(2),
            "reader {c}: {took:?} for {got} bytes, {longest_wait:?} without a byte"
        );
    }
    assert!(
        scrape(metrics)["oneshotd_connections_throttled"] > 0,
        "the non-readers no longer keep the budget spent"
    );
    for client in clients.into_iter().skip(READERS) {
        // Wakes its writer (blocked on a daemon that no longer reads it).
        let _ = client.shutdown(Shutdown::Both);
        reset(client);
    }
    for writer in writers {
        writer.join().unwrap();
    }
    daemon.stop();
}
