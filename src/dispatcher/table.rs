//! The connection table: slots indexed by token, each holding one
//! connection and the generation that makes stale events harmless.
//!
//! Slots live in fixed chunks allocated on first use and never moved, so a
//! slot's address is stable and the table never needs a global lock to be
//! read; only allocating and freeing slot indices takes the free-list lock.

use std::io;
use std::ops::Range;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use crate::connection::Connection;
use crate::dispatcher::epoll::EventSet;
use crate::dispatcher::token::{Token, MAX_SLOT};
use crate::step::Interest;

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

/// A locked slot that holds a connection: while it exists, its holder is
/// the connection's only owner. Ends by [`Held::rearm`] (ownership passes
/// back to the kernel), [`ConnectionTable::remove`] (the connection is
/// closed), or by dropping it (only where the connection was left armed,
/// as a tick that changed nothing).
#[derive(Debug)]
pub(crate) struct Held<'a> {
    index: u32,
    state: MutexGuard<'a, SlotState>,
}

impl Held<'_> {
    pub(crate) fn connection(&mut self) -> &mut Connection {
        self.state
            .connection
            .as_mut()
            .expect("a held slot holds a connection")
    }

    fn token(&self) -> Token {
        Token::Connection {
            slot: self.index,
            generation: self.state.generation,
        }
    }

    /// Re-arms the connection for one more event of `interest`
    /// (`EPOLL_CTL_MOD`) and gives up the slot: from the moment the call
    /// returns, the next event may reach any worker, which then owns it.
    ///
    /// The oneshot invariant: a client socket in the set is either armed
    /// (the kernel owns it and no thread touches it, but for the
    /// housekeeper and the drain under this same lock) or disarmed and
    /// owned by exactly one holder, which ends its ownership here or by
    /// removing it. So `ENOENT` (the fd is not in the set) or `EBADF` (it
    /// was closed) can only mean that invariant was broken elsewhere: a
    /// second owner deleted or closed it. The error is returned with the
    /// slot still held, and the caller closes the connection: the bug costs
    /// that connection, never a worker or another connection.
    pub(crate) fn rearm(
        mut self,
        events: &EventSet,
        interest: Interest,
    ) -> Result<(), (Self, io::Error)> {
        let token = self.token();
        match events.rearm(self.connection().fd().as_fd(), token, interest) {
            Ok(()) => Ok(()),
            Err(e) => Err((self, e)),
        }
    }
}

impl Slot {
    /// Locks the slot. A panic while a slot was held (a service bug) has
    /// already closed that connection, so a poisoned lock is still sound.
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn try_lock(&self) -> Option<MutexGuard<'_, SlotState>> {
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
    /// connection is inserted, decremented by [`Self::remove`]; read by
    /// STATUS and the drain.
    live: AtomicUsize,
    /// The same, per admission budget: what a connection limit is checked
    /// against (see [`Self::reserve`]).
    budgets: Box<[AtomicUsize]>,
    /// Each service's budget, by service index.
    budget_of: Box<[usize]>,
    /// Someone waits in [`Self::wait_live_below`]: removals must notify.
    watched: AtomicBool,
    removed: (Mutex<()>, Condvar),
}

impl ConnectionTable {
    /// A table for up to `capacity` connections at once. `budget_of` gives
    /// each service (by index) its admission budget: services that share
    /// one (`max_connections`) have the same number.
    pub(crate) fn new(capacity: usize, budget_of: Vec<usize>) -> Self {
        let capacity = capacity.min(MAX_SLOT as usize + 1);
        let chunks = capacity.div_ceil(CHUNK);
        ConnectionTable {
            chunks: (0..chunks).map(|_| OnceLock::new()).collect(),
            free: Mutex::default(),
            high_water: AtomicU32::new(0),
            live: AtomicUsize::new(0),
            budgets: (0..=budget_of.iter().copied().max().unwrap_or(0))
                .map(|_| AtomicUsize::new(0))
                .collect(),
            budget_of: budget_of.into(),
            watched: AtomicBool::new(false),
            removed: (Mutex::new(()), Condvar::new()),
        }
    }

    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    pub(crate) fn high_water(&self) -> u32 {
        self.high_water.load(Ordering::SeqCst)
    }

    /// Counts one more connection of `service` if fewer than `max` are
    /// held in its budget.
    pub(crate) fn reserve(&self, service: u8, max: usize) -> bool {
        let reserved = self
            .budget(service)
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        if reserved {
            self.live.fetch_add(1, Ordering::AcqRel);
        }
        reserved
    }

    /// Gives back a reservation that was not used.
    pub(crate) fn unreserve(&self, service: u8) {
        self.budget(service).fetch_sub(1, Ordering::AcqRel);
        self.live.fetch_sub(1, Ordering::AcqRel);
    }

    fn budget(&self, service: u8) -> &AtomicUsize {
        // A service index the table was not told of shares budget 0 (only
        // tests build connections outside the dispatcher's services).
        let budget = self
            .budget_of
            .get(usize::from(service))
            .copied()
            .unwrap_or(0);
        &self.budgets[budget]
    }

    /// The slot at `index`, if it was ever allocated.
    fn slot(&self, index: u32) -> Option<&Slot> {
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
                    // SeqCst: see `Dispatcher::admit`, which relies on a drain that missed
                    // this slot seeing its own flag first.
                    self.high_water.store(free.next_unused, Ordering::SeqCst);
                    free.next_unused - 1
                }
                None => {
                    self.unreserve(connection.service());
                    return Err(std::io::Error::other("connection table full"));
                }
            }
        };
        let chunk = self.chunks[index as usize / CHUNK]
            .get_or_init(|| (0..CHUNK).map(|_| Slot::default()).collect());
        let mut state = chunk[index as usize % CHUNK].lock();
        debug_assert!(state.connection.is_none());
        state.connection = Some(connection);
        let held = Held { index, state };
        let token = held.token();
        let registered = register(held.state.connection.as_ref().expect("just stored"), token);
        if let Err(e) = registered {
            self.remove(held);
            return Err(e);
        }
        Ok(token)
    }

    /// Takes the connection out of a held slot, bumping its generation so
    /// that events still in flight for it are recognised as stale.
    pub(crate) fn remove(&self, mut held: Held<'_>) -> Connection {
        let connection = held.state.connection.take().expect("held slots are full");
        held.state.generation = held.state.generation.wrapping_add(1);
        drop(held.state);
        self.budget(connection.service())
            .fetch_sub(1, Ordering::AcqRel);
        self.free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .free
            .push(held.index);
        // SeqCst with `wait_live_below`'s: either it sees the new count or
        // this sees that it waits and wakes it.
        self.live.fetch_sub(1, Ordering::SeqCst);
        if self.watched.load(Ordering::SeqCst) {
            let _guard = self.removed.0.lock().unwrap_or_else(|p| p.into_inner());
            self.removed.1.notify_all();
        }
        connection
    }

    /// Waits until fewer than `count` connections are held or `until`
    /// passes; returns how many are held then. Woken by each removal while
    /// it waits, so the drain ends the moment the last connection closes.
    pub(crate) fn wait_live_below(&self, count: usize, until: Instant) -> usize {
        self.watched.store(true, Ordering::SeqCst);
        let (lock, removed) = &self.removed;
        let mut guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        let live = loop {
            let live = self.live.load(Ordering::SeqCst);
            let now = Instant::now();
            if live < count || now >= until {
                break live;
            }
            guard = removed
                .wait_timeout(guard, until - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        };
        drop(guard);
        // Removals stop notifying once nobody waits (one waiter at a time:
        // the drain).
        self.watched.store(false, Ordering::SeqCst);
        live
    }

    /// The slot at `slot` locked, if it still holds the connection of
    /// `generation`; `None` for a stale event (closed meanwhile).
    pub(crate) fn hold(&self, slot: u32, generation: u32) -> Option<Held<'_>> {
        let state = self.slot(slot)?.lock();
        (state.generation == generation && state.connection.is_some())
            .then_some(Held { index: slot, state })
    }

    /// Runs `f` on every slot holding a connection. With `wait`, a slot a
    /// worker holds is waited for; without, it is skipped (it is busy, so
    /// not idle, and its worker will re-arm or close it).
    pub(crate) fn for_each(&self, wait: bool, f: impl FnMut(Held<'_>)) {
        self.for_each_in(0..self.high_water(), wait, f);
    }

    /// [`Self::for_each`] for the slots numbered `slots` only.
    pub(crate) fn for_each_in(&self, slots: Range<u32>, wait: bool, mut f: impl FnMut(Held<'_>)) {
        for index in slots {
            let Some(slot) = self.slot(index) else {
                continue;
            };
            let state = if wait {
                Some(slot.lock())
            } else {
                slot.try_lock()
            };
            if let Some(state) = state.filter(|state| state.connection.is_some()) {
                f(Held { index, state });
            }
        }
    }
}
