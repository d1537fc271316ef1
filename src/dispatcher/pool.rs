//! The worker threads, and growing or shrinking them live.
//!
//! Growing spawns threads. Shrinking lowers the target and wakes one worker
//! through the oneshot wake-up eventfd; a worker that finds the pool too
//! big retires *after* finishing the events it already took, and passes
//! the wake-up on while the pool is still too big. So a retiring worker
//! never abandons a connection: a connection belongs to a worker only
//! between an event and its re-arm, and the worker re-arms before it exits.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use tracing::debug;

use super::Dispatcher;

/// The pool's size: what it should be and what it is.
#[derive(Debug, Default)]
pub(super) struct Counts {
    target: AtomicUsize,
    /// Workers that have not decided to retire. Incremented before a thread
    /// is spawned, decremented by the worker as it decides to retire.
    live: AtomicUsize,
}

impl Counts {
    pub(super) fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// How many workers should still retire.
    pub(super) fn excess(&self) -> usize {
        self.live()
            .saturating_sub(self.target.load(Ordering::Acquire))
    }

    /// Claims one retirement if the pool is bigger than its target.
    pub(super) fn try_retire(&self) -> bool {
        self.live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |live| {
                (live > self.target.load(Ordering::Acquire)).then(|| live - 1)
            })
            .is_ok()
    }
}

/// The thread handles; resizing is serialised by their lock.
#[derive(Debug, Default)]
pub(super) struct Pool {
    threads: Mutex<Vec<JoinHandle<()>>>,
    spawned: AtomicUsize,
}

impl Pool {
    /// Makes the pool `size` workers: spawns at once, or asks the excess
    /// to retire.
    pub(super) fn resize(&self, dispatcher: &Arc<Dispatcher>, size: usize) -> io::Result<()> {
        let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        join_finished(&mut threads);
        let counts = &dispatcher.pool;
        counts.target.store(size, Ordering::Release);
        while counts.live() < size {
            counts.live.fetch_add(1, Ordering::AcqRel);
            let number = self.spawned.fetch_add(1, Ordering::Relaxed);
            let worker = Arc::clone(dispatcher);
            let spawned = thread::Builder::new()
                .name(format!("oneshotd-w{number}"))
                .spawn(move || {
                    debug!(worker = number, "worker started");
                    worker.work();
                    debug!(worker = number, "worker retired");
                });
            match spawned {
                Ok(handle) => threads.push(handle),
                Err(e) => {
                    counts.live.fetch_sub(1, Ordering::AcqRel);
                    return Err(e);
                }
            }
        }
        if counts.excess() > 0 {
            dispatcher.wake.write(1)?;
        }
        Ok(())
    }

    /// Retires every worker and waits for them.
    pub(super) fn stop(&self, dispatcher: &Arc<Dispatcher>) {
        let _ = self.resize(dispatcher, 0);
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for handle in threads {
            let _ = handle.join();
        }
    }
}

fn join_finished(threads: &mut Vec<JoinHandle<()>>) {
    let (done, running): (Vec<_>, Vec<_>) = threads.drain(..).partition(|h| h.is_finished());
    *threads = running;
    for handle in done {
        let _ = handle.join();
    }
}
