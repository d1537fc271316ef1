//! `oneshotd`: wiring only. See the library for how it works.
//!
//! Takes the sockets from systemd, reads the configuration (or only checks
//! it), and runs the daemon serving the "upper" line protocol.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use oneshotd::cli::Cli;
use oneshotd::config::ConfigSource;
use oneshotd::lifecycle::{self, SystemdEnv, EXIT_CONFIG};
use oneshotd::listeners;
use oneshotd::upper::Upper;

fn main() -> ExitCode {
    // First, while the process has one thread: listenfd clears LISTEN_* from
    // the environment, and we read every other systemd variable once.
    let activated = match listeners::from_systemd() {
        Ok(activated) => activated,
        Err(e) => {
            eprintln!("oneshotd: cannot use the sockets from systemd: {e}");
            return ExitCode::FAILURE;
        }
    };
    let env = SystemdEnv::from_env();
    let cli = Cli::parse();

    let source = ConfigSource::resolve(cli.config);
    let config = match source.load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("oneshotd: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if cli.check_config {
        println!("oneshotd: configuration is valid ({source})");
        return ExitCode::SUCCESS;
    }
    lifecycle::run(source, config, activated, env, Arc::new(Upper))
}
