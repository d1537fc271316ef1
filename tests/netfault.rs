//! Faults on the wire. Loopback never loses, reorders or delays a segment,
//! so the daemon's partial-read, partial-write, retransmission and timer
//! paths would run only by luck. Here the daemon runs in a network
//! namespace of its own, its clients in another, and the only path between
//! them is a forwarder in this process that loses, delays and reorders,
//! duplicates or rate-limits packets (see `netfault/forwarder.rs`).
//!
//! Under each profile: 50 clients pipeline, split lines over many segments,
//! send lines at and near `max_line_bytes` and half-close, and every reply
//! byte is checked against the model; the request and idle timeouts sit
//! well above the pauses the faults cause, so they must not fire for those
//! clients, and three more clients check that they (and the line limit)
//! still do fire, on time. Each profile prints its figures (`--nocapture`).
//!
//! Needs root (namespaces, TUN devices), `ip` (iproute2) and `setpriv`
//! (util-linux); fails, never skips, without them. Each profile prints its
//! seed, which picks the fault schedule and the clients' lines;
//! `ONESHOTD_NETFAULT_SEED` sets it (the outcome still depends on timing).

mod util;

mod netfault {
    pub mod clients;
    pub mod forwarder;
    pub mod netns;
    pub mod wire;
}

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use netfault::clients;
use netfault::forwarder::{Faults, Stats, WINDOW};
use netfault::netns::{require_netns, NsHandle};
use netfault::wire::{Wire, SERVER_IP};
use util::Daemon;

const CLIENTS: usize = 50;
const MAX_LINE: usize = 4096;
/// Well above the longest pause any profile causes a healthy connection,
/// so that neither fires for the main load. The longest gap a client saw
/// between reply bytes was 4.6 s over some twenty runs: a connection whose
/// handshake needed a retransmission starts with a 3 s retransmission
/// timeout (doubling if that segment is lost again), and at 1 Mbit/s the
/// queue overflows in bursts. Those long pauses come before a connection
/// has an RTT sample, when whole lines are in flight, so it is the idle
/// timer they threaten more. Short enough to be waited for.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(8000);
const IDLE_TIMEOUT: Duration = Duration::from_millis(12000);
/// How late a timeout may be seen: the daemon looks at its timers every
/// eighth of the shorter timeout, and the reply or FIN that tells the
/// client may itself need a retransmission or two.
const LATE: Duration = Duration::from_millis(3000);
/// Every client's own deadline; the test gives up a little after.
const CLIENT_DEADLINE: Duration = Duration::from_secs(60);
const HARD_TIMEOUT: Duration = Duration::from_secs(75);

/// A client that checks one of the daemon's limits; says what it saw.
type Check = fn(NsHandle, SocketAddr, Instant) -> Result<String, String>;

/// What a profile's clients report.
enum Report {
    Main(usize, clients::Outcome),
    Check(&'static str, Result<String, String>),
}

fn seed(default: u64) -> u64 {
    std::env::var("ONESHOTD_NETFAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Runs the whole load under `faults`; returns what the wire did, for the
/// profile's own check that its fault really happened.
fn run_profile(name: &'static str, faults: Faults, seed: u64) -> (Stats, Counters) {
    require_netns();
    let started = Instant::now();
    let mut wire = Wire::new(name, faults, seed);
    let mut daemon = Daemon::builder(&format!("netfault-{name}"))
        .config(&format!(
            "workers = 2\nlisten = [\"{SERVER_IP}:0\"]\nmax_line_bytes = {MAX_LINE}\n\
             request_timeout_ms = {}\nidle_timeout_ms = {}\nlog_level = \"info\"",
            REQUEST_TIMEOUT.as_millis(),
            IDLE_TIMEOUT.as_millis()
        ))
        // `--pdeathsig`: a run killed before its guards ran must not leave
        // a daemon holding its namespace alive.
        .wrap(&[
            "setpriv",
            "--pdeathsig",
            "KILL",
            "ip",
            "netns",
            "exec",
            wire.server.name(),
        ])
        .spawn();
    let addr = daemon.addr();
    let load_started = Instant::now();
    let deadline = load_started + CLIENT_DEADLINE;

    let (tx, rx) = mpsc::channel();
    for id in 0..CLIENTS {
        let (tx, ns) = (tx.clone(), wire.client.handle());
        std::thread::spawn(move || {
            let outcome = clients::pipelining(ns, addr, id, MAX_LINE, seed, deadline);
            let _ = tx.send(Report::Main(id, outcome));
        });
    }
    let checks: [(&'static str, Check); 3] = [
        ("request timeout", check_request_timeout),
        ("idle timeout", check_idle_timeout),
        ("line too long", check_too_long),
    ];
    for (what, check) in checks {
        let (tx, ns) = (tx.clone(), wire.client.handle());
        std::thread::spawn(move || {
            let _ = tx.send(Report::Check(what, check(ns, addr, deadline)));
        });
    }
    drop(tx);

    let (mut lines, mut verified, mut gap) = (0, 0, Duration::ZERO);
    // When the last of the 50 finished (the checks take their timeouts).
    let mut main_load = Duration::ZERO;
    let (mut failures, mut seen) = (Vec::new(), Vec::new());
    for _ in 0..CLIENTS + checks.len() {
        let left = (started + HARD_TIMEOUT).saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Report::Main(id, o)) => {
                lines += o.lines;
                verified += o.verified;
                gap = gap.max(o.longest_gap);
                main_load = load_started.elapsed();
                failures.extend(o.error.map(|e| format!("client {id}: {e}")));
            }
            Ok(Report::Check(what, Ok(saw))) => seen.push(format!("{what} {saw}")),
            Ok(Report::Check(what, Err(e))) => failures.push(format!("{what}: {e}")),
            Err(_) => panic!("{name}: clients still running after {HARD_TIMEOUT:?}"),
        }
    }
    daemon.stop();
    let counters = Counters::read(&wire);
    let stats = wire.stop();
    println!(
        "netfault {name:<11} seed {seed}: replies verified {verified}, lost {}, wall {:.2}s \
         (50 clients {:.2}s), longest reply gap {:.2}s; wire: {} packets, {} dropped ({} data), {} queue drops, \
         {} duplicated ({} data), {} reordered; tcp: {} retransmits, {} out-of-order, {} dsacks sent; {}",
        lines - verified,
        started.elapsed().as_secs_f64(),
        main_load.as_secs_f64(),
        gap.as_secs_f64(),
        stats.packets,
        stats.dropped,
        stats.data_dropped,
        stats.queue_drops,
        stats.duplicated,
        stats.data_duplicated,
        stats.reordered,
        counters.retransmits,
        counters.out_of_order,
        counters.dsacks_sent,
        seen.join(", "),
    );
    assert!(
        failures.is_empty(),
        "{name}: {} of {} clients failed:\n{}",
        failures.len(),
        CLIENTS + checks.len(),
        failures.join("\n")
    );
    assert_eq!(lines, verified, "{name}: replies lost");
    (stats, counters)
}

/// The kernel's own counts, summed over both namespaces.
struct Counters {
    retransmits: u64,
    out_of_order: u64,
    dsacks_sent: u64,
}

impl Counters {
    fn read(wire: &Wire) -> Counters {
        let (s, c) = (wire.server.tcp_counters(), wire.client.tcp_counters());
        let sum = |keys: &[&str]| -> u64 {
            keys.iter()
                .map(|k| s.get(*k).unwrap_or(&0) + c.get(*k).unwrap_or(&0))
                .sum()
        };
        Counters {
            retransmits: sum(&["Tcp.RetransSegs"]),
            out_of_order: sum(&["TcpExt.TCPOFOQueue"]),
            dsacks_sent: sum(&["TcpExt.TCPDSACKOldSent", "TcpExt.TCPDSACKOfoSent"]),
        }
    }
}

/// Silent mid-line: `ERR request timeout`, no sooner than the timeout.
fn check_request_timeout(
    ns: NsHandle,
    addr: SocketAddr,
    deadline: Instant,
) -> Result<String, String> {
    let (got, after) = clients::falls_silent(ns, addr, Some(b"half a li"), deadline)?;
    if got != b"ERR request timeout\n" {
        return Err(format!("got {:?}", String::from_utf8_lossy(&got)));
    }
    on_time(after, REQUEST_TIMEOUT)
}

/// Silent between lines: closed, no sooner than the idle timeout.
fn check_idle_timeout(ns: NsHandle, addr: SocketAddr, deadline: Instant) -> Result<String, String> {
    let (got, after) = clients::falls_silent(ns, addr, None, deadline)?;
    if !got.is_empty() {
        return Err(format!("got {:?}", String::from_utf8_lossy(&got)));
    }
    on_time(after, IDLE_TIMEOUT)
}

fn on_time(after: Duration, timeout: Duration) -> Result<String, String> {
    if after < timeout || after > timeout + LATE {
        return Err(format!(
            "fired after {after:?}, expected {timeout:?} to {:?}",
            timeout + LATE
        ));
    }
    Ok(format!("after {:.2}s", after.as_secs_f64()))
}

/// Past `max_line_bytes`: earlier replies, then the error, then the close.
fn check_too_long(ns: NsHandle, addr: SocketAddr, deadline: Instant) -> Result<String, String> {
    let got = clients::too_long(ns, addr, MAX_LINE, deadline)?;
    if got != b"BEFORE\nERR line too long\n" {
        return Err(format!("got {:?}", String::from_utf8_lossy(&got)));
    }
    Ok("answered".into())
}

#[test]
fn loss_3_percent_each_way() {
    let faults = Faults {
        loss: 0.03,
        ..Faults::default()
    };
    let (stats, counters) = run_profile("loss", faults, seed(1));
    assert!(stats.data_dropped > 0, "the wire dropped no data");
    // Each lost segment is sent again (a few are merged into one); a
    // handful of retransmissions happen on a clean wire too, so a bare
    // "more than zero" would prove nothing.
    assert!(
        counters.retransmits >= stats.data_dropped / 2,
        "{} data segments lost, {} retransmitted",
        stats.data_dropped,
        counters.retransmits
    );
}

#[test]
fn delay_20ms_jitter_10ms_reorders() {
    let faults = Faults {
        delay: Duration::from_millis(20),
        jitter: Duration::from_millis(10),
        ..Faults::default()
    };
    let (stats, counters) = run_profile("delay", faults, seed(2));
    assert!(stats.reordered > 0, "the wire reordered nothing");
    // A clean wire puts nothing in the out-of-order queue.
    assert!(counters.out_of_order > 0, "TCP queued nothing out of order");
}

#[test]
fn duplication_1_percent() {
    let faults = Faults {
        duplicate: 0.01,
        ..Faults::default()
    };
    let (stats, counters) = run_profile("duplicate", faults, seed(3));
    assert!(stats.data_duplicated > 0, "the wire duplicated no data");
    // A receiver answers each duplicate segment with a D-SACK; a clean
    // wire sees a few too (tail loss probes), so compare, not just count.
    assert!(
        counters.dsacks_sent >= stats.data_duplicated / 2,
        "{} data segments duplicated, {} D-SACKs sent",
        stats.data_duplicated,
        counters.dsacks_sent
    );
}

#[test]
fn rate_limit_1_mbit() {
    const RATE: u64 = 1_000_000;
    let faults = Faults {
        rate_bps: Some(RATE),
        queue_limit: Duration::from_millis(300),
        ..Faults::default()
    };
    let (stats, _) = run_profile("rate", faults, seed(4));
    for (dir, peak) in ["server to client", "client to server"]
        .iter()
        .zip(stats.peak_bps)
    {
        println!("netfault rate: peak {dir} {peak} bit/s over {WINDOW:?}");
        // Never faster than the link; and the load did fill it.
        assert!(peak <= RATE * 11 / 10, "{dir}: {peak} bit/s");
        assert!(peak >= RATE / 2, "{dir}: the load never filled the link");
    }
    assert!(stats.queue_drops > 0, "the queue never overflowed");
}
