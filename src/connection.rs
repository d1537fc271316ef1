//! One client connection: its buffers, its I/O and its state machine.
//!
//! A [`Connection`] is only ever touched by the worker that holds its epoll
//! event (or by the housekeeper, under the same slot lock, for timeouts and
//! drain). It reads, hands bytes to the [`Service`], writes replies, and
//! tells the dispatcher what to do next ([`Next`]); it never sees epoll.
//!
//! Buffers are allocated only while needed: an idle connection holds no
//! heap memory at all. Reads go into the worker's scratch buffer, replies
//! are written from the worker's scratch output straight to the socket, and
//! only the bytes the kernel did not take (a partial write) or the start of
//! an incomplete request are copied into the connection.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{self, MsgFlags, Shutdown};

use crate::dispatcher::epoll::{Interest, Readiness};
use crate::service::{ConnectionId, Input, Service};
use crate::sys;

/// Pending output past which the connection stops reading: a client that
/// sends but never reads is throttled here instead of growing our memory.
pub(crate) const OUTPUT_HIGH_WATER: usize = 1 << 20;

/// Reads per event before the worker re-arms and moves on, so that one busy
/// connection cannot starve the others on its worker. Nothing is lost by
/// stopping: `EPOLL_CTL_MOD` fires again at once if bytes are still queued.
const READS_PER_EVENT: usize = 4;

/// Longest a closing connection keeps reading (and discarding) what the
/// client still sends, so that closing with unread input does not turn our
/// last reply into a reset.
pub(crate) const LINGER: Duration = Duration::from_secs(2);

/// How long a drain waits for the first request of a connection that was
/// accepted but has not sent a byte yet. Clients send right after connecting,
/// but the drain can catch a connection between the two; closing it then
/// would lose a connection attempt that was already accepted.
pub(crate) const DRAIN_GRACE: Duration = Duration::from_millis(250);

/// The per-worker buffers a connection borrows while it is being handled.
#[derive(Debug)]
pub(crate) struct Scratch {
    input: Box<[u8]>,
    output: Vec<u8>,
}

impl Scratch {
    pub(crate) fn new() -> Self {
        Scratch {
            input: vec![0; 64 * 1024].into_boxed_slice(),
            output: Vec::with_capacity(64 * 1024),
        }
    }
}

/// The limits in force, as of the event being handled (reloadable).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_line_bytes: usize,
    pub idle_timeout: Duration,
    pub request_timeout: Duration,
}

/// Everything a connection needs from its worker for one step.
pub(crate) struct Context<'a> {
    pub service: &'a dyn Service,
    pub limits: Limits,
    pub scratch: &'a mut Scratch,
    pub now: Instant,
    /// The daemon is draining: read what the kernel holds, answer it, close.
    pub draining: bool,
}

/// What the dispatcher should do with the connection after a step.
#[derive(Debug)]
pub(crate) enum Next {
    /// Re-arm for this interest (never empty).
    Rearm(Interest),
    /// Deregister and close.
    Close(CloseReason),
}

/// Why a connection was closed (logged at debug).
#[derive(Debug)]
pub(crate) enum CloseReason {
    /// The client half-closed and every reply was delivered.
    PeerClosed,
    /// The peer reset the connection or hung up both directions.
    Hangup,
    /// A socket error.
    Error(io::Error),
    /// The service asked to close (e.g. a line too long), replies delivered.
    ServiceClosed,
    /// A request did not complete in time, the timeout reply delivered.
    RequestTimeout,
    /// No progress in either direction for `idle_timeout_ms`.
    Idle,
    /// Closed by a drain after its replies were delivered.
    Drained,
    /// Our replies were delivered but the client kept sending past [`LINGER`].
    LingerExpired,
    /// The service panicked while serving it.
    Panic,
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::PeerClosed => f.write_str("client closed"),
            CloseReason::Hangup => f.write_str("hang-up"),
            CloseReason::Error(e) => write!(f, "error: {e}"),
            CloseReason::ServiceClosed => f.write_str("closed by the service"),
            CloseReason::RequestTimeout => f.write_str("request timeout"),
            CloseReason::Idle => f.write_str("idle timeout"),
            CloseReason::Drained => f.write_str("drained"),
            CloseReason::LingerExpired => f.write_str("client kept sending after close"),
            CloseReason::Panic => f.write_str("service panicked"),
        }
    }
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading requests and writing replies.
    Open,
    /// No more input is served; closes once the pending replies are out.
    Closing(Closing),
    /// Replies delivered and our side shut down; discarding client input
    /// until its EOF or [`LINGER`] after `since`.
    Lingering { since: Instant, why: Closing },
}

/// Why a connection stopped serving input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    Service,
    RequestTimeout,
    Drain,
}

impl Closing {
    fn reason(self) -> CloseReason {
        match self {
            Closing::Service => CloseReason::ServiceClosed,
            Closing::RequestTimeout => CloseReason::RequestTimeout,
            Closing::Drain => CloseReason::Drained,
        }
    }
}

/// A client connection's state.
#[derive(Debug)]
pub(crate) struct Connection {
    fd: OwnedFd,
    id: ConnectionId,
    /// The start of an incomplete request, kept until the rest arrives.
    input: Vec<u8>,
    /// Replies the kernel has not taken yet: `output[sent..]` is pending.
    output: Vec<u8>,
    sent: usize,
    /// Last time a byte was received or sent (the idle clock).
    last_progress: Instant,
    /// When the first byte of the incomplete request in `input` arrived.
    request_started: Option<Instant>,
    /// The client half-closed (read returned 0).
    peer_closed: bool,
    /// The client has sent at least one byte. Until then `last_progress`
    /// is the time the connection was accepted.
    spoke: bool,
    phase: Phase,
}

impl Connection {
    /// Wraps a freshly accepted, nonblocking socket.
    pub(crate) fn new(fd: OwnedFd, id: ConnectionId, now: Instant) -> Self {
        Connection {
            fd,
            id,
            input: Vec::new(),
            output: Vec::new(),
            sent: 0,
            last_progress: now,
            request_started: None,
            peer_closed: false,
            spoke: false,
            phase: Phase::Open,
        }
    }

    pub(crate) fn id(&self) -> ConnectionId {
        self.id
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn pending(&self) -> usize {
        self.output.len() - self.sent
    }

    fn throttled(&self) -> bool {
        self.pending() > OUTPUT_HIGH_WATER
    }

    /// Handles one readiness event: flush, read and serve, decide.
    pub(crate) fn on_event(&mut self, ready: Readiness, cx: &mut Context<'_>) -> Next {
        if ready.error {
            let error = socket::getsockopt(&self.fd, socket::sockopt::SocketError)
                .map(io::Error::from_raw_os_error)
                .unwrap_or_else(io::Error::from);
            return Next::Close(CloseReason::Error(error));
        }
        if let Phase::Lingering { why, .. } = self.phase {
            return self.linger(why, cx);
        }
        if ready.hangup {
            // Both directions are gone (typically a reset): nothing we
            // write can be delivered any more.
            return Next::Close(CloseReason::Hangup);
        }
        if let Err(e) = self.flush(cx.now) {
            return Next::Close(CloseReason::Error(e));
        }
        if let Err(e) = self.read_and_serve(cx) {
            return Next::Close(CloseReason::Error(e));
        }
        if cx.draining && self.phase == Phase::Open && !self.awaiting_first_request(cx.now) {
            self.stop_input(Closing::Drain);
        }
        self.next(cx)
    }

    /// Accepted moments ago and silent so far: a drain gives it
    /// [`DRAIN_GRACE`] to send its request rather than closing it unanswered.
    fn awaiting_first_request(&self, now: Instant) -> bool {
        !self.spoke && !self.peer_closed && now < self.last_progress + DRAIN_GRACE
    }

    /// Checks the connection's deadlines; `None` leaves it as it is.
    pub(crate) fn on_tick(&mut self, cx: &mut Context<'_>) -> Option<Next> {
        let now = cx.now;
        match self.phase {
            Phase::Lingering { since, why } if now >= since + LINGER => {
                return Some(Next::Close(match why {
                    Closing::Service => CloseReason::LingerExpired,
                    other => other.reason(),
                }));
            }
            // A lingering connection gets no event when the client reads
            // our last bytes; during a drain, look again each tick.
            Phase::Lingering { why, .. } if cx.draining => return Some(self.linger(why, cx)),
            Phase::Open if cx.draining && !self.awaiting_first_request(now) => {
                // Its drain grace ended without a request.
                self.stop_input(Closing::Drain);
                return Some(self.next(cx));
            }
            Phase::Open => {
                // A throttled connection is not reading, so its incomplete
                // request cannot be the client's fault.
                let started = self.request_started.filter(|_| !self.throttled());
                if started.is_some_and(|t| now >= t + cx.limits.request_timeout) {
                    self.stop_input(Closing::RequestTimeout);
                    let start = self.output.len();
                    cx.service.request_timeout(self.id, &mut self.output);
                    debug_assert!(self.output.len() > start, "a timeout reply is owed");
                    if let Err(e) = self.flush(now) {
                        return Some(Next::Close(CloseReason::Error(e)));
                    }
                    return Some(self.next(cx));
                }
            }
            _ => {}
        }
        if now >= self.last_progress + cx.limits.idle_timeout {
            return Some(Next::Close(CloseReason::Idle));
        }
        None
    }

    /// Reads what may be read now and serves it. Bounded per event unless
    /// draining, when everything the kernel held is read, even past the
    /// throttle: at most a receive buffer's worth, so that a client still
    /// sending cannot keep the drain reading forever.
    fn read_and_serve(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let mut reads = 0;
        let mut drain_budget = if cx.draining {
            socket::getsockopt(&self.fd, socket::sockopt::RcvBuf).unwrap_or(1 << 20)
        } else {
            usize::MAX
        };
        while self.phase == Phase::Open && !self.peer_closed && drain_budget > 0 {
            if self.throttled() && !cx.draining {
                break;
            }
            let n = match receive(self.fd.as_fd(), &mut cx.scratch.input) {
                Ok(n) => n,
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
            if n == 0 {
                self.peer_closed = true;
                self.serve(0, cx)?;
                break;
            }
            self.last_progress = cx.now;
            self.spoke = true;
            self.serve(n, cx)?;
            reads += 1;
            drain_budget = drain_budget.saturating_sub(n);
            // A short read means the socket is (very likely) empty; skipping
            // the read that would return EAGAIN is safe because re-arming
            // re-checks readiness.
            let drained = n < cx.scratch.input.len();
            if !cx.draining && (drained || reads == READS_PER_EVENT) {
                break;
            }
        }
        Ok(())
    }

    /// Serves `scratch.input[..fresh]` after whatever was buffered, then
    /// writes the replies.
    fn serve(&mut self, fresh: usize, cx: &mut Context<'_>) -> io::Result<()> {
        let Scratch { input, output } = &mut *cx.scratch;
        let fresh = &input[..fresh];
        // Replies go straight from the worker's buffer to the socket unless
        // older ones are still queued, which they must follow.
        let direct = self.pending() == 0;
        let out = if direct {
            output.clear();
            output
        } else {
            &mut self.output
        };
        let mut request = Input {
            connection: self.id,
            bytes: fresh,
            eof: self.peer_closed,
            max_request_bytes: cx.limits.max_line_bytes,
        };
        let served = if self.input.is_empty() {
            let served = cx.service.serve(request, out);
            self.input.extend_from_slice(&fresh[served.consumed..]);
            served
        } else {
            self.input.extend_from_slice(fresh);
            request.bytes = &self.input;
            let served = cx.service.serve(request, out);
            self.input.drain(..served.consumed);
            served
        };
        if self.input.is_empty() {
            self.input = Vec::new();
            self.request_started = None;
        } else if served.consumed > 0 || self.request_started.is_none() {
            self.request_started = Some(cx.now);
        }
        if served.close {
            self.stop_input(Closing::Service);
        }
        if direct {
            let written = write_some(self.fd.as_fd(), &cx.scratch.output)?;
            if written > 0 {
                self.last_progress = cx.now;
            }
            self.output.extend_from_slice(&cx.scratch.output[written..]);
            Ok(())
        } else {
            self.flush(cx.now)
        }
    }

    /// Stops serving input; pending replies are still delivered.
    fn stop_input(&mut self, why: Closing) {
        self.phase = Phase::Closing(why);
        self.input = Vec::new();
        self.request_started = None;
    }

    /// Writes pending replies until done or the kernel's buffer is full.
    fn flush(&mut self, now: Instant) -> io::Result<()> {
        if self.pending() == 0 {
            return Ok(());
        }
        let written = write_some(self.fd.as_fd(), &self.output[self.sent..])?;
        if written > 0 {
            self.last_progress = now;
        }
        self.sent += written;
        if self.sent == self.output.len() {
            // Release the memory: an idle connection holds no buffer.
            self.output = Vec::new();
            self.sent = 0;
        } else if self.sent > self.output.len() / 2 {
            self.output.drain(..self.sent);
            self.sent = 0;
        }
        Ok(())
    }

    /// Reads and drops input while lingering; closes at the client's EOF.
    /// During a drain it closes as soon as nothing is left in either queue:
    /// no client bytes unread (so the close sends a FIN, not a reset) and
    /// none of ours unacknowledged (so nothing a reset could destroy).
    fn linger(&mut self, why: Closing, cx: &Context<'_>) -> Next {
        let mut sink = [0u8; 4096];
        loop {
            match receive(self.fd.as_fd(), &mut sink) {
                Ok(0) => return Next::Close(why.reason()),
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => break,
                Err(_) => return Next::Close(why.reason()),
            }
        }
        if cx.draining && matches!(sys::unsent_bytes(self.fd.as_fd()), Ok(0)) {
            return Next::Close(why.reason());
        }
        Next::Rearm(Interest::READ)
    }

    /// The decision after a step: what to wait for, or close.
    fn next(&mut self, cx: &Context<'_>) -> Next {
        let pending = self.pending() > 0;
        match self.phase {
            Phase::Open => {
                if self.peer_closed && !pending {
                    return Next::Close(CloseReason::PeerClosed);
                }
                Next::Rearm(Interest {
                    read: !self.peer_closed && !self.throttled(),
                    write: pending,
                })
            }
            Phase::Closing(_) if pending => Next::Rearm(Interest {
                read: false,
                write: true,
            }),
            Phase::Closing(why) => {
                if self.peer_closed {
                    return Next::Close(why.reason());
                }
                // Closing now with client bytes unread would send a reset,
                // which can destroy our last reply before the client reads
                // it. Shut our side down and drain theirs for a while.
                match socket::shutdown(self.fd.as_raw_fd(), Shutdown::Write) {
                    Ok(()) => {
                        self.phase = Phase::Lingering { since: cx.now, why };
                        self.linger(why, cx)
                    }
                    Err(_) => Next::Close(why.reason()),
                }
            }
            Phase::Lingering { .. } => Next::Rearm(Interest::READ),
        }
    }
}

/// Reads what the socket holds, up to `buffer`'s length. `recv(2)` rather
/// than `read(2)`: the same bytes, without the VFS layer `read` goes
/// through first (perf put that at ~2 % of a worker's CPU at 50
/// connections × pipeline 1).
fn receive(fd: BorrowedFd<'_>, buffer: &mut [u8]) -> nix::Result<usize> {
    socket::recv(fd.as_raw_fd(), buffer, MsgFlags::empty())
}

/// Writes as much of `bytes` as the socket takes without blocking. Uses
/// `MSG_NOSIGNAL`: a peer that has gone away is an `EPIPE` for this
/// connection, never a `SIGPIPE` for the process.
fn write_some(fd: BorrowedFd<'_>, bytes: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while written < bytes.len() {
        match socket::send(fd.as_raw_fd(), &bytes[written..], MsgFlags::MSG_NOSIGNAL) {
            Ok(n) => written += n,
            Err(Errno::EAGAIN) => break,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    //! The connection and the "upper" service together, on a socketpair:
    //! for any byte stream split into any segments, the replies equal the
    //! reference model.
    use super::*;
    use crate::upper::{Upper, LINE_TOO_LONG};
    use proptest::prelude::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

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
        let mut connection = Connection::new(ours.into(), ConnectionId(1), now);
        let limits = Limits {
            max_line_bytes: max,
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(60),
        };
        let mut replies = Vec::new();
        let reader = client.try_clone().unwrap();
        let mut step = |connection: &mut Connection, replies: &mut Vec<u8>| {
            let mut cx = Context {
                service: &Upper,
                limits,
                scratch: &mut scratch,
                now,
                draining: false,
            };
            let next = connection.on_event(Readiness::ASSUMED, &mut cx);
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
}
