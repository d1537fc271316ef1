//! Certificates made at run time with the `openssl` command, in the test's
//! own directory (no private key is ever committed): CAs, server
//! certificates for `localhost` / `127.0.0.1`, client certificates, and
//! keys in each encoding a server is given (PKCS#8, SEC1, PKCS#1).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::clients::Tool;
use crate::util::*;

/// The kind of key a certificate is made with.
#[derive(Clone, Copy, Debug)]
pub enum Key {
    /// ECDSA on P-256.
    Ec,
    /// RSA, 2048 bits.
    Rsa,
}

/// A certificate and its key (PKCS#8, as `openssl req` writes it).
#[derive(Clone, Debug)]
pub struct Cert {
    pub pem: PathBuf,
    pub key: PathBuf,
}

const SERVER_EXT: &str = "subjectAltName=DNS:localhost,IP:127.0.0.1\n\
    basicConstraints=critical,CA:FALSE\n\
    keyUsage=critical,digitalSignature,keyEncipherment\n\
    extendedKeyUsage=serverAuth\n";
const CLIENT_EXT: &str = "basicConstraints=critical,CA:FALSE\n\
    keyUsage=critical,digitalSignature\n\
    extendedKeyUsage=clientAuth\n";

/// A test's certificates: a CA (`ca`, ECDSA) and what it and others sign.
pub struct Pki {
    pub dir: TestDir,
    /// The server CA's certificate, which clients trust.
    pub ca: PathBuf,
}

/// Runs `openssl args...` in `dir`; panics with its output on failure.
pub fn openssl(dir: &Path, args: &[&str]) -> String {
    let mut command = Command::new("openssl");
    command.args(args).current_dir(dir);
    let done = Tool::start(command, "openssl").finish();
    assert!(
        done.status.success(),
        "openssl {args:?}: {}\n{}",
        done.status,
        done.stderr
    );
    String::from_utf8(done.stdout).unwrap()
}

fn key_args(key: Key) -> &'static [&'static str] {
    match key {
        Key::Ec => &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        Key::Rsa => &["-newkey", "rsa:2048"],
    }
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let dir = TestDir::new(&format!("pki-{name}"));
        dir.write("server.ext", SERVER_EXT);
        dir.write("client.ext", CLIENT_EXT);
        let pki = Pki {
            ca: dir.join("ca.pem"),
            dir,
        };
        pki.new_ca("ca", "/CN=oneshotd test CA");
        pki
    }

    fn path(&self, name: &str) -> String {
        path_str(&self.dir.join(name))
    }

    /// A self-signed CA, `NAME.pem` and `NAME.key`.
    pub fn new_ca(&self, name: &str, subject: &str) -> PathBuf {
        let (pem, key) = (
            self.path(&format!("{name}.pem")),
            self.path(&format!("{name}.key")),
        );
        let mut args = vec!["req", "-x509", "-nodes", "-days", "2", "-subj", subject];
        args.extend(key_args(Key::Ec));
        args.extend(["-keyout", &key, "-out", &pem]);
        openssl(&self.dir.path, &args);
        PathBuf::from(pem)
    }

    /// A certificate for `subject` signed by the CA `ca`: a server's
    /// (`localhost`, `127.0.0.1`) or, with `client`, a client's.
    pub fn issue(&self, name: &str, key: Key, subject: &str, ca: &str, client: bool) -> Cert {
        let (pem, key_path, csr) = (
            self.path(&format!("{name}.pem")),
            self.path(&format!("{name}.key")),
            self.path(&format!("{name}.csr")),
        );
        let mut args = vec!["req", "-nodes", "-subj", subject];
        args.extend(key_args(key));
        args.extend(["-keyout", &key_path, "-out", &csr]);
        openssl(&self.dir.path, &args);
        let (ca_pem, ca_key) = (
            self.path(&format!("{ca}.pem")),
            self.path(&format!("{ca}.key")),
        );
        let ext = if client { "client.ext" } else { "server.ext" };
        // A serial of its own, so that no two certificates look alike.
        static SERIAL: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(100);
        let serial = SERIAL
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .to_string();
        openssl(
            &self.dir.path,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_pem,
                "-CAkey",
                &ca_key,
                "-set_serial",
                &serial,
                "-days",
                "2",
                "-extfile",
                ext,
                "-out",
                &pem,
            ],
        );
        Cert {
            pem: PathBuf::from(pem),
            key: PathBuf::from(key_path),
        }
    }

    /// A server certificate from the test CA.
    pub fn server(&self, name: &str, key: Key, subject: &str) -> Cert {
        self.issue(name, key, subject, "ca", false)
    }

    /// `cert`'s key in its traditional form: SEC1 (`EC PRIVATE KEY`) for
    /// ECDSA, PKCS#1 (`RSA PRIVATE KEY`) for RSA; checked to be so.
    pub fn traditional_key(&self, cert: &Cert, key: Key) -> PathBuf {
        let out = format!("{}.traditional", cert.key.display());
        let input = path_str(&cert.key);
        // `openssl ec` writes SEC1 as it is; `openssl rsa` wants asking.
        let (args, header): (&[&str], _) = match key {
            Key::Ec => (&["ec"], "-----BEGIN EC PRIVATE KEY-----"),
            Key::Rsa => (&["rsa", "-traditional"], "-----BEGIN RSA PRIVATE KEY-----"),
        };
        let mut args = args.to_vec();
        args.extend(["-in", &input, "-out", &out]);
        openssl(&self.dir.path, &args);
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(text.starts_with(header), "{out}: {}", &text[..40]);
        PathBuf::from(out)
    }
}

/// The SHA-256 fingerprint of a PEM certificate, lowercase hex.
pub fn fingerprint(pem: &Path) -> String {
    let out = openssl(
        pem.parent().unwrap(),
        &[
            "x509",
            "-noout",
            "-fingerprint",
            "-sha256",
            "-in",
            &path_str(pem),
        ],
    );
    let hex = out.trim().rsplit('=').next().unwrap();
    hex.replace(':', "").to_ascii_lowercase()
}
