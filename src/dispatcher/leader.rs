//! Leader and followers: which worker waits on the epoll set.
//!
//! Any number of workers *may* wait on the set at once: the oneshot
//! registration alone guarantees one owner per connection. But if every
//! idle worker waits, each event that arrives while one worker is busy
//! wakes another: a futex wake and a context switch every few requests, and
//! on a machine with fewer idle cores than workers the woken worker only
//! competes with the busy one for a core. So the pool takes turns (the
//! leader/followers pattern):
//!
//! - one worker, the **leader**, waits on the set, handles the batch it
//!   gets, and waits again;
//! - the others are **followers**, asleep. One of them, the **watcher**,
//!   looks every [`WATCH_PERIOD`] whether the leader is still making
//!   progress;
//! - a leader that gets a **full batch** steps down before handling it:
//!   more events are probably ready than it will reach soon, so the watcher
//!   leads (and waits on the set) meanwhile. The pool thus grows into the
//!   load one worker per full batch;
//! - the watcher **takes over** when the leader has been handling one batch
//!   for a whole period (a slow request): it waits on the set in the
//!   leader's place, and the old leader becomes a follower when it is done;
//! - when the leader has slept in `epoll_wait` for a whole period (nothing
//!   to do), the watcher sleeps without a deadline too, and the leader
//!   wakes it when it leaves `epoll_wait`. An idle pool wakes no thread.
//!
//! The cost of a turn-taking pool is bounded lateness: a request that
//! arrives while the leader is stuck is picked up after at most about two
//! periods. Nothing here is needed for correctness: after a takeover, the
//! old and the new leader may briefly wait on the set together, which is
//! safe for the same oneshot reason.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// How long the leader may stay on one batch before the watcher waits on
/// the set in its place.
pub(super) const WATCH_PERIOD: Duration = Duration::from_millis(1);

/// Who leads, and the evidence the watcher reads to see the leader move.
#[derive(Debug, Default)]
pub(super) struct Leadership {
    state: Mutex<State>,
    /// Where the watcher sleeps.
    watcher: Condvar,
    /// Where the other followers sleep.
    followers: Condvar,
    /// Times the leader has left `epoll_wait`: its progress.
    polls: AtomicU64,
    /// The leader is in `epoll_wait`.
    waiting: AtomicBool,
    /// The watcher sleeps without a deadline; the leader must wake it when
    /// it leaves `epoll_wait`.
    watcher_parked: AtomicBool,
    /// Changes whenever a worker takes the lead.
    term: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    /// A worker leads.
    led: bool,
    /// A follower is the watcher.
    watched: bool,
    /// Followers asleep on [`Leadership::followers`].
    sleeping: usize,
}

/// A worker's proof of leadership, valid until it steps down or the watcher
/// takes over.
#[derive(Debug)]
#[must_use]
pub(super) struct Term(u64);

impl Leadership {
    /// Blocks until the calling worker leads.
    pub(super) fn follow(&self) -> Term {
        let mut state = self.lock();
        loop {
            if !state.led {
                return self.lead(&mut state);
            }
            if !state.watched {
                state.watched = true;
                return self.watch(state);
            }
            state.sleeping += 1;
            state = self
                .followers
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
            state.sleeping -= 1;
        }
    }

    /// Runs the leader's `epoll_wait` (`wait`), keeping the watcher informed.
    pub(super) fn wait<T>(&self, wait: impl FnOnce() -> T) -> T {
        self.waiting.store(true, SeqCst);
        let result = wait();
        // Progress first: a watcher that sees `waiting` cleared must also
        // see the new count, or it would take a returning leader for stuck.
        self.polls.fetch_add(1, SeqCst);
        self.waiting.store(false, SeqCst);
        if self.watcher_parked.load(SeqCst) {
            // Taking the lock orders this after the watcher's wait began.
            let _state = self.lock();
            self.watcher.notify_one();
        }
        result
    }

    /// Whether `term` is still the current one (no takeover happened).
    pub(super) fn leads(&self, term: &Term) -> bool {
        self.term.load(SeqCst) == term.0
    }

    /// Gives up the lead, if `term` still holds it, to the watcher or else
    /// to a sleeping follower (or to the next worker that follows).
    pub(super) fn step_down(&self, term: &Term) {
        let mut state = self.lock();
        if !self.leads(term) {
            return;
        }
        state.led = false;
        if state.watched {
            self.watcher.notify_one();
        } else if state.sleeping > 0 {
            self.followers.notify_one();
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lead(&self, state: &mut State) -> Term {
        state.led = true;
        Term(self.term.fetch_add(1, SeqCst) + 1)
    }

    /// The watcher's loop: returns when it leads.
    fn watch(&self, mut state: MutexGuard<'_, State>) -> Term {
        let mut seen = self.polls.load(SeqCst);
        loop {
            state = self
                .watcher
                .wait_timeout(state, WATCH_PERIOD)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            if state.led {
                // `waiting` before `polls`: see `wait`.
                let waiting = self.waiting.load(SeqCst);
                let polls = self.polls.load(SeqCst);
                if polls != seen {
                    seen = polls;
                    continue;
                }
                if waiting {
                    // The leader has slept a whole period: nothing to
                    // watch until it leaves `epoll_wait`.
                    self.watcher_parked.store(true, SeqCst);
                    while state.led && self.polls.load(SeqCst) == seen {
                        state = self.watcher.wait(state).unwrap_or_else(|p| p.into_inner());
                    }
                    self.watcher_parked.store(false, SeqCst);
                    seen = self.polls.load(SeqCst);
                    if state.led {
                        continue;
                    }
                }
                // Otherwise the leader has spent a whole period on one
                // batch: lead in its place.
            }
            state.watched = false;
            if state.sleeping > 0 {
                // Someone must watch the new leader.
                self.followers.notify_one();
            }
            return self.lead(&mut state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::sync::Arc;
    use std::thread::{self, JoinHandle};
    use std::time::Instant;

    /// A thread that follows; the receiver hears when it leads.
    fn follow_in_thread(leadership: &Arc<Leadership>) -> (mpsc::Receiver<()>, JoinHandle<Term>) {
        let (sender, led) = mpsc::channel();
        let leadership = Arc::clone(leadership);
        let thread = thread::spawn(move || {
            let term = leadership.follow();
            sender.send(()).unwrap();
            term
        });
        (led, thread)
    }

    #[test]
    fn the_first_to_follow_leads_and_keeps_leading() {
        let leadership = Leadership::default();
        let term = leadership.follow();
        assert!(leadership.leads(&term));
        leadership.wait(|| ());
        assert!(leadership.leads(&term));
    }

    /// A leader stuck outside `epoll_wait` is replaced.
    #[test]
    fn the_watcher_takes_over_from_a_stuck_leader() {
        let leadership = Arc::new(Leadership::default());
        let term = leadership.follow();
        leadership.wait(|| ());
        let (led, watcher) = follow_in_thread(&leadership);
        led.recv_timeout(Duration::from_secs(5))
            .expect("no takeover");
        assert!(!leadership.leads(&term), "the old term ended");
        let _ = watcher.join().unwrap();
    }

    /// While the leader sleeps in `epoll_wait` the watcher parks instead of
    /// taking over, and is woken when the leader leaves it.
    #[test]
    fn the_watcher_parks_while_the_leader_waits() {
        let leadership = Arc::new(Leadership::default());
        let term = leadership.follow();
        let (release, released) = mpsc::channel::<()>();
        let leader = {
            let leadership = Arc::clone(&leadership);
            thread::spawn(move || {
                leadership.wait(|| released.recv().unwrap());
                term
            })
        };
        while !leadership.waiting.load(SeqCst) {
            thread::yield_now();
        }
        let (led, watcher) = follow_in_thread(&leadership);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !leadership.watcher_parked.load(SeqCst) {
            assert!(Instant::now() < deadline, "the watcher never parked");
            thread::sleep(WATCH_PERIOD);
        }
        assert!(
            led.try_recv().is_err(),
            "no takeover while the leader waits"
        );
        release.send(()).unwrap();
        let term = leader.join().unwrap();
        // Unparked, it now sees a leader that does not come back: takeover.
        led.recv_timeout(Duration::from_secs(5))
            .expect("no takeover");
        assert!(!leadership.leads(&term));
        let _ = watcher.join().unwrap();
    }

    #[test]
    fn every_follower_gets_the_lead_in_turn() {
        let leadership = Arc::new(Leadership::default());
        let term = leadership.follow();
        let (sender, led) = mpsc::channel();
        let followers: Vec<_> = (0..3)
            .map(|_| {
                let leadership = Arc::clone(&leadership);
                let sender = sender.clone();
                thread::spawn(move || {
                    let term = leadership.follow();
                    sender.send(()).unwrap();
                    // Stay leader while waiting, so the others keep following.
                    leadership.wait(|| thread::sleep(Duration::from_millis(50)));
                    leadership.step_down(&term);
                })
            })
            .collect();
        leadership.wait(|| thread::sleep(Duration::from_millis(20)));
        leadership.step_down(&term);
        for _ in 0..3 {
            led.recv_timeout(Duration::from_secs(5))
                .expect("a follower took the lead");
        }
        for follower in followers {
            follower.join().unwrap();
        }
    }
}
