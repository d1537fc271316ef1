//! The one epoll set, over `nix`. The only file that knows `EPOLL*` flags:
//! it translates the dispatcher's [`Interest`] into them and them into the
//! connection's [`Readiness`] (see `step.rs`); the rest of the crate never
//! sees a flag.

use std::io;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use super::token::Token;
use crate::step::{Interest, Readiness};

/// A ready event: which descriptor, and what it reported.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Event {
    pub token: Token,
    pub readiness: Readiness,
}

/// Storage for [`EventSet::wait`].
pub(crate) struct EventBuffer(Vec<EpollEvent>);

impl EventBuffer {
    pub(crate) fn new(capacity: usize) -> Self {
        EventBuffer(vec![EpollEvent::empty(); capacity.max(1)])
    }
}

/// The dispatcher's epoll instance. Every descriptor in it is registered
/// `EPOLLONESHOT`: the kernel disarms a descriptor as it hands one event for
/// it to one waiting worker, and nothing more is reported for it until that
/// worker re-arms it with [`EventSet::rearm`]. Any number of threads may
/// wait on the set at once (the pool usually lets one at a time wait: see
/// `leader.rs`).
#[derive(Debug)]
pub(crate) struct EventSet {
    epoll: Epoll,
}

fn flags(interest: Interest) -> EpollFlags {
    // RDHUP goes with IN: a connection that waits only to write (throttled,
    // or closing) must not be woken by a FIN it will not read yet, because
    // the half-close stays pending and would fire again at every re-arm, a
    // busy loop. HUP and ERR are reported whatever the interest.
    let mut flags = EpollFlags::EPOLLONESHOT;
    if interest.read {
        flags |= EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP;
    }
    if interest.write {
        flags |= EpollFlags::EPOLLOUT;
    }
    flags
}

impl EventSet {
    pub(crate) fn new() -> io::Result<Self> {
        Ok(EventSet {
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
        })
    }

    /// Registers `fd`, armed for one event of `interest`.
    pub(crate) fn add(&self, fd: impl AsFd, token: Token, interest: Interest) -> io::Result<()> {
        let event = EpollEvent::new(flags(interest), token.to_u64());
        Ok(self.epoll.add(fd, event)?)
    }

    /// Re-arms `fd` for one more event (`EPOLL_CTL_MOD`). Only the worker
    /// holding the descriptor's last event may call this.
    ///
    /// `EPOLL_CTL_MOD` re-checks readiness: if bytes arrived while the fd
    /// was disarmed, it fires again at once, so stopping after a bounded
    /// batch (or a short read) loses no wake-up.
    pub(crate) fn rearm(&self, fd: impl AsFd, token: Token, interest: Interest) -> io::Result<()> {
        debug_assert!(
            interest.read || interest.write,
            "an empty interest never fires"
        );
        let mut event = EpollEvent::new(flags(interest), token.to_u64());
        Ok(self.epoll.modify(fd, &mut event)?)
    }

    /// Removes `fd` from the set (`EPOLL_CTL_DEL`), before it is closed.
    pub(crate) fn delete(&self, fd: impl AsFd) -> io::Result<()> {
        Ok(self.epoll.delete(fd)?)
    }

    /// Waits for events, without timeout: first polls without sleeping
    /// for up to `spin` (see `spin.rs`), then sleeps until one arrives.
    /// Retries `EINTR`, so a signal delivered to this thread is never
    /// mistaken for an event or an error.
    pub(crate) fn wait<'a>(
        &self,
        buffer: &'a mut EventBuffer,
        spin: Duration,
    ) -> io::Result<impl ExactSizeIterator<Item = Event> + 'a> {
        let n = match self.poll_for(&mut buffer.0, spin)? {
            0 => self.epoll_wait(&mut buffer.0, EpollTimeout::NONE)?,
            n => n,
        };
        Ok(buffer.0[..n].iter().map(decode))
    }

    /// Polls (`epoll_wait` with a zero timeout) until events arrive or
    /// `spin` has passed; 0 if none came. Zero `spin`: no poll at all.
    fn poll_for(&self, events: &mut [EpollEvent], spin: Duration) -> io::Result<usize> {
        if spin.is_zero() {
            return Ok(0);
        }
        let started = Instant::now();
        loop {
            let n = self.epoll_wait(events, EpollTimeout::ZERO)?;
            let spun = started.elapsed();
            if n > 0 || spun >= spin {
                return Ok(n);
            }
            // Each poll is a system call, dearer than looking at the clock:
            // poll every POLL_INTERVAL rather than back to back.
            let next_poll = (spun + POLL_INTERVAL).min(spin);
            while started.elapsed() < next_poll {
                std::hint::spin_loop();
            }
        }
    }

    fn epoll_wait(&self, events: &mut [EpollEvent], timeout: EpollTimeout) -> io::Result<usize> {
        loop {
            match self.epoll.wait(events, timeout) {
                Ok(n) => return Ok(n),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// How often a spinning wait polls the epoll set.
const POLL_INTERVAL: Duration = Duration::from_micros(2);

fn decode(event: &EpollEvent) -> Event {
    let f = event.events();
    Event {
        token: Token::from_u64(event.data()),
        // EPOLLIN, EPOLLOUT and EPOLLRDHUP are not passed on: a step reads
        // and writes whatever they say (see `Readiness`).
        readiness: Readiness {
            hangup: f.contains(EpollFlags::EPOLLHUP),
            error: f.contains(EpollFlags::EPOLLERR),
        },
    }
}

#[cfg(test)]
mod tests {
    //! Pins the kernel semantics the dispatcher relies on, on a socketpair.
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::sync::Arc;

    /// Polls once without blocking (a set with nothing ready returns 0).
    fn ready(set: &EventSet) -> Vec<Token> {
        let mut buf = vec![EpollEvent::empty(); 8];
        let n = set.epoll.wait(&mut buf, EpollTimeout::ZERO).unwrap();
        buf[..n].iter().map(|e| Token::from_u64(e.data())).collect()
    }

    #[test]
    fn oneshot_fires_once_until_rearmed() {
        let set = EventSet::new().unwrap();
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let token = Token::Connection {
            slot: 1,
            generation: 9,
        };
        set.add(&ours, token, Interest::READ).unwrap();
        assert!(ready(&set).is_empty(), "nothing written yet");

        theirs.write_all(b"a").unwrap();
        assert_eq!(ready(&set), vec![token], "an armed fd fires once");
        theirs.write_all(b"b").unwrap();
        assert!(
            ready(&set).is_empty(),
            "disarmed: more data brings no event"
        );

        set.rearm(&ours, token, Interest::READ).unwrap();
        assert_eq!(
            ready(&set),
            vec![token],
            "rearm with data queued fires at once"
        );

        set.delete(&ours).unwrap();
        set.add(&ours, token, Interest::READ).unwrap();
        set.delete(&ours).unwrap();
        assert!(ready(&set).is_empty(), "after delete, nothing");
        assert_eq!(
            set.rearm(&ours, token, Interest::READ)
                .unwrap_err()
                .raw_os_error(),
            Some(libc_enoent()),
            "MOD of a deleted fd is ENOENT"
        );
    }

    /// A registered socketpair end, for the spin tests.
    fn armed_pair(set: &EventSet, token: Token) -> (UnixStream, UnixStream) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        set.add(&ours, token, Interest::READ).unwrap();
        (ours, theirs)
    }

    /// Writes one byte to `theirs` after `delay`, from another thread.
    fn write_later(mut theirs: UnixStream, delay: Duration) -> std::thread::JoinHandle<UnixStream> {
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            theirs.write_all(b"x").unwrap();
            theirs
        })
    }

    /// Consumes the byte that fired and re-arms, for the next wait.
    fn consume_and_rearm(set: &EventSet, ours: &UnixStream, token: Token) {
        (&*ours).read_exact(&mut [0u8; 1]).unwrap();
        set.rearm(ours, token, Interest::READ).unwrap();
    }

    // The spin itself, `poll_for`, is tested directly: it only ever calls
    // `epoll_wait` with a zero timeout, so an event it returns was found
    // by a poll during the spin, not by the sleeping wait that follows it
    // in `wait` (which returns the same event whether or not the spin
    // works, so a test of `wait` alone cannot tell).
    #[test]
    fn a_spin_finds_an_event_that_arrives_while_it_polls() {
        let set = EventSet::new().unwrap();
        let token = Token::Connection {
            slot: 2,
            generation: 1,
        };
        let (ours, mut theirs) = armed_pair(&set, token);
        let mut events = vec![EpollEvent::empty(); 4];
        // Ready before the spin: the first poll finds it.
        theirs.write_all(b"a").unwrap();
        assert_eq!(
            set.poll_for(&mut events, Duration::from_secs(10)).unwrap(),
            1
        );
        assert_eq!(Token::from_u64(events[0].data()), token);

        // Ready 20 ms into a 10 s spin: a later poll finds it, and the
        // spin ends there rather than running out its time.
        consume_and_rearm(&set, &ours, token);
        let writer = write_later(theirs, Duration::from_millis(20));
        let started = Instant::now();
        assert_eq!(
            set.poll_for(&mut events, Duration::from_secs(10)).unwrap(),
            1,
            "the spin ran out without finding the event"
        );
        assert!(started.elapsed() < Duration::from_secs(5), "spun it out");
        assert_eq!(Token::from_u64(events[0].data()), token);
        let theirs = writer.join().unwrap();

        // Nothing within the spin: it gives up after its time, not before,
        // and reports nothing.
        consume_and_rearm(&set, &ours, token);
        let started = Instant::now();
        assert_eq!(
            set.poll_for(&mut events, Duration::from_millis(5)).unwrap(),
            0
        );
        assert!(
            started.elapsed() >= Duration::from_millis(5),
            "gave up early"
        );
        // A zero spin does not poll at all, even with an event ready.
        let writer = write_later(theirs, Duration::ZERO);
        writer.join().unwrap();
        assert_eq!(set.poll_for(&mut events, Duration::ZERO).unwrap(), 0);
    }

    /// The CPU time this thread has used: a spin uses it, a sleep does not.
    fn thread_cpu_time() -> Duration {
        let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).unwrap();
        Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32)
    }

    /// [`EventSet::wait`] spinning for up to `spin`, on its own thread so
    /// that a wait that never wakes fails the test after 10 s instead of
    /// hanging it: the tokens, and the CPU time the waiting thread used.
    fn wait_on_thread(set: &Arc<EventSet>, spin: Duration) -> (Vec<Token>, Duration) {
        let set = Arc::clone(set);
        let (done, result) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buffer = EventBuffer::new(4);
            let cpu = thread_cpu_time();
            let tokens: Vec<Token> = set
                .wait(&mut buffer, spin)
                .unwrap()
                .map(|e| e.token)
                .collect();
            let _ = done.send((tokens, thread_cpu_time() - cpu));
        });
        result
            .recv_timeout(Duration::from_secs(10))
            .expect("the wait did not return within 10 s")
    }

    // `wait` spins before it sleeps: waiting 50 ms for an event with a
    // long spin burns the waiting thread's CPU meanwhile (a sleeping wait
    // uses microseconds). The bound is a tenth of the gap, so a spinning
    // thread that a loaded machine schedules out most of the time still
    // passes; and a spin too short for the event still ends in the sleep
    // that wakes for it.
    #[test]
    fn a_wait_spins_before_it_sleeps_and_the_sleep_still_wakes() {
        let set = Arc::new(EventSet::new().unwrap());
        let token = Token::Connection {
            slot: 3,
            generation: 1,
        };
        let (ours, theirs) = armed_pair(&set, token);
        let writer = write_later(theirs, Duration::from_millis(50));
        let (tokens, spun) = wait_on_thread(&set, Duration::from_secs(10));
        assert_eq!(tokens, vec![token]);
        assert!(
            spun >= Duration::from_millis(5),
            "slept instead: {spun:?} of CPU"
        );
        let theirs = writer.join().unwrap();

        consume_and_rearm(&set, &ours, token);
        let writer = write_later(theirs, Duration::from_millis(50));
        let (tokens, _) = wait_on_thread(&set, Duration::from_micros(100));
        assert_eq!(tokens, vec![token]);
        writer.join().unwrap();
    }

    fn libc_enoent() -> i32 {
        Errno::ENOENT as i32
    }
}
