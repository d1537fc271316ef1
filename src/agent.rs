//! The load-balancer agent: HAProxy's `agent-check` text protocol. Each
//! connection gets one line and is closed: `up ready maxconn:N` while the
//! daemon serves (N is `max_connections`), `drain` from SIGTERM on, so that
//! balancers stop sending new connections before the daemon stops
//! accepting them (`drain_grace_ms`).
//!
//! It is a [`Service`] of the same dispatcher as the line protocol, with a
//! small connection budget of its own; the line is its greeting, written
//! as the connection opens, and anything the balancer sends (HAProxy's
//! `agent-send`) is read and ignored. It never waits on a client.

use std::sync::Arc;

use crate::availability::Availability;
use crate::service::{Input, Served, Service};

/// Agent connections held at once: a balancer holds one per check, and
/// checks last a moment.
pub const MAX_AGENT_CONNECTIONS: usize = 16;

/// The agent's service.
#[derive(Debug, Clone)]
pub struct Agent {
    availability: Arc<Availability>,
}

impl Agent {
    /// An agent telling balancers what `availability` says.
    pub fn new(availability: Arc<Availability>) -> Self {
        Agent { availability }
    }

    /// The line a balancer gets now.
    pub fn line(&self) -> String {
        if self.availability.draining() {
            "drain\n".to_owned()
        } else {
            format!("up ready maxconn:{}\n", self.availability.max_connections())
        }
    }
}

impl Service for Agent {
    fn serve(&self, input: Input<'_>, _output: &mut Vec<u8>) -> Served {
        // The answer went out as the connection opened; whatever the
        // balancer sends is read and dropped, and the connection closes.
        Served {
            consumed: input.bytes.len(),
            close: true,
            requests: 0,
        }
    }

    fn greeting(&self, output: &mut Vec<u8>) -> bool {
        output.extend_from_slice(self.line().as_bytes());
        true
    }

    fn request_timeout(&self, _output: &mut Vec<u8>) {}

    fn name(&self) -> &'static str {
        "agent"
    }

    fn closed_by_service(&self) -> &'static str {
        "replied"
    }

    fn connection_limit(&self) -> Option<usize> {
        Some(MAX_AGENT_CONNECTIONS)
    }

    /// A balancer's agent check carries no PROXY header, even from a
    /// balancer listed in `proxy_protocol_from`.
    fn proxy_protocol(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_says_ready_with_max_connections_then_drain() {
        let availability = Availability::new(10_000);
        let agent = Agent::new(Arc::clone(&availability));
        assert_eq!(agent.line(), "up ready maxconn:10000\n");
        availability.set_max_connections(42);
        let mut greeting = Vec::new();
        assert!(agent.greeting(&mut greeting));
        assert_eq!(greeting, b"up ready maxconn:42\n");
        availability.begin_draining();
        assert_eq!(agent.line(), "drain\n");
    }
}
