//! The dispatcher: one epoll set, a pool of workers, a connection table.
//!
//! The workers share one epoll set. Client sockets are registered
//! `EPOLLIN | EPOLLRDHUP | EPOLLONESHOT`, so each readiness event goes to
//! exactly one worker and disarms the socket: from then until that worker
//! re-arms it, the worker is the connection's only owner, whichever worker
//! waits next. Handling an event is always the same four steps:
//!
//! 1. **wait** — `epoll_wait` returns a token (slot + generation, never an
//!    fd; see `token.rs`). Workers take turns waiting (`leader.rs`): one
//!    waits and handles its batch while the others sleep, so an event that
//!    arrives while it is busy wakes nobody, unless its batch was full or it
//!    is stuck on one request. A leader that runs out of events polls for
//!    a few microseconds before it sleeps, while events keep coming that
//!    quickly (`spin.rs`): cheaper than being woken;
//! 2. **own** — lock the slot; if its generation moved on, the event is
//!    stale (the connection closed meanwhile) and is dropped;
//! 3. **handle** — the connection flushes, reads, serves, flushes;
//! 4. **re-arm or delete** — `EPOLL_CTL_MOD` with the interest the
//!    connection now has (`EPOLLIN` unless throttled or half-closed,
//!    `EPOLLOUT` while replies are pending), or `EPOLL_CTL_DEL` and close.
//!
//! How each event flag is acted on (see `connection.rs`):
//!
//! | flag | meaning | action |
//! |---|---|---|
//! | `EPOLLERR` | socket error pending | close, logging the error |
//! | `EPOLLHUP` | both directions gone (reset) | close: nothing can be delivered |
//! | `EPOLLRDHUP` | client half-closed | read to EOF, answer the last line, flush, close |
//! | `EPOLLOUT` | send buffer has room | write pending replies |
//! | `EPOLLIN` | bytes to read | read (bounded batch), serve, write |
//!
//! The listening sockets are in the same set, also oneshot, so one worker
//! at a time accepts from each in bounded batches. A connection past
//! `max_connections` is accepted and closed at once: left in the backlog it
//! would keep the listener readable and spin every worker. Running out of
//! descriptors (`EMFILE`) is handled the same way with a reserve descriptor.

pub(crate) mod epoll;
mod housekeeper;
mod leader;
mod pool;
mod spin;
mod table;
pub(crate) mod token;

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::eventfd::{EfdFlags, EventFd};
use tracing::{debug, error, info, warn};

use crate::config::{Config, MAX_CONNECTIONS_LIMIT};
use crate::connection::{CloseReason, Connection, Context, Limits, Next, Scratch};
use crate::listeners::{Listener, Peer};
use crate::service::{ConnectionId, Service};
use epoll::{EventBuffer, EventSet, Interest, Readiness};
use spin::SpinBeforeSleep;
use table::{ConnectionTable, SlotState};
use token::Token;

/// Events taken per `epoll_wait`. Each is owned by the worker that took it
/// (oneshot), so a batch is safe. Large, so that one wait collects what
/// arrived while the last batch was handled (fewer waits per request); a
/// full batch is the sign to share the load (`leader.rs`).
const EVENTS_PER_WAIT: usize = 64;
/// Connections accepted per listener event before the listener is re-armed
/// and the worker moves on.
const ACCEPT_BATCH: usize = 64;

/// A snapshot of what the daemon is doing, for STATUS and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// Worker threads running.
    pub workers: usize,
    /// Connections held.
    pub connections: usize,
}

/// What a drain did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Connections still busy at the deadline, closed without their replies.
    pub abandoned: usize,
}

/// A running dispatcher with its worker pool. Dropping it stops it
/// without waiting for connections.
#[derive(Debug)]
pub struct Server {
    shared: Arc<Shared>,
    pool: pool::Pool,
    housekeeper: Option<housekeeper::Handle>,
}

/// The reloadable limits, read by workers on every event.
#[derive(Debug)]
struct LimitSettings {
    max_connections: AtomicUsize,
    max_line_bytes: AtomicUsize,
    idle_timeout_ms: AtomicU64,
    request_timeout_ms: AtomicU64,
    spin_before_sleep_us: AtomicU64,
}

/// A listening socket and whether accepting from it is paused.
#[derive(Debug)]
struct ListenerSlot {
    listener: Listener,
    /// Not re-armed after running out of descriptors; the housekeeper
    /// re-arms it on its next tick.
    paused: AtomicBool,
}

/// What the workers and the housekeeper share.
struct Shared {
    events: EventSet,
    table: ConnectionTable,
    listeners: Vec<ListenerSlot>,
    service: Arc<dyn Service>,
    limits: LimitSettings,
    /// Wakes one waiting worker (oneshot) to check whether it must retire.
    wake: EventFd,
    /// Which worker waits on `events`.
    leadership: leader::Leadership,
    pool: pool::Counts,
    draining: AtomicBool,
    /// Bumped by the worker that takes a wake-up event: proof for the
    /// watchdog that the pool is still taking events.
    heartbeat: AtomicU64,
    next_connection_id: AtomicU64,
    /// Held open so that, out of descriptors, one can be freed to accept
    /// and close a connection instead of leaving it in the backlog.
    reserve_fd: Mutex<Option<File>>,
    refusals: RateLimited,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("listeners", &self.listeners)
            .field("connections", &self.table.live())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Registers the listeners and starts `config.workers` workers serving
    /// `service`.
    pub fn start(
        config: &Config,
        listeners: Vec<Listener>,
        service: Arc<dyn Service>,
    ) -> io::Result<Server> {
        let events = EventSet::new()?;
        let wake = EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?;
        events.add(wake.as_fd(), Token::Wake, Interest::READ)?;
        for (index, listener) in listeners.iter().enumerate() {
            events.add(listener, Token::Listener(index as u32), Interest::READ)?;
        }
        let shared = Arc::new(Shared {
            events,
            table: ConnectionTable::new(MAX_CONNECTIONS_LIMIT as usize),
            listeners: listeners
                .into_iter()
                .map(|listener| ListenerSlot {
                    listener,
                    paused: AtomicBool::new(false),
                })
                .collect(),
            service,
            limits: LimitSettings {
                max_connections: AtomicUsize::new(0),
                max_line_bytes: AtomicUsize::new(0),
                idle_timeout_ms: AtomicU64::new(0),
                request_timeout_ms: AtomicU64::new(0),
                spin_before_sleep_us: AtomicU64::new(0),
            },
            wake,
            leadership: leader::Leadership::new()?,
            pool: pool::Counts::default(),
            draining: AtomicBool::new(false),
            heartbeat: AtomicU64::new(0),
            next_connection_id: AtomicU64::new(1),
            reserve_fd: Mutex::new(File::open("/dev/null").ok()),
            refusals: RateLimited::new(Duration::from_secs(10)),
        });
        shared.set_limits(config);
        let pool = pool::Pool::default();
        pool.resize(&shared, config.workers)?;
        let housekeeper = housekeeper::spawn(Arc::clone(&shared))?;
        Ok(Server {
            shared,
            pool,
            housekeeper: Some(housekeeper),
        })
    }

    /// Workers running and connections held.
    pub fn status(&self) -> Status {
        Status {
            workers: self.shared.pool.live(),
            connections: self.shared.table.live(),
        }
    }

    /// Applies a new configuration's pool size and limits, live. A worker
    /// that retires finishes the events it holds first, so no connection is
    /// dropped or stalled.
    pub fn reconfigure(&self, config: &Config) -> io::Result<()> {
        self.shared.set_limits(config);
        self.pool.resize(&self.shared, config.workers)
    }

    /// Asks the pool to prove it is alive: one worker will take a wake-up
    /// event through the same epoll set as client events, advancing
    /// [`Server::heartbeat`]. Returns the heartbeat before the probe.
    pub fn probe(&self) -> u64 {
        let before = self.shared.heartbeat.load(Ordering::Acquire);
        let _ = self.shared.wake.write(1);
        before
    }

    /// How many wake-up events workers have taken so far.
    pub fn heartbeat(&self) -> u64 {
        self.shared.heartbeat.load(Ordering::Acquire)
    }

    /// The listening sockets, in registration order.
    pub fn listeners(&self) -> impl Iterator<Item = &Listener> {
        self.shared.listeners.iter().map(|slot| &slot.listener)
    }

    /// Stops accepting, answers what every connection has already sent,
    /// closes each as soon as its replies are delivered, and returns when
    /// none is left or `timeout` has passed (closing the rest). Then stops
    /// the pool. The listening sockets are not closed here: under socket
    /// activation they belong to systemd too.
    pub fn drain(self, timeout: Duration) -> DrainReport {
        self.drain_reporting(timeout, Duration::MAX, |_| {})
    }

    /// [`Server::drain`], calling `progress` with the status whenever the
    /// number of connections left has changed, at most once per `every`,
    /// and once more at the deadline if connections are left (for STATUS
    /// updates during a long drain).
    pub fn drain_reporting(
        mut self,
        timeout: Duration,
        every: Duration,
        mut progress: impl FnMut(Status),
    ) -> DrainReport {
        let deadline = Instant::now() + timeout;
        self.shared.start_drain();
        if let Some(housekeeper) = &self.housekeeper {
            housekeeper.nudge();
        }
        let mut reported = self.status();
        let mut next_report = Instant::now().checked_add(every);
        while self.shared.table.live() > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(2));
            if next_report.is_some_and(|at| Instant::now() >= at) {
                let now = self.status();
                if now != reported {
                    progress(now);
                    reported = now;
                }
                next_report = Instant::now().checked_add(every);
            }
        }
        // What the deadline left behind is worth reporting even if the
        // last report was moments ago.
        let left = self.status();
        if left.connections > 0 && left != reported {
            progress(left);
        }
        let abandoned = self.shared.close_all();
        self.stop();
        DrainReport { abandoned }
    }

    fn stop(&mut self) {
        if let Some(housekeeper) = self.housekeeper.take() {
            housekeeper.stop();
        }
        self.shared.draining.store(true, Ordering::Release);
        self.pool.stop(&self.shared);
        self.shared.close_all();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Shared {
    fn set_limits(&self, config: &Config) {
        let l = &self.limits;
        l.max_connections
            .store(config.max_connections, Ordering::Relaxed);
        l.max_line_bytes
            .store(config.max_line_bytes, Ordering::Relaxed);
        l.idle_timeout_ms
            .store(config.idle_timeout.as_millis() as u64, Ordering::Relaxed);
        l.request_timeout_ms
            .store(config.request_timeout.as_millis() as u64, Ordering::Relaxed);
        l.spin_before_sleep_us.store(
            config.spin_before_sleep.as_micros() as u64,
            Ordering::Relaxed,
        );
    }

    fn spin_limit(&self) -> Duration {
        Duration::from_micros(self.limits.spin_before_sleep_us.load(Ordering::Relaxed))
    }

    fn limits(&self) -> Limits {
        let l = &self.limits;
        Limits {
            max_line_bytes: l.max_line_bytes.load(Ordering::Relaxed),
            idle_timeout: Duration::from_millis(l.idle_timeout_ms.load(Ordering::Relaxed)),
            request_timeout: Duration::from_millis(l.request_timeout_ms.load(Ordering::Relaxed)),
        }
    }

    fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    fn context<'a>(&'a self, scratch: &'a mut Scratch) -> Context<'a> {
        Context {
            service: &*self.service,
            limits: self.limits(),
            scratch,
            now: Instant::now(),
            draining: self.draining(),
        }
    }

    /// One worker's life: take the lead, wait, dispatch each event, until
    /// told to retire. See `leader.rs` for who waits when.
    fn work(&self) {
        let mut scratch = Scratch::new();
        let mut buffer = EventBuffer::new(EVENTS_PER_WAIT);
        let mut spin = SpinBeforeSleep::new();
        loop {
            let term = self.leadership.follow();
            loop {
                let limit = self.spin_limit();
                let started = Instant::now();
                let waited = self
                    .leadership
                    .wait(|| self.events.wait(&mut buffer, spin.budget(limit)));
                spin.waited(started.elapsed(), limit);
                let events = match waited {
                    Ok(events) => events,
                    Err(e) => {
                        error!(error = %e, "epoll_wait failed");
                        thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                };
                // A full batch: more events are probably waiting than this
                // worker will reach soon; let another wait for them.
                let full = events.len() == EVENTS_PER_WAIT;
                if full {
                    self.leadership.step_down(&term);
                }
                let mut retire = false;
                for event in events {
                    match event.token {
                        Token::Connection { slot, generation } => self.on_connection_event(
                            slot,
                            generation,
                            event.readiness,
                            &mut scratch,
                        ),
                        Token::Listener(index) => self.on_listener_event(index as usize),
                        Token::Wake => retire |= self.on_wake(),
                    }
                }
                if retire {
                    self.leadership.step_down(&term);
                    return;
                }
                if full || !self.leadership.leads(&term) {
                    break;
                }
            }
        }
    }

    /// Steps 2–4 for a client event.
    fn on_connection_event(
        &self,
        slot: u32,
        generation: u32,
        readiness: Readiness,
        scratch: &mut Scratch,
    ) {
        let Some(slot_ref) = self.table.slot(slot) else {
            error!(slot, "bug: event for a slot that was never allocated");
            return;
        };
        let mut state = slot_ref.lock();
        if state.generation != generation || state.connection.is_none() {
            // Closed (by the housekeeper) while this event was in flight.
            debug!(slot, generation, "stale event dropped");
            return;
        }
        let mut cx = self.context(scratch);
        let connection = state.connection.as_mut().expect("checked above");
        let next = guard_panics(connection.id(), || connection.on_event(readiness, &mut cx));
        self.apply(slot, &mut state, next);
    }

    /// Re-arms or closes a connection the caller holds locked.
    fn apply(&self, slot: u32, state: &mut SlotState, next: Next) {
        let reason = match next {
            Next::Rearm(interest) => {
                let connection = state.connection.as_ref().expect("apply on an empty slot");
                let token = Token::Connection {
                    slot,
                    generation: state.generation,
                };
                match self.events.rearm(connection.fd(), token, interest) {
                    Ok(()) => return,
                    Err(e) => {
                        // Only the slot's holder may MOD or DEL, so ENOENT or
                        // EBADF here means that rule was broken somewhere.
                        error!(conn = %connection.id(), ?token, error = %e, "bug: re-arm failed");
                        CloseReason::Error(e)
                    }
                }
            }
            Next::Close(reason) => reason,
        };
        self.close(slot, state, reason);
    }

    /// Deregisters and closes the connection in a locked slot.
    fn close(&self, slot: u32, state: &mut SlotState, reason: CloseReason) {
        if let Some(connection) = self.table.remove(slot, state) {
            // Closing would deregister it too, but only once no other
            // descriptor refers to the socket; say it explicitly.
            let _ = self.events.delete(connection.fd());
            debug!(conn = %connection.id(), %reason, "connection closed");
        }
    }

    fn on_listener_event(&self, index: usize) {
        let slot = &self.listeners[index];
        for _ in 0..ACCEPT_BATCH {
            if self.draining() {
                // Not re-armed: the drain deregisters listeners.
                return;
            }
            match slot.listener.accept() {
                Ok((fd, peer)) => self.admit(fd, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if is_out_of_fds(&e) => {
                    if !self.refuse_with_reserve(slot) {
                        slot.paused.store(true, Ordering::Release);
                        return;
                    }
                }
                // The client gave up before we accepted; nothing to do.
                Err(e) if is_transient_accept_error(&e) => continue,
                Err(e) => {
                    if let Some(suppressed) = self.refusals.allow() {
                        warn!(listener = %slot.listener.describe(), error = %e, suppressed, "accept failed; pausing this listener briefly");
                    }
                    slot.paused.store(true, Ordering::Release);
                    return;
                }
            }
        }
        self.rearm_listener(index);
    }

    fn rearm_listener(&self, index: usize) {
        let listener = &self.listeners[index].listener;
        if let Err(e) = self
            .events
            .rearm(listener, Token::Listener(index as u32), Interest::READ)
        {
            if !self.draining() {
                error!(listener = %listener.describe(), error = %e, "cannot re-arm listener");
            }
        }
    }

    /// Takes a freshly accepted connection into the table and the epoll set,
    /// or closes it at once when `max_connections` are already held.
    fn admit(&self, fd: OwnedFd, peer: Peer) {
        let max = self.limits.max_connections.load(Ordering::Relaxed);
        if !self.table.reserve(max) {
            if let Some(suppressed) = self.refusals.allow() {
                warn!(%peer, max_connections = max, suppressed, "connection limit reached; closing new connections");
            }
            return;
        }
        let id = ConnectionId(self.next_connection_id.fetch_add(1, Ordering::Relaxed));
        let connection = Connection::new(fd, id, Instant::now());
        let registered = self.table.insert(connection, |connection, token| {
            self.events.add(connection.fd(), token, Interest::READ)
        });
        match registered {
            Ok(_) => debug!(conn = %id, %peer, "connection accepted"),
            Err(e) => warn!(conn = %id, %peer, error = %e, "cannot register connection"),
        }
    }

    /// Out of descriptors: frees the reserve, accepts and closes one
    /// connection, and takes the reserve back. Returns false if there was
    /// no reserve to use or it could not be taken back (the caller pauses
    /// the listener; the housekeeper resumes it).
    fn refuse_with_reserve(&self, slot: &ListenerSlot) -> bool {
        let mut reserve = self.reserve_fd.lock().unwrap_or_else(|p| p.into_inner());
        if reserve.is_none() {
            // Lost on an earlier attempt; descriptors may have been freed.
            *reserve = File::open("/dev/null").ok();
        }
        if reserve.take().is_none() {
            return false;
        }
        // Dropped at once: the refused connection's descriptor must be
        // closed before the reserve is reopened in its place.
        let refused = slot.listener.accept().is_ok();
        *reserve = File::open("/dev/null").ok();
        if let Some(suppressed) = self.refusals.allow() {
            warn!(listener = %slot.listener.describe(), connections = self.table.live(), suppressed, "out of file descriptors; closing new connections");
        }
        refused && reserve.is_some()
    }

    /// A worker took the wake-up event: retire if the pool is too big, and
    /// pass the wake-up on while it still is.
    fn on_wake(&self) -> bool {
        let _ = self.wake.read();
        self.heartbeat.fetch_add(1, Ordering::AcqRel);
        let retire = self.pool.try_retire();
        if self.pool.excess() > 0 {
            let _ = self.wake.write(1);
        }
        if let Err(e) = self
            .events
            .rearm(self.wake.as_fd(), Token::Wake, Interest::READ)
        {
            error!(error = %e, "cannot re-arm the wake-up descriptor");
        }
        retire
    }

    /// Stops accepting and gives every connection a drain step.
    fn start_drain(&self) {
        self.draining.store(true, Ordering::Release);
        for slot in &self.listeners {
            let _ = self.events.delete(&slot.listener);
        }
        let live = self.table.live();
        info!(connections = live, "draining");
        let mut scratch = Scratch::new();
        self.for_each_connection(true, |slot, state| {
            let mut cx = self.context(&mut scratch);
            let connection = state.connection.as_mut().expect("visited slots are full");
            let next = guard_panics(connection.id(), || {
                connection.on_event(Readiness::ASSUMED, &mut cx)
            });
            self.apply(slot, state, next);
        });
    }

    /// Closes every connection left; returns how many there were.
    fn close_all(&self) -> usize {
        let mut closed = 0;
        self.for_each_connection(true, |slot, state| {
            closed += 1;
            self.close(slot, state, CloseReason::Drained);
        });
        closed
    }

    /// Runs `f` on every slot holding a connection. With `wait`, a slot a
    /// worker holds is waited for; without, it is skipped (it is busy, so
    /// not idle, and its worker will re-arm or close it).
    fn for_each_connection(&self, wait: bool, mut f: impl FnMut(u32, &mut SlotState)) {
        for index in 0..self.table.high_water() {
            let Some(slot) = self.table.slot(index) else {
                continue;
            };
            let state = if wait {
                Some(slot.lock())
            } else {
                slot.try_lock()
            };
            if let Some(mut state) = state {
                if state.connection.is_some() {
                    f(index, &mut state);
                }
            }
        }
    }
}

/// Runs one connection step; a panic (a service bug) closes that connection
/// instead of unwinding through the worker.
fn guard_panics(id: ConnectionId, step: impl FnOnce() -> Next) -> Next {
    panic::catch_unwind(AssertUnwindSafe(step)).unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic".to_owned());
        error!(conn = %id, panic = %message, "panic while serving a connection; closing it");
        Next::Close(CloseReason::Panic)
    })
}

fn is_out_of_fds(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM)
    )
}

fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::ECONNABORTED | Errno::EINTR | Errno::EPROTO | Errno::EPERM)
    )
}

/// Lets a warning through at most once per period; counts what it held back.
#[derive(Debug)]
struct RateLimited {
    period_ms: u64,
    origin: Instant,
    /// Milliseconds since `origin` of the last warning let through, plus one
    /// (zero: never).
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl RateLimited {
    fn new(period: Duration) -> Self {
        RateLimited {
            period_ms: period.as_millis() as u64,
            origin: Instant::now(),
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(suppressed since the last one)` if a warning may be logged now.
    fn allow(&self) -> Option<u64> {
        let now = self.origin.elapsed().as_millis() as u64 + 1;
        let last = self.last.load(Ordering::Relaxed);
        if last != 0 && now < last + self.period_ms
            || self
                .last
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

// The shared state crosses threads; prove it at compile time.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    const fn assert_send<T: Send>() {}
    assert_send_sync::<Shared>();
    assert_send::<Connection>();
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upper::Upper;
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    /// A failed re-arm (here ENOENT: the fd is not in the epoll set, as
    /// after a second owner's delete) closes that connection and nothing
    /// else: no panic, the slot is freed, the peer sees EOF.
    #[test]
    fn a_failed_rearm_closes_the_connection() {
        let config = Config {
            workers: 1,
            ..Config::default()
        };
        let server = Server::start(&config, Vec::new(), Arc::new(Upper)).unwrap();
        let shared = &server.shared;
        let (ours, mut peer) = UnixStream::pair().unwrap();
        assert!(shared.table.reserve(10));
        let connection = Connection::new(ours.into(), ConnectionId(7), Instant::now());
        // Stored but never registered with epoll.
        let token = shared.table.insert(connection, |_, _| Ok(())).unwrap();
        let Token::Connection { slot, generation } = token else {
            unreachable!()
        };
        assert_eq!(shared.table.live(), 1);

        let mut state = shared.table.slot(slot).unwrap().lock();
        shared.apply(slot, &mut state, Next::Rearm(Interest::READ));
        assert!(state.connection.is_none(), "closed");
        assert_ne!(
            state.generation, generation,
            "a stale event can no longer match"
        );
        drop(state);
        assert_eq!(shared.table.live(), 0);
        let mut buf = [0u8; 1];
        assert_eq!(peer.read(&mut buf).unwrap(), 0, "the peer sees EOF");
        server.drain(Duration::from_millis(100));
    }
}
