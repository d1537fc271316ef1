//! The command line.

use std::path::PathBuf;

use clap::Parser;

/// oneshotd: an EPOLLONESHOT worker-pool line server for systemd.
///
/// Serves the "upper" protocol (each line comes back uppercased) on the
/// sockets systemd hands it, or on the `listen` addresses of its
/// configuration. SIGHUP reloads the configuration; SIGTERM drains.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
pub struct Cli {
    /// Configuration file [default: /etc/oneshotd.toml if it exists,
    /// otherwise built-in defaults]
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Parse and validate the configuration, print the result, and exit
    /// (0: valid, 78: invalid)
    #[arg(long)]
    pub check_config: bool,
}
