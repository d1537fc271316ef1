//! The one module allowed `unsafe`: system calls that neither std nor nix
//! wraps safely.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::libc;

nix::ioctl_read_bad!(outq, libc::TIOCOUTQ, libc::c_int);

/// Bytes in a socket's send queue that the peer has not yet acknowledged
/// (`SIOCOUTQ`, equal to `TIOCOUTQ`; see `tcp(7)`, `unix(7)`).
pub(crate) fn unsent_bytes(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut unsent: libc::c_int = 0;
    // SAFETY: `fd` is borrowed, so it stays open for the call; `SIOCOUTQ`
    // writes exactly one `c_int`, into `unsent`, which lives across it.
    unsafe { outq(fd.as_raw_fd(), &mut unsent) }?;
    Ok(unsent.max(0) as usize)
}

/// Takes ownership of a descriptor the service manager passed in
/// `LISTEN_FDS`, as `listenfd` hands it out (a raw number, once).
pub(crate) fn own_inherited_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: `listenfd` hands out each inherited descriptor at most once
    // and never closes it; the manager opened it for this process, so it
    // is open and nothing else in the process owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Bounds what the kernel queues for `fd` and has not sent to `bytes`
/// (`TCP_NOTSENT_LOWAT`, `tcp(7)`; a write may pass it by one segment):
/// past it `send` says `EAGAIN` and the socket is not writable, so replies
/// beyond it stay in our own buffers, where the memory budget sees them.
/// Bytes in flight are not bounded by it, so a fast reader on a long path
/// is not slowed down. (nix wraps no such option.)
pub(crate) fn bound_unsent_bytes(fd: BorrowedFd<'_>, bytes: u32) -> io::Result<()> {
    let value: libc::c_int = bytes.min(libc::c_int::MAX as u32) as libc::c_int;
    // SAFETY: `fd` is borrowed, so it stays open for the call; the kernel
    // reads exactly `size_of::<c_int>()` bytes from `value`, which lives
    // across it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
