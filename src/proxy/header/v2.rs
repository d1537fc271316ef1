//! Version 2 of the PROXY header: a binary header (§2.2).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use super::crc32c::Crc32c;
use super::{Halt, Header, HeaderError};

/// The twelve bytes every v2 header begins with.
pub(super) const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// Signature, version and command, family and transport, length.
pub(super) const V2_FIXED: usize = 16;

const COMMAND_LOCAL: u8 = 0x0;
const COMMAND_PROXY: u8 = 0x1;

const FAMILY_UNSPEC: u8 = 0x0;
const FAMILY_INET: u8 = 0x1;
const FAMILY_INET6: u8 = 0x2;
const FAMILY_UNIX: u8 = 0x3;

const TRANSPORT_UNSPEC: u8 = 0x0;
const TRANSPORT_STREAM: u8 = 0x1;
const TRANSPORT_DGRAM: u8 = 0x2;

/// The TLV type of the header's checksum (§2.2.3).
pub(super) const PP2_TYPE_CRC32C: u8 = 0x03;

/// A TLV's type byte and 16-bit length.
pub(super) const TLV_HEAD: usize = 3;

/// The address block a PROXY command announces, when its size is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AddressBlock {
    Inet { stream: bool },
    Inet6 { stream: bool },
    Unix,
}

impl AddressBlock {
    /// Reads the family and transport byte of a PROXY command; `None` when
    /// either is UNSPEC, whose address block has no known size.
    pub(super) fn announced(family_transport: u8) -> Result<Option<Self>, HeaderError> {
        let family = family_transport >> 4;
        let transport = family_transport & 0x0F;
        if family > FAMILY_UNIX {
            return Err(HeaderError::V2BadFamily);
        }
        if transport > TRANSPORT_DGRAM {
            return Err(HeaderError::V2BadTransport);
        }
        let stream = transport == TRANSPORT_STREAM;
        Ok(match (family, transport) {
            (FAMILY_UNSPEC, _) | (_, TRANSPORT_UNSPEC) => None,
            (FAMILY_INET, _) => Some(AddressBlock::Inet { stream }),
            (FAMILY_INET6, _) => Some(AddressBlock::Inet6 { stream }),
            _ => Some(AddressBlock::Unix),
        })
    }

    /// Source and destination addresses, then ports for IP (§2.2).
    pub(super) fn len(self) -> usize {
        match self {
            AddressBlock::Inet { .. } => 2 * 4 + 2 * 2,
            AddressBlock::Inet6 { .. } => 2 * 16 + 2 * 2,
            AddressBlock::Unix => 2 * 108,
        }
    }

    /// The client's TCP address from `block` (at least [`Self::len`]
    /// bytes); `None` for the families that keep the transport's address.
    pub(super) fn source(self, block: &[u8]) -> Option<SocketAddr> {
        match self {
            AddressBlock::Inet { stream: true } => {
                let address: [u8; 4] = block.get(..4)?.try_into().ok()?;
                let port = block.get(8..10)?;
                Some(SocketAddr::new(
                    Ipv4Addr::from(address).into(),
                    u16::from_be_bytes([port[0], port[1]]),
                ))
            }
            AddressBlock::Inet6 { stream: true } => {
                let address: [u8; 16] = block.get(..16)?.try_into().ok()?;
                let port = block.get(32..34)?;
                Some(SocketAddr::new(
                    Ipv6Addr::from(address).into(),
                    u16::from_be_bytes([port[0], port[1]]),
                ))
            }
            _ => None,
        }
    }
}

pub(super) fn parse_v2(bytes: &[u8]) -> Result<Header, Halt> {
    let signature = &bytes[..bytes.len().min(V2_SIGNATURE.len())];
    if !V2_SIGNATURE.starts_with(signature) {
        return Err(HeaderError::NotProxy.into());
    }
    let &version_command = bytes.get(12).ok_or(Halt::Incomplete)?;
    if version_command >> 4 != 2 {
        return Err(HeaderError::V2BadVersion.into());
    }
    let block = match version_command & 0x0F {
        // LOCAL: the family byte is ignored, and so is everything after
        // the fixed part (see the module documentation).
        COMMAND_LOCAL => None,
        COMMAND_PROXY => {
            let &family_transport = bytes.get(13).ok_or(Halt::Incomplete)?;
            AddressBlock::announced(family_transport)?
        }
        _ => return Err(HeaderError::V2BadCommand.into()),
    };
    let fixed = bytes.get(..V2_FIXED).ok_or(Halt::Incomplete)?;
    let total = V2_FIXED + usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if let Some(block) = block {
        if total - V2_FIXED < block.len() {
            return Err(HeaderError::V2ShortAddresses.into());
        }
    }
    let header = bytes.get(..total).ok_or(Halt::Incomplete)?;
    let Some(block) = block else {
        return Ok((total, None));
    };
    let tlvs_start = V2_FIXED + block.len();
    check_tlvs(header, tlvs_start)?;
    Ok((total, block.source(&header[V2_FIXED..tlvs_start])))
}

/// Walks the TLVs from `start` to the end of `header`, and verifies the
/// checksum if one of them carries it.
fn check_tlvs(header: &[u8], start: usize) -> Result<(), HeaderError> {
    let mut at = start;
    let mut checksum_at = None;
    while at < header.len() {
        let head = header
            .get(at..at + TLV_HEAD)
            .ok_or(HeaderError::V2TlvOverrun)?;
        let value_at = at + TLV_HEAD;
        let value_end = value_at + usize::from(u16::from_be_bytes([head[1], head[2]]));
        if value_end > header.len() {
            return Err(HeaderError::V2TlvOverrun);
        }
        if head[0] == PP2_TYPE_CRC32C {
            if value_end - value_at != 4 {
                return Err(HeaderError::V2CrcLength);
            }
            if checksum_at.replace(value_at).is_some() {
                return Err(HeaderError::V2CrcRepeated);
            }
        }
        at = value_end;
    }
    match checksum_at {
        Some(value_at) if !checksum_matches(header, value_at) => Err(HeaderError::V2CrcMismatch),
        _ => Ok(()),
    }
}

/// Whether the CRC-32C of `header`, with the four checksum bytes at
/// `value_at` taken as zero, is the value those bytes hold (§2.2.3).
fn checksum_matches(header: &[u8], value_at: usize) -> bool {
    let (before, rest) = header.split_at(value_at);
    let (value, after) = rest.split_at(4);
    let carried = u32::from_be_bytes([value[0], value[1], value[2], value[3]]);
    let mut crc = Crc32c::new();
    crc.update(before);
    crc.update(&[0; 4]);
    crc.update(after);
    crc.finish() == carried
}
