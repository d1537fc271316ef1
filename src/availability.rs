//! What the daemon tells load balancers: that it serves (and how many
//! connections it takes), or that it is draining. Set by the life cycle
//! (SIGTERM, a reload), read by the agent and the readiness check on every
//! request they answer.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// Serving or draining, and `max_connections`.
#[derive(Debug)]
pub struct Availability {
    draining: AtomicBool,
    max_connections: AtomicUsize,
}

impl Availability {
    /// Serving, taking `max_connections`.
    pub fn new(max_connections: usize) -> Arc<Availability> {
        Arc::new(Availability {
            draining: AtomicBool::new(false),
            max_connections: AtomicUsize::new(max_connections),
        })
    }

    /// From now on, balancers are told to send no new connections. There
    /// is no way back: a drain ends in the process's exit.
    pub fn begin_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Whether balancers are told to send no new connections.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// A reload's `max_connections`.
    pub fn set_max_connections(&self, max_connections: usize) {
        self.max_connections
            .store(max_connections, Ordering::Relaxed);
    }

    /// The connections the daemon takes at once (`max_connections`).
    pub fn max_connections(&self) -> usize {
        self.max_connections.load(Ordering::Relaxed)
    }
}
