//! Where log lines go: the journal when systemd is listening on our stderr,
//! human-readable lines on stderr otherwise. The level is reloadable.

use std::os::fd::AsFd;

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, Layer, Registry};

use crate::config::LogLevel;

/// Changes the log level of the running daemon.
#[derive(Debug, Clone)]
pub struct LogControl {
    handle: reload::Handle<LevelFilter, Registry>,
}

impl LogControl {
    /// Applies a new level (on reload).
    pub fn set_level(&self, level: LogLevel) {
        let _ = self.handle.reload(filter(level));
    }
}

fn filter(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Trace => LevelFilter::TRACE,
    }
}

/// True when `JOURNAL_STREAM` names our stderr: systemd connected it to the
/// journal, so structured records can go there directly. (A child that
/// inherited the variable but not the descriptor must not believe it.)
pub fn stderr_is_journal(journal_stream: Option<&str>) -> bool {
    let Some((dev, ino)) = journal_stream.and_then(|v| v.split_once(':')) else {
        return false;
    };
    let Ok(stat) = nix::sys::stat::fstat(std::io::stderr().as_fd()) else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(stat.st_dev) && ino.parse::<u64>().ok() == Some(stat.st_ino)
}

/// Installs the global subscriber. `journal` selects the journal (falling
/// back to stderr, with one line saying so, if it cannot be reached).
pub fn init(program: &str, level: LogLevel, journal: bool) -> LogControl {
    let (level_layer, handle) = reload::Layer::new(filter(level));
    let journald = if journal {
        match tracing_journald::layer() {
            // Fields are written as CONN=, PEER=... rather than F_CONN=.
            Ok(layer) => Some(layer.with_field_prefix(None)),
            Err(e) => {
                eprintln!("{program}: cannot reach journald ({e}); logging to stderr");
                None
            }
        }
    } else {
        None
    };
    let stderr = journald.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(false)
            .with_ansi(false)
    });
    let output = journald
        .map(|j| j.boxed())
        .or_else(|| stderr.map(|s| s.boxed()));
    let _ = tracing_subscriber::registry()
        .with(level_layer)
        .with(output)
        .try_init();
    LogControl { handle }
}
