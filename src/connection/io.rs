//! The system calls a connection makes on its socket, with the error
//! handling every caller wants: `EINTR` retried, `EAGAIN` as "no more now".

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{self, MsgFlags, Shutdown};

use crate::sys;

/// Reads what the socket holds, up to `buffer`'s length. `recv(2)` rather
/// than `read(2)`: the same bytes, without the VFS layer `read` goes
/// through first (its measured cost is in `docs/performance.md`).
pub(super) fn receive(fd: BorrowedFd<'_>, buffer: &mut [u8]) -> nix::Result<usize> {
    socket::recv(fd.as_raw_fd(), buffer, MsgFlags::empty())
}

/// Writes as much of `bytes` as the socket takes without blocking. Uses
/// `MSG_NOSIGNAL`: a peer that has gone away is an `EPIPE` for this
/// connection, never a `SIGPIPE` for the process.
pub(super) fn write_some(fd: BorrowedFd<'_>, bytes: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while written < bytes.len() {
        match socket::send(fd.as_raw_fd(), &bytes[written..], MsgFlags::MSG_NOSIGNAL) {
            Ok(n) => written += n,
            Err(Errno::EAGAIN) => break,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(written)
}

/// Whether the kernel has room for more of our bytes now (`POLLOUT`), so
/// that replies written now would not stay in our memory.
pub(super) fn writable(fd: BorrowedFd<'_>) -> bool {
    let mut polled = [PollFd::new(fd, PollFlags::POLLOUT)];
    matches!(poll(&mut polled, PollTimeout::ZERO), Ok(1))
        && polled[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLOUT))
}

/// What one step of a closing connection reads and drops at most: a
/// client that sends faster than we discard must not hold the worker (the
/// connection is re-armed, and readable again at once, so nothing is left
/// behind for long).
pub(super) const DISCARD_PER_STEP: usize = 64 * 1024;

/// What [`discard_input`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Discarded {
    /// The client's EOF.
    Eof,
    /// Nothing left to read now.
    Empty,
    /// [`DISCARD_PER_STEP`] dropped, and there may be more.
    More,
}

/// Reads and drops what the socket holds now, up to [`DISCARD_PER_STEP`].
pub(super) fn discard_input(fd: BorrowedFd<'_>) -> io::Result<Discarded> {
    let mut sink = [0u8; 4096];
    let mut discarded = 0;
    while discarded < DISCARD_PER_STEP {
        match receive(fd, &mut sink) {
            Ok(0) => return Ok(Discarded::Eof),
            Ok(n) => discarded += n,
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return Ok(Discarded::Empty),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Discarded::More)
}

/// The error pending on the socket (`SO_ERROR`), as reported after
/// `EPOLLERR`.
pub(super) fn pending_error(fd: BorrowedFd<'_>) -> io::Error {
    socket::getsockopt(&fd, socket::sockopt::SocketError)
        .map(io::Error::from_raw_os_error)
        .unwrap_or_else(io::Error::from)
}

/// Shuts down our sending side: the client reads our last bytes, then EOF.
pub(super) fn shut_write(fd: BorrowedFd<'_>) -> io::Result<()> {
    Ok(socket::shutdown(fd.as_raw_fd(), Shutdown::Write)?)
}

/// The receive buffer's size: how much a drain reads at most, so that a
/// client still sending cannot keep the drain reading forever.
pub(super) fn receive_buffer_size(fd: BorrowedFd<'_>) -> usize {
    socket::getsockopt(&fd, socket::sockopt::RcvBuf).unwrap_or(1 << 20)
}

/// Reply bytes the kernel holds that the client has not taken yet.
pub(super) fn unsent_bytes(fd: BorrowedFd<'_>) -> io::Result<usize> {
    sys::unsent_bytes(fd)
}
