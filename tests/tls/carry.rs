//! A restart keeps established TLS connections: each one's session (its
//! keys, sequence numbers, a record begun) crosses to the next instance
//! with its socket, through the test's fd store, and the same TLS session
//! carries on there. The clients are OpenSSL's: `s_client` for each TLS
//! 1.3 suite (its `k` and `K` commands send real KeyUpdates, plain and
//! asking for one back) and Python's `ssl` for TLS 1.2.

use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Command;

use nix::sys::signal::Signal;

use super::certs::{Key, Pki};
use super::clients::*;
use crate::util::*;

/// The socket unit of the TLS listener, which every instance inherits
/// (named `tls`), and the certificate it serves.
struct Unit {
    listener: TcpListener,
    config: String,
}

impl Unit {
    fn start(&self, name: &str, store: Vec<(String, OwnedFd)>) -> Daemon {
        Daemon::builder(name)
            .config(&self.config)
            .inherit_named(self.listener.as_raw_fd(), "tls")
            .with_fd_store(store)
            .spawn()
    }

    /// SIGUSR2, then the store once the old instance has exited 0.
    fn hand_over(&self, old: &mut Daemon) -> Vec<(String, OwnedFd)> {
        let from = old.notify.seen.len();
        old.signal(Signal::SIGUSR2);
        old.expect_notify_from(from, |l| l == "BARRIER=1");
        let status = old.wait_exit(SOON);
        assert!(status.success(), "{status:?}\n{}", old.stderr());
        old.notify.take_stored()
    }
}

/// `s_client` over TLS 1.3 with `suite`, its commands on: a line `k` sends
/// a KeyUpdate, `K` one that asks for one back.
///
/// s_client takes a command only from a read of its stdin that starts with
/// it, and drops the rest of that read: the line after it must come in a
/// read of its own.
fn key_update(client: &Tool, command: &[u8]) {
    client.send(command);
    std::thread::sleep(std::time::Duration::from_millis(100)); // pacing, not a wait
}

fn s_client_13(unit: &Unit, ca: &std::path::Path, suite: &str) -> Tool {
    let mut command = Command::new("openssl");
    command
        .args(["s_client", "-brief", "-verify_return_error", "-tls1_3"])
        .args(["-ciphersuites", suite, "-servername", "localhost"])
        .arg("-connect")
        .arg(unit.listener.local_addr().unwrap().to_string())
        .arg("-CAfile")
        .arg(ca);
    Tool::start(command, suite)
}

#[test]
fn established_tls_sessions_carry_on_across_two_restarts() {
    let pki = Pki::new("carry");
    let cert = pki.server("server", Key::Ec, "/CN=localhost/O=carry");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let unit = Unit {
        config: format!(
            "tls_certificate = \"{}\"\ntls_private_key = \"{}\"\nworkers = 2",
            cert.pem.display(),
            cert.key.display()
        ),
        listener,
    };
    let addr = unit.listener.local_addr().unwrap();
    let mut first = unit.start("carry-1", Vec::new());

    let suites13 = [
        "TLS_AES_128_GCM_SHA256",
        "TLS_AES_256_GCM_SHA384",
        "TLS_CHACHA20_POLY1305_SHA256",
    ];
    let suites12 = [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
    ];
    let mut clients: Vec<(String, Tool, bool)> = suites13
        .iter()
        .map(|suite| (suite.to_string(), s_client_13(&unit, &pki.ca, suite), true))
        .chain(suites12.iter().map(|suite| {
            let client = python(addr, &pki.ca, &["--version", "1.2", "--ciphers", suite]);
            (suite.to_string(), client, false)
        }))
        .collect();
    // Each has done its handshake and said something, and sends half a
    // line before the restart.
    for (suite, client, _) in &mut clients {
        expect_echo(client, format!("{suite} before\n").as_bytes());
        client.send(b"first half, ");
    }
    first.expect_notify_from(0, |l| l.contains("connections=5"));

    let store = unit.hand_over(&mut first);
    let mut second = unit.start("carry-2", store);
    assert!(
        second.stderr().contains("restored=5")
            || second.notify.seen.iter().any(|l| l.contains("restored=5")),
        "{:?}\n{}",
        second.notify.seen,
        second.stderr()
    );
    for (suite, client, keyupdates) in &mut clients {
        client.send(b"second half\n");
        assert_eq!(client.read(24), b"FIRST HALF, SECOND HALF\n", "{suite}");
        expect_echo(client, &lines(suite, 10_000));
        if *keyupdates {
            // A KeyUpdate of the client's, then one that asks for ours.
            key_update(client, b"k\n");
            expect_echo(client, b"after a key update\n");
            key_update(client, b"K\n");
            expect_echo(client, b"after an update requested\n");
        }
    }

    let store = unit.hand_over(&mut second);
    let mut third = unit.start("carry-3", store);
    for (suite, client, keyupdates) in &mut clients {
        expect_echo(client, &lines(&format!("{suite} again"), 1_000));
        if *keyupdates {
            key_update(client, b"K\n");
            expect_echo(client, b"and after a third instance's update\n");
        }
    }
    for (suite, client, _) in clients {
        let done = client.finish();
        assert!(
            done.status.success()
                && !done.stderr.contains("error")
                && !done.stderr.contains("alert"),
            "{suite}: {}\n{}",
            done.status,
            done.stderr
        );
    }
    third.stop();
}

/// A TLS record is used at most once. Instance B restores a connection and
/// is killed right after: the manager forgot the record before B served a
/// byte, so instance C starts without it, and the client sees its
/// connection end, never a byte encrypted twice under one nonce. And a
/// record from a state file that is not sealed (so something may have
/// written to it) is not trusted: its connection is closed, not resumed.
#[test]
fn a_tls_record_is_never_used_twice_nor_from_an_unsealed_file() {
    let pki = Pki::new("once");
    let cert = pki.server("server", Key::Ec, "/CN=localhost/O=once");
    let unit = Unit {
        config: format!(
            "tls_certificate = \"{}\"\ntls_private_key = \"{}\"\nworkers = 1",
            cert.pem.display(),
            cert.key.display()
        ),
        listener: TcpListener::bind("127.0.0.1:0").unwrap(),
    };
    let addr = unit.listener.local_addr().unwrap();
    let mut a = unit.start("once-a", Vec::new());
    let mut client = python(addr, &pki.ca, &["--version", "1.3"]);
    expect_echo(&mut client, b"before\n");
    a.expect_notify_from(0, |l| l.contains("connections=1"));
    let store = unit.hand_over(&mut a);

    let mut b = unit.start("once-b", store);
    assert!(
        b.notify.stored.is_empty(),
        "B started with the record still stored"
    );
    b.signal(Signal::SIGKILL);
    b.wait_exit(SOON);
    let mut c = unit.start("once-c", b.notify.take_stored());
    assert!(
        !c.notify.seen.iter().any(|l| l.contains("restored=")),
        "{:?}",
        c.notify.seen
    );
    let done = client.finish();
    assert!(done.stdout.is_empty(), "served twice: {:?}", done.stdout);
    assert!(
        !done.stderr.contains("decrypt") && !done.stderr.contains("bad_record_mac"),
        "{}",
        done.stderr
    );

    // An unsealed copy of a state file: the TLS connection it describes is
    // closed, with the reason in the log.
    let mut client = python(addr, &pki.ca, &["--version", "1.2"]);
    expect_echo(&mut client, b"before\n");
    c.expect_notify_from(0, |l| l.contains("connections=1"));
    let mut store = unit.hand_over(&mut c);
    let at = store.iter().position(|(n, _)| n == "state").unwrap();
    let mut bytes = Vec::new();
    let mut file = std::fs::File::from(store.remove(at).1);
    std::io::Seek::rewind(&mut file).unwrap();
    std::io::Read::read_to_end(&mut file, &mut bytes).unwrap();
    let copy =
        nix::sys::memfd::memfd_create("unsealed", nix::sys::memfd::MFdFlags::empty()).unwrap();
    std::io::Write::write_all(&mut std::fs::File::from(copy.try_clone().unwrap()), &bytes).unwrap();
    store.push(("state".to_owned(), copy));
    let mut d = unit.start("once-d", store);
    let done = client.finish();
    assert!(done.stdout.is_empty(), "{:?}", done.stdout);
    assert!(
        d.stderr().contains("cannot be proven unused"),
        "{}",
        d.stderr()
    );
    // Closed, it holds no place in the table (the drain would wait for it).
    d.expect_notify_from(0, |l| {
        l.starts_with("STATUS=serving") && l.contains("connections=0")
    });
    d.stop();
}

/// A daemon of one's own on the library keeps its sessions over TLS too:
/// Redis's own client, over TLS to `examples/resp.rs`, keeps the database
/// it selected and its name through a restart, on the same TLS session.
#[test]
fn redis_cli_over_tls_keeps_its_database_and_name_across_a_restart() {
    let pki = Pki::new("resp-tls");
    let cert = pki.server("server", Key::Ec, "/CN=localhost/O=resp");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let config = format!(
        "tls_certificate = \"{}\"\ntls_private_key = \"{}\"",
        cert.pem.display(),
        cert.key.display()
    );
    let start = |name: &str, store| {
        Daemon::builder(name)
            .example("resp")
            .config(&config)
            .inherit_named(listener.as_raw_fd(), "tls")
            .with_fd_store(store)
            .spawn()
    };
    let redis_cli = || {
        let mut command = Command::new("redis-cli");
        command
            .args(["--tls", "--sni", "localhost", "--cacert"])
            .arg(&pki.ca)
            .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()]);
        command
    };
    let mut old = start("resp-tls-old", Vec::new());
    let mut client = Tool::start(redis_cli(), "redis-cli --tls");
    client.send(b"SELECT 3\nCLIENT SETNAME keeper\n");
    assert_eq!(client.read(6), b"OK\nOK\n");
    let from = old.notify.seen.len();
    old.signal(Signal::SIGUSR2);
    old.expect_notify_from(from, |l| l == "BARRIER=1");
    assert!(old.wait_exit(SOON).success(), "{}", old.stderr());
    let mut new = start("resp-tls-new", old.notify.take_stored());
    client.send(b"SET k three\nCLIENT GETNAME\n");
    assert_eq!(client.read(10), b"OK\nkeeper\n");
    let done = client.finish();
    assert!(done.status.success(), "{}", done.stderr);
    // Database 3 has k, database 0 does not: the SELECT crossed.
    let check = Tool::start(redis_cli(), "redis-cli --tls");
    check.send(b"GET k\nSELECT 3\nGET k\n");
    assert_eq!(check.finish().stdout, b"\nOK\nthree\n");
    new.stop();
}
