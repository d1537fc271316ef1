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
//! ```

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use oneshotd_bench::Lines;

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
    };
    oneshotd_bench::parse_flags(std::env::args().skip(1), &[], |flag| {
        match flag.name.as_str() {
            "--addr" => o.addr = flag.value()?,
            "--conns" => o.conns = flag.value()?,
            "--pipeline" => o.pipeline = flag.value()?,
            "--bytes" => o.bytes = flag.value()?,
            "--secs" => o.secs = flag.value()?,
            "--warmup" => o.warmup = flag.value()?,
            "--idle" => o.idle = flag.value()?,
            _ => return Err(flag.unknown()),
        }
        Ok(())
    })?;
    if o.conns == 0 || o.pipeline == 0 || o.bytes == 0 {
        return Err("conns, pipeline and bytes must be at least 1".into());
    }
    Ok(o)
}

struct Conn {
    stream: TcpStream,
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
    match run(&o) {
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
    println!(
        "conns={} pipeline={} bytes={} secs={:.1} total={} requests={} req_per_s={:.0} p50_us={} p99_us={} p999_us={} errors={}",
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

fn run(o: &Options) -> io::Result<Totals> {
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    let mut conns = Vec::with_capacity(o.conns);
    for i in 0..o.conns {
        let stream = TcpStream::connect(o.addr)?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        epoll.add(
            stream.as_fd(),
            EpollEvent::new(EpollFlags::EPOLLIN, i as u64),
        )?;
        let seed = 0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1);
        conns.push(Conn {
            stream,
            sender: Lines(seed),
            verifier: Lines(seed),
            sent_at: VecDeque::with_capacity(o.pipeline),
            out: Vec::new(),
            out_pos: 0,
            partial: Vec::new(),
            expected: Vec::new(),
            want_write: false,
        });
    }

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
        let n = epoll
            .wait(&mut events, EpollTimeout::from(100u16))
            .or_else(|e| {
                if e == nix::errno::Errno::EINTR {
                    Ok(0)
                } else {
                    Err(e)
                }
            })?;
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
            let got = match c.stream.read(&mut buf) {
                Ok(0) => {
                    eprintln!("loadgen: connection {i} closed by the server");
                    return Err(io::Error::other("server closed a connection"));
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            };
            let now = Instant::now();
            let mut rest = &buf[..got];
            let mut new_requests = 0;
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
            for _ in 0..new_requests {
                c.sender.next_line(o.bytes, &mut c.out);
                c.sent_at.push_back(now);
                outstanding += 1;
            }
            if new_requests > 0 {
                flush(&epoll, i, c)?;
            }
        }
    }
    Ok(totals)
}

/// Writes what is pending; asks for EPOLLOUT only while something is left.
fn flush(epoll: &Epoll, i: usize, c: &mut Conn) -> io::Result<()> {
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
    let want_write = !c.out.is_empty();
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
