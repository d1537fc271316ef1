//! Starting a daemon under test: its config, environment, and how it gets
//! its sockets (bound, socket-activated, inherited, or through a wrapper).

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::process::{Command, Stdio};

use super::{Daemon, NotifySocket, TestDir, BIN};

/// How to start a daemon.
pub struct DaemonBuilder {
    name: String,
    config: String,
    env: Vec<(String, String)>,
    activate: Vec<String>,
    wrapper: Vec<String>,
    /// Descriptors handed over as `LISTEN_FDS`, with their names.
    inherit: Vec<(RawFd, String)>,
    /// An fd store to start with (what a previous instance handed over).
    store: Vec<(String, OwnedFd)>,
    journal_stream: bool,
    /// The program to run: the daemon, or an example built on the library.
    binary: String,
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
    pub fn inherit(mut self, listener: RawFd) -> Self {
        self.inherit.push((listener, String::new()));
        self
    }

    /// Hand over `fd` as the next of `LISTEN_FDS` (3, 4, ...) with this
    /// `LISTEN_FDNAMES` entry, as systemd does for named sockets and for
    /// what its fd store kept.
    pub fn inherit_named(mut self, fd: RawFd, name: &str) -> Self {
        self.inherit.push((fd, name.to_owned()));
        self
    }

    /// Start as systemd starts the next instance after a restart: the
    /// socket units' fds first (given with [`Self::inherit_named`]), then
    /// everything its fd store holds, named as stored. The store moves to
    /// the new daemon's notify socket, which drops what the daemon removes
    /// with `FDSTOREREMOVE=1`.
    pub fn with_fd_store(mut self, store: Vec<(String, OwnedFd)>) -> Self {
        self.store = store;
        self
    }

    /// Set `JOURNAL_STREAM` to the device and inode of the daemon's stderr,
    /// as systemd does when stderr is connected to the journal.
    pub fn journal_stream(mut self) -> Self {
        self.journal_stream = true;
        self
    }

    /// Run an example daemon built on the library (`examples/NAME.rs`,
    /// which `cargo test` builds beside the binaries) instead of oneshotd.
    pub fn example(mut self, name: &str) -> Self {
        let dir = std::path::Path::new(BIN).parent().unwrap();
        self.binary = dir.join("examples").join(name).display().to_string();
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

    /// Starts the daemon; unless socket-activated by
    /// `systemd-socket-activate`, waits for READY=1.
    pub fn spawn(self) -> Daemon {
        let wait_ready = self.activate.is_empty();
        let mut daemon = self.launch();
        if wait_ready {
            daemon.expect_notify("READY=1");
        }
        daemon
    }

    /// Starts the daemon without waiting for anything (e.g. one expected
    /// to refuse what it was given).
    pub fn launch(mut self) -> Daemon {
        for (name, fd) in &self.store {
            self.inherit.push((fd.as_raw_fd(), name.clone()));
        }
        let dir = TestDir::new(&self.name);
        let mut config = self.config;
        // The key itself, not `metrics_listen`.
        if !config.lines().any(|l| l.trim_start().starts_with("listen")) {
            config.push_str("listen = [\"127.0.0.1:0\"]\n");
        }
        if !config.contains("log_level") {
            config.push_str("log_level = \"debug\"\n");
        }
        let config_path = dir.write("oneshotd.toml", &config);
        let mut notify = NotifySocket::bind(dir.join("notify.sock"));
        notify.stored = std::mem::take(&mut self.store);
        let stderr_path = dir.join("stderr.log");
        let stderr = fs::File::create(&stderr_path).unwrap();
        let journal_stream = {
            use std::os::unix::fs::MetadataExt;
            let meta = stderr.metadata().unwrap();
            format!("{}:{}", meta.dev(), meta.ino())
        };

        let mut command = if !self.inherit.is_empty() {
            // `sh` learns its own pid ($$) and execs the daemon, which keeps it.
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg("LISTEN_PID=$$ exec \"$0\" \"$@\"")
                .arg(&self.binary)
                .env("LISTEN_FDS", self.inherit.len().to_string())
                .env("NOTIFY_SOCKET", &notify.path);
            if self.inherit.iter().any(|(_, name)| !name.is_empty()) {
                let names: Vec<&str> = self.inherit.iter().map(|(_, n)| n.as_str()).collect();
                c.env("LISTEN_FDNAMES", names.join(":"));
            }
            // Allocated here: after fork, only async-signal-safe calls.
            let mut sources: Vec<RawFd> = self.inherit.iter().map(|(fd, _)| *fd).collect();
            use std::os::unix::process::CommandExt;
            // SAFETY: only async-signal-safe calls (fcntl, dup2) run between
            // fork and exec, on descriptors this process owns.
            unsafe {
                c.pre_exec(move || {
                    use nix::libc;
                    // Sources inside 3..3+n first move out of the way, so
                    // that putting one fd in place never overwrites another
                    // still to be placed (F_DUPFD takes a free number, which
                    // is no source's). The rest are placed directly.
                    let end = 3 + sources.len() as i32;
                    for fd in sources.iter_mut().filter(|fd| (3..end).contains(*fd)) {
                        let moved = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, end);
                        if moved < 0 {
                            return Err(io::Error::last_os_error());
                        }
                        *fd = moved;
                    }
                    for (i, &source) in sources.iter().enumerate() {
                        // dup2 clears close-on-exec on the copy.
                        if libc::dup2(source, 3 + i as i32) < 0 {
                            return Err(io::Error::last_os_error());
                        }
                    }
                    Ok(())
                });
            }
            c
        } else if !self.wrapper.is_empty() {
            let mut c = Command::new(&self.wrapper[0]);
            c.args(&self.wrapper[1..]).arg(&self.binary);
            c.env("NOTIFY_SOCKET", &notify.path);
            c
        } else if self.activate.is_empty() {
            let mut c = Command::new(&self.binary);
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
            c.arg("--").arg(&self.binary);
            c
        };
        if !self.inherit.is_empty() || !self.wrapper.is_empty() {
            for (k, v) in &self.env {
                command.env(k, v);
            }
        }
        command.arg("--config").arg(&config_path);
        if self.inherit.is_empty() {
            command
                .env_remove("LISTEN_FDS")
                .env_remove("LISTEN_PID")
                .env_remove("LISTEN_FDNAMES");
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
        Daemon {
            dir,
            child: Some(child),
            notify,
            config: config_path,
            stderr_path,
            command: description,
        }
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
            inherit: Vec::new(),
            store: Vec::new(),
            journal_stream: false,
            binary: BIN.to_owned(),
        }
    }
}
