//! TLS for the tests: a certificate made at run time with the `openssl`
//! command (no private key is ever committed), and a client built on
//! rustls, the same library the daemon uses, for tests that need many
//! handshakes from Rust; the tests of the protocol itself use clients
//! nobody here wrote (OpenSSL, GnuTLS).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use super::{Daemon, TestDir, SOON};

/// A self-signed ECDSA P-256 certificate for `localhost` and 127.0.0.1,
/// and its key (PKCS#8), written into `dir`.
pub fn self_signed_certificate(dir: &TestDir) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .arg("ec_paramgen_curve:P-256")
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        // A certificate of its own, not a CA: what clients verify it as.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(status.status.success(), "{status:?}");
    (cert, key)
}

/// The address of the daemon's first TLS listener, from its log.
pub fn tls_addr(daemon: &Daemon) -> SocketAddr {
    daemon.logged_addr("listening over TLS")
}

/// A TLS client that trusts `ca` (a PEM file).
pub fn client_config(ca: &Path) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Connects over TLS, sends `request`, reads until as many lines came back.
pub fn tls_roundtrip(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    request: &str,
) -> String {
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let connection = rustls::ClientConnection::new(Arc::clone(config), name).unwrap();
    let socket = TcpStream::connect(addr).unwrap();
    socket.set_read_timeout(Some(SOON)).unwrap();
    let mut stream = rustls::StreamOwned::new(connection, socket);
    stream.write_all(request.as_bytes()).unwrap();
    let lines = request.matches('\n').count();
    let mut reply = Vec::new();
    let mut chunk = [0u8; 4096];
    while reply.iter().filter(|&&b| b == b'\n').count() < lines {
        let n = stream.read(&mut chunk).expect("TLS reply");
        assert!(n > 0, "closed after {reply:?}");
        reply.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8(reply).unwrap()
}
