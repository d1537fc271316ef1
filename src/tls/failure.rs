//! Why TLS ended a connection: a handshake that did not complete, or a
//! record that could not be taken after it; as the log and metrics say it.

/// Why a TLS connection was closed by its TLS: a handshake that did not
/// complete, or a record that could not be taken after it; as the log and
/// metrics say it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsFailure {
    /// Not done within `tls_handshake_timeout_ms` of accept.
    TimedOut,
    /// The client offered no cipher suite (or version) we have.
    NoSharedCipher,
    /// Mutual TLS, and the client showed no certificate.
    CertificateRequired,
    /// Its certificate does not chain to `tls_client_ca`, or is not valid.
    BadCertificate(String),
    /// What it sent is not TLS.
    NotTls,
    /// It closed before the handshake was done.
    Ended,
    /// Anything else the protocol refused.
    Refused(String),
    /// After the handshake: a record that does not decrypt, an alert from
    /// the client, or a message the record layer does not take.
    Record(String),
}

impl std::fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsFailure::TimedOut => f.write_str("handshake timeout"),
            TlsFailure::NoSharedCipher => f.write_str("no shared cipher"),
            TlsFailure::CertificateRequired => f.write_str("certificate required"),
            TlsFailure::BadCertificate(why) => write!(f, "bad client certificate: {why}"),
            TlsFailure::NotTls => f.write_str("not TLS"),
            TlsFailure::Ended => f.write_str("client closed during the handshake"),
            TlsFailure::Refused(why) => f.write_str(why),
            TlsFailure::Record(why) => f.write_str(why),
        }
    }
}

impl TlsFailure {
    pub(super) fn from_rustls(error: &rustls::Error) -> Self {
        use rustls::{Error, PeerIncompatible, PeerMisbehaved};
        match error {
            Error::PeerIncompatible(
                PeerIncompatible::NoCipherSuitesInCommon
                | PeerIncompatible::NoKxGroupsInCommon
                | PeerIncompatible::NoSignatureSchemesInCommon
                | PeerIncompatible::SupportedVersionsExtensionRequired,
            ) => TlsFailure::NoSharedCipher,
            Error::PeerIncompatible(_) => TlsFailure::NoSharedCipher,
            Error::NoCertificatesPresented => TlsFailure::CertificateRequired,
            Error::InvalidCertificate(why) => TlsFailure::BadCertificate(why.to_string()),
            Error::InvalidMessage(_) | Error::InappropriateMessage { .. } => TlsFailure::NotTls,
            Error::PeerMisbehaved(PeerMisbehaved::TooManyEmptyFragments) => TlsFailure::NotTls,
            other => TlsFailure::Refused(other.to_string()),
        }
    }
}
