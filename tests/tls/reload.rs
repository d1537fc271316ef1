//! The certificate's files over the daemon's life: replaced and reloaded
//! on SIGHUP (certbot's way: symlinks swapped), a reload of files that do
//! not load keeping the old ones, and `--check-config` naming the file
//! at fault.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::sys::signal::Signal;

use super::*;

/// Points the symlink `link` at `target` in one step, as certbot does.
fn swap_link(link: &Path, target: &Path) {
    let tmp = link.with_extension("new");
    let _ = fs::remove_file(&tmp);
    symlink(target, &tmp).unwrap();
    fs::rename(&tmp, link).unwrap();
}

/// Sends SIGHUP, waits for the reload to end (READY=1) and returns the
/// STATUS line that says how it went.
fn reload(daemon: &mut Daemon) -> String {
    let from = daemon.notify.seen.len();
    daemon.signal(Signal::SIGHUP);
    daemon.expect_notify_from(from, |l| l == "RELOADING=1");
    daemon.expect_notify_from(from, |l| l == "READY=1");
    // The first STATUS after RELOADING=1 says how it went.
    let seen = &daemon.notify.seen[from..];
    seen.iter()
        .skip_while(|l| *l != "RELOADING=1")
        .find(|l| l.starts_with("STATUS="))
        .cloned()
        .unwrap_or_else(|| panic!("no STATUS in {seen:?}"))
}

/// What a new handshake shows: the served certificate's fingerprint,
/// after a checked exchange.
fn served_fingerprint(addr: SocketAddr, ca: &Path) -> String {
    let (replies, stderr) = python_batch(addr, ca, &[], b"which certificate?\n");
    assert_eq!(replies, b"WHICH CERTIFICATE?\n");
    reported(&stderr, "cert_sha256").expect("a fingerprint")
}

/// certbot's renewal: `live/` symlinks swapped to a new certificate (of
/// another kind, even), then SIGHUP. New handshakes get the new one; a
/// connection made before talks on with the old.
#[test]
fn a_reload_serves_the_new_certificate_while_old_connections_talk() {
    let pki = Pki::new("reload");
    let old = pki.server("old", Key::Ec, "/CN=localhost/O=old");
    let new = pki.server("new", Key::Rsa, "/CN=localhost/O=renewed");
    let live = pki.dir.join("live");
    fs::create_dir(&live).unwrap();
    let (chain, key) = (live.join("fullchain.pem"), live.join("privkey.pem"));
    swap_link(&chain, &old.pem);
    swap_link(&key, &old.key);
    let (mut daemon, addr, metrics) = spawn("tls-reload", &chain, &key, "");
    let (old_print, new_print) = (certs::fingerprint(&old.pem), certs::fingerprint(&new.pem));
    assert_ne!(old_print, new_print);
    assert_eq!(served_fingerprint(addr, &pki.ca), old_print);

    let mut established = python(addr, &pki.ca, &[]);
    expect_echo(&mut established, b"before the reload\n");
    swap_link(&chain, &new.pem);
    swap_link(&key, &new.key);
    let status = reload(&mut daemon);
    assert!(!status.contains("reload failed"), "{status}");

    assert_eq!(served_fingerprint(addr, &pki.ca), new_print);
    let mut s_client = s_client(addr, &pki.ca, &[]);
    expect_echo(&mut s_client, b"a new client\n");
    let done = s_client.finish();
    assert!(
        done.stderr
            .contains("Peer certificate: CN = localhost, O = renewed"),
        "{}",
        done.stderr
    );

    expect_echo(&mut established, b"after the reload\n");
    expect_echo(&mut established, &lines("still", 1000));
    let done = established.finish();
    assert!(done.status.success(), "{}", done.stderr);
    assert_eq!(reported(&done.stderr, "cert_sha256"), Some(old_print));
    assert_eq!(scrape(metrics)["oneshotd_reloads_total{result=\"ok\"}"], 1);
    daemon.stop();
}

/// A new certificate beside a key file that is garbage: the reload fails
/// (STATUS says so, naming the file), new handshakes still get the old
/// certificate; once the key is right, a reload takes both.
#[test]
fn a_bad_reload_keeps_the_old_certificate() {
    let pki = Pki::new("bad-reload");
    let old = pki.server("old", Key::Ec, "/CN=localhost/O=old");
    let new = pki.server("new", Key::Ec, "/CN=localhost/O=renewed");
    let (chain, key) = (pki.dir.join("in-use.pem"), pki.dir.join("in-use.key"));
    fs::copy(&old.pem, &chain).unwrap();
    fs::copy(&old.key, &key).unwrap();
    let (mut daemon, addr, metrics) = spawn("tls-bad-reload", &chain, &key, "");
    let old_print = certs::fingerprint(&old.pem);
    assert_eq!(served_fingerprint(addr, &pki.ca), old_print);

    fs::copy(&new.pem, &chain).unwrap();
    fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let status = reload(&mut daemon);
    assert!(
        status.starts_with("STATUS=reload failed") && status.contains(&path_str(&key)),
        "{status}"
    );
    assert_eq!(served_fingerprint(addr, &pki.ca), old_print);
    assert_eq!(
        scrape(metrics)["oneshotd_reloads_total{result=\"failed\"}"],
        1
    );

    fs::copy(&new.key, &key).unwrap();
    let status = reload(&mut daemon);
    assert!(!status.contains("reload failed"), "{status}");
    assert_eq!(
        served_fingerprint(addr, &pki.ca),
        certs::fingerprint(&new.pem)
    );
    daemon.stop();
}

/// `--check-config` with TLS files that do not load: exit 78 (EX_CONFIG)
/// and the message names the file; with good ones, exit 0.
#[test]
fn check_config_names_the_tls_file_at_fault() {
    let pki = Pki::new("check-config");
    let ec = pki.server("ec", Key::Ec, "/CN=localhost/O=ecdsa");
    let rsa = pki.server("rsa", Key::Rsa, "/CN=localhost/O=rsa");
    let not_pem = pki.dir.write("not-pem.pem", "this is no certificate\n");
    // A file of mode 000; but root reads a file whatever its mode, and a
    // directory is then what it cannot read as one.
    let unreadable = pki.dir.join("unreadable.pem");
    fs::copy(&ec.pem, &unreadable).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&unreadable, fs::Permissions::from_mode(0o000)).unwrap();
    }
    if fs::read(&unreadable).is_ok() {
        fs::remove_file(&unreadable).unwrap();
        fs::create_dir(&unreadable).unwrap();
    }
    let missing = pki.dir.join("missing.pem");
    let files = |cert: &Path, key: &Path| {
        format!(
            "tls_listen = [\"127.0.0.1:0\"]\ntls_certificate = \"{}\"\ntls_private_key = \"{}\"\n",
            cert.display(),
            key.display()
        )
    };
    let config_path = pki.dir.join("oneshotd.toml");
    let cases: Vec<(&str, String, PathBuf)> = vec![
        (
            "missing certificate",
            files(&missing, &ec.key),
            missing.clone(),
        ),
        ("missing key", files(&ec.pem, &missing), missing.clone()),
        (
            "unreadable certificate",
            files(&unreadable, &ec.key),
            unreadable.clone(),
        ),
        (
            "certificate not PEM",
            files(&not_pem, &ec.key),
            not_pem.clone(),
        ),
        ("key not PEM", files(&ec.pem, &not_pem), not_pem.clone()),
        (
            "key of another certificate",
            files(&ec.pem, &rsa.key),
            rsa.key.clone(),
        ),
        (
            "client CA not PEM",
            files(&ec.pem, &ec.key) + &format!("tls_client_ca = \"{}\"\n", not_pem.display()),
            not_pem.clone(),
        ),
        (
            "tls_listen without certificate or key",
            "tls_listen = [\"127.0.0.1:0\"]\n".to_owned(),
            config_path.clone(),
        ),
    ];
    let check = |text: &str| {
        fs::write(&config_path, text).unwrap();
        let mut command = Command::new(BIN);
        command
            .arg("--check-config")
            .arg("--config")
            .arg(&config_path);
        Tool::start(command, "oneshotd --check-config").finish()
    };
    for (what, text, at_fault) in cases {
        let done = check(&text);
        assert_eq!(done.status.code(), Some(78), "{what}: {}", done.stderr);
        assert!(
            done.stderr.contains(&path_str(&at_fault)),
            "{what}: the message does not name {}:\n{}",
            at_fault.display(),
            done.stderr
        );
        if what.starts_with("tls_listen") {
            assert!(done.stderr.contains("tls_certificate"), "{}", done.stderr);
        }
    }
    let key = pki.traditional_key(&rsa, Key::Rsa);
    for good in [files(&ec.pem, &ec.key), files(&rsa.pem, &key)] {
        let done = check(&good);
        assert_eq!(done.status.code(), Some(0), "{good}: {}", done.stderr);
    }
}

/// systemd passes a TLS listener (`oneshotd-tls.socket` enabled) and the
/// configuration names no certificate: a bad configuration, exit 78, and
/// the log says what is missing.
#[test]
fn a_tls_socket_without_a_certificate_is_a_bad_configuration() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut daemon = Daemon::builder("tls-socket-no-cert")
        .inherit_named(std::os::fd::AsRawFd::as_raw_fd(&listener), "tls")
        .launch();
    let status = daemon.wait_exit(SOON);
    assert_eq!(status.code(), Some(78), "{}", daemon.stderr());
    assert!(
        daemon.stderr().contains(
            "a socket named tls was passed, but tls_certificate and tls_private_key are not set"
        ),
        "{}",
        daemon.stderr()
    );
}
