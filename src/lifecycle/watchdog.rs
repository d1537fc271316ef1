//! systemd's watchdog (`WatchdogSec=`), fed only while the pool works.

use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::dispatcher::Server;
use crate::notify::Notifier;

/// Sends `WATCHDOG=1` every half `WatchdogSec=`, but only while the worker
/// pool is taking events: each keep-alive needs a worker to have answered a
/// probe sent through the same epoll set as client events. A wedged pool
/// therefore lets systemd's watchdog fire instead of being papered over by
/// this thread, which would otherwise carry on regardless.
pub(super) struct Watchdog {
    pub(super) interval: Duration,
    next: Instant,
    probe_mark: u64,
    stalled: bool,
}

impl Watchdog {
    pub(super) fn new(period: Duration, server: &Server) -> Self {
        let interval = period / 2;
        info!(watchdog_ms = period.as_millis() as u64, "watchdog enabled");
        Watchdog {
            interval,
            next: Instant::now(),
            probe_mark: server.probe(),
            stalled: false,
        }
    }

    pub(super) fn tick(&mut self, server: &Server, notifier: &Notifier) {
        let now = Instant::now();
        if now < self.next {
            return;
        }
        if server.heartbeat() == self.probe_mark {
            if !self.stalled {
                warn!("worker pool has not answered the watchdog probe; withholding WATCHDOG=1");
                self.stalled = true;
            }
            return;
        }
        self.stalled = false;
        notifier.watchdog();
        self.next = now + self.interval;
        self.probe_mark = server.probe();
    }
}
