//! The daemon's life: start, serve, reload on SIGHUP, drain on SIGTERM or
//! SIGINT, exit.
//!
//! Signals never do work in a handler. `signal-hook` sets a flag and writes
//! a byte to a socket pair; the main thread sleeps in `poll` on the other
//! end (with a timeout for its periodic duties: STATUS updates) and acts on
//! the flags in ordinary code.

use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use tracing::{error, info, warn};

use crate::cli::Cli;
use crate::config::{Config, ConfigSource};
use crate::dispatcher::{Server, Status};
use crate::listeners::{self, Listener, Origin};
use crate::logging::{self, LogControl};
use crate::notify::{status_line, Notifier};
use crate::upper::Upper;

/// `EX_CONFIG` from sysexits.h: the configuration is invalid.
pub const EXIT_CONFIG: u8 = 78;

/// How often the main thread wakes to refresh STATUS; also its rate limit.
const STATUS_INTERVAL: Duration = Duration::from_millis(250);

/// The systemd variables the daemon reads, read once in `main` before any
/// thread exists.
#[derive(Debug, Clone, Default)]
pub struct SystemdEnv {
    /// `NOTIFY_SOCKET`.
    pub notify_socket: Option<String>,
    /// `JOURNAL_STREAM`.
    pub journal_stream: Option<String>,
    /// `WATCHDOG_USEC`, if set and meant for this process (`WATCHDOG_PID`
    /// absent or ours).
    pub watchdog: Option<Duration>,
}

impl SystemdEnv {
    /// Reads the variables from the environment.
    pub fn from_env() -> Self {
        let var = |name| std::env::var(name).ok();
        let for_us = var("WATCHDOG_PID")
            .is_none_or(|pid| pid.parse::<u32>().ok() == Some(std::process::id()));
        SystemdEnv {
            notify_socket: var("NOTIFY_SOCKET"),
            journal_stream: var("JOURNAL_STREAM"),
            watchdog: var("WATCHDOG_USEC")
                .and_then(|usec| usec.parse::<u64>().ok())
                .filter(|&usec| usec > 0 && for_us)
                .map(Duration::from_micros),
        }
    }
}

/// Runs the daemon (or only checks its configuration) and returns the exit
/// code. `activated` are the sockets taken from systemd, if any.
pub fn run(cli: Cli, activated: Option<Vec<Listener>>, env: SystemdEnv) -> ExitCode {
    let source = ConfigSource::resolve(cli.config);
    let config = match source.load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("oneshotd: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if cli.check_config {
        println!("oneshotd: configuration is valid ({source})");
        return ExitCode::SUCCESS;
    }

    let log = logging::init(
        config.log_level,
        logging::stderr_is_journal(env.journal_stream.as_deref()),
    );
    let notifier = Notifier::new(env.notify_socket.as_deref());
    match serve(source, config, activated, &log, &notifier, env.watchdog) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// The flags set by the signal handlers, and the socket they poke.
struct Signals {
    wake: UnixStream,
    hangup: Arc<AtomicBool>,
    terminate: Arc<AtomicBool>,
}

impl Signals {
    fn register() -> std::io::Result<Signals> {
        let (wake, poke) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        let hangup = Arc::new(AtomicBool::new(false));
        let terminate = Arc::new(AtomicBool::new(false));
        for (signal, flag) in [
            (SIGHUP, &hangup),
            (SIGTERM, &terminate),
            (SIGINT, &terminate),
        ] {
            signal_hook::flag::register(signal, Arc::clone(flag))?;
            signal_hook::low_level::pipe::register(signal, poke.try_clone()?)?;
        }
        Ok(Signals {
            wake,
            hangup,
            terminate,
        })
    }

    /// Sleeps until a signal arrives or `timeout` passes.
    fn wait(&self, timeout: Duration) {
        let mut fds = [PollFd::new(self.wake.as_fd(), PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
        if matches!(nix::poll::poll(&mut fds, timeout), Ok(n) if n > 0) {
            let mut sink = [0u8; 64];
            while matches!((&self.wake).read(&mut sink), Ok(n) if n > 0) {}
        }
    }
}

fn serve(
    source: ConfigSource,
    mut config: Config,
    activated: Option<Vec<Listener>>,
    log: &LogControl,
    notifier: &Notifier,
    watchdog: Option<Duration>,
) -> Result<(), Box<dyn std::error::Error>> {
    info!(version = env!("CARGO_PKG_VERSION"), config = %source, "starting");
    if source == ConfigSource::BuiltIn {
        info!("no configuration file; using built-in defaults");
    }
    let signals = Signals::register()?;
    let (listeners, origin) = listeners::open(activated, &config.listen)?;
    for listener in &listeners {
        info!(address = %listener.describe(), "listening");
    }
    let unix_paths: Vec<PathBuf> = match origin {
        Origin::Bound => listeners::bound_unix_paths(&config.listen),
        Origin::Activated => Vec::new(),
    };
    let server = Server::start(&config, listeners, Arc::new(Upper))?;
    let mut shown = server.status();
    notifier.ready(&status_line("serving", shown));
    info!(workers = shown.workers, "ready");

    let mut watchdog = watchdog.map(|period| Watchdog::new(period, &server));
    let tick = watchdog
        .as_ref()
        .map_or(STATUS_INTERVAL, |w| STATUS_INTERVAL.min(w.interval / 4));
    loop {
        signals.wait(tick);
        if let Some(watchdog) = &mut watchdog {
            watchdog.tick(&server, notifier);
        }
        if signals.terminate.swap(false, Ordering::AcqRel) {
            break;
        }
        if signals.hangup.swap(false, Ordering::AcqRel) {
            reload(&source, &mut config, &server, log, notifier);
            shown = server.status();
            continue;
        }
        let now = server.status();
        if now != shown {
            notifier.status(&status_line("serving", now));
            shown = now;
        }
    }

    notifier.stopping(&status_line("draining", server.status()));
    let report = server.drain_reporting(config.drain_timeout, STATUS_INTERVAL, |status| {
        notifier.status(&status_line("draining", status))
    });
    if report.abandoned > 0 {
        warn!(
            connections = report.abandoned,
            drain_timeout_ms = config.drain_timeout.as_millis() as u64,
            "drain timed out; closed busy connections"
        );
    }
    for path in unix_paths {
        let _ = std::fs::remove_file(path);
    }
    info!("stopped");
    Ok(())
}

/// Re-reads the configuration and applies it, or keeps the old one.
fn reload(
    source: &ConfigSource,
    config: &mut Config,
    server: &Server,
    log: &LogControl,
    notifier: &Notifier,
) {
    notifier.reloading();
    let before = server.status();
    let new = match source.load() {
        Ok(new) => new,
        Err(e) => {
            error!(error = %e, "reload failed; keeping the running configuration");
            notifier.status(&format!(
                "reload failed: {e}; {}",
                status_line("serving", before)
            ));
            notifier.ready(&status_line("serving", before));
            return;
        }
    };
    if new.listen != config.listen {
        warn!("`listen` changed; a restart is needed to apply it");
    }
    log.set_level(new.log_level);
    if let Err(e) = server.reconfigure(&new) {
        error!(error = %e, "cannot resize the worker pool");
    }
    info!(
        workers = %format!("{} -> {}", config.workers, new.workers),
        max_connections = %format!("{} -> {}", config.max_connections, new.max_connections),
        max_line_bytes = %format!("{} -> {}", config.max_line_bytes, new.max_line_bytes),
        log_level = %format!("{} -> {}", config.log_level.as_str(), new.log_level.as_str()),
        "reload applied"
    );
    *config = new;
    let status = Status {
        workers: config.workers,
        connections: server.status().connections,
    };
    notifier.ready(&status_line("serving", status));
}

/// Sends `WATCHDOG=1` every half `WatchdogSec=`, but only while the worker
/// pool is taking events: each keep-alive needs a worker to have answered a
/// probe sent through the same epoll set as client events. A wedged pool
/// therefore lets systemd's watchdog fire instead of being papered over by
/// this thread, which would otherwise carry on regardless.
struct Watchdog {
    interval: Duration,
    next: Instant,
    probe_mark: u64,
    stalled: bool,
}

impl Watchdog {
    fn new(period: Duration, server: &Server) -> Self {
        let interval = period / 2;
        info!(watchdog_ms = period.as_millis() as u64, "watchdog enabled");
        Watchdog {
            interval,
            next: Instant::now(),
            probe_mark: server.probe(),
            stalled: false,
        }
    }

    fn tick(&mut self, server: &Server, notifier: &Notifier) {
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
