//! Accepting: the listening sockets, taking connections into the table,
//! and refusing them, never leaving one in the backlog.
//!
//! The listeners are in the same epoll set as the connections, also
//! oneshot, so one worker at a time accepts from each, in bounded batches.
//! A connection past `max_connections` is accepted and closed at once: left
//! in the backlog it would keep the listener readable and spin every
//! worker. Running out of descriptors (`EMFILE`) is handled the same way
//! with a reserve descriptor; if even that fails, the listener is paused
//! and the housekeeper resumes it on its next tick.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use tracing::{debug, error, warn};

use super::clients;
use super::token::Token;
use super::Dispatcher;
use crate::connection::Connection;
use crate::listeners::{Listener, Peer};
use crate::metrics::Refused;
use crate::ratelimit::RateLimited;
use crate::service::ConnectionId;
use crate::step::{Admission, ClientAdmission, CloseReason, Interest, Stimulus};

/// Connections accepted per listener event before the listener is re-armed
/// and the worker moves on.
const ACCEPT_BATCH: usize = 64;

/// The listening sockets and what accepting from them needs.
#[derive(Debug)]
pub(super) struct Acceptor {
    pub(super) listeners: Vec<ListenerSlot>,
    /// Held open so that, out of descriptors, one can be freed to accept
    /// and close a connection instead of leaving it in the backlog.
    reserve_fd: Mutex<Option<File>>,
    refusals: RateLimited,
    /// Refusals of one client past `max_connections_per_client`, warned of
    /// apart from the daemon's own limits: one busy client must not hide
    /// them.
    client_refusals: RateLimited,
    next_connection_id: AtomicU64,
}

/// A listening socket and whether accepting from it is paused.
#[derive(Debug)]
pub(super) struct ListenerSlot {
    pub(super) listener: Listener,
    /// The index of the service its connections get.
    service: u8,
    /// Its connections speak TLS.
    tls: bool,
    /// Not re-armed after running out of descriptors; the housekeeper
    /// re-arms it on its next tick.
    paused: AtomicBool,
}

impl Acceptor {
    pub(super) fn new(listeners: Vec<(Listener, u8, bool)>) -> Self {
        Acceptor {
            listeners: listeners
                .into_iter()
                .map(|(listener, service, tls)| ListenerSlot {
                    listener,
                    service,
                    tls,
                    paused: AtomicBool::new(false),
                })
                .collect(),
            reserve_fd: Mutex::new(File::open("/dev/null").ok()),
            refusals: RateLimited::new(Duration::from_secs(10)),
            client_refusals: RateLimited::new(Duration::from_secs(10)),
            next_connection_id: AtomicU64::new(1),
        }
    }
}

impl Acceptor {
    /// Makes new connections' ids follow `id` (one restored from the
    /// previous instance), so that none is reused while the daemon runs.
    pub(super) fn continue_ids_after(&self, id: ConnectionId) {
        self.next_connection_id
            .fetch_max(id.0.saturating_add(1), Ordering::Relaxed);
    }
}

impl Dispatcher {
    /// Stops accepting for good: deregisters the listeners (they stay
    /// open; under socket activation they belong to systemd too).
    pub(super) fn stop_accepting(&self) {
        self.draining.store(true, Ordering::SeqCst);
        for slot in &self.accept.listeners {
            let _ = self.events.delete(&slot.listener);
        }
    }

    /// A worker took listener `index`'s event: accept a batch, re-arm.
    pub(super) fn on_listener_event(&self, index: usize) {
        let slot = &self.accept.listeners[index];
        for _ in 0..ACCEPT_BATCH {
            if self.draining() {
                // Not re-armed: the drain deregisters listeners.
                return;
            }
            match slot.listener.accept() {
                Ok((fd, peer)) => self.admit(fd, peer, slot.service, slot.tls),
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
                    if let Some(suppressed) = self.accept.refusals.allow() {
                        warn!(listener = %slot.listener.describe(), error = %e, suppressed, "accept failed; pausing this listener briefly");
                    }
                    slot.paused.store(true, Ordering::Release);
                    return;
                }
            }
        }
        self.rearm_listener(index);
    }

    /// Re-arms the listeners that were paused (the housekeeper's tick).
    pub(super) fn resume_paused_listeners(&self) {
        for (index, listener) in self.accept.listeners.iter().enumerate() {
            if listener.paused.swap(false, Ordering::AcqRel) {
                self.rearm_listener(index);
            }
        }
    }

    fn rearm_listener(&self, index: usize) {
        let listener = &self.accept.listeners[index].listener;
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
    /// or closes it at once when its service's limit is reached:
    /// `max_connections`, or the service's own (the metrics endpoint's).
    fn admit(&self, fd: OwnedFd, peer: Peer, service: u8, tls: bool) {
        let own_limit = self.services[usize::from(service)].get().connection_limit();
        let max = own_limit.unwrap_or_else(|| self.limits.max_connections());
        // A balancer's connection is counted under its client's address,
        // once its header has named it.
        let serving = self.services[usize::from(service)].get();
        let header_timeout = serving
            .proxy_protocol()
            .then(|| self.limits.proxy_header_timeout(&peer))
            .flatten();
        let client = clients::counted_address(&peer).filter(|_| header_timeout.is_none());
        if let Some(address) = client {
            if !self.admit_client(address, service) {
                return;
            }
        }
        if !self.table.reserve(service, max) {
            if let Some(address) = client {
                self.clients.leave(address);
            }
            self.metrics
                .refused(usize::from(service), Refused::MaxConnections);
            if let Some(suppressed) = self.accept.refusals.allow() {
                let service = self.services[usize::from(service)].get().name();
                match own_limit {
                    None => {
                        warn!(%peer, max_connections = max, suppressed, "connection limit reached; closing new connections")
                    }
                    Some(_) => {
                        warn!(%peer, service, limit = max, suppressed, "this service's connection limit reached; closing its new connections")
                    }
                }
            }
            return;
        }
        let id = ConnectionId(
            self.accept
                .next_connection_id
                .fetch_add(1, Ordering::Relaxed),
        );
        let now = Instant::now();
        let mut connection = Connection::new(fd, id, peer, now).serving(service);
        if client.is_some() {
            connection.count_client();
        }
        if let Some(timeout) = header_timeout {
            connection.await_proxy_header(now + timeout);
        }
        if serving.deadline_from_accept() {
            connection.start_request_clock(now);
        }
        if tls {
            let session = self.tls.as_ref().map(|tls| tls.session());
            match session {
                Some(Ok(session)) => {
                    connection.start_tls(session, now);
                    self.metrics.tls_connection(true);
                }
                failed => {
                    let error = failed.and_then(Result::err);
                    error!(conn = %id, %peer, error = ?error, "cannot start a TLS session; closing the connection");
                    self.table.unreserve(service);
                    if let Some(address) = client {
                        self.clients.leave(address);
                    }
                    return;
                }
            }
        }
        // Counted before it can be served (and closed, and counted closed).
        self.metrics.accepted(usize::from(service));
        // A balancer's connection opens its session once its header has
        // named its client, a TLS connection once its handshake is done.
        // The service's code runs here on the accepting worker, so a panic
        // in it costs this connection only: the listener is still re-armed,
        // its slot and its count given back.
        if header_timeout.is_none() && !tls {
            let opened = panic::catch_unwind(AssertUnwindSafe(|| connection.open(serving)));
            if opened.is_err() {
                error!(conn = %id, %peer, service = serving.name(), "panic while opening a connection's session; closing it");
                self.table.unreserve(service);
                if let Some(address) = client {
                    self.clients.leave(address);
                }
                self.metrics
                    .closed(usize::from(service), &CloseReason::Panic);
                return;
            }
        }
        let registered = self.table.insert(connection, |connection, token| {
            self.events
                .add(connection.fd(), token, connection.opening_interest())
        });
        match registered {
            Ok(token) => {
                let service = serving.name();
                if header_timeout.is_some() {
                    // Not its client yet: the header names it.
                    debug!(conn = %id, balancer = %peer, service, "connection accepted; awaiting its PROXY header");
                } else {
                    debug!(conn = %id, %peer, service, "connection accepted");
                }
                // A drain that began while this one was being accepted may
                // have passed its slot already: give it its drain step here.
                // (Its flag is read after the slot was taken; the drain sets
                // it before it looks at the slots, both SeqCst.)
                if self.draining() {
                    self.drive_token(token, Stimulus::Drain);
                }
            }
            Err(e) => {
                warn!(conn = %id, %peer, error = %e, "cannot register connection");
                if let Some(address) = client {
                    self.clients.leave(address);
                }
                // Never served, but counted as accepted: count it closed.
                self.metrics
                    .closed(usize::from(service), &CloseReason::Error(e));
            }
        }
    }

    /// Counts a connection from `address` unless that client already holds
    /// `max_connections_per_client`; a refused one is counted and warned of
    /// (at most every 10 s), and its socket closed by the caller.
    pub(super) fn admit_client(&self, address: std::net::IpAddr, service: u8) -> bool {
        let limit = self.limits.max_connections_per_client();
        if self.clients.admit(address, limit) {
            return true;
        }
        self.metrics
            .refused(usize::from(service), Refused::PerClient);
        if let Some(suppressed) = self.accept.client_refusals.allow() {
            warn!(client = %address, max_connections_per_client = limit, suppressed, "a client's connection limit reached; closing its new connections");
        }
        false
    }

    /// Out of descriptors: frees the reserve, accepts and closes one
    /// connection, and takes the reserve back. Returns false if there was
    /// no reserve to use or it could not be taken back (the caller pauses
    /// the listener; the housekeeper resumes it).
    fn refuse_with_reserve(&self, slot: &ListenerSlot) -> bool {
        let mut reserve = self
            .accept
            .reserve_fd
            .lock()
            .unwrap_or_else(|p| p.into_inner());
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
        if refused {
            self.metrics
                .refused(usize::from(slot.service), Refused::OutOfDescriptors);
        }
        *reserve = File::open("/dev/null").ok();
        if let Some(suppressed) = self.accept.refusals.allow() {
            warn!(listener = %slot.listener.describe(), connections = self.table.live(), suppressed, "out of file descriptors; closing new connections");
        }
        refused && reserve.is_some()
    }
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

/// A connection's PROXY header named its client: counted under that
/// address unless the client already holds its limit. A Unix-socket client
/// (a header without an address) is not counted.
impl ClientAdmission for Dispatcher {
    fn admit(&self, peer: &Peer, service: u8) -> Admission {
        match clients::counted_address(peer) {
            Some(address) if self.admit_client(address, service) => Admission::Counted,
            Some(_) => Admission::Refused,
            None => Admission::Uncounted,
        }
    }
}
