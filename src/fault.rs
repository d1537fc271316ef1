//! Fault injection for the handover's end-to-end test
//! (`tests/e2e/faults.sh`): named points in the handover where, when the
//! environment variable `ONESHOTD_FAULT` names them, the process kills
//! itself with SIGKILL, or the state record it hands over is damaged.
//! Signals sent from outside cannot land between two messages to the
//! manager; these can.
//!
//! Compiled in only with the cargo feature `fault-injection`, which is not
//! a default one: the package is built without it, and there every hook is
//! an empty inline function (the packaging check makes sure the shipped
//! binary does not contain the variable's name).
//!
//! The points: `store-after-state` (the old instance, after the state
//! file, before any connection), `store-after-first-batch` (after the
//! first datagram of connections; while it is armed the connections go 50
//! to a datagram, so that a few hundred make several), `restore-before-removal`
//! and `restore-after-removal` (the next instance, holding what the manager
//! gave it, before and after it has the manager forget it: before any byte
//! is served either way); `state-corrupt` and `state-truncated` damage the
//! state record as it is handed over (a byte flipped in its middle; half
//! of it kept).

/// Kills the process with SIGKILL if `ONESHOTD_FAULT` names `name`.
#[cfg(feature = "fault-injection")]
pub(crate) fn point(name: &str) {
    if armed(name) {
        eprintln!("ONESHOTD_FAULT={name}: SIGKILL");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

/// How many connections go in one datagram: `max`, or 50 while
/// `store-after-first-batch` is armed.
#[cfg(feature = "fault-injection")]
pub(crate) fn batch(max: usize) -> usize {
    if armed("store-after-first-batch") {
        max.min(50)
    } else {
        max
    }
}

/// Damages the state record about to be handed over if `ONESHOTD_FAULT`
/// says `state-corrupt` (one byte in its middle flipped: the checksum no
/// longer holds) or `state-truncated` (its second half cut off).
#[cfg(feature = "fault-injection")]
pub(crate) fn state(bytes: &mut Vec<u8>) {
    if armed("state-corrupt") && !bytes.is_empty() {
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        eprintln!("ONESHOTD_FAULT=state-corrupt: byte {middle} flipped");
    } else if armed("state-truncated") {
        bytes.truncate(bytes.len() / 2);
        eprintln!("ONESHOTD_FAULT=state-truncated: {} bytes kept", bytes.len());
    }
}

#[cfg(feature = "fault-injection")]
fn armed(name: &str) -> bool {
    std::env::var("ONESHOTD_FAULT").is_ok_and(|armed| armed == name)
}

/// Without the feature: nothing.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn point(_name: &str) {}

/// Without the feature: `max`.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn batch(max: usize) -> usize {
    max
}

/// Without the feature: nothing.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn state(_bytes: &mut Vec<u8>) {}
