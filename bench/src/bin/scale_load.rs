//! `scale_load`: the load generator of `bench/scale.sh`, for many
//! connections and for connection churn. Like `loadgen` it verifies every
//! reply byte, and a run with errors exits non-zero: it is a failure, not a
//! figure. Connections are spread over several loopback source addresses
//! (127.0.0.2, 127.0.0.3, ..., bound before connecting) so that churn does
//! not run out of ephemeral ports for one (source, destination) pair.
//!
//! ```text
//! scale_load active --addr 127.0.0.1:7878 --conns 15000 --secs 5 --server-pid PID
//! scale_load churn  --addr 127.0.0.1:7878 --conns 500 --secs 5 --server-pid PID
//! scale_load idle   --addr 127.0.0.1:7878 --conns 18000 --server-pid PID
//! scale_load churn  --addr 127.0.0.1:7878 --conns 50 --secs 5 --proxy-v2
//! ```
//!
//! `active`: C connections, one request in flight on each (pipeline 1).
//! `churn`: C at a time, each connects, sends one request, verifies the
//! reply and closes; latency is from the start of connect to the verified
//! reply. `idle`: C connections, one exchange each, then commands on stdin:
//! `check` (one more exchange on every connection, all verified), `burst`
//! ([`oneshotd_bench::BURST`] more, one in flight per connection: the rate of requests over
//! the connections held, before and after a handover), `eof` (every
//! connection must see the server close it); stdin's end exits.
//!
//! With `--proxy-v2`, every connection of every mode begins with a PROXY
//! protocol v2 header, as a balancer's `send-proxy-v2` sends it (for a
//! server whose `proxy_protocol_from` lists 127.0.0.0/8): command PROXY,
//! TCP over IPv4, source the connection's own address and port, destination
//! the server's, no TLVs; 28 bytes in the same write as the first request.
//! The replies, and so the verification, are unchanged.
//!
//! With `--tls --ca FILE` (`idle` only), every connection is TLS 1.3
//! (bench/src/tls.rs: rustls with ring, a full handshake, the server's
//! certificate checked against FILE for localhost); its exchanges, the
//! `check`s and the end (close_notify or the socket's end) go through it.
//!
//! With `--server-pid`, the server's CPU time (utime + stime from
//! /proc/PID/stat) over the measured window gives CPU microseconds per reply,
//! and its VmRSS before connecting and after gives bytes per connection.
//!
//! One process holds at most `RLIMIT_NOFILE` descriptors, so the connections
//! are divided among `--procs N` load-generating processes: copies of this
//! program started with `--shard FIRST`, each holding connections FIRST ..
//! FIRST + its `--conns`. By default N is as many as the descriptor limit
//! needs. The process started by the user only leads: it starts the shards,
//! waits until every one has its connections open, starts them together,
//! samples the server on the window's edges and merges what the shards
//! report (replies, errors, every latency), so one shard or several report
//! the same way. A shard's protocol on its stdin and stdout: it prints
//! `ready` once its connections are open; `active` and `churn` then wait for
//! `go`, run and print `tally replies=R errors=E opened=O latencies=N
//! served=M` followed by N little-endian u32 latencies in microseconds and
//! M u32 counts of replies per connection (`active` only); `idle` answers
//! each `check` or `eof` with `ok`. A shard that fails says why on stderr
//! and exits non-zero, and the leader fails with it.

use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{
    bind, connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
};
use oneshotd_bench::tls::{self, Trust};
use oneshotd_bench::{cpu_time, expect_uppercased, raise_fd_limit, Lines};
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use std::sync::Arc;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Active,
    Churn,
    Idle,
}

impl Mode {
    const ALL: [Mode; 3] = [Mode::Active, Mode::Churn, Mode::Idle];

    /// The mode's name on the command line (a shard is given it too).
    fn name(self) -> &'static str {
        match self {
            Mode::Active => "active",
            Mode::Churn => "churn",
            Mode::Idle => "idle",
        }
    }
}

struct Options {
    mode: Mode,
    addr: SocketAddrV4,
    conns: usize,
    bytes: usize,
    secs: f64,
    warmup: f64,
    sources: u8,
    server_pid: Option<u32>,
    /// Load-generating processes; `None`: as many as the fd limit needs.
    procs: Option<usize>,
    /// Set in a shard: the index of its first connection.
    shard: Option<usize>,
    /// Begin every connection with a PROXY protocol v2 header.
    proxy_v2: bool,
    /// TLS (idle only), trusting this CA file.
    tls_ca: Option<String>,
}

fn parse_args() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let name = args.next();
    let mode = Mode::ALL
        .into_iter()
        .find(|m| name.as_deref() == Some(m.name()))
        .ok_or(format!("mode must be active, churn or idle, not {name:?}"))?;
    let mut o = Options {
        mode,
        addr: "127.0.0.1:7878".parse().unwrap(),
        conns: 1000,
        bytes: 64,
        secs: 5.0,
        warmup: 0.5,
        sources: 16,
        server_pid: None,
        procs: None,
        shard: None,
        proxy_v2: false,
        tls_ca: None,
    };
    let mut tls = false;
    oneshotd_bench::parse_flags(args, &["--proxy-v2", "--tls"], |flag| {
        match flag.name.as_str() {
            "--proxy-v2" => o.proxy_v2 = true,
            "--tls" => tls = true,
            "--ca" => o.tls_ca = Some(flag.text().into()),
            "--addr" => o.addr = flag.value()?,
            "--conns" => o.conns = flag.value()?,
            "--bytes" => o.bytes = flag.value()?,
            "--secs" => o.secs = flag.value()?,
            "--warmup" => o.warmup = flag.value()?,
            "--sources" => o.sources = flag.value()?,
            "--server-pid" => o.server_pid = Some(flag.value()?),
            "--procs" => o.procs = Some(flag.value()?),
            "--shard" => o.shard = Some(flag.value()?),
            _ => return Err(flag.unknown()),
        }
        Ok(())
    })?;
    if o.conns == 0 || o.bytes == 0 || o.procs == Some(0) || !(1..=250).contains(&o.sources) {
        return Err("conns, bytes and procs must be at least 1, sources 1..=250".into());
    }
    if o.warmup >= o.secs && o.mode != Mode::Idle {
        return Err("warmup must be shorter than secs".into());
    }
    if tls != o.tls_ca.is_some() {
        return Err("--tls and --ca FILE go together".into());
    }
    if tls && (o.mode != Mode::Idle || o.proxy_v2) {
        return Err("--tls: idle mode only, without --proxy-v2".into());
    }
    Ok(o)
}

/// The server's CPU time and resident memory, from /proc.
struct ProcSample {
    cpu: Duration,
    rss_bytes: u64,
}

fn sample(pid: Option<u32>) -> Option<ProcSample> {
    let pid = pid?;
    let cpu = cpu_time(pid)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(ProcSample {
        cpu,
        rss_bytes: rss_kib * 1024,
    })
}

/// The server's CPU microseconds per reply between two samples.
fn cpu_per_reply(start: Option<ProcSample>, end: Option<ProcSample>, replies: u64) -> String {
    match (start, end) {
        (Some(s), Some(e)) => format!(
            "{:.2}",
            e.cpu.saturating_sub(s.cpu).as_secs_f64() * 1e6 / replies.max(1) as f64
        ),
        _ => "n/a".into(),
    }
}

/// A TCP socket bound to source address 127.0.0.(2 + i % sources), port
/// chosen at connect (IP_BIND_ADDRESS_NO_PORT), connecting to `addr`.
/// Nonblocking sockets may return with the connect in progress.
fn connect_from(o: &Options, i: usize, nonblocking: bool) -> io::Result<(OwnedFd, bool)> {
    let mut flags = SockFlag::SOCK_CLOEXEC;
    if nonblocking {
        flags |= SockFlag::SOCK_NONBLOCK;
    }
    let fd = socket(AddressFamily::Inet, SockType::Stream, flags, None)?;
    setsockopt(&fd, sockopt::IpBindAddressNoPort, &true)?;
    setsockopt(&fd, sockopt::TcpNoDelay, &true)?;
    let source = Ipv4Addr::new(127, 0, 0, 2 + (i % o.sources as usize) as u8);
    bind(
        fd.as_raw_fd(),
        &SockaddrIn::from(SocketAddrV4::new(source, 0)),
    )?;
    match connect(fd.as_raw_fd(), &SockaddrIn::from(o.addr)) {
        Ok(()) => Ok((fd, true)),
        Err(Errno::EINPROGRESS) => Ok((fd, false)),
        Err(e) => Err(e.into()),
    }
}

/// Appends a PROXY protocol v2 header (HAProxy's proxy-protocol.txt §2.2):
/// the 12-byte signature, version 2 with command PROXY (0x21), TCP over
/// IPv4 (0x11), the address block's length (12, big-endian), then source
/// and destination addresses and ports, in network byte order.
fn proxy_v2_header(source: SocketAddrV4, destination: SocketAddrV4, out: &mut Vec<u8>) {
    out.extend_from_slice(b"\r\n\r\n\0\r\nQUIT\n");
    out.extend_from_slice(&[0x21, 0x11]);
    out.extend_from_slice(&12u16.to_be_bytes());
    out.extend_from_slice(&source.ip().octets());
    out.extend_from_slice(&destination.ip().octets());
    out.extend_from_slice(&source.port().to_be_bytes());
    out.extend_from_slice(&destination.port().to_be_bytes());
}

/// Connects (blocking) and checks one exchange before the next connect:
/// the reply proves the server accepted it, so the setup never has more
/// than one connection in the listener's backlog (a burst of blocking
/// connects overflows a 128-entry accept queue: SYN dropped, 1 s retry).
fn open(o: &Options, i: usize) -> io::Result<TcpStream> {
    let (fd, _) = connect_from(o, i, false)?;
    let mut stream = TcpStream::from(fd);
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let line = format!("open {i}\n");
    let mut first = Vec::with_capacity(28 + line.len());
    if o.proxy_v2 {
        let std::net::SocketAddr::V4(local) = stream.local_addr()? else {
            return Err(io::Error::other("an IPv4 socket with an IPv6 address"));
        };
        proxy_v2_header(local, o.addr, &mut first);
    }
    first.extend_from_slice(line.as_bytes());
    stream.write_all(&first)?;
    expect_uppercased(&mut stream, &line, i)?;
    Ok(stream)
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0)
}

fn main() -> ExitCode {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("scale_load: {e}");
            return ExitCode::from(2);
        }
    };
    let fd_limit = raise_fd_limit();
    if o.mode == Mode::Idle {
        std::thread::spawn(|| {
            std::thread::sleep(Duration::from_secs(600));
            eprintln!("scale_load: idle connections held for 10 minutes: giving up");
            std::process::exit(3);
        });
    }
    let result = match o.shard {
        Some(first) => shard(&o, first).map(|()| 0),
        None => lead(&o, fd_limit),
    };
    match result {
        Ok(0) => ExitCode::SUCCESS,
        Ok(errors) => {
            eprintln!("scale_load: {errors} errors: this run is a failure");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("scale_load: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What one shard saw in the measured window.
#[derive(Default)]
struct Tally {
    /// Verified replies that arrived in the window.
    replies: u64,
    /// Wrong replies and failed connections, window or not.
    errors: u64,
    /// Connections opened (churn).
    opened: u64,
    /// Microseconds, one per measured request (unsorted).
    latencies: Vec<u32>,
    /// Measured replies, one count per connection (`active`): how evenly
    /// the server shares itself among its connections.
    served: Vec<u32>,
}

impl Tally {
    fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        writeln!(
            out,
            "tally replies={} errors={} opened={} latencies={} served={}",
            self.replies,
            self.errors,
            self.opened,
            self.latencies.len(),
            self.served.len()
        )?;
        for n in self.latencies.iter().chain(&self.served) {
            out.write_all(&n.to_le_bytes())?;
        }
        out.flush()
    }

    /// Reads what `write_to` wrote, its header line already read.
    fn read_from(header: &str, input: &mut impl Read) -> io::Result<Tally> {
        let mut numbers = |count: u64| -> io::Result<Vec<u32>> {
            let mut raw = vec![0u8; count as usize * 4];
            input.read_exact(&mut raw)?;
            Ok(raw
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
                .collect())
        };
        Ok(Tally {
            replies: field(header, "replies")?,
            errors: field(header, "errors")?,
            opened: field(header, "opened")?,
            latencies: numbers(field(header, "latencies")?)?,
            served: numbers(field(header, "served")?)?,
        })
    }

    fn merge(&mut self, other: Tally) {
        self.replies += other.replies;
        self.errors += other.errors;
        self.opened += other.opened;
        self.latencies.extend(other.latencies);
        self.served.extend(other.served);
    }
}

/// The number after `key=` in a line of `key=value` fields.
fn field(line: &str, key: &str) -> io::Result<u64> {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no {key}= in {line:?}")))
}

/// A load-generating process, seen from the leader.
struct Shard {
    first: usize,
    process: Child,
    commands: ChildStdin,
    reports: BufReader<ChildStdout>,
}

impl Shard {
    /// Starts a copy of this program for connections `first .. first + conns`.
    fn spawn(o: &Options, first: usize, conns: usize) -> io::Result<Shard> {
        let mut process = Command::new(std::env::current_exe()?)
            .arg(o.mode.name())
            .args(["--addr", &o.addr.to_string()])
            .args(["--conns", &conns.to_string()])
            .args(["--bytes", &o.bytes.to_string()])
            .args(["--secs", &o.secs.to_string()])
            .args(["--warmup", &o.warmup.to_string()])
            .args(["--sources", &o.sources.to_string()])
            .args(["--shard", &first.to_string()])
            .args(o.proxy_v2.then_some("--proxy-v2"))
            .args(
                o.tls_ca
                    .as_deref()
                    .map(|ca| ["--tls", "--ca", ca])
                    .into_iter()
                    .flatten(),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        Ok(Shard {
            first,
            commands: process.stdin.take().unwrap(),
            reports: BufReader::new(process.stdout.take().unwrap()),
            process,
        })
    }

    fn send(&mut self, command: &str) -> io::Result<()> {
        writeln!(self.commands, "{command}")
    }

    /// The shard's next line, which must start with `word`.
    fn expect(&mut self, word: &str) -> io::Result<String> {
        let mut line = String::new();
        self.reports.read_line(&mut line)?;
        if line.split_whitespace().next() == Some(word) {
            return Ok(line);
        }
        let ended = match self.process.try_wait()? {
            Some(status) => format!(" ({status})"),
            None => String::new(),
        };
        Err(io::Error::other(format!(
            "shard {}: expected {word}, got {line:?}{ended}",
            self.first
        )))
    }

    fn tally(&mut self) -> io::Result<Tally> {
        let header = self.expect("tally")?;
        Tally::read_from(&header, &mut self.reports)
    }
}

impl Drop for Shard {
    /// A shard outlives its leader only if the leader failed: stop it.
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Starts the shards, measures, merges; returns the number of errors.
fn lead(o: &Options, fd_limit: u64) -> io::Result<u64> {
    // Room for the epoll fd, stdio and what the runtime opens.
    let per_process = (fd_limit.saturating_sub(64) as usize).max(1);
    let procs = o
        .procs
        .unwrap_or(o.conns.div_ceil(per_process))
        .min(o.conns);
    let before = sample(o.server_pid);
    let opening = Instant::now();
    let mut shards = Vec::with_capacity(procs);
    let mut first = 0;
    for k in 0..procs {
        let conns = o.conns / procs + usize::from(k < o.conns % procs);
        shards.push(Shard::spawn(o, first, conns)?);
        first += conns;
    }
    for s in &mut shards {
        s.expect("ready")?;
    }
    let open_secs = opening.elapsed().as_secs_f64();
    if o.mode == Mode::Idle {
        return hold_idle(o, &mut shards, before, open_secs).map(|()| 0);
    }

    let start = Instant::now();
    for s in &mut shards {
        s.send("go")?;
    }
    let measure_from = start + Duration::from_secs_f64(o.warmup);
    let stop = start + Duration::from_secs_f64(o.secs);
    let mid = measure_from + (stop - measure_from) / 2;
    let pid = o.server_pid;
    let sampler = std::thread::spawn(move || {
        [measure_from, mid, stop].map(|at| {
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            sample(pid)
        })
    });
    let mut tally = Tally::default();
    for s in &mut shards {
        tally.merge(s.tally()?);
    }
    let [at_start, at_mid, at_end] = sampler.join().expect("the sampler does not panic");
    tally.latencies.sort_unstable();
    tally.served.sort_unstable();
    let window = o.secs - o.warmup;
    let cpu = cpu_per_reply(at_start, at_end, tally.replies);
    let (p50, p99, p999) = (
        percentile(&tally.latencies, 0.50),
        percentile(&tally.latencies, 0.99),
        percentile(&tally.latencies, 0.999),
    );
    let rate = tally.replies as f64 / window;
    let (conns, replies, errors) = (o.conns, tally.replies, tally.errors);
    match o.mode {
        Mode::Active => {
            // Memory while every connection is busy, halfway through the window.
            let rss = rss_per_conn(&before, &at_mid, o.conns);
            // Replies per connection: the least served 1 %, the median, the
            // most served 1 %.
            let served = |p| percentile(&tally.served, p);
            let (s1, s50, s99) = (served(0.01), served(0.50), served(0.99));
            println!(
                "mode=active conns={conns} procs={procs} secs={window:.1} open_s={open_secs:.2} replies={replies} req_per_s={rate:.0} p50_us={p50} p99_us={p99} p999_us={p999} served_p1={s1} served_p50={s50} served_p99={s99} cpu_us_per_reply={cpu} rss_b_per_conn={rss} errors={errors}",
            );
        }
        _ => println!(
            "mode=churn conns={conns} procs={procs} secs={window:.1} opened={} replies={replies} conns_per_s={rate:.0} p50_us={p50} p99_us={p99} p999_us={p999} cpu_us_per_reply={cpu} errors={errors}",
            tally.opened,
        ),
    }
    Ok(errors)
}

/// The server's resident memory gained per connection between two samples.
fn rss_per_conn(before: &Option<ProcSample>, after: &Option<ProcSample>, conns: usize) -> String {
    match (before, after) {
        (Some(b), Some(a)) => format!(
            "{:.0}",
            (a.rss_bytes as f64 - b.rss_bytes as f64) / conns as f64
        ),
        _ => "n/a".into(),
    }
}

/// Idle connections, held by the shards while commands come on stdin.
fn hold_idle(
    o: &Options,
    shards: &mut [Shard],
    before: Option<ProcSample>,
    open_secs: f64,
) -> io::Result<()> {
    std::thread::sleep(Duration::from_millis(300));
    let rss = rss_per_conn(&before, &sample(o.server_pid), o.conns);
    println!(
        "idle_ready mode=idle conns={} procs={} open_s={open_secs:.2} rss_b_per_conn={rss} errors=0",
        o.conns,
        shards.len()
    );
    io::stdout().flush()?;
    for command in io::stdin().lock().lines() {
        let command = command?;
        let word = command.trim();
        if word != "check" && word != "burst" && word != "eof" {
            return Err(io::Error::other(format!("unknown command {word:?}")));
        }
        let t = Instant::now();
        for s in shards.iter_mut() {
            s.send(word)?;
        }
        for s in shards.iter_mut() {
            s.expect("ok")?;
        }
        println!(
            "{word}_ok conns={} secs={:.3}",
            o.conns,
            t.elapsed().as_secs_f64()
        );
        io::stdout().flush()?;
    }
    Ok(())
}

/// One shard: opens its connections, says `ready`, then runs as told.
fn shard(o: &Options, first: usize) -> io::Result<()> {
    let mut commands = io::stdin().lock().lines();
    let mut out = BufWriter::new(io::stdout().lock());
    let mut go = || match commands.next() {
        Some(Ok(line)) if line.trim() == "go" => Ok(()),
        other => Err(io::Error::other(format!("expected go, got {other:?}"))),
    };
    match o.mode {
        Mode::Active => {
            let (epoll, mut conns) = open_active(o, first)?;
            say(&mut out, "ready")?;
            go()?;
            active(o, &epoll, &mut conns)?.write_to(&mut out)
        }
        Mode::Churn => {
            say(&mut out, "ready")?;
            go()?;
            churn(o, first)?.write_to(&mut out)
        }
        Mode::Idle => {
            let config = match &o.tls_ca {
                Some(ca) => Some(tls::client_config(
                    Trust::Ca(ca.as_ref()),
                    tls::SUITE,
                    tls::GROUP,
                )?),
                None => None,
            };
            let mut held = (first..first + o.conns)
                .map(|i| match &config {
                    Some(config) => open_tls(o, i, config),
                    None => open(o, i).map(|s| Box::new(s) as Box<dyn Held>),
                })
                .collect::<io::Result<Vec<_>>>()?;
            say(&mut out, "ready")?;
            for command in commands {
                match command?.trim() {
                    "check" => exchange(&mut held, first, "check")?,
                    "burst" => {
                        for _ in 0..oneshotd_bench::BURST {
                            exchange(&mut held, first, "burst")?;
                        }
                    }
                    "eof" => expect_eof(&mut held, first)?,
                    other => return Err(io::Error::other(format!("unknown command {other:?}"))),
                }
                say(&mut out, "ok")?;
            }
            Ok(())
        }
    }
}

fn say(out: &mut impl Write, word: &str) -> io::Result<()> {
    writeln!(out, "{word}")?;
    out.flush()
}

fn interrupted_is_zero(r: Result<usize, Errno>) -> io::Result<usize> {
    match r {
        Ok(n) => Ok(n),
        Err(Errno::EINTR) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

struct ActiveConn {
    stream: TcpStream,
    sender: Lines,
    verifier: Lines,
    sent_at: Instant,
    partial: Vec<u8>,
    expected: Vec<u8>,
}

/// Opens connections `first .. first + o.conns` for `active`, each with
/// one verified exchange, registered in a fresh epoll set.
fn open_active(o: &Options, first: usize) -> io::Result<(Epoll, Vec<ActiveConn>)> {
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    let mut conns = Vec::with_capacity(o.conns);
    for i in first..first + o.conns {
        let stream = open(o, i)?;
        stream.set_nonblocking(true)?;
        epoll.add(
            stream.as_fd(),
            EpollEvent::new(EpollFlags::EPOLLIN, conns.len() as u64),
        )?;
        let seed = 0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1);
        conns.push(ActiveConn {
            stream,
            sender: Lines(seed),
            verifier: Lines(seed),
            sent_at: Instant::now(),
            partial: Vec::new(),
            expected: Vec::new(),
        });
    }
    Ok((epoll, conns))
}

/// One request in flight on each connection (pipeline 1) from now for
/// `o.secs`, then until every reply is in.
fn active(o: &Options, epoll: &Epoll, conns: &mut [ActiveConn]) -> io::Result<Tally> {
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(o.warmup);
    let stop_sending = start + Duration::from_secs_f64(o.secs);
    let give_up = stop_sending + Duration::from_secs(10);
    let mut line = Vec::with_capacity(o.bytes + 1);
    for c in conns.iter_mut() {
        line.clear();
        c.sender.next_line(o.bytes, &mut line);
        c.sent_at = start;
        // One short line into an empty send buffer: never partial.
        if c.stream.write(&line)? != line.len() {
            return Err(io::Error::other("short write of a first request"));
        }
    }
    let mut tally = Tally {
        served: vec![0; conns.len()],
        ..Tally::default()
    };
    let mut outstanding = conns.len();
    let mut events = vec![EpollEvent::empty(); 1024];
    let mut buf = vec![0u8; 64 * 1024];
    while outstanding > 0 {
        if Instant::now() > give_up {
            eprintln!("scale_load: {outstanding} replies never arrived");
            tally.errors += outstanding as u64;
            break;
        }
        let n = interrupted_is_zero(epoll.wait(&mut events, EpollTimeout::from(50u16)))?;
        for ev in &events[..n] {
            let i = ev.data() as usize;
            let c = &mut conns[i];
            let got = match c.stream.read(&mut buf) {
                Ok(0) => return Err(io::Error::other(format!("server closed connection {i}"))),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            };
            let now = Instant::now();
            c.partial.extend_from_slice(&buf[..got]);
            if c.partial.last() != Some(&b'\n') {
                continue; // pipeline 1: the reply is the whole buffer
            }
            c.expected.clear();
            c.verifier.next_line(o.bytes, &mut c.expected);
            c.expected.make_ascii_uppercase();
            if c.partial != c.expected {
                tally.errors += 1;
            }
            c.partial.clear();
            outstanding -= 1;
            if c.sent_at >= measure_from && now <= stop_sending {
                tally.replies += 1;
                tally.served[i] += 1;
                tally
                    .latencies
                    .push((now - c.sent_at).as_micros().min(u32::MAX as u128) as u32);
            }
            if now < stop_sending {
                line.clear();
                c.sender.next_line(o.bytes, &mut line);
                c.sent_at = now;
                if c.stream.write(&line)? != line.len() {
                    return Err(io::Error::other("short write of a request"));
                }
                outstanding += 1;
            }
        }
    }
    Ok(tally)
}

enum Stage {
    Free,
    Connecting,
    Waiting,
}

struct ChurnSlot {
    fd: Option<OwnedFd>,
    stage: Stage,
    generation: u32,
    started: Instant,
    /// What the connection sends: its PROXY header, if any, and one line.
    request: Vec<u8>,
    expected: Vec<u8>,
    got: Vec<u8>,
}

/// Connect, one request, verified reply, close; `o.conns` at a time from
/// now for `o.secs`. Source addresses continue from connection `first`.
fn churn(o: &Options, first: usize) -> io::Result<Tally> {
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    let mut slots: Vec<ChurnSlot> = (0..o.conns)
        .map(|_| ChurnSlot {
            fd: None,
            stage: Stage::Free,
            generation: 0,
            started: Instant::now(),
            request: Vec::with_capacity(28 + o.bytes + 1),
            expected: Vec::with_capacity(o.bytes + 1),
            got: Vec::with_capacity(o.bytes + 1),
        })
        .collect();
    let mut lines = Lines(0x2545_f491_4f6c_dd1d);
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(o.warmup);
    let stop = start + Duration::from_secs_f64(o.secs);
    let give_up = stop + Duration::from_secs(10);
    let mut tally = Tally::default();
    let mut opened = first;
    let token = |slot: usize, generation: u32| (slot as u64) | ((generation as u64) << 32);

    // Starts a connection in slot `s`: connect, then write the request (its
    // PROXY header first, if any) at once if the connect completed, else
    // wait for EPOLLOUT.
    let mut begin = |s: usize, slot: &mut ChurnSlot, opened: &mut usize| -> io::Result<()> {
        slot.generation = slot.generation.wrapping_add(1);
        slot.started = Instant::now();
        slot.got.clear();
        let (fd, _) = connect_from(o, *opened, true)?;
        *opened += 1;
        slot.request.clear();
        if o.proxy_v2 {
            // The port was chosen by connect (IP_BIND_ADDRESS_NO_PORT).
            let local: SockaddrIn = nix::sys::socket::getsockname(fd.as_raw_fd())?;
            proxy_v2_header(local.into(), o.addr, &mut slot.request);
        }
        let header = slot.request.len();
        lines.next_line(o.bytes, &mut slot.request);
        slot.expected.clear();
        slot.expected.extend_from_slice(&slot.request[header..]);
        slot.expected.make_ascii_uppercase();
        let sent = nix::sys::socket::send(
            fd.as_raw_fd(),
            &slot.request,
            nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
        );
        let (stage, flags) = match sent {
            Ok(n) if n == slot.request.len() => (Stage::Waiting, EpollFlags::EPOLLIN),
            Ok(_) => return Err(io::Error::other("short write of a request")),
            Err(Errno::EAGAIN) | Err(Errno::ENOTCONN) => (Stage::Connecting, EpollFlags::EPOLLOUT),
            Err(e) => return Err(e.into()),
        };
        epoll.add(
            fd.as_fd(),
            EpollEvent::new(flags, token(s, slot.generation)),
        )?;
        slot.fd = Some(fd);
        slot.stage = stage;
        Ok(())
    };
    for (s, slot) in slots.iter_mut().enumerate() {
        if let Err(e) = begin(s, slot, &mut opened) {
            eprintln!("scale_load: connect: {e}");
            tally.errors += 1;
        }
    }
    let mut in_flight = slots.iter().filter(|s| s.fd.is_some()).count();
    let mut events = vec![EpollEvent::empty(); 1024];
    let mut buf = [0u8; 4096];
    while in_flight > 0 {
        if Instant::now() > give_up {
            eprintln!("scale_load: {in_flight} connections never finished");
            tally.errors += in_flight as u64;
            break;
        }
        let n = interrupted_is_zero(epoll.wait(&mut events, EpollTimeout::from(50u16)))?;
        for ev in &events[..n] {
            let s = (ev.data() & 0xffff_ffff) as usize;
            let slot = &mut slots[s];
            if slot.fd.is_none() || (ev.data() >> 32) as u32 != slot.generation {
                continue; // a stale event of a closed connection
            }
            let raw = slot.fd.as_ref().unwrap().as_raw_fd();
            let mut failed = false;
            let mut finished = false;
            match slot.stage {
                Stage::Connecting => {
                    let fd = slot.fd.as_ref().unwrap();
                    match nix::sys::socket::getsockopt(fd, sockopt::SocketError) {
                        Ok(0) => {
                            let sent = nix::sys::socket::send(
                                raw,
                                &slot.request,
                                nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
                            );
                            if sent != Ok(slot.request.len()) {
                                failed = true;
                            } else {
                                slot.stage = Stage::Waiting;
                                epoll.modify(
                                    fd.as_fd(),
                                    &mut EpollEvent::new(
                                        EpollFlags::EPOLLIN,
                                        token(s, slot.generation),
                                    ),
                                )?;
                            }
                        }
                        _ => failed = true,
                    }
                }
                Stage::Waiting => match nix::unistd::read(slot.fd.as_ref().unwrap(), &mut buf) {
                    Ok(0) => failed = true,
                    Ok(n) => {
                        slot.got.extend_from_slice(&buf[..n]);
                        if slot.got.last() == Some(&b'\n') {
                            failed = slot.got != slot.expected;
                            finished = true;
                        }
                    }
                    Err(Errno::EAGAIN) => {}
                    Err(_) => failed = true,
                },
                Stage::Free => {}
            }
            if !(failed || finished) {
                continue;
            }
            let done_at = Instant::now();
            if failed {
                tally.errors += 1;
            } else {
                if done_at >= measure_from && done_at <= stop {
                    tally.replies += 1;
                }
                // Every connection started in the window counts for latency,
                // however late it finishes (a dropped SYN costs a second).
                if slot.started >= measure_from && slot.started < stop {
                    tally
                        .latencies
                        .push((done_at - slot.started).as_micros().min(u32::MAX as u128) as u32);
                }
            }
            slot.fd = None; // close: the client closes first, as clients do
            slot.stage = Stage::Free;
            in_flight -= 1;
            if done_at < stop {
                match begin(s, slot, &mut opened) {
                    Ok(()) => in_flight += 1,
                    Err(e) => {
                        eprintln!("scale_load: connect: {e}");
                        tally.errors += 1;
                    }
                }
            }
        }
    }
    tally.opened = (opened - first) as u64;
    Ok(tally)
}

/// An idle connection: plain, or TLS over it.
trait Held: Read + Write {}
impl<T: Read + Write> Held for T {}

/// As [`open`], over TLS: the handshake, then the verified exchange.
fn open_tls(o: &Options, i: usize, config: &Arc<ClientConfig>) -> io::Result<Box<dyn Held>> {
    let (fd, _) = connect_from(o, i, false)?;
    let stream = TcpStream::from(fd);
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let session = ClientConnection::new(Arc::clone(config), tls::server_name("localhost")?)
        .map_err(io::Error::other)?;
    let mut tls = StreamOwned::new(session, stream);
    let line = format!("open {i}\n");
    tls.write_all(line.as_bytes())
        .map_err(|e| io::Error::other(format!("connection {i}: {e}")))?;
    expect_uppercased(&mut tls, &line, i)?;
    Ok(Box::new(tls))
}

/// Every connection must see the server close it: EOF (over TLS: its
/// close_notify, or the socket's end), or a reset.
fn expect_eof(held: &mut [Box<dyn Held>], first: usize) -> io::Result<()> {
    let mut byte = [0u8; 1];
    for (i, s) in (first..).zip(held.iter_mut()) {
        match s.read(&mut byte) {
            Ok(0) => {}
            Ok(_) => return Err(io::Error::other(format!("connection {i}: data, not EOF"))),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {}
            Err(e) => return Err(io::Error::other(format!("connection {i}: {e}, not EOF"))),
        }
    }
    Ok(())
}

/// One verified exchange on every connection: all requests first, then all
/// replies.
fn exchange(held: &mut [Box<dyn Held>], first: usize, word: &str) -> io::Result<()> {
    for (i, s) in (first..).zip(held.iter_mut()) {
        s.write_all(format!("{word} {i}\n").as_bytes())?;
    }
    for (i, s) in (first..).zip(held.iter_mut()) {
        expect_uppercased(s, &format!("{word} {i}\n"), i)?;
    }
    Ok(())
}
