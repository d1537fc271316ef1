//! The test's end of the daemon's sd_notify socket.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The test's end of `NOTIFY_SOCKET`.
pub struct NotifySocket {
    pub path: PathBuf,
    socket: UnixDatagram,
    /// Every `KEY=VALUE` line received so far, in order.
    pub seen: Vec<String>,
}

impl NotifySocket {
    pub fn bind(path: PathBuf) -> NotifySocket {
        let socket = UnixDatagram::bind(&path).unwrap();
        NotifySocket {
            path,
            socket,
            seen: Vec::new(),
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
            let mut buf = [0u8; 4096];
            match self.socket.recv(&mut buf) {
                Ok(n) => {
                    let text = String::from_utf8_lossy(&buf[..n]);
                    self.seen.extend(text.lines().map(str::to_owned));
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("notify socket: {e}"),
            }
        }
    }

    /// Like [`Self::expect_from`], from the next line on.
    pub fn expect(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let from = self.seen.len();
        self.expect_from(from, timeout, pred)
    }
}
