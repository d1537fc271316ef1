//! The command line, and the `main` of a daemon built on the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use crate::config::ConfigSource;
use crate::lifecycle::{self, SystemdEnv, EXIT_CONFIG};
use crate::listeners;
use crate::service::Service;

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

/// A daemon's whole `main`, serving `service`; `program` names it in the
/// messages printed before logging starts. Call it first thing: it takes
/// the sockets from systemd while the process still has one thread
/// (listenfd clears `LISTEN_*` from the environment, which is only sound
/// then) and reads every other systemd variable once; then it parses the
/// command line, reads the configuration (or only checks it: exit 0 or
/// 78) and runs the daemon until it stops.
pub fn main(program: &str, service: Arc<dyn Service>) -> ExitCode {
    let activated = match listeners::from_systemd() {
        Ok(activated) => activated,
        Err(e) => {
            eprintln!("{program}: cannot use the sockets from systemd: {e}");
            return ExitCode::FAILURE;
        }
    };
    let env = SystemdEnv::from_env();
    let cli = Cli::parse();

    let source = ConfigSource::resolve(cli.config);
    let config = match source.load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{program}: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if cli.check_config {
        println!("{program}: configuration is valid ({source})");
        return ExitCode::SUCCESS;
    }
    lifecycle::run(source, config, activated, env, service)
}
