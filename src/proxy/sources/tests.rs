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
