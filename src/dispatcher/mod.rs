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
//! 3. **step** — the connection flushes, reads, serves, flushes;
//! 4. **re-arm or delete** — `EPOLL_CTL_MOD` with the interest the
//!    connection now has (`EPOLLIN` unless throttled or half-closed,
//!    `EPOLLOUT` while replies are pending), or `EPOLL_CTL_DEL` and close.
//!
//! Steps 2–4 are one function (`drive.rs`), also used by the housekeeper
//! (deadlines, `housekeeper.rs`) and the drain (`drain.rs`), always under
//! a panic guard. Of an event's flags only two change what a step does
//! (`epoll.rs` decodes them into the step's `Readiness`):
//! `EPOLLERR` closes with the socket's error, `EPOLLHUP` (both directions
//! gone) closes because nothing can be delivered any more. Readable,
//! writable and the peer's half-close need no flag: every step writes what
//! is pending, reads until `EAGAIN` or its budget, and learns of a
//! half-close from the read that returns 0.
//!
//! The listening sockets are in the same set, also oneshot (`accept.rs`).

mod accept;
mod builder;
mod clients;
mod drain;
mod drive;
mod endpoints;
pub(crate) mod epoll;
mod handover;
mod housekeeper;
mod leader;
mod limits;
mod pool;
mod spin;
mod table;
pub(crate) mod token;
mod worker;

use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::budget::Budget;
use crate::config::{Config, MAX_CONNECTIONS_LIMIT};
use crate::hosted::Hosted;
use crate::listeners::Listener;
use crate::metrics::{Gauges, Metrics};
use crate::step::Interest;
use crate::tls::TlsContext;
use accept::Acceptor;
use epoll::EventSet;
use limits::LimitSettings;
use table::ConnectionTable;
use token::Token;

pub use builder::Builder;
pub use endpoints::Endpoint;

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
    dispatcher: Arc<Dispatcher>,
    pool: pool::Pool,
    housekeeper: Option<housekeeper::Handle>,
}

/// The dispatcher itself: the epoll set, the connection table and all they
/// are served with, shared by the workers, the housekeeper and the
/// [`Server`] handle that owns them.
struct Dispatcher {
    events: EventSet,
    table: ConnectionTable,
    accept: Acceptor,
    /// What the connections are served by; a connection holds an index.
    services: Vec<Hosted>,
    metrics: Arc<Metrics>,
    limits: LimitSettings,
    /// The memory budget and what connections hold against it.
    budget: Budget,
    /// The TLS listeners' certificate and key, if there are any.
    tls: Option<TlsContext>,
    /// Connections held per client address.
    clients: clients::ClientCounts,
    /// Wakes one waiting worker (oneshot) to check whether it must retire.
    wake: EventFd,
    /// Which worker waits on `events`.
    leadership: leader::Leadership,
    pool: pool::Counts,
    /// Set once, by the drain (or a stop): no more accepting.
    draining: AtomicBool,
    /// Bumped by the worker that takes a wake-up event: proof for the
    /// watchdog that the pool is still taking events.
    heartbeat: AtomicU64,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("listeners", &self.accept.listeners)
            .field("connections", &self.table.live())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Registers the listeners and starts `config.workers` workers serving
    /// `service` (any [`Stateful`](crate::service::Stateful) or
    /// [`Service`](crate::service::Service), or an `Arc` of one) on all of
    /// them.
    pub fn start(
        config: &Config,
        listeners: Vec<Listener>,
        service: impl Into<Hosted>,
    ) -> io::Result<Server> {
        let listeners = listeners.into_iter().map(|l| (l, 0, false)).collect();
        Server::start_serving(config, vec![service.into()], listeners, Metrics::new())
    }

    fn start_serving(
        config: &Config,
        services: Vec<Hosted>,
        listeners: Vec<(Listener, u8, bool)>,
        metrics: Arc<Metrics>,
    ) -> io::Result<Server> {
        let tls = if listeners.iter().any(|(_, _, tls)| *tls) {
            let context = config
                .tls_context()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
            Some(context.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a TLS listener needs tls_certificate and tls_private_key",
                )
            })?)
        } else {
            None
        };
        let events = EventSet::new()?;
        let wake = EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?;
        events.add(wake.as_fd(), Token::Wake, Interest::READ)?;
        for (index, (listener, _, _)) in listeners.iter().enumerate() {
            events.add(listener, Token::Listener(index as u32), Interest::READ)?;
        }
        let (budget_of, own_limits) = endpoints::admission_budgets(&services);
        let dispatcher = Arc::new(Dispatcher {
            events,
            table: ConnectionTable::new(
                (MAX_CONNECTIONS_LIMIT as usize).saturating_add(own_limits),
                budget_of,
            ),
            accept: Acceptor::new(listeners),
            services,
            metrics,
            limits: LimitSettings::from_config(config),
            budget: Budget::new(config.max_buffered_bytes),
            tls,
            clients: clients::ClientCounts::default(),
            wake,
            leadership: leader::Leadership::new()?,
            pool: pool::Counts::default(),
            draining: AtomicBool::new(false),
            heartbeat: AtomicU64::new(0),
        });
        dispatcher.metrics.attach(
            endpoints::service_labels(&dispatcher.services),
            Arc::downgrade(&dispatcher) as std::sync::Weak<dyn Gauges>,
        );
        let pool = pool::Pool::default();
        pool.resize(&dispatcher, config.workers)?;
        let housekeeper = housekeeper::spawn(Arc::clone(&dispatcher))?;
        Ok(Server {
            dispatcher,
            pool,
            housekeeper: Some(housekeeper),
        })
    }

    /// The counters this server counts into (e.g. for reporting reloads
    /// and handovers).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.dispatcher.metrics
    }

    /// Workers running and connections held.
    pub fn status(&self) -> Status {
        Status {
            workers: self.dispatcher.pool.live(),
            connections: self.dispatcher.table.live(),
        }
    }

    /// Applies a new configuration's pool size and limits, live. A worker
    /// that retires finishes the events it holds first, so no connection is
    /// dropped or stalled.
    pub fn reconfigure(&self, config: &Config) -> io::Result<()> {
        // New handshakes use the files as they are now; established
        // connections keep what they negotiated.
        if let (Some(context), Some(files)) = (&self.dispatcher.tls, &config.tls) {
            context
                .reload(files)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        }
        self.dispatcher.limits.set(config);
        self.dispatcher.budget.set_limit(config.max_buffered_bytes);
        self.pool.resize(&self.dispatcher, config.workers)
    }

    /// Asks the pool to prove it is alive: one worker will take a wake-up
    /// event through the same epoll set as client events, advancing
    /// [`Server::heartbeat`]. Returns the heartbeat before the probe.
    pub fn probe(&self) -> u64 {
        let before = self.dispatcher.heartbeat.load(Ordering::Acquire);
        let _ = self.dispatcher.wake.write(1);
        before
    }

    /// How many wake-up events workers have taken so far.
    pub fn heartbeat(&self) -> u64 {
        self.dispatcher.heartbeat.load(Ordering::Acquire)
    }

    /// The listening sockets, in registration order.
    pub fn listeners(&self) -> impl Iterator<Item = &Listener> {
        self.dispatcher
            .accept
            .listeners
            .iter()
            .map(|slot| &slot.listener)
    }

    /// Starts the drain: stops accepting, then has every connection answer
    /// what it has already received (every byte the kernel accepted, even
    /// past the throttle), flush, and close; idle ones close at once. The
    /// listening sockets stay open (under socket activation they belong to
    /// systemd too) but are no longer served.
    pub fn begin_drain(&self) {
        self.dispatcher.begin_drain();
        if let Some(housekeeper) = &self.housekeeper {
            housekeeper.nudge();
        }
    }

    /// After [`Server::begin_drain`]: waits until no connection is left or
    /// `until` passes, and returns the status then.
    pub fn wait_until_empty(&self, until: Instant) -> Status {
        self.dispatcher.wait_until_empty(until);
        self.status()
    }

    /// Ends a drain: closes the connections still left (busy past the
    /// deadline) and stops the pool.
    pub fn finish_drain(mut self) -> DrainReport {
        let abandoned = self.dispatcher.close_remaining();
        self.stop();
        DrainReport { abandoned }
    }

    /// The whole drain with a deadline of `timeout`: [`Server::begin_drain`],
    /// [`Server::wait_until_empty`], [`Server::finish_drain`].
    pub fn drain(self, timeout: Duration) -> DrainReport {
        let deadline = Instant::now() + timeout;
        self.begin_drain();
        self.wait_until_empty(deadline);
        self.finish_drain()
    }

    fn stop(&mut self) {
        if let Some(housekeeper) = self.housekeeper.take() {
            housekeeper.stop();
        }
        self.dispatcher.draining.store(true, Ordering::SeqCst);
        self.pool.stop(&self.dispatcher);
        self.dispatcher.close_remaining();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

// The dispatcher crosses threads; prove it at compile time.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    const fn assert_send<T: Send>() {}
    assert_send_sync::<Dispatcher>();
    assert_send::<crate::connection::Connection>();
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::{Connection, Scratch};
    use crate::service::{ConnectionId, Peer};
    use crate::step::{Readiness, Stimulus};
    use crate::upper::Upper;
    use std::io::{Read, Write};
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
        let dispatcher = &server.dispatcher;
        let (ours, mut peer) = UnixStream::pair().unwrap();
        assert!(dispatcher.table.reserve(0, 10));
        let connection = Connection::new(ours.into(), ConnectionId(7), Peer::Unix, Instant::now());
        // Stored but never registered with epoll.
        let token = dispatcher.table.insert(connection, |_, _| Ok(())).unwrap();
        let Token::Connection { slot, generation } = token else {
            unreachable!()
        };
        assert_eq!(dispatcher.table.live(), 1);

        // A request, so that the step's decision is to re-arm.
        peer.write_all(b"a\n").unwrap();
        let held = dispatcher.table.hold(slot, generation).unwrap();
        dispatcher.drive(
            held,
            Stimulus::Event(Readiness::default()),
            &mut Scratch::new(),
        );
        assert!(
            dispatcher.table.hold(slot, generation).is_none(),
            "closed: a stale event can no longer match"
        );
        assert_eq!(dispatcher.table.live(), 0);
        let mut replies = Vec::new();
        peer.read_to_end(&mut replies).unwrap();
        assert_eq!(replies, b"A\n", "the reply, then EOF");
        server.drain(Duration::from_millis(100));
    }
}
