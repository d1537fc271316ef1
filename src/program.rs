//! Who a daemon built on the library is: its [`Program`], which the command
//! line and the daemon's life both read.

use std::path::PathBuf;

use crate::config::{Defaults, ListenAddr, DEFAULT_CONFIG_PATH};

/// Who a daemon built on the library is: what its command line and its
/// messages call it, and where it looks when told nothing.
#[derive(Debug, Clone)]
pub struct Program {
    /// Its name: the command in `--help`, the prefix of its messages.
    pub name: &'static str,
    /// `--version` prints it after the name.
    pub version: &'static str,
    /// One paragraph for `--help`: what it serves.
    pub about: &'static str,
    /// The file it reads without `--config`, if that exists.
    pub default_config: &'static str,
    /// What it binds when neither socket-activated nor given `listen`:
    /// `IP:port` or an absolute Unix socket path, each.
    pub default_listen: &'static [&'static str],
}

impl Program {
    /// oneshotd itself: the "upper" line protocol.
    pub const ONESHOTD: Program = Program {
        name: "oneshotd",
        version: env!("CARGO_PKG_VERSION"),
        about: "oneshotd: an EPOLLONESHOT worker-pool line server for systemd.\n\n\
                Serves the \"upper\" protocol (each line comes back uppercased) on the \
                sockets systemd hands it, or on the `listen` addresses of its \
                configuration. SIGHUP reloads the configuration; SIGTERM drains.",
        default_config: DEFAULT_CONFIG_PATH,
        default_listen: &["127.0.0.1:7878"],
    };

    /// Its configuration's defaults.
    ///
    /// # Panics
    ///
    /// If an entry of `default_listen` is neither `IP:port` nor an
    /// absolute path: a mistake in the program, not in its configuration.
    pub fn defaults(&self) -> Defaults {
        let listen = self
            .default_listen
            .iter()
            .map(|entry| match entry.starts_with('/') {
                true => ListenAddr::Unix(PathBuf::from(entry)),
                false => ListenAddr::Tcp(entry.parse().unwrap_or_else(|e| {
                    panic!("{}: default_listen entry {entry:?}: {e}", self.name)
                })),
            })
            .collect();
        Defaults { listen }
    }
}
