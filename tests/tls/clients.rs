//! The TLS clients nobody here wrote, run as processes: Python's `ssl`
//! (through `client.py`), `openssl s_client` and GnuTLS's `gnutls-cli`;
//! and [`Tool`], which runs any command with a hard deadline, feeding its
//! stdin and reading its stdout as the test goes.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::util::*;

/// How long any one client process may run.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A command under test: its stdin is fed by [`Tool::send`], its stdout
/// read by [`Tool::read`]; everything it does has until the deadline.
pub struct Tool {
    what: String,
    child: Child,
    input: Option<Sender<Vec<u8>>>,
    output: Receiver<Vec<u8>>,
    got: Vec<u8>,
    stdout_open: bool,
    stderr: Option<JoinHandle<String>>,
    deadline: Instant,
}

/// How a [`Tool`] ended.
pub struct Finished {
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub status: ExitStatus,
}

impl Tool {
    pub fn start(mut command: Command, what: &str) -> Tool {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: {command:?}: {e}"));
        let (input, queue) = mpsc::channel::<Vec<u8>>();
        let mut stdin = child.stdin.take().unwrap();
        // Writes happen beside reads, so that a big input never waits on
        // an output nobody reads. Closing the channel closes stdin.
        std::thread::spawn(move || {
            for bytes in queue {
                if stdin.write_all(&bytes).is_err() {
                    break;
                }
            }
        });
        let (chunks, output) = mpsc::channel();
        let mut stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = vec![0; 1 << 16];
            while let Ok(n @ 1..) = stdout.read(&mut buf) {
                if chunks.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let mut stderr = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Tool {
            what: what.to_owned(),
            child,
            input: Some(input),
            output,
            got: Vec::new(),
            stdout_open: true,
            stderr: Some(stderr),
            deadline: Instant::now() + DEADLINE,
        }
    }

    /// Queues `bytes` for its stdin.
    pub fn send(&self, bytes: &[u8]) {
        let input = self.input.as_ref().expect("stdin still open");
        input.send(bytes.to_vec()).unwrap();
    }

    /// Waits for one more chunk of stdout; `false` at its end.
    fn receive(&mut self) -> bool {
        let left = self.deadline.saturating_duration_since(Instant::now());
        match self.output.recv_timeout(left) {
            Ok(chunk) => {
                self.got.extend(chunk);
                true
            }
            Err(RecvTimeoutError::Disconnected) => {
                self.stdout_open = false;
                false
            }
            Err(RecvTimeoutError::Timeout) => self.fail("its output did not come in time"),
        }
    }

    /// Reads exactly `n` bytes of its stdout.
    pub fn read(&mut self, n: usize) -> Vec<u8> {
        while self.got.len() < n {
            if !self.receive() {
                let got = String::from_utf8_lossy(&self.got).into_owned();
                self.fail(&format!("stdout ended after {got:?}, {n} bytes expected"));
            }
        }
        self.got.drain(..n).collect()
    }

    /// Closes its stdin, reads its stdout to the end and waits for it to
    /// exit, all by the deadline.
    pub fn finish(mut self) -> Finished {
        self.input = None;
        while self.stdout_open && self.receive() {}
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= self.deadline {
                self.fail("it did not exit in time");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        Finished {
            stdout: std::mem::take(&mut self.got),
            stderr: self.stderr.take().unwrap().join().unwrap(),
            status,
        }
    }

    /// Kills it and panics, with what it said on stderr.
    fn fail(&mut self, why: &str) -> ! {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let stderr = self.stderr.take().map(|s| s.join().unwrap_or_default());
        panic!(
            "{}: {why}\nstderr: {}",
            self.what,
            stderr.unwrap_or_default()
        );
    }
}

impl Drop for Tool {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `client.py` (Python's `ssl`) to `addr`, trusting `ca`, with `args`.
pub fn python(addr: SocketAddr, ca: &Path, args: &[&str]) -> Tool {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tls/client.py");
    let mut command = Command::new("python3");
    command
        .arg(script)
        .arg(addr.port().to_string())
        .arg("--ca")
        .arg(ca)
        .args(args);
    Tool::start(command, "client.py")
}

/// What `client.py` said about its handshake (or its error): the value
/// of `field` in the JSON line on its stderr, if there is one.
pub fn reported(stderr: &str, field: &str) -> Option<String> {
    let key = format!("\"{field}\": \"");
    stderr.lines().rev().find_map(|line| {
        let rest = &line[line.find(&key)? + key.len()..];
        Some(rest[..rest.find('"')?].to_owned())
    })
}

/// Sends `input` through `client.py` in one write (`--batch`) and
/// returns the replies and its stderr, after it closed cleanly.
pub fn python_batch(addr: SocketAddr, ca: &Path, args: &[&str], input: &[u8]) -> (Vec<u8>, String) {
    let mut all = vec!["--batch"];
    all.extend_from_slice(args);
    let client = python(addr, ca, &all);
    client.send(input);
    let done = client.finish();
    assert!(
        done.status.success(),
        "client.py {args:?}: {}\n{}",
        done.status,
        done.stderr
    );
    (done.stdout, done.stderr)
}

/// `openssl s_client` to `addr`, verifying the server against `ca` as
/// `localhost`; with `-brief`, stdout carries nothing but what the server
/// sends and stderr the protocol and cipher suite.
pub fn s_client(addr: SocketAddr, ca: &Path, args: &[&str]) -> Tool {
    let mut command = Command::new("openssl");
    command
        // `-nocommands`: a line that starts with R or Q is data, not a
        // request to renegotiate or to quit.
        .args(["s_client", "-brief", "-nocommands", "-verify_return_error"])
        .args(["-servername", "localhost", "-verify_hostname", "localhost"])
        .arg("-connect")
        .arg(addr.to_string())
        .arg("-CAfile")
        .arg(ca)
        .args(args);
    Tool::start(command, "openssl s_client")
}

/// `gnutls-cli` to `localhost` at `addr`'s port, trusting `ca`; its
/// informational messages go to `log`, so that stdout is the server's.
pub fn gnutls_cli(addr: SocketAddr, ca: &Path, log: &Path, args: &[&str]) -> Tool {
    let mut command = Command::new("gnutls-cli");
    command
        .arg(format!("--x509cafile={}", ca.display()))
        .arg(format!("--logfile={}", log.display()))
        .arg(format!("--port={}", addr.port()))
        .args(args)
        .arg("localhost");
    Tool::start(command, "gnutls-cli")
}

/// `count` numbered lines, the same for a given `tag`.
pub fn lines(tag: &str, count: usize) -> Vec<u8> {
    (0..count)
        .map(|i| format!("{tag} line {i} of {count}\n"))
        .collect::<String>()
        .into_bytes()
}

/// Sends `input` through an interactive client (`s_client`,
/// `gnutls-cli`, `client.py`) and checks that exactly its uppercase comes
/// back, byte for byte.
pub fn expect_echo(client: &mut Tool, input: &[u8]) {
    client.send(input);
    let back = client.read(input.len());
    assert!(
        back == upper(input),
        "{} bytes back differ from the {} expected; first: {:?}",
        back.len(),
        input.len(),
        String::from_utf8_lossy(&back[..back.len().min(80)])
    );
}

/// Sends `line` in `pieces` writes, paced so that each is a TLS record
/// of its own, then expects its one reply.
pub fn expect_split_line(client: &mut Tool, line: &str, pieces: usize) {
    let bytes = line.as_bytes();
    let size = bytes.len().div_ceil(pieces);
    for piece in bytes.chunks(size) {
        client.send(piece);
        std::thread::sleep(Duration::from_millis(30)); // pacing, not a wait
    }
    assert_eq!(client.read(bytes.len()), upper(bytes), "{line:?} split");
}
