//! The first step: TOML text → [`RawConfig`], the file as written, each
//! value with the span the TOML parser recorded for it, so that every
//! later error can point at a line.

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigErrorKind, LogLevel};

/// The file as written, before range checks, each value with its span.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) workers: Option<Spanned<i64>>,
    pub(super) listen: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) max_connections: Option<Spanned<i64>>,
    pub(super) max_connections_per_client: Option<Spanned<i64>>,
    pub(super) max_line_bytes: Option<Spanned<i64>>,
    pub(super) idle_timeout_ms: Option<Spanned<i64>>,
    pub(super) request_timeout_ms: Option<Spanned<i64>>,
    pub(super) drain_timeout_ms: Option<Spanned<i64>>,
    pub(super) spin_before_sleep_us: Option<Spanned<i64>>,
    pub(super) metrics_listen: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) agent_listen: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) drain_grace_ms: Option<Spanned<i64>>,
    pub(super) max_buffered_bytes: Option<Spanned<i64>>,
    pub(super) proxy_protocol_from: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) proxy_header_timeout_ms: Option<Spanned<i64>>,
    pub(super) tls_listen: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) tls_certificate: Option<Spanned<String>>,
    pub(super) tls_private_key: Option<Spanned<String>>,
    pub(super) tls_client_ca: Option<Spanned<String>>,
    pub(super) tls_handshake_timeout_ms: Option<Spanned<i64>>,
    pub(super) log_level: Option<Spanned<LogLevel>>,
}

impl RawConfig {
    /// Parses TOML text; a syntax error, a wrong type or an unknown key is
    /// reported at its line and column.
    pub(super) fn parse(text: &str) -> Result<RawConfig, ConfigErrorKind> {
        toml::from_str(text).map_err(|e| {
            let start = e.span().map_or(0, |span| span.start);
            let (line, column) = line_column(text, start);
            ConfigErrorKind::Toml {
                line,
                column,
                key: key_of_value_at(text, start),
                message: e.message().trim().to_owned(),
            }
        })
    }
}

/// 1-based line and column of a byte offset; the column counts characters,
/// as an editor does.
pub(super) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// The top-level key whose value contains byte `offset`, for a type error
/// (which serde reports with the value's span but without the key). `None`
/// if the text does not parse or the offset is not inside a value (an
/// unknown key's error points at the key itself).
fn key_of_value_at(text: &str, offset: usize) -> Option<String> {
    let table = toml::de::DeTable::parse(text).ok()?;
    table
        .get_ref()
        .iter()
        .find(|(_, value)| value.span().contains(&offset))
        .map(|(key, _)| key.get_ref().to_string())
}
