//! Connections held per client address, for `max_connections_per_client`.
//!
//! Counted whether or not a limit is set, so that a reload that sets one
//! finds the counts right. A connection is counted once its client's
//! address is known (at accept, or after its PROXY header) and uncounted
//! when it leaves the table. The count is by IP address (the port is the
//! client's to choose); a Unix-socket client that no header named is not
//! counted. The map is split into shards by address, so that accepts on
//! different workers rarely wait for each other; each is touched once per
//! connection, never per request.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::Mutex;

use crate::service::Peer;

const SHARDS: usize = 16;

/// Connections held per client address.
#[derive(Debug, Default)]
pub(super) struct ClientCounts {
    shards: [Mutex<HashMap<IpAddr, u32>>; SHARDS],
    /// Keyed by a random hash, so that a client cannot choose addresses that
    /// all land in one shard.
    hasher: RandomState,
}

/// The address a peer is counted under, if any: an IPv4 client seen
/// through a dual-stack socket (`::ffff:a.b.c.d`) is the same client as
/// over IPv4.
pub(super) fn counted_address(peer: &Peer) -> Option<IpAddr> {
    match peer {
        Peer::Ip(address) => Some(address.ip().to_canonical()),
        Peer::Unix => None,
    }
}

impl ClientCounts {
    fn shard(&self, address: &IpAddr) -> &Mutex<HashMap<IpAddr, u32>> {
        &self.shards[self.hasher.hash_one(address) as usize % SHARDS]
    }

    /// Counts one more connection from `address` unless it already holds
    /// `limit` (0: no limit). Returns whether it was counted.
    pub(super) fn admit(&self, address: IpAddr, limit: usize) -> bool {
        let mut shard = self
            .shard(&address)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let held = shard.entry(address).or_insert(0);
        // (An entry exists only while it counts something: a refusal never
        // makes one, since a new entry is under any limit.)
        if limit != 0 && *held as usize >= limit {
            return false;
        }
        *held += 1;
        true
    }

    /// Counts one connection from `address` fewer.
    pub(super) fn leave(&self, address: IpAddr) {
        let mut shard = self
            .shard(&address)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(held) = shard.get_mut(&address) {
            *held -= 1;
            if *held == 0 {
                shard.remove(&address);
            }
        }
    }

    /// Connections held from `address` (for tests and logs).
    #[cfg(test)]
    pub(super) fn held(&self, address: IpAddr) -> u32 {
        let shard = self
            .shard(&address)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        shard.get(&address).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_refused_past_its_limit_and_admitted_when_one_leaves() {
        let counts = ClientCounts::default();
        let client: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        assert!(counts.admit(client, 2));
        assert!(counts.admit(client, 2));
        assert!(!counts.admit(client, 2));
        assert!(counts.admit(other, 2));
        counts.leave(client);
        assert!(counts.admit(client, 2));
        assert_eq!(counts.held(client), 2);
        assert!(counts.admit(client, 0), "0: no limit");
        for _ in 0..3 {
            counts.leave(client);
        }
        assert_eq!(counts.held(client), 0);
    }

    #[test]
    fn an_ipv4_client_over_a_dual_stack_socket_is_the_same_client() {
        let mapped: Peer = Peer::Ip("[::ffff:192.0.2.7]:4000".parse().unwrap());
        let plain: Peer = Peer::Ip("192.0.2.7:5000".parse().unwrap());
        assert_eq!(counted_address(&mapped), counted_address(&plain));
        assert_eq!(counted_address(&Peer::Unix), None);
    }
}
