//! Fuzzes the PROXY protocol header parser the way a connection drives it:
//! with everything received so far, again after each read. Whatever the
//! bytes, `parse` must not panic; a header it finds must lie within the
//! input and parse the same on its own; and a verdict, once given, must
//! stand: every shorter prefix is either still incomplete or already the
//! same verdict, and every proper prefix of a header is incomplete.
//!
//! Run: cargo fuzz run --fuzz-dir tests/fuzz proxy_header
#![no_main]

use libfuzzer_sys::fuzz_target;
use oneshotd::proxy::header::{parse, Parsed};

/// How many prefixes of one input are re-parsed at most: each re-parse of a
/// v2 header costs up to its length, which may be 64 KiB.
const MAX_PREFIXES: usize = 256;

/// The prefix lengths to check: the shortest and the longest few in full
/// (where signatures, fixed parts and final bytes are judged), and the rest
/// sampled at an even step.
fn prefix_ends(len: usize) -> impl Iterator<Item = usize> {
    let edge = 32.min(len);
    let step = len / MAX_PREFIXES + 1;
    (0..edge)
        .chain((edge..len).step_by(step))
        .chain(len.saturating_sub(edge).max(edge)..len)
}

fuzz_target!(|data: &[u8]| {
    let verdict = parse(data);
    let header_length = match verdict {
        Ok(Parsed::Header { length, .. }) => {
            assert!(length <= data.len(), "a header longer than the input");
            assert_eq!(parse(&data[..length]), verdict, "the header alone");
            Some(length)
        }
        _ => None,
    };
    for end in prefix_ends(data.len()) {
        let earlier = parse(&data[..end]);
        match header_length {
            Some(length) if end < length => {
                assert_eq!(earlier, Ok(Parsed::Incomplete), "{end} bytes of a header");
            }
            _ => assert!(
                earlier == Ok(Parsed::Incomplete) || earlier == verdict,
                "{end} bytes gave {earlier:?}, all {} gave {verdict:?}",
                data.len()
            ),
        }
    }
});
