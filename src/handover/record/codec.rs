//! The record's building blocks: integers, byte strings and clients
//! written little-endian and read back without trusting a byte, and the
//! checksum that makes a torn file fail whole.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::{FormatError, MAGIC};
use crate::service::Peer;

pub(super) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX - 1)
}

pub(super) fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

pub(super) fn put_client(out: &mut Vec<u8>, peer: Peer) {
    match peer {
        Peer::Unix => out.push(1),
        Peer::Ip(SocketAddr::V4(address)) => {
            out.push(4);
            out.extend_from_slice(&address.ip().octets());
            out.extend_from_slice(&address.port().to_le_bytes());
        }
        Peer::Ip(SocketAddr::V6(address)) => {
            out.push(6);
            out.extend_from_slice(&address.ip().octets());
            out.extend_from_slice(&address.port().to_le_bytes());
        }
    }
}

pub(super) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// FNV-1a, 64 bits: enough to tell a torn or flipped file from a whole one
/// (this guards against accidents, not against an attacker, who would
/// need to be root to write into the fd store anyway).
pub(super) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What follows the magic and the version, up to the checksum, once the
/// checksum over everything before it matches. A file too short to hold
/// its header and checksum is truncated, whatever its last bytes say.
pub(super) fn checked_body(bytes: &[u8]) -> Result<&[u8], FormatError> {
    const PREFIX: usize = MAGIC.len() + 4;
    const HEADER: usize = PREFIX + 8 + 4;
    if bytes.len() < HEADER + 8 {
        return Err(FormatError::Truncated);
    }
    let body_end = bytes.len() - 8;
    let stored = u64::from_le_bytes(bytes[body_end..].try_into().expect("8 bytes"));
    if fnv1a(&bytes[..body_end]) != stored {
        return Err(FormatError::Checksum);
    }
    Ok(&bytes[PREFIX..body_end])
}

/// Reads fields off the front of a byte slice; never reads past its end.
pub(super) struct Reader<'a>(pub(super) &'a [u8]);

impl<'a> Reader<'a> {
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        if self.0.len() < n {
            return Err(FormatError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    pub(super) fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.take(1)?[0])
    }

    pub(super) fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }

    pub(super) fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }

    pub(super) fn duration(&mut self) -> Result<Duration, FormatError> {
        self.u64().map(Duration::from_micros)
    }

    pub(super) fn bytes(&mut self) -> Result<&'a [u8], FormatError> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    pub(super) fn client(&mut self) -> Result<Peer, FormatError> {
        let address: IpAddr = match self.u8()? {
            1 => return Ok(Peer::Unix),
            4 => <[u8; 4]>::try_from(self.take(4)?).expect("4").into(),
            6 => <[u8; 16]>::try_from(self.take(16)?).expect("16").into(),
            _ => return Err(FormatError::Corrupt("client")),
        };
        let port = u16::from_le_bytes(self.take(2)?.try_into().expect("2"));
        Ok(Peer::Ip(SocketAddr::new(address, port)))
    }
}
