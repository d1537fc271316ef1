//! A line service of your own, served by the oneshotd library: each line
//! comes back reversed (byte by byte). Copy this file to start one.
//!
//! Everything but the protocol comes with the library: the worker pool,
//! socket activation or `listen`, limits and timeouts, SIGHUP reload,
//! SIGTERM drain, sd_notify, and the metrics endpoint (`metrics_listen`).
//!
//! ```text
//! cargo run --example reverse                      # its defaults: 127.0.0.1:7879
//! printf 'hello\n' | nc -q1 127.0.0.1 7879            # olleh
//! cargo run --example reverse -- --help              # its own name, help and version
//! ```
//!
//! Without `--config` it reads `/etc/reverse.toml` if that exists: its own
//! [`Program`] says so, and names it in `--help`, `--version` and its
//! messages.

use std::process::ExitCode;
use std::sync::Arc;

use oneshotd::cli::Program;
use oneshotd::framing::serve_lines;
use oneshotd::service::{Input, Served, Service};

const LINE_TOO_LONG: &[u8] = b"ERR line too long\n";

/// The protocol: one line in, the same line reversed out.
struct Reverse;

impl Service for Reverse {
    fn serve(&self, input: Input<'_>, output: &mut Vec<u8>) -> Served {
        // The library finds the lines (each byte looked at once, however
        // the client segments them) and refuses one that is too long; only
        // the answer is ours.
        serve_lines(&input, output, LINE_TOO_LONG, |line, output| {
            output.extend(line.iter().rev());
            output.push(b'\n');
        })
    }

    fn request_too_long(&self, output: &mut Vec<u8>) {
        output.extend_from_slice(LINE_TOO_LONG);
    }

    fn request_timeout(&self, output: &mut Vec<u8>) {
        output.extend_from_slice(b"ERR request timeout\n");
    }

    /// The `service` label of its metrics.
    fn name(&self) -> &'static str {
        "reverse"
    }

    fn closed_by_service(&self) -> &'static str {
        "line_too_long"
    }
}

/// Who this daemon is: its own name, version, help, file and address.
const PROGRAM: Program = Program {
    name: "reverse",
    version: "1.0.0",
    about: "reverse: each line comes back reversed, byte by byte.",
    default_config: "/etc/reverse.toml",
    default_listen: &["127.0.0.1:7879"],
};

fn main() -> ExitCode {
    // The sockets from systemd, the command line (--config,
    // --check-config), the configuration, then the daemon until it stops.
    oneshotd::cli::main(&PROGRAM, Arc::new(Reverse))
}
