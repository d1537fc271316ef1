//! Listening sockets: inherited from systemd (`LISTEN_FDS`) or bound from
//! the `listen` configuration.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use tracing::{info, warn};

use crate::budget::KERNEL_UNSENT_ALLOWANCE;
use crate::config::ListenAddr;
use crate::handover::store::{CONNECTION_NAME, STATE_NAME};
pub use crate::service::Peer;

/// A listening stream socket, nonblocking.
#[derive(Debug)]
pub enum Listener {
    /// TCP over IPv4 or IPv6.
    Tcp(TcpListener),
    /// A Unix stream socket.
    Unix {
        /// The socket.
        listener: UnixListener,
        /// The socket file, if we bound it: removed when the listener is
        /// dropped. Sockets from systemd have none (their files are
        /// systemd's).
        file: Option<SocketFile>,
    },
}

/// The file of a Unix socket we bound; removing it is part of closing the
/// socket, so a later start does not find a stale file.
#[derive(Debug)]
pub struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The transport's peer of a connected socket (`getpeername`): what a
/// connection carried over a restart without its client's address is
/// known by.
pub(crate) fn peer_of(fd: BorrowedFd<'_>) -> Peer {
    use nix::sys::socket::{getpeername, SockaddrStorage};
    let Ok(address) = getpeername::<SockaddrStorage>(std::os::fd::AsRawFd::as_raw_fd(&fd)) else {
        return Peer::Unix;
    };
    if let Some(v4) = address.as_sockaddr_in() {
        Peer::Ip(SocketAddr::from((v4.ip(), v4.port())))
    } else if let Some(v6) = address.as_sockaddr_in6() {
        Peer::Ip(SocketAddr::from((v6.ip(), v6.port())))
    } else {
        Peer::Unix
    }
}

/// Bounds what the kernel queues unsent for a TCP connection to
/// [`KERNEL_UNSENT_ALLOWANCE`], so that what a client does not read stays
/// where the memory budget counts it. A no-op for a Unix socket, whose send
/// buffer does not grow by itself.
pub(crate) fn bound_kernel_queue(fd: BorrowedFd<'_>) -> io::Result<()> {
    match crate::sys::bound_unsent_bytes(fd, KERNEL_UNSENT_ALLOWANCE) {
        Err(e) if e.raw_os_error() == Some(nix::libc::EOPNOTSUPP) => Ok(()),
        done => done,
    }
}

impl Listener {
    /// Accepts one connection and makes it nonblocking (and `TCP_NODELAY`:
    /// replies are written whole, so Nagle would only delay them), with
    /// what the kernel queues for it unsent bounded (see
    /// `bound_kernel_queue`).
    pub fn accept(&self) -> io::Result<(OwnedFd, Peer)> {
        match self {
            Listener::Tcp(l) => {
                let (stream, peer) = l.accept()?;
                stream.set_nonblocking(true)?;
                stream.set_nodelay(true)?;
                bound_kernel_queue(stream.as_fd())?;
                Ok((stream.into(), Peer::Ip(peer)))
            }
            Listener::Unix { listener, .. } => {
                let (stream, _) = listener.accept()?;
                stream.set_nonblocking(true)?;
                Ok((stream.into(), Peer::Unix))
            }
        }
    }

    fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.set_nonblocking(true),
            Listener::Unix { listener, .. } => listener.set_nonblocking(true),
        }
    }

    /// The address it listens on, as a human reads it.
    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map_or_else(|e| format!("tcp (unknown address: {e})"), |a| a.to_string()),
            Listener::Unix { listener, .. } => listener
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
                .unwrap_or_else(|| "unix (unnamed)".to_owned()),
        }
    }

    /// The TCP address, if this is a TCP listener.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr().ok(),
            Listener::Unix { .. } => None,
        }
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Tcp(l) => l.as_fd(),
            Listener::Unix { listener, .. } => listener.as_fd(),
        }
    }
}

/// What systemd handed the daemon in `LISTEN_FDS`, told apart by the names
/// in `LISTEN_FDNAMES` (`FileDescriptorName=`), never by their order.
#[derive(Debug, Default)]
pub struct Inherited {
    /// Listeners of the line protocol: any name but the ones below (the
    /// default name is the socket unit's).
    pub listeners: Vec<Listener>,
    /// Listeners named `metrics`.
    pub metrics: Vec<Listener>,
    /// Listeners named `agent`.
    pub agent: Vec<Listener>,
    /// Listeners named `tls`: the line protocol over TLS.
    pub tls: Vec<Listener>,
    /// Established connections handed over by the previous instance
    /// through the fd store, named `conn`.
    pub connections: Vec<OwnedFd>,
    /// The previous instance's state records, named `state` (memfds).
    pub state: Vec<OwnedFd>,
}

/// The `FileDescriptorName=` of a metrics listener.
pub const METRICS_NAME: &str = "metrics";
/// The `FileDescriptorName=` of a load-balancer agent listener.
pub const AGENT_NAME: &str = "agent";
/// The `FileDescriptorName=` of a listener of the line protocol over TLS.
pub const TLS_NAME: &str = "tls";

/// Takes the descriptors passed by socket activation (and the fd store),
/// if `LISTEN_FDS` is set.
///
/// Must run first thing in `main`, before any thread exists: it removes
/// `LISTEN_PID`/`LISTEN_FDS`/`LISTEN_FDNAMES` from the environment (so
/// that no child inherits them), which is only sound while the process is
/// single-threaded.
pub fn from_systemd() -> io::Result<Option<Inherited>> {
    let names = std::env::var("LISTEN_FDNAMES").ok();
    std::env::remove_var("LISTEN_FDNAMES");
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() == 0 {
        return Ok(None);
    }
    // Without names (or with a count that does not match), every fd is a
    // listener of the line protocol, as with `systemd-socket-activate`.
    let names: Vec<&str> = match names.as_deref().map(|n| n.split(':').collect::<Vec<_>>()) {
        Some(names) if names.len() == fds.len() => names,
        _ => vec![""; fds.len()],
    };
    let mut inherited = Inherited::default();
    for (index, name) in names.into_iter().enumerate() {
        match name {
            CONNECTION_NAME | STATE_NAME => {
                let Some(raw) = fds.take_raw_fd(index)? else {
                    continue;
                };
                let fd = crate::sys::own_inherited_fd(raw);
                // listenfd marks the listeners it makes close-on-exec, but
                // not raw fds; no child should inherit a client's socket.
                nix::fcntl::fcntl(
                    &fd,
                    nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
                )?;
                if name == CONNECTION_NAME {
                    inherited.connections.push(fd);
                } else {
                    inherited.state.push(fd);
                }
            }
            _ => {
                let listener = take_listener(&mut fds, index).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("LISTEN_FDS fd #{index} (name {name:?}): {e}"),
                    )
                })?;
                match name {
                    METRICS_NAME => inherited.metrics.push(listener),
                    AGENT_NAME => inherited.agent.push(listener),
                    TLS_NAME => inherited.tls.push(listener),
                    _ => inherited.listeners.push(listener),
                }
            }
        }
    }
    Ok(Some(inherited))
}

/// The inherited fd at `index` as a listener: a TCP or Unix stream socket
/// that listens. A connected socket (e.g. a stored connection under the
/// wrong name) is refused: accepting on it would fail forever.
fn take_listener(fds: &mut listenfd::ListenFd, index: usize) -> io::Result<Listener> {
    let listener = match fds.take_tcp_listener(index) {
        Ok(Some(tcp)) => Listener::Tcp(tcp),
        _ => match fds.take_unix_listener(index) {
            Ok(Some(listener)) => Listener::Unix {
                listener,
                file: None,
            },
            Ok(None) => return Err(io::Error::other("already taken")),
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not a TCP or Unix stream socket",
                ))
            }
        },
    };
    let listening = nix::sys::socket::getsockopt(&listener, nix::sys::socket::sockopt::AcceptConn)
        .map_err(io::Error::from)?;
    if !listening {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a connected socket, not a listening one",
        ));
    }
    // listenfd leaves the inherited sockets blocking.
    listener.set_nonblocking()?;
    Ok(listener)
}

/// Binds every `listen` entry.
pub fn bind(addrs: &[ListenAddr]) -> io::Result<Vec<Listener>> {
    addrs
        .iter()
        .map(|addr| {
            let listener = match addr {
                ListenAddr::Tcp(sa) => TcpListener::bind(sa).map(Listener::Tcp),
                ListenAddr::Unix(path) => bind_unix(path).map(|listener| Listener::Unix {
                    listener,
                    file: Some(SocketFile(path.clone())),
                }),
            }
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
            listener.set_nonblocking()?;
            Ok(listener)
        })
        .collect()
}

/// Binds a Unix socket, first removing a stale socket file left by a
/// previous run. A socket someone still answers on is not removed.
fn bind_unix(path: &Path) -> io::Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another process is listening there",
                ));
            }
            warn!(path = %path.display(), "removing stale socket file");
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the path exists and is not a socket",
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    UnixListener::bind(path)
}

/// The activated listeners if there are any, else the configured addresses.
pub fn open(activated: Option<Vec<Listener>>, addrs: &[ListenAddr]) -> io::Result<Vec<Listener>> {
    match activated {
        Some(listeners) => {
            info!(
                count = listeners.len(),
                "using sockets from socket activation; `listen` is ignored"
            );
            Ok(listeners)
        }
        None => bind(addrs),
    }
}
