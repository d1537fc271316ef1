//! A panicking service closes one connection; the daemon carries on.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use oneshotd::config::{Config, ListenAddr};
use oneshotd::dispatcher::Server;
use oneshotd::listeners;
use oneshotd::service::{ConnectionId, Input, Served, Service};
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

    fn request_timeout(&self, connection: ConnectionId, output: &mut Vec<u8>) {
        Upper.request_timeout(connection, output)
    }
}

#[test]
fn a_panic_closes_only_its_connection() {
    let config = Config {
        workers: 2,
        listen: vec![ListenAddr::Tcp("127.0.0.1:0".parse().unwrap())],
        ..Config::default()
    };
    let server = Server::start(
        &config,
        listeners::bind(&config.listen).unwrap(),
        Arc::new(Fragile),
    )
    .unwrap();
    let addr = server.listeners().next().unwrap().tcp_addr().unwrap();

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
