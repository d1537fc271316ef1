//! `oneshotd`: wiring only. See the library for how it works.

use std::process::ExitCode;

use clap::Parser;
use oneshotd::lifecycle::{self, SystemdEnv};
use oneshotd::listeners;

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
    let cli = oneshotd::cli::Cli::parse();
    lifecycle::run(cli, activated, env)
}
