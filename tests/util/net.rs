//! Client helpers: connecting, reading replies, resets, and the reference
//! model of a reply.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

use super::SOON;

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

/// Sends `bytes` and expects the connection closed without a byte back (a
/// reset counts: the server closed with our bytes unread).
pub fn expect_refused_after(client: &TcpStream, bytes: &[u8]) {
    let _ = (&*client).write_all(bytes);
    let mut got = Vec::new();
    match (&*client).read_to_end(&mut got) {
        Ok(_) => assert!(got.is_empty(), "a refused connection got {got:?}"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
}

/// A TCP client with timeouts, so no test can hang on a read.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    with_timeouts(stream)
}

/// [`connect`] from `source` (another loopback address, say: the whole of
/// 127.0.0.0/8 is the loopback's), as a client on another host would.
pub fn connect_from(source: std::net::Ipv4Addr, addr: SocketAddr) -> TcpStream {
    connect_socket(addr, Some(source), None)
}

/// [`connect`] with the receive buffer set to `bytes` before connecting
/// (afterwards the window is already agreed).
pub fn connect_with_receive_buffer(addr: SocketAddr, bytes: usize) -> TcpStream {
    connect_socket(addr, None, Some(bytes))
}

/// An IPv4 client socket, bound to `source` and given a receive buffer of
/// `receive_buffer` bytes before it connects, if asked.
fn connect_socket(
    addr: SocketAddr,
    source: Option<std::net::Ipv4Addr>,
    receive_buffer: Option<usize>,
) -> TcpStream {
    use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};
    use std::os::fd::{AsRawFd, OwnedFd};
    let SocketAddr::V4(v4) = addr else {
        panic!("{addr}: IPv4 only")
    };
    let fd: OwnedFd = socket::socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    if let Some(bytes) = receive_buffer {
        socket::setsockopt(&fd, sockopt::RcvBuf, &bytes).unwrap();
    }
    if let Some(source) = source {
        let local = SockaddrIn::from(std::net::SocketAddrV4::new(source, 0));
        socket::bind(fd.as_raw_fd(), &local).unwrap();
    }
    socket::connect(fd.as_raw_fd(), &SockaddrIn::from(v4))
        .unwrap_or_else(|e| panic!("connect {addr} from {source:?}: {e}"));
    with_timeouts(TcpStream::from(fd))
}

fn with_timeouts(stream: TcpStream) -> TcpStream {
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

nix::ioctl_read_bad!(tiocoutq, nix::libc::TIOCOUTQ, nix::libc::c_int);

/// Bytes this socket has sent that the peer's kernel has not acknowledged
/// (TCP); on a Unix stream socket, bytes the peer has not read yet.
pub fn unacked_bytes(stream: &impl std::os::fd::AsRawFd) -> usize {
    let mut n: nix::libc::c_int = 0;
    // SAFETY: the stream's descriptor is open for the call, and TIOCOUTQ
    // writes one c_int into `n`.
    unsafe { tiocoutq(stream.as_raw_fd(), &mut n) }.unwrap();
    n as usize
}
