//! Framing: finding the requests in what a connection has received, so
//! that a service writes only its answer. Lines have their own, tuned
//! function ([`serve_lines`]); any other protocol (a binary,
//! length-prefixed one such as Redis's RESP) says how to find one frame
//! ([`Decoder`]) and [`serve_frames`] does the rest.
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

/// What a [`Decoder`] found at the start of the bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<F> {
    /// A whole frame, `length` bytes long from the start of the bytes.
    Frame {
        /// The frame, as the service handles it.
        frame: F,
        /// How many bytes it took.
        length: usize,
    },
    /// Not all there yet: the bytes stay unconsumed, and come back with
    /// more after them.
    Incomplete,
    /// Not this protocol: `reply` is appended, and the connection closes
    /// once the replies before it are delivered.
    Invalid {
        /// The protocol's answer to bad input (e.g. Redis's
        /// `-ERR Protocol error: ...`).
        reply: Vec<u8>,
    },
}

/// A protocol's framing, apart from what it does with each frame (the
/// idea of tokio-util's `Decoder`, for a synchronous, borrowing service).
///
/// A frame that arrives in pieces is presented again as it grows, so the
/// work per call must not grow with what is already there: a
/// length-prefixed protocol reads its lengths and skips each payload by
/// its length, never scanning it, and refuses a length past
/// `max_request_bytes` at once (the connection would refuse to buffer it
/// anyway, with less to say).
pub trait Decoder {
    /// One frame, borrowing from the bytes it was found in.
    type Frame<'a>;

    /// Finds the frame at the start of `bytes`.
    fn decode<'a>(&mut self, bytes: &'a [u8], max_request_bytes: usize)
        -> Decoded<Self::Frame<'a>>;
}

/// What a frame's handler decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Serve the next frame.
    Continue,
    /// Close the connection once the replies so far are delivered (a
    /// protocol's QUIT).
    Close,
}

/// Serves every whole frame at the start of `input.bytes`, in order:
/// `decoder` finds each, `handle` answers it (appending to the output) and
/// says whether to go on. An incomplete frame at the end stays unconsumed
/// for the next call; bad input gets the decoder's reply and a close.
pub fn serve_frames<D: Decoder>(
    input: &Input<'_>,
    output: &mut Vec<u8>,
    decoder: &mut D,
    mut handle: impl FnMut(D::Frame<'_>, &mut Vec<u8>) -> Flow,
) -> Served {
    let bytes = input.bytes;
    let mut served = Served::default();
    while served.consumed < bytes.len() {
        match decoder.decode(&bytes[served.consumed..], input.max_request_bytes) {
            Decoded::Incomplete => break,
            Decoded::Invalid { reply } => {
                output.extend_from_slice(&reply);
                return Served {
                    consumed: bytes.len(),
                    close: true,
                    ..served
                };
            }
            Decoded::Frame { frame, length } => {
                served.consumed += length;
                served.requests += 1;
                if handle(frame, output) == Flow::Close {
                    return Served {
                        consumed: bytes.len(),
                        close: true,
                        ..served
                    };
                }
            }
        }
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
            tls: None,
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

#[cfg(test)]
mod frame_tests {
    use super::*;
    use crate::service::{ConnectionId, Peer};

    /// A byte of length, then that many bytes; length 0xff is invalid.
    struct Prefixed;

    impl Decoder for Prefixed {
        type Frame<'a> = &'a [u8];

        fn decode<'a>(&mut self, bytes: &'a [u8], max: usize) -> Decoded<&'a [u8]> {
            match bytes.first() {
                None => Decoded::Incomplete,
                Some(0xff) => Decoded::Invalid {
                    reply: b"bad\n".to_vec(),
                },
                Some(&n) if n as usize > max => Decoded::Invalid {
                    reply: b"long\n".to_vec(),
                },
                Some(&n) if bytes.len() <= n as usize => Decoded::Incomplete,
                Some(&n) => Decoded::Frame {
                    frame: &bytes[1..=n as usize],
                    length: 1 + n as usize,
                },
            }
        }
    }

    fn frames(bytes: &[u8]) -> (Served, Vec<u8>) {
        let input = Input {
            connection: ConnectionId(1),
            peer: &Peer::Unix,
            tls: None,
            bytes,
            seen: 0,
            eof: false,
            max_request_bytes: 8,
        };
        let mut output = Vec::new();
        let served = serve_frames(&input, &mut output, &mut Prefixed, |frame, out| {
            out.extend_from_slice(frame);
            out.push(b'\n');
            if frame == b"quit" {
                Flow::Close
            } else {
                Flow::Continue
            }
        });
        (served, output)
    }

    #[test]
    fn whole_frames_are_served_and_a_partial_one_waits() {
        let (served, output) = frames(b"\x02ab\x01c\x03de");
        assert_eq!(output, b"ab\nc\n");
        assert_eq!(
            (served.consumed, served.requests, served.close),
            (5, 2, false)
        );
    }

    #[test]
    fn bad_input_is_answered_after_earlier_replies_then_closed() {
        let (served, output) = frames(b"\x02ab\xffzz");
        assert_eq!(output, b"ab\nbad\n");
        assert_eq!((served.consumed, served.close), (6, true));
        let (served, output) = frames(b"\x09");
        assert_eq!(output, b"long\n");
        assert!(served.close);
    }

    #[test]
    fn a_handler_can_close_after_its_reply() {
        let (served, output) = frames(b"\x04quit\x02ab");
        assert_eq!(output, b"quit\n");
        assert_eq!(
            (served.consumed, served.requests, served.close),
            (8, 1, true)
        );
    }
}
