//! The command line and configuration handling of the real binary.

use std::process::{Command, Output};

use crate::util::*;

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("LISTEN_FDS")
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap()
}

fn check(dir: &TestDir, text: &str) -> (Option<i32>, String) {
    let path = dir.write("check.toml", text);
    let out = run(&["--check-config", "--config", &path_str(&path)]);
    let msg =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), msg)
}

#[test]
fn valid_config_checks_ok() {
    let dir = TestDir::new("valid");
    let (code, msg) = check(
        &dir,
        "workers = 4\nlisten = [\"127.0.0.1:7000\", \"/run/x.sock\"]\n",
    );
    assert_eq!(code, Some(0), "{msg}");
    assert!(msg.contains("valid"), "{msg}");
}

#[test]
fn shipped_example_config_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/oneshotd.toml");
    let out = run(&["--check-config", "--config", path]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn syntax_error_names_file_line_and_column() {
    let dir = TestDir::new("syntax");
    let (code, msg) = check(&dir, "workers = 2\n\nmax_line_bytes = = 5\n");
    assert_eq!(code, Some(78), "{msg}");
    assert!(msg.contains("check.toml: 3:"), "{msg}");
}

#[test]
fn unknown_key_is_refused() {
    let dir = TestDir::new("unknown");
    let (code, msg) = check(&dir, "wrokers = 2\n");
    assert_eq!(code, Some(78), "{msg}");
    assert!(
        msg.contains("check.toml: 1:1: unknown field `wrokers`"),
        "{msg}"
    );
}

#[test]
fn out_of_range_names_key_and_range() {
    let dir = TestDir::new("range");
    for (text, expected) in [
        (
            "workers = 0",
            "workers = 0 is out of range (allowed 1..=1024)",
        ),
        (
            "workers = 5000",
            "workers = 5000 is out of range (allowed 1..=1024)",
        ),
        (
            "max_connections = -1",
            "max_connections = -1 is out of range (allowed 1..=1000000)",
        ),
        (
            "idle_timeout_ms = 1",
            "idle_timeout_ms = 1 is out of range (allowed 10..=86400000)",
        ),
    ] {
        let (code, msg) = check(&dir, text);
        assert_eq!(code, Some(78), "{msg}");
        assert!(msg.contains(expected), "{msg}");
        assert!(msg.contains("check.toml: 1: "), "{msg}");
    }
    let (code, msg) = check(&dir, "log_level = \"loud\"");
    assert_eq!(code, Some(78), "{msg}");
    assert!(msg.contains("1:13") && msg.contains("`info`"), "{msg}");
}

#[test]
fn missing_config_file_is_an_error() {
    let dir = TestDir::new("missing");
    let path = dir.join("nope.toml");
    for args in [
        vec!["--check-config", "--config", path.to_str().unwrap()],
        vec!["--config", path.to_str().unwrap()],
    ] {
        let out = run(&args);
        let msg = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{msg}");
        assert!(msg.contains("nope.toml: cannot read"), "{msg}");
    }
}

#[test]
fn bad_config_at_start_exits_78() {
    let dir = TestDir::new("badstart");
    let path = dir.write("bad.toml", "workers = 0\n");
    let out = run(&["--config", &path_str(&path)]);
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.toml: 1: workers = 0"));
}

#[test]
fn help_and_version() {
    let out = run(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("--config") && help.contains("--check-config"),
        "{help}"
    );
    let out = run(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

/// `examples/reverse.rs`, a daemon of its own on the library: its help,
/// version, messages and defaults are its own, never oneshotd's.
#[test]
fn a_daemon_built_on_the_library_is_its_own() {
    // cargo test builds the examples beside the binaries.
    let reverse = std::path::Path::new(BIN)
        .parent()
        .unwrap()
        .join("examples/reverse");
    let run = |args: &[&str]| {
        Command::new(&reverse)
            .args(args)
            .env_remove("LISTEN_FDS")
            .env_remove("NOTIFY_SOCKET")
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", reverse.display()))
    };
    let help = run(&["--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("reverse: each line comes back reversed"),
        "{help}"
    );
    assert!(help.contains("/etc/reverse.toml"), "{help}");
    assert!(
        !help.contains("oneshotd") && !help.contains("upper"),
        "{help}"
    );
    let version = run(&["--version"]);
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        "reverse 1.0.0"
    );
    let dir = TestDir::new("reverse");
    let bad = dir.write("bad.toml", "workers = 0\n");
    let out = run(&["--check-config", "--config", &path_str(&bad)]);
    assert_eq!(out.status.code(), Some(78));
    let message = String::from_utf8_lossy(&out.stderr);
    assert!(message.starts_with("reverse: "), "{message}");
    // Its default address, where the file says nothing.
    let quiet = dir.write("quiet.toml", "workers = 1\n");
    let mut daemon = Command::new(&reverse)
        .args(["--config", &path_str(&quiet)])
        .env_remove("LISTEN_FDS")
        .env_remove("NOTIFY_SOCKET")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Serving once it says it listens (or never, if it exits first).
    let log = std::io::BufReader::new(daemon.stderr.take().unwrap());
    let listening = std::io::BufRead::lines(log)
        .map_while(Result::ok)
        .find(|line| line.contains(" listening "))
        .expect("reverse exited without listening");
    assert!(listening.contains("127.0.0.1:7879"), "{listening}");
    let mut client = std::net::TcpStream::connect("127.0.0.1:7879").unwrap();
    client.set_read_timeout(Some(SOON)).unwrap();
    assert_eq!(roundtrip(&mut client, "olleh\n"), "hello\n");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(daemon.wait().unwrap().success());
}
