//! The dispatcher's side of a handover (see `handover/mod.rs`): taking
//! every connection out of the table whole, and taking handed-over
//! connections back in.

use std::os::fd::{AsFd, OwnedFd};
use std::panic::{self, AssertUnwindSafe};
use std::time::Instant;

use tracing::{debug, error, info, warn};

use super::{Dispatcher, Server};
use crate::close::Closed;
use crate::connection::Connection;
use crate::handover::{self, Carried, HandedOver, RestoreReport};
use crate::step::CloseReason;

impl Server {
    /// Stops accepting, retires the housekeeper and the workers (each
    /// finishes the event it holds: a worker owns a connection only
    /// between an event and its re-arm), then takes every connection out
    /// of the table and the epoll set, whole. Nothing waits on a client.
    pub fn hand_over(mut self) -> HandedOver {
        self.dispatcher.stop_accepting();
        if let Some(housekeeper) = self.housekeeper.take() {
            housekeeper.stop();
        }
        self.pool.stop(&self.dispatcher);
        let now = Instant::now();
        let mut taken_out = Vec::new();
        let mut tls_closed = 0;
        self.dispatcher.table.for_each(true, |mut held| {
            // Only the line protocol's connections (the first service)
            // are carried: another service's (a metrics scrape) is short,
            // and its client simply asks again.
            if held.connection().service() != 0 {
                self.dispatcher.close(held, CloseReason::Handover);
                return;
            }
            // A TLS connection still in its handshake has no session to
            // carry on: it is closed, and its client connects again.
            if held.connection().in_handshake() {
                tls_closed += 1;
                self.dispatcher.close(held, CloseReason::Handover);
                return;
            }
            let service = self.dispatcher.services[0].get();
            let connection = self.dispatcher.take_out_whole(held, &CloseReason::Handover);
            let id = connection.id();
            // The service writes its session down: its code, which may
            // panic; that costs this connection only.
            let handed = panic::catch_unwind(AssertUnwindSafe(|| connection.hand_over(now, service)));
            let handed = match handed {
                Ok(Ok(handed)) => handed,
                Ok(Err(mut connection)) => {
                    warn!(conn = %id, peer = %connection.peer(), service = service.name(),
                        "its service cannot carry its session to the next instance; closing it");
                    if let Some(session) = connection.take_session() {
                        self.dispatcher.tell_closed(&connection, session, Closed::Handover);
                    }
                    return;
                }
                Err(_) => {
                    error!(conn = %id, "panic while the service wrote its session down; closing the connection");
                    return;
                }
            };
            taken_out.push(handed);
        });
        if tls_closed > 0 {
            info!(
                connections = tls_closed,
                "TLS connections still in their handshake closed; their clients connect again"
            );
        }
        let handed = HandedOver::new(taken_out);
        self.dispatcher
            .metrics
            .handed_over(handed.sockets.len() as u64);
        handed
    }

    /// Takes back the connections a previous instance handed over: each
    /// socket in `sockets` is matched to its record in the `state` files
    /// by its identity and served on from where it stopped. A socket
    /// without a readable record is closed with a warning, never served
    /// with part of its state missing.
    ///
    /// `manager_forgot`: the service manager confirmed it dropped its
    /// copies of these connections and their records before any of them is
    /// served. A TLS connection is carried on only then (and only from a
    /// sealed state file): otherwise its keys could be used twice, by this
    /// instance and by a next one started from the same record, and it is
    /// closed instead.
    pub fn restore(
        &self,
        sockets: Vec<OwnedFd>,
        state: Vec<OwnedFd>,
        manager_forgot: bool,
    ) -> RestoreReport {
        let (matched, unmatched) = handover::match_records(sockets, state, manager_forgot);
        let mut report = RestoreReport {
            restored: 0,
            closed: unmatched,
        };
        for (fd, carried) in matched {
            if self.dispatcher.adopt(fd, carried) {
                report.restored += 1;
            } else {
                report.closed += 1;
            }
        }
        self.dispatcher.metrics.restored(report.restored as u64);
        report
    }
}

impl Dispatcher {
    /// Takes one restored connection into the table and the epoll set.
    fn adopt(&self, fd: OwnedFd, mut carried: Carried) -> bool {
        let id = carried.id;
        // The previous instance made it nonblocking, and the flag lives with
        // the socket, not the descriptor; but whatever held it meanwhile
        // could have changed it, and one blocking socket would stall a
        // worker on its first read.
        if let Err(e) = set_nonblocking(&fd) {
            warn!(conn = %id, error = %e, "cannot make a restored connection nonblocking; closing it");
            return false;
        }
        // Its session, read back by the service that wrote it, or it is not
        // served at all: never on with part of its state missing.
        let service = self.services[0].get();
        let session = match carried.session.take() {
            None => None,
            Some(saved) if saved.service != service.name() => {
                warn!(conn = %id, written_by = %saved.service, service = service.name(),
                    "a restored connection's session belongs to another service; closing it");
                return false;
            }
            Some(saved) => match panic::catch_unwind(AssertUnwindSafe(|| {
                service.restore(&saved.bytes, saved.format)
            }))
            .ok()
            .flatten()
            {
                Some(session) => Some(session),
                None => {
                    warn!(conn = %id, format = saved.format, service = service.name(),
                        "a restored connection's session cannot be read back; closing it");
                    return false;
                }
            },
        };
        // Before it takes a place in the table: one it will not serve must
        // leave nothing behind.
        let tls = match carried.tls.take() {
            None => None,
            Some(tls) if !tls.usable => {
                warn!(conn = %id, "a restored TLS connection's keys cannot be proven unused; closing it");
                return false;
            }
            Some(tls) => match crate::tls::Session::read_state(&tls.state) {
                Some(session) => Some(session),
                None => {
                    warn!(conn = %id, "a restored TLS connection's session cannot be read back; closing it");
                    return false;
                }
            },
        };
        self.accept.continue_ids_after(id);
        // Admitted whatever `max_connections` says: these clients were
        // already held, and refusing them now would drop them. (A full
        // table still refuses, below.) Restored connections serve the
        // first service.
        let reserved = self.table.reserve(0, usize::MAX);
        debug_assert!(reserved, "an unlimited budget");
        // A version 1 record carries no client: its socket's peer is.
        let peer = carried
            .peer
            .unwrap_or_else(|| crate::listeners::peer_of(fd.as_fd()));
        let now = Instant::now();
        let mut connection = Connection::restore(fd, carried, peer, session, now);
        if let Some(session) = tls {
            connection.resume_tls(session, now);
            self.metrics.tls_connection(true);
        }
        // Counted under its client, whatever the limit says: it was held
        // already (one still awaiting its header is counted once it is read).
        let client = super::clients::counted_address(connection.peer())
            .filter(|_| !connection.awaits_proxy_header());
        if let Some(address) = client {
            self.clients.admit(address, 0);
            connection.count_client();
        }
        let interest = connection.restored_interest();
        let registered = self.table.insert(connection, |connection, token| {
            self.events.add(connection.fd(), token, interest)
        });
        match registered {
            Ok(_) => {
                debug!(conn = %id, "connection restored");
                true
            }
            Err(e) => {
                warn!(conn = %id, error = %e, "cannot register a restored connection");
                if let Some(address) = client {
                    self.clients.leave(address);
                }
                false
            }
        }
    }
}

fn set_nonblocking(fd: &OwnedFd) -> nix::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::handover::{record, store, CarriedPhase, SocketKey};
    use crate::service::ConnectionId;
    use crate::upper::Upper;
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::sync::Arc;
    use std::time::Duration;

    /// A handed-over socket that comes back blocking is made nonblocking
    /// before it is served: a blocking read would hold a worker for as
    /// long as the client stays silent.
    #[test]
    fn a_restored_socket_is_made_nonblocking() {
        let config = Config {
            workers: 1,
            ..Config::default()
        };
        let server = Server::start(&config, Vec::new(), Arc::new(Upper)).unwrap();
        let (ours, mut client) = UnixStream::pair().unwrap();
        ours.set_nonblocking(false).unwrap();
        // The same socket, as the test keeps seeing it.
        let watched = ours.try_clone().unwrap();
        let fd = OwnedFd::from(ours);
        let carried = Carried {
            id: ConnectionId(41),
            input: b"half a li".to_vec(),
            output: Vec::new(),
            peer_closed: false,
            spoke: true,
            phase: CarriedPhase::Open,
            idle_for: Duration::ZERO,
            request_for: Some(Duration::ZERO),
            peer: None,
            header: None,
            session: None,
            tls: None,
        };
        let key = SocketKey::of(&fd).unwrap();
        let state = record::encode(handover::monotonic_now(), &[(key, &carried)]);
        let state = store::state_file(&state).unwrap();
        let report = server.restore(vec![fd], vec![state], true);
        assert_eq!(report.restored, 1);
        let flags = OFlag::from_bits_retain(fcntl(&watched, FcntlArg::F_GETFL).unwrap());
        assert!(flags.contains(OFlag::O_NONBLOCK), "{flags:?}");
        client.write_all(b"ne\n").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut reply = [0u8; 12];
        client.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"HALF A LINE\n");
        server.drain(Duration::from_millis(100));
    }
}
