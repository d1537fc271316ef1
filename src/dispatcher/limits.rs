//! The reloadable limits: stored by a reload, read by workers on every
//! event and by the housekeeper on every tick.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::config::Config;
use crate::proxy::sources::Sources;
use crate::service::Peer;
use crate::step::Limits;

/// The limits in force, each in its own atomic: a reload may change them
/// one by one while workers read them; each is valid on its own.
#[derive(Debug, Default)]
pub(super) struct LimitSettings {
    max_connections: AtomicUsize,
    max_connections_per_client: AtomicUsize,
    max_line_bytes: AtomicUsize,
    idle_timeout_ms: AtomicU64,
    request_timeout_ms: AtomicU64,
    spin_before_sleep_us: AtomicU64,
    proxy_header_timeout_ms: AtomicU64,
    tls_handshake_timeout_ms: AtomicU64,
    /// `proxy_protocol_from` is not empty: without it, accepting never
    /// takes the lock below.
    proxy_protocol: AtomicBool,
    proxy_protocol_from: RwLock<Arc<Sources>>,
}

impl LimitSettings {
    pub(super) fn from_config(config: &Config) -> Self {
        let settings = LimitSettings::default();
        settings.set(config);
        settings
    }

    pub(super) fn set(&self, config: &Config) {
        self.max_connections
            .store(config.max_connections, Ordering::Relaxed);
        self.max_connections_per_client
            .store(config.max_connections_per_client, Ordering::Relaxed);
        self.max_line_bytes
            .store(config.max_line_bytes, Ordering::Relaxed);
        self.idle_timeout_ms
            .store(config.idle_timeout.as_millis() as u64, Ordering::Relaxed);
        self.request_timeout_ms
            .store(config.request_timeout.as_millis() as u64, Ordering::Relaxed);
        self.spin_before_sleep_us.store(
            config.spin_before_sleep.as_micros() as u64,
            Ordering::Relaxed,
        );
        self.proxy_header_timeout_ms.store(
            config.proxy_header_timeout.as_millis() as u64,
            Ordering::Relaxed,
        );
        self.tls_handshake_timeout_ms.store(
            config.tls_handshake_timeout.as_millis() as u64,
            Ordering::Relaxed,
        );
        *self
            .proxy_protocol_from
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(config.proxy_protocol_from.clone());
        self.proxy_protocol
            .store(!config.proxy_protocol_from.is_empty(), Ordering::Release);
    }

    /// How long a connection from `peer` has to send its PROXY header, if
    /// it must send one (its transport peer is in `proxy_protocol_from`).
    pub(super) fn proxy_header_timeout(&self, peer: &Peer) -> Option<Duration> {
        if !self.proxy_protocol.load(Ordering::Acquire) {
            return None;
        }
        let sources = self
            .proxy_protocol_from
            .read()
            .unwrap_or_else(|p| p.into_inner());
        let trusted = match peer {
            Peer::Ip(address) => sources.trusts_ip(address.ip()),
            Peer::Unix => sources.trusts_unix(),
        };
        trusted.then(|| Duration::from_millis(self.proxy_header_timeout_ms.load(Ordering::Relaxed)))
    }

    /// What a connection step needs.
    pub(super) fn connection(&self) -> Limits {
        Limits {
            max_line_bytes: self.max_line_bytes.load(Ordering::Relaxed),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms.load(Ordering::Relaxed)),
            request_timeout: Duration::from_millis(self.request_timeout_ms.load(Ordering::Relaxed)),
            tls_handshake_timeout_ms: self.tls_handshake_timeout_ms.load(Ordering::Relaxed),
        }
    }

    pub(super) fn max_connections(&self) -> usize {
        self.max_connections.load(Ordering::Relaxed)
    }

    /// 0: no limit.
    pub(super) fn max_connections_per_client(&self) -> usize {
        self.max_connections_per_client.load(Ordering::Relaxed)
    }

    /// How long a leader that ran out of events polls before it sleeps.
    pub(super) fn spin(&self) -> Duration {
        Duration::from_micros(self.spin_before_sleep_us.load(Ordering::Relaxed))
    }
}
