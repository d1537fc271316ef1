//! Framing for line protocols: finding the requests in what a connection
//! has received, so that a line service writes only its answer.
//!
//! The work must stay linear in the bytes received however a client
//! segments them: a line that arrives one byte per segment is presented
//! again and again as it grows, and scanning it from its start on every
//! call would cost the square of its length. [`Input::seen`] says how many
//! leading bytes an earlier call was already given and left unconsumed; a
//! line service consumes every complete line, so none of those bytes is an
//! LF, and the search for the next one starts after them. `memchr` does the
//! search a word (or a vector) at a time.

use memchr::memchr;

use crate::service::{Input, Served};

/// Serves every complete line at the start of `input.bytes`: calls `answer`
/// with each line's content (without its LF) and the output to append the
/// reply to, in order.
///
/// - A line longer than `input.max_request_bytes` (not counting its LF) is
///   refused as soon as it is that long, without waiting for an LF that may
///   never come: `too_long` is appended after the replies to the lines
///   before it, everything is consumed, and the connection closes.
/// - At the client's EOF, a last line without LF is answered as if it had
///   one.
/// - Otherwise an incomplete last line is left unconsumed, for the next
///   call with more bytes after it.
#[inline]
pub fn serve_lines(
    input: &Input<'_>,
    output: &mut Vec<u8>,
    too_long: &[u8],
    mut answer: impl FnMut(&[u8], &mut Vec<u8>),
) -> Served {
    let bytes = input.bytes;
    let max = input.max_request_bytes;
    let mut served = Served::default();
    let refuse = |output: &mut Vec<u8>, served: Served| {
        output.extend_from_slice(too_long);
        Served {
            consumed: bytes.len(),
            close: true,
            ..served
        }
    };
    let mut start = 0;
    // Only the first line can have been seen before; it has no LF there.
    let mut search_from = input.seen.min(bytes.len());
    while let Some(offset) = memchr(b'\n', &bytes[search_from..]) {
        let end = search_from + offset;
        let line = &bytes[start..end];
        if line.len() > max {
            return refuse(output, served);
        }
        answer(line, output);
        served.requests += 1;
        start = end + 1;
        search_from = start;
        served.consumed = start;
    }
    let rest = &bytes[start..];
    if rest.len() > max {
        return refuse(output, served);
    }
    if input.eof && !rest.is_empty() {
        answer(rest, output);
        served.requests += 1;
        served.consumed = bytes.len();
    }
    served
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::ConnectionId;
    use crate::service::Peer;

    fn lines(bytes: &[u8], seen: usize, eof: bool, max: usize) -> (Served, Vec<Vec<u8>>, Vec<u8>) {
        let mut answered = Vec::new();
        let mut output = Vec::new();
        let input = Input {
            connection: ConnectionId(1),
            peer: &Peer::Unix,
            bytes,
            seen,
            eof,
            max_request_bytes: max,
        };
        let served = serve_lines(&input, &mut output, b"LONG\n", |line, out| {
            answered.push(line.to_vec());
            out.extend_from_slice(line);
            out.push(b'\n');
        });
        (served, answered, output)
    }

    #[test]
    fn seen_bytes_are_part_of_the_first_line() {
        let (served, answered, _) = lines(b"abc\nde", 2, false, 8);
        assert_eq!(answered, [b"abc".to_vec()]);
        assert_eq!(
            (served.consumed, served.requests, served.close),
            (4, 1, false)
        );
    }

    #[test]
    fn a_partial_line_past_the_limit_is_refused_after_earlier_replies() {
        let (served, answered, output) = lines(b"ok\n123456789", 0, false, 8);
        assert_eq!(answered, [b"ok".to_vec()]);
        assert_eq!(output, b"ok\nLONG\n");
        assert_eq!((served.consumed, served.close), (12, true));
    }

    #[test]
    fn at_eof_the_last_line_needs_no_lf() {
        let (served, answered, _) = lines(b"a\nb", 0, true, 8);
        assert_eq!(answered, [b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(served.consumed, 3);
        let (served, answered, _) = lines(b"", 0, true, 8);
        assert!(answered.is_empty());
        assert_eq!(served, Served::default());
    }
}
