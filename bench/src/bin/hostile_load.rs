//! `hostile_load`: the load generator of `bench/hostile.sh`. C clients that
//! send request lines and never read a reply, to see how much memory the
//! server lets them make it hold.
//!
//! ```text
//! hostile_load --addr 127.0.0.1:7878 --metrics 127.0.0.1:9787 --conns 1000 --server-pid PID
//! ```
//!
//! Each client's socket gets a small `SO_RCVBUF` (`--rcvbuf`, 16 KiB)
//! before it connects, so that the kernel holds few of its replies on the
//! client's side, and one verified exchange proves the server accepted it
//! (the setup never has more than one connection in the accept queue).
//! Then every client pipelines `--line-bytes` lines (LF included) as fast
//! as its socket takes them, never reading, until it has sent
//! `--max-bytes` or the server stops reading: its
//! `oneshotd_received_bytes_total{service="upper"}` (scraped from
//! `--metrics` every 100 ms) unchanged for `--quiet-ms`. `--max-secs`
//! bounds the pumping, and `--rss-cap-mib` stops it early if the server's
//! VmRSS passes that much (this machine's memory is finite; the run then
//! says `end=rss_cap`). `end=stalled`: it stopped reading with bytes
//! still queued for it; `end=clients_done`: it read all the clients sent.
//!
//! It prints `key=value` pairs on one line: the server's VmRSS at rest
//! (before connecting), with the connections open, and when stalled, its
//! VmHWM, the gauges and counters scraped at the stall, what the clients
//! sent, and what the kernel holds (`ss`: bytes queued on the server's
//! sockets and the clients', the server's mean send buffer; `/proc/net/
//! sockstat`: pages all TCP sockets use; TcpExt: memory pressure events).
//! Every client is closed when it exits. `--sndbuf` sets the clients'
//! `SO_SNDBUF` too (by default the kernel's, which grows to MiBs with
//! requests the server has not read: on loopback that memory is this
//! machine's as much as the server's).
//!
//! With `--readers R`, once the clients hold the server (the stall, or the
//! end of pumping), R readers follow one after another while the clients
//! stay connected: each a new connection with a `--reader-rcvbuf` receive
//! buffer (4 KiB) that sends `--reader-bytes` (2 MiB) of
//! `--reader-line-bytes` (100-byte) lines while reading every reply, and
//! verifies each reply byte. For each it measures the throughput (reply
//! bytes over the time from its first write to its last reply byte) and
//! its longest stall (the longest time without a reply byte), and gives up
//! after `--reader-max-secs`. With `--conns 0` the same readers measure an
//! idle server. It adds `readers=R reader_min_bps= reader_median_bps=
//! reader_max_bps= reader_max_stall_ms= readers_unfinished= reader_bps=a,b..`
//! and the TcpExt counters' deltas over the whole run, readers included
//! (`run_TCPMemoryPressures=` ...).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType};
use oneshotd_bench::{expect_uppercased, raise_fd_limit};

struct Options {
    addr: SocketAddrV4,
    metrics: SocketAddrV4,
    conns: usize,
    server_pid: u32,
    line_bytes: usize,
    max_bytes: u64,
    rcvbuf: usize,
    quiet: Duration,
    max_secs: f64,
    rss_cap: u64,
    /// The non-readers' SO_SNDBUF (0: the kernel's, autotuned).
    sndbuf: usize,
    readers: usize,
    reader_bytes: u64,
    reader_rcvbuf: usize,
    reader_line_bytes: usize,
    reader_max: Duration,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        addr: "127.0.0.1:7878".parse().unwrap(),
        metrics: "127.0.0.1:9787".parse().unwrap(),
        conns: 100,
        server_pid: 0,
        line_bytes: 1024,
        max_bytes: 8 << 20,
        rcvbuf: 16 << 10,
        quiet: Duration::from_millis(1000),
        max_secs: 60.0,
        rss_cap: 12 << 30,
        sndbuf: 0,
        readers: 0,
        reader_bytes: 2 << 20,
        reader_rcvbuf: 4096,
        reader_line_bytes: 100,
        reader_max: Duration::from_secs(30),
    };
    oneshotd_bench::parse_flags(std::env::args().skip(1), &[], |flag| {
        match flag.name.as_str() {
            "--addr" => o.addr = flag.value()?,
            "--metrics" => o.metrics = flag.value()?,
            "--conns" => o.conns = flag.value()?,
            "--server-pid" => o.server_pid = flag.value()?,
            "--line-bytes" => o.line_bytes = flag.value()?,
            "--max-bytes" => o.max_bytes = flag.value()?,
            "--rcvbuf" => o.rcvbuf = flag.value()?,
            "--quiet-ms" => o.quiet = Duration::from_millis(flag.value()?),
            "--max-secs" => o.max_secs = flag.value()?,
            "--rss-cap-mib" => o.rss_cap = flag.value::<u64>()? << 20,
            "--sndbuf" => o.sndbuf = flag.value()?,
            "--readers" => o.readers = flag.value()?,
            "--reader-bytes" => o.reader_bytes = flag.value()?,
            "--reader-rcvbuf" => o.reader_rcvbuf = flag.value()?,
            "--reader-line-bytes" => o.reader_line_bytes = flag.value()?,
            "--reader-max-secs" => o.reader_max = Duration::from_secs_f64(flag.value::<f64>()?),
            _ => return Err(flag.unknown()),
        }
        Ok(())
    })?;
    if o.server_pid == 0 {
        return Err("--server-pid is needed".into());
    }
    if o.line_bytes < 2 || o.reader_line_bytes < 2 {
        return Err("--line-bytes and --reader-line-bytes must be at least 2".into());
    }
    Ok(o)
}

/// VmRSS and VmHWM of a process, in bytes.
fn memory(pid: u32) -> io::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> io::Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
            .ok_or_else(|| io::Error::other(format!("no {name} in /proc/{pid}/status")))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// The server's metrics page, as name{labels} -> value.
fn scrape(metrics: SocketAddrV4) -> io::Result<HashMap<String, f64>> {
    let mut stream = TcpStream::connect_timeout(&metrics.into(), Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut page = String::new();
    stream.read_to_string(&mut page)?;
    let body = page
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .ok_or_else(|| io::Error::other("metrics: no HTTP body"))?;
    Ok(body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect())
}

const RECEIVED: &str = "oneshotd_received_bytes_total{service=\"upper\"}";

fn received(page: &HashMap<String, f64>) -> io::Result<u64> {
    page.get(RECEIVED)
        .map(|v| *v as u64)
        .ok_or_else(|| io::Error::other(format!("metrics: no {RECEIVED}")))
}

/// A TCP client with a small receive buffer, set before connecting (the
/// window it offers is fixed at the handshake), after one verified exchange.
fn open(o: &Options, i: usize, rcvbuf: usize, sndbuf: usize) -> io::Result<TcpStream> {
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(&fd, sockopt::RcvBuf, &rcvbuf)?;
    if sndbuf > 0 {
        setsockopt(&fd, sockopt::SndBuf, &sndbuf)?;
    }
    connect(fd.as_raw_fd(), &nix::sys::socket::SockaddrIn::from(o.addr))
        .map_err(|e| io::Error::other(format!("connection {i}: connect: {e}")))?;
    let mut stream = TcpStream::from(fd);
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let line = format!("open {i}\n");
    stream.write_all(line.as_bytes())?;
    expect_uppercased(&mut stream, &line, i)?;
    stream.set_nonblocking(true)?;
    Ok(stream)
}

/// What `ss` shows of the established connections to or from `port`:
/// (server side, client side), each as (sockets, Recv-Q sum, Send-Q sum,
/// send buffer sum).
type Queues = (u64, u64, u64, u64);

fn kernel_queues(port: u16) -> io::Result<(Queues, Queues)> {
    let filter = format!("( sport = :{port} or dport = :{port} )");
    let out = Command::new("ss")
        .args(["-tmnH", "state", "established", &filter])
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other("ss failed"));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let (mut server, mut client) = ((0, 0, 0, 0), (0, 0, 0, 0));
    let mut side: Option<bool> = None;
    let own = format!(":{port}");
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let Some(skmem) = line.trim().strip_prefix("skmem:(") {
            let tb = skmem
                .trim_end_matches(')')
                .split(',')
                .find_map(|f| f.strip_prefix("tb"))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            match side.take() {
                Some(true) => server.3 += tb,
                Some(false) => client.3 += tb,
                None => {}
            }
        } else if fields.len() >= 4 {
            // Recv-Q Send-Q Local Peer (state is omitted with a state filter).
            let (recv_q, send_q): (u64, u64) = (
                fields[0].parse().unwrap_or(0),
                fields[1].parse().unwrap_or(0),
            );
            let is_server = fields[2].ends_with(&own);
            let q = if is_server { &mut server } else { &mut client };
            q.0 += 1;
            q.1 += recv_q;
            q.2 += send_q;
            side = Some(is_server);
        }
    }
    Ok((server, client))
}

/// Pages all TCP sockets use (`/proc/net/sockstat`).
fn tcp_mem_pages() -> u64 {
    std::fs::read_to_string("/proc/net/sockstat")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("TCP:"))?.to_string();
            let fields: Vec<&str> = line.split_whitespace().collect();
            let at = fields.iter().position(|f| *f == "mem")?;
            fields.get(at + 1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// Some TcpExt counters (`/proc/net/netstat`).
fn tcp_ext() -> HashMap<String, u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("TcpExt:")).collect();
    let mut out = HashMap::new();
    if let [names, values] = lines[..] {
        for (n, v) in names
            .split_whitespace()
            .zip(values.split_whitespace())
            .skip(1)
        {
            out.insert(n.to_string(), v.parse().unwrap_or(0));
        }
    }
    out
}

const TCP_EXT: [&str; 4] = [
    "TCPMemoryPressures",
    "PruneCalled",
    "TCPRcvQDrop",
    "ListenOverflows",
];

fn main() -> ExitCode {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("hostile_load: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&o) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hostile_load: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(o: &Options) -> io::Result<()> {
    let fd_limit = raise_fd_limit();
    if o.conns as u64 + 64 > fd_limit {
        return Err(io::Error::other(format!(
            "{} connections need more descriptors than the limit {fd_limit}",
            o.conns
        )));
    }
    let ext_before = tcp_ext();
    let (rest_rss, _) = memory(o.server_pid)?;
    let rest_tcp_pages = tcp_mem_pages();
    let started = Instant::now();
    let mut clients = Vec::with_capacity(o.conns);
    for i in 0..o.conns {
        clients.push(open(o, i, o.rcvbuf, o.sndbuf)?);
    }
    let connect_secs = started.elapsed().as_secs_f64();
    let (connected_rss, _) = memory(o.server_pid)?;

    // What every client sends: the same line over and over, and a window
    // on it that may start anywhere in a line.
    let mut line: Vec<u8> = (0..o.line_bytes - 1)
        .map(|i| b'a' + (i % 26) as u8)
        .collect();
    line.push(b'\n');
    let chunk = 64 * 1024;
    let pattern: Vec<u8> = line
        .iter()
        .copied()
        .cycle()
        .take(chunk + o.line_bytes)
        .collect();

    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    for (i, c) in clients.iter().enumerate() {
        epoll.add(
            c,
            EpollEvent::new(EpollFlags::EPOLLOUT | EpollFlags::EPOLLET, i as u64),
        )?;
    }
    let mut sent = vec![0u64; o.conns];
    let mut errors = 0usize;
    let mut failed = vec![false; o.conns];
    let mut events = vec![EpollEvent::empty(); 1024];

    // The open exchanges' bytes, not the clients' pumping.
    let received_before = received(&scrape(o.metrics)?)?;
    let pump_start = Instant::now();
    let deadline = pump_start + Duration::from_secs_f64(o.max_secs);
    let mut next_scrape = pump_start;
    let mut last_received = received_before;
    let mut last_change = pump_start;
    let mut peak_rss = connected_rss;
    let end = loop {
        let now = Instant::now();
        if now >= next_scrape {
            next_scrape = now + Duration::from_millis(100);
            let got = received(&scrape(o.metrics)?)?;
            if got != last_received {
                last_received = got;
                last_change = now;
            }
            let (rss, _) = memory(o.server_pid)?;
            peak_rss = peak_rss.max(rss);
            if rss > o.rss_cap {
                break "rss_cap";
            }
            if now.duration_since(last_change) >= o.quiet {
                // Stalled: it stopped reading with bytes queued for it.
                // Otherwise it read everything the clients could send.
                let pumped: u64 = sent.iter().sum();
                break if pumped > last_received - received_before {
                    "stalled"
                } else {
                    "clients_done"
                };
            }
            if now >= deadline {
                break "max_secs";
            }
        }
        let n = match epoll.wait(&mut events, EpollTimeout::from(20u16)) {
            Ok(n) => n,
            Err(Errno::EINTR) => 0,
            Err(e) => return Err(e.into()),
        };
        for ev in &events[..n] {
            let i = ev.data() as usize;
            if failed[i] {
                continue;
            }
            // Edge-triggered: write until the socket takes no more.
            while sent[i] < o.max_bytes {
                let at = (sent[i] % o.line_bytes as u64) as usize;
                let len = (chunk as u64).min(o.max_bytes - sent[i]) as usize;
                match clients[i].write(&pattern[at..at + len]) {
                    Ok(n) => sent[i] += n as u64,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        failed[i] = true;
                        errors += 1;
                        break;
                    }
                }
            }
        }
    };
    let pump_secs = pump_start.elapsed().as_secs_f64();

    // The state at the stall (or wherever the run ended).
    let page = scrape(o.metrics)?;
    let (rss, hwm) = memory(o.server_pid)?;
    let queues = kernel_queues(o.addr.port());
    let tcp_pages = tcp_mem_pages();
    let ext_after = tcp_ext();
    let gauge = |name: &str| {
        page.get(name)
            .map_or_else(|| "n/a".to_string(), |v| format!("{}", *v as i64))
    };
    let capped = sent.iter().filter(|s| **s >= o.max_bytes).count();
    let pumped: u64 = sent.iter().sum();
    let read = received(&page)?;
    let mut out = format!(
        "end={end} conns={} connect_secs={connect_secs:.2} pump_secs={pump_secs:.2} \
         rss_rest={rest_rss} rss_connected={connected_rss} rss_stalled={rss} \
         rss_peak_sampled={} vm_hwm={hwm} received={} sent_replies={} \
         buffered_bytes={} buffer_budget={} throttled={} open={} \
         clients_sent={pumped} unread={} clients_at_max={capped} client_errors={errors} \
         tcp_mem_pages_rest={rest_tcp_pages} tcp_mem_pages_stalled={tcp_pages}",
        o.conns,
        peak_rss.max(rss),
        read,
        gauge("oneshotd_sent_bytes_total{service=\"upper\"}"),
        gauge("oneshotd_buffered_bytes"),
        gauge("oneshotd_buffer_budget_bytes"),
        gauge("oneshotd_connections_throttled"),
        gauge("oneshotd_connections_open{service=\"upper\"}"),
        pumped.saturating_sub(read - received_before),
    );
    match queues {
        Ok((s, c)) => out.push_str(&format!(
            " ss_server_socks={} ss_server_recvq={} ss_server_sendq={} ss_server_sndbuf_mean={} \
             ss_client_socks={} ss_client_recvq={} ss_client_sendq={}",
            s.0,
            s.1,
            s.2,
            s.3 / s.0.max(1),
            c.0,
            c.1,
            c.2
        )),
        Err(e) => out.push_str(&format!(" ss_error={}", e.to_string().replace(' ', "_"))),
    }
    for name in TCP_EXT {
        let delta = ext_after
            .get(name)
            .copied()
            .unwrap_or(0)
            .saturating_sub(ext_before.get(name).copied().unwrap_or(0));
        out.push_str(&format!(" {name}={delta}"));
    }
    if o.readers > 0 {
        let mut results = Vec::with_capacity(o.readers);
        for r in 0..o.readers {
            results.push(read_all(o, o.conns + r)?);
        }
        let mut bps: Vec<f64> = results.iter().map(|r| r.bps).collect();
        let listed = bps
            .iter()
            .map(|b| format!("{b:.0}"))
            .collect::<Vec<_>>()
            .join(",");
        bps.sort_by(f64::total_cmp);
        let stall = results
            .iter()
            .map(|r| r.max_stall)
            .max()
            .unwrap_or_default();
        let unfinished = results.iter().filter(|r| !r.finished).count();
        out.push_str(&format!(
            " readers={} reader_bytes={} reader_rcvbuf={} reader_min_bps={:.0} reader_median_bps={:.0} \
             reader_max_bps={:.0} reader_max_stall_ms={} readers_unfinished={unfinished} reader_bps={listed}",
            o.readers,
            o.reader_bytes,
            o.reader_rcvbuf,
            bps[0],
            bps[bps.len() / 2],
            bps[bps.len() - 1],
            stall.as_millis(),
        ));
    }
    let ext_end = tcp_ext();
    for name in TCP_EXT {
        let delta = ext_end
            .get(name)
            .copied()
            .unwrap_or(0)
            .saturating_sub(ext_before.get(name).copied().unwrap_or(0));
        out.push_str(&format!(" run_{name}={delta}"));
    }
    println!("{out}");
    drop(clients);
    Ok(())
}

/// What one reader got.
struct ReaderResult {
    /// Reply bytes per second, from its first write to its last reply byte
    /// (or to giving up).
    bps: f64,
    /// The longest time without a reply byte (from its first write).
    max_stall: Duration,
    /// Every reply byte came, within `--reader-max-secs`.
    finished: bool,
}

/// One reader (see the module's documentation): sends `o.reader_bytes` of
/// lines while reading and verifying every reply byte.
fn read_all(o: &Options, i: usize) -> io::Result<ReaderResult> {
    let mut stream = open(o, i, o.reader_rcvbuf, 0)?;
    let mut line: Vec<u8> = (0..o.reader_line_bytes - 1)
        .map(|k| b'a' + (k % 26) as u8)
        .collect();
    line.push(b'\n');
    let upper = line.to_ascii_uppercase();
    let chunk = 16 * 1024;
    let pattern: Vec<u8> = line
        .iter()
        .copied()
        .cycle()
        .take(chunk + line.len())
        .collect();
    let total = o.reader_bytes - o.reader_bytes % line.len() as u64;
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    epoll.add(
        &stream,
        EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT, 0),
    )?;
    let mut events = [EpollEvent::empty(); 1];
    let mut buf = vec![0u8; 64 * 1024];
    let (mut sent, mut got) = (0u64, 0u64);
    let start = Instant::now();
    let mut last = start;
    let mut max_stall = Duration::ZERO;
    let mut writing = true;
    while got < total {
        let now = Instant::now();
        if now - start > o.reader_max {
            break;
        }
        match epoll.wait(&mut events, EpollTimeout::from(100u16)) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        while writing && sent < total {
            let at = (sent % line.len() as u64) as usize;
            let len = (chunk as u64).min(total - sent) as usize;
            match stream.write(&pattern[at..at + len]) {
                Ok(n) => sent += n as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io::Error::other(format!("reader {i}: send: {e}"))),
            }
        }
        if writing && sent == total {
            writing = false;
            epoll.modify(&stream, &mut EpollEvent::new(EpollFlags::EPOLLIN, 0))?;
        }
        loop {
            match stream.read(&mut buf) {
                Ok(0) => {
                    return Err(io::Error::other(format!(
                        "reader {i}: closed by the server"
                    )))
                }
                Ok(n) => {
                    for (k, b) in buf[..n].iter().enumerate() {
                        if *b != upper[((got + k as u64) % upper.len() as u64) as usize] {
                            return Err(io::Error::other(format!(
                                "reader {i}: wrong reply byte at {}",
                                got + k as u64
                            )));
                        }
                    }
                    got += n as u64;
                    let now = Instant::now();
                    max_stall = max_stall.max(now - last);
                    last = now;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io::Error::other(format!("reader {i}: recv: {e}"))),
            }
        }
    }
    let finished = got == total;
    let end = if finished { last } else { Instant::now() };
    if !finished {
        max_stall = max_stall.max(end - last);
    }
    Ok(ReaderResult {
        bps: got as f64 / (end - start).as_secs_f64().max(1e-6),
        max_stall,
        finished,
    })
}
