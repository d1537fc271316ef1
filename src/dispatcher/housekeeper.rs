//! The housekeeper: one thread that enforces deadlines and resumes paused
//! listeners, so that no connection needs a timer or a thread of its own.
//!
//! Every tick it visits the connections no worker is holding (a held one is
//! busy, hence not idle) and lets each check its idle, request and linger
//! deadlines, through the same panic-guarded step as the workers
//! (`drive.rs`). It holds the slot lock while it does, which is what makes
//! acting on an armed connection safe: a worker woken for that connection
//! meanwhile waits for the lock, then finds either the same connection (and
//! handles its event) or a new generation (and drops the event).

use std::io;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::{drain, Dispatcher};
use crate::connection::{Scratch, LINGER};
use crate::step::Stimulus;

/// Tells the housekeeper to stop, and waits for it.
#[derive(Debug)]
pub(super) struct Handle {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: JoinHandle<()>,
}

impl Handle {
    /// Makes the housekeeper look again at once, e.g. because a drain began
    /// and it must switch to the drain's short tick.
    pub(super) fn nudge(&self) {
        let (stopped, wake) = &*self.stop;
        // Taken so the nudge cannot fall between its check and its wait.
        let _guard = stopped.lock().unwrap_or_else(|p| p.into_inner());
        wake.notify_all();
    }

    pub(super) fn stop(self) {
        let (stopped, wake) = &*self.stop;
        *stopped.lock().unwrap_or_else(|p| p.into_inner()) = true;
        wake.notify_all();
        let _ = self.thread.join();
    }
}

pub(super) fn spawn(dispatcher: Arc<Dispatcher>) -> io::Result<Handle> {
    let stop = Arc::new((Mutex::new(false), Condvar::new()));
    let stop_seen = Arc::clone(&stop);
    let thread = thread::Builder::new()
        .name("oneshotd-timer".to_owned())
        .spawn(move || run(&dispatcher, &stop_seen))?;
    Ok(Handle { stop, thread })
}

fn run(dispatcher: &Dispatcher, stop: &(Mutex<bool>, Condvar)) {
    let mut scratch = Scratch::new();
    let (stopped, wake) = stop;
    loop {
        let limits = dispatcher.limits.connection();
        let draining = dispatcher.draining();
        let tick = if draining {
            drain::TICK
        } else {
            (limits.idle_timeout.min(limits.request_timeout).min(LINGER) / 8)
                .clamp(Duration::from_millis(5), Duration::from_millis(250))
        };
        let guard = stopped.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = wake
            .wait_timeout_while(guard, tick, |stopped| {
                !*stopped && dispatcher.draining() == draining
            })
            .unwrap_or_else(|p| p.into_inner());
        if *guard {
            return;
        }
        drop(guard);

        dispatcher.budget.refresh();
        dispatcher.table.for_each(false, |held| {
            dispatcher.drive(held, Stimulus::Tick, &mut scratch)
        });
        if !dispatcher.draining() {
            dispatcher.resume_paused_listeners();
        }
    }
}
