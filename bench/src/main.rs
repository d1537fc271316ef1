//! `loadgen`: a load generator for line servers speaking the "upper"
//! protocol. It opens C connections, keeps P requests in flight on each,
//! sends random lines of B bytes, verifies every reply byte (uppercased, in
//! order) and reports requests per second, latency percentiles and errors.
//! A run with errors exits non-zero: it is a failure, not a figure.
//!
//! One thread, one epoll set (level-triggered), so the generator costs as
//! little CPU as possible on a machine it shares with the server.
//!
//! ```text
//! loadgen --addr 127.0.0.1:7878 --conns 50 --pipeline 16 --bytes 64 --secs 5
//! loadgen --addr 127.0.0.1:7443 --tls --ca cert.pem --conns 50 --pipeline 16
//! loadgen --addr 127.0.0.1:7443 --tls --ca cert.pem --handshakes --conns 8
//! ```
//!
//! `--tls`: every connection speaks TLS 1.3 (rustls with ring, the daemon's
//! own stack; one cipher suite, `--suite`, TLS13_AES_256_GCM_SHA384 by
//! default, and one key exchange, `--group`, X25519), checking the server's certificate against `--ca FILE` for
//! `--server-name` (localhost), or with `--insecure` only the handshake's
//! signature. No session is resumed: every handshake is a full one.
//!
//! `--handshakes`: C connections at a time, each connects, makes its
//! handshake (with `--tls`), sends one request, verifies the reply and
//! closes (with close_notify); it reports connections per second, and the
//! latency from the start of the connect to the verified reply.
//!
//! Every run also reports the generator's own CPU (`client_cores`: user +
//! system time over the run's wall time; 1.00 means this one thread was
//! the limit, not the server).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use oneshotd_bench::tls::{self, Trust};
use oneshotd_bench::Lines;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

struct Options {
    addr: SocketAddr,
    conns: usize,
    pipeline: usize,
    bytes: usize,
    secs: f64,
    warmup: f64,
    /// Idle mode: open this many connections, one exchange each, then hold
    /// them for `secs` (for the server's memory per idle connection).
    idle: usize,
    tls: bool,
    ca: Option<PathBuf>,
    insecure: bool,
    server_name: String,
    suite: String,
    group: String,
    handshakes: bool,
}

/// What a TLS connection is made with.
struct TlsSetup {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        addr: "127.0.0.1:7878".parse().unwrap(),
        conns: 50,
        pipeline: 1,
        bytes: 64,
        secs: 5.0,
        warmup: 0.5,
        idle: 0,
        tls: false,
        ca: None,
        insecure: false,
        server_name: "localhost".into(),
        suite: tls::SUITE.into(),
        group: tls::GROUP.into(),
        handshakes: false,
    };
    let switches = ["--tls", "--insecure", "--handshakes"];
    oneshotd_bench::parse_flags(std::env::args().skip(1), &switches, |flag| {
        match flag.name.as_str() {
            "--addr" => o.addr = flag.value()?,
            "--conns" => o.conns = flag.value()?,
            "--pipeline" => o.pipeline = flag.value()?,
            "--bytes" => o.bytes = flag.value()?,
            "--secs" => o.secs = flag.value()?,
            "--warmup" => o.warmup = flag.value()?,
            "--idle" => o.idle = flag.value()?,
            "--tls" => o.tls = true,
            "--ca" => o.ca = Some(flag.text().into()),
            "--insecure" => o.insecure = true,
            "--server-name" => o.server_name = flag.text().into(),
            "--suite" => o.suite = flag.text().into(),
            "--group" => o.group = flag.text().into(),
            "--handshakes" => o.handshakes = true,
            _ => return Err(flag.unknown()),
        }
        Ok(())
    })?;
    if o.conns == 0 || o.pipeline == 0 || o.bytes == 0 {
        return Err("conns, pipeline and bytes must be at least 1".into());
    }
    if o.tls && o.ca.is_none() && !o.insecure {
        return Err("--tls needs --ca FILE or --insecure".into());
    }
    if o.tls && o.idle > 0 {
        return Err("--idle is plain TCP only".into());
    }
    Ok(o)
}

struct Conn {
    stream: TcpStream,
    /// With `--tls`: the session; `out` is then plaintext handed to it.
    tls: Option<ClientConnection>,
    sender: Lines,
    verifier: Lines,
    sent_at: VecDeque<Instant>,
    out: Vec<u8>,
    out_pos: usize,
    partial: Vec<u8>,
    expected: Vec<u8>,
    want_write: bool,
}

#[derive(Default)]
struct Totals {
    done: u64,
    measured: u64,
    errors: u64,
    latencies_us: Vec<u32>,
    /// The generator's own CPU time over the run's wall time.
    client_cores: f64,
    /// The negotiated cipher suite and key exchange (with `--tls`).
    negotiated: Option<String>,
}

/// This process's CPU time (user + system).
fn own_cpu() -> Duration {
    // SAFETY: an all-zero rusage is valid; getrusage fills it.
    let mut usage: nix::libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid out-pointer for the calling process.
    unsafe { nix::libc::getrusage(nix::libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: nix::libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn main() -> ExitCode {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    if o.idle > 0 {
        return match hold_idle(&o) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("loadgen: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let setup = if o.tls {
        let trust = match &o.ca {
            Some(path) => Trust::Ca(path),
            None => Trust::Any,
        };
        match tls::client_config(trust, &o.suite, &o.group).and_then(|config| {
            Ok(TlsSetup {
                config,
                name: tls::server_name(&o.server_name)?,
            })
        }) {
            Ok(setup) => Some(setup),
            Err(e) => {
                eprintln!("loadgen: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        None
    };
    let result = if o.handshakes {
        handshakes(&o, setup.as_ref())
    } else {
        run(&o, setup.as_ref())
    };
    match result {
        Ok(t) if t.errors == 0 => {
            report(&o, &t);
            ExitCode::SUCCESS
        }
        Ok(t) => {
            report(&o, &t);
            eprintln!("loadgen: {} errors: this run is a failure", t.errors);
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

fn report(o: &Options, t: &Totals) {
    let mut lat = t.latencies_us.clone();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let secs = o.secs - o.warmup;
    let mode = match (o.handshakes, o.tls) {
        (true, true) => "handshakes",
        (true, false) => "connects",
        (false, _) => "requests",
    };
    // In handshakes mode a request is a whole connection.
    let rate = if o.handshakes {
        "conns_per_s"
    } else {
        "req_per_s"
    };
    println!(
        "mode={mode} tls={} conns={} pipeline={} bytes={} secs={:.1} total={} requests={} {rate}={:.0} p50_us={} p99_us={} p999_us={} client_cores={:.2} errors={}",
        t.negotiated.as_deref().unwrap_or("no"),
        o.conns,
        o.pipeline,
        o.bytes,
        secs,
        t.done,
        t.measured,
        t.measured as f64 / secs,
        pct(0.50),
        pct(0.99),
        pct(0.999),
        t.client_cores,
        t.errors
    );
}

/// Opens `o.idle` connections, checks one exchange on each, prints
/// `idle_ready`, and holds them open for `o.secs`.
fn hold_idle(o: &Options) -> io::Result<()> {
    let mut held = Vec::with_capacity(o.idle);
    let mut reply = [0u8; 5];
    for _ in 0..o.idle {
        let mut stream = TcpStream::connect(o.addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.write_all(b"idle\n")?;
        stream.read_exact(&mut reply)?;
        if &reply != b"IDLE\n" {
            return Err(io::Error::other(format!("wrong reply {reply:?}")));
        }
        held.push(stream);
    }
    println!("idle_ready connections={}", held.len());
    io::stdout().flush()?;
    std::thread::sleep(Duration::from_secs_f64(o.secs));
    Ok(())
}

/// A new connection, `i`'s, registered for reading; with `setup`, its TLS
/// session started (the ClientHello goes with the first flush).
fn connect(o: &Options, setup: Option<&TlsSetup>, epoll: &Epoll, i: usize) -> io::Result<Conn> {
    let stream = TcpStream::connect(o.addr)?;
    stream.set_nodelay(true)?;
    stream.set_nonblocking(true)?;
    epoll.add(
        stream.as_fd(),
        EpollEvent::new(EpollFlags::EPOLLIN, i as u64),
    )?;
    let tls = match setup {
        Some(s) => {
            let mut conn = ClientConnection::new(Arc::clone(&s.config), s.name.clone())
                .map_err(io::Error::other)?;
            // Everything the generator hands it is kept until sent.
            conn.set_buffer_limit(None);
            Some(conn)
        }
        None => None,
    };
    let seed = 0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1);
    Ok(Conn {
        stream,
        tls,
        sender: Lines(seed),
        verifier: Lines(seed),
        sent_at: VecDeque::with_capacity(o.pipeline),
        out: Vec::new(),
        out_pos: 0,
        partial: Vec::new(),
        expected: Vec::new(),
        want_write: false,
    })
}

/// The suite and key exchange a TLS connection agreed on, once it has.
fn negotiated(c: &Conn) -> Option<String> {
    let tls = c.tls.as_ref()?;
    let suite = tls.negotiated_cipher_suite()?;
    let group = tls.negotiated_key_exchange_group()?;
    Some(format!("{:?}/{:?}", suite.suite(), group.name()))
}

fn run(o: &Options, setup: Option<&TlsSetup>) -> io::Result<Totals> {
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    let mut conns = Vec::with_capacity(o.conns);
    for i in 0..o.conns {
        conns.push(connect(o, setup, &epoll, i)?);
    }

    let cpu_start = own_cpu();
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(o.warmup);
    let stop_sending = start + Duration::from_secs_f64(o.secs);
    let give_up = stop_sending + Duration::from_secs(5);
    let mut totals = Totals::default();
    for c in &mut conns {
        for _ in 0..o.pipeline {
            c.sender.next_line(o.bytes, &mut c.out);
            c.sent_at.push_back(start);
        }
    }
    for (i, c) in conns.iter_mut().enumerate() {
        flush(&epoll, i, c)?;
    }

    let mut events = vec![EpollEvent::empty(); 256];
    let mut buf = vec![0u8; 256 * 1024];
    let mut outstanding: usize = o.conns * o.pipeline;
    while outstanding > 0 {
        let now = Instant::now();
        if now > give_up {
            eprintln!("loadgen: {outstanding} replies never arrived");
            totals.errors += outstanding as u64;
            break;
        }
        let n = wait_events(&epoll, &mut events)?;
        for ev in &events[..n] {
            let i = ev.data() as usize;
            let c = &mut conns[i];
            if ev.events().contains(EpollFlags::EPOLLOUT) {
                flush(&epoll, i, c)?;
            }
            if !ev
                .events()
                .intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR)
            {
                continue;
            }
            // Plain: one read per event (level-triggered). TLS: until the
            // socket and the session are both empty, since plaintext left
            // in the session raises no event.
            let mut new_requests = 0;
            loop {
                let got = match read_plain(c, &mut buf) {
                    Ok(0) => {
                        eprintln!("loadgen: connection {i} closed by the server");
                        return Err(io::Error::other("server closed a connection"));
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                };
                let now = Instant::now();
                let mut rest = &buf[..got];
                while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
                    let (line, tail) = rest.split_at(pos + 1);
                    rest = tail;
                    c.expected.clear();
                    c.verifier.next_line(o.bytes, &mut c.expected);
                    c.expected.make_ascii_uppercase();
                    let ok = if c.partial.is_empty() {
                        line == c.expected.as_slice()
                    } else {
                        c.partial.extend_from_slice(line);
                        let ok = c.partial == c.expected;
                        c.partial.clear();
                        ok
                    };
                    if !ok {
                        totals.errors += 1;
                    }
                    let sent = c.sent_at.pop_front().expect("a reply with no request");
                    totals.done += 1;
                    outstanding -= 1;
                    if sent >= measure_from && now <= stop_sending {
                        totals.measured += 1;
                        totals
                            .latencies_us
                            .push((now - sent).as_micros().min(u32::MAX as u128) as u32);
                    }
                    if now < stop_sending {
                        new_requests += 1;
                    }
                }
                c.partial.extend_from_slice(rest);
                if c.tls.is_none() {
                    break;
                }
            }
            let now = Instant::now();
            for _ in 0..new_requests {
                c.sender.next_line(o.bytes, &mut c.out);
                c.sent_at.push_back(now);
                outstanding += 1;
            }
            // TLS: the handshake may have something to send too.
            if new_requests > 0 || c.tls.is_some() {
                flush(&epoll, i, c)?;
            }
            if totals.negotiated.is_none() {
                totals.negotiated = negotiated(c);
            }
        }
    }
    totals.client_cores = (own_cpu() - cpu_start).as_secs_f64() / start.elapsed().as_secs_f64();
    Ok(totals)
}

/// Plaintext from the connection: the socket's bytes (plain), or what the
/// TLS session has decrypted, reading the socket when it has none. Ok(0):
/// the server closed (with TLS: close_notify, or the socket's end).
fn read_plain(c: &mut Conn, buf: &mut [u8]) -> io::Result<usize> {
    let Some(tls) = c.tls.as_mut() else {
        return c.stream.read(buf);
    };
    loop {
        match tls.reader().read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        match tls.read_tls(&mut c.stream) {
            Ok(0) => return Ok(0),
            Ok(_) => {
                tls.process_new_packets().map_err(io::Error::other)?;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Writes what is pending; asks for EPOLLOUT only while something is left.
fn flush(epoll: &Epoll, i: usize, c: &mut Conn) -> io::Result<()> {
    if let Some(tls) = c.tls.as_mut() {
        // The session takes all the plaintext (no buffer limit) and keeps
        // it until the handshake is done; then its records go out.
        if !c.out.is_empty() {
            tls.writer().write_all(&c.out)?;
            c.out.clear();
        }
        while tls.wants_write() {
            match tls.write_tls(&mut c.stream) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        return want_write(epoll, i, c, tls_wants_write(c));
    }
    while c.out_pos < c.out.len() {
        match c.stream.write(&c.out[c.out_pos..]) {
            Ok(n) => c.out_pos += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    if c.out_pos == c.out.len() {
        c.out.clear();
        c.out_pos = 0;
    }
    let pending = !c.out.is_empty();
    want_write(epoll, i, c, pending)
}

fn tls_wants_write(c: &Conn) -> bool {
    c.tls.as_ref().is_some_and(|t| t.wants_write())
}

/// Asks for EPOLLOUT while `want_write`, only when that changes.
fn want_write(epoll: &Epoll, i: usize, c: &mut Conn, want_write: bool) -> io::Result<()> {
    if want_write != c.want_write {
        let mut flags = EpollFlags::EPOLLIN;
        if want_write {
            flags |= EpollFlags::EPOLLOUT;
        }
        epoll.modify(c.stream.as_fd(), &mut EpollEvent::new(flags, i as u64))?;
        c.want_write = want_write;
    }
    Ok(())
}

/// `--handshakes`: `o.conns` slots, each a connection that makes its
/// handshake, sends one request, verifies the reply and closes, then the
/// next; counts the connections done (the whole exchange verified) within
/// the measured window.
fn handshakes(o: &Options, setup: Option<&TlsSetup>) -> io::Result<Totals> {
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    let cpu_start = own_cpu();
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(o.warmup);
    let stop = start + Duration::from_secs_f64(o.secs);
    let give_up = stop + Duration::from_secs(5);
    let mut totals = Totals::default();
    // Each slot's connection and when its connect began; the seed of each
    // new connection's line is its number.
    let mut opened = 0usize;
    let mut slots: Vec<Option<(Conn, Instant)>> = Vec::with_capacity(o.conns);
    let open = |opened: &mut usize, slot: usize| -> io::Result<(Conn, Instant)> {
        let began = Instant::now();
        let mut c = connect(o, setup, &epoll, slot)?;
        let seed = 0x9e37_79b9_7f4a_7c15 ^ (*opened as u64 + 1);
        *opened += 1;
        c.sender = Lines(seed);
        c.verifier = Lines(seed);
        c.sender.next_line(o.bytes, &mut c.out);
        c.verifier.next_line(o.bytes, &mut c.expected);
        c.expected.make_ascii_uppercase();
        flush(&epoll, slot, &mut c)?;
        Ok((c, began))
    };
    for slot in 0..o.conns {
        slots.push(Some(open(&mut opened, slot)?));
    }
    let mut events = vec![EpollEvent::empty(); 256];
    let mut buf = vec![0u8; 64 * 1024];
    while slots.iter().any(Option::is_some) {
        if Instant::now() > give_up {
            let left = slots.iter().filter(|s| s.is_some()).count();
            eprintln!("loadgen: {left} connections never finished");
            totals.errors += left as u64;
            break;
        }
        let n = wait_events(&epoll, &mut events)?;
        for ev in &events[..n] {
            let slot = ev.data() as usize;
            let Some((c, began)) = slots[slot].as_mut() else {
                continue;
            };
            if ev.events().contains(EpollFlags::EPOLLOUT) {
                flush(&epoll, slot, c)?;
            }
            if !ev
                .events()
                .intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR)
            {
                continue;
            }
            let mut done = false;
            loop {
                match read_plain(c, &mut buf) {
                    Ok(0) => {
                        eprintln!("loadgen: a connection closed by the server before its reply");
                        return Err(io::Error::other("server closed a connection"));
                    }
                    Ok(got) => {
                        c.partial.extend_from_slice(&buf[..got]);
                        if c.partial.len() >= c.expected.len() {
                            if c.partial != c.expected {
                                totals.errors += 1;
                            }
                            done = true;
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            if !done {
                // The handshake's Finished, when it has been read.
                flush(&epoll, slot, c)?;
                continue;
            }
            let now = Instant::now();
            totals.done += 1;
            if *began >= measure_from && now <= stop {
                totals.measured += 1;
                totals
                    .latencies_us
                    .push((now - *began).as_micros().min(u32::MAX as u128) as u32);
            }
            if totals.negotiated.is_none() {
                totals.negotiated = negotiated(c);
            }
            // Closed by the client, TLS with close_notify (best effort: the
            // alert goes if the socket takes it, it always does here).
            if let Some(tls) = c.tls.as_mut() {
                tls.send_close_notify();
                while tls.wants_write() {
                    if tls.write_tls(&mut c.stream).is_err() {
                        break;
                    }
                }
            }
            slots[slot] = None;
            if now < stop {
                slots[slot] = Some(open(&mut opened, slot)?);
            }
        }
    }
    totals.client_cores = (own_cpu() - cpu_start).as_secs_f64() / start.elapsed().as_secs_f64();
    Ok(totals)
}

/// Waits up to 100 ms for events; a signal's interruption is no event.
fn wait_events(epoll: &Epoll, events: &mut [EpollEvent]) -> nix::Result<usize> {
    match epoll.wait(events, EpollTimeout::from(100u16)) {
        Err(nix::errno::Errno::EINTR) => Ok(0),
        other => other,
    }
}
