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
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

/// Sends notifications if `NOTIFY_SOCKET` was set at start.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

/// How hard to try when the manager's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// State changes the manager acts on: retry for a while.
    Retry,
    /// Superseded by the next one: drop if the queue is full.
    BestEffort,
}

impl Notifier {
    /// `notify_socket` is the value of `NOTIFY_SOCKET`, read once at start:
    /// a path, or `@name` for an abstract socket.
    pub fn new(notify_socket: Option<&str>) -> Self {
        let target = notify_socket.filter(|s| !s.is_empty()).and_then(|s| {
            let addr = match s.strip_prefix('@') {
                Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
                None => SocketAddr::from_pathname(s),
            };
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

    fn send(&self, states: &[NotifyState<'_>], delivery: Delivery) {
        let Some((socket, addr)) = &self.target else {
            return;
        };
        let message: String = states.iter().map(|s| format!("{s}\n")).collect();
        let give_up = Instant::now() + Duration::from_secs(1);
        loop {
            match socket.send_to_addr(message.as_bytes(), addr) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if delivery == Delivery::BestEffort || Instant::now() >= give_up {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A manager that went away must not stop the daemon.
                Ok(_) | Err(_) => return,
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
