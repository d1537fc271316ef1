//! The TOML configuration: parsing, defaults and validation.
//!
//! Keys are flat and all optional (see the table in `SPEC.md` and the shipped
//! `config/oneshotd.toml`). Parsing happens in two steps so that every error
//! can name what an operator needs to fix it:
//!
//! 1. TOML → `RawConfig`, whose numbers are `i64` so that a negative or huge
//!    value reaches validation instead of failing as a type error, and whose
//!    `deny_unknown_fields` turns a typo into an error with line and column.
//! 2. `RawConfig` → [`Config`], checking each value against its allowed
//!    range and naming the key, its line and the range on failure.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Where `oneshotd` looks for its configuration when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/oneshotd.toml";

/// The largest `max_connections` accepted; also the connection table's size.
pub const MAX_CONNECTIONS_LIMIT: i64 = 1_000_000;

/// A validated configuration. Every field is within its documented range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Size of the worker pool.
    pub workers: usize,
    /// Addresses to bind when not socket-activated.
    pub listen: Vec<ListenAddr>,
    /// Connections held at once; past it new ones are accepted and closed.
    pub max_connections: usize,
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

/// The file as written, before range checks.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    workers: Option<i64>,
    listen: Option<Vec<String>>,
    max_connections: Option<i64>,
    max_line_bytes: Option<i64>,
    idle_timeout_ms: Option<i64>,
    request_timeout_ms: Option<i64>,
    drain_timeout_ms: Option<i64>,
    spin_before_sleep_us: Option<i64>,
    log_level: Option<LogLevel>,
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
    #[error("{line}:{column}: {message}")]
    Toml {
        /// 1-based line of the offending text.
        line: usize,
        /// 1-based column of the offending text.
        column: usize,
        /// The parser's explanation.
        message: String,
    },
    /// A number outside its allowed range.
    #[error("{}{key} = {value} is out of range (allowed {min}..={max})", at_line(*line))]
    OutOfRange {
        /// The key.
        key: &'static str,
        /// The 1-based line where the key was set, if found.
        line: Option<usize>,
        /// The value given.
        value: i64,
        /// The smallest allowed value.
        min: i64,
        /// The largest allowed value.
        max: i64,
    },
    /// A `listen` entry that is neither an `IP:port` nor an absolute path.
    #[error("{}listen entry '{entry}' is neither IP:port nor an absolute Unix socket path", at_line(*line))]
    BadListen {
        /// The 1-based line where `listen` was set, if found.
        line: Option<usize>,
        /// The entry as written.
        entry: String,
    },
    /// `listen = []`.
    #[error("{}listen must name at least one address", at_line(*line))]
    EmptyListen {
        /// The 1-based line where `listen` was set, if found.
        line: Option<usize>,
    },
}

fn at_line(line: Option<usize>) -> String {
    line.map(|l| format!("{l}: ")).unwrap_or_default()
}

impl Default for Config {
    fn default() -> Self {
        Config::from_raw(RawConfig::default(), "").expect("the built-in defaults are valid")
    }
}

impl Config {
    /// Parses and validates TOML text. `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let err = |kind| ConfigError {
            path: path.to_owned(),
            kind,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|span| line_column(text, span.start))
                .unwrap_or((1, 1));
            err(ConfigErrorKind::Toml {
                line,
                column,
                message: e.message().trim().to_owned(),
            })
        })?;
        Config::from_raw(raw, text).map_err(err)
    }

    /// Reads, parses and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_owned(),
            kind: ConfigErrorKind::Read(e),
        })?;
        Config::parse(&text, path)
    }

    fn from_raw(raw: RawConfig, text: &str) -> Result<Config, ConfigErrorKind> {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as i64;
        let ranged = |key: &'static str, value: Option<i64>, default: i64, min: i64, max: i64| {
            let value = value.unwrap_or(default);
            if (min..=max).contains(&value) {
                Ok(value)
            } else {
                Err(ConfigErrorKind::OutOfRange {
                    key,
                    line: key_line(text, key),
                    value,
                    min,
                    max,
                })
            }
        };
        let ms = |v: i64| Duration::from_millis(v as u64);
        const DAY_MS: i64 = 86_400_000;

        let workers = ranged("workers", raw.workers, cpus.min(1024), 1, 1024)?;
        let max_connections = ranged(
            "max_connections",
            raw.max_connections,
            10_000,
            1,
            MAX_CONNECTIONS_LIMIT,
        )?;
        let max_line_bytes = ranged("max_line_bytes", raw.max_line_bytes, 65_536, 1, 16 << 20)?;
        let idle = ranged("idle_timeout_ms", raw.idle_timeout_ms, 300_000, 10, DAY_MS)?;
        let request = ranged(
            "request_timeout_ms",
            raw.request_timeout_ms,
            30_000,
            10,
            DAY_MS,
        )?;
        let drain = ranged(
            "drain_timeout_ms",
            raw.drain_timeout_ms,
            10_000,
            0,
            3_600_000,
        )?;
        let spin = ranged(
            "spin_before_sleep_us",
            raw.spin_before_sleep_us,
            10,
            0,
            1_000,
        )?;

        let listen_line = || key_line(text, "listen");
        let entries = raw
            .listen
            .unwrap_or_else(|| vec!["127.0.0.1:7878".to_owned()]);
        if entries.is_empty() {
            return Err(ConfigErrorKind::EmptyListen {
                line: listen_line(),
            });
        }
        let listen = entries
            .into_iter()
            .map(|entry| {
                if entry.starts_with('/') {
                    Ok(ListenAddr::Unix(PathBuf::from(entry)))
                } else {
                    entry
                        .parse()
                        .map(ListenAddr::Tcp)
                        .map_err(|_| ConfigErrorKind::BadListen {
                            line: listen_line(),
                            entry,
                        })
                }
            })
            .collect::<Result<Vec<_>, _>>()?;

        Ok(Config {
            workers: workers as usize,
            listen,
            max_connections: max_connections as usize,
            max_line_bytes: max_line_bytes as usize,
            idle_timeout: ms(idle),
            request_timeout: ms(request),
            drain_timeout: ms(drain),
            spin_before_sleep: Duration::from_micros(spin as u64),
            log_level: raw.log_level.unwrap_or(LogLevel::Info),
        })
    }
}

/// Where the configuration comes from, fixed at start so that a reload
/// re-reads the same place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// A file: `--config PATH`, or [`DEFAULT_CONFIG_PATH`] if it existed.
    File(PathBuf),
    /// No file: the built-in defaults.
    BuiltIn,
}

impl ConfigSource {
    /// `--config PATH` if given, else [`DEFAULT_CONFIG_PATH`] if it exists,
    /// else the built-in defaults.
    pub fn resolve(explicit: Option<PathBuf>) -> Self {
        match explicit {
            Some(path) => ConfigSource::File(path),
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
                ConfigSource::File(PathBuf::from(DEFAULT_CONFIG_PATH))
            }
            None => ConfigSource::BuiltIn,
        }
    }

    /// Reads and validates the configuration.
    pub fn load(&self) -> Result<Config, ConfigError> {
        match self {
            ConfigSource::File(path) => Config::load(path),
            ConfigSource::BuiltIn => Ok(Config::default()),
        }
    }
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSource::File(path) => write!(f, "{}", path.display()),
            ConfigSource::BuiltIn => f.write_str("built-in defaults"),
        }
    }
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// The 1-based line on which `key` is assigned, for range errors (which
/// serde reports without a position).
fn key_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            line.trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("test.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn empty_file_gives_defaults() {
        let config = parse("").unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(
            config.listen,
            vec![ListenAddr::Tcp("127.0.0.1:7878".parse().unwrap())]
        );
        assert_eq!(config.max_connections, 10_000);
        assert_eq!(config.max_line_bytes, 65_536);
        assert_eq!(config.idle_timeout, Duration::from_secs(300));
        assert_eq!(config.request_timeout, Duration::from_secs(30));
        assert_eq!(config.drain_timeout, Duration::from_secs(10));
        assert_eq!(config.spin_before_sleep, Duration::from_micros(10));
        assert_eq!(config.log_level, LogLevel::Info);
        assert!(config.workers >= 1);
    }

    #[test]
    fn every_key_is_read() {
        let config = parse(
            "workers = 3\nlisten = [\"[::1]:9000\", \"/run/x.sock\"]\nmax_connections = 5\n\
             max_line_bytes = 10\nidle_timeout_ms = 100\nrequest_timeout_ms = 200\n\
             drain_timeout_ms = 0\nspin_before_sleep_us = 0\nlog_level = \"debug\"\n",
        )
        .unwrap();
        assert_eq!(config.workers, 3);
        assert_eq!(
            config.listen,
            vec![
                ListenAddr::Tcp("[::1]:9000".parse().unwrap()),
                ListenAddr::Unix("/run/x.sock".into())
            ]
        );
        assert_eq!(config.max_connections, 5);
        assert_eq!(config.max_line_bytes, 10);
        assert_eq!(config.idle_timeout, Duration::from_millis(100));
        assert_eq!(config.request_timeout, Duration::from_millis(200));
        assert_eq!(config.drain_timeout, Duration::ZERO);
        assert_eq!(config.spin_before_sleep, Duration::ZERO);
        assert_eq!(config.log_level, LogLevel::Debug);
    }

    #[test]
    fn range_bounds() {
        // (key, lowest allowed, highest allowed)
        let table: &[(&str, i64, i64)] = &[
            ("workers", 1, 1024),
            ("max_connections", 1, 1_000_000),
            ("max_line_bytes", 1, 16 << 20),
            ("idle_timeout_ms", 10, 86_400_000),
            ("request_timeout_ms", 10, 86_400_000),
            ("drain_timeout_ms", 0, 3_600_000),
            ("spin_before_sleep_us", 0, 1_000),
        ];
        for &(key, min, max) in table {
            assert!(parse(&format!("{key} = {min}")).is_ok(), "{key} = {min}");
            assert!(parse(&format!("{key} = {max}")).is_ok(), "{key} = {max}");
            for bad in [min - 1, max + 1] {
                let msg = parse(&format!("\n{key} = {bad}")).unwrap_err();
                assert_eq!(
                    msg,
                    format!("test.toml: 2: {key} = {bad} is out of range (allowed {min}..={max})")
                );
            }
        }
    }

    #[test]
    fn syntax_error_names_line_and_column() {
        let msg = parse("workers = 2\nmax_line_bytes = = 3\n").unwrap_err();
        assert!(msg.starts_with("test.toml: 2:"), "{msg}");
    }

    #[test]
    fn unknown_key_is_an_error() {
        let msg = parse("workers = 2\n\nwrokers = 3\n").unwrap_err();
        assert!(
            msg.starts_with("test.toml: 3:1: unknown field `wrokers`"),
            "{msg}"
        );
    }

    #[test]
    fn wrong_type_and_bad_log_level() {
        let msg = parse("workers = \"four\"").unwrap_err();
        assert!(msg.starts_with("test.toml: 1:11:"), "{msg}");
        let msg = parse("log_level = \"loud\"").unwrap_err();
        assert!(msg.starts_with("test.toml: 1:13:"), "{msg}");
        assert!(msg.contains("`warn`"), "{msg}");
    }

    #[test]
    fn bad_listen_entries() {
        let msg = parse("listen = [\"localhost\"]").unwrap_err();
        assert_eq!(
            msg,
            "test.toml: 1: listen entry 'localhost' is neither IP:port nor an absolute Unix socket path"
        );
        let msg = parse("listen = []").unwrap_err();
        assert_eq!(msg, "test.toml: 1: listen must name at least one address");
    }

    #[test]
    fn line_column_of_offsets() {
        assert_eq!(line_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
    }
}
