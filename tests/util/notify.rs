//! The test's end of the daemon's sd_notify socket, playing the service
//! manager: it records every line, keeps the descriptors sent with
//! `FDSTORE=1` (its fd store), drops them on `FDSTOREREMOVE=1`, and answers
//! `BARRIER=1` by closing the descriptor sent with it. What a datagram
//! means to the manager is `oneshotd_bench::manager`'s, shared with the
//! handover benchmark's manager.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use oneshotd_bench::manager::{self, FdStore};

/// The test's end of `NOTIFY_SOCKET`.
pub struct NotifySocket {
    pub path: PathBuf,
    socket: UnixDatagram,
    /// Every `KEY=VALUE` line received so far, in order.
    pub seen: Vec<String>,
    /// The fd store: descriptors received with `FDSTORE=1`, by `FDNAME=`.
    pub stored: FdStore,
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

    /// Receives one datagram and acts on it as the manager would: what
    /// `FDSTOREREMOVE=1` takes out of the store is closed at once, and so
    /// is the descriptor sent with `BARRIER=1`, which is the answer.
    fn receive(&mut self) -> io::Result<()> {
        let (lines, fds) = manager::receive(&self.socket)?;
        manager::apply(&mut self.stored, &lines, fds);
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
