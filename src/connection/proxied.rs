//! A connection from a trusted load balancer: the PROXY protocol header
//! that must come before its client's bytes, read and parsed before the
//! service sees a byte.
//!
//! The header usually arrives whole in the first segment and is parsed
//! straight from the worker's read buffer; only a header split over
//! segments is kept (in `partial`) until the rest arrives. Bytes after it
//! in the same read are the protocol's first bytes, served at once.

use std::time::Instant;

use super::{Connection, Context};
use crate::proxy::header::{self, Parsed};
use crate::service::Peer;
use crate::step::{Admission, CloseReason, ProxyHeaderFailure};

/// What a connection still waiting for its header keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AwaitingHeader {
    /// The header must be complete by then.
    pub deadline: Instant,
    /// The start of a header split over segments.
    pub partial: Vec<u8>,
}

impl Connection {
    /// Makes the connection wait for a PROXY header, complete by
    /// `deadline`, before anything it receives reaches the service.
    pub(crate) fn await_proxy_header(&mut self, deadline: Instant) {
        self.awaiting_header = Some(Box::new(AwaitingHeader {
            deadline,
            partial: Vec::new(),
        }));
    }

    /// Whether its header has not been read yet.
    pub(crate) fn awaits_proxy_header(&self) -> bool {
        self.awaiting_header.is_some()
    }

    /// Takes the `n` bytes just read into the worker's buffer as more of
    /// the header. `Some(start)` once it is complete: the protocol's bytes
    /// are `scratch.input[start..n]` (maybe none). `None`: not complete yet.
    /// Its client, now known, must be admitted by the per-client limit
    /// before any of them is served.
    pub(super) fn read_header(
        &mut self,
        n: usize,
        cx: &mut Context<'_>,
    ) -> Result<Option<usize>, CloseReason> {
        let waiting = self
            .awaiting_header
            .as_mut()
            .expect("only called while awaiting a header");
        let fresh = &cx.scratch.input[..n];
        // How many of the header's bytes came before this read.
        let before = waiting.partial.len();
        let parsed = if before == 0 {
            header::parse(fresh)
        } else {
            waiting.partial.extend_from_slice(fresh);
            header::parse(&waiting.partial)
        };
        let parsed =
            parsed.map_err(|e| CloseReason::ProxyHeader(ProxyHeaderFailure::Invalid(e)))?;
        match parsed {
            Parsed::Incomplete => {
                if before == 0 {
                    waiting.partial.extend_from_slice(fresh);
                }
                Ok(None)
            }
            Parsed::Header { length, source } => {
                if let Some(source) = source {
                    self.peer = Peer::Ip(source);
                }
                self.awaiting_header = None;
                tracing::debug!(conn = %self.id, peer = %self.peer, "PROXY header read");
                match cx.clients.admit(&self.peer, self.service) {
                    Admission::Counted => self.client_counted = true,
                    Admission::Uncounted => {}
                    Admission::Refused => return Err(CloseReason::PerClient),
                }
                // Its session opens now, with its client, and what the
                // service says as a connection opens goes out first.
                if self.tls.is_none() {
                    self.open(cx.service);
                }
                Ok(Some(length - before))
            }
        }
    }

    /// The header's deadline has passed.
    pub(super) fn header_overdue(&self, now: Instant) -> bool {
        self.awaiting_header
            .as_ref()
            .is_some_and(|waiting| now >= waiting.deadline)
    }
}
