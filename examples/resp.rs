//! A key-value server speaking the Redis protocol (RESP2), on the oneshotd
//! library: what a stateful protocol looks like on it.
//!
//! - The data lives in a map shared by the workers, split into shards so
//!   that workers rarely wait for each other.
//! - The framing is the library's [`Decoder`] seam: this file says how to
//!   find one RESP frame (skipping each bulk by its length, never scanning
//!   it), [`serve_frames`] does the rest.
//! - What Redis keeps per client — the selected database, the client's
//!   name — lives in the connection's session ([`Stateful`]): handed to
//!   every request with no lock, and carried across a restart (`systemctl
//!   restart`), so a client that ran `SELECT 3` still writes to database 3
//!   after it.
//! - Commands: PING, ECHO, GET, SET (EX, PX), DEL, EXISTS, INCR, DECR, MGET,
//!   MSET, SELECT (0 to 15), CLIENT SETNAME and GETNAME, DBSIZE, FLUSHDB,
//!   QUIT; anything else gets an error worded as Redis words it. A
//!   malformed frame, or a bulk longer than `max_line_bytes`, gets
//!   `-ERR Protocol error: ...` and the connection closes; nothing else is
//!   disturbed.
//!
//! ```text
//! cargo run --release --example resp                 # 127.0.0.1:6380
//! redis-cli -p 6380 set greeting hello               # OK
//! redis-benchmark -p 6380 -t set,get -q
//! ```

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use oneshotd::cli::Program;
use oneshotd::framing::{serve_frames, Decoded, Decoder, Flow};
use oneshotd::service::{ConnectionId, Input, Peer, Served, Stateful};

const PROGRAM: Program = Program {
    name: "resp",
    version: "1.0.0",
    about: "resp: a key-value server speaking the Redis protocol (RESP2).",
    default_config: "/etc/resp.toml",
    default_listen: &["127.0.0.1:6380"],
};

/// Databases, as in Redis: `SELECT 0` to `SELECT 15`.
const DATABASES: usize = 16;
const SHARDS: usize = 64;
/// Arguments of one command at most (Redis allows far more; a client has
/// no use for them here).
const MAX_ARGUMENTS: usize = 1024 * 1024;

struct Entry {
    value: Vec<u8>,
    expires: Option<Instant>,
}

impl Entry {
    /// Not expired. The clock is read only for a key with an expiry.
    fn live(&self) -> bool {
        self.expires.is_none_or(|at| Instant::now() < at)
    }
}

/// One shard: a map per database, so that a lookup borrows the key
/// instead of building a `(database, key)` pair.
type Shard = [HashMap<Vec<u8>, Entry>; DATABASES];

/// The keys of every database, in shards by key.
struct Store {
    shards: Vec<Mutex<Shard>>,
    hasher: RandomState,
}

impl Store {
    fn new() -> Self {
        Store {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(std::array::from_fn(|_| HashMap::new())))
                .collect(),
            hasher: RandomState::new(),
        }
    }

    /// The map of database `db` that holds `key`, locked.
    fn map(&self, db: u8, key: &[u8]) -> MappedGuard<'_> {
        let index = self.hasher.hash_one(key) as usize % SHARDS;
        MappedGuard {
            shard: self.shards[index].lock().unwrap_or_else(|p| p.into_inner()),
            db: db as usize,
        }
    }

    /// Calls `read` with the value at `key`, `None` if there is none, under
    /// the shard's lock: the value is copied once, into the reply.
    fn read<R>(&self, db: u8, key: &[u8], read: impl FnOnce(Option<&[u8]>) -> R) -> R {
        let mut map = self.map(db, key);
        match map.get(key) {
            Some(entry) if entry.live() => read(Some(&entry.value)),
            Some(_) => {
                map.remove(key);
                read(None)
            }
            None => read(None),
        }
    }

    fn set(&self, db: u8, key: &[u8], value: Vec<u8>, expires: Option<Instant>) {
        let entry = Entry { value, expires };
        let mut map = self.map(db, key);
        // Overwriting keeps the key's allocation.
        match map.get_mut(key) {
            Some(old) => *old = entry,
            None => {
                map.insert(key.to_vec(), entry);
            }
        }
    }

    fn remove(&self, db: u8, key: &[u8]) -> bool {
        self.map(db, key)
            .remove(key)
            .is_some_and(|entry| entry.live())
    }

    /// Adds `by` to the integer at `key` (0 if absent), as INCR and DECR.
    fn add(&self, db: u8, key: &[u8], by: i64) -> Result<i64, &'static str> {
        let mut map = self.map(db, key);
        let entry = map.entry(key.to_vec()).or_insert(Entry {
            value: b"0".to_vec(),
            expires: None,
        });
        if !entry.live() {
            *entry = Entry {
                value: b"0".to_vec(),
                expires: None,
            };
        }
        let current =
            integer_argument(&entry.value).ok_or("value is not an integer or out of range")?;
        let next = current
            .checked_add(by)
            .ok_or("increment or decrement would overflow")?;
        entry.value = next.to_string().into_bytes();
        Ok(next)
    }

    fn size(&self, db: u8) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
                shard[db as usize]
                    .values()
                    .filter(|entry| entry.live())
                    .count()
            })
            .sum()
    }

    fn flush(&self, db: u8) {
        for shard in &self.shards {
            shard.lock().unwrap_or_else(|p| p.into_inner())[db as usize].clear();
        }
    }
}

/// A locked shard, seen as one database's map.
struct MappedGuard<'a> {
    shard: MutexGuard<'a, Shard>,
    db: usize,
}

impl std::ops::Deref for MappedGuard<'_> {
    type Target = HashMap<Vec<u8>, Entry>;
    fn deref(&self) -> &Self::Target {
        &self.shard[self.db]
    }
}

impl std::ops::DerefMut for MappedGuard<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.shard[self.db]
    }
}

/// What Redis keeps per client.
struct Client {
    db: u8,
    name: Option<Vec<u8>>,
}

/// The server: its store, shared by every connection.
struct Resp {
    store: Store,
}

/// RESP2's framing: an array of bulk strings (what every client sends),
/// or an inline command (words on one line, as typed into a terminal).
/// Each bulk is skipped by its length, never scanned: a long value that
/// arrives in pieces costs one look at its headers per piece.
struct Frames;

/// A command's arguments, borrowed from the input: the first few in place
/// (every command but a long MGET, MSET or DEL), the rest in a `Vec`, so
/// that a command costs no allocation to find.
struct Arguments<'a> {
    first: [&'a [u8]; Arguments::IN_PLACE],
    count: usize,
    rest: Vec<&'a [u8]>,
}

impl<'a> Arguments<'a> {
    const IN_PLACE: usize = 8;

    fn new() -> Self {
        Arguments {
            first: [&[]; Arguments::IN_PLACE],
            count: 0,
            rest: Vec::new(),
        }
    }

    fn push(&mut self, argument: &'a [u8]) {
        if self.count < Arguments::IN_PLACE {
            self.first[self.count] = argument;
        } else {
            if self.rest.is_empty() {
                self.rest.extend_from_slice(&self.first);
            }
            self.rest.push(argument);
        }
        self.count += 1;
    }

    fn as_slice(&self) -> &[&'a [u8]] {
        if self.count <= Arguments::IN_PLACE {
            &self.first[..self.count]
        } else {
            &self.rest
        }
    }
}

impl Decoder for Frames {
    type Frame<'a> = Arguments<'a>;

    fn decode<'a>(&mut self, bytes: &'a [u8], max_bulk: usize) -> Decoded<Arguments<'a>> {
        let invalid = |why: &str| Decoded::Invalid {
            reply: format!("-ERR Protocol error: {why}\r\n").into_bytes(),
        };
        if bytes.first() != Some(&b'*') {
            let Some(end) = bytes.iter().position(|&b| b == b'\n') else {
                return if bytes.len() > max_bulk {
                    invalid("too big inline request")
                } else {
                    Decoded::Incomplete
                };
            };
            let line = bytes[..end].strip_suffix(b"\r").unwrap_or(&bytes[..end]);
            let mut words = Arguments::new();
            for word in line.split(|b| b.is_ascii_whitespace()) {
                if !word.is_empty() {
                    words.push(word);
                }
            }
            return Decoded::Frame {
                frame: words,
                length: end + 1,
            };
        }
        let (count, mut at) = match number(bytes, 1) {
            Ok(Some(found)) => found,
            Ok(None) => return Decoded::Incomplete,
            Err(()) => return invalid("invalid multibulk length"),
        };
        if count > MAX_ARGUMENTS as i64 {
            return invalid("invalid multibulk length");
        }
        let mut arguments = Arguments::new();
        for _ in 0..count.max(0) {
            match bytes.get(at) {
                None => return Decoded::Incomplete,
                Some(b'$') => {}
                Some(&other) => {
                    return invalid(&format!("expected '$', got '{}'", other as char));
                }
            }
            let (length, start) = match number(bytes, at + 1) {
                Ok(Some(found)) => found,
                Ok(None) => return Decoded::Incomplete,
                Err(()) => return invalid("invalid bulk length"),
            };
            if length < 0 || length as usize > max_bulk {
                return invalid("invalid bulk length");
            }
            let end = start + length as usize;
            if bytes.len() < end + 2 {
                return Decoded::Incomplete;
            }
            if &bytes[end..end + 2] != b"\r\n" {
                return invalid("invalid bulk length");
            }
            arguments.push(&bytes[start..end]);
            at = end + 2;
        }
        Decoded::Frame {
            frame: arguments,
            length: at,
        }
    }
}

/// Reads a `\r\n`-terminated number after a type byte at `at`; returns the
/// number and where the line ends, `Ok(None)` if the line is not all there.
fn number(bytes: &[u8], at: usize) -> Result<Option<(i64, usize)>, ()> {
    let Some(end) = bytes[at..].windows(2).position(|pair| pair == b"\r\n") else {
        // A number line longer than any number: not RESP.
        return if bytes.len() - at > 32 {
            Err(())
        } else {
            Ok(None)
        };
    };
    let text = std::str::from_utf8(&bytes[at..at + end]).map_err(|_| ())?;
    let value = text.parse().map_err(|_| ())?;
    Ok(Some((value, at + end + 2)))
}

// The replies are written straight into the output (a `Vec` never fails
// a write), with no string built on the way.

fn simple(output: &mut Vec<u8>, text: &str) {
    output.push(b'+');
    output.extend_from_slice(text.as_bytes());
    output.extend_from_slice(b"\r\n");
}

fn error(output: &mut Vec<u8>, text: &str) {
    output.push(b'-');
    output.extend_from_slice(text.as_bytes());
    output.extend_from_slice(b"\r\n");
}

fn integer(output: &mut Vec<u8>, value: i64) {
    let _ = write!(output, ":{value}\r\n");
}

fn bulk(output: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        None => output.extend_from_slice(b"$-1\r\n"),
        Some(value) => {
            let _ = write!(output, "${}\r\n", value.len());
            output.extend_from_slice(value);
            output.extend_from_slice(b"\r\n");
        }
    }
}

fn wrong_arity(output: &mut Vec<u8>, command: &str) {
    error(
        output,
        &format!("ERR wrong number of arguments for '{command}' command"),
    );
}

/// An integer argument, as Redis reads one.
/// An integer, as Redis reads one: decimal digits with an optional `-`,
/// no sign `+`, no leading zero (so that a number has one spelling), and
/// within 64 bits.
fn integer_argument(argument: &[u8]) -> Option<i64> {
    let digits = argument.strip_prefix(b"-").unwrap_or(argument);
    let canonical = match digits {
        [] => false,
        [b'0'] => argument.len() == 1,
        [first, ..] => *first != b'0' && digits.iter().all(u8::is_ascii_digit),
    };
    if !canonical {
        return None;
    }
    std::str::from_utf8(argument).ok()?.parse().ok()
}

impl Resp {
    /// Runs one command; `false`: close the connection once the reply is
    /// out (QUIT).
    fn run(&self, client: &mut Client, arguments: &[&[u8]], output: &mut Vec<u8>) -> bool {
        let Some((name, arguments)) = arguments.split_first() else {
            return true;
        };
        // Lowercased on the stack: every command name is short, and one that
        // is not (or is not text) is no command.
        let mut lowered = [0u8; 16];
        let command = match lowered.get_mut(..name.len()) {
            Some(lowered) => {
                lowered.copy_from_slice(name);
                lowered.make_ascii_lowercase();
                std::str::from_utf8(lowered).unwrap_or("")
            }
            None => "",
        };
        let db = client.db;
        let store = &self.store;
        match (command, arguments) {
            ("ping", []) => simple(output, "PONG"),
            ("ping", [message]) => bulk(output, Some(message)),
            ("echo", [message]) => bulk(output, Some(message)),
            ("get", [key]) => store.read(db, key, |value| bulk(output, value)),
            ("set", [key, value, options @ ..]) => {
                let expires = match options {
                    [] => None,
                    [unit, amount] => {
                        let scale = match unit.to_ascii_lowercase().as_slice() {
                            b"ex" => 1000,
                            b"px" => 1,
                            _ => {
                                error(output, "ERR syntax error");
                                return true;
                            }
                        };
                        let at = integer_argument(amount)
                            .filter(|&n| n > 0)
                            .and_then(|n| (n as u64).checked_mul(scale))
                            .and_then(|ms| Instant::now().checked_add(Duration::from_millis(ms)));
                        match at {
                            Some(at) => Some(at),
                            None => {
                                error(output, "ERR invalid expire time in 'set' command");
                                return true;
                            }
                        }
                    }
                    _ => {
                        error(output, "ERR syntax error");
                        return true;
                    }
                };
                store.set(db, key, value.to_vec(), expires);
                simple(output, "OK");
            }
            ("del", keys) if !keys.is_empty() => {
                let removed = keys.iter().filter(|key| store.remove(db, key)).count();
                integer(output, removed as i64);
            }
            ("exists", keys) if !keys.is_empty() => {
                let found = keys
                    .iter()
                    .filter(|key| store.read(db, key, |value| value.is_some()))
                    .count();
                integer(output, found as i64);
            }
            ("incr" | "decr", [key]) => {
                let by = if command == "incr" { 1 } else { -1 };
                match store.add(db, key, by) {
                    Ok(value) => integer(output, value),
                    Err(why) => error(output, &format!("ERR {why}")),
                }
            }
            ("mget", keys) if !keys.is_empty() => {
                let _ = write!(output, "*{}\r\n", keys.len());
                for key in keys {
                    store.read(db, key, |value| bulk(output, value));
                }
            }
            ("mset", pairs) if !pairs.is_empty() && pairs.len() % 2 == 0 => {
                for pair in pairs.chunks(2) {
                    store.set(db, pair[0], pair[1].to_vec(), None);
                }
                simple(output, "OK");
            }
            ("select", [index]) => match integer_argument(index) {
                Some(index) if (0..DATABASES as i64).contains(&index) => {
                    client.db = index as u8;
                    simple(output, "OK");
                }
                Some(_) => error(output, "ERR DB index is out of range"),
                None => error(output, "ERR value is not an integer or out of range"),
            },
            ("client", [sub, rest @ ..]) => match (sub.to_ascii_lowercase().as_slice(), rest) {
                (b"setname", [name]) => {
                    if name.iter().any(|b| !(b'!'..=b'~').contains(b)) {
                        error(
                            output,
                            "ERR Client names cannot contain spaces, newlines or special characters.",
                        );
                    } else {
                        client.name = (!name.is_empty()).then(|| name.to_vec());
                        simple(output, "OK");
                    }
                }
                (b"getname", []) => bulk(output, client.name.as_deref()),
                (b"setname", _) => wrong_arity(output, "client|setname"),
                (b"getname", _) => wrong_arity(output, "client|getname"),
                _ => error(
                    output,
                    &format!(
                        "ERR unknown subcommand '{}'. Try CLIENT HELP.",
                        String::from_utf8_lossy(sub)
                    ),
                ),
            },
            ("dbsize", []) => integer(output, store.size(db) as i64),
            ("flushdb", []) => {
                store.flush(db);
                simple(output, "OK");
            }
            ("quit", _) => {
                simple(output, "OK");
                return false;
            }
            (
                "ping" | "echo" | "get" | "set" | "del" | "exists" | "incr" | "decr" | "mget"
                | "mset" | "select" | "client" | "dbsize" | "flushdb",
                _,
            ) => wrong_arity(output, command),
            _ => {
                let shown: String = arguments
                    .iter()
                    .map(|a| format!("'{}' ", String::from_utf8_lossy(a)))
                    .collect();
                error(
                    output,
                    &format!(
                        "ERR unknown command '{}', with args beginning with: {shown}",
                        String::from_utf8_lossy(name)
                    ),
                );
            }
        }
        true
    }
}

impl Stateful for Resp {
    type Session = Client;

    fn open(&self, _connection: ConnectionId, _peer: &Peer) -> Client {
        Client { db: 0, name: None }
    }

    fn serve(&self, client: &mut Client, input: Input<'_>, output: &mut Vec<u8>) -> Served {
        serve_frames(
            &input,
            output,
            &mut Frames,
            |arguments, output| match self.run(client, arguments.as_slice(), output) {
                true => Flow::Continue,
                false => Flow::Close,
            },
        )
    }

    fn request_timeout(&self, _client: &mut Client, _output: &mut Vec<u8>) {}

    /// Carried across a restart: the database and the name.
    fn save(&self, client: &Client, out: &mut Vec<u8>) -> bool {
        out.push(client.db);
        if let Some(name) = &client.name {
            out.extend_from_slice(name);
        }
        true
    }

    fn restore(&self, saved: &[u8], format: u32) -> Option<Client> {
        let (&db, name) = saved.split_first()?;
        (format == 1 && (db as usize) < DATABASES).then(|| Client {
            db,
            name: (!name.is_empty()).then(|| name.to_vec()),
        })
    }

    fn name(&self) -> &'static str {
        "resp"
    }
}

fn main() -> ExitCode {
    oneshotd::cli::main(
        &PROGRAM,
        Arc::new(Resp {
            store: Store::new(),
        }),
    )
}
