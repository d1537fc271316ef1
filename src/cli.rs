//! The command line, and the `main` of a daemon built on the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser};

use crate::config::ConfigSource;
use crate::hosted::Hosted;
use crate::lifecycle::{self, SystemdEnv, EXIT_CONFIG};
use crate::listeners;
pub use crate::program::Program;

/// The options every daemon built on the library takes. Its name, version
/// and description come from its [`Program`].
#[derive(Debug, Parser)]
pub struct Cli {
    /// Configuration file [default: the program's own file if it exists,
    /// otherwise built-in defaults]
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Parse and validate the configuration, print the result, and exit
    /// (0: valid, 78: invalid)
    #[arg(long)]
    pub check_config: bool,
}

/// `program`'s command line: the [`Cli`] options under its own name.
fn command(program: &Program) -> clap::Command {
    Cli::command()
        .name(program.name)
        .bin_name(program.name)
        .version(program.version)
        .about(program.about)
        .mut_arg("config", |arg| {
            arg.help(format!(
                "Configuration file [default: {} if it exists, otherwise built-in defaults]",
                program.default_config
            ))
        })
}

/// A daemon's whole `main`, serving `service` as `program`. Call it first
/// thing: it takes the sockets from systemd while the process still has one
/// thread (listenfd clears `LISTEN_*` from the environment, which is only
/// sound then) and reads every other systemd variable once; then it parses
/// the command line, reads the configuration (or only checks it: exit 0 or
/// 78) and runs the daemon until it stops.
pub fn main(program: &Program, service: impl Into<Hosted>) -> ExitCode {
    let name = program.name;
    let activated = match listeners::from_systemd() {
        Ok(activated) => activated,
        Err(e) => {
            eprintln!("{name}: cannot use the sockets from systemd: {e}");
            return ExitCode::FAILURE;
        }
    };
    let env = SystemdEnv::from_env();
    let matches = command(program).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());

    let source = ConfigSource::resolve(
        cli.config,
        Path::new(program.default_config),
        program.defaults(),
    );
    let config = match source.load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if cli.check_config {
        println!("{name}: configuration is valid ({source})");
        return ExitCode::SUCCESS;
    }
    lifecycle::run(program, source, config, activated, env, service.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ListenAddr;

    #[test]
    fn a_program_names_its_command_line_and_brings_its_defaults() {
        let program = Program {
            name: "echo-daemon",
            version: "3.1.4",
            about: "Says it back.",
            default_config: "/etc/echo-daemon.toml",
            default_listen: &["127.0.0.1:9000", "/run/echo.sock"],
        };
        let help = command(&program).render_long_help().to_string();
        assert!(help.contains("Says it back."), "{help}");
        assert!(help.contains("/etc/echo-daemon.toml"), "{help}");
        assert!(
            !help.contains("oneshotd") && !help.contains("upper"),
            "{help}"
        );
        assert_eq!(
            command(&program).render_version().trim(),
            "echo-daemon 3.1.4"
        );
        assert_eq!(
            program.defaults().listen,
            vec![
                ListenAddr::Tcp("127.0.0.1:9000".parse().unwrap()),
                ListenAddr::Unix("/run/echo.sock".into())
            ]
        );
        Cli::command().debug_assert();
    }
}
