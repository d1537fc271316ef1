//! Restart without dropping a connection: established connections go to
//! the next instance through systemd's fd store.
//!
//! On `SIGUSR2` (the unit's `RestartKillSignal=`, sent only for restarts)
//! the daemon stops accepting, lets every worker finish the event it holds,
//! and takes each connection out of the dispatcher whole: its socket,
//! which still holds what the kernel queued in both directions, and a
//! carried state — the incomplete request,
//! the replies not yet sent, the half-close, its id and timers. The sockets
//! go to the manager with `FDSTORE=1 FDNAME=conn`; the states go in one
//! memfd, `FDNAME=state`, as records keyed by each socket's identity
//! (device and inode), because systemd hands stored fds back in no fixed
//! order. A barrier makes sure the manager took them before the process
//! exits. The next instance finds them in `LISTEN_FDS`, matches each socket
//! to its record, serves it on as if nothing had happened, and removes them
//! from the store, so that a connection it closes later really closes.

pub(crate) mod record;

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::stat::fstat;
use nix::time::{clock_gettime, ClockId};

pub use record::FormatError;

/// A socket's identity, the same in every process that holds it: the
/// device and inode of its sockfs file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct SocketKey {
    pub dev: u64,
    pub ino: u64,
}

impl SocketKey {
    pub(crate) fn of(fd: impl AsFd) -> io::Result<SocketKey> {
        let stat = fstat(fd)?;
        Ok(SocketKey {
            dev: stat.st_dev,
            ino: stat.st_ino,
        })
    }
}

/// `CLOCK_MONOTONIC` now: the clock a state file's timers are measured on,
/// shared by every process on the machine (unlike `Instant`, which is
/// opaque).
pub(crate) fn monotonic_now() -> Duration {
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(Duration::from)
        .unwrap_or_default()
}

/// A memfd holding `bytes`, to hand to the manager.
pub(crate) fn state_file(bytes: &[u8]) -> io::Result<OwnedFd> {
    let fd = memfd_create("oneshotd-state", MFdFlags::MFD_CLOEXEC)?;
    let mut file = File::from(fd);
    file.write_all(bytes)?;
    Ok(file.into())
}

/// Everything in a state fd, from its start (its offset is shared with
/// the previous instance, which left it at the end).
pub(crate) fn read_state_file(fd: OwnedFd) -> io::Result<Vec<u8>> {
    let mut file = File::from(fd);
    file.rewind()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}
