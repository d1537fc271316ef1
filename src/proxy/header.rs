//! The PROXY protocol header, versions 1 (a text line) and 2 (binary), as
//! the protocol's specification defines it (its revision of 2020/03/05;
//! section numbers below are its): whether a connection's first bytes are
//! one, how long it is, and which client it speaks for.
//!
//! [`parse`] is pure: no I/O, no allocation, no panic whatever the bytes.
//! A connection calls it with everything received so far, again after each
//! read, because a header may arrive in any number of segments: senders are
//! asked to write it at once, but nothing on the path has to keep it whole
//! (§2). The answer is one of:
//!
//! - [`Parsed::Incomplete`] while the bytes are a proper prefix of what may
//!   still become a valid header;
//! - [`Parsed::Header`] once a whole valid header is there; the bytes after
//!   it belong to the protocol and are not looked at;
//! - a [`HeaderError`] once the bytes can no longer become a valid header.
//!
//! Verdicts are stable: once some bytes get an error or a header, any longer
//! input starting with them gets the same answer, so the caller stops at
//! the first verdict.
//!
//! # When bytes are judged
//!
//! Each byte is judged as it arrives, except in three places, where the
//! judgement waits for a bounded number of bytes:
//!
//! - the first number of a v1 `TCP4` address is judged when the byte after
//!   it arrives (at most four bytes later), so that IPv6 text there, such as
//!   `2001:db8::1`, is reported as a family mismatch rather than as a number
//!   over 255;
//! - a v1 `TCP6` address is judged as a whole by `std`'s parser when the
//!   space after it arrives (its characters and its length, at most 45, are
//!   checked byte by byte);
//! - a v2 header's address block and TLVs are judged once all of its
//!   16 + length bytes are there; the fixed part (version, command, family,
//!   and the length against the family's address block) is judged byte by
//!   byte.
//!
//! §2.1 asks the receiver to wait for the CRLF before decoding a v1
//! address; no address is returned before it, and refusing bytes that can
//! begin no valid line only reports the error sooner, as the specification
//! recommends ("abort the connection as soon as possible").
//!
//! Work per call is bounded by the header's own size: a v1 line is looked
//! at up to its 107th byte and no further; for v2 the fixed 16 bytes are
//! looked at until the whole header is there, then its TLVs are walked
//! once and the checksum, if any, is computed once.
//!
//! # Where the specification leaves room
//!
//! - v1 `UNKNOWN`: whatever follows the word is ignored, even without a
//!   space before it (§2.1), but like every v1 line it ends at its first CR
//!   or LF, which must begin a CRLF: a lone CR or LF is an error, as §2.1
//!   forbids ending a line with one.
//! - v1 addresses: IPv4 exactly as §2.1 writes it (four decimal numbers
//!   0..=255, one dot between them, no leading zeros, `0` alone being
//!   fine); IPv6 as `std::net::Ipv6Addr` parses it, which also takes the
//!   IPv4-suffixed forms such as `::ffff:192.0.2.1` (as `inet_pton` does).
//!   The source comes back as written, IPv4-mapped or not.
//! - v2 `LOCAL`: everything after the fixed 16 bytes is skipped by the
//!   length, unread. §2.2 says to discard "the protocol block including the
//!   family which is ignored"; with the family ignored, where TLVs would
//!   start is unknown, so a LOCAL header's TLVs (CRC32C included) are not
//!   checked. Its version and command are.
//! - v2 `PROXY` with the UNSPEC family or the UNSPEC transport: accepted,
//!   keeping the transport's address (§2.2 lets the receiver accept or
//!   reject, and says to ignore the address information), with the rest
//!   skipped unread as for LOCAL, the address block's size being unknown.
//! - v2 `PROXY` over UDP (DGRAM) or AF_UNIX: the length, TLVs and checksum
//!   are checked, but the source is `None`. oneshotd serves stream
//!   connections, and §2.2 lets a receiver fall back to UNSPEC for the
//!   combinations it does not support; a Unix address is no `SocketAddr`.
//! - v2 family or transport values outside §2.2's lists are errors with
//!   PROXY ("must be rejected as invalid by receivers"); with LOCAL the
//!   byte is ignored, as above.
//! - v2 TLVs: the bytes after the address block are read as TLVs, and a TLV
//!   whose 3-byte head or whose value runs past the header is an error.
//!   Only PP2_TYPE_CRC32C is interpreted (§2.2.3): its value must be 4
//!   bytes, and a second one is an error, since the checksum is defined
//!   with one field zeroed.

mod crc32c;
mod v1;
mod v2;

use std::net::SocketAddr;

use v1::{parse_v1, V1_SIGNATURE};
use v2::{parse_v2, V2_SIGNATURE};

/// What the bytes received so far amount to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// Not a whole header yet, and nothing wrong so far: wait for more bytes.
    Incomplete,
    /// A whole, valid header.
    Header {
        /// The header's size in bytes; what follows it is the protocol's
        /// first bytes, to be handed on untouched.
        length: usize,
        /// The client's address and port: from v1 `TCP4`/`TCP6` and from v2
        /// `PROXY` over TCP on IPv4 or IPv6. `None` where the transport's
        /// own peer address must be kept: v1 `UNKNOWN`, v2 `LOCAL` (a
        /// balancer's health check), and the other v2 families and
        /// transports (UDP, AF_UNIX, UNSPEC).
        source: Option<SocketAddr>,
    },
}

/// Why the bytes received cannot begin a valid PROXY header. Each is fatal
/// to the connection: §2.1 and §2.2 tell the receiver to abort it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The first bytes begin neither `PROXY` (v1) nor the v2 signature.
    #[error("not a PROXY protocol header (missing signature)")]
    NotProxy,
    /// 107 bytes of a v1 line and no CRLF within them.
    #[error("v1 line too long (over 107 bytes)")]
    V1TooLong,
    /// A CR not followed by LF, or an LF without a CR before it.
    #[error("v1 line not ended by CRLF (lone CR or LF)")]
    V1NoCrlf,
    /// The protocol is not `TCP4`, `TCP6` or `UNKNOWN` (upper case).
    #[error("v1 bad protocol (not TCP4, TCP6 or UNKNOWN)")]
    V1BadProtocol,
    /// Two spaces, or another byte, where one space must be.
    #[error("v1 fields not separated by exactly one space")]
    V1Spacing,
    /// The line ends before the destination port.
    #[error("v1 line ends before its last field")]
    V1MissingField,
    /// Something follows the destination port other than CRLF.
    #[error("v1 field after the destination port")]
    V1ExtraField,
    /// An address that is no address of the protocol's family.
    #[error("v1 bad address (IPv4: four numbers 0..=255 without leading zeros)")]
    V1BadAddress,
    /// An IPv6 address in a `TCP4` line, or an IPv4 one in a `TCP6` line.
    #[error("v1 address family mismatch (TCP4 needs IPv4, TCP6 needs IPv6)")]
    V1FamilyMismatch,
    /// A port that is not a decimal number in 0..=65535 without leading zeros.
    #[error("v1 bad port (decimal 0..=65535 without leading zeros)")]
    V1BadPort,
    /// The version nibble of the 13th byte is not 2.
    #[error("v2 bad version (not 2)")]
    V2BadVersion,
    /// The command nibble is neither LOCAL (0) nor PROXY (1).
    #[error("v2 bad command (neither LOCAL nor PROXY)")]
    V2BadCommand,
    /// The address family nibble is none of UNSPEC, INET, INET6, UNIX.
    #[error("v2 bad address family")]
    V2BadFamily,
    /// The transport nibble is none of UNSPEC, STREAM, DGRAM.
    #[error("v2 bad transport protocol")]
    V2BadTransport,
    /// The length does not cover the family's address block (12 bytes for
    /// IPv4, 36 for IPv6, 216 for AF_UNIX).
    #[error("v2 length too short for the family's addresses")]
    V2ShortAddresses,
    /// A TLV's head or value runs past the header's length.
    #[error("v2 TLV overruns the header")]
    V2TlvOverrun,
    /// A PP2_TYPE_CRC32C TLV whose value is not 4 bytes.
    #[error("v2 CRC32C TLV not 4 bytes long")]
    V2CrcLength,
    /// More than one PP2_TYPE_CRC32C TLV.
    #[error("v2 more than one CRC32C TLV")]
    V2CrcRepeated,
    /// The header's CRC-32C is not the one its PP2_TYPE_CRC32C TLV carries.
    #[error("v2 CRC32C mismatch")]
    V2CrcMismatch,
}

/// Judges `bytes`, everything a connection has received so far, as the
/// start of a PROXY protocol header of either version.
///
/// Call it again with all the bytes, old and new, after each read until it
/// returns a header or an error. See the module documentation for when each
/// byte is judged and for the choices made where the specification leaves
/// room.
///
/// # Errors
///
/// A [`HeaderError`] as soon as `bytes` cannot begin a valid header (the
/// first byte already, if it starts neither signature). Longer inputs
/// starting with the same bytes get the same error.
pub fn parse(bytes: &[u8]) -> Result<Parsed, HeaderError> {
    let judged = match bytes.first() {
        None => Err(Halt::Incomplete),
        Some(&first) if first == V1_SIGNATURE[0] => parse_v1(bytes),
        Some(&first) if first == V2_SIGNATURE[0] => parse_v2(bytes),
        Some(_) => Err(Halt::Invalid(HeaderError::NotProxy)),
    };
    match judged {
        Ok((length, source)) => Ok(Parsed::Header { length, source }),
        Err(Halt::Incomplete) => Ok(Parsed::Incomplete),
        Err(Halt::Invalid(error)) => Err(error),
    }
}

/// A whole header: its length and the source it gives, if any.
type Header = (usize, Option<SocketAddr>);

/// Why parsing stopped short of a header.
#[derive(Debug)]
enum Halt {
    /// The bytes ran out: wait for more.
    Incomplete,
    /// The bytes can begin no valid header.
    Invalid(HeaderError),
}

impl From<HeaderError> for Halt {
    fn from(error: HeaderError) -> Self {
        Halt::Invalid(error)
    }
}

#[cfg(test)]
mod tests;
