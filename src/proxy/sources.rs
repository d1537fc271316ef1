//! Which transport peers must begin their connection with a PROXY header:
//! the `proxy_protocol_from` list.
//!
//! §5 of HAProxy's specification asks that the header be accepted only from
//! known sources, and §2 that a receiver never guess whether one is there:
//! a peer on the list must send a header, any other peer must not (its
//! bytes go to the service as they are). The list is judged against the
//! transport's own peer, never against an address a header claims.
//!
//! Entries are written as CIDR blocks (`10.0.0.0/8`, `fd00::/8`), single
//! addresses (`127.0.0.1`, a /32 or /128 block), or `unix` for every peer of
//! a Unix-domain socket.
//!
//! A dual-stack listener (an IPv6 socket without `IPV6_V6ONLY`) reports an
//! IPv4 client as `::ffff:a.b.c.d`; such a peer is matched as the IPv4
//! address it stands for, against the IPv4 blocks. IPv6 blocks match IPv6
//! peers only: `::/0` is every IPv6 client, and an IPv4 client of a
//! dual-stack listener needs `0.0.0.0/0` as well. For the same reason an
//! entry inside `::ffff:0:0/96` would match nothing and is refused, with the
//! IPv4 block to write instead.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// One `proxy_protocol_from` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// Every IP peer whose first `prefix` bits are `network`'s.
    Cidr {
        /// The block's first address. Parsing refuses one with bits set past
        /// `prefix`; a value built by hand with such bits matches as if
        /// they were clear.
        network: IpAddr,
        /// How many leading bits a peer shares with `network`: 0..=32 for
        /// IPv4, 0..=128 for IPv6.
        prefix: u8,
    },
    /// Every peer of a Unix-domain socket.
    Unix,
}

/// Why a `proxy_protocol_from` entry was refused. Shown after the entry, as
/// in `file: line: proxy_protocol_from entry '10.0.0.1/8': <this>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// Before any `/`, neither an IP address nor `unix`.
    #[error("not an IP address, an address/prefix block or \"unix\"")]
    NotAnAddress,
    /// After the `/`, not a decimal number.
    #[error("the prefix length after '/' must be a decimal number")]
    BadPrefix,
    /// A prefix longer than the address.
    #[error("the prefix length must be at most {max} for an IPv{version} address")]
    PrefixTooLong {
        /// 32 or 128.
        max: u8,
        /// 4 or 6.
        version: u8,
    },
    /// Bits set past the prefix: most likely a typo, so refused rather
    /// than silently widened.
    #[error("address bits set past the /{prefix} prefix (did you mean {network}/{prefix}?)")]
    HostBitsSet {
        /// The entry with those bits cleared.
        network: IpAddr,
        /// The entry's prefix length.
        prefix: u8,
    },
    /// A block of IPv4-mapped IPv6 addresses, which never matches.
    #[error(
        "IPv4-mapped IPv6 addresses never match: IPv4 clients are matched \
         as IPv4, even on a dual-stack listener (write {network}/{prefix})"
    )]
    MappedBlock {
        /// The IPv4 block the entry stands for.
        network: Ipv4Addr,
        /// Its prefix length.
        prefix: u8,
    },
}

impl FromStr for Source {
    type Err = SourceError;

    /// Reads `unix`, `address/prefix` or a single `address` (a /32 or /128
    /// block), exactly as written: no surrounding spaces, addresses as
    /// `std::net` parses them (so no leading zeros in IPv4), the prefix in
    /// decimal.
    fn from_str(entry: &str) -> Result<Self, Self::Err> {
        if entry == "unix" {
            return Ok(Source::Unix);
        }
        let (address, prefix) = match entry.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (entry, None),
        };
        let network: IpAddr = address.parse().map_err(|_| SourceError::NotAnAddress)?;
        let (max, version) = match network {
            IpAddr::V4(_) => (32, 4),
            IpAddr::V6(_) => (128, 6),
        };
        let prefix = match prefix {
            None => max,
            Some(digits) => {
                if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
                    return Err(SourceError::BadPrefix);
                }
                match digits.parse::<u8>() {
                    Ok(prefix) if prefix <= max => prefix,
                    _ => return Err(SourceError::PrefixTooLong { max, version }),
                }
            }
        };
        if let IpAddr::V6(address) = network {
            if prefix >= 96 {
                if let Some(ipv4) = address.to_ipv4_mapped() {
                    let prefix = prefix - 96;
                    let network = Ipv4Addr::from(u32::from(ipv4) & ipv4_mask(prefix));
                    return Err(SourceError::MappedBlock { network, prefix });
                }
            }
        }
        let masked = mask(network, prefix);
        if masked != network {
            return Err(SourceError::HostBitsSet {
                network: masked,
                prefix,
            });
        }
        Ok(Source::Cidr { network, prefix })
    }
}

impl fmt::Display for Source {
    /// `network/prefix` (a single address too, as /32 or /128) or `unix`;
    /// what it writes parses back to the same entry.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Cidr { network, prefix } => write!(f, "{network}/{prefix}"),
            Source::Unix => f.write_str("unix"),
        }
    }
}

impl Source {
    /// Whether `peer`, an IP peer already matched as IPv4 if mapped, is in
    /// this block. Addresses of two families are never equal, masked or
    /// not.
    fn contains(&self, peer: IpAddr) -> bool {
        match *self {
            Source::Cidr { network, prefix } => mask(network, prefix) == mask(peer, prefix),
            Source::Unix => false,
        }
    }
}

/// The whole `proxy_protocol_from` list; empty (the default) means no peer
/// sends a header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources(Vec<Source>);

impl Sources {
    /// The list, in the configuration's order (which does not change what
    /// matches).
    pub fn new(entries: Vec<Source>) -> Self {
        Sources(entries)
    }

    /// Whether no peer at all must send a header.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries, as given to [`Sources::new`].
    pub fn entries(&self) -> &[Source] {
        &self.0
    }

    /// Whether a connection from the IP peer `ip` (the transport's peer
    /// address) must begin with a PROXY header. An IPv4-mapped IPv6 peer
    /// (`::ffff:a.b.c.d`) is matched as its IPv4 address, against the IPv4
    /// blocks only.
    pub fn trusts_ip(&self, ip: IpAddr) -> bool {
        let peer = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            IpAddr::V4(_) => ip,
        };
        self.0.iter().any(|source| source.contains(peer))
    }

    /// Whether a connection on a Unix-domain socket must begin with a PROXY
    /// header: whether `unix` is on the list.
    pub fn trusts_unix(&self) -> bool {
        self.0.contains(&Source::Unix)
    }
}

impl fmt::Display for Sources {
    /// The entries in brackets, comma-separated, each as [`Source`] shows
    /// it: `[10.0.0.0/8, ::1/128, unix]`, or `[]` for none (for logs).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (index, source) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{source}")?;
        }
        f.write_str("]")
    }
}

/// `address` with every bit past the first `prefix` cleared.
fn mask(address: IpAddr, prefix: u8) -> IpAddr {
    match address {
        IpAddr::V4(v4) => Ipv4Addr::from(u32::from(v4) & ipv4_mask(prefix)).into(),
        IpAddr::V6(v6) => {
            let mask = u128::MAX
                .checked_shl(128u32.saturating_sub(prefix.into()))
                .unwrap_or(0);
            Ipv6Addr::from(u128::from(v6) & mask).into()
        }
    }
}

/// The first `prefix` bits set (none for /0, where a shift by 32 would
/// overflow).
fn ipv4_mask(prefix: u8) -> u32 {
    u32::MAX
        .checked_shl(32u32.saturating_sub(prefix.into()))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
