//! What idle means: no progress. A client that reads its replies steadily,
//! however slowly, is never closed while they are on their way, even when
//! the kernel (not the daemon) holds them; a client that stops reading for
//! good is closed about `idle_timeout_ms` after its output stopped moving.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::thread;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};

use crate::util::*;

const LINE_BYTES: usize = 4096;

/// Small, so that the replies queue up on the daemon's side, where the
/// kernel's send queue (several MiB on loopback) holds most of them.
const SMALL_RECEIVE_BUFFER: usize = 64 * 1024;

/// Request `n`: 4095 bytes of lowercase text naming `n`, then LF.
fn request(n: usize) -> Vec<u8> {
    let mut line = format!("line {n:08} ").into_bytes();
    line.extend(std::iter::repeat_n(
        b'a' + (n % 26) as u8,
        LINE_BYTES - 1 - line.len(),
    ));
    line.push(b'\n');
    line
}

#[test]
fn a_slow_steady_reader_gets_every_reply() {
    const LINES: usize = 1536; // 6 MiB of replies
    let daemon = Daemon::builder("slowreader")
        .config("idle_timeout_ms = 1000")
        .spawn();
    let client = connect_with_receive_buffer(daemon.addr(), SMALL_RECEIVE_BUFFER);
    let mut writer = client.try_clone().unwrap();
    let sender = thread::spawn(move || {
        for n in 0..LINES {
            writer.write_all(&request(n)).unwrap();
        }
    });
    // Reads nothing for a while (well within the idle timeout; the daemon
    // throttles it), then about 800 KB/s: far slower than the daemon
    // writes, never stopping.
    thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let mut reader = client;
    let mut expected = (0..LINES).flat_map(|n| upper(&request(n)));
    let mut received = 0usize;
    let mut chunk = vec![0u8; 16 * 1024];
    while received < LINES * LINE_BYTES {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "reading took too long"
        );
        let n = match reader.read(&mut chunk) {
            Ok(0) => panic!(
                "closed after {received} of {} reply bytes",
                LINES * LINE_BYTES
            ),
            Ok(n) => n,
            Err(e) => panic!("{e} after {received} of {} reply bytes", LINES * LINE_BYTES),
        };
        for (offset, &byte) in chunk[..n].iter().enumerate() {
            assert_eq!(
                Some(byte),
                expected.next(),
                "reply byte {} differs",
                received + offset
            );
        }
        received += n;
        thread::sleep(Duration::from_millis(20));
    }
    sender.join().unwrap();
    assert!(
        !daemon.stderr().contains("idle timeout"),
        "{}",
        daemon.stderr()
    );
}

#[test]
fn a_client_that_stops_reading_is_closed_after_its_output_stops_moving() {
    let idle = Duration::from_millis(500);
    let daemon = Daemon::builder("stopsreading")
        .config("idle_timeout_ms = 500")
        .spawn();
    let client = connect_with_receive_buffer(daemon.addr(), SMALL_RECEIVE_BUFFER);
    let connected = Instant::now();
    client.set_nonblocking(true).unwrap();
    // Sends until the daemon stops reading (throttled: its replies are
    // not taken), and never reads a byte.
    let mut writer = &client;
    let mut n = 0;
    let mut pending = request(n);
    let mut last_write = Instant::now();
    loop {
        assert!(connected.elapsed() < SOON, "the daemon never throttled");
        match writer.write(&pending) {
            Ok(written) => {
                last_write = Instant::now();
                pending.drain(..written);
                if pending.is_empty() {
                    n += 1;
                    pending = request(n);
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let mut fds = [PollFd::new(client.as_fd(), PollFlags::POLLOUT)];
                let ready = nix::poll::poll(&mut fds, PollTimeout::from(200u16)).unwrap();
                if ready == 0 {
                    break;
                }
            }
            Err(e) => panic!("closed while still sending: {e}"),
        }
    }
    // Its output stopped moving at the latest when its sends stuck.
    let stuck = last_write;
    let mut fds = [PollFd::new(
        client.as_fd(),
        PollFlags::from_bits_retain(nix::libc::POLLRDHUP) | PollFlags::POLLHUP | PollFlags::POLLERR,
    )];
    let ready = nix::poll::poll(&mut fds, PollTimeout::from(10_000u16)).unwrap();
    let closed = Instant::now();
    assert_eq!(ready, 1, "never closed");
    assert!(
        closed - connected >= idle,
        "closed after {:?}, before the idle timeout",
        closed - connected
    );
    assert!(
        closed - stuck < idle + Duration::from_secs(2),
        "closed {:?} after it stopped reading",
        closed - stuck
    );
    daemon.wait_until("the idle close is logged", SOON, |d| {
        d.stderr().contains("idle timeout")
    });
}
