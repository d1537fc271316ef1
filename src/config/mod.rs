//! The TOML configuration: parsing, defaults and validation.
//!
//! Keys are flat and all optional (the shipped `config/oneshotd.toml` lists
//! each with its default and range). Parsing happens in two steps so that
//! every error can name what an operator needs to fix it:
//!
//! 1. TOML → `RawConfig` (`parse.rs`), whose numbers are `i64` so that a negative or huge
//!    value reaches validation instead of failing as a type error, and whose
//!    `deny_unknown_fields` turns a typo into an error with line and column.
//! 2. `RawConfig` → [`Config`] (`validate.rs`), checking each value against its allowed
//!    range and naming the key, its line and the range on failure.
//!
//! Every position comes from a span the TOML parser recorded (each raw value
//! is a [`toml::Spanned`]), never from searching the text for the key: a key
//! can be quoted, or its name can appear inside another key's string.

mod parse;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::proxy::sources::{SourceError, Sources};
use crate::tls::{TlsContext, TlsError, TlsFiles};
use parse::RawConfig;

/// Where `oneshotd` looks for its configuration when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/oneshotd.toml";

/// The largest `max_connections` accepted; the connection table holds this
/// many, plus the budgets of services with a limit of their own.
pub const MAX_CONNECTIONS_LIMIT: i64 = 1_000_000;

/// A validated configuration. Every field is within its documented range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Size of the worker pool.
    pub workers: usize,
    /// Addresses to bind when not socket-activated.
    pub listen: Vec<ListenAddr>,
    /// Connections held at once, of every service without a limit of its
    /// own ([`crate::service::Service::connection_limit`]); past it new ones
    /// are accepted and closed.
    pub max_connections: usize,
    /// Connections held at once from one client address; 0: no limit.
    pub max_connections_per_client: usize,
    /// Longest request line, not counting its LF.
    pub max_line_bytes: usize,
    /// A connection with no progress in either direction this long is closed.
    pub idle_timeout: Duration,
    /// A request must be complete this long after its first byte.
    pub request_timeout: Duration,
    /// Longest a drain waits for busy connections.
    pub drain_timeout: Duration,
    /// How long a worker that runs out of events polls for more before it
    /// sleeps (zero: it sleeps at once).
    pub spin_before_sleep: Duration,
    /// Addresses of the metrics endpoint when not socket-activated; empty:
    /// none.
    pub metrics_listen: Vec<ListenAddr>,
    /// Addresses of the load-balancer agent (HAProxy's `agent-check`) when
    /// not socket-activated; empty: none.
    pub agent_listen: Vec<ListenAddr>,
    /// On SIGTERM, how long to keep accepting and serving while telling
    /// balancers to drain, before the drain itself.
    pub drain_grace: Duration,
    /// Transport peers that must begin with a PROXY protocol header (a
    /// trusted load balancer's addresses); empty: a header is never parsed.
    pub proxy_protocol_from: Sources,
    /// How long such a connection has to send its whole header.
    pub proxy_header_timeout: Duration,
    /// Addresses served over TLS when not socket-activated; empty: none.
    pub tls_listen: Vec<ListenAddr>,
    /// The certificate, key and client CAs of the TLS listeners, when
    /// `tls_certificate` and `tls_private_key` are set.
    pub tls: Option<TlsFiles>,
    /// How long a TLS client has from accept to finish its handshake.
    pub tls_handshake_timeout: Duration,
    /// Bytes held at most for all clients that owe replies together (the
    /// replies the kernel has not taken and the input behind them); past
    /// it those connections stop being read until their clients read.
    pub max_buffered_bytes: usize,
    /// The log filter.
    pub log_level: LogLevel,
}

/// One `listen` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// A TCP address, IPv4 or IPv6.
    Tcp(SocketAddr),
    /// A Unix stream socket path (an entry starting with `/`).
    Unix(PathBuf),
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => write!(f, "{addr}"),
            ListenAddr::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// The `log_level` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Only errors.
    Error,
    /// Errors and warnings.
    Warn,
    /// Lifecycle events (the default).
    Info,
    /// Per-connection events too.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// The name used in the config file and in filters.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// Why a configuration was refused. Displayed as one line naming the file.
#[derive(Debug, thiserror::Error)]
#[error("{}: {kind}", path.display())]
pub struct ConfigError {
    /// The file that was read, or `<built-in>` for the defaults.
    pub path: PathBuf,
    /// What is wrong with it.
    pub kind: ConfigErrorKind,
}

/// What is wrong with a configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// The file could not be read (missing, unreadable).
    #[error("cannot read: {0}")]
    Read(#[source] std::io::Error),
    /// Not valid TOML, a wrong type, an unknown key or a bad `log_level`.
    #[error("{line}:{column}: {}{message}", key.as_ref().map(|k| format!("{k}: ")).unwrap_or_default())]
    Toml {
        /// 1-based line of the offending text.
        line: usize,
        /// 1-based column (in characters) of the offending text.
        column: usize,
        /// The key whose value is wrong (a wrong type, a bad `log_level`);
        /// `None` for a syntax error or an unknown key, whose message
        /// already names what is wrong.
        key: Option<String>,
        /// The parser's explanation.
        message: String,
    },
    /// A number outside its allowed range.
    #[error("{line}: {key} = {value} is out of range (allowed {min}..={max})")]
    OutOfRange {
        /// The key.
        key: &'static str,
        /// The 1-based line of the value.
        line: usize,
        /// The value given.
        value: i64,
        /// The smallest allowed value.
        min: i64,
        /// The largest allowed value.
        max: i64,
    },
    /// A `listen` (or `metrics_listen`) entry that is neither an
    /// `IP:port` nor an absolute path.
    #[error("{line}: {key} entry '{entry}' is neither IP:port nor an absolute Unix socket path")]
    BadListen {
        /// `listen` or `metrics_listen`.
        key: &'static str,
        /// The 1-based line of the entry (an array can span lines).
        line: usize,
        /// The entry as written.
        entry: String,
    },
    /// A `proxy_protocol_from` entry that is neither a CIDR block nor
    /// `"unix"`.
    #[error("{line}: proxy_protocol_from entry '{entry}': {reason}")]
    BadProxySource {
        /// The 1-based line of the entry.
        line: usize,
        /// The entry as written.
        entry: String,
        /// What is wrong with it.
        reason: SourceError,
    },
    /// `listen = []`.
    #[error("{line}: listen must name at least one address")]
    EmptyListen {
        /// The 1-based line of the empty array.
        line: usize,
    },
    /// A TLS key without the others it needs.
    #[error("{line}: {key} needs {missing}")]
    TlsIncomplete {
        /// The 1-based line of the key.
        line: usize,
        /// The key given.
        key: &'static str,
        /// What must be given with it.
        missing: &'static str,
    },
    /// systemd passed a TLS listener (a socket named `tls`), and the file
    /// names no certificate and key for it.
    #[error("a socket named tls was passed, but tls_certificate and tls_private_key are not set")]
    TlsSocketWithoutFiles,
    /// A TLS file that does not load: missing, unreadable, not PEM, or a
    /// key that does not match its certificate.
    #[error("TLS: {0}")]
    Tls(#[source] TlsError),
}

/// What a program's configuration holds where its file says nothing and
/// oneshotd's own default would not do: the addresses it binds when not
/// socket-activated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defaults {
    /// `listen` when the file does not set it.
    pub listen: Vec<ListenAddr>,
}

impl Default for Defaults {
    /// oneshotd's: `127.0.0.1:7878`.
    fn default() -> Self {
        Defaults {
            listen: vec![ListenAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], 7878)))],
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::with_defaults(&Defaults::default())
    }
}

impl Config {
    /// The configuration of a program with `defaults` and no file.
    pub fn with_defaults(defaults: &Defaults) -> Config {
        Config::from_raw(RawConfig::default(), "", defaults)
            .expect("the built-in defaults are valid")
    }

    /// Parses and validates TOML text. `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Config::parse_with(text, path, &Defaults::default())
    }

    /// [`Config::parse`] for a program with `defaults` of its own.
    pub fn parse_with(text: &str, path: &Path, defaults: &Defaults) -> Result<Config, ConfigError> {
        let err = |kind| ConfigError {
            path: path.to_owned(),
            kind,
        };
        let raw = RawConfig::parse(text).map_err(err)?;
        let config = Config::from_raw(raw, text, defaults).map_err(err)?;
        // The files must load now, so that `--check-config` and a reload
        // catch a missing file or a mismatched key, not the first client.
        config.tls_context().map_err(err)?;
        Ok(config)
    }

    /// The TLS settings its files give, if it names any.
    pub fn tls_context(&self) -> Result<Option<TlsContext>, ConfigErrorKind> {
        self.tls
            .as_ref()
            .map(TlsContext::load)
            .transpose()
            .map_err(ConfigErrorKind::Tls)
    }

    /// Reads, parses and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with(path, &Defaults::default())
    }

    /// [`Config::load`] for a program with `defaults` of its own.
    pub fn load_with(path: &Path, defaults: &Defaults) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_owned(),
            kind: ConfigErrorKind::Read(e),
        })?;
        Config::parse_with(&text, path, defaults)
    }
}

/// Where the configuration comes from, fixed at start so that a reload
/// re-reads the same place: a file, or none, and the program's defaults
/// for what it does not say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSource {
    /// `--config PATH`, or the program's default file if it existed; `None`:
    /// the built-in defaults.
    file: Option<PathBuf>,
    defaults: Defaults,
}

impl ConfigSource {
    /// `--config PATH` if given, else `default_file` if it exists, else
    /// the built-in defaults; `defaults` fill in what the file leaves out.
    pub fn resolve(explicit: Option<PathBuf>, default_file: &Path, defaults: Defaults) -> Self {
        let file = explicit.or_else(|| default_file.exists().then(|| default_file.to_owned()));
        ConfigSource { file, defaults }
    }

    /// The file read, if any.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Reads and validates the configuration.
    pub fn load(&self) -> Result<Config, ConfigError> {
        match &self.file {
            Some(path) => Config::load_with(path, &self.defaults),
            None => Ok(Config::with_defaults(&self.defaults)),
        }
    }
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(path) => write!(f, "{}", path.display()),
            None => f.write_str("built-in defaults"),
        }
    }
}

#[cfg(test)]
mod tests;
