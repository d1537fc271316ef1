//! The handover's trip through the service manager: the connections'
//! sockets and their state file go into systemd's fd store under two
//! names, and come back to the next instance in `LISTEN_FDS` under the
//! same names (told apart from listeners by `listeners::from_systemd`).

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::OwnedFd;
use std::time::Duration;

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};

use super::HandedOver;
use crate::fault;
use crate::notify::{Notifier, MAX_FDS_PER_MESSAGE};

/// The fd store name of a handed-over connection.
pub const CONNECTION_NAME: &str = "conn";
/// The fd store name of a handover's state file.
pub const STATE_NAME: &str = "state";

/// Longest a handover waits for the manager to confirm it took the fds.
const BARRIER_TIMEOUT: Duration = Duration::from_secs(10);

/// Hands `handed` to the manager's fd store and returns the number of
/// connections once the manager holds its own copies (ours are closed by
/// then). An error means they may be lost: the manager did not confirm.
pub fn give_to_manager(notifier: &Notifier, mut handed: HandedOver) -> io::Result<usize> {
    let count = handed.sockets.len();
    if count > 0 {
        fault::state(&mut handed.state);
        let state = state_file(&handed.state)?;
        // The state file first: a store that takes only some of what comes
        // (FileDescriptorStoreMax= smaller than the connections), or a
        // process killed partway, still carries every socket that made it;
        // the records of the others describe sockets that are gone.
        notifier.store_fds(STATE_NAME, &[state])?;
        fault::point("store-after-state");
        for batch in handed.sockets.chunks(fault::batch(MAX_FDS_PER_MESSAGE)) {
            notifier.store_fds(CONNECTION_NAME, batch)?;
            fault::point("store-after-first-batch");
        }
    }
    notifier.status(&format!("handed over: workers=0 connections={count}"));
    // Our copies may close now: the manager holds its own.
    drop(handed);
    notifier.barrier(BARRIER_TIMEOUT)?;
    Ok(count)
}

/// Has the manager drop its copies of what the previous instance handed
/// over, and waits until it has (a barrier). Called before a byte is
/// served on any of them: a record is used at most once. Were this
/// instance to die after serving with the record still stored, the next
/// would send the same pending replies again (and, over TLS, encrypt under
/// nonces already used). Dying before, it only loses the connections,
/// whose clients see them close. An error means the manager did not
/// confirm in time: the caller decides what it may still serve.
pub fn release_from_manager(notifier: &Notifier) -> io::Result<()> {
    // Without a manager nothing confirms anything: whoever passed these
    // descriptors may still hold them.
    if !notifier.has_manager() {
        return Err(io::Error::new(
            io::ErrorKind::NotConnected,
            "no service manager (NOTIFY_SOCKET) to confirm the removal",
        ));
    }
    notifier.remove_stored_fds(CONNECTION_NAME)?;
    notifier.remove_stored_fds(STATE_NAME)?;
    notifier.barrier(BARRIER_TIMEOUT)
}

/// The seals of a state file: nothing can write to it, resize it, or
/// change its seals once they are on.
const SEALS: SealFlag = SealFlag::F_SEAL_WRITE
    .union(SealFlag::F_SEAL_SHRINK)
    .union(SealFlag::F_SEAL_GROW)
    .union(SealFlag::F_SEAL_SEAL);

/// A memfd holding `bytes`, sealed, to hand to the manager. It lives in
/// memory only (never on a file system), and once sealed no process that
/// holds it, the manager or a later instance, can change it.
pub(crate) fn state_file(bytes: &[u8]) -> io::Result<OwnedFd> {
    let fd = memfd_create(
        "oneshotd-state",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )?;
    let mut file = File::from(fd);
    file.write_all(bytes)?;
    fcntl(&file, FcntlArg::F_ADD_SEALS(SEALS))?;
    Ok(file.into())
}

/// Whether a state file carries every seal [`state_file`] puts on.
pub(crate) fn is_sealed(fd: &OwnedFd) -> bool {
    fcntl(fd, FcntlArg::F_GET_SEALS)
        .is_ok_and(|seals| SealFlag::from_bits_truncate(seals).contains(SEALS))
}

/// Everything in a state fd, from its start (its offset is shared with
/// the previous instance, which left it at the end). It may hold TLS
/// secrets: wiped when dropped.
pub(crate) fn read_state_file(fd: OwnedFd) -> io::Result<zeroize::Zeroizing<Vec<u8>>> {
    let mut file = File::from(fd);
    file.rewind()?;
    // Sized once: a buffer that grew would leave copies behind, unwiped.
    let size = file.metadata().map_or(0, |m| m.len() as usize);
    let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(size + 1));
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}
