//! Hostile clients against the whole daemon: work linear in the bytes
//! received however they are segmented, and one memory budget for every
//! client that owes replies.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
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
