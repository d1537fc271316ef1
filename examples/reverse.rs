//! A line service of your own, served by the oneshotd library: each line
//! comes back reversed (byte by byte). Copy this file to start one.
//!
//! Everything but the protocol comes with the library: the worker pool,
//! socket activation or `listen`, limits and timeouts, SIGHUP reload,
//! SIGTERM drain, sd_notify, and the metrics endpoint (`metrics_listen`).
//!
//! ```text
//! cargo run --example reverse -- --config my.toml
//! printf 'hello\n' | nc -q1 127.0.0.1 7878      # olleh
//! ```

use std::process::ExitCode;
use std::sync::Arc;

use oneshotd::service::{ConnectionId, Input, Served, Service};

/// The protocol: one line in, the same line reversed out.
struct Reverse;

impl Service for Reverse {
    fn serve(&self, input: Input<'_>, output: &mut Vec<u8>) -> Served {
        let mut served = Served::default();
        // Only whole lines are served; the rest waits for more bytes
        // (unless the client has half-closed: then it is all there is).
        for line in input.bytes.split_inclusive(|&b| b == b'\n') {
            let complete = line.ends_with(b"\n");
            let content = line.strip_suffix(b"\n").unwrap_or(line);
            if content.len() > input.max_request_bytes {
                // Refuse it at once: waiting for its end would let a client
                // make the server buffer without limit.
                output.extend_from_slice(b"ERR line too long\n");
                return Served {
                    consumed: input.bytes.len(),
                    close: true,
                    ..served
                };
            }
            if !complete && !input.eof {
                break;
            }
            output.extend(content.iter().rev());
            output.push(b'\n');
            served.consumed += line.len();
            served.requests += 1;
        }
        served
    }

    fn request_timeout(&self, _connection: ConnectionId, output: &mut Vec<u8>) {
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

fn main() -> ExitCode {
    // The sockets from systemd, the command line (--config,
    // --check-config), the configuration, then the daemon until it stops.
    oneshotd::cli::main("reverse", Arc::new(Reverse))
}
