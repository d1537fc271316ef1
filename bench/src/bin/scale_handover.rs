//! `scale_handover`: what a restart (handover) and a drain cost with N idle
//! connections, for `bench/scale.sh`. It plays the service manager, as
//! systemd does for `oneshotd.service`:
//!
//! 1. binds the listening socket (the socket unit's) and a unix datagram
//!    `NOTIFY_SOCKET`, and starts oneshotd with the listener in
//!    `LISTEN_FDS` (named `oneshotd.socket`); waits for `READY=1`;
//! 2. starts `scale_load idle` (separate processes: the client sockets and
//!    the fd store's copies of the server sockets would not fit under one
//!    process's 20 000-descriptor cap), which opens N connections;
//! 3. sends SIGUSR2 and keeps what arrives with `FDSTORE=1` (by `FDNAME=`),
//!    closes the descriptor sent with `BARRIER=1`, reaps the old instance,
//!    then starts the next one with the listener and everything stored in
//!    `LISTEN_FDS`/`LISTEN_FDNAMES` and waits for its `READY=1`: the
//!    handover time. The client then checks that every connection answers;
//! 4. sends SIGTERM to the new instance and reaps it: the drain time. The
//!    client then checks that every connection saw the server close it.
//!
//! With `--tls-cert FILE --tls-key FILE --ca FILE`, the listener is a TLS
//! one (named `tls`), the connections TLS 1.3 sessions (`scale_load idle
//! --tls`), carried across the handover by their record layer's state.
//!
//! ```text
//! scale_handover --oneshotd target/release/oneshotd --load target/release/scale_load \
//!     --conns 15000 --port 18400 --workers 2 --dir /tmp/x
//! ```

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use nix::libc;
use oneshotd_bench::manager::{self, FdStore};
use oneshotd_bench::{cpu_time, raise_fd_limit};

/// The oneshotd instances started and not yet reaped: killed if the run
/// fails, so that nothing outlives it.
static LIVE: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());

fn kill_live() {
    for pid in LIVE.lock().unwrap().drain(..) {
        // SAFETY: kill has no memory-safety preconditions; pid is our child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// The manager's own descriptors live at or above this number, so that the
/// numbers from 3 up are free for what the next instance is given.
const HIGH_FD: RawFd = 19_000;

struct Options {
    oneshotd: PathBuf,
    load: PathBuf,
    conns: usize,
    port: u16,
    workers: usize,
    sources: u8,
    /// Passed on to `scale_load --procs`.
    procs: Option<usize>,
    dir: PathBuf,
    /// TLS: the server's certificate chain and key, the clients' CA.
    tls: Option<(String, String, String)>,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        oneshotd: "target/release/oneshotd".into(),
        load: "target/release/scale_load".into(),
        conns: 1000,
        port: 18400,
        workers: 2,
        sources: 16,
        procs: None,
        dir: std::env::temp_dir(),
        tls: None,
    };
    let (mut cert, mut key, mut ca) = (None, None, None);
    oneshotd_bench::parse_flags(std::env::args().skip(1), &[], |flag| {
        match flag.name.as_str() {
            "--tls-cert" => cert = Some(flag.text().to_owned()),
            "--tls-key" => key = Some(flag.text().to_owned()),
            "--ca" => ca = Some(flag.text().to_owned()),
            "--oneshotd" => o.oneshotd = flag.text().into(),
            "--load" => o.load = flag.text().into(),
            "--conns" => o.conns = flag.value()?,
            "--port" => o.port = flag.value()?,
            "--workers" => o.workers = flag.value()?,
            "--sources" => o.sources = flag.value()?,
            "--procs" => o.procs = Some(flag.value()?),
            "--dir" => o.dir = flag.text().into(),
            _ => return Err(flag.unknown()),
        }
        Ok(())
    })?;
    o.tls = match (cert, key, ca) {
        (Some(cert), Some(key), Some(ca)) => Some((cert, key, ca)),
        (None, None, None) => None,
        _ => return Err("--tls-cert, --tls-key and --ca go together".into()),
    };
    Ok(o)
}

fn main() -> ExitCode {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("scale_handover: {e}");
            return ExitCode::from(2);
        }
    };
    // Nothing here may outlive the run: at most two minutes.
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(120));
        eprintln!("scale_handover: no result within two minutes: giving up");
        kill_live();
        std::process::exit(3);
    });
    match run(&o) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scale_handover: {e}");
            kill_live();
            ExitCode::FAILURE
        }
    }
}

/// Moves `fd` to a number at or above [`HIGH_FD`] (close-on-exec).
fn high(fd: OwnedFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor this process owns.
    let moved = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, HIGH_FD) };
    if moved < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `moved` was just created and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(moved) })
}

/// Waits for `pid` to exit; returns its CPU time (all threads) and status.
fn reap(pid: i32) -> io::Result<(Duration, i32)> {
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: wait4 on our own child with valid out-pointers.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            LIVE.lock().unwrap().retain(|&p| p != pid);
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok((tv(usage.ru_utime) + tv(usage.ru_stime), status))
}

fn signal(pid: i32, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(pid, sig) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A descriptor the child moves into place: (source, target).
type Move = (RawFd, RawFd);

/// The manager's end of `NOTIFY_SOCKET` and its fd store.
struct Manager {
    socket: UnixDatagram,
    path: PathBuf,
    stored: FdStore,
    /// What the new instance removed from the store, closed after the
    /// measurement (closing 15 000 descriptors takes time of its own).
    removed: Vec<OwnedFd>,
}

impl Manager {
    /// Receives datagrams until one has a line `want`, acting on each as
    /// systemd does; fails after `timeout`.
    fn until(&mut self, want: &str, timeout: Duration) -> io::Result<Vec<String>> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::other(format!("no {want} within {timeout:?}")));
            }
            self.socket.set_read_timeout(Some(left))?;
            let (lines, fds) = match manager::receive(&self.socket) {
                Ok(received) => received,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(e),
            };
            // BARRIER=1: its descriptor is dropped in apply, which answers it.
            let removed = manager::apply(&mut self.stored, &lines, fds);
            self.removed.extend(removed);
            if lines.iter().any(|l| l == want) {
                return Ok(lines);
            }
        }
    }

    /// Renumbers the stored descriptors to 4, 5, ... (3 is the listener's)
    /// in the manager itself wherever the number is free, so that the child
    /// has little to do; a number this process already uses for something
    /// else (std opens a few) is filled in the child instead, between fork
    /// and exec. Returns the names in descriptor order and the child's
    /// moves (source, target).
    fn place(&mut self) -> io::Result<(Vec<String>, Vec<Move>)> {
        let n = self.stored.len() as RawFd;
        let end = 4 + n;
        if end >= HIGH_FD {
            return Err(io::Error::other("too many stored descriptors"));
        }
        let mut taken = vec![false; n as usize];
        for (_, fd) in &self.stored {
            let raw = fd.as_raw_fd();
            if (4..end).contains(&raw) {
                taken[(raw - 4) as usize] = true;
            }
        }
        let mut free = (0..n).filter(|&i| !taken[i as usize]).map(|i| 4 + i);
        let mut in_child = Vec::new();
        let mut order: Vec<(RawFd, String)> = Vec::with_capacity(n as usize);
        for (name, fd) in self.stored.iter_mut() {
            if (4..end).contains(&fd.as_raw_fd()) {
                order.push((fd.as_raw_fd(), name.clone()));
                continue;
            }
            let target = free.next().expect("a free number for each one outside");
            order.push((target, name.clone()));
            // SAFETY: F_GETFD only asks whether `target` is open.
            if unsafe { libc::fcntl(target, libc::F_GETFD) } >= 0 {
                in_child.push((fd.as_raw_fd(), target));
                continue;
            }
            // SAFETY: `target` is free; the copy is owned by the new OwnedFd.
            let placed = unsafe { libc::dup3(fd.as_raw_fd(), target, libc::O_CLOEXEC) };
            if placed != target {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: just created at `target`; the old number is dropped.
            *fd = unsafe { OwnedFd::from_raw_fd(placed) };
        }
        order.sort_by_key(|(fd, _)| *fd);
        Ok((order.into_iter().map(|(_, name)| name).collect(), in_child))
    }
}

/// Starts oneshotd with the listener as fd 3 and `names.len()` stored
/// descriptors already at 4, 5, ... (see [`Manager::place`]).
fn start(
    o: &Options,
    config: &PathBuf,
    listener: RawFd,
    manager: &Manager,
    names: &[String],
    moves: Vec<Move>,
    log: &str,
) -> io::Result<i32> {
    let count = 1 + names.len();
    let listener_name = if o.tls.is_some() {
        "tls"
    } else {
        "oneshotd.socket"
    };
    let mut all_names = vec![listener_name.to_owned()];
    all_names.extend(names.iter().cloned());
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg("LISTEN_PID=$$ exec \"$0\" \"$@\"")
        .arg(&o.oneshotd)
        .arg("--config")
        .arg(config)
        .env("LISTEN_FDS", count.to_string())
        .env("LISTEN_FDNAMES", all_names.join(":"))
        .env("NOTIFY_SOCKET", &manager.path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(o.dir.join(log))?);
    let stored = names.len() as RawFd;
    // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            // The moves first: a source may be 3, which the listener takes.
            for &(source, target) in &moves {
                if libc::dup2(source, target) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if libc::dup2(listener, 3) < 0 {
                return Err(io::Error::last_os_error());
            }
            for fd in 4..4 + stored {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let pid = command.spawn()?.id() as i32;
    LIVE.lock().unwrap().push(pid);
    Ok(pid)
}

fn run(o: &Options) -> io::Result<()> {
    raise_fd_limit();
    let config = o.dir.join("oneshotd.toml");
    let mut text = format!(
        "workers = {}\nlisten = [\"127.0.0.1:{}\"]\nmax_connections = 100000\nlog_level = \"warn\"\n",
        o.workers, o.port
    );
    if let Some((cert, key, _)) = &o.tls {
        text.push_str(&format!(
            "tls_certificate = {cert:?}\ntls_private_key = {key:?}\n"
        ));
    }
    std::fs::write(&config, text)?;
    let listener = high(OwnedFd::from(TcpListener::bind(("127.0.0.1", o.port))?))?;
    let path = o.dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let socket = UnixDatagram::from(high(OwnedFd::from(UnixDatagram::bind(&path)?))?);
    // Plenty of room for the ~60 datagrams of a large handover.
    nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::RcvBuf, &(8 << 20))?;
    let mut manager = Manager {
        socket,
        path,
        stored: Vec::new(),
        removed: Vec::new(),
    };

    let first = start(
        o,
        &config,
        listener.as_raw_fd(),
        &manager,
        &[],
        Vec::new(),
        "first.log",
    )?;
    manager.until("READY=1", Duration::from_secs(10))?;

    let mut client = Command::new(&o.load);
    client
        .args(["idle", "--addr", &format!("127.0.0.1:{}", o.port)])
        .args([
            "--conns",
            &o.conns.to_string(),
            "--sources",
            &o.sources.to_string(),
        ])
        .args(["--server-pid", &first.to_string()]);
    if let Some(procs) = o.procs {
        client.args(["--procs", &procs.to_string()]);
    }
    if let Some((_, _, ca)) = &o.tls {
        client.args(["--tls", "--ca", ca]);
    }
    let mut client = client
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut to_client = File::from(high(OwnedFd::from(client.stdin.take().unwrap()))?);
    let mut from_client = BufReader::new(File::from(high(OwnedFd::from(
        client.stdout.take().unwrap(),
    ))?));
    let mut expect = |prefix: &str| -> io::Result<String> {
        let mut line = String::new();
        from_client.read_line(&mut line)?;
        if !line.starts_with(prefix) {
            return Err(io::Error::other(format!(
                "client: expected {prefix}, got {line:?}"
            )));
        }
        Ok(line.trim().to_owned())
    };
    let ready = expect("idle_ready")?;
    let rss = ready
        .split_whitespace()
        .find_map(|f| f.strip_prefix("rss_b_per_conn="))
        .unwrap_or("n/a")
        .to_owned();

    // Requests over the fresh connections, for the rate over the same ones
    // carried (after the handover, below).
    let mut burst = || -> io::Result<String> {
        writeln!(to_client, "burst")?;
        let line = expect("burst_ok")?;
        let secs: f64 = line
            .split_whitespace()
            .find_map(|f| f.strip_prefix("secs="))
            .and_then(|s| s.parse().ok())
            .unwrap_or(f64::NAN);
        Ok(format!(
            "{:.0}",
            (o.conns * oneshotd_bench::BURST) as f64 / secs
        ))
    };
    // Twice: the first warms what the second (and the one after the
    // handover) then finds warm.
    burst()?;
    let fresh_req_s = burst()?;

    // The handover: SIGUSR2 to the next instance's READY=1.
    let cpu_before = cpu_time(first as u32).unwrap_or_default();
    let t0 = Instant::now();
    signal(first, libc::SIGUSR2)?;
    manager.until("BARRIER=1", Duration::from_secs(30))?;
    let barrier = t0.elapsed();
    let (cpu_first, status) = reap(first)?;
    let old_exit = t0.elapsed();
    if status != 0 {
        return Err(io::Error::other(format!(
            "old instance exited with status {status}"
        )));
    }
    let stored_conns = manager.stored.iter().filter(|(n, _)| n == "conn").count();
    if stored_conns != o.conns {
        return Err(io::Error::other(format!(
            "{stored_conns} connections stored, {} held",
            o.conns
        )));
    }
    let (names, moves) = manager.place()?;
    let placed = t0.elapsed();
    let second = start(
        o,
        &config,
        listener.as_raw_fd(),
        &manager,
        &names,
        moves,
        "second.log",
    )?;
    let lines = manager.until("READY=1", Duration::from_secs(30))?;
    let handover = t0.elapsed();
    let cpu_second = cpu_time(second as u32).unwrap_or_default();
    let restored = lines
        .iter()
        .find_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("restored="))
        })
        .unwrap_or("?")
        .to_owned();
    manager.removed.clear();
    if !manager.stored.is_empty() {
        return Err(io::Error::other(
            "the new instance left descriptors in the store",
        ));
    }
    let carried_req_s = burst()?;
    writeln!(to_client, "check")?;
    let check = expect("check_ok")?;
    let check_s = check
        .split_whitespace()
        .find_map(|f| f.strip_prefix("secs="))
        .unwrap_or("n/a")
        .to_owned();

    // The drain: SIGTERM to exit.
    let cpu_before_drain = cpu_time(second as u32).unwrap_or_default();
    let t1 = Instant::now();
    signal(second, libc::SIGTERM)?;
    let (cpu_drain, status) = reap(second)?;
    let drain = t1.elapsed();
    if status != 0 {
        return Err(io::Error::other(format!(
            "drained instance exited with status {status}"
        )));
    }
    writeln!(to_client, "eof")?;
    expect("eof_ok")?;
    drop(to_client);
    let client_status = client.wait()?;
    if !client_status.success() {
        return Err(io::Error::other(format!("client failed: {client_status}")));
    }
    let per_conn = |d: Duration| d.as_secs_f64() * 1e6 / o.conns as f64;
    println!(
        "mode=handover tls={} conns={} handover_s={:.4} barrier_s={:.4} old_exit_s={:.4} placed_s={:.4} restored={restored} drain_s={:.4} rss_b_per_conn={rss} handover_cpu_us_per_conn={:.2} drain_cpu_us_per_conn={:.2} check_s={check_s} fresh_req_s={fresh_req_s} carried_req_s={carried_req_s} eof_ok=1 errors=0",
        if o.tls.is_some() { "tls13" } else { "no" },
        o.conns,
        handover.as_secs_f64(),
        barrier.as_secs_f64(),
        old_exit.as_secs_f64(),
        placed.as_secs_f64(),
        drain.as_secs_f64(),
        per_conn(cpu_first.saturating_sub(cpu_before) + cpu_second),
        per_conn(cpu_drain.saturating_sub(cpu_before_drain)),
    );
    Ok(())
}
