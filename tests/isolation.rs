//! A panicking service closes one connection; a request stuck in the
//! service holds up only its own connection. The daemon carries on.

use std::io::Write;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oneshotd::config::{Config, ListenAddr};
use oneshotd::dispatcher::Server;
use oneshotd::listeners;
use oneshotd::service::{Input, Served, Service};
use oneshotd::upper::Upper;

use crate::util::*;

/// "upper", except that the line `panic` makes it panic.
struct Fragile;

impl Service for Fragile {
    fn serve(&self, input: Input<'_>, output: &mut Vec<u8>) -> Served {
        if input.bytes.starts_with(b"panic\n") {
            panic!("magic line on connection {}", input.connection);
        }
        Upper.serve(input, output)
    }

    fn request_timeout(&self, output: &mut Vec<u8>) {
        Upper.request_timeout(output)
    }
}

/// "upper", except that its timeout reply panics: a callback the
/// housekeeper makes, not a worker.
struct PanicsOnTimeout;

impl Service for PanicsOnTimeout {
    fn serve(&self, input: Input<'_>, output: &mut Vec<u8>) -> Served {
        Upper.serve(input, output)
    }

    fn request_timeout(&self, _: &mut Vec<u8>) {
        panic!("a timeout reply");
    }
}

/// Starts a server for `service` on an ephemeral loopback port.
fn start(workers: usize, service: Arc<dyn Service>) -> (Server, std::net::SocketAddr) {
    start_with(
        Config {
            workers,
            ..Config::default()
        },
        service,
    )
}

fn start_with(config: Config, service: Arc<dyn Service>) -> (Server, std::net::SocketAddr) {
    let config = Config {
        listen: vec![ListenAddr::Tcp("127.0.0.1:0".parse().unwrap())],
        ..config
    };
    let server = Server::start(&config, listeners::bind(&config.listen).unwrap(), service).unwrap();
    let addr = server.listeners().next().unwrap().tcp_addr().unwrap();
    (server, addr)
}

#[test]
fn a_panic_closes_only_its_connection() {
    let (server, addr) = start(2, Arc::new(Fragile));

    let mut bystanders: Vec<_> = (0..4).map(|_| connect(addr)).collect();
    for client in &mut bystanders {
        assert_eq!(roundtrip(client, "before\n"), "BEFORE\n");
    }
    // More panics than workers: each must be survived by its worker.
    for _ in 0..5 {
        let mut victim = connect(addr);
        assert_eq!(roundtrip(&mut victim, "fine\n"), "FINE\n");
        victim.write_all(b"panic\n").unwrap();
        assert_eq!(
            read_to_end(&victim),
            b"",
            "the panicking connection is closed"
        );
    }
    for client in &mut bystanders {
        assert_eq!(roundtrip(client, "after\n"), "AFTER\n");
    }
    let status = server.status();
    assert_eq!(status.workers, 2);
    assert_eq!(status.connections, 4);
    assert_eq!(server.drain(Duration::from_secs(1)).abandoned, 0);
}

/// A panic in the timeout reply closes that connection, and the thread
/// that enforces timeouts carries on: the next slow request still times
/// out, and everyone else is served.
#[test]
fn a_panic_in_the_timeout_reply_closes_only_its_connection() {
    let (server, addr) = start_with(
        Config {
            workers: 2,
            request_timeout: Duration::from_millis(200),
            ..Config::default()
        },
        Arc::new(PanicsOnTimeout),
    );
    let mut bystander = connect(addr);
    assert_eq!(roundtrip(&mut bystander, "before\n"), "BEFORE\n");
    for round in 0..3 {
        let mut victim = connect(addr);
        victim.write_all(b"never finished").unwrap();
        let started = Instant::now();
        let mut rest = Vec::new();
        match std::io::Read::read_to_end(&mut victim, &mut rest) {
            Ok(_) => assert_eq!(rest, b"", "round {round}: nothing is sent"),
            Err(e) => assert_eq!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset,
                "round {round}"
            ),
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "round {round}: closed by its timeout, not by the test's"
        );
        assert_eq!(roundtrip(&mut bystander, "during\n"), "DURING\n");
    }
    assert_eq!(server.status().connections, 1);
    assert_eq!(server.drain(Duration::from_secs(1)).abandoned, 0);
}

/// "upper", except that the line `block` holds its worker until the test
/// releases it.
struct Blocking {
    entered: Mutex<Sender<()>>,
    release: Mutex<Receiver<()>>,
}

impl Service for Blocking {
    fn serve(&self, input: Input<'_>, output: &mut Vec<u8>) -> Served {
        if input.bytes.starts_with(b"block\n") {
            self.entered.lock().unwrap().send(()).unwrap();
            let released = self.release.lock().unwrap().recv_timeout(SOON);
            assert!(released.is_ok(), "the test never released the request");
        }
        Upper.serve(input, output)
    }

    fn request_timeout(&self, output: &mut Vec<u8>) {
        Upper.request_timeout(output)
    }
}

/// Workers take turns waiting on the epoll set (see `dispatcher/leader.rs`);
/// a worker stuck in a request must not keep the others from serving, both
/// connections that already exist and new ones.
#[test]
fn a_stuck_request_holds_up_only_its_connection() {
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let service = Blocking {
        entered: Mutex::new(entered_tx),
        release: Mutex::new(release_rx),
    };
    let (server, addr) = start(2, Arc::new(service));
    let mut bystanders: Vec<_> = (0..8).map(|_| connect(addr)).collect();
    for client in &mut bystanders {
        assert_eq!(roundtrip(client, "before\n"), "BEFORE\n");
    }

    let mut stuck = connect(addr);
    stuck.write_all(b"block\n").unwrap();
    entered
        .recv_timeout(SOON)
        .expect("the request reached the service");
    // One worker is now held; the other serves everyone else, repeatedly.
    let start = Instant::now();
    for round in 0..20 {
        for client in &mut bystanders {
            assert_eq!(roundtrip(client, "during\n"), "DURING\n", "round {round}");
        }
        let mut newcomer = connect(addr);
        assert_eq!(roundtrip(&mut newcomer, "new\n"), "NEW\n");
    }
    eprintln!(
        "stuck request: 180 round trips of others in {:?}",
        start.elapsed()
    );
    release.send(()).unwrap();
    let mut reply = [0u8; 6];
    std::io::Read::read_exact(&mut stuck, &mut reply).unwrap();
    assert_eq!(&reply, b"BLOCK\n");
    assert_eq!(server.drain(Duration::from_secs(1)).abandoned, 0);
}
