//! The second step: [`RawConfig`] → [`Config`], each value checked
//! against its allowed range, an error naming the key and its line.

use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::parse::{line_column, RawConfig};
use super::{Config, ConfigErrorKind, Defaults, ListenAddr, LogLevel, MAX_CONNECTIONS_LIMIT};
use crate::proxy::sources::{Source, Sources};
use crate::tls::TlsFiles;

impl Config {
    /// Checks each value of `raw` (parsed from `text`) against its range;
    /// what the file leaves out comes from `defaults` or oneshotd's own.
    pub(super) fn from_raw(
        raw: RawConfig,
        text: &str,
        defaults: &Defaults,
    ) -> Result<Config, ConfigErrorKind> {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as i64;
        let line_of = |span: std::ops::Range<usize>| line_column(text, span.start).0;
        // A default is within its range by construction; only a value from
        // the file is checked, so that an error always has a span to show.
        let ranged =
            |key: &'static str, value: Option<Spanned<i64>>, default: i64, min: i64, max: i64| {
                let Some(value) = value else {
                    return Ok(default);
                };
                let (span, value) = (value.span(), value.into_inner());
                if (min..=max).contains(&value) {
                    Ok(value)
                } else {
                    Err(ConfigErrorKind::OutOfRange {
                        key,
                        line: line_of(span),
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
        let max_connections_per_client = ranged(
            "max_connections_per_client",
            raw.max_connections_per_client,
            0,
            0,
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
        let drain_grace = ranged("drain_grace_ms", raw.drain_grace_ms, 0, 0, 600_000)?;
        let spin = ranged(
            "spin_before_sleep_us",
            raw.spin_before_sleep_us,
            10,
            0,
            1_000,
        )?;

        let max_buffered_bytes = ranged(
            "max_buffered_bytes",
            raw.max_buffered_bytes,
            256 << 20,
            1 << 20,
            1 << 40,
        )?;

        let proxy_header_timeout = ranged(
            "proxy_header_timeout_ms",
            raw.proxy_header_timeout_ms,
            3_000,
            10,
            60_000,
        )?;
        let proxy_protocol_from = raw
            .proxy_protocol_from
            .map(Spanned::into_inner)
            .unwrap_or_default()
            .into_iter()
            .map(|entry| {
                let span = entry.span();
                let entry = entry.into_inner();
                entry
                    .parse::<Source>()
                    .map_err(|reason| ConfigErrorKind::BadProxySource {
                        line: line_of(span),
                        entry,
                        reason,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;

        let addrs = |key: &'static str, entries: Vec<Spanned<String>>| {
            entries
                .into_iter()
                .map(|entry| {
                    let span = entry.span();
                    let entry = entry.into_inner();
                    if entry.starts_with('/') {
                        Ok(ListenAddr::Unix(PathBuf::from(entry)))
                    } else {
                        entry
                            .parse()
                            .map(ListenAddr::Tcp)
                            .map_err(|_| ConfigErrorKind::BadListen {
                                key,
                                line: line_of(span),
                                entry,
                            })
                    }
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let listen = match raw.listen {
            None => defaults.listen.clone(),
            Some(entries) if entries.get_ref().is_empty() => {
                return Err(ConfigErrorKind::EmptyListen {
                    line: line_of(entries.span()),
                });
            }
            Some(entries) => addrs("listen", entries.into_inner())?,
        };
        // Empty is allowed here: no metrics endpoint.
        let metrics_listen = match raw.metrics_listen {
            None => Vec::new(),
            Some(entries) => addrs("metrics_listen", entries.into_inner())?,
        };
        let agent_listen = match raw.agent_listen {
            None => Vec::new(),
            Some(entries) => addrs("agent_listen", entries.into_inner())?,
        };
        let tls_listen_line = raw.tls_listen.as_ref().map(|l| line_of(l.span()));
        let tls_listen = match raw.tls_listen {
            None => Vec::new(),
            Some(entries) => addrs("tls_listen", entries.into_inner())?,
        };
        let tls_handshake_timeout = ranged(
            "tls_handshake_timeout_ms",
            raw.tls_handshake_timeout_ms,
            10_000,
            10,
            60_000,
        )?;
        let tls = match (raw.tls_certificate, raw.tls_private_key) {
            (Some(certificate), Some(private_key)) => Some(TlsFiles {
                certificate: PathBuf::from(certificate.into_inner()),
                private_key: PathBuf::from(private_key.into_inner()),
                client_ca: raw.tls_client_ca.map(|ca| PathBuf::from(ca.into_inner())),
            }),
            (Some(given), None) => {
                return Err(ConfigErrorKind::TlsIncomplete {
                    line: line_of(given.span()),
                    key: "tls_certificate",
                    missing: "tls_private_key",
                })
            }
            (None, Some(given)) => {
                return Err(ConfigErrorKind::TlsIncomplete {
                    line: line_of(given.span()),
                    key: "tls_private_key",
                    missing: "tls_certificate",
                })
            }
            (None, None) => {
                if let Some(ca) = raw.tls_client_ca {
                    return Err(ConfigErrorKind::TlsIncomplete {
                        line: line_of(ca.span()),
                        key: "tls_client_ca",
                        missing: "tls_certificate and tls_private_key",
                    });
                }
                if let (Some(line), false) = (tls_listen_line, tls_listen.is_empty()) {
                    return Err(ConfigErrorKind::TlsIncomplete {
                        line,
                        key: "tls_listen",
                        missing: "tls_certificate and tls_private_key",
                    });
                }
                None
            }
        };

        Ok(Config {
            workers: workers as usize,
            listen,
            max_connections: max_connections as usize,
            max_connections_per_client: max_connections_per_client as usize,
            max_line_bytes: max_line_bytes as usize,
            idle_timeout: ms(idle),
            request_timeout: ms(request),
            drain_timeout: ms(drain),
            spin_before_sleep: Duration::from_micros(spin as u64),
            metrics_listen,
            agent_listen,
            drain_grace: ms(drain_grace),
            max_buffered_bytes: max_buffered_bytes as usize,
            proxy_protocol_from: Sources::new(proxy_protocol_from),
            proxy_header_timeout: ms(proxy_header_timeout),
            tls_listen,
            tls,
            tls_handshake_timeout: ms(tls_handshake_timeout),
            log_level: raw.log_level.map_or(LogLevel::Info, Spanned::into_inner),
        })
    }
}
