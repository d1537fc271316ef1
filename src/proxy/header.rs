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

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

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

// ---------------------------------------------------------------------------
// Version 1: one line of US-ASCII text (§2.1).

/// The five bytes every v1 line begins with.
const V1_SIGNATURE: &[u8; 5] = b"PROXY";

/// The longest v1 line, CRLF included: §2.1's worst case, `UNKNOWN`
/// followed by two full IPv6 addresses and two five-digit ports.
const V1_MAX_LINE: usize = 107;

/// The longest IPv6 text `std` parses: six four-digit groups and a dotted
/// quad, `ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255`.
const IPV6_MAX_TEXT: usize = 45;

/// The v1 protocol names and what each announces.
const V1_PROTOCOLS: [(&[u8], V1Protocol); 3] = [
    (b"TCP4", V1Protocol::Tcp4),
    (b"TCP6", V1Protocol::Tcp6),
    (b"UNKNOWN", V1Protocol::Unknown),
];

#[derive(Debug, Clone, Copy)]
enum V1Protocol {
    Tcp4,
    Tcp6,
    Unknown,
}

fn parse_v1(bytes: &[u8]) -> Result<Header, Halt> {
    let mut line = Line::new(bytes);
    for &expected in V1_SIGNATURE {
        if line.next()? != expected {
            return Err(HeaderError::NotProxy.into());
        }
    }
    line.separator()?;
    line.field_start()?;
    let source = match line.protocol()? {
        V1Protocol::Unknown => {
            line.skip_to_crlf()?;
            None
        }
        protocol @ (V1Protocol::Tcp4 | V1Protocol::Tcp6) => {
            line.separator()?;
            let source = line.address(protocol)?;
            line.separator()?;
            line.address(protocol)?;
            line.separator()?;
            let port = line.port(Terminator::Space)?;
            line.separator()?;
            line.port(Terminator::Crlf)?;
            line.crlf()?;
            Some(SocketAddr::new(source, port))
        }
    };
    Ok((line.at, source))
}

/// What ends a v1 port: the source port is followed by a space, the
/// destination port by the line's CRLF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Terminator {
    Space,
    Crlf,
}

/// A cursor over a v1 line, seeing at most [`V1_MAX_LINE`] bytes.
#[derive(Debug)]
struct Line<'a> {
    /// The bytes received, cut at [`V1_MAX_LINE`].
    window: &'a [u8],
    /// Whether the window is the longest line allowed: running off its end
    /// then means the line is too long, rather than "wait for more".
    full: bool,
    /// The next byte to judge.
    at: usize,
}

impl<'a> Line<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        let window = &bytes[..bytes.len().min(V1_MAX_LINE)];
        Line {
            window,
            full: window.len() == V1_MAX_LINE,
            at: 0,
        }
    }

    /// What running out of bytes means here.
    fn end(&self) -> Halt {
        if self.full {
            HeaderError::V1TooLong.into()
        } else {
            Halt::Incomplete
        }
    }

    fn peek(&self) -> Result<u8, Halt> {
        self.window.get(self.at).copied().ok_or_else(|| self.end())
    }

    fn next(&mut self) -> Result<u8, Halt> {
        let byte = self.peek()?;
        self.at += 1;
        Ok(byte)
    }

    /// The single space between two fields. Fields leave the byte after
    /// them unread, so a line ending early is found here.
    fn separator(&mut self) -> Result<(), Halt> {
        match self.next()? {
            b' ' => Ok(()),
            b'\r' | b'\n' => Err(HeaderError::V1MissingField.into()),
            _ => Err(HeaderError::V1Spacing.into()),
        }
    }

    /// Checks the first byte of a field: a second space, or the line's end,
    /// is not the field's own fault.
    fn field_start(&self) -> Result<(), Halt> {
        match self.peek()? {
            b' ' => Err(HeaderError::V1Spacing.into()),
            b'\r' | b'\n' => Err(HeaderError::V1MissingField.into()),
            _ => Ok(()),
        }
    }

    fn protocol(&mut self) -> Result<V1Protocol, Halt> {
        let rest = &self.window[self.at..];
        let mut may_grow = false;
        for (name, protocol) in V1_PROTOCOLS {
            if rest.starts_with(name) {
                self.at += name.len();
                return Ok(protocol);
            }
            may_grow |= name.starts_with(rest);
        }
        if may_grow {
            Err(self.end())
        } else {
            Err(HeaderError::V1BadProtocol.into())
        }
    }

    /// The rest of an `UNKNOWN` line, ignored (§2.1), and its CRLF.
    fn skip_to_crlf(&mut self) -> Result<(), Halt> {
        loop {
            match self.next()? {
                b'\r' => return self.line_feed(),
                b'\n' => return Err(HeaderError::V1NoCrlf.into()),
                _ => {}
            }
        }
    }

    fn crlf(&mut self) -> Result<(), Halt> {
        match self.next()? {
            b'\r' => self.line_feed(),
            _ => Err(HeaderError::V1NoCrlf.into()),
        }
    }

    fn line_feed(&mut self) -> Result<(), Halt> {
        match self.next()? {
            b'\n' => Ok(()),
            _ => Err(HeaderError::V1NoCrlf.into()),
        }
    }

    fn address(&mut self, protocol: V1Protocol) -> Result<IpAddr, Halt> {
        self.field_start()?;
        Ok(match protocol {
            V1Protocol::Tcp6 => IpAddr::V6(self.ipv6()?),
            _ => IpAddr::V4(self.ipv4()?),
        })
    }

    /// A dotted quad: four decimal numbers 0..=255 without leading zeros
    /// ("to avoid any possible confusion with octal numbers", §2.1).
    fn ipv4(&mut self) -> Result<Ipv4Addr, Halt> {
        // The first number is read as hex digits and judged at the byte
        // after it: a colon there means IPv6 text, a family mismatch.
        let start = self.at;
        while self.peek()?.is_ascii_hexdigit() {
            if self.at - start == 4 {
                // Five digits: neither a number of a dotted quad nor a
                // group of IPv6 text.
                return Err(HeaderError::V1BadAddress.into());
            }
            self.at += 1;
        }
        if self.peek()? == b':' {
            return Err(HeaderError::V1FamilyMismatch.into());
        }
        let first = decimal_octet(&self.window[start..self.at]);
        let mut octets = [first.ok_or(HeaderError::V1BadAddress)?, 0, 0, 0];
        for octet in &mut octets[1..] {
            if self.next()? != b'.' {
                return Err(HeaderError::V1BadAddress.into());
            }
            let value = self.decimal(u8::MAX.into(), HeaderError::V1BadAddress)?;
            // `decimal` checked the bound.
            *octet = u8::try_from(value).map_err(|_| HeaderError::V1BadAddress)?;
        }
        match self.peek()? {
            b' ' | b'\r' | b'\n' => Ok(Ipv4Addr::from(octets)),
            _ => Err(HeaderError::V1BadAddress.into()),
        }
    }

    /// IPv6 text, judged whole by `std` once the byte after it arrives.
    fn ipv6(&mut self) -> Result<Ipv6Addr, Halt> {
        let start = self.at;
        let mut colons = false;
        loop {
            match self.peek()? {
                b' ' | b'\r' | b'\n' => break,
                b':' => colons = true,
                // IPv6 text has a colon before any dot; digits then a dot
                // are the start of an IPv4 address.
                b'.' if !colons => {
                    let digits = self.window[start..self.at].iter().all(u8::is_ascii_digit);
                    return Err(if digits {
                        HeaderError::V1FamilyMismatch
                    } else {
                        HeaderError::V1BadAddress
                    }
                    .into());
                }
                b'.' => {}
                byte if byte.is_ascii_hexdigit() => {}
                _ => return Err(HeaderError::V1BadAddress.into()),
            }
            if self.at - start == IPV6_MAX_TEXT {
                return Err(HeaderError::V1BadAddress.into());
            }
            self.at += 1;
        }
        std::str::from_utf8(&self.window[start..self.at])
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| HeaderError::V1BadAddress.into())
    }

    fn port(&mut self, terminator: Terminator) -> Result<u16, Halt> {
        self.field_start()?;
        let value = self.decimal(u16::MAX.into(), HeaderError::V1BadPort)?;
        let port = u16::try_from(value).map_err(|_| HeaderError::V1BadPort)?;
        match (self.peek()?, terminator) {
            (b' ', Terminator::Space) | (b'\r', Terminator::Crlf) => Ok(port),
            (b'\r' | b'\n', Terminator::Space) => Err(HeaderError::V1MissingField.into()),
            (b' ', Terminator::Crlf) => Err(HeaderError::V1ExtraField.into()),
            (b'\n', Terminator::Crlf) => Err(HeaderError::V1NoCrlf.into()),
            _ => Err(HeaderError::V1BadPort.into()),
        }
    }

    /// A decimal number up to `max` without leading zeros, stopping before
    /// the first byte that is not a digit. Each digit is judged as it comes:
    /// one after a leading `0`, or one taking the value over `max`, is
    /// `invalid`.
    fn decimal(&mut self, max: u32, invalid: HeaderError) -> Result<u32, Halt> {
        let first = self.next()?;
        if !first.is_ascii_digit() {
            return Err(invalid.into());
        }
        let mut value = u32::from(first - b'0');
        loop {
            let byte = self.peek()?;
            if !byte.is_ascii_digit() {
                return Ok(value);
            }
            if value == 0 {
                return Err(invalid.into());
            }
            value = value * 10 + u32::from(byte - b'0');
            if value > max {
                return Err(invalid.into());
            }
            self.at += 1;
        }
    }
}

/// One number of a dotted quad, given whole: 1 to 3 decimal digits, no
/// leading zero, at most 255.
fn decimal_octet(text: &[u8]) -> Option<u8> {
    let leading_zero = text.len() > 1 && text[0] == b'0';
    if text.is_empty() || text.len() > 3 || leading_zero {
        return None;
    }
    let mut value: u16 = 0;
    for &byte in text {
        if !byte.is_ascii_digit() {
            return None;
        }
        value = value * 10 + u16::from(byte - b'0');
    }
    u8::try_from(value).ok()
}

// ---------------------------------------------------------------------------
// Version 2: a binary header (§2.2).

/// The twelve bytes every v2 header begins with.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// Signature, version and command, family and transport, length.
const V2_FIXED: usize = 16;

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
const PP2_TYPE_CRC32C: u8 = 0x03;

/// A TLV's type byte and 16-bit length.
const TLV_HEAD: usize = 3;

/// The address block a PROXY command announces, when its size is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AddressBlock {
    Inet { stream: bool },
    Inet6 { stream: bool },
    Unix,
}

impl AddressBlock {
    /// Reads the family and transport byte of a PROXY command; `None` when
    /// either is UNSPEC, whose address block has no known size.
    fn announced(family_transport: u8) -> Result<Option<Self>, HeaderError> {
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
    fn len(self) -> usize {
        match self {
            AddressBlock::Inet { .. } => 2 * 4 + 2 * 2,
            AddressBlock::Inet6 { .. } => 2 * 16 + 2 * 2,
            AddressBlock::Unix => 2 * 108,
        }
    }

    /// The client's TCP address from `block` (at least [`Self::len`]
    /// bytes); `None` for the families that keep the transport's address.
    fn source(self, block: &[u8]) -> Option<SocketAddr> {
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

fn parse_v2(bytes: &[u8]) -> Result<Header, Halt> {
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

/// CRC-32C (Castagnoli), the checksum of RFC 4960 appendix B that §2.2.3
/// names: reflected, polynomial 0x82F63B78, initial value and final xor
/// 0xFFFFFFFF, a byte at a time from a table built at compile time.
#[derive(Debug)]
struct Crc32c(u32);

/// The reflected Castagnoli polynomial.
const CRC32C_POLYNOMIAL: u32 = 0x82F6_3B78;

/// For each byte value, its CRC remainder after eight shifts.
const CRC32C_TABLE: [u32; 256] = crc32c_table();

const fn crc32c_table() -> [u32; 256] {
    let mut table = [0; 256];
    let mut index = 0;
    while index < 256 {
        let mut remainder = index as u32;
        let mut bit = 0;
        while bit < 8 {
            remainder = if remainder & 1 == 1 {
                (remainder >> 1) ^ CRC32C_POLYNOMIAL
            } else {
                remainder >> 1
            };
            bit += 1;
        }
        table[index] = remainder;
        index += 1;
    }
    table
}

impl Crc32c {
    fn new() -> Self {
        Crc32c(!0)
    }

    fn update(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            let index = (self.0 ^ u32::from(byte)) & 0xFF;
            self.0 = CRC32C_TABLE[index as usize] ^ (self.0 >> 8);
        }
    }

    fn finish(&self) -> u32 {
        !self.0
    }
}

#[cfg(test)]
mod tests;
