//! What the benchmark's programs share: the request lines both sides of a
//! connection agree on, the check of an uppercased reply, the descriptor
//! limit, a process's CPU time, and the service manager's end of sd_notify (which the integration tests use too).

use std::io::{self, Read};
use std::time::Duration;

pub mod manager;
pub mod tls;

/// xorshift64*: the same seed gives the sender and the verifier the same
/// sequence of lines, so nothing needs to be remembered per request.
#[derive(Clone)]
pub struct Lines(pub u64);

impl Lines {
    /// Appends the next line: `len` bytes of lowercase letters, digits,
    /// spaces and dashes, then LF.
    pub fn next_line(&mut self, len: usize, out: &mut Vec<u8>) {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789 -";
        for _ in 0..len {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let r = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
            out.push(ALPHABET[(r >> 58) as usize % ALPHABET.len()]);
        }
        out.push(b'\n');
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the soft
/// limit now in force: how many descriptors this process may hold.
pub fn raise_fd_limit() -> u64 {
    let mut limit = nix::libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a local struct.
    unsafe {
        if nix::libc::getrlimit(nix::libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        let raised = nix::libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        if nix::libc::setrlimit(nix::libc::RLIMIT_NOFILE, &raised) == 0 {
            limit = raised;
        }
    }
    limit.rlim_cur
}

/// Reads the reply to `line` from connection number `connection` and checks
/// that it is `line` uppercased; an error names the connection.
pub fn expect_uppercased(stream: &mut impl Read, line: &str, connection: usize) -> io::Result<()> {
    let mut reply = vec![0u8; line.len()];
    stream
        .read_exact(&mut reply)
        .map_err(|e| io::Error::other(format!("connection {connection}: {e}")))?;
    if reply != line.to_ascii_uppercase().as_bytes() {
        return Err(io::Error::other(format!(
            "connection {connection}: wrong reply {:?}",
            String::from_utf8_lossy(&reply)
        )));
    }
    Ok(())
}

/// CPU time (user + system, all threads) of a running process, from
/// `/proc/PID/stat`; `None` if it cannot be read.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at 3.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_micros(ticks * 1_000_000 / hz))
}

/// One `--flag value` of a load generator's command line.
pub struct Flag {
    /// The flag, as given (`--conns`).
    pub name: String,
    value: String,
}

impl Flag {
    /// The value, parsed; the error names the flag and the value.
    pub fn value<T: std::str::FromStr>(&self) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        self.value
            .parse()
            .map_err(|e| format!("{} {}: {e}", self.name, self.value))
    }

    /// The value as given (a path).
    pub fn text(&self) -> &str {
        &self.value
    }

    /// The error for a flag the program does not know.
    pub fn unknown(&self) -> String {
        format!("unknown flag {}", self.name)
    }
}

/// Walks `args` as `--flag value` pairs (the `switches` take no value),
/// handing each to `set`, which stores it or says why not.
pub fn parse_flags(
    args: impl IntoIterator<Item = String>,
    switches: &[&str],
    mut set: impl FnMut(Flag) -> Result<(), String>,
) -> Result<(), String> {
    let mut args = args.into_iter();
    while let Some(name) = args.next() {
        let value = if switches.contains(&name.as_str()) {
            String::new()
        } else {
            args.next().ok_or(format!("{name} needs a value"))?
        };
        set(Flag { name, value })?;
    }
    Ok(())
}

/// Exchanges per connection of `scale_load idle`'s `burst` command (one in
/// flight on each connection), which `scale_handover` times before and
/// after the handover.
pub const BURST: usize = 20;
