//! Version 1 of the PROXY header: one line of US-ASCII text (§2.1).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{Halt, Header, HeaderError};

/// The five bytes every v1 line begins with.
pub(super) const V1_SIGNATURE: &[u8; 5] = b"PROXY";

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

pub(super) fn parse_v1(bytes: &[u8]) -> Result<Header, Halt> {
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
