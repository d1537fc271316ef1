//! Telling systemd what the daemon is doing, over `NOTIFY_SOCKET`.
//!
//! See `sd_notify(3)` and `systemd.service(5)` (`Type=notify`,
//! `WatchdogSec=`). Messages are formatted by the `sd-notify` crate and sent
//! from one nonblocking datagram socket opened at start. Nonblocking
//! matters: the thread that notifies is the one that handles signals, and a
//! manager slow to read (a full queue: `net.unix.max_dgram_qlen` is 10 by
//! default) must never stall SIGTERM handling. A STATUS or WATCHDOG that
//! finds the queue full is dropped (the next one supersedes it); READY,
//! RELOADING and STOPPING are retried for up to a second.

use std::io;
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
use sd_notify::NotifyState;

/// The most descriptors one datagram may carry (the kernel's `SCM_MAX_FD`).
pub const MAX_FDS_PER_MESSAGE: usize = 253;

/// Sends notifications if `NOTIFY_SOCKET` was set at start.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, UnixAddr)>,
}

/// How hard to try when the manager's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// State changes the manager acts on: retry for a while.
    Retry,
    /// Superseded by the next one: drop if the queue is full.
    BestEffort,
    /// A handover's descriptors: connections are lost if they do not get
    /// through, so wait longer for a slow manager.
    Handover,
}

impl Delivery {
    fn patience(self) -> Duration {
        match self {
            Delivery::Retry => Duration::from_secs(1),
            Delivery::BestEffort => Duration::ZERO,
            Delivery::Handover => Duration::from_secs(10),
        }
    }
}

impl Notifier {
    /// `notify_socket` is the value of `NOTIFY_SOCKET`, read once at start:
    /// a path, or `@name` for an abstract socket.
    pub fn new(notify_socket: Option<&str>) -> Self {
        let target = notify_socket.filter(|s| !s.is_empty()).and_then(|s| {
            let addr = match s.strip_prefix('@') {
                Some(name) => UnixAddr::new_abstract(name.as_bytes()),
                None => UnixAddr::new(s),
            }
            .map_err(io::Error::from);
            let socket = UnixDatagram::unbound().and_then(|socket| {
                socket.set_nonblocking(true)?;
                Ok(socket)
            });
            match (socket, addr) {
                (Ok(socket), Ok(addr)) => Some((socket, addr)),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(notify_socket = s, error = %e, "cannot notify the service manager");
                    None
                }
            }
        });
        Notifier { target }
    }

    /// There is a manager to tell things to (and to hold descriptors).
    pub fn has_manager(&self) -> bool {
        self.target.is_some()
    }

    fn send(&self, states: &[NotifyState<'_>], delivery: Delivery) {
        // A manager that went away must not stop the daemon.
        let _ = self.send_with_fds(states, &[], delivery);
    }

    /// Sends one datagram, with `fds` attached (`SCM_RIGHTS`).
    fn send_with_fds(
        &self,
        states: &[NotifyState<'_>],
        fds: &[BorrowedFd<'_>],
        delivery: Delivery,
    ) -> io::Result<()> {
        let Some((socket, addr)) = &self.target else {
            return Ok(());
        };
        let message: String = states.iter().map(|s| format!("{s}\n")).collect();
        let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
        let rights = [ControlMessage::ScmRights(&raw)];
        let control: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &rights };
        let give_up = Instant::now() + delivery.patience();
        loop {
            let sent = sendmsg(
                socket.as_raw_fd(),
                &[IoSlice::new(message.as_bytes())],
                control,
                MsgFlags::empty(),
                Some(addr),
            );
            match sent {
                Ok(_) => return Ok(()),
                Err(Errno::EAGAIN) => {
                    if delivery == Delivery::BestEffort || Instant::now() >= give_up {
                        return Err(Errno::EAGAIN.into());
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Hands `fds` to the manager's fd store under `name` (`FDSTORE=1`,
    /// `FDNAME=`), as many datagrams as the kernel's limit per datagram
    /// needs.
    pub fn store_fds(&self, name: &str, fds: &[OwnedFd]) -> io::Result<()> {
        let states = [
            NotifyState::Custom("FDSTORE=1"),
            NotifyState::Custom(&format!("FDNAME={name}")),
        ];
        for chunk in fds.chunks(MAX_FDS_PER_MESSAGE) {
            let borrowed: Vec<BorrowedFd<'_>> = chunk.iter().map(|fd| fd.as_fd()).collect();
            self.send_with_fds(&states, &borrowed, Delivery::Handover)?;
        }
        Ok(())
    }

    /// Asks the manager to drop what its fd store holds under `name`
    /// (`FDSTOREREMOVE=1`). An error means the manager may still hold it.
    pub fn remove_stored_fds(&self, name: &str) -> io::Result<()> {
        self.send_with_fds(
            &[
                NotifyState::Custom("FDSTOREREMOVE=1"),
                NotifyState::Custom(&format!("FDNAME={name}")),
            ],
            &[],
            Delivery::Handover,
        )
    }

    /// `BARRIER=1`: returns once the manager has processed every message
    /// sent before it (it closes the pipe end sent along, and the read end
    /// sees the hang-up), or after `timeout`.
    pub fn barrier(&self, timeout: Duration) -> io::Result<()> {
        if self.target.is_none() {
            return Ok(());
        }
        let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        self.send_with_fds(
            &[NotifyState::Custom("BARRIER=1")],
            &[write_end.as_fd()],
            Delivery::Handover,
        )?;
        drop(write_end);
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut fds = [PollFd::new(read_end.as_fd(), PollFlags::POLLIN)];
            let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
            match nix::poll::poll(&mut fds, timeout) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::TimedOut, "barrier timed out")),
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// `READY=1` with the current STATUS.
    pub fn ready(&self, status: &str) {
        self.send(
            &[NotifyState::Ready, NotifyState::Status(status)],
            Delivery::Retry,
        );
    }

    /// `STATUS=...`.
    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)], Delivery::BestEffort);
    }

    /// `RELOADING=1` and `MONOTONIC_USEC=` in one datagram, as
    /// `Type=notify-reload` requires.
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now], Delivery::Retry),
            Err(_) => self.send(&[NotifyState::Reloading], Delivery::Retry),
        }
    }

    /// `STOPPING=1`.
    pub fn stopping(&self, status: &str) {
        self.send(
            &[NotifyState::Stopping, NotifyState::Status(status)],
            Delivery::Retry,
        );
    }

    /// `WATCHDOG=1`.
    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog], Delivery::BestEffort);
    }
}
