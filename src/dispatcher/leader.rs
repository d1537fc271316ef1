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
//!   sleeps on a stall alarm (a `timerfd`) that the leader winds up
//!   each time it comes back from `epoll_wait`;
//! - a leader that gets a **full batch** steps down before handling it:
//!   more events are probably ready than it will reach soon, so it fires
//!   the alarm and the watcher leads (and waits on the set) meanwhile.
//!   The pool thus grows into the load one worker per full batch;
//! - the watcher **takes over** when the alarm expires while the leader
//!   is neither waiting nor has wound it up since: the leader has been on
//!   one batch for at least half a [`WATCH_PERIOD`] (a slow request). It
//!   waits on the set in the leader's place, and the old leader becomes a
//!   follower when it is done.
//!
//! A leader that keeps coming back from `epoll_wait` keeps the alarm
//! from expiring, so a busy pool wakes no follower at all, and winding it
//! up costs at most one system call per half period, not one per batch. (A
//! watcher that looked every period instead woke a thousand times a second
//! under load, each time preempting whatever ran on another core.) A leader
//! that goes idle lets the alarm expire once per idle spell; the watcher
//! finds it waiting in `epoll_wait` and sleeps until it is wound up again.
//!
//! The cost of a turn-taking pool is bounded lateness: a request that
//! arrives while the leader is stuck is picked up after at most about one
//! period. Nothing here is needed for correctness: after a takeover, the
//! old and the new leader may briefly wait on the set together, and a
//! watcher may take over from a leader that was not stuck after all; both
//! are safe for the same oneshot reason.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tracing::error;

/// The alarm's period: a leader that has been on one batch for between
/// half of this and all of it is taken over.
pub(super) const WATCH_PERIOD: Duration = Duration::from_millis(2);

/// Who leads, and the alarm the watcher sleeps on.
#[derive(Debug)]
pub(super) struct Leadership {
    state: Mutex<State>,
    /// Where the followers other than the watcher sleep.
    followers: Condvar,
    /// Wound up by the leader as it leaves `epoll_wait`, fired at once by
    /// a step-down; the watcher blocks reading it.
    alarm: TimerFd,
    /// When the alarm is due, in nanoseconds since `epoch`: lets the
    /// leader skip winding it up while it is still half a period away.
    alarm_due: AtomicU64,
    epoch: Instant,
    /// The leader is in `epoll_wait`.
    waiting: AtomicBool,
    /// Changes whenever a worker takes the lead.
    term: AtomicU64,
    /// Times the watcher woke and found the leader making progress.
    #[cfg(test)]
    spared: AtomicU64,
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
    pub(super) fn new() -> io::Result<Leadership> {
        let alarm = TimerFd::new(ClockId::CLOCK_MONOTONIC, TimerFlags::TFD_CLOEXEC)?;
        Ok(Leadership {
            state: Mutex::default(),
            followers: Condvar::new(),
            alarm,
            alarm_due: AtomicU64::new(0),
            epoch: Instant::now(),
            waiting: AtomicBool::new(false),
            term: AtomicU64::new(0),
            #[cfg(test)]
            spared: AtomicU64::new(0),
        })
    }

    /// Blocks until the calling worker leads.
    pub(super) fn follow(&self) -> Term {
        let mut state = self.lock();
        loop {
            if !state.led {
                return self.lead(&mut state);
            }
            if !state.watched {
                state.watched = true;
                drop(state);
                return self.watch();
            }
            state.sleeping += 1;
            state = self
                .followers
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
            state.sleeping -= 1;
        }
    }

    /// Runs the leader's `epoll_wait` (`wait`), winding up the alarm as
    /// it returns.
    pub(super) fn wait<T>(&self, wait: impl FnOnce() -> T) -> T {
        self.waiting.store(true, SeqCst);
        let result = wait();
        // Wound up before `waiting` is cleared: a watcher that sees the
        // leader out of `epoll_wait` also sees the alarm it set.
        self.wind_up_alarm();
        self.waiting.store(false, SeqCst);
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
            // Fired now, the alarm wakes the watcher, who finds no leader.
            self.set_alarm(Duration::from_nanos(1));
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

    /// Sets the alarm a whole period ahead, unless it is still at least
    /// half a period away.
    fn wind_up_alarm(&self) {
        let now = self.nanos_since_epoch();
        let half = WATCH_PERIOD.as_nanos() as u64 / 2;
        if self.alarm_due.load(SeqCst) >= now + half {
            return;
        }
        self.set_alarm(WATCH_PERIOD);
    }

    fn set_alarm(&self, after: Duration) {
        let due = self.nanos_since_epoch() + after.as_nanos() as u64;
        self.alarm_due.store(due, SeqCst);
        let expiration = Expiration::OneShot(TimeSpec::from_duration(after));
        if let Err(e) = self.alarm.set(expiration, TimerSetTimeFlags::empty()) {
            // Never seen (EINVAL would be a bug here); the watcher then
            // only takes over at a step-down.
            error!(error = %e, "cannot set the stall alarm");
        }
    }

    fn nanos_since_epoch(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// The watcher's loop: returns when it leads.
    fn watch(&self) -> Term {
        loop {
            if let Err(e) = self.alarm.wait() {
                error!(error = %e, "cannot read the stall alarm");
                thread::sleep(WATCH_PERIOD);
            }
            let mut state = self.lock();
            if state.led {
                // `waiting` before the alarm: see `wait`.
                let waiting = self.waiting.load(SeqCst);
                if waiting || matches!(self.alarm.get(), Ok(Some(_))) {
                    // Asleep in `epoll_wait`, or back from it since the
                    // alarm expired: not stuck.
                    #[cfg(test)]
                    self.spared.fetch_add(1, SeqCst);
                    continue;
                }
                // Otherwise the leader has spent at least half a period on
                // one batch: lead in its place.
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
        let leadership = Leadership::new().unwrap();
        let term = leadership.follow();
        assert!(leadership.leads(&term));
        leadership.wait(|| ());
        assert!(leadership.leads(&term));
    }

    /// A leader stuck outside `epoll_wait` is replaced.
    #[test]
    fn the_watcher_takes_over_from_a_stuck_leader() {
        let leadership = Arc::new(Leadership::new().unwrap());
        let term = leadership.follow();
        leadership.wait(|| ());
        let (led, watcher) = follow_in_thread(&leadership);
        led.recv_timeout(Duration::from_secs(5))
            .expect("no takeover");
        assert!(!leadership.leads(&term), "the old term ended");
        let _ = watcher.join().unwrap();
    }

    /// While the leader sleeps in `epoll_wait` the alarm expires, but
    /// the watcher spares it; once the leader is back from the wait and
    /// stays away, the watcher takes over.
    #[test]
    fn the_watcher_spares_a_leader_asleep_in_epoll_wait() {
        let leadership = Arc::new(Leadership::new().unwrap());
        let term = leadership.follow();
        // A first batch winds the alarm up.
        leadership.wait(|| ());
        let (release, released) = mpsc::channel::<()>();
        let leader = {
            let leadership = Arc::clone(&leadership);
            thread::spawn(move || {
                leadership.wait(|| released.recv().unwrap());
                term
            })
        };
        // Watched only once it waits: the alarm may expire before that
        // (a slow machine), and the watcher must then find it waiting.
        while !leadership.waiting.load(SeqCst) {
            thread::yield_now();
        }
        let (led, watcher) = follow_in_thread(&leadership);
        let deadline = Instant::now() + Duration::from_secs(5);
        while leadership.spared.load(SeqCst) == 0 {
            assert!(Instant::now() < deadline, "the alarm never expired");
            assert!(
                led.try_recv().is_err(),
                "no takeover while the leader waits"
            );
            thread::sleep(WATCH_PERIOD / 2);
        }
        assert!(
            led.try_recv().is_err(),
            "no takeover while the leader waits"
        );
        release.send(()).unwrap();
        let term = leader.join().unwrap();
        // Back from `epoll_wait`, the leader never returns to it: takeover.
        led.recv_timeout(Duration::from_secs(5))
            .expect("no takeover");
        assert!(!leadership.leads(&term));
        let _ = watcher.join().unwrap();
    }

    #[test]
    fn every_follower_gets_the_lead_in_turn() {
        let leadership = Arc::new(Leadership::new().unwrap());
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
