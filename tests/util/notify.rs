//! The test's end of the daemon's sd_notify socket, playing the service
//! manager: it records every line, keeps the descriptors sent with
//! `FDSTORE=1` (its fd store), drops them on `FDSTOREREMOVE=1`, and answers
//! `BARRIER=1` by closing the descriptor sent with it.

use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};

/// The test's end of `NOTIFY_SOCKET`.
pub struct NotifySocket {
    pub path: PathBuf,
    socket: UnixDatagram,
    /// Every `KEY=VALUE` line received so far, in order.
    pub seen: Vec<String>,
    /// The fd store: descriptors received with `FDSTORE=1`, by `FDNAME=`.
    pub stored: Vec<(String, OwnedFd)>,
}

impl NotifySocket {
    pub fn bind(path: PathBuf) -> NotifySocket {
        let socket = UnixDatagram::bind(&path).unwrap();
        NotifySocket {
            path,
            socket,
            seen: Vec::new(),
            stored: Vec::new(),
        }
    }

    /// Receives until a line matching `pred` arrives (after `from`, an
    /// index into `seen`); returns that line. Panics at the deadline,
    /// listing what did arrive.
    pub fn expect_from(
        &mut self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        let mut checked = from;
        loop {
            if let Some(line) = self.seen[checked.min(self.seen.len())..]
                .iter()
                .find(|l| pred(l))
            {
                return line.clone();
            }
            checked = self.seen.len();
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "notify: expected line not seen within {timeout:?}; got {:#?}",
                    self.seen
                );
            }
            self.socket.set_read_timeout(Some(left)).unwrap();
            match self.receive() {
                Ok(()) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("notify socket: {e}"),
            }
        }
    }

    /// Receives one datagram and acts on it as the manager would.
    fn receive(&mut self) -> io::Result<()> {
        let mut buf = [0u8; 4096];
        let mut control = nix::cmsg_space!([RawFd; 253]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let message = recvmsg::<UnixAddr>(
            self.socket.as_raw_fd(),
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
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let has = |line: &str| lines.iter().any(|l| l == line);
        let name = lines
            .iter()
            .find_map(|l| l.strip_prefix("FDNAME="))
            .unwrap_or("stored")
            .to_owned();
        if has("FDSTORE=1") {
            self.stored
                .extend(fds.into_iter().map(|fd| (name.clone(), fd)));
        } else if has("FDSTOREREMOVE=1") {
            self.stored.retain(|(stored, _)| *stored != name);
        }
        // BARRIER=1: the descriptor that came with it is dropped above
        // (not stored), which is the answer.
        self.seen.extend(lines);
        Ok(())
    }

    /// Takes what the fd store holds, e.g. to start the next instance
    /// with it.
    pub fn take_stored(&mut self) -> Vec<(String, OwnedFd)> {
        std::mem::take(&mut self.stored)
    }

    /// Like [`Self::expect_from`], from the next line on.
    pub fn expect(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let from = self.seen.len();
        self.expect_from(from, timeout, pred)
    }
}
