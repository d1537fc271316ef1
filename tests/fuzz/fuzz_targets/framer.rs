//! Fuzzes the "upper" framer the way the dispatcher drives it: the input's
//! first bytes choose a line limit and segment sizes; the rest is the
//! stream. Fed segment by segment (keeping what was not consumed, as a
//! connection does), the replies must equal those of the whole stream at
//! once, and every call must consume a prefix and keep buffered input
//! within the limit.
//!
//! Run: cargo fuzz run --fuzz-dir tests/fuzz framer
#![no_main]

use libfuzzer_sys::fuzz_target;
use oneshotd::service::{ConnectionId, Input, Peer, Service};
use oneshotd::upper::Upper;

fn serve(bytes: &[u8], seen: usize, eof: bool, max: usize, out: &mut Vec<u8>) -> (usize, bool) {
    let served = Upper.serve(
        Input {
            connection: ConnectionId(1),
            peer: &Peer::Unix,
            bytes,
            seen,
            eof,
            max_request_bytes: max,
        },
        out,
    );
    assert!(served.consumed <= bytes.len());
    (served.consumed, served.close)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let max = 1 + data[0] as usize % 64;
    let split = 1 + data[1] as usize % 32;
    let stream = &data[2..];

    let mut whole = Vec::new();
    let (consumed, close) = serve(stream, 0, true, max, &mut whole);
    assert!(close || consumed == stream.len(), "at EOF everything is consumed");

    let mut pieces = Vec::new();
    let mut buffered: Vec<u8> = Vec::new();
    let mut closed = false;
    for segment in stream.chunks(split) {
        let seen = buffered.len();
        buffered.extend_from_slice(segment);
        let (consumed, close) = serve(&buffered, seen, false, max, &mut pieces);
        buffered.drain(..consumed);
        if close {
            closed = true;
            break;
        }
        assert!(buffered.len() <= max, "an over-long tail must be refused");
    }
    if !closed {
        let seen = buffered.len();
        serve(&buffered, seen, true, max, &mut pieces);
    }
    assert_eq!(pieces, whole, "segmentation changed the replies");
});
