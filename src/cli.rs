//! The command line, and the `main` of a daemon built on the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser};

use crate::config::{ConfigSource, Defaults, ListenAddr};
use crate::hosted::Hosted;
use crate::lifecycle::{self, SystemdEnv, EXIT_CONFIG};
use crate::listeners;

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
        default_config: crate::config::DEFAULT_CONFIG_PATH,
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

    /// Its command line: the [`Cli`] options under its own name.
    fn command(&self) -> clap::Command {
        Cli::command()
            .name(self.name)
            .bin_name(self.name)
            .version(self.version)
            .about(self.about)
            .mut_arg("config", |arg| {
                arg.help(format!(
                    "Configuration file [default: {} if it exists, otherwise built-in defaults]",
                    self.default_config
                ))
            })
    }
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
    let matches = program.command().get_matches();
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

    #[test]
    fn a_program_names_its_command_line_and_brings_its_defaults() {
        let program = Program {
            name: "echo-daemon",
            version: "3.1.4",
            about: "Says it back.",
            default_config: "/etc/echo-daemon.toml",
            default_listen: &["127.0.0.1:9000", "/run/echo.sock"],
        };
        let help = program.command().render_long_help().to_string();
        assert!(help.contains("Says it back."), "{help}");
        assert!(help.contains("/etc/echo-daemon.toml"), "{help}");
        assert!(
            !help.contains("oneshotd") && !help.contains("upper"),
            "{help}"
        );
        assert_eq!(
            program.command().render_version().trim(),
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
