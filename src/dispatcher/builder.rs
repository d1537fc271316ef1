//! Starting a [`Server`] in a program of one's own, without the daemon's
//! configuration file: the limits a server needs, each starting at
//! oneshotd's default.

use std::io;
use std::time::Duration;

use super::Server;
use crate::config::Config;
use crate::hosted::Hosted;
use crate::listeners::Listener;

/// The shortest timeout (as in the configuration file): deadlines are
/// kept in milliseconds, and looked at a few times per shortest timeout.
const MIN_TIMEOUT: Duration = Duration::from_millis(10);

/// The limits of a [`Server`] to start; see [`Server::builder`]. Each
/// setter's meaning is the configuration key of the same name
/// (`oneshotd.toml(5)`).
#[derive(Debug, Clone)]
pub struct Builder {
    config: Config,
}

impl Server {
    /// A server with oneshotd's default limits, to change before
    /// [`Builder::start`]:
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use oneshotd::{dispatcher::Server, listeners::Listener, upper::Upper};
    ///
    /// let socket = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// socket.set_nonblocking(true)?;
    /// let server = Server::builder()
    ///     .workers(4)
    ///     .max_connections(1_000)
    ///     .idle_timeout(Duration::from_secs(60))
    ///     .start(vec![Listener::Tcp(socket)], Arc::new(Upper))?;
    /// // ... serve until told to stop, then:
    /// server.drain(Duration::from_secs(5));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn builder() -> Builder {
        Builder {
            config: Config::default(),
        }
    }
}

impl Builder {
    /// Worker threads (1 to 1024).
    pub fn workers(mut self, workers: usize) -> Self {
        self.config.workers = workers;
        self
    }

    /// Connections held at once.
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.config.max_connections = connections;
        self
    }

    /// Connections held at once from one client address (0: no limit).
    pub fn max_connections_per_client(mut self, connections: usize) -> Self {
        self.config.max_connections_per_client = connections;
        self
    }

    /// The largest request (`Input::max_request_bytes`).
    pub fn max_request_bytes(mut self, bytes: usize) -> Self {
        self.config.max_line_bytes = bytes;
        self
    }

    /// The memory budget for clients that owe replies.
    pub fn max_buffered_bytes(mut self, bytes: usize) -> Self {
        self.config.max_buffered_bytes = bytes;
        self
    }

    /// How long a connection may make no progress.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.config.idle_timeout = timeout;
        self
    }

    /// How long a request may take to arrive whole.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.config.request_timeout = timeout;
        self
    }

    /// How long a worker that ran out of events polls before it sleeps.
    pub fn spin_before_sleep(mut self, spin: Duration) -> Self {
        self.config.spin_before_sleep = spin;
        self
    }

    /// Starts serving `service` on `listeners` (nonblocking listening
    /// sockets). Refuses limits no server can run with (no worker, no
    /// connection, requests of no byte, timeouts under 10 ms).
    pub fn start(self, listeners: Vec<Listener>, service: impl Into<Hosted>) -> io::Result<Server> {
        let config = &self.config;
        let refused = [
            (
                config.workers == 0 || config.workers > 1024,
                "workers: 1 to 1024",
            ),
            (config.max_connections == 0, "max_connections: at least 1"),
            (config.max_line_bytes == 0, "max_request_bytes: at least 1"),
            (
                config.max_buffered_bytes < 1 << 20,
                "max_buffered_bytes: at least 1 MiB",
            ),
            (
                config.idle_timeout < MIN_TIMEOUT,
                "idle_timeout: at least 10 ms",
            ),
            (
                config.request_timeout < MIN_TIMEOUT,
                "request_timeout: at least 10 ms",
            ),
        ];
        if let Some((_, what)) = refused.iter().find(|(bad, _)| *bad) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, *what));
        }
        Server::start(config, listeners, service)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upper::Upper;
    use std::io::{Read, Write};
    use std::sync::Arc;

    #[test]
    fn a_built_server_serves_with_its_limits() {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        let addr = socket.local_addr().unwrap();
        let server = Server::builder()
            .workers(1)
            .max_request_bytes(4)
            .start(vec![Listener::Tcp(socket)], Arc::new(Upper))
            .unwrap();
        assert_eq!(server.status().workers, 1);
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        client.write_all(b"abcd\nabcde\n").unwrap();
        let mut replies = String::new();
        client.read_to_string(&mut replies).unwrap();
        assert_eq!(replies, "ABCD\nERR line too long\n");
        server.drain(Duration::from_secs(1));
    }

    #[test]
    fn impossible_limits_are_refused() {
        let error = Server::builder()
            .workers(0)
            .start(Vec::new(), Arc::new(Upper))
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        assert!(error.to_string().contains("workers"), "{error}");
    }
}
