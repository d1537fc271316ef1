//! Telling systemd what the daemon is doing, over `NOTIFY_SOCKET`.
//!
//! See `sd_notify(3)` and `systemd.service(5)` (`Type=notify`,
//! `WatchdogSec=`). Messages are best effort: a manager that went away must
//! not stop the daemon, so send errors are ignored.

use sd_notify::NotifyState;

use crate::dispatcher::Status;

/// Sends notifications if `NOTIFY_SOCKET` was set at start.
#[derive(Debug, Clone, Copy)]
pub struct Notifier {
    enabled: bool,
}

impl Notifier {
    /// `notify_socket` is the value of `NOTIFY_SOCKET`, read once at start.
    pub fn new(notify_socket: Option<&str>) -> Self {
        Notifier {
            enabled: notify_socket.is_some_and(|s| !s.is_empty()),
        }
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if self.enabled {
            let _ = sd_notify::notify(states);
        }
    }

    /// `READY=1` with the current STATUS.
    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// `STATUS=...`.
    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    /// `RELOADING=1` and `MONOTONIC_USEC=` in one datagram, as
    /// `Type=notify-reload` requires.
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    /// `STOPPING=1`.
    pub fn stopping(&self, status: &str) {
        self.send(&[NotifyState::Stopping, NotifyState::Status(status)]);
    }

    /// `WATCHDOG=1`.
    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }
}

/// The STATUS line: a word for the state, then the figures.
pub fn status_line(state: &str, status: Status) -> String {
    format!(
        "{state}: workers={} connections={}",
        status.workers, status.connections
    )
}
