//! The test harness: runs the real `oneshotd` binary in a temp dir, reads
//! its sd_notify datagrams from a real `NOTIFY_SOCKET`, talks to it over
//! real sockets, sends it real signals. Every wait has a deadline.

#![allow(dead_code)]

mod builder;
mod daemon;
mod dir;
mod net;
mod notify;
mod proc;
mod scrape;

// Each test crate uses its own part of the harness; every name stays
// reachable as `util::name` whether or not this crate uses it.
#[allow(unused_imports)]
pub use self::{builder::*, daemon::*, dir::*, net::*, notify::*, proc::*, scrape::*};

use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_oneshotd");

/// A generous bound for anything that should happen "at once".
pub const SOON: Duration = Duration::from_secs(10);
