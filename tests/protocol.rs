//! Every bullet of the contract's protocol section, against the real binary.

use std::io::{BufReader, Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use crate::util::*;

#[test]
fn uppercases_ascii_and_keeps_every_other_byte() {
    let daemon = Daemon::builder("upper").spawn();
    let mut client = connect(daemon.addr());
    assert_eq!(
        roundtrip(&mut client, "hello World 123\n"),
        "HELLO WORLD 123\n"
    );
    assert_eq!(roundtrip(&mut client, "crlf\r\n"), "CRLF\r\n");
    assert_eq!(roundtrip(&mut client, "grüße ñ\n"), "GRüßE ñ\n");
    assert_eq!(roundtrip(&mut client, "\n"), "\n");

    // Every byte value but LF, in one line.
    let line: Vec<u8> = (0u8..=255).filter(|&b| b != b'\n').collect();
    client.write_all(&line).unwrap();
    client.write_all(b"\n").unwrap();
    let mut reply = vec![0u8; line.len() + 1];
    client.read_exact(&mut reply).unwrap();
    let mut expected = upper(&line);
    expected.push(b'\n');
    assert_eq!(reply, expected);
}

#[test]
fn pipelined_lines_come_back_in_order() {
    let daemon = Daemon::builder("pipeline").spawn();
    let mut client = connect(daemon.addr());
    let requests: String = (0..2000).map(|i| format!("line {i} abc\n")).collect();
    client.write_all(requests.as_bytes()).unwrap();
    let mut reader = BufReader::new(&client);
    for (i, reply) in read_lines(&mut reader, 2000).into_iter().enumerate() {
        assert_eq!(reply, format!("LINE {i} ABC\n"));
    }
}

#[test]
fn a_line_split_over_many_segments_is_one_request() {
    let daemon = Daemon::builder("split").spawn();
    let mut client = connect(daemon.addr());
    // TCP_NODELAY and a pause between writes make each piece its own segment.
    for piece in ["he", "l", "lo wo", "rld", "\nsec", "ond\n"] {
        client.write_all(piece.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut reader = BufReader::new(&client);
    assert_eq!(read_lines(&mut reader, 2), ["HELLO WORLD\n", "SECOND\n"]);
}

#[test]
fn too_long_line_gets_error_after_earlier_replies_then_close() {
    let daemon = Daemon::builder("toolong")
        .config("max_line_bytes = 16")
        .spawn();

    // Exactly the limit is fine; one more byte is not.
    let mut client = connect(daemon.addr());
    let at_limit = "a".repeat(16);
    assert_eq!(
        roundtrip(&mut client, &format!("{at_limit}\n")),
        format!("{}\n", "A".repeat(16))
    );
    client
        .write_all(format!("first\n{}\nnever\n", "b".repeat(17)).as_bytes())
        .unwrap();
    assert_eq!(read_to_end(&client), b"FIRST\nERR line too long\n");

    // Refused before its LF arrives, even if it never does.
    let mut client = connect(daemon.addr());
    client.write_all("c".repeat(100).as_bytes()).unwrap();
    assert_eq!(read_to_end(&client), b"ERR line too long\n");
}

#[test]
fn a_huge_line_is_refused_without_a_reset() {
    // The client is still sending when the server refuses the line; the
    // server keeps reading (and discarding) so its error reply arrives.
    let daemon = Daemon::builder("huge")
        .config("max_line_bytes = 1000")
        .spawn();
    let client = connect(daemon.addr());
    let writer = {
        let mut client = client.try_clone().unwrap();
        std::thread::spawn(move || {
            let chunk = vec![b'x'; 64 * 1024];
            for _ in 0..16 {
                if client.write_all(&chunk).is_err() {
                    break;
                }
            }
            let _ = client.shutdown(Shutdown::Write);
        })
    };
    assert_eq!(read_to_end(&client), b"ERR line too long\n");
    writer.join().unwrap();
}

#[test]
fn half_close_gets_every_reply_and_the_unterminated_last_line() {
    let daemon = Daemon::builder("halfclose").spawn();
    let mut client = connect(daemon.addr());
    let mut requests = String::new();
    let mut expected = String::new();
    for i in 0..500 {
        requests.push_str(&format!("request number {i}\n"));
        expected.push_str(&format!("REQUEST NUMBER {i}\n"));
    }
    requests.push_str("no newline at the end");
    expected.push_str("NO NEWLINE AT THE END\n");
    client.write_all(requests.as_bytes()).unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(String::from_utf8(read_to_end(&client)).unwrap(), expected);
}

#[test]
fn idle_connection_is_closed_after_idle_timeout() {
    let daemon = Daemon::builder("idle")
        .config("idle_timeout_ms = 300")
        .spawn();
    let mut client = connect(daemon.addr());
    let start = Instant::now();
    assert_eq!(roundtrip(&mut client, "x\n"), "X\n");
    assert_eq!(read_to_end(&client), b"");
    let idle = start.elapsed();
    assert!(idle >= Duration::from_millis(300), "closed after {idle:?}");
    assert!(idle < Duration::from_secs(3), "closed after {idle:?}");
}

#[test]
fn an_active_connection_is_not_idle() {
    let daemon = Daemon::builder("active")
        .config("idle_timeout_ms = 300")
        .spawn();
    let mut client = connect(daemon.addr());
    // Four times the idle timeout, but never idle for more than a third of it.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1200) {
        assert_eq!(roundtrip(&mut client, "ping\n"), "PING\n");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn incomplete_line_times_out_after_earlier_replies() {
    let daemon = Daemon::builder("reqtimeout")
        .config("request_timeout_ms = 300")
        .spawn();
    let client = connect(daemon.addr());
    let start = Instant::now();
    (&client).write_all(b"done\nnot do").unwrap();
    // Trickling bytes does not extend the deadline.
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(50));
        (&client).write_all(b"n").unwrap();
    }
    assert_eq!(read_to_end(&client), b"DONE\nERR request timeout\n");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "timed out after {took:?}"
    );
    assert!(took < Duration::from_secs(3), "timed out after {took:?}");
}

#[test]
fn a_slow_reader_gets_every_reply_and_memory_stays_bounded() {
    let daemon = Daemon::builder("slowreader").config("workers = 2").spawn();
    let client = connect(daemon.addr());
    client
        .set_write_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let baseline_kib = daemon.rss_kib();

    // 32 MiB of 64-byte lines, written without reading.
    const LINES: usize = 512 * 1024;
    let line = |i: usize| format!("slow reader line {i:012} abcdefghijklmnopqrstuvwxyz0123456\n");
    assert_eq!(line(0).len(), 64);
    let writer = {
        let mut client = client.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut batch = String::new();
            for i in 0..LINES {
                batch.push_str(&line(i));
                if batch.len() >= 1 << 20 {
                    client.write_all(batch.as_bytes()).unwrap();
                    batch.clear();
                }
            }
            client.write_all(batch.as_bytes()).unwrap();
        })
    };

    // The server must stop reading: wait until the writer is blocked
    // (nothing moves for a while) and look at the daemon's memory then.
    let mut last = u64::MAX;
    let mut stable = 0;
    let mut peak_kib = 0;
    let deadline = Instant::now() + SOON;
    while stable < 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        let rss = daemon.rss_kib();
        peak_kib = peak_kib.max(rss);
        if rss == last {
            stable += 1;
        } else {
            stable = 0;
            last = rss;
        }
    }
    assert!(
        !writer.is_finished(),
        "32 MiB cannot all be buffered: the writer must be throttled"
    );

    let mut reader = BufReader::with_capacity(1 << 16, &client);
    let mut reply = String::new();
    for i in 0..LINES {
        reply.clear();
        std::io::BufRead::read_line(&mut reader, &mut reply).unwrap();
        assert_eq!(reply, line(i).to_ascii_uppercase(), "reply {i}");
        if i % 65536 == 0 {
            peak_kib = peak_kib.max(daemon.rss_kib());
        }
    }
    writer.join().unwrap();
    let growth = peak_kib.saturating_sub(baseline_kib);
    eprintln!("slow reader: baseline {baseline_kib} KiB, peak {peak_kib} KiB, growth {growth} KiB");
    assert!(
        growth < 16 * 1024,
        "daemon RSS grew by {growth} KiB for one slow reader"
    );
}

#[test]
fn unix_socket_from_config_replaces_a_stale_socket_file() {
    let dir = TestDir::new("stale");
    let path = dir.join("oneshotd.sock");
    // A socket file nobody listens on any more.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let mut daemon = Daemon::builder("unixbind")
        .config(&format!("listen = [\"{}\"]", path.display()))
        .spawn();
    let mut client = std::os::unix::net::UnixStream::connect(&path).unwrap();
    client.set_read_timeout(Some(SOON)).unwrap();
    client.write_all(b"over unix\n").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&client), b"OVER UNIX\n");
    assert!(
        daemon.stderr().contains("removing stale socket file"),
        "{}",
        daemon.stderr()
    );
    daemon.stop();
    assert!(
        !path.exists(),
        "the socket file we bound is removed at exit"
    );
}

/// Every per-connection log line names the client: accepted and closed.
#[test]
fn per_connection_log_lines_name_the_peer() {
    let mut daemon = Daemon::builder("peer-logs")
        .config("log_level = \"debug\"")
        .spawn();
    let mut client = connect(daemon.addr());
    let local = client.local_addr().unwrap();
    assert_eq!(roundtrip(&mut client, "who\n"), "WHO\n");
    client.shutdown(Shutdown::Write).unwrap();
    assert!(read_to_end(&client).is_empty());
    let closed = format!("peer={local}");
    daemon.wait_until("the close to be logged", SOON, |d| {
        d.stderr()
            .lines()
            .any(|l| l.contains("connection closed") && l.contains(&closed))
    });
    assert!(daemon
        .stderr()
        .lines()
        .any(|l| l.contains("connection accepted") && l.contains(&closed)));
    daemon.stop();
}
