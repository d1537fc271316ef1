//! `oneshotd`: the library's daemon serving the "upper" line protocol.
//! See the library for how it works; `oneshotd::cli::main` for the start.

use std::process::ExitCode;
use std::sync::Arc;

use oneshotd::cli::Program;
use oneshotd::upper::Upper;

fn main() -> ExitCode {
    oneshotd::cli::main(&Program::ONESHOTD, Arc::new(Upper))
}
