//! Per-connection sessions of a service built on the library, in-process:
//! one per connection, handed to every call, told of the close, and
//! carried across a handover to the next server — or the connection
//! closed, if its service cannot carry it.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oneshotd::config::{Config, ListenAddr};
use oneshotd::dispatcher::Server;
use oneshotd::framing::serve_lines;
use oneshotd::listeners::Listener;
use oneshotd::metrics::Closed;
use oneshotd::service::{ConnectionId, Input, Peer, Served, Stateful};

use crate::util::*;

/// Numbers its replies per connection: `N line`. The count is the
/// session; the closes it is told of are recorded.
struct Counter {
    name: &'static str,
    carries: bool,
    closed: Mutex<Vec<(u64, usize, Closed)>>,
}

struct Count {
    connection: ConnectionId,
    served: usize,
}

impl Counter {
    fn new(name: &'static str, carries: bool) -> Arc<Counter> {
        Arc::new(Counter {
            name,
            carries,
            closed: Mutex::new(Vec::new()),
        })
    }
}

impl Stateful for Counter {
    type Session = Count;

    fn open(&self, connection: ConnectionId, _peer: &Peer) -> Count {
        Count {
            connection,
            served: 0,
        }
    }

    fn serve(&self, count: &mut Count, input: Input<'_>, output: &mut Vec<u8>) -> Served {
        serve_lines(&input, output, b"ERR line too long\n", |line, output| {
            count.served += 1;
            output.extend_from_slice(format!("{} ", count.served).as_bytes());
            output.extend_from_slice(line);
            output.push(b'\n');
        })
    }

    fn request_timeout(&self, _count: &mut Count, output: &mut Vec<u8>) {
        output.extend_from_slice(b"ERR request timeout\n");
    }

    fn closed(&self, count: Count, why: Closed) {
        self.closed
            .lock()
            .unwrap()
            .push((count.connection.0, count.served, why));
    }

    fn save(&self, count: &Count, out: &mut Vec<u8>) -> bool {
        out.extend_from_slice(&(count.served as u64).to_le_bytes());
        self.carries
    }

    fn restore(&self, saved: &[u8], format: u32) -> Option<Count> {
        let served = u64::from_le_bytes(saved.try_into().ok()?);
        (format == 1).then_some(Count {
            connection: ConnectionId(0),
            served: served as usize,
        })
    }

    fn name(&self) -> &'static str {
        self.name
    }
}

/// The socket a restart would keep (systemd's socket unit), and a server
/// on it.
fn serve(service: &Arc<Counter>, socket: &std::net::TcpListener) -> Server {
    let config = Config {
        workers: 2,
        listen: vec![ListenAddr::Tcp(socket.local_addr().unwrap())],
        ..Config::default()
    };
    let listener = Listener::Tcp(socket.try_clone().unwrap());
    listener_nonblocking(&listener);
    Server::start(&config, vec![listener], Arc::clone(service)).unwrap()
}

fn listener_nonblocking(listener: &Listener) {
    if let Listener::Tcp(tcp) = listener {
        tcp.set_nonblocking(true).unwrap();
    }
}

fn line(reader: &mut BufReader<TcpStream>) -> String {
    let mut reply = String::new();
    reader.read_line(&mut reply).unwrap();
    reply
}

fn client(addr: SocketAddr) -> (TcpStream, BufReader<TcpStream>) {
    let stream = connect(addr);
    let reader = BufReader::new(stream.try_clone().unwrap());
    (stream, reader)
}

/// The state a handover wrote, as the fd the manager would hand back.
fn state_fd(bytes: &[u8]) -> OwnedFd {
    let fd =
        nix::sys::memfd::memfd_create("state", nix::sys::memfd::MFdFlags::MFD_CLOEXEC).unwrap();
    let mut file = std::fs::File::from(fd);
    file.write_all(bytes).unwrap();
    file.into()
}

#[test]
fn each_connection_has_its_session_and_its_close_is_told() {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let counter = Counter::new("counter", true);
    let server = serve(&counter, &socket);
    let addr = socket.local_addr().unwrap();
    let (mut a, mut a_replies) = client(addr);
    let (mut b, mut b_replies) = client(addr);
    a.write_all(b"one\ntwo\n").unwrap();
    assert_eq!(line(&mut a_replies), "1 one\n");
    assert_eq!(line(&mut a_replies), "2 two\n");
    b.write_all(b"first\n").unwrap();
    assert_eq!(line(&mut b_replies), "1 first\n");
    a.write_all(b"three\n").unwrap();
    assert_eq!(line(&mut a_replies), "3 three\n");

    a.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(line(&mut a_replies), "", "EOF after the replies");
    let deadline = std::time::Instant::now() + SOON;
    while counter.closed.lock().unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "closed() never called"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let closed = counter.closed.lock().unwrap().clone();
    assert_eq!(closed.len(), 1);
    assert_eq!((closed[0].1, closed[0].2), (3, Closed::ClientEof));
    drop(b);
    server.drain(Duration::from_secs(1));
}

#[test]
fn a_session_is_carried_to_the_next_server_across_a_handover() {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let before = Counter::new("counter", true);
    let server = serve(&before, &socket);
    let (mut stream, mut replies) = client(addr);
    stream.write_all(b"a\nb\n").unwrap();
    assert_eq!(line(&mut replies), "1 a\n");
    assert_eq!(line(&mut replies), "2 b\n");

    let handed = server.hand_over();
    assert_eq!(handed.sockets.len(), 1);
    assert!(
        before.closed.lock().unwrap().is_empty(),
        "not closed: handed over"
    );
    // Sent while no server serves it: waits in the socket.
    stream.write_all(b"c\n").unwrap();

    let after = Counter::new("counter", true);
    let server = serve(&after, &socket);
    let report = server.restore(handed.sockets, vec![state_fd(&handed.state)], true);
    assert_eq!((report.restored, report.closed), (1, 0));
    assert_eq!(line(&mut replies), "3 c\n", "the count went on");
    stream.write_all(b"d\n").unwrap();
    assert_eq!(line(&mut replies), "4 d\n");
    server.drain(Duration::from_secs(1));
}

#[test]
fn a_session_that_cannot_be_carried_closes_its_connection() {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let forgetful = Counter::new("counter", false);
    let server = serve(&forgetful, &socket);
    let (mut stream, mut replies) = client(addr);
    stream.write_all(b"a\n").unwrap();
    assert_eq!(line(&mut replies), "1 a\n");
    let handed = server.hand_over();
    assert!(handed.sockets.is_empty(), "not handed over");
    assert_eq!(line(&mut replies), "", "closed");
    let closed = forgetful.closed.lock().unwrap().clone();
    assert_eq!(closed.len(), 1);
    assert_eq!((closed[0].1, closed[0].2), (1, Closed::Handover));
}

#[test]
fn another_service_does_not_read_a_session_it_did_not_write() {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let server = serve(&Counter::new("counter", true), &socket);
    let (mut stream, mut replies) = client(addr);
    stream.write_all(b"a\n").unwrap();
    assert_eq!(line(&mut replies), "1 a\n");
    let handed = server.hand_over();

    let server = serve(&Counter::new("another", true), &socket);
    let report = server.restore(handed.sockets, vec![state_fd(&handed.state)], true);
    assert_eq!((report.restored, report.closed), (0, 1));
    assert_eq!(
        line(&mut replies),
        "",
        "closed, not served without its session"
    );
    server.drain(Duration::from_secs(1));
}

/// Opens and closes, counted; the first open panics if asked to. Its
/// sessions are `()`: a `Stateful` of one's own is still told of them.
struct Watcher {
    panic_once: std::sync::atomic::AtomicBool,
    opened: std::sync::atomic::AtomicUsize,
    closed: std::sync::atomic::AtomicUsize,
    greeting: &'static [u8],
}

impl Watcher {
    fn new(panic_once: bool, greeting: &'static [u8]) -> Arc<Watcher> {
        Arc::new(Watcher {
            panic_once: panic_once.into(),
            opened: 0.into(),
            closed: 0.into(),
            greeting,
        })
    }
}

impl Stateful for Watcher {
    type Session = ();

    fn open(&self, _connection: ConnectionId, _peer: &Peer) {
        if self
            .panic_once
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            panic!("open panics, once");
        }
        self.opened
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    fn serve(&self, _: &mut (), input: Input<'_>, output: &mut Vec<u8>) -> Served {
        serve_lines(&input, output, b"long\n", |line, output| {
            output.extend_from_slice(line);
            output.push(b'\n');
        })
    }

    fn greeting(&self, _: &mut (), output: &mut Vec<u8>) -> bool {
        output.extend_from_slice(self.greeting);
        false
    }

    fn request_timeout(&self, _: &mut (), _output: &mut Vec<u8>) {}

    fn closed(&self, _: (), _why: Closed) {
        self.closed
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

fn start_watcher(watcher: &Arc<Watcher>, config: Config) -> (Server, SocketAddr) {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    socket.set_nonblocking(true).unwrap();
    let addr = socket.local_addr().unwrap();
    let server = Server::start(&config, vec![Listener::Tcp(socket)], Arc::clone(watcher)).unwrap();
    (server, addr)
}

/// A panic in the service's open() costs its connection only: the server
/// goes on accepting.
#[test]
fn a_panic_while_opening_a_session_closes_only_that_connection() {
    let watcher = Watcher::new(true, b"");
    let (server, addr) = start_watcher(&watcher, Config::default());
    let (_first, mut first_replies) = client(addr);
    assert_eq!(line(&mut first_replies), "", "closed");
    let (mut second, mut second_replies) = client(addr);
    second.write_all(b"still\n").unwrap();
    assert_eq!(line(&mut second_replies), "still\n");
    drop(second);
    server.drain(Duration::from_secs(1));
    assert_eq!(watcher.opened.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// A `Stateful` whose sessions are `()` is still opened and told of the
/// close; behind a balancer its greeting goes out once the PROXY header
/// is read, before its first reply.
#[test]
fn a_greeting_behind_a_balancer_goes_out_after_the_header() {
    let watcher = Watcher::new(false, b"HELLO\n");
    let config = Config {
        proxy_protocol_from: oneshotd::proxy::sources::Sources::new(vec!["127.0.0.1/32"
            .parse()
            .unwrap()]),
        ..Config::default()
    };
    let (server, addr) = start_watcher(&watcher, config);
    let (mut stream, mut replies) = client(addr);
    stream
        .write_all(b"PROXY TCP4 192.0.2.1 192.0.2.2 1000 2000\r\nfirst\n")
        .unwrap();
    assert_eq!(line(&mut replies), "HELLO\n");
    assert_eq!(line(&mut replies), "first\n");
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(line(&mut replies), "");
    server.drain(Duration::from_secs(1));
    let counts = (
        watcher.opened.load(std::sync::atomic::Ordering::SeqCst),
        watcher.closed.load(std::sync::atomic::Ordering::SeqCst),
    );
    assert_eq!(counts, (1, 1));
}
