//! The connection table: slots indexed by token, each holding one
//! connection and the generation that makes stale events harmless.
//!
//! Slots live in fixed chunks allocated on first use and never moved, so a
//! slot's address is stable and the table never needs a global lock to be
//! read; only allocating and freeing slot indices takes the free-list lock.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use crate::connection::Connection;
use crate::dispatcher::token::{Token, MAX_SLOT};

const CHUNK: usize = 256;

/// One slot: a connection (or none) and its generation, behind a lock.
///
/// The lock is not what makes a connection exclusive to one worker: that is
/// `EPOLLONESHOT`, and on the event path the lock is always free when a
/// worker takes it. It exists for the housekeeper, which must take an
/// *armed* connection (idle timeout, request timeout, drain) out of the
/// kernel's hands without racing the worker an event may be on its way to.
#[derive(Debug, Default)]
pub(crate) struct Slot(Mutex<SlotState>);

/// What a slot holds.
#[derive(Debug, Default)]
pub(crate) struct SlotState {
    /// Bumped each time the slot's connection closes; part of the token.
    pub generation: u32,
    pub connection: Option<Connection>,
}

impl Slot {
    /// Locks the slot. A panic while a slot was held (a service bug) has
    /// already closed that connection, so a poisoned lock is still sound.
    pub(crate) fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, SlotState>> {
        match self.0.try_lock() {
            Ok(guard) => Some(guard),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }
}

#[derive(Debug, Default)]
struct FreeList {
    free: Vec<u32>,
    next_unused: u32,
}

/// The table of live connections.
#[derive(Debug)]
pub(crate) struct ConnectionTable {
    chunks: Box<[OnceLock<Box<[Slot]>>]>,
    free: Mutex<FreeList>,
    /// Slots ever handed out: the housekeeper scans `0..high_water`.
    high_water: AtomicU32,
    /// Connections held right now. Incremented by [`Self::reserve`] before a
    /// connection is inserted, decremented by [`Self::remove`]; read by the
    /// `max_connections` check, STATUS and the drain.
    live: AtomicUsize,
}

impl ConnectionTable {
    /// A table for up to `capacity` connections at once.
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.min(MAX_SLOT as usize + 1);
        let chunks = capacity.div_ceil(CHUNK);
        ConnectionTable {
            chunks: (0..chunks).map(|_| OnceLock::new()).collect(),
            free: Mutex::default(),
            high_water: AtomicU32::new(0),
            live: AtomicUsize::new(0),
        }
    }

    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    pub(crate) fn high_water(&self) -> u32 {
        self.high_water.load(Ordering::Acquire)
    }

    /// Counts one more connection if fewer than `max` are held.
    pub(crate) fn reserve(&self, max: usize) -> bool {
        self.live
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives back a reservation that was not used.
    pub(crate) fn unreserve(&self) {
        self.live.fetch_sub(1, Ordering::AcqRel);
    }

    /// The slot at `index`, if it was ever allocated.
    pub(crate) fn slot(&self, index: u32) -> Option<&Slot> {
        let index = index as usize;
        self.chunks
            .get(index / CHUNK)?
            .get()
            .map(|chunk| &chunk[index % CHUNK])
    }

    /// Stores a connection (after a successful [`Self::reserve`]) and runs
    /// `register` with its token while the slot is still locked, so that a
    /// worker woken by the registration waits until the slot is complete.
    /// If the table is full or `register` fails, the connection is dropped
    /// (closed) and the reservation given back.
    pub(crate) fn insert(
        &self,
        connection: Connection,
        register: impl FnOnce(&Connection, Token) -> std::io::Result<()>,
    ) -> std::io::Result<Token> {
        let index = {
            let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
            match free.free.pop() {
                Some(index) => index,
                None if (free.next_unused as usize) < self.chunks.len() * CHUNK => {
                    free.next_unused += 1;
                    self.high_water.store(free.next_unused, Ordering::Release);
                    free.next_unused - 1
                }
                None => {
                    self.unreserve();
                    return Err(std::io::Error::other("connection table full"));
                }
            }
        };
        let chunk = self.chunks[index as usize / CHUNK]
            .get_or_init(|| (0..CHUNK).map(|_| Slot::default()).collect());
        let mut state = chunk[index as usize % CHUNK].lock();
        debug_assert!(state.connection.is_none());
        let token = Token::Connection {
            slot: index,
            generation: state.generation,
        };
        state.connection = Some(connection);
        let registered = register(state.connection.as_ref().expect("just stored"), token);
        if let Err(e) = registered {
            self.remove(index, &mut state);
            return Err(e);
        }
        Ok(token)
    }

    /// Takes the connection out of a locked slot, bumping its generation so
    /// that events still in flight for it are recognised as stale.
    pub(crate) fn remove(&self, index: u32, state: &mut SlotState) -> Option<Connection> {
        let connection = state.connection.take()?;
        state.generation = state.generation.wrapping_add(1);
        self.free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .free
            .push(index);
        self.live.fetch_sub(1, Ordering::AcqRel);
        Some(connection)
    }
}
