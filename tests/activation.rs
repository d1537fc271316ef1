//! Socket activation with the real `systemd-socket-activate`.

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::util::*;

/// Connects, retrying while the activator is starting up.
fn when_up<S>(what: &str, mut connect: impl FnMut() -> std::io::Result<S>) -> S {
    let deadline = Instant::now() + SOON;
    loop {
        match connect() {
            Ok(stream) => return stream,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("connect {what}: {e}"),
        }
    }
}

fn connect_when_up(addr: SocketAddr) -> TcpStream {
    let stream = when_up(&addr.to_string(), || TcpStream::connect(addr));
    stream.set_read_timeout(Some(SOON)).unwrap();
    stream
}

fn unix_connect_when_up(path: &std::path::Path) -> UnixStream {
    let stream = when_up(&path.display().to_string(), || UnixStream::connect(path));
    stream.set_read_timeout(Some(SOON)).unwrap();
    stream
}

#[test]
fn serves_an_inherited_tcp_socket_and_a_unix_socket() {
    let sockets = TestDir::new("activation-sockets");
    let unix_path = sockets.join("activated.sock");
    let port = free_port();
    let tcp: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // `listen` names a different port: under activation it must be ignored.
    let ignored = free_port();
    let mut daemon = Daemon::builder("activation")
        .config(&format!("listen = [\"127.0.0.1:{ignored}\"]"))
        .activate(&[tcp.to_string(), path_str(&unix_path)])
        .spawn();

    // The daemon is exec'd on the first connection.
    let mut first = connect_when_up(tcp);
    first.write_all(b"activated over tcp\n").unwrap();
    first.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&first), b"ACTIVATED OVER TCP\n");
    daemon.expect_notify_from(0, |l| l == "READY=1");

    let mut unix = unix_connect_when_up(&unix_path);
    unix.write_all(b"activated over unix\n").unwrap();
    unix.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&unix), b"ACTIVATED OVER UNIX\n");

    let log = daemon.stderr();
    assert!(log.contains("socket activation"), "{log}");
    assert_eq!(log.matches(" listening ").count(), 2, "{log}");
    assert!(
        TcpStream::connect(("127.0.0.1", ignored)).is_err(),
        "the configured address must not be bound under activation"
    );
    daemon.stop();
}

#[test]
fn serves_an_inherited_ipv6_socket() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        panic!("this test needs IPv6 loopback");
    }
    let port = {
        let l = std::net::TcpListener::bind("[::1]:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr: SocketAddr = format!("[::1]:{port}").parse().unwrap();
    let mut daemon = Daemon::builder("activation-v6")
        .activate(&[addr.to_string()])
        .spawn();
    let mut client = connect_when_up(addr);
    client.write_all(b"six\n").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&client), b"SIX\n");
    daemon.stop();
}

#[test]
fn a_restart_loses_no_connection_attempt() {
    // The test plays systemd: it owns the listening socket for the whole
    // test and hands a copy to each daemon instance.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);

    let mut first = Daemon::builder("restart-1").inherit(fd).spawn();
    let mut client = connect(addr);
    assert_eq!(roundtrip(&mut client, "first\n"), "FIRST\n");
    drop(client);
    first.stop();
    assert!(
        first.stderr().contains("socket activation"),
        "{}",
        first.stderr()
    );

    // No daemon runs now; the connection waits in the socket's backlog.
    let mut queued = connect(addr);
    queued.write_all(b"queued meanwhile\n").unwrap();

    let mut second = Daemon::builder("restart-2").inherit(fd).spawn();
    queued.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&queued), b"QUEUED MEANWHILE\n");
    second.stop();
}

#[test]
fn a_connected_socket_is_refused_as_a_listener() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let connected = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&connected);
    for name in ["", "oneshotd.socket"] {
        let mut daemon = Daemon::builder("connected-as-listener")
            .inherit_named(fd, name)
            .launch();
        let status = daemon.wait_exit(SOON);
        assert!(!status.success(), "name {name:?}: {status:?}");
        let log = daemon.stderr();
        assert!(
            log.contains("a connected socket, not a listening one"),
            "{log}"
        );
    }
}
