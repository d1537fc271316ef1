//! The clients on the far side of the faulty wire: a pipelining,
//! half-closing client that also splits lines over many segments and sends
//! lines near `max_line_bytes`, checked byte for byte against the model;
//! and the deliberate offenders (silent mid-line, silent when idle, a line
//! too long) whose timing and last words are checked.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::forwarder::SplitMix64;
use super::netns::NsHandle;
use crate::util::{unacked_bytes, upper};

/// One write, or one line (or run of lines) written in pieces, each piece
/// acknowledged before the next is written so that it is a segment of its
/// own whatever TCP would have coalesced.
enum Piece {
    Burst(Vec<u8>),
    Split(Vec<Vec<u8>>),
}

/// What one pipelining client sends, and the exact bytes it must get back.
struct Script {
    pieces: Vec<Piece>,
    expected: Vec<u8>,
    lines: usize,
}

/// What a pipelining client saw.
pub struct Outcome {
    pub lines: usize,
    pub verified: usize,
    /// The longest wait between two reads that returned reply bytes.
    pub longest_gap: Duration,
    pub error: Option<String>,
}

/// A line of `len` bytes (no LF) from the whole byte range but LF: letters
/// of both cases, digits, CR, NUL, UTF-8 and binary bytes.
fn line(rng: &mut SplitMix64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| {
            let r = rng.next();
            let b = if r & 1 == 0 {
                b'a' + ((r >> 8) % 26) as u8
            } else {
                (r >> 8) as u8
            };
            if b == b'\n' {
                b'q'
            } else {
                b
            }
        })
        .collect()
}

/// `n` lines of 1 to 80 bytes.
fn short(rng: &mut SplitMix64, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|_| {
            let len = 1 + (rng.next() as usize) % 80;
            line(rng, len)
        })
        .collect()
}

/// Cuts `bytes` at `parts - 1` random places (some pieces a byte long).
fn split(rng: &mut SplitMix64, bytes: Vec<u8>, parts: usize) -> Vec<Vec<u8>> {
    let mut cuts: Vec<usize> = (1..parts)
        .map(|_| 1 + (rng.next() as usize) % (bytes.len() - 1))
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = Vec::new();
    let mut at = 0;
    for cut in cuts.into_iter().chain([bytes.len()]) {
        out.push(bytes[at..cut].to_vec());
        at = cut;
    }
    out
}

impl Script {
    fn new(id: usize, max_line: usize, seed: u64) -> Script {
        let mut rng = SplitMix64(seed ^ (id as u64).wrapping_mul(0x9e37_79b9));
        let mut script = Script {
            pieces: Vec::new(),
            expected: Vec::new(),
            lines: 0,
        };
        let burst = short(&mut rng, 8);
        script.push_lines(&burst, |b| vec![Piece::Burst(b)]);
        let len = 200 + (rng.next() as usize) % 200;
        let long = vec![line(&mut rng, len)];
        script.push_lines(&long, |b| vec![Piece::Split(split(&mut rng, b, 8))]);
        // At the limit or one byte short of it (half the clients each, to
        // keep the load modest at 1 Mbit/s), behind short lines.
        let mut near = short(&mut rng, 3);
        near.push(line(&mut rng, max_line - id % 2));
        script.push_lines(&near, |b| vec![Piece::Burst(b)]);
        // Segment boundaries that fall anywhere, across lines too.
        let run = short(&mut rng, 4);
        script.push_lines(&run, |b| vec![Piece::Split(split(&mut rng, b, 6))]);
        let burst = short(&mut rng, 8);
        script.push_lines(&burst, |b| vec![Piece::Burst(b)]);
        if id % 2 == 0 {
            // A last line without LF, answered as if it had one at EOF.
            let last = line(&mut rng, 20);
            script.expected.extend(upper(&last));
            script.expected.push(b'\n');
            script.lines += 1;
            script.pieces.push(Piece::Burst(last));
        }
        script
    }

    fn push_lines(&mut self, lines: &[Vec<u8>], pieces: impl FnOnce(Vec<u8>) -> Vec<Piece>) {
        let mut bytes = Vec::new();
        for l in lines {
            bytes.extend_from_slice(l);
            bytes.push(b'\n');
            self.expected.extend(upper(l));
            self.expected.push(b'\n');
        }
        self.lines += lines.len();
        self.pieces.extend(pieces(bytes));
    }
}

/// Connects from inside the client namespace, with every wait bounded.
fn connect(ns: &NsHandle, addr: SocketAddr, deadline: Instant) -> Result<TcpStream, String> {
    ns.enter();
    let left = deadline.saturating_duration_since(Instant::now());
    let stream = TcpStream::connect_timeout(&addr, left).map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(left))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(left))
        .map_err(|e| e.to_string())?;
    Ok(stream)
}

/// Everything the server sends until it closes: the bytes, when the first
/// arrived, and the longest wait between two reads.
struct Received {
    bytes: Vec<u8>,
    first: Option<Instant>,
    eof: Option<Instant>,
    longest_gap: Duration,
    error: Option<String>,
}

fn read_to_eof(mut stream: &TcpStream, deadline: Instant) -> Received {
    let mut got = Received {
        bytes: Vec::new(),
        first: None,
        eof: None,
        longest_gap: Duration::ZERO,
        error: None,
    };
    let mut buf = [0u8; 16384];
    let mut last = Instant::now();
    // Each read returns at least one byte or ends the loop; the count
    // bounds it all the same.
    for _ in 0..1_000_000 {
        if Instant::now() >= deadline {
            got.error = Some("no EOF before the deadline".into());
            break;
        }
        match stream.read(&mut buf) {
            Ok(0) => {
                got.eof = Some(Instant::now());
                break;
            }
            Ok(n) => {
                let now = Instant::now();
                got.first.get_or_insert(now);
                got.longest_gap = got.longest_gap.max(now - last);
                last = now;
                got.bytes.extend_from_slice(&buf[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                got.error = Some(format!("read: {e}"));
                break;
            }
        }
    }
    got
}

/// Waits until the server's kernel has acknowledged all we sent. There is
/// no event for that; the kernel's count is polled, every millisecond.
fn wait_acked(stream: &TcpStream, deadline: Instant) -> Result<(), String> {
    for _ in 0..CLIENT_POLLS {
        if unacked_bytes(stream) == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Err("a piece was not acknowledged before the deadline".into())
}

/// Bounds `wait_acked`'s polls (a minute of them) besides its deadline.
const CLIENT_POLLS: usize = 60_000;

/// Compares the replies with the model; counts the replies that match, in
/// order, up to the first that does not.
fn verify(expected: &[u8], got: &[u8]) -> (usize, Option<String>) {
    let mut at = 0;
    let mut verified = 0;
    for want in expected.split_inclusive(|b| *b == b'\n') {
        let end = at + want.len();
        if got.len() < end || &got[at..end] != want {
            let seen = &got[at.min(got.len())..end.min(got.len())];
            let shown = want.len().min(60);
            return (
                verified,
                Some(format!(
                    "reply {verified} (byte {at}) differs: want {:?}.., got {:?}..",
                    String::from_utf8_lossy(&want[..shown]),
                    String::from_utf8_lossy(&seen[..seen.len().min(60)])
                )),
            );
        }
        verified += 1;
        at = end;
    }
    if got.len() > at {
        return (
            verified,
            Some(format!("{} bytes past the last reply", got.len() - at)),
        );
    }
    (verified, None)
}

/// Runs one pipelining client to its end.
pub fn pipelining(
    ns: NsHandle,
    addr: SocketAddr,
    id: usize,
    max_line: usize,
    seed: u64,
    deadline: Instant,
) -> Outcome {
    let script = Script::new(id, max_line, seed);
    let mut outcome = Outcome {
        lines: script.lines,
        verified: 0,
        longest_gap: Duration::ZERO,
        error: None,
    };
    let stream = match connect(&ns, addr, deadline) {
        Ok(s) => s,
        Err(e) => {
            outcome.error = Some(e);
            return outcome;
        }
    };
    // Replies are read while the requests go out: a client that only read
    // at the end could stall on a full window, and that is not the test.
    let reader = {
        let stream = stream.try_clone().expect("clone the client socket");
        std::thread::spawn(move || read_to_eof(&stream, deadline))
    };
    let sent = send(&stream, &script.pieces, deadline);
    let got = reader.join().expect("the reader panicked");
    let (verified, mismatch) = verify(&script.expected, &got.bytes);
    outcome.verified = verified;
    outcome.longest_gap = got.longest_gap;
    outcome.error = sent.err().or(got.error).or(mismatch);
    outcome
}

fn send(mut stream: &TcpStream, pieces: &[Piece], deadline: Instant) -> Result<(), String> {
    for piece in pieces {
        match piece {
            Piece::Burst(bytes) => stream.write_all(bytes).map_err(|e| e.to_string())?,
            Piece::Split(parts) => {
                for part in parts {
                    wait_acked(stream, deadline)?;
                    stream.write_all(part).map_err(|e| e.to_string())?;
                }
            }
        }
    }
    stream
        .shutdown(Shutdown::Write)
        .map_err(|e| format!("half-close: {e}"))
}

/// Sends one line and checks its reply, then goes silent: mid-line (the
/// request timeout's case) if `partial` is given, idle otherwise. Returns
/// everything received after the silence began and how long after it the
/// first byte (`partial`) or the close (idle) came.
pub fn falls_silent(
    ns: NsHandle,
    addr: SocketAddr,
    partial: Option<&[u8]>,
    deadline: Instant,
) -> Result<(Vec<u8>, Duration), String> {
    let mut stream = connect(&ns, addr, deadline)?;
    // Measured from before the request goes out: the server's clock for
    // this connection cannot start earlier than that.
    let mut silent_from = Instant::now();
    stream.write_all(b"hello\n").map_err(|e| e.to_string())?;
    let mut reply = [0u8; 6];
    stream
        .read_exact(&mut reply)
        .map_err(|e| format!("read the reply to hello: {e}"))?;
    if &reply != b"HELLO\n" {
        return Err(format!(
            "reply to hello: {:?}",
            String::from_utf8_lossy(&reply)
        ));
    }
    if let Some(partial) = partial {
        wait_acked(&stream, deadline)?;
        silent_from = Instant::now();
        stream.write_all(partial).map_err(|e| e.to_string())?;
    }
    let got = read_to_eof(&stream, deadline);
    if let Some(e) = got.error {
        return Err(e);
    }
    let at = if partial.is_some() {
        got.first
    } else {
        got.eof
    };
    let at = at.ok_or("nothing received after the silence")?;
    Ok((got.bytes, at - silent_from))
}

/// Sends a line, then one a byte past `max_line`, then another, and
/// half-closes; returns all it got back.
pub fn too_long(
    ns: NsHandle,
    addr: SocketAddr,
    max_line: usize,
    deadline: Instant,
) -> Result<Vec<u8>, String> {
    let mut stream = connect(&ns, addr, deadline)?;
    let mut request = b"before\n".to_vec();
    request.extend(std::iter::repeat_n(b'x', max_line + 1));
    request.extend_from_slice(b"\nafter\n");
    stream.write_all(&request).map_err(|e| e.to_string())?;
    stream
        .shutdown(Shutdown::Write)
        .map_err(|e| e.to_string())?;
    let got = read_to_eof(&stream, deadline);
    match got.error {
        Some(e) => Err(e),
        None => Ok(got.bytes),
    }
}
