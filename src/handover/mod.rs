//! Restart without dropping a connection: established connections go to
//! the next instance through systemd's fd store.
//!
//! On `SIGUSR2` (the unit's `RestartKillSignal=`, sent only for restarts)
//! the daemon stops accepting, lets every worker finish the event it holds,
//! and takes each connection out of the dispatcher whole: its socket,
//! which still holds what the kernel queued in both directions, and a
//! `Carried` state — the incomplete request, the replies not yet sent,
//! the half-close, its id, client, timers and session. The sockets go to
//! the manager with `FDSTORE=1 FDNAME=conn`; the states go in one memfd,
//! `FDNAME=state`, as records keyed by each socket's identity (device and
//! inode), because systemd hands stored fds back in no fixed order. A
//! barrier makes sure the manager took them before the process exits. The
//! next instance finds them in `LISTEN_FDS`, matches each socket to its
//! record, serves it on as if nothing had happened, and removes them from
//! the store, so that a connection it closes later really closes.
//!
//! This module is the handover's home: what crosses (`carried.rs`), how it
//! is written down (`record.rs`), the trip through the manager
//! (`store.rs`), and matching sockets to records here. Two pieces live
//! beside what they take apart, because only there are its fields
//! visible: the dispatcher empties its table into a [`HandedOver`] and
//! takes connections back in (`dispatcher/handover.rs`), and a connection
//! turns itself into a `Carried` and back (`connection/handover.rs`).

mod carried;
pub(crate) mod record;
pub mod store;

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use nix::sys::stat::fstat;
use nix::time::{clock_gettime, ClockId};
use tracing::warn;

pub(crate) use carried::{Carried, CarriedHeader, CarriedPhase, CarriedSession, CarriedTls};
pub use record::FormatError;

/// The connections a handover took out of the dispatcher, ready for the
/// manager: their sockets, and one state file describing them all.
pub struct HandedOver {
    /// The sockets, in no particular order (the records are keyed by each
    /// socket's identity, not by position).
    pub sockets: Vec<OwnedFd>,
    /// The state file (see `handover/record.rs`). It holds TLS sessions'
    /// secrets: wiped when dropped, never shown by `Debug`.
    pub state: zeroize::Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for HandedOver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandedOver")
            .field("sockets", &self.sockets)
            .field("state", &format_args!("<{} bytes>", self.state.len()))
            .finish()
    }
}

impl HandedOver {
    /// Writes down the connections taken out, each socket with its state,
    /// as of now. A socket that cannot be identified is closed with a
    /// warning: the next instance could not match it to its record.
    pub(crate) fn new(connections: Vec<(OwnedFd, Carried)>) -> HandedOver {
        let mut sockets = Vec::with_capacity(connections.len());
        let mut records = Vec::with_capacity(connections.len());
        for (fd, carried) in connections {
            match SocketKey::of(&fd) {
                Ok(key) => {
                    sockets.push(fd);
                    records.push((key, carried));
                }
                Err(e) => {
                    warn!(conn = %carried.id, error = %e, "cannot identify the socket; closing it")
                }
            }
        }
        let refs: Vec<_> = records
            .iter()
            .map(|(key, carried)| (*key, carried))
            .collect();
        HandedOver {
            sockets,
            state: record::encode(monotonic_now(), &refs),
        }
    }
}

/// What a restore did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RestoreReport {
    /// Connections taken back and served on.
    pub restored: usize,
    /// Sockets closed because no readable record described them (or their
    /// session could not be read back).
    pub closed: usize,
}

/// Matches each socket a previous instance handed over to its record in
/// the `state` files, by its identity, with every timer moved on by the
/// time the restart took. A socket without a readable record (missing,
/// corrupt, an unknown format version) is closed with a warning, never
/// served with part of its state missing; the count of those comes back
/// beside the matched ones.
///
/// A TLS connection's record is marked usable only if `manager_forgot`
/// (see `Server::restore`) and its state file is sealed: nothing wrote to
/// it since the previous instance did.
pub(crate) fn match_records(
    sockets: Vec<OwnedFd>,
    state: Vec<OwnedFd>,
    manager_forgot: bool,
) -> (Vec<(OwnedFd, Carried)>, usize) {
    let mut records: HashMap<SocketKey, Carried> = HashMap::new();
    for fd in state {
        let sealed = store::is_sealed(&fd);
        let file = store::read_state_file(fd)
            .map_err(|e| e.to_string())
            .and_then(|bytes| record::decode(&bytes).map_err(|e| e.to_string()));
        match file {
            Ok(file) => {
                let gap = monotonic_now().saturating_sub(file.handed_over_at);
                records.extend(file.records.into_iter().map(|(key, mut carried)| {
                    carried.age_by(gap);
                    if let Some(tls) = &mut carried.tls {
                        tls.usable = sealed && manager_forgot;
                    }
                    (key, carried)
                }));
            }
            Err(e) => {
                warn!(error = %e, "unreadable handover state; its connections will be closed")
            }
        }
    }
    let mut matched = Vec::with_capacity(sockets.len());
    let mut unmatched = 0;
    for fd in sockets {
        match SocketKey::of(&fd).ok().and_then(|key| records.remove(&key)) {
            Some(carried) => matched.push((fd, carried)),
            None => {
                warn!("a handed-over connection has no readable state record; closing it");
                unmatched += 1;
            }
        }
    }
    (matched, unmatched)
}

/// A socket's identity, the same in every process that holds it: the
/// device and inode of its sockfs file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct SocketKey {
    pub dev: u64,
    pub ino: u64,
}

impl SocketKey {
    pub(crate) fn of(fd: impl AsFd) -> io::Result<SocketKey> {
        let stat = fstat(fd)?;
        Ok(SocketKey {
            dev: stat.st_dev,
            ino: stat.st_ino,
        })
    }
}

/// `CLOCK_MONOTONIC` now: the clock a state file's timers are measured on,
/// shared by every process on the machine (unlike `Instant`, which is
/// opaque).
pub(crate) fn monotonic_now() -> Duration {
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(Duration::from)
        .unwrap_or_default()
}
