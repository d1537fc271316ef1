//! Hostile clients against the whole daemon: work linear in the bytes
//! received however they are segmented, and one memory budget for every
//! client that owes replies.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
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

    // Until the daemon is held up: nothing more received for 500 ms (what
    // the writers wrote can still be waiting in the kernel's buffers).
    let received = || scrape(metrics)["oneshotd_received_bytes_total{service=\"upper\"}"];
    let mut last = u64::MAX;
    daemon.wait_until(
        "the daemon to stop reading",
        Duration::from_secs(60),
        |_| {
            std::thread::sleep(Duration::from_millis(500));
            let now = received();
            std::mem::replace(&mut last, now) == now
        },
    );
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
        last >> 20,
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
