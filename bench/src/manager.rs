//! The service manager's end of an sd_notify socket, as systemd plays it
//! for `oneshotd.service`: receiving one datagram with the descriptors sent
//! along, and the fd store that `FDSTORE=1` and `FDSTOREREMOVE=1` act on.
//!
//! Shared by `scale_handover` and the integration tests' `NotifySocket`, so
//! that the two stand-ins for systemd cannot come to disagree about what a
//! handover's datagrams mean.

use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};

/// The name systemd gives stored descriptors sent without `FDNAME=`.
pub const DEFAULT_FDNAME: &str = "stored";

/// The fd store: descriptors by the `FDNAME=` they were stored under, in
/// the order they arrived.
pub type FdStore = Vec<(String, OwnedFd)>;

/// Receives one datagram from `socket`: its `KEY=VALUE` lines and the
/// descriptors that came with it (close-on-exec, owned by the caller).
///
/// Blocks as the socket does; with a read timeout set, the timeout comes
/// back as an error of kind `WouldBlock`.
pub fn receive(socket: &UnixDatagram) -> io::Result<(Vec<String>, Vec<OwnedFd>)> {
    let mut buf = [0u8; 4096];
    // 253: the most descriptors one SCM_RIGHTS message may carry
    // (SCM_MAX_FD), so that none of what a sender packs into one is lost.
    let mut control = nix::cmsg_space!([RawFd; 253]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let message = recvmsg::<UnixAddr>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut control),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for cmsg in message.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            // SAFETY: SCM_RIGHTS installed these descriptors in this
            // process just now; nothing else owns them.
            fds.extend(
                raw.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    let n = message.bytes;
    let text = String::from_utf8_lossy(&buf[..n]);
    Ok((text.lines().map(str::to_owned).collect(), fds))
}

/// Acts on `store` as systemd does for one datagram's `lines` and `fds`:
/// `FDSTORE=1` adds the descriptors under the datagram's `FDNAME=`
/// (default [`DEFAULT_FDNAME`]); `FDSTOREREMOVE=1` takes every entry of
/// that name out of the store. Returns what was taken out, so that the
/// caller decides when it is closed (closing thousands of descriptors
/// takes time a measurement may not want to include).
///
/// Descriptors not stored are dropped (closed) here: for `BARRIER=1` that
/// is the answer the sender waits for.
pub fn apply(store: &mut FdStore, lines: &[String], fds: Vec<OwnedFd>) -> Vec<OwnedFd> {
    let has = |line: &str| lines.iter().any(|l| l == line);
    let name = lines
        .iter()
        .find_map(|l| l.strip_prefix("FDNAME="))
        .unwrap_or(DEFAULT_FDNAME);
    if has("FDSTORE=1") {
        store.extend(fds.into_iter().map(|fd| (name.to_owned(), fd)));
        Vec::new()
    } else if has("FDSTOREREMOVE=1") {
        let (removed, kept): (FdStore, FdStore) = std::mem::take(store)
            .into_iter()
            .partition(|(stored, _)| stored == name);
        *store = kept;
        removed.into_iter().map(|(_, fd)| fd).collect()
    } else {
        Vec::new()
    }
}
