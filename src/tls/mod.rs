//! TLS between a connection's socket and its service: the server's
//! certificate and key (loaded from PEM files, replaced on reload), and
//! each connection's session (`Session`): rustls's handshake, then the
//! daemon's own record layer (`records.rs`).
//!
//! rustls's `ServerConnection` (the buffered API) does the handshake; the
//! dispatcher drives it from its own epoll loop, one worker per connection
//! at a time as for every connection. The buffered API rather than the
//! unbuffered one: it keeps a handshake message split over records and
//! owns the handshake's state, which the connection would otherwise keep
//! beside it; the handshake is fed one whole record at a time, so that it
//! ends exactly at a record's end.
//!
//! After the handshake the records are the daemon's own: rustls hands over
//! the keys and sequence numbers (and, for TLS 1.3, the traffic secrets,
//! through its key log), and ring's AEADs protect the records. So the whole
//! state of a session is known and a restart can carry it to the next
//! instance (docs/handover.md). The connection reads ciphertext from the
//! socket, hands it to its `Session`, serves the plaintext that comes out,
//! and queues what the session encrypts in its own output buffer, which
//! the memory budget counts like any other reply bytes.
//!
//! The crypto provider is ring: it builds with nothing but the C compiler
//! the build needs anyway.

mod failure;
mod files;
mod records;
mod session;
mod subject;

use std::sync::{Arc, RwLock};

pub use failure::TlsFailure;
pub use files::{TlsError, TlsFiles};
pub(crate) use records::LARGEST_RECORD;
pub(crate) use session::{Handshake, Session};

/// What a TLS connection tells its service: the protocol it negotiated and
/// who its client is, when the client showed a certificate that was
/// verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// "TLSv1.3" or "TLSv1.2".
    pub version: &'static str,
    /// The cipher suite, as IANA names it (`TLS13_AES_128_GCM_SHA256`).
    pub cipher_suite: &'static str,
    /// The subject of the client's certificate (`CN=alice,O=example`),
    /// with mutual TLS.
    pub client_subject: Option<String>,
}

/// The server's TLS settings, shared by every TLS listener: replaced whole
/// on reload, so a handshake uses either the old or the new certificate,
/// never a mix, and established connections keep what they negotiated.
#[derive(Debug)]
pub struct TlsContext {
    config: RwLock<Arc<rustls::ServerConfig>>,
}

impl TlsContext {
    /// Loads the certificate chain, key and client CAs named in `files`.
    pub fn load(files: &TlsFiles) -> Result<TlsContext, TlsError> {
        Ok(TlsContext {
            config: RwLock::new(files.server_config()?),
        })
    }

    /// Re-reads `files`: new handshakes use what they hold from now on.
    /// When they do not load, nothing changes and the error says why.
    pub fn reload(&self, files: &TlsFiles) -> Result<(), TlsError> {
        let config = files.server_config()?;
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = config;
        Ok(())
    }

    /// A new connection's session, with the settings in force now.
    pub(crate) fn session(&self) -> Result<Session, rustls::Error> {
        let config = Arc::clone(&self.config.read().unwrap_or_else(|e| e.into_inner()));
        Session::new(config)
    }
}
