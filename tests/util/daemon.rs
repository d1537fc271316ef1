//! A running daemon under test: its notifications, logs, addresses,
//! signals and exit.

use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{NotifySocket, TestDir, SOON};

/// A `oneshotd` process under test.
pub struct Daemon {
    pub dir: TestDir,
    pub child: Option<Child>,
    pub notify: NotifySocket,
    pub config: PathBuf,
    pub(super) stderr_path: PathBuf,
    pub(super) command: String,
}

impl Daemon {
    /// The process id (for a socket-activated daemon: the activator, which
    /// execs into the daemon, so the same pid).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Waits for a notify line equal to `line` (after those already seen).
    pub fn expect_notify(&mut self, line: &str) -> String {
        let from = self.notify.seen.len();
        self.expect_notify_from(from, |l| l == line)
    }

    pub fn expect_notify_from(&mut self, from: usize, pred: impl Fn(&str) -> bool) -> String {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.notify.expect_from(from, SOON, pred)
        }));
        match result {
            Ok(line) => line,
            Err(e) => {
                self.report();
                std::panic::resume_unwind(e)
            }
        }
    }

    /// Rewrites `key = ...` in the daemon's config file (appending it if
    /// absent), for reload tests.
    pub fn set_config(&self, key: &str, value: &str) {
        let text = fs::read_to_string(&self.config).unwrap();
        let mut found = false;
        let mut lines: Vec<String> = text
            .lines()
            .map(|l| {
                if l.split('=').next().map(str::trim) == Some(key) {
                    found = true;
                    format!("{key} = {value}")
                } else {
                    l.to_owned()
                }
            })
            .collect();
        if !found {
            lines.push(format!("{key} = {value}"));
        }
        fs::write(&self.config, lines.join("\n") + "\n").unwrap();
    }

    /// The first address the daemon logged on a line saying `what` (e.g.
    /// "metrics endpoint"); panics with the log if there is none.
    pub fn logged_addr(&self, what: &str) -> SocketAddr {
        let log = self.stderr();
        log.lines()
            .filter(|l| l.contains(what))
            .filter_map(|l| l.split("address=").nth(1))
            .find_map(|a| a.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {what:?} address in the log:\n{log}"))
    }

    /// The TCP address the daemon logged it listens on (first one).
    pub fn addr(&self) -> SocketAddr {
        self.addrs()[0]
    }

    /// Like [`Self::addr`]; when logs go to the journal instead of stderr,
    /// asks the kernel which port the daemon's listener has (its only
    /// listening TCP socket on 127.0.0.1).
    pub fn listening_addr(&self) -> SocketAddr {
        if let Some(addr) = self.addrs().first() {
            return *addr;
        }
        let inodes: Vec<String> = fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
            .filter_map(|p| {
                p.to_str()?
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')
                    .map(str::to_owned)
            })
            .collect();
        let tcp = fs::read_to_string("/proc/net/tcp").unwrap();
        for row in tcp.lines().skip(1) {
            let cols: Vec<&str> = row.split_whitespace().collect();
            // local_address st ... inode; state 0A is LISTEN
            if cols[3] == "0A" && inodes.iter().any(|i| i == cols[9]) {
                let port = u16::from_str_radix(cols[1].split(':').nth(1).unwrap(), 16).unwrap();
                return SocketAddr::from(([127, 0, 0, 1], port));
            }
        }
        panic!("no listening socket found for the daemon");
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.stderr()
            .lines()
            .filter(|l| l.contains(" listening "))
            .filter_map(|l| l.split("address=").nth(1))
            .filter_map(|a| a.trim().parse().ok())
            .collect()
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid() as i32), signal).unwrap();
    }

    /// Waits for the process to exit; panics after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            if Instant::now() >= deadline {
                self.report();
                panic!("oneshotd did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGTERM, then expect exit code 0.
    pub fn stop(&mut self) {
        self.signal(Signal::SIGTERM);
        let status = self.wait_exit(SOON);
        if status.code() != Some(0) {
            self.report();
            panic!("oneshotd exited with {status}");
        }
    }

    /// Prints what a failing test needs to see.
    pub fn report(&self) {
        eprintln!("--- command: {}", self.command);
        eprintln!("--- notify: {:#?}", self.notify.seen);
        eprintln!("--- stderr:\n{}", self.stderr());
    }

    /// Waits until `check` holds, polling; panics after `timeout`.
    pub fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Daemon) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        while !check(self) {
            if Instant::now() >= deadline {
                self.report();
                panic!("timed out waiting for {what}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.report();
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
