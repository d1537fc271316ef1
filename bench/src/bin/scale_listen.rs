//! `scale_listen`: starts a server the way a systemd socket unit does, with
//! the listening socket already bound, as fd 3 in `LISTEN_FDS`, and a
//! chosen accept-queue length (`oneshotd.socket` has `Backlog=4096`; a
//! socket bound by the Rust standard library gets 128, which a few hundred
//! connections at a time overflow: a dropped SYN costs its client 1 s).
//! It then execs the server, which keeps this process's pid.
//!
//! ```text
//! scale_listen --addr 127.0.0.1:7878 --backlog 4096 -- oneshotd --config c.toml
//! ```

use std::ffi::CString;
use std::net::SocketAddrV4;
use std::os::fd::AsRawFd;
use std::process::ExitCode;

use nix::libc;
use nix::sys::socket::{
    bind, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType,
    SockaddrIn,
};

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let Some(split) = args.iter().position(|a| a == "--") else {
        eprintln!("usage: scale_listen --addr IP:PORT --backlog N -- COMMAND ARGS...");
        return ExitCode::from(2);
    };
    let command: Vec<String> = args.split_off(split + 1);
    let (mut addr, mut backlog): (Option<SocketAddrV4>, i32) = (None, 4096);
    for pair in args[..split].chunks(2) {
        match (pair[0].as_str(), pair.get(1)) {
            ("--addr", Some(v)) => addr = v.parse().ok(),
            ("--backlog", Some(v)) => backlog = v.parse().unwrap_or(backlog),
            _ => {
                eprintln!("scale_listen: bad arguments {pair:?}");
                return ExitCode::from(2);
            }
        }
    }
    let (Some(addr), false) = (addr, command.is_empty()) else {
        eprintln!("scale_listen: --addr IP:PORT and a command are needed");
        return ExitCode::from(2);
    };
    let result = (|| -> nix::Result<()> {
        let fd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::empty(),
            None,
        )?;
        setsockopt(&fd, sockopt::ReuseAddr, &true)?;
        bind(fd.as_raw_fd(), &SockaddrIn::from(addr))?;
        listen(&fd, Backlog::new(backlog)?)?;
        // SAFETY: dup2 onto 3, which nothing in this process uses (it is
        // about to exec); the copy is not close-on-exec.
        if fd.as_raw_fd() != 3 && unsafe { libc::dup2(fd.as_raw_fd(), 3) } < 0 {
            return Err(nix::errno::Errno::last());
        }
        std::env::set_var("LISTEN_FDS", "1");
        std::env::set_var("LISTEN_PID", std::process::id().to_string());
        std::env::set_var("LISTEN_FDNAMES", "oneshotd.socket");
        let argv: Vec<CString> = command
            .iter()
            .map(|a| CString::new(a.as_bytes()).expect("no NUL in arguments"))
            .collect();
        nix::unistd::execvp(&argv[0], &argv)?;
        Ok(())
    })();
    if let Err(e) = result {
        eprintln!("scale_listen: {e}");
    }
    ExitCode::FAILURE
}
