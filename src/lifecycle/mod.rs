//! The daemon's life: start (taking back connections a previous instance
//! handed over), serve, reload on SIGHUP, drain on SIGTERM or SIGINT, hand
//! the connections to the next instance on SIGUSR2, exit. What systemd
//! sees of it goes through [`Notifier`].
//!
//! This module owns the drain's deadline and what is reported while it
//! runs; the dispatcher owns how connections are drained (`dispatcher/drain.rs`).

mod reload;
mod signals;
mod watchdog;

use std::os::fd::OwnedFd;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use crate::agent::Agent;
use crate::availability::Availability;
use crate::config::{Config, ConfigError, ConfigErrorKind, ConfigSource, ListenAddr};
use crate::dispatcher::{Endpoint, Server, Status};
use crate::fault;
use crate::handover;
use crate::hosted::Hosted;
use crate::listeners::{self, Inherited, Listener};
use crate::logging::{self, LogControl};
use crate::metrics::{Metrics, MetricsEndpoint};
use crate::notify::Notifier;
use crate::program::Program;
use signals::Signals;
use watchdog::Watchdog;

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
    /// `WATCHDOG_USEC`, if set, non-zero and meant for this process
    /// (`WATCHDOG_PID` absent or ours).
    pub watchdog: Option<Duration>,
}

impl SystemdEnv {
    /// Reads the variables from the environment.
    pub fn from_env() -> Self {
        SystemdEnv {
            notify_socket: std::env::var("NOTIFY_SOCKET").ok(),
            journal_stream: std::env::var("JOURNAL_STREAM").ok(),
            watchdog: sd_notify::watchdog_enabled().filter(|period| !period.is_zero()),
        }
    }
}

/// Runs the daemon with `config` (read from `source`, which a reload reads
/// again) serving `service`, until SIGTERM or SIGINT; returns the exit
/// code. `activated` are the sockets taken from systemd, if any.
pub fn run(
    program: &Program,
    source: ConfigSource,
    config: Config,
    activated: Option<Inherited>,
    env: SystemdEnv,
    service: Hosted,
) -> ExitCode {
    let log = logging::init(
        program.name,
        config.log_level,
        logging::stderr_is_journal(env.journal_stream.as_deref()),
    );
    let notifier = Notifier::new(env.notify_socket.as_deref());
    let daemon = Daemon {
        program: program.clone(),
        availability: Availability::new(config.max_connections),
        source,
        config,
        log,
        notifier,
    };
    match daemon.serve(activated, service, env.watchdog) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            // A configuration that cannot serve what systemd handed over
            // is a bad configuration, as one that does not parse.
            if e.is::<ConfigError>() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// What the main thread keeps while the daemon runs.
struct Daemon {
    /// Who it is (the start's log line says so).
    program: Program,
    source: ConfigSource,
    config: Config,
    log: LogControl,
    notifier: Notifier,
    /// What the agent and `/ready` tell load balancers.
    availability: Arc<Availability>,
}

impl Daemon {
    fn serve(
        mut self,
        activated: Option<Inherited>,
        service: Hosted,
        watchdog: Option<Duration>,
    ) -> Result<(), Box<dyn std::error::Error>> {
        info!(
            program = self.program.name,
            version = self.program.version,
            config = %self.source,
            "starting"
        );
        if self.source.file().is_none() {
            info!("no configuration file; using built-in defaults");
        }
        let signals = Signals::register()?;
        let (activated, activated_metrics, activated_agent, activated_tls, handed_over) =
            match activated {
                Some(inherited) => (
                    Some(inherited.listeners),
                    Some(inherited.metrics),
                    Some(inherited.agent),
                    Some(inherited.tls),
                    (inherited.connections, inherited.state),
                ),
                None => (None, None, None, None, Default::default()),
            };
        let listeners = listeners::open(activated, &self.config.listen)?;
        for listener in &listeners {
            info!(address = %listener.describe(), "listening");
        }
        let metrics_listeners = open_endpoint(
            activated_metrics,
            &self.config.metrics_listen,
            "metrics_listen",
            "metrics endpoint",
        )?;
        let agent_listeners = open_endpoint(
            activated_agent,
            &self.config.agent_listen,
            "agent_listen",
            "load-balancer agent",
        )?;
        let tls_listeners = open_endpoint(
            activated_tls,
            &self.config.tls_listen,
            "tls_listen",
            "listening over TLS",
        )?;
        if !tls_listeners.is_empty() && self.config.tls.is_none() {
            return Err(Box::new(ConfigError {
                path: self
                    .source
                    .file()
                    .map_or_else(|| "<built-in>".into(), Into::into),
                kind: ConfigErrorKind::TlsSocketWithoutFiles,
            }));
        }
        let metrics = Metrics::new();
        let endpoint = Hosted::from(
            MetricsEndpoint::new(Arc::clone(&metrics))
                .with_availability(Arc::clone(&self.availability)),
        );
        let agent = Hosted::from(Agent::new(Arc::clone(&self.availability)));
        let serving = |listeners: Vec<Listener>, service: &Hosted, tls: bool| {
            let service = service.clone();
            listeners.into_iter().map(move |listener| Endpoint {
                listener,
                service: service.clone(),
                tls,
            })
        };
        let endpoints: Vec<Endpoint> = serving(listeners, &service, false)
            .chain(serving(tls_listeners, &service, true))
            .chain(serving(metrics_listeners, &endpoint, false))
            .chain(serving(agent_listeners, &agent, false))
            .collect();
        let server = Server::start_endpoints(&self.config, endpoints, metrics)?;
        let restored = self.restore(&server, handed_over);
        let mut shown = server.status();
        self.notifier
            .ready(&format!("{}{restored}", status_line("serving", shown)));
        info!(workers = shown.workers, "ready");

        let mut watchdog = watchdog.map(|period| Watchdog::new(period, &server));
        let tick = watchdog
            .as_ref()
            .map_or(STATUS_INTERVAL, |w| STATUS_INTERVAL.min(w.interval / 4));
        loop {
            signals.wait(tick);
            if let Some(watchdog) = &mut watchdog {
                watchdog.tick(&server, &self.notifier);
            }
            if signals.take_terminate() {
                self.begin_draining(&server, &signals);
                break;
            }
            if signals.take_handover() {
                if self.notifier.has_manager() {
                    return self.hand_over(server);
                }
                warn!("SIGUSR2 without NOTIFY_SOCKET: no service manager to hold the connections; draining instead");
                break;
            }
            if signals.take_hangup() {
                self.reload(&server);
                shown = server.status();
                continue;
            }
            let now = server.status();
            if now != shown {
                self.notifier.status(&status_line("serving", now));
                shown = now;
            }
        }
        self.drain(server);
        info!("stopped");
        Ok(())
    }

    /// Serves on the connections the previous instance handed over, then
    /// has the manager forget its copies; returns what STATUS adds.
    fn restore(&self, server: &Server, (sockets, state): (Vec<OwnedFd>, Vec<OwnedFd>)) -> String {
        if sockets.is_empty() && state.is_empty() {
            return String::new();
        }
        // Forgotten by the manager before any of them is served (a record
        // is used at most once); our descriptors keep them open.
        fault::point("restore-before-removal");
        let forgot = match handover::store::release_from_manager(&self.notifier) {
            Ok(()) => true,
            Err(e) => {
                warn!(error = %e, "the service manager did not confirm it dropped the handed-over connections; serving the plain ones all the same, closing the TLS ones");
                false
            }
        };
        fault::point("restore-after-removal");
        let report = server.restore(sockets, state, forgot);
        info!(
            restored = report.restored,
            closed = report.closed,
            "connections restored from the previous instance"
        );
        format!(" restored={}", report.restored)
    }

    /// Hands every connection to the next instance through the manager's
    /// fd store, and returns once the manager has them.
    fn hand_over(&self, server: Server) -> Result<(), Box<dyn std::error::Error>> {
        self.notifier
            .stopping(&status_line("handing over", server.status()));
        let handed = server.hand_over();
        let count = handover::store::give_to_manager(&self.notifier, handed)?;
        info!(
            connections = count,
            "handed over to the next instance; stopped"
        );
        Ok(())
    }

    /// SIGTERM (or SIGINT): tells balancers to drain (the agent says
    /// `drain`, `/ready` says 503) and systemd that the service stops, then
    /// keeps accepting and serving for `drain_grace_ms`, so that balancers
    /// stop sending new connections before they would be refused. Another
    /// SIGTERM ends the grace at once.
    fn begin_draining(&self, server: &Server, signals: &Signals) {
        self.availability.begin_draining();
        let mut shown = server.status();
        self.notifier.stopping(&status_line("draining", shown));
        let grace = self.config.drain_grace;
        if grace.is_zero() {
            return;
        }
        info!(
            drain_grace_ms = grace.as_millis() as u64,
            "draining: telling load balancers, still serving for the grace"
        );
        let end = Instant::now() + grace;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            signals.wait(left.min(STATUS_INTERVAL));
            if signals.take_terminate() {
                info!("a second SIGTERM: the grace ends now");
                break;
            }
            let now = server.status();
            if now != shown {
                self.notifier.status(&status_line("draining", now));
                shown = now;
            }
        }
    }

    /// Drains within `drain_timeout_ms`, with a STATUS at most every
    /// [`STATUS_INTERVAL`] while connections are left.
    fn drain(&self, server: Server) {
        let deadline = Instant::now() + self.config.drain_timeout;
        let mut shown = server.status();
        // STOPPING=1 went out at the signal (or says why there was none).
        self.notifier.status(&status_line("draining", shown));
        server.begin_drain();
        loop {
            let until = deadline.min(Instant::now() + STATUS_INTERVAL);
            let now = server.wait_until_empty(until);
            if now.connections == 0 || Instant::now() >= deadline {
                if now.connections > 0 && now != shown {
                    self.notifier.status(&status_line("draining", now));
                }
                break;
            }
            if now != shown {
                self.notifier.status(&status_line("draining", now));
                shown = now;
            }
        }
        let report = server.finish_drain();
        if report.abandoned > 0 {
            warn!(
                connections = report.abandoned,
                drain_timeout_ms = self.config.drain_timeout.as_millis() as u64,
                "drain timed out; closed busy connections"
            );
        }
    }
}

/// An operators' endpoint's listeners (the metrics endpoint, the agent):
/// under socket activation the fds of its name (`key` is then ignored, as
/// `listen` is), else the addresses of `key` bound (none if empty).
fn open_endpoint(
    activated: Option<Vec<Listener>>,
    addrs: &[ListenAddr],
    key: &str,
    what: &str,
) -> std::io::Result<Vec<Listener>> {
    let listeners = match activated {
        Some(listeners) => {
            if !addrs.is_empty() {
                info!("socket-activated: `{key}` is ignored");
            }
            listeners
        }
        None => listeners::bind(addrs)?,
    };
    for listener in &listeners {
        // Not "listening": that word marks the line protocol's sockets.
        info!(address = %listener.describe(), "{what}");
    }
    Ok(listeners)
}

/// The STATUS line: a word for the state, then the figures.
fn status_line(state: &str, status: Status) -> String {
    format!(
        "{state}: workers={} connections={}",
        status.workers, status.connections
    )
}
