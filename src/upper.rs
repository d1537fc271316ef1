//! The default service, "upper": each line comes back with ASCII `a`-`z`
//! turned into `A`-`Z` and every other byte unchanged.

use crate::framing;
use crate::service::{Input, Served, Service};

/// The reply to a line longer than `max_line_bytes` (then the server closes).
pub const LINE_TOO_LONG: &[u8] = b"ERR line too long\n";
/// The reply to a line not completed within `request_timeout_ms`.
pub const REQUEST_TIMEOUT: &[u8] = b"ERR request timeout\n";

/// The "upper" line service of the contract.
#[derive(Debug, Default, Clone, Copy)]
pub struct Upper;

impl Service for Upper {
    // Inlined into the dispatcher's call (`hosted.rs`), as the one service
    // every request of the daemon goes through.
    #[inline]
    fn serve(&self, input: Input<'_>, output: &mut Vec<u8>) -> Served {
        framing::serve_lines(&input, output, LINE_TOO_LONG, |line, output| {
            let start = output.len();
            output.extend_from_slice(line);
            output[start..].make_ascii_uppercase();
            output.push(b'\n');
        })
    }

    fn request_too_long(&self, output: &mut Vec<u8>) {
        output.extend_from_slice(LINE_TOO_LONG);
    }

    fn request_timeout(&self, output: &mut Vec<u8>) {
        output.extend_from_slice(REQUEST_TIMEOUT);
    }

    fn name(&self) -> &'static str {
        "upper"
    }

    fn closed_by_service(&self) -> &'static str {
        "line_too_long"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::{ConnectionId, Peer};

    /// Serves `bytes` once; returns (consumed, close, output).
    fn serve(bytes: &[u8], eof: bool, max: usize) -> (usize, bool, Vec<u8>) {
        let mut out = Vec::new();
        let served = Upper.serve(
            Input {
                connection: ConnectionId(1),
                peer: &Peer::Unix,
                tls: None,
                bytes,
                seen: 0,
                eof,
                max_request_bytes: max,
            },
            &mut out,
        );
        (served.consumed, served.close, out)
    }

    #[test]
    fn framing_table() {
        /// (input, eof, max, consumed, close, output)
        type Case = (&'static [u8], bool, usize, usize, bool, &'static [u8]);
        let cases: &[Case] = &[
            (b"", false, 8, 0, false, b""),
            (b"hello\n", false, 8, 6, false, b"HELLO\n"),
            (b"hel", false, 8, 0, false, b""),
            (b"a\nb\nc", false, 8, 4, false, b"A\nB\n"),
            (b"a\nb\nc", true, 8, 5, false, b"A\nB\nC\n"),
            (b"\n\n", false, 8, 2, false, b"\n\n"),
            (
                b"mIxEd 123 z{\r\n",
                false,
                64,
                14,
                false,
                b"MIXED 123 Z{\r\n",
            ),
            (
                "grüße\n".as_bytes(),
                false,
                64,
                8,
                false,
                "GRüßE\n".as_bytes(),
            ),
            (b"\x00\xffab\n", false, 8, 5, false, b"\x00\xffAB\n"),
            (b"12345678\n", false, 8, 9, false, b"12345678\n"),
            (b"123456789\n", false, 8, 10, true, LINE_TOO_LONG),
            (b"123456789", false, 8, 9, true, LINE_TOO_LONG),
            (b"12345678", false, 8, 0, false, b""),
            (
                b"ok\n123456789\nlater\n",
                false,
                8,
                19,
                true,
                b"OK\nERR line too long\n",
            ),
            (b"", true, 8, 0, false, b""),
        ];
        for &(input, eof, max, consumed, close, output) in cases {
            let got = serve(input, eof, max);
            assert_eq!(
                got,
                (consumed, close, output.to_vec()),
                "input {:?} eof {eof} max {max}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn a_line_split_over_calls_is_served_once_complete() {
        let mut buffered = Vec::new();
        let mut replies = Vec::new();
        for piece in [&b"he"[..], b"ll", b"o\nwor", b"ld\n"] {
            buffered.extend_from_slice(piece);
            let (consumed, close, out) = serve(&buffered, false, 64);
            assert!(!close);
            buffered.drain(..consumed);
            replies.extend(out);
        }
        assert_eq!(replies, b"HELLO\nWORLD\n");
        assert!(buffered.is_empty());
    }

    #[test]
    fn timeout_reply() {
        let mut out = b"A\n".to_vec();
        Upper.request_timeout(&mut out);
        assert_eq!(out, b"A\nERR request timeout\n");
    }
}
