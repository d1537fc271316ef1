//! The state record's format: versioned, length-prefixed, checksummed, and
//! read without trusting a byte of it.
//!
//! All integers little-endian. Version 4 (this build writes it):
//!
//! ```text
//! file    = magic "ONESHOTD" | version u32 | handed_over_at u64 | count u32
//!           | record * count | checksum u64
//! record  = length u32 (of what follows in the record)
//!           | dev u64 | ino u64 | id u64 | flags u8 | phase u8
//!           | lingering_us u64 | idle_us u64 | request_us u64
//!           | input_length u32 | input | output_length u32 | output
//!           | client | header_left_us u64 | header_length u32 | header
//!           | session | tls
//! client  = 1 (a Unix-socket client)
//!           | 4 | IPv4 address (4 bytes) | port u16
//!           | 6 | IPv6 address (16 bytes) | port u16
//! session = 0 (none opened yet)
//!           | 1 | service_length u8 | service | format u32
//!           | session_length u32 | session
//! tls     = 0 (a plain connection)
//!           | 1 | tls_length u32 | tls_state
//! ```
//!
//! Versions 1 to 3 are still read, so that an upgrade from a build that
//! wrote them keeps its connections: a version 1 record ends at `output`
//! (its connections' clients are their sockets' peers, and none awaits a
//! PROXY header), a version 2 record at `header` (no session: those builds
//! had none), a version 3 record at `session` (no TLS: those builds had
//! none).
//!
//! `tls_state` is a TLS connection's session (`tls::Session::write_state`:
//! its traffic secrets or keys, sequence numbers, and a record begun):
//! secret. The file holding it lives in a sealed memfd, never on a file
//! system, and the buffers that held it are wiped.
//!
//! `session` is the service's own record of the connection's session,
//! tagged with the service's name (only that service reads it back) and the
//! format it was written in.
//!
//! `client` is the connection's client: from its PROXY header, else its
//! transport's peer (the header is gone from the socket once read).
//! `header_left_us` is how long a connection still waiting for its PROXY
//! header had left, `u64::MAX` if it was not waiting; `header` is the part
//! of it received so far.
//!
//! `handed_over_at` is `CLOCK_MONOTONIC` in microseconds when the record
//! was written: the next instance adds the time since to every duration,
//! so timers run on across the restart. `flags`: bit 0 the client
//! half-closed, bit 1 it has spoken. `phase`: 0 open, 1 closing, 2 closing
//! after a request timeout, 3 lingering, 4 lingering after a request
//! timeout. `request_us` is `u64::MAX` when no request is incomplete. The
//! checksum is FNV-1a (64 bits) over everything before it: a torn or
//! corrupted file is rejected whole rather than half believed.

use std::time::Duration;

use super::{Carried, CarriedHeader, CarriedPhase, CarriedSession, CarriedTls, SocketKey};
use crate::service::{ConnectionId, Peer};

const MAGIC: &[u8; 8] = b"ONESHOTD";
/// The format version this build writes (it also reads versions 1 and 2).
pub(crate) const VERSION: u32 = 4;
/// No request is incomplete.
const NO_REQUEST: u64 = u64::MAX;
/// Not waiting for a PROXY header.
const NO_HEADER: u64 = u64::MAX;

/// Why a state file was not read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    /// It ends before its own lengths say it does.
    #[error("truncated")]
    Truncated,
    /// Not a state file of ours.
    #[error("not a oneshotd state file")]
    BadMagic,
    /// Written by a build with a format this one does not know.
    #[error("unknown format version {0} (this build reads 1 to {VERSION})")]
    UnknownVersion(u32),
    /// The checksum does not match: torn or corrupted.
    #[error("checksum mismatch")]
    Checksum,
    /// A field holds a value no writer produces.
    #[error("corrupt: {0}")]
    Corrupt(&'static str),
}

/// What a state file holds.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct StateFile {
    /// `CLOCK_MONOTONIC` when it was written.
    pub handed_over_at: Duration,
    pub records: Vec<(SocketKey, Carried)>,
}

/// Writes the state file for `records`, as of `handed_over_at`.
/// Writes the state file. It may hold TLS secrets, so it is written into
/// a buffer sized for it once (a buffer that grew would leave copies of
/// its start behind, unwiped) and wiped when dropped.
pub(crate) fn encode(
    handed_over_at: Duration,
    records: &[(SocketKey, &Carried)],
) -> zeroize::Zeroizing<Vec<u8>> {
    encode_version(VERSION, handed_over_at, records)
}

/// At least what [`encode`] writes for `carried`.
fn encoded_len(carried: &Carried) -> usize {
    let fixed = 4 + 8 * 3 + 2 + 8 * 3 + 4 * 2 + 19 + 8 + 4 + 1 + 1;
    let header = carried.header.as_ref().map_or(0, |h| h.partial.len());
    let session = carried
        .session
        .as_ref()
        .map_or(0, |s| 1 + 255 + 4 + 4 + s.bytes.len());
    let tls = carried.tls.as_ref().map_or(0, |t| 4 + t.state.len());
    fixed + carried.input.len() + carried.output.len() + header + session + tls
}

/// [`encode`] in format `version` (1 only to test that it is still read).
fn encode_version(
    version: u32,
    handed_over_at: Duration,
    records: &[(SocketKey, &Carried)],
) -> zeroize::Zeroizing<Vec<u8>> {
    let capacity = 32 + records.iter().map(|(_, c)| encoded_len(c)).sum::<usize>();
    let mut out = zeroize::Zeroizing::new(Vec::with_capacity(capacity));
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    put_u64(&mut out, micros(handed_over_at));
    out.extend_from_slice(&(records.len() as u32).to_le_bytes());
    for (key, carried) in records {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        put_u64(&mut out, key.dev);
        put_u64(&mut out, key.ino);
        put_u64(&mut out, carried.id.0);
        out.push(u8::from(carried.peer_closed) | (u8::from(carried.spoke) << 1));
        let (phase, lingering) = match carried.phase {
            CarriedPhase::Open => (0, Duration::ZERO),
            CarriedPhase::Closing { timed_out } => (1 + u8::from(timed_out), Duration::ZERO),
            CarriedPhase::Lingering { timed_out, for_ } => (3 + u8::from(timed_out), for_),
        };
        out.push(phase);
        put_u64(&mut out, micros(lingering));
        put_u64(&mut out, micros(carried.idle_for));
        put_u64(&mut out, carried.request_for.map_or(NO_REQUEST, micros));
        put_bytes(&mut out, &carried.input);
        put_bytes(&mut out, &carried.output);
        if version >= 2 {
            put_client(&mut out, carried.peer.unwrap_or(Peer::Unix));
            match &carried.header {
                Some(header) => {
                    put_u64(&mut out, micros(header.left));
                    put_bytes(&mut out, &header.partial);
                }
                None => {
                    put_u64(&mut out, NO_HEADER);
                    put_bytes(&mut out, &[]);
                }
            }
        }
        if version >= 3 {
            match &carried.session {
                None => out.push(0),
                Some(session) => {
                    out.push(1);
                    // At most 255 bytes, cut at a character's start.
                    let name = &session.service;
                    let cut = (0..=name.len().min(u8::MAX as usize))
                        .rev()
                        .find(|&i| name.is_char_boundary(i))
                        .unwrap_or(0);
                    let name = &name.as_bytes()[..cut];
                    out.push(name.len() as u8);
                    out.extend_from_slice(name);
                    out.extend_from_slice(&session.format.to_le_bytes());
                    put_bytes(&mut out, &session.bytes);
                }
            }
        }
        if version >= 4 {
            match &carried.tls {
                None => out.push(0),
                Some(tls) => {
                    out.push(1);
                    put_bytes(&mut out, &tls.state);
                }
            }
        }
        let length = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&length.to_le_bytes());
    }
    let checksum = fnv1a(&out);
    put_u64(&mut out, checksum);
    out
}

/// Reads a state file; any inconsistency rejects it whole.
pub(crate) fn decode(bytes: &[u8]) -> Result<StateFile, FormatError> {
    let mut file = Reader(bytes);
    if file.take(MAGIC.len())? != MAGIC {
        return Err(FormatError::BadMagic);
    }
    let version = file.u32()?;
    if !(1..=VERSION).contains(&version) {
        return Err(FormatError::UnknownVersion(version));
    }
    let mut file = Reader(checked_body(bytes)?);
    let handed_over_at = Duration::from_micros(file.u64()?);
    let count = file.u32()? as usize;
    // Each record takes at least its fixed fields: a count that cannot fit
    // is corrupt, and must not size an allocation.
    if count > file.0.len() / 50 {
        return Err(FormatError::Corrupt("record count"));
    }
    let mut records = Vec::with_capacity(count);
    for _ in 0..count {
        let length = file.u32()? as usize;
        let mut record = Reader(file.take(length)?);
        let key = SocketKey {
            dev: record.u64()?,
            ino: record.u64()?,
        };
        let id = ConnectionId(record.u64()?);
        let flags = record.u8()?;
        if flags & !0b11 != 0 {
            return Err(FormatError::Corrupt("flags"));
        }
        let phase = record.u8()?;
        let lingering = record.duration()?;
        let phase = match phase {
            0 => CarriedPhase::Open,
            1 | 2 => CarriedPhase::Closing {
                timed_out: phase == 2,
            },
            3 | 4 => CarriedPhase::Lingering {
                timed_out: phase == 4,
                for_: lingering,
            },
            _ => return Err(FormatError::Corrupt("phase")),
        };
        let idle_for = record.duration()?;
        let request_for = match record.u64()? {
            NO_REQUEST => None,
            us => Some(Duration::from_micros(us)),
        };
        let input = record.bytes()?.to_vec();
        let output = record.bytes()?.to_vec();
        let (peer, header) = if version >= 2 {
            let peer = record.client()?;
            let left = record.u64()?;
            let partial = record.bytes()?;
            let header = match left {
                NO_HEADER if partial.is_empty() => None,
                NO_HEADER => return Err(FormatError::Corrupt("header bytes without a header")),
                us => Some(CarriedHeader {
                    left: Duration::from_micros(us),
                    partial: partial.to_vec(),
                }),
            };
            (Some(peer), header)
        } else {
            (None, None)
        };
        let session = if version >= 3 {
            match record.u8()? {
                0 => None,
                1 => {
                    let length = record.u8()? as usize;
                    let service = std::str::from_utf8(record.take(length)?)
                        .map_err(|_| FormatError::Corrupt("session's service"))?
                        .to_owned();
                    let format = record.u32()?;
                    let bytes = record.bytes()?.to_vec();
                    Some(CarriedSession {
                        service,
                        format,
                        bytes,
                    })
                }
                _ => return Err(FormatError::Corrupt("session")),
            }
        } else {
            None
        };
        let tls = if version >= 4 {
            match record.u8()? {
                0 => None,
                // Usable only once the restore has proven it (see
                // `match_records`).
                1 => Some(CarriedTls {
                    state: zeroize::Zeroizing::new(record.bytes()?.to_vec()),
                    usable: false,
                }),
                _ => return Err(FormatError::Corrupt("tls")),
            }
        } else {
            None
        };
        if !record.0.is_empty() {
            return Err(FormatError::Corrupt("record length"));
        }
        records.push((
            key,
            Carried {
                id,
                input,
                output,
                peer_closed: flags & 1 != 0,
                spoke: flags & 2 != 0,
                phase,
                idle_for,
                request_for,
                peer,
                header,
                session,
                tls,
            },
        ));
    }
    if !file.0.is_empty() {
        return Err(FormatError::Corrupt("bytes after the last record"));
    }
    Ok(StateFile {
        handed_over_at,
        records,
    })
}

mod codec;
#[cfg(test)]
mod tests;

use codec::{checked_body, fnv1a, micros, put_bytes, put_client, put_u64, Reader};
