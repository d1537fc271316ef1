//! `examples/resp.rs`, a Redis-protocol server on the library, driven by
//! Redis's own client (`redis-cli`, from Debian's redis-tools, which
//! tests/install-deps.sh installs) and by hand for what a client never
//! sends; its per-connection session (the selected database, the client's
//! name) carried across a restart of the real daemon.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;

use nix::sys::signal::Signal;

use crate::util::*;

fn redis_cli(addr: SocketAddr, args: &[&str], stdin: Option<&str>) -> String {
    let mut command = Command::new("redis-cli");
    command
        .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = command
        .spawn()
        .expect("redis-cli (redis-tools; tests/install-deps.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.unwrap_or("").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn resp(name: &str, config: &str) -> (Daemon, SocketAddr) {
    let daemon = Daemon::builder(name).example("resp").config(config).spawn();
    let addr = daemon.addr();
    (daemon, addr)
}

/// Reads one RESP reply line (simple string, error, integer or bulk
/// header).
fn reply_line(reader: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    line
}

#[test]
fn redis_cli_gets_what_redis_would_answer() {
    let (mut daemon, addr) = resp("resp-cli", "");
    // redis-cli prints a reply per line, and an empty line after an error.
    let cli = |args: &[&str]| redis_cli(addr, args, None);
    assert_eq!(cli(&["PING"]), "PONG\n");
    assert_eq!(cli(&["ECHO", "hi there"]), "hi there\n");
    assert_eq!(cli(&["SET", "greeting", "hello"]), "OK\n");
    assert_eq!(cli(&["GET", "greeting"]), "hello\n");
    assert_eq!(cli(&["GET", "nothing"]), "\n");
    assert_eq!(cli(&["INCR", "n"]), "1\n");
    assert_eq!(cli(&["DECR", "n"]), "0\n");
    assert_eq!(cli(&["MSET", "a", "1", "b", "2"]), "OK\n");
    assert_eq!(cli(&["MGET", "a", "b", "c"]), "1\n2\n\n");
    assert_eq!(cli(&["EXISTS", "a", "b", "c"]), "2\n");
    assert_eq!(cli(&["DEL", "a", "c"]), "1\n");
    assert_eq!(cli(&["DBSIZE"]), "3\n");
    // More arguments than a command holds in place: none is lost.
    let mset: Vec<String> = (0..10)
        .flat_map(|i| [format!("k{i}"), format!("v{i}")])
        .collect();
    let mut args = vec!["MSET"];
    args.extend(mset.iter().map(String::as_str));
    assert_eq!(cli(&args), "OK\n");
    let keys: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
    let mut args = vec!["MGET"];
    args.extend(keys.iter().map(String::as_str));
    let values: String = (0..10).map(|i| format!("v{i}\n")).collect();
    assert_eq!(cli(&args), values);
    args[0] = "DEL";
    assert_eq!(cli(&args), "10\n");
    assert_eq!(
        cli(&["INCR", "greeting"]),
        "ERR value is not an integer or out of range\n\n"
    );
    assert_eq!(cli(&["SELECT", "16"]), "ERR DB index is out of range\n\n");
    // Integers as Redis reads them: one spelling each.
    for odd in ["+5", "007", "-0", "5 ", ""] {
        assert_eq!(cli(&["SET", "odd", odd]), "OK\n");
        assert_eq!(
            cli(&["INCR", "odd"]),
            "ERR value is not an integer or out of range\n\n",
            "INCR of {odd:?}"
        );
    }
    assert_eq!(
        cli(&["SELECT", "03"]),
        "ERR value is not an integer or out of range\n\n"
    );
    assert_eq!(cli(&["SET", "n", "-7"]), "OK\n");
    assert_eq!(cli(&["INCR", "n"]), "-6\n");
    assert_eq!(
        cli(&["CLIENT", "SETNAME", "tab\there"]),
        "ERR Client names cannot contain spaces, newlines or special characters.\n\n"
    );
    assert_eq!(
        cli(&["CLIENT", "SETNAME"]),
        "ERR wrong number of arguments for 'client|setname' command\n\n"
    );
    assert_eq!(
        cli(&["GET"]),
        "ERR wrong number of arguments for 'get' command\n\n"
    );
    assert_eq!(
        cli(&["HSET", "h", "f", "v"]),
        "ERR unknown command 'HSET', with args beginning with: 'h' 'f' 'v' \n\n"
    );
    // One connection, several commands: the session is its own.
    let session = redis_cli(
        addr,
        &[],
        Some("SELECT 3\nSET k in-three\nGET k\nCLIENT SETNAME worker-7\nCLIENT GETNAME\nDBSIZE\n"),
    );
    assert_eq!(session, "OK\nOK\nin-three\nOK\nworker-7\n1\n");
    assert_eq!(cli(&["GET", "k"]), "\n", "database 0 has no k");
    assert_eq!(
        cli(&["CLIENT", "GETNAME"]),
        "\n",
        "names are per connection"
    );
    // Expiry.
    assert_eq!(cli(&["SET", "brief", "x", "PX", "100"]), "OK\n");
    assert_eq!(cli(&["GET", "brief"]), "x\n");
    daemon.wait_until("the key to expire", SOON, |_| {
        cli(&["GET", "brief"]) == "\n"
    });
    assert_eq!(cli(&["FLUSHDB"]), "OK\n");
    assert_eq!(cli(&["DBSIZE"]), "0\n");
    daemon.stop();
}

/// A malformed frame or a bulk past the limit gets Redis's protocol error
/// and a close; another client is not disturbed.
#[test]
fn bad_input_gets_a_protocol_error_and_a_close() {
    let (mut daemon, addr) = resp("resp-bad", "max_line_bytes = 1024");
    for (what, bytes, error) in [
        (
            "a negative bulk length",
            &b"*1\r\n$-5\r\n"[..],
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            "a bulk past the limit",
            b"*2\r\n$3\r\nGET\r\n$5000\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            "a bulk that is not one",
            b"*1\r\n:12\r\n",
            "-ERR Protocol error: expected '$', got ':'\r\n",
        ),
        (
            "a bad count",
            b"*x\r\n",
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
    ] {
        let client = connect(addr);
        (&client).write_all(bytes).unwrap();
        let mut reply = Vec::new();
        let _ = (&client).read_to_end(&mut reply);
        assert_eq!(String::from_utf8_lossy(&reply), error, "{what}");
    }
    assert_eq!(redis_cli(addr, &["PING"], None), "PONG\n");
    daemon.stop();
}

/// The session travels with the connection through a restart: a client
/// that ran SELECT 3 still writes to database 3 after it, under the name
/// it gave.
#[test]
fn a_client_s_database_and_name_survive_a_restart() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let start = |name: &str, store| {
        Daemon::builder(name)
            .example("resp")
            .inherit_named(listener.as_raw_fd(), "resp.socket")
            .with_fd_store(store)
            .spawn()
    };
    let mut old = start("resp-restart-old", Vec::new());
    let client = connect(addr);
    let mut replies = BufReader::new(client.try_clone().unwrap());
    (&client)
        .write_all(b"*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n*3\r\n$6\r\nCLIENT\r\n$7\r\nSETNAME\r\n$6\r\nkeeper\r\n")
        .unwrap();
    assert_eq!(reply_line(&mut replies), "+OK\r\n");
    assert_eq!(reply_line(&mut replies), "+OK\r\n");

    let from = old.notify.seen.len();
    old.signal(Signal::SIGUSR2);
    old.expect_notify_from(from, |l| l == "BARRIER=1");
    assert!(old.wait_exit(SOON).success());
    let store = old.notify.take_stored();
    let new = start("resp-restart-new", store);

    (&client)
        .write_all(
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nthree\r\n*2\r\n$6\r\nCLIENT\r\n$7\r\nGETNAME\r\n",
        )
        .unwrap();
    assert_eq!(reply_line(&mut replies), "+OK\r\n");
    assert_eq!(reply_line(&mut replies), "$6\r\n");
    assert_eq!(reply_line(&mut replies), "keeper\r\n");
    // Database 0 has no k; database 3 has it.
    assert_eq!(redis_cli(addr, &["GET", "k"], None), "\n");
    assert_eq!(
        redis_cli(addr, &[], Some("SELECT 3\nGET k\n")),
        "OK\nthree\n"
    );
    drop(new);
}

/// A command whose value arrives in many pieces is served once whole (the
/// frame waits, its bulk skipped by its length each time).
#[test]
fn a_value_in_many_pieces_is_served_once_whole() {
    let (mut daemon, addr) = resp("resp-pieces", "");
    let value = "v".repeat(3000);
    let command = format!(
        "*3\r\n$3\r\nSET\r\n$4\r\nlong\r\n${}\r\n{value}\r\n",
        value.len()
    );
    let mut client = connect(addr);
    for piece in command.as_bytes().chunks(7) {
        client.write_all(piece).unwrap();
    }
    let mut replies = BufReader::new(client.try_clone().unwrap());
    assert_eq!(reply_line(&mut replies), "+OK\r\n");
    assert_eq!(
        redis_cli(addr, &["GET", "long"], None),
        format!("{value}\n")
    );
    daemon.stop();
}

/// Redis's own benchmark runs against it: every request answered, none an
/// error (the figures are bench/resp.sh's business, not a test's).
#[test]
fn redis_benchmark_runs_against_it() {
    let (mut daemon, addr) = resp("resp-benchmark", "workers = 2");
    let out = Command::new("redis-benchmark")
        .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args([
            "-t",
            "ping,set,get,incr,mset",
            "-n",
            "100000",
            "-c",
            "50",
            "-P",
            "16",
            // Error replies, if any, printed on stdout.
            "-e",
            "--csv",
        ])
        .output()
        .expect("redis-benchmark (redis-tools; tests/install-deps.sh installs it)");
    let csv = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{csv}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!csv.contains("Error from server"), "{csv}");
    for test in ["PING_INLINE", "PING_MBULK", "SET", "GET", "INCR", "MSET"] {
        assert!(
            csv.lines().any(|l| l.starts_with(&format!("\"{test}"))),
            "no {test} result in:\n{csv}"
        );
    }
    assert_eq!(
        redis_cli(addr, &["GET", "counter:__rand_int__"], None),
        "100000\n"
    );
    daemon.stop();
}
