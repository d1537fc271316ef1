//! SIGHUP: the configuration read again and applied while every
//! connection carries on, or refused whole with the old one in force.

use tracing::{error, info, warn};

use super::{status_line, Daemon};
use crate::dispatcher::{Server, Status};

impl Daemon {
    /// Re-reads the configuration and applies it, or keeps the old one.
    pub(super) fn reload(&mut self, server: &Server) {
        self.notifier.reloading();
        let before = server.status();
        let new = match self.source.load() {
            Ok(new) => new,
            Err(e) => {
                server.metrics().reloaded(false);
                error!(error = %e, "reload failed; keeping the running configuration");
                self.notifier.status(&format!(
                    "reload failed: {e}; {}",
                    status_line("serving", before)
                ));
                self.notifier.ready(&status_line("serving", before));
                return;
            }
        };
        let old = &self.config;
        if new.listen != old.listen {
            warn!("`listen` changed; a restart is needed to apply it");
        }
        if new.metrics_listen != old.metrics_listen {
            warn!("`metrics_listen` changed; a restart is needed to apply it");
        }
        if new.agent_listen != old.agent_listen {
            warn!("`agent_listen` changed; a restart is needed to apply it");
        }
        self.availability.set_max_connections(new.max_connections);
        self.log.set_level(new.log_level);
        if let Err(e) = server.reconfigure(&new) {
            error!(error = %e, "cannot resize the worker pool");
        }
        info!(
            workers = %format!("{} -> {}", old.workers, new.workers),
            max_connections = %format!("{} -> {}", old.max_connections, new.max_connections),
            max_connections_per_client = %format!("{} -> {}", old.max_connections_per_client, new.max_connections_per_client),
            max_line_bytes = %format!("{} -> {}", old.max_line_bytes, new.max_line_bytes),
            max_buffered_bytes = %format!("{} -> {}", old.max_buffered_bytes, new.max_buffered_bytes),
            proxy_protocol_from = %format!("{} -> {}", old.proxy_protocol_from, new.proxy_protocol_from),
            proxy_header_timeout_ms = %format!("{} -> {}", old.proxy_header_timeout.as_millis(), new.proxy_header_timeout.as_millis()),
            log_level = %format!("{} -> {}", old.log_level.as_str(), new.log_level.as_str()),
            "reload applied"
        );
        self.config = new;
        server.metrics().reloaded(true);
        let status = Status {
            workers: self.config.workers,
            connections: server.status().connections,
        };
        self.notifier.ready(&status_line("serving", status));
    }
}
