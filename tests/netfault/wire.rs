//! The test network: a server namespace and a client namespace, each with
//! one TUN device, and the forwarder between the two devices as the only
//! path. Loopback never loses, reorders or delays a segment; this does.

use super::forwarder::{Faults, Forwarder, Stats};
use super::netns::{tun, Netns};

pub const SERVER_IP: &str = "10.77.0.1";
pub const CLIENT_IP: &str = "10.77.0.2";
const DEVICE: &str = "nf0";

/// Fields drop in order: the forwarder (which closes the devices) before
/// the namespaces.
pub struct Wire {
    forwarder: Forwarder,
    pub server: Netns,
    pub client: Netns,
}

impl Wire {
    /// Both namespaces, named after `tag`, joined through `faults`.
    pub fn new(tag: &str, faults: Faults, seed: u64) -> Wire {
        let server = Netns::create(&format!("{tag}-s"));
        let client = Netns::create(&format!("{tag}-c"));
        let server_tun = tun(&server, DEVICE, SERVER_IP, CLIENT_IP);
        let client_tun = tun(&client, DEVICE, CLIENT_IP, SERVER_IP);
        Wire {
            forwarder: Forwarder::start(server_tun, client_tun, faults, seed),
            server,
            client,
        }
    }

    /// Stops the wire; what it did to the packets.
    pub fn stop(&mut self) -> Stats {
        self.forwarder.stop()
    }
}
