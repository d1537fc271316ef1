//! The test harness: runs the real `oneshotd` binary in a temp dir, reads
//! its sd_notify datagrams from a real `NOTIFY_SOCKET`, talks to it over
//! real sockets, sends it real signals. Every wait has a deadline.

#![allow(dead_code)]

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub const BIN: &str = env!("CARGO_BIN_EXE_oneshotd");

/// A generous bound for anything that should happen "at once".
pub const SOON: Duration = Duration::from_secs(10);

/// A fresh directory per test, removed on success.
pub struct TestDir {
    pub path: PathBuf,
}

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("oneshotd-test-{}-{n}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        TestDir { path }
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.join(name);
        fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

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

/// A `oneshotd` process under test.
pub struct Daemon {
    pub dir: TestDir,
    pub child: Option<Child>,
    pub notify: NotifySocket,
    pub config: PathBuf,
    stderr_path: PathBuf,
    command: String,
}

/// How to start a daemon.
pub struct DaemonBuilder {
    name: String,
    config: String,
    env: Vec<(String, String)>,
    activate: Vec<String>,
    wrapper: Vec<String>,
    inherit: Option<std::os::fd::RawFd>,
    journal_stream: bool,
}

impl DaemonBuilder {
    /// Extra config lines (TOML). `listen` defaults to `127.0.0.1:0`.
    pub fn config(mut self, text: &str) -> Self {
        self.config.push_str(text);
        self.config.push('\n');
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Hand the daemon this listening socket the way systemd does: as fd 3,
    /// with `LISTEN_FDS=1` and `LISTEN_PID` set to the daemon's pid. The
    /// test keeps its own copy, as systemd keeps the socket unit's.
    pub fn inherit(mut self, listener: std::os::fd::RawFd) -> Self {
        self.inherit = Some(listener);
        self
    }

    /// Set `JOURNAL_STREAM` to the device and inode of the daemon's stderr,
    /// as systemd does when stderr is connected to the journal.
    pub fn journal_stream(mut self) -> Self {
        self.journal_stream = true;
        self
    }

    /// Run the daemon through a command that execs it (e.g. `prlimit`).
    pub fn wrap(mut self, command: &[&str]) -> Self {
        self.wrapper = command.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Run under `systemd-socket-activate -l ADDR ...` instead of binding.
    pub fn activate(mut self, addrs: &[String]) -> Self {
        self.activate = addrs.to_vec();
        self
    }

    /// Starts the daemon; for a bound daemon, waits for READY=1.
    pub fn spawn(self) -> Daemon {
        let dir = TestDir::new(&self.name);
        let mut config = self.config;
        if !config.contains("listen") {
            config.push_str("listen = [\"127.0.0.1:0\"]\n");
        }
        if !config.contains("log_level") {
            config.push_str("log_level = \"debug\"\n");
        }
        let config_path = dir.write("oneshotd.toml", &config);
        let notify = NotifySocket::bind(dir.join("notify.sock"));
        let stderr_path = dir.join("stderr.log");
        let stderr = fs::File::create(&stderr_path).unwrap();
        let journal_stream = {
            use std::os::unix::fs::MetadataExt;
            let meta = stderr.metadata().unwrap();
            format!("{}:{}", meta.dev(), meta.ino())
        };

        let mut command = if let Some(fd) = self.inherit {
            // `sh` learns its own pid ($$) and execs the daemon, which keeps it.
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\"")
                .arg(BIN)
                .env("NOTIFY_SOCKET", &notify.path);
            use std::os::unix::process::CommandExt;
            // SAFETY: only async-signal-safe calls (dup2, fcntl) run between
            // fork and exec, on descriptors this process owns.
            unsafe {
                c.pre_exec(move || {
                    use nix::libc;
                    if fd == 3 {
                        if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                            return Err(io::Error::last_os_error());
                        }
                    } else if libc::dup2(fd, 3) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            c
        } else if !self.wrapper.is_empty() {
            let mut c = Command::new(&self.wrapper[0]);
            c.args(&self.wrapper[1..]).arg(BIN);
            c.env("NOTIFY_SOCKET", &notify.path);
            c
        } else if self.activate.is_empty() {
            let mut c = Command::new(BIN);
            c.env("NOTIFY_SOCKET", &notify.path);
            for (k, v) in &self.env {
                c.env(k, v);
            }
            c
        } else {
            let mut c = Command::new("systemd-socket-activate");
            for addr in &self.activate {
                c.arg("-l").arg(addr);
            }
            c.arg("-E")
                .arg(format!("NOTIFY_SOCKET={}", notify.path.display()));
            for (k, v) in &self.env {
                c.arg("-E").arg(format!("{k}={v}"));
            }
            c.arg("--").arg(BIN);
            c
        };
        command.arg("--config").arg(&config_path);
        if self.inherit.is_none() {
            command.env_remove("LISTEN_FDS").env_remove("LISTEN_PID");
        }
        if self.journal_stream {
            command.env("JOURNAL_STREAM", &journal_stream);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        if !self.journal_stream {
            command.env_remove("JOURNAL_STREAM");
        }
        let description = format!("{command:?}");
        let child = command.spawn().expect("spawn oneshotd");
        let mut daemon = Daemon {
            dir,
            child: Some(child),
            notify,
            config: config_path,
            stderr_path,
            command: description,
        };
        if self.activate.is_empty() {
            daemon.expect_notify("READY=1");
        }
        daemon
    }
}

impl Daemon {
    pub fn builder(name: &str) -> DaemonBuilder {
        DaemonBuilder {
            name: name.to_owned(),
            config: String::new(),
            env: Vec::new(),
            activate: Vec::new(),
            wrapper: Vec::new(),
            inherit: None,
            journal_stream: false,
        }
    }

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

    /// Open descriptors of the daemon process.
    pub fn fd_count(&self) -> usize {
        fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }

    /// The daemon's descriptors at rest: the least of a few samples, so
    /// that nothing momentary (a log file reopened, a probe) is counted.
    pub fn resting_fd_count(&self) -> usize {
        (0..5)
            .map(|_| {
                std::thread::sleep(Duration::from_millis(10));
                self.fd_count()
            })
            .min()
            .unwrap()
    }

    /// Waits until the daemon holds exactly `baseline` descriptors again;
    /// on timeout, lists what it still holds (with each TCP socket's state)
    /// before panicking.
    pub fn wait_fds_back_to(&self, baseline: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.fd_count() != baseline {
            if Instant::now() >= deadline {
                let fds: Vec<String> = fs::read_dir(format!("/proc/{}/fd", self.pid()))
                    .unwrap()
                    .filter_map(|e| {
                        let e = e.ok()?;
                        let target = fs::read_link(e.path()).ok()?;
                        Some(format!(
                            "{} -> {}",
                            e.file_name().to_string_lossy(),
                            target.display()
                        ))
                    })
                    .collect();
                let tcp = fs::read_to_string("/proc/net/tcp").unwrap_or_default();
                let states: Vec<&str> = tcp
                    .lines()
                    .filter(|row| {
                        fds.iter().any(|f| {
                            let inode = row.split_whitespace().nth(9).unwrap_or("-");
                            f.ends_with(&format!("socket:[{inode}]"))
                        })
                    })
                    .collect();
                self.report();
                panic!(
                    "fd count {} != baseline {baseline} after {timeout:?}\nfds: {fds:#?}\ntcp rows (st: 01 ESTABLISHED, 07 CLOSE, 08 CLOSE_WAIT, 0A LISTEN): {states:#?}",
                    self.fd_count()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Resident memory of the daemon process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        proc_status_field(self.pid(), "VmRSS:")
    }

    /// CPU time (user + system) the daemon has used so far.
    fn cpu_time(&self) -> Duration {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // Fields after the parenthesised command name; utime and stime are
        // the 14th and 15th fields of the whole line, in clock ticks.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // USER_HZ, which /proc reports in, is 100 on every Linux ABI.
        Duration::from_millis(ticks * 10)
    }

    /// CPU time the daemon uses while `activity` runs (a sleep, to see
    /// whether it spins while nothing should happen, or a load).
    pub fn cpu_during(&self, activity: impl FnOnce()) -> Duration {
        let before = self.cpu_time();
        activity();
        self.cpu_time() - before
    }

    pub fn threads(&self) -> u64 {
        proc_status_field(self.pid(), "Threads:")
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

pub fn proc_status_field(pid: u32, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Closes with a reset (`SO_LINGER` 0) instead of a FIN.
pub fn reset(stream: TcpStream) {
    let linger = nix::libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    nix::sys::socket::setsockopt(&stream, nix::sys::socket::sockopt::Linger, &linger).unwrap();
}

/// Sends `line` `times` times, reads a little of the replies and resets
/// the connection while the daemon is still writing the rest.
pub fn reset_mid_reply(addr: SocketAddr, line: &str, times: usize) {
    let mut client = connect(addr);
    client.write_all(line.repeat(times).as_bytes()).unwrap();
    let mut some = [0u8; 64];
    let _ = client.read(&mut some);
    reset(client);
}

/// A TCP client with timeouts, so no test can hang on a read.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_read_timeout(Some(SOON)).unwrap();
    stream.set_write_timeout(Some(SOON)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Reads until EOF; panics on timeout.
pub fn read_to_end(mut stream: impl Read) -> Vec<u8> {
    let mut out = Vec::new();
    stream.read_to_end(&mut out).expect("read to EOF");
    out
}

/// Reads exactly `n` lines.
pub fn read_lines(reader: &mut impl BufRead, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let mut line = String::new();
            reader.read_line(&mut line).expect("read a reply line");
            line
        })
        .collect()
}

/// Sends `request` and reads one reply line.
pub fn roundtrip(stream: &mut TcpStream, request: &str) -> String {
    stream.write_all(request.as_bytes()).unwrap();
    let mut reader = BufReader::new(&*stream);
    read_lines(&mut reader, 1).remove(0)
}

/// The reference model of the "upper" reply to one line.
pub fn upper(line: &[u8]) -> Vec<u8> {
    line.to_ascii_uppercase()
}

/// A TCP port free right now (for `systemd-socket-activate`, which rejects
/// port 0). Another process may take it before it is used; callers retry.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

nix::ioctl_read_bad!(tiocoutq, nix::libc::TIOCOUTQ, nix::libc::c_int);

/// Bytes this socket has sent that the peer's kernel has not acknowledged.
pub fn unacked_bytes(stream: &TcpStream) -> usize {
    use std::os::fd::AsRawFd;
    let mut n: nix::libc::c_int = 0;
    // SAFETY: the stream's descriptor is open for the call, and TIOCOUTQ
    // writes one c_int into `n`.
    unsafe { tiocoutq(stream.as_raw_fd(), &mut n) }.unwrap();
    n as usize
}
