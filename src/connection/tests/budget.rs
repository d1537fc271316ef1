//! A connection against the memory budget: when it stops reading, and
//! how little it reads while the budget is spent.

use super::*;

/// What one step did, as far as the memory budget is concerned.
struct Stepped {
    next: Next,
    tally: Tally,
    /// What the step charged the budget.
    held: usize,
    /// Connections the budget counts throttled after it.
    throttled: usize,
}

/// One event step with `buffer_free` left of the memory budget.
fn step_with_budget(connection: &mut Connection, buffer_free: usize) -> Stepped {
    let mut scratch = Scratch::new();
    let budget = budget_with_free(buffer_free);
    let before = budget.held();
    let mut cx = Context {
        service: &Upper,
        clients: &Unlimited,
        budget: &budget,
        limits: Limits {
            max_line_bytes: 1 << 20,
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(60),
            tls_handshake_timeout_ms: 10_000,
        },
        scratch: &mut scratch,
        now: Instant::now(),
    };
    let next = connection
        .step(Stimulus::Event(Readiness::default()), &mut cx)
        .expect("an event always decides");
    Stepped {
        next,
        tally: scratch.tally,
        held: budget.held() - before,
        throttled: budget.throttled(),
    }
}

/// A client that never reads, on a socketpair whose buffers are full: what
/// it sends next is only answered into our memory.
fn a_client_that_never_reads() -> (Connection, UnixStream) {
    let (ours, client) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    client.set_nonblocking(true).unwrap();
    // Fill the kernel's queue towards the client.
    while (&ours).write(&[b'.'; 4096]).is_ok() {}
    let connection = Connection::new(ours.into(), ConnectionId(1), Peer::Unix, Instant::now());
    (connection, client)
}

/// Once the budget is spent, a connection that owes replies stops reading;
/// with room left it reads on. What it holds is reported either way.
#[test]
fn a_connection_that_owes_replies_stops_reading_once_the_budget_is_spent() {
    for (buffer_free, reads_on) in [(256 << 20, true), (0, false)] {
        let (mut connection, mut client) = a_client_that_never_reads();
        connection.output = b"OWED\n".to_vec();
        connection.may_hold = true;
        client.write_all(&b"line\n".repeat(100)).unwrap();
        let stepped = step_with_budget(&mut connection, buffer_free);
        let Next::Rearm(interest) = stepped.next else {
            panic!("{:?}", stepped.next)
        };
        assert_eq!(interest.read, reads_on, "free {buffer_free}");
        assert!(interest.write);
        let answered = if reads_on { 500 } else { 0 };
        assert_eq!(
            stepped.tally.received, answered as u64,
            "free {buffer_free}"
        );
        assert_eq!(stepped.held, connection.held());
        assert!(connection.held() >= 5 + answered, "free {buffer_free}");
        assert_eq!(stepped.throttled, usize::from(!reads_on));
    }
}

/// With the budget spent, a connection that owes nothing still reads, a
/// little at a time, once the kernel can take its replies; if it cannot,
/// the connection waits to be writable instead of reading.
#[test]
fn a_connection_that_owes_nothing_reads_a_little_while_the_budget_is_spent() {
    let (ours, mut client) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let mut connection = Connection::new(ours.into(), ConnectionId(1), Peer::Unix, Instant::now());
    client.write_all(&b"abc\n".repeat(4096)).unwrap();
    let Stepped { next, tally, .. } = step_with_budget(&mut connection, 0);
    assert_eq!(tally.received, READ_WHILE_SPENT as u64);
    assert!(
        matches!(next, Next::Rearm(Interest { read: true, .. })),
        "{next:?}"
    );

    let (mut connection, mut client) = a_client_that_never_reads();
    client.write_all(b"abc\n").unwrap();
    let Stepped {
        next,
        tally,
        throttled,
        ..
    } = step_with_budget(&mut connection, 0);
    assert_eq!(
        tally.received, 0,
        "nothing read while the kernel has no room"
    );
    assert!(
        matches!(
            next,
            Next::Rearm(Interest {
                read: false,
                write: true
            })
        ),
        "{next:?}"
    );
    assert_eq!(throttled, 1);
}

/// A lingering connection whose client keeps sending reads and drops a
/// bounded amount per step, then is re-armed: a client faster than the
/// discarding never holds the worker.
#[test]
fn a_lingering_connection_discards_a_bounded_amount_per_step() {
    let (ours, client) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    nix::sys::socket::setsockopt(&client, nix::sys::socket::sockopt::SndBuf, &(1 << 20)).unwrap();
    let now = Instant::now();
    let mut connection = Connection::new(ours.into(), ConnectionId(1), Peer::Unix, now);
    connection.phase = Phase::Lingering {
        since: now,
        why: Closing::Service,
        draining: false,
    };
    let sent = (&client)
        .write(&vec![b'x'; 4 * io::DISCARD_PER_STEP])
        .unwrap();
    assert!(sent > 2 * io::DISCARD_PER_STEP, "only {sent} bytes fit");
    let next = step_with_budget(&mut connection, 256 << 20).next;
    assert!(matches!(next, Next::Rearm(Interest::READ)), "{next:?}");
    let mut peek = [0u8; 1];
    let left = nix::sys::socket::recv(
        std::os::fd::AsRawFd::as_raw_fd(&connection.fd()),
        &mut peek,
        nix::sys::socket::MsgFlags::MSG_PEEK | nix::sys::socket::MsgFlags::MSG_DONTWAIT,
    );
    assert_eq!(left, Ok(1), "the rest is left for the next step");
}
