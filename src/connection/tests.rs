//! The connection and the "upper" service together, on a socketpair:
//! for any byte stream split into any segments, the replies equal the
//! reference model.
use super::*;
use crate::budget::{Budget, Ledger};
use crate::service::{Peer, Served, Service};
use crate::step::{Admission, ClientAdmission, Interest, Tally};
use crate::upper::{Upper, LINE_TOO_LONG};
use proptest::prelude::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

/// A budget with `free` bytes left (none: spent).
fn budget_with_free(free: usize) -> Budget {
    let limit = 1 << 30;
    let budget = Budget::new(limit);
    budget.charge(&mut Ledger::immediate(), (limit - free) as isize, 0);
    budget
}

/// No per-client limit: these tests' connections have no PROXY header.
struct Unlimited;

impl ClientAdmission for Unlimited {
    fn admit(&self, _peer: &Peer, _service: u8) -> Admission {
        Admission::Uncounted
    }
}

/// What the contract says the replies to `stream` are, the client
/// having half-closed after it.
fn model(stream: &[u8], max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for line in stream.split_inclusive(|&b| b == b'\n') {
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        if content.len() > max {
            out.extend_from_slice(LINE_TOO_LONG);
            break;
        }
        out.extend(content.iter().map(u8::to_ascii_uppercase));
        out.push(b'\n');
    }
    out
}

/// Feeds `segments` one event at a time, then half-closes; returns
/// everything the connection wrote back before closing.
fn run(segments: &[Vec<u8>], max: usize) -> Vec<u8> {
    let (ours, mut client) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    client.set_nonblocking(true).unwrap();
    let mut scratch = Scratch::new();
    let now = Instant::now();
    let mut connection = Connection::new(ours.into(), ConnectionId(1), Peer::Unix, now);
    let limits = Limits {
        max_line_bytes: max,
        idle_timeout: Duration::from_secs(60),
        request_timeout: Duration::from_secs(60),
        tls_handshake_timeout_ms: 10_000,
    };
    let mut replies = Vec::new();
    let reader = client.try_clone().unwrap();
    let mut step = |connection: &mut Connection, replies: &mut Vec<u8>| {
        let mut cx = Context {
            service: &Upper,
            clients: &Unlimited,
            budget: &Budget::new(256 << 20),
            limits,
            scratch: &mut scratch,
            now,
        };
        let next = connection
            .step(Stimulus::Event(Readiness::default()), &mut cx)
            .expect("an event always decides");
        let mut buf = [0u8; 4096];
        while let Ok(n) = (&reader).read(&mut buf) {
            if n == 0 {
                break;
            }
            replies.extend_from_slice(&buf[..n]);
        }
        next
    };
    for segment in segments {
        if segment.is_empty() {
            continue;
        }
        client.write_all(segment).unwrap();
        if let Next::Close(_) = step(&mut connection, &mut replies) {
            return replies;
        }
    }
    client.shutdown(std::net::Shutdown::Write).unwrap();
    for _ in 0..100 {
        if let Next::Close(_) = step(&mut connection, &mut replies) {
            return replies;
        }
    }
    panic!("the connection never closed after the client's EOF");
}

fn segments() -> impl Strategy<Value = (Vec<Vec<u8>>, usize)> {
    // Bytes biased towards LF and letters, so lines are short and many.
    let byte = prop_oneof![
        3 => Just(b'\n'),
        10 => b'a'..=b'z',
        2 => b'A'..=b'Z',
        2 => any::<u8>(),
    ];
    (
        prop::collection::vec(prop::collection::vec(byte, 0..40), 0..30),
        1usize..48,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn replies_match_the_model_for_any_segmentation((segments, max) in segments()) {
        let stream: Vec<u8> = segments.concat();
        prop_assert_eq!(run(&segments, max), model(&stream, max));
    }
}

#[test]
fn model_examples() {
    assert_eq!(model(b"ab\ncd", 8), b"AB\nCD\n");
    assert_eq!(model(b"ab\n123456789\nzz\n", 8), b"AB\nERR line too long\n");
}

/// The idle clock on the housekeeper's looks, a quarter of the idle timeout
/// apart: one request answered at `start`, then `read_reply_after` looks
/// before the client reads the reply (if ever). Returns the look at which
/// the connection closed as idle.
fn idle_close_look(read_reply_after: Option<u32>) -> u32 {
    let (ours, mut client) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let idle = Duration::from_secs(1);
    let limits = Limits {
        max_line_bytes: 1024,
        idle_timeout: idle,
        request_timeout: Duration::from_secs(60),
        tls_handshake_timeout_ms: 10_000,
    };
    let mut scratch = Scratch::new();
    let start = Instant::now();
    let mut connection = Connection::new(ours.into(), ConnectionId(1), Peer::Unix, start);
    let mut step = |connection: &mut Connection, stimulus, now| {
        let mut cx = Context {
            service: &Upper,
            clients: &Unlimited,
            budget: &Budget::new(256 << 20),
            limits,
            scratch: &mut scratch,
            now,
        };
        connection.step(stimulus, &mut cx)
    };
    client.write_all(b"hi\n").unwrap();
    let next = step(
        &mut connection,
        Stimulus::Event(Readiness::default()),
        start,
    );
    assert!(matches!(next, Some(Next::Rearm(_))), "{next:?}");
    for look in 1..=20 {
        if read_reply_after == Some(look - 1) {
            let mut reply = [0u8; 3];
            client.read_exact(&mut reply).unwrap();
            assert_eq!(&reply, b"HI\n");
        }
        match step(&mut connection, Stimulus::Tick, start + idle / 4 * look) {
            Some(Next::Close(CloseReason::Idle)) => return look,
            None => {}
            other => panic!("look {look}: {other:?}"),
        }
    }
    panic!("never closed as idle");
}

/// The first look after a request does not ask the kernel what is owed
/// (the request was progress), and the second only measures: neither may
/// count as progress, so a client that took its reply before the second
/// look, or never, is idle from its request.
#[test]
fn a_quiet_connection_is_idle_from_its_last_request() {
    assert_eq!(idle_close_look(Some(0)), 4);
    assert_eq!(idle_close_look(Some(1)), 4);
    assert_eq!(idle_close_look(None), 4);
}

/// Replies taken after the second look are progress, seen at the next.
#[test]
fn replies_taken_after_the_second_look_are_progress() {
    assert_eq!(idle_close_look(Some(2)), 3 + 4);
    assert_eq!(idle_close_look(Some(3)), 4 + 4);
}

/// A drained connection with nothing left to read or to deliver closes in
/// its drain step without shutting down first (the shutdown would wake the
/// epoll set it is still registered in): the client sees its EOF from the
/// close itself. One whose reply the client has not taken yet shuts down
/// and lingers until it does.
#[test]
fn a_drained_idle_connection_closes_without_shutting_down_first() {
    let limits = Limits {
        max_line_bytes: 1024,
        idle_timeout: Duration::from_secs(60),
        request_timeout: Duration::from_secs(60),
        tls_handshake_timeout_ms: 10_000,
    };
    let mut scratch = Scratch::new();
    let start = Instant::now();
    let mut step = |connection: &mut Connection, stimulus| {
        let mut cx = Context {
            service: &Upper,
            clients: &Unlimited,
            budget: &Budget::new(256 << 20),
            limits,
            scratch: &mut scratch,
            now: start,
        };
        connection.step(stimulus, &mut cx)
    };
    let mut served = |request: &[u8], take_reply: bool| {
        let (ours, mut client) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        // A missing EOF fails the test instead of hanging it.
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut connection = Connection::new(ours.into(), ConnectionId(1), Peer::Unix, start);
        client.write_all(request).unwrap();
        let next = step(&mut connection, Stimulus::Event(Readiness::default()));
        assert!(matches!(next, Some(Next::Rearm(_))), "{next:?}");
        if take_reply {
            let mut reply = vec![0u8; request.len()];
            client.read_exact(&mut reply).unwrap();
            assert_eq!(reply, request.to_ascii_uppercase());
        }
        client.set_nonblocking(true).unwrap();
        let next = step(&mut connection, Stimulus::Drain);
        (connection, client, next)
    };

    let (connection, mut client, next) = served(b"hi\n", true);
    assert!(
        matches!(next, Some(Next::Close(CloseReason::Drained))),
        "{next:?}"
    );
    let mut buf = [0u8; 8];
    let before_close = client.read(&mut buf);
    assert!(
        matches!(&before_close, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "no EOF before the close: {before_close:?}"
    );
    drop(connection);
    assert_eq!(client.read(&mut buf).unwrap(), 0, "EOF from the close");

    let (mut connection, mut client, next) = served(b"hi\n", false);
    assert!(matches!(next, Some(Next::Rearm(_))), "{next:?}");
    let mut replies = Vec::new();
    client.set_nonblocking(false).unwrap();
    client.read_to_end(&mut replies).unwrap();
    assert_eq!(replies, b"HI\n", "the reply, then the shutdown's EOF");
    let next = step(&mut connection, Stimulus::Tick);
    assert!(
        matches!(next, Some(Next::Close(CloseReason::Drained))),
        "{next:?}"
    );
}

/// A service that never consumes and never refuses: what a careless
/// protocol would do with a request it cannot frame.
struct Hoarder;

impl Service for Hoarder {
    fn serve(&self, _input: crate::service::Input<'_>, _output: &mut Vec<u8>) -> Served {
        Served::default()
    }

    fn request_timeout(&self, _output: &mut Vec<u8>) {}

    fn request_too_long(&self, output: &mut Vec<u8>) {
        output.extend_from_slice(b"too long\n");
    }
}

/// The connection, not the service, bounds what it buffers: past
/// `max_request_bytes` unconsumed it answers with the service's
/// `request_too_long` and closes, whatever the service did.
#[test]
fn the_connection_refuses_input_a_service_leaves_unconsumed_past_the_limit() {
    let (ours, mut client) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let limits = Limits {
        max_line_bytes: 100,
        idle_timeout: Duration::from_secs(60),
        request_timeout: Duration::from_secs(60),
        tls_handshake_timeout_ms: 10_000,
    };
    let mut scratch = Scratch::new();
    let now = Instant::now();
    let mut connection = Connection::new(ours.into(), ConnectionId(1), Peer::Unix, now);
    let mut step = |connection: &mut Connection| {
        let mut cx = Context {
            service: &Hoarder,
            clients: &Unlimited,
            budget: &Budget::new(256 << 20),
            limits,
            scratch: &mut scratch,
            now,
        };
        connection.step(Stimulus::Event(Readiness::default()), &mut cx)
    };
    client.write_all(&[b'x'; 100]).unwrap();
    assert!(matches!(step(&mut connection), Some(Next::Rearm(_))));
    assert_eq!(connection.input.len(), 100, "at the limit: kept");
    client.write_all(b"y").unwrap();
    let next = step(&mut connection);
    assert!(connection.input.is_empty(), "past it: nothing kept");
    assert!(
        matches!(
            connection.phase,
            Phase::Lingering {
                why: Closing::Service,
                ..
            }
        ),
        "{:?} then {next:?}",
        connection.phase
    );
    let mut reply = Vec::new();
    client.read_to_end(&mut reply).unwrap();
    assert_eq!(reply, b"too long\n");
}

mod budget;
