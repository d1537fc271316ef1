//! # oneshotd
//!
//! A line server built the way an `EPOLLONESHOT` worker pool should be: one
//! epoll set, a pool of worker threads serving it, and every client socket
//! registered `EPOLLIN | EPOLLRDHUP | EPOLLONESHOT`, so that at any moment
//! at most one worker touches a given connection, whichever workers are
//! waiting. After each event the worker re-arms the socket
//! (`EPOLL_CTL_MOD`) if the connection is still open, or deletes and closes
//! it if not. The workers take turns waiting (leader/followers), so that an
//! event arriving while one worker is busy does not wake another for
//! nothing.
//!
//! ## The path of a byte
//!
//! listener → dispatcher → worker → connection → service, and back:
//!
//! 1. A [`listeners::Listener`] (from systemd socket activation or bound
//!    from the configuration) is in the epoll set; a worker woken for it
//!    accepts a batch of connections into the connection table.
//! 2. The [`dispatcher`] hands each readiness event to one worker, which
//!    owns the connection until it re-arms it.
//! 3. The connection reads into the worker's scratch buffer and calls the
//!    [`service::Service`] with the bytes it has not consumed yet.
//! 4. The service (the default is [`upper::Upper`]) frames requests and
//!    appends replies; the connection writes them, keeping only what the
//!    kernel did not take, and says what to wait for next.
//!
//! Nothing points backwards: the service never sees a socket, the
//! connection never sees epoll, the dispatcher never sees a line.
//!
//! ## Layout
//!
//! `docs/architecture.md` follows a connection through these modules, says
//! where TLS will sit, and lists the layers they are stacked in (a test
//! holds the imports to it).
//!
//! - [`config`]: TOML → validated [`config::Config`], errors with file,
//!   line, column and key.
//! - [`listeners`]: `LISTEN_FDS` (told apart by `LISTEN_FDNAMES`) or bind;
//!   TCP and Unix stream.
//! - `step`: the contract between the dispatcher and a connection: what a
//!   step is given and what it decides.
//! - [`dispatcher`]: the epoll set, tokens, the connection table,
//!   accepting, the worker loop and pool, the one panic-guarded step
//!   function, the housekeeper (deadlines), the drain, and its side of the
//!   handover (emptying the table, taking connections back in);
//!   [`dispatcher::Server`] is the entry point for running it in-process,
//!   one service on every listener or each listener with its own
//!   (`Server::start_endpoints`).
//! - `connection`: one connection's phase machine, its buffers (the call
//!   into the service, throttling), its system calls, and taking itself
//!   apart for the next instance.
//! - [`handover`]: restarts without dropping a connection, in one place:
//!   what crosses, the state record's format, the trip through systemd's
//!   fd store, matching sockets to records.
//! - [`service`]: the protocol seam (stateless [`service::Service`], or
//!   [`service::Stateful`] with a session per connection); [`hosted`]: a
//!   service as the dispatcher holds it, sessions boxed; [`framing`]:
//!   finding lines in what arrived, in time linear in the bytes;
//!   [`upper`]: the default protocol;
//!   `examples/reverse.rs`: a service of one's own, complete.
//! - [`metrics`]: per-worker counters, summed when scraped, and
//!   [`metrics::MetricsEndpoint`], the HTTP service that shows them;
//!   `close`: why a connection closed ([`metrics::Closed`]), below both
//!   the service seam and the metrics; `ratelimit`: a warning logged at
//!   most once per period, for the dispatcher and the memory budget.
//! - [`lifecycle`]: signals, reload, the drain's deadline, the handover,
//!   the watchdog; [`notify`]: sd_notify (with descriptors);
//!   [`logging`]: journal or stderr; [`cli`]: the command line and
//!   [`cli::main`], the whole `main` of a daemon for a given service,
//!   named by its [`cli::Program`] (`program`, which the daemon's life
//!   reads too); [`agent`] and [`availability`]: what
//!   load balancers are told; [`proxy`]: the PROXY protocol.
//!
//! ## Using it as a library
//!
//! ```no_run
//! use std::sync::Arc;
//! use oneshotd::{config::Config, dispatcher::Server, listeners, upper::Upper};
//!
//! let config = Config::default();
//! let sockets = listeners::bind(&config.listen)?;
//! let server = Server::start(&config, sockets, Arc::new(Upper))?;
//! // ... serve until told to stop, then:
//! server.drain(config.drain_timeout);
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! Without a configuration file, [`dispatcher::Server::builder`] sets the
//! limits one by one.
//!
//! A protocol of one's own implements [`service::Service`] (stateless) or
//! [`service::Stateful`] (a session per connection, carried across
//! restarts); [`framing::serve_lines`] frames a line protocol; and
//! [`cli::main`] with a [`cli::Program`] of its own is a whole daemon
//! (`examples/reverse.rs`, `examples/resp.rs`).
//!
//! ## A stateful service, end to end
//!
//! A line protocol that numbers each connection's lines: the count is the
//! connection's session, opened with the connection, handed mutably to
//! every call (one worker owns a connection at a time, so no lock), and
//! written down so that a restart with the fd store carries it on.
//!
//! ```
//! use std::io::{BufRead, BufReader, Write};
//! use std::net::{TcpListener, TcpStream};
//! use std::time::Duration;
//! use oneshotd::dispatcher::Server;
//! use oneshotd::framing::serve_lines;
//! use oneshotd::listeners::Listener;
//! use oneshotd::service::{ConnectionId, Input, Peer, Served, Stateful};
//!
//! struct Numbered;
//!
//! impl Stateful for Numbered {
//!     /// Lines this connection has sent so far.
//!     type Session = u64;
//!
//!     fn open(&self, _connection: ConnectionId, _peer: &Peer) -> u64 {
//!         0
//!     }
//!
//!     fn serve(&self, lines: &mut u64, input: Input<'_>, output: &mut Vec<u8>) -> Served {
//!         serve_lines(&input, output, b"ERR line too long\n", |line, output| {
//!             *lines += 1;
//!             output.extend_from_slice(format!("{lines} ").as_bytes());
//!             output.extend_from_slice(line);
//!             output.push(b'\n');
//!         })
//!     }
//!
//!     fn request_timeout(&self, _lines: &mut u64, output: &mut Vec<u8>) {
//!         output.extend_from_slice(b"ERR timeout\n");
//!     }
//!
//!     // Carried across a restart: eight bytes, format 1 (the default).
//!     fn save(&self, lines: &u64, out: &mut Vec<u8>) -> bool {
//!         out.extend_from_slice(&lines.to_le_bytes());
//!         true
//!     }
//!
//!     fn restore(&self, saved: &[u8], format: u32) -> Option<u64> {
//!         match format {
//!             1 => Some(u64::from_le_bytes(saved.try_into().ok()?)),
//!             _ => None,
//!         }
//!     }
//!
//!     fn name(&self) -> &'static str {
//!         "numbered"
//!     }
//! }
//!
//! let socket = TcpListener::bind("127.0.0.1:0")?;
//! socket.set_nonblocking(true)?;
//! let address = socket.local_addr()?;
//! let server = Server::builder()
//!     .workers(2)
//!     .start(vec![Listener::Tcp(socket)], Numbered)?;
//!
//! let ask = |client: &mut BufReader<TcpStream>, line: &str| -> std::io::Result<String> {
//!     client.get_mut().write_all(format!("{line}\n").as_bytes())?;
//!     let mut reply = String::new();
//!     client.read_line(&mut reply)?;
//!     Ok(reply)
//! };
//! let mut first = BufReader::new(TcpStream::connect(address)?);
//! let mut second = BufReader::new(TcpStream::connect(address)?);
//! first.get_ref().set_read_timeout(Some(Duration::from_secs(10)))?;
//! second.get_ref().set_read_timeout(Some(Duration::from_secs(10)))?;
//! assert_eq!(ask(&mut first, "hello")?, "1 hello\n");
//! assert_eq!(ask(&mut first, "again")?, "2 again\n");
//! // Each connection has its own session.
//! assert_eq!(ask(&mut second, "hi")?, "1 hi\n");
//! assert_eq!(ask(&mut first, "third")?, "3 third\n");
//! server.drain(Duration::from_secs(1));
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! Run by the daemon (`cli::main`), `systemctl restart` hands each
//! connection to the next instance with its count: the next line a client
//! sends is numbered on from where it stopped.

#![deny(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations)]

pub mod agent;
pub mod availability;
mod budget;
pub mod cli;
mod close;
pub mod config;
mod connection;
pub mod dispatcher;
mod fault;
pub mod framing;
pub mod handover;
pub mod hosted;
pub mod lifecycle;
pub mod listeners;
pub mod logging;
pub mod metrics;
pub mod notify;
mod program;
pub mod proxy;
mod ratelimit;
pub mod service;
mod step;
#[allow(unsafe_code)]
mod sys;
pub mod tls;
pub mod upper;

/// The README's Rust blocks, compiled and run as doctests so that the
/// README's example cannot drift from the library.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExamples;
