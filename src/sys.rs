//! The one module allowed `unsafe`: system calls that neither std nor nix
//! wraps safely.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

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
