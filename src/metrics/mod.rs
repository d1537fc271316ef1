//! Counters for operators, and the endpoint that shows them
//! ([`MetricsEndpoint`], Prometheus' text format over HTTP/1.1).
//!
//! Counting must not cost the hot path a system call or a cache line that
//! another worker also writes. So what grows per request (requests, bytes
//! received and sent) is counted in a `Block` per worker thread: one
//! cache-line-aligned block of relaxed atomics that only its worker writes
//! (leased in `Lease`, given back when the worker retires, so a later
//! worker carries on from its totals and the blocks never outnumber the
//! largest pool). What grows per connection or per event of the daemon's
//! life (accepted, refused, closed, reloads, handovers) is counted in one
//! shared set of atomics: those paths already take shared locks and
//! counters of their own (the connection table's), so one more relaxed add
//! changes nothing. A scrape sums everything ([`Snapshot`]); counts made
//! while it sums show up in the next one.

mod http;
mod render;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

pub use http::{MetricsEndpoint, MAX_REQUEST_BYTES, MAX_SCRAPES};
pub use render::{Snapshot, CONTENT_TYPE};

pub use crate::close::Closed;
use crate::step::{CloseReason, Tally};

/// How many services' counters are kept apart: one per distinct service of
/// a server (the line protocol and the metrics endpoint make two).
pub const MAX_SERVICES: usize = 4;

// Here, not beside `Closed`: the close reasons belong to the step contract,
// which sits above `close`, and the metrics are where the two meet.
impl Closed {
    /// How a connection's close reason is counted.
    pub(crate) fn of(reason: &CloseReason) -> Closed {
        match reason {
            CloseReason::PeerClosed => Closed::ClientEof,
            CloseReason::Idle => Closed::Idle,
            CloseReason::RequestTimeout => Closed::RequestTimeout,
            // A client that keeps sending after the service's last reply
            // still ends because of what the service decided.
            CloseReason::ServiceClosed | CloseReason::LingerExpired => Closed::Service,
            CloseReason::Error(_) | CloseReason::Panic => Closed::Error,
            CloseReason::Hangup => Closed::Reset,
            CloseReason::Drained | CloseReason::DrainTimedOut => Closed::Drain,
            CloseReason::Handover => Closed::Handover,
            CloseReason::ProxyHeader(_) => Closed::ProxyHeader,
            CloseReason::PerClient => Closed::PerClient,
            CloseReason::Tls(_) => Closed::Tls,
        }
    }
}

/// Why a connection was refused at accept: the `reason` label of
/// `oneshotd_connections_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Refused {
    /// `max_connections` were already held.
    MaxConnections,
    /// The process was out of file descriptors.
    OutOfDescriptors,
    /// Its client already held `max_connections_per_client`.
    PerClient,
}

/// How many [`Refused`] reasons there are.
pub(crate) const REFUSED_REASONS: usize = 3;

/// One worker's per-request counters, per service: requests served, bytes
/// received, bytes sent. Aligned to two cache lines (the unit the
/// prefetcher pulls in pairs), so no other block shares them.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Block {
    per_service: [[AtomicU64; 3]; MAX_SERVICES],
}

const REQUESTS: usize = 0;
const RECEIVED: usize = 1;
const SENT: usize = 2;

impl Block {
    /// Adds one step's tally for `service`. Relaxed adds: a worker's block
    /// is a line only that worker writes, so there is no contention and no
    /// ordering to pay for; the shared block off the workers' path is
    /// written by few threads, rarely.
    pub(crate) fn add(&self, service: usize, tally: &Tally) {
        let counters = &self.per_service[service.min(MAX_SERVICES - 1)];
        for (index, value) in [
            (REQUESTS, tally.requests),
            (RECEIVED, tally.received),
            (SENT, tally.sent),
        ] {
            if value > 0 {
                counters[index].fetch_add(value, Ordering::Relaxed);
            }
        }
    }

    fn read(&self, service: usize, index: usize) -> u64 {
        self.per_service[service][index].load(Ordering::Relaxed)
    }
}

/// A worker's [`Block`], given back to the pool of blocks when dropped.
#[derive(Debug)]
pub(crate) struct Lease {
    block: Arc<Block>,
    metrics: Weak<Metrics>,
}

impl Lease {
    pub(crate) fn block(&self) -> &Block {
        &self.block
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(metrics) = self.metrics.upgrade() {
            lock(&metrics.blocks).idle.push(Arc::clone(&self.block));
        }
    }
}

#[derive(Debug, Default)]
struct Blocks {
    /// Every block ever made, summed by a scrape.
    all: Vec<Arc<Block>>,
    /// Blocks no worker holds now.
    idle: Vec<Arc<Block>>,
}

/// The per-connection and life-cycle counters, shared by every thread.
#[derive(Debug, Default)]
struct SharedCounters {
    accepted: [AtomicU64; MAX_SERVICES],
    refused: [[AtomicU64; REFUSED_REASONS]; MAX_SERVICES],
    closed: [[AtomicU64; Closed::ALL.len()]; MAX_SERVICES],
    restored: AtomicU64,
    handed_over: AtomicU64,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    /// By [`TlsHandshake`]: a handshake is once per connection, rare
    /// beside requests, so a shared counter costs the requests nothing.
    tls_handshakes: [AtomicU64; 3],
    tls_accepted: AtomicU64,
    tls_closed: AtomicU64,
}

/// How a TLS handshake ended: the `result` label of
/// `oneshotd_tls_handshakes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub(crate) enum TlsHandshake {
    Ok,
    Failed,
    TimedOut,
}

/// The labels of [`TlsHandshake`], in its order.
pub(crate) const TLS_RESULTS: [&str; 3] = ["ok", "failed", "timeout"];

/// What the dispatcher knows that no counter holds: read at each scrape.
pub(crate) trait Gauges: Send + Sync {
    /// Worker threads running.
    fn workers(&self) -> usize;
    /// The memory budget and what is held against it.
    fn buffers(&self) -> Buffers;
}

/// The memory budget's figures (`max_buffered_bytes`), as of a scrape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Buffers {
    /// Bytes held for clients that owe replies: replies the kernel has not
    /// taken and the input received behind them.
    pub held: usize,
    /// `max_buffered_bytes`.
    pub budget: usize,
    /// Connections not reading because they owe replies.
    pub throttled: usize,
}

/// The daemon's counters. One per server;
/// shared with the [`MetricsEndpoint`] that shows them and with whoever
/// reports reloads and handovers.
#[derive(Debug, Default)]
pub struct Metrics {
    blocks: Mutex<Blocks>,
    /// Counts from threads that are not workers (the housekeeper, the
    /// drain's walkers), whose steps are rare and mostly count nothing.
    off_path: Block,
    shared: SharedCounters,
    /// The `service` label of each service index, set when a server starts.
    services: OnceLock<Vec<ServiceLabels>>,
    gauges: OnceLock<Weak<dyn Gauges>>,
}

impl std::fmt::Debug for dyn Gauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gauges")
    }
}

/// How one service appears in the labels.
#[derive(Debug, Clone)]
pub(crate) struct ServiceLabels {
    /// The `service` label.
    pub name: String,
    /// The `reason` label of connections the service itself ended.
    pub closed_by_service: &'static str,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Metrics {
    /// Fresh counters, all zero.
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics::default())
    }

    /// Counts a reload that was applied (`ok`) or refused.
    pub fn reloaded(&self, ok: bool) {
        let counter = if ok {
            &self.shared.reloads_ok
        } else {
            &self.shared.reloads_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts connections handed over to the next instance at a restart.
    /// (Each is also closed with `CloseReason::Handover`, counted as
    /// closed with reason `handover`.)
    pub fn handed_over(&self, connections: u64) {
        self.shared
            .handed_over
            .fetch_add(connections, Ordering::Relaxed);
    }

    /// Counts connections restored from the previous instance at start.
    /// They are connections of the first service (the line protocol): they
    /// count as open for it without having been accepted.
    pub fn restored(&self, connections: u64) {
        self.shared
            .restored
            .fetch_add(connections, Ordering::Relaxed);
    }

    /// A block for a worker thread, its own until the lease is dropped.
    pub(crate) fn lease(self: &Arc<Self>) -> Lease {
        let mut blocks = lock(&self.blocks);
        let block = blocks.idle.pop().unwrap_or_else(|| {
            let block = Arc::new(Block::default());
            blocks.all.push(Arc::clone(&block));
            block
        });
        Lease {
            block,
            metrics: Arc::downgrade(self),
        }
    }

    /// The block for steps taken off the workers' path.
    pub(crate) fn off_path(&self) -> &Block {
        &self.off_path
    }

    pub(crate) fn accepted(&self, service: usize) {
        self.shared.accepted[service.min(MAX_SERVICES - 1)].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn refused(&self, service: usize, why: Refused) {
        self.shared.refused[service.min(MAX_SERVICES - 1)][why as usize]
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `count` TLS handshakes that ended as `result`.
    pub(crate) fn tls_handshakes(&self, result: TlsHandshake, count: u64) {
        self.shared.tls_handshakes[result as usize].fetch_add(count, Ordering::Relaxed);
    }

    /// Counts a TLS connection accepted (`true`) or closed (`false`).
    pub(crate) fn tls_connection(&self, opened: bool) {
        let counter = if opened {
            &self.shared.tls_accepted
        } else {
            &self.shared.tls_closed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn closed(&self, service: usize, reason: &CloseReason) {
        self.shared.closed[service.min(MAX_SERVICES - 1)][Closed::of(reason) as usize]
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Tells the metrics what the server serves and where its gauges are.
    /// Only the first server to attach is shown.
    pub(crate) fn attach(&self, services: Vec<ServiceLabels>, gauges: Weak<dyn Gauges>) {
        let _ = self.services.set(services);
        let _ = self.gauges.set(gauges);
    }

    /// Everything summed, now.
    pub fn snapshot(&self) -> Snapshot {
        let services = self.services.get().cloned().unwrap_or_default();
        let blocks: Vec<Arc<Block>> = lock(&self.blocks).all.clone();
        let per_service = services
            .into_iter()
            .enumerate()
            .map(|(index, labels)| {
                let sum = |counter| {
                    blocks.iter().map(|b| b.read(index, counter)).sum::<u64>()
                        + self.off_path.read(index, counter)
                };
                let shared = &self.shared;
                render::ServiceSnapshot {
                    labels,
                    requests: sum(REQUESTS),
                    received: sum(RECEIVED),
                    sent: sum(SENT),
                    accepted: shared.accepted[index].load(Ordering::Relaxed),
                    refused: shared.refused[index]
                        .each_ref()
                        .map(|c| c.load(Ordering::Relaxed)),
                    closed: shared.closed[index]
                        .each_ref()
                        .map(|c| c.load(Ordering::Relaxed)),
                    restored: if index == 0 {
                        shared.restored.load(Ordering::Relaxed)
                    } else {
                        0
                    },
                }
            })
            .collect();
        let gauges = self.gauges.get().and_then(Weak::upgrade);
        Snapshot {
            services: per_service,
            workers: gauges.as_ref().map_or(0, |g| g.workers()),
            buffers: gauges.as_ref().map(|g| g.buffers()).unwrap_or_default(),
            reloads_ok: self.shared.reloads_ok.load(Ordering::Relaxed),
            reloads_failed: self.shared.reloads_failed.load(Ordering::Relaxed),
            handed_over: self.shared.handed_over.load(Ordering::Relaxed),
            restored: self.shared.restored.load(Ordering::Relaxed),
            tls_handshakes: self
                .shared
                .tls_handshakes
                .each_ref()
                .map(|c| c.load(Ordering::Relaxed)),
            tls_open: self
                .shared
                .tls_accepted
                .load(Ordering::Relaxed)
                .saturating_sub(self.shared.tls_closed.load(Ordering::Relaxed)),
        }
    }
}

#[cfg(test)]
mod tests;
