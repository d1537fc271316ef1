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
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn sources(entries: &[&str]) -> Sources {
        Sources::new(entries.iter().map(|entry| entry.parse().unwrap()).collect())
    }

    #[test]
    fn entries_parse_and_display_back() {
        let cases = [
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("127.0.0.1/32", "127.0.0.1/32"),
            ("127.0.0.1", "127.0.0.1/32"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("::1/128", "::1/128"),
            ("::1", "::1/128"),
            ("fd00::/8", "fd00::/8"),
            ("2001:DB8::/32", "2001:db8::/32"),
            ("::/0", "::/0"),
            // Under /96, the mapped range is only partly covered: allowed.
            ("::/80", "::/80"),
            ("unix", "unix"),
        ];
        for (entry, shown) in cases {
            let source: Source = entry.parse().unwrap();
            assert_eq!(source.to_string(), shown, "{entry}");
            assert_eq!(shown.parse::<Source>(), Ok(source), "{shown}");
        }
        assert_eq!(
            "10.0.0.0/8".parse(),
            Ok(Source::Cidr {
                network: ip("10.0.0.0"),
                prefix: 8
            })
        );
        assert_eq!(
            "::1".parse(),
            Ok(Source::Cidr {
                network: ip("::1"),
                prefix: 128
            })
        );
    }

    #[test]
    fn malformed_entries_say_why() {
        let cases = [
            ("", SourceError::NotAnAddress),
            ("Unix", SourceError::NotAnAddress),
            (" unix", SourceError::NotAnAddress),
            ("10.0.0.0/8 ", SourceError::BadPrefix),
            ("localhost", SourceError::NotAnAddress),
            ("10.0.0/8", SourceError::NotAnAddress),
            ("010.0.0.0/8", SourceError::NotAnAddress),
            ("/8", SourceError::NotAnAddress),
            ("10.0.0.0/", SourceError::BadPrefix),
            ("10.0.0.0/+8", SourceError::BadPrefix),
            ("10.0.0.0/-1", SourceError::BadPrefix),
            ("10.0.0.0/8/8", SourceError::BadPrefix),
            ("10.0.0.0/0x8", SourceError::BadPrefix),
            (
                "10.0.0.0/33",
                SourceError::PrefixTooLong {
                    max: 32,
                    version: 4,
                },
            ),
            (
                "10.0.0.0/256",
                SourceError::PrefixTooLong {
                    max: 32,
                    version: 4,
                },
            ),
            (
                "10.0.0.0/99999999999",
                SourceError::PrefixTooLong {
                    max: 32,
                    version: 4,
                },
            ),
            (
                "::/129",
                SourceError::PrefixTooLong {
                    max: 128,
                    version: 6,
                },
            ),
            (
                "10.0.0.1/8",
                SourceError::HostBitsSet {
                    network: ip("10.0.0.0"),
                    prefix: 8,
                },
            ),
            (
                "192.168.1.0/23",
                SourceError::HostBitsSet {
                    network: ip("192.168.0.0"),
                    prefix: 23,
                },
            ),
            (
                "1.2.3.4/0",
                SourceError::HostBitsSet {
                    network: ip("0.0.0.0"),
                    prefix: 0,
                },
            ),
            (
                "fd00::1/8",
                SourceError::HostBitsSet {
                    network: ip("fd00::"),
                    prefix: 8,
                },
            ),
            (
                "::ffff:10.0.0.0/104",
                SourceError::MappedBlock {
                    network: "10.0.0.0".parse().unwrap(),
                    prefix: 8,
                },
            ),
            (
                "::ffff:10.1.2.3/104",
                SourceError::MappedBlock {
                    network: "10.0.0.0".parse().unwrap(),
                    prefix: 8,
                },
            ),
            (
                "::ffff:192.0.2.1",
                SourceError::MappedBlock {
                    network: "192.0.2.1".parse().unwrap(),
                    prefix: 32,
                },
            ),
            (
                "::ffff:0:0/96",
                SourceError::MappedBlock {
                    network: "0.0.0.0".parse().unwrap(),
                    prefix: 0,
                },
            ),
        ];
        for (entry, error) in cases {
            assert_eq!(entry.parse::<Source>(), Err(error), "{entry:?}");
        }
    }

    #[test]
    fn errors_read_well_after_the_entry() {
        let error = "10.0.0.1/8".parse::<Source>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "address bits set past the /8 prefix (did you mean 10.0.0.0/8?)"
        );
        let error = "::ffff:10.0.0.0/104".parse::<Source>().unwrap_err();
        assert!(error.to_string().ends_with("(write 10.0.0.0/8)"), "{error}");
        let error = "10.0.0.0/33".parse::<Source>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "the prefix length must be at most 32 for an IPv4 address"
        );
    }

    #[test]
    fn ipv4_blocks_match_ipv4_peers() {
        let list = sources(&["10.0.0.0/8", "192.168.1.7"]);
        assert!(list.trusts_ip(ip("10.0.0.0")));
        assert!(list.trusts_ip(ip("10.255.255.255")));
        assert!(list.trusts_ip(ip("192.168.1.7")));
        assert!(!list.trusts_ip(ip("11.0.0.0")));
        assert!(!list.trusts_ip(ip("9.255.255.255")));
        assert!(!list.trusts_ip(ip("192.168.1.8")));
        assert!(!list.trusts_unix());
    }

    #[test]
    fn ipv6_blocks_match_ipv6_peers() {
        let list = sources(&["fd00::/8", "::1/128"]);
        assert!(list.trusts_ip(ip("fd12:3456::1")));
        assert!(list.trusts_ip(ip("::1")));
        assert!(!list.trusts_ip(ip("fe80::1")));
        assert!(!list.trusts_ip(ip("::2")));
        // ::1 is not the IPv4 address 0.0.0.1, nor is 0.0.0.1 ::1.
        assert!(!sources(&["0.0.0.1"]).trusts_ip(ip("::1")));
        assert!(!list.trusts_ip(ip("0.0.0.1")));
    }

    #[test]
    fn a_mapped_peer_matches_ipv4_blocks_only() {
        let v4 = sources(&["10.0.0.0/8"]);
        assert!(v4.trusts_ip(ip("::ffff:10.1.2.3")));
        assert!(!v4.trusts_ip(ip("::ffff:11.1.2.3")));
        // Not mapped: IPv4-compatible (deprecated) and NAT64 forms are IPv6.
        assert!(!v4.trusts_ip(ip("::10.1.2.3")));
        assert!(!v4.trusts_ip(ip("64:ff9b::10.1.2.3")));
        // IPv6 blocks never match an IPv4 peer, mapped or not.
        let v6 = sources(&["::/0"]);
        assert!(v6.trusts_ip(ip("2001:db8::1")));
        assert!(!v6.trusts_ip(ip("10.1.2.3")));
        assert!(!v6.trusts_ip(ip("::ffff:10.1.2.3")));
    }

    #[test]
    fn slash_zero_matches_its_whole_family() {
        let v4 = sources(&["0.0.0.0/0"]);
        assert!(v4.trusts_ip(ip("0.0.0.0")));
        assert!(v4.trusts_ip(ip("255.255.255.255")));
        assert!(v4.trusts_ip(ip("::ffff:1.2.3.4")));
        assert!(!v4.trusts_ip(ip("::")));
        let v6 = sources(&["::/0"]);
        assert!(v6.trusts_ip(ip("::")));
        assert!(v6.trusts_ip(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
    }

    #[test]
    fn prefixes_cut_inside_a_byte() {
        let list = sources(&["192.168.0.0/23", "2001:db8:8000::/33"]);
        assert!(list.trusts_ip(ip("192.168.1.255")));
        assert!(!list.trusts_ip(ip("192.168.2.0")));
        assert!(list.trusts_ip(ip("2001:db8:ffff::1")));
        assert!(!list.trusts_ip(ip("2001:db8:7fff::1")));
    }

    #[test]
    fn unix_matches_unix_peers_only() {
        let list = sources(&["unix"]);
        assert!(list.trusts_unix());
        assert!(!list.trusts_ip(ip("127.0.0.1")));
        assert!(!list.trusts_ip(ip("::1")));
        assert!(sources(&["10.0.0.0/8", "unix"]).trusts_unix());
    }

    #[test]
    fn a_list_shows_its_entries() {
        assert_eq!(Sources::default().to_string(), "[]");
        let list = sources(&["10.0.0.0/8", "::1", "unix"]);
        assert_eq!(list.to_string(), "[10.0.0.0/8, ::1/128, unix]");
    }

    #[test]
    fn an_empty_list_trusts_nobody() {
        let list = Sources::default();
        assert!(list.is_empty());
        assert!(list.entries().is_empty());
        assert!(!list.trusts_unix());
        assert!(!list.trusts_ip(ip("127.0.0.1")));
        assert!(!sources(&["unix"]).is_empty());
    }

    #[test]
    fn a_hand_built_block_with_host_bits_matches_as_its_network() {
        let list = Sources::new(vec![Source::Cidr {
            network: ip("10.1.2.3"),
            prefix: 8,
        }]);
        assert!(list.trusts_ip(ip("10.200.0.1")));
        assert_eq!(list.entries().len(), 1);
    }
}
