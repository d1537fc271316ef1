//! A reference point, not a baseline to beat: the "upper" protocol in one
//! thread on an edge-triggered epoll loop — no re-arm, no locks, no pool.
//! The practical ceiling on a 2-core
//! machine shared with the load generator; `BASELINE=et bench/run.sh`
//! measures oneshotd against it, so the price of the oneshot pool (one
//! `EPOLL_CTL_MOD` per event, the turn-taking) is measured, not guessed.
//!
//! ```text
//! et_upper --addr 127.0.0.1:7879
//! ```

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

const LISTENER: u64 = u64::MAX;

/// A client: the start of an incomplete line, and replies not yet taken by
/// the kernel.
struct Client {
    stream: TcpStream,
    partial: Vec<u8>,
    pending: Vec<u8>,
}

fn main() -> io::Result<()> {
    let mut addr: SocketAddr = "127.0.0.1:7879".parse().unwrap();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().expect("flag value");
        match flag.as_str() {
            "--addr" => addr = value.parse().expect("--addr"),
            // Accepted for the same command line as tokio_upper; one thread.
            "--workers" => {}
            _ => panic!("unknown flag {flag}"),
        }
    }
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    epoll.add(&listener, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER))?;
    eprintln!("et_upper listening on {addr}");

    let mut clients: HashMap<u64, Client> = HashMap::new();
    let mut next_key = 0;
    let mut events = vec![EpollEvent::empty(); 64];
    let mut input = vec![0u8; 64 * 1024];
    loop {
        let n = match epoll.wait(&mut events, EpollTimeout::NONE) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        for event in &events[..n] {
            let key = event.data();
            if key == LISTENER {
                // Level-triggered listener: accept what is queued now.
                while let Ok((stream, _)) = listener.accept() {
                    stream.set_nonblocking(true)?;
                    stream.set_nodelay(true)?;
                    let flags = EpollFlags::EPOLLIN
                        | EpollFlags::EPOLLOUT
                        | EpollFlags::EPOLLRDHUP
                        | EpollFlags::EPOLLET;
                    epoll.add(&stream, EpollEvent::new(flags, next_key))?;
                    clients.insert(
                        next_key,
                        Client {
                            stream,
                            partial: Vec::new(),
                            pending: Vec::new(),
                        },
                    );
                    next_key += 1;
                }
                continue;
            }
            let open = match clients.get_mut(&key) {
                Some(client) => client.on_event(&mut input),
                None => continue,
            };
            if !open {
                if let Some(client) = clients.remove(&key) {
                    let _ = epoll.delete(&client.stream);
                }
            }
        }
    }
}

impl Client {
    /// Flushes, then reads until the socket is drained (edge-triggered: a
    /// short read means empty, and any later byte brings a new edge).
    /// Returns whether the connection stays open.
    fn on_event(&mut self, input: &mut [u8]) -> bool {
        if !self.flush() {
            return false;
        }
        loop {
            match self.stream.read(input) {
                Ok(0) => return false,
                Ok(n) => {
                    self.partial.extend_from_slice(&input[..n]);
                    let end = self
                        .partial
                        .iter()
                        .rposition(|&b| b == b'\n')
                        .map_or(0, |i| i + 1);
                    self.pending
                        .extend(self.partial.drain(..end).map(|b| b.to_ascii_uppercase()));
                    if !self.flush() {
                        return false;
                    }
                    if n < input.len() {
                        return true;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
    }

    /// Writes pending replies until done or the kernel's buffer is full (an
    /// `EPOLLOUT` edge then brings us back). False on a broken connection.
    fn flush(&mut self) -> bool {
        let mut written = 0;
        while written < self.pending.len() {
            match self.stream.write(&self.pending[written..]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        self.pending.drain(..written);
        true
    }
}
