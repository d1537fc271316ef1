//! Signals never do work in a handler. `signal-hook` sets a flag and writes
//! a byte to a socket pair; the main thread sleeps in `poll` on the other
//! end (with a timeout for its periodic duties) and acts on the flags in
//! ordinary code.

use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR2};

/// The flags set by the signal handlers, and the socket they poke.
pub(super) struct Signals {
    wake: UnixStream,
    hangup: Arc<AtomicBool>,
    terminate: Arc<AtomicBool>,
    handover: Arc<AtomicBool>,
}

impl Signals {
    pub(super) fn register() -> std::io::Result<Signals> {
        let (wake, poke) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        let hangup = Arc::new(AtomicBool::new(false));
        let terminate = Arc::new(AtomicBool::new(false));
        let handover = Arc::new(AtomicBool::new(false));
        for (signal, flag) in [
            (SIGHUP, &hangup),
            (SIGTERM, &terminate),
            (SIGINT, &terminate),
            (SIGUSR2, &handover),
        ] {
            signal_hook::flag::register(signal, Arc::clone(flag))?;
            signal_hook::low_level::pipe::register(signal, poke.try_clone()?)?;
        }
        Ok(Signals {
            wake,
            hangup,
            terminate,
            handover,
        })
    }

    /// Sleeps until a signal arrives or `timeout` passes.
    pub(super) fn wait(&self, timeout: Duration) {
        let mut fds = [PollFd::new(self.wake.as_fd(), PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
        if matches!(nix::poll::poll(&mut fds, timeout), Ok(n) if n > 0) {
            let mut sink = [0u8; 64];
            while matches!((&self.wake).read(&mut sink), Ok(n) if n > 0) {}
        }
    }

    /// SIGTERM or SIGINT arrived since the last call.
    pub(super) fn take_terminate(&self) -> bool {
        self.terminate.swap(false, Ordering::AcqRel)
    }

    /// SIGUSR2 (systemd's `RestartKillSignal=`) arrived since the last call.
    pub(super) fn take_handover(&self) -> bool {
        self.handover.swap(false, Ordering::AcqRel)
    }

    /// SIGHUP arrived since the last call.
    pub(super) fn take_hangup(&self) -> bool {
        self.hangup.swap(false, Ordering::AcqRel)
    }
}
