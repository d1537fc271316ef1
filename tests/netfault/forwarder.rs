//! The faulty wire: a thread that moves IP packets between two TUN devices
//! and, on the way, drops, delays (with jitter, hence reorders), duplicates
//! or rate-limits them, from a seeded schedule. The kernel here has no
//! netem; doing every fault in one place keeps the four profiles uniform
//! and needs nothing installed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags};

/// What the wire does to every packet, the same in each direction.
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    /// Probability that a packet is dropped.
    pub loss: f64,
    /// Probability that a packet is sent twice.
    pub duplicate: f64,
    /// Every packet is held this long, plus or minus `jitter` (uniform):
    /// two packets sent closer together than the jitter may swap places.
    pub delay: Duration,
    pub jitter: Duration,
    /// Bits per second; a packet leaves once the ones before it have been
    /// clocked out at this rate (a token bucket one packet deep).
    pub rate_bps: Option<u64>,
    /// With a rate: the longest a packet may wait for the link; past it,
    /// the packet is dropped, as a full router queue drops it.
    pub queue_limit: Duration,
}

/// What the wire did, summed over both directions.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub packets: u64,
    /// Bytes delivered, per direction: server to client, client to server.
    pub bytes: [u64; 2],
    pub dropped: u64,
    pub queue_drops: u64,
    pub duplicated: u64,
    /// Of `dropped` and `duplicated`, the TCP segments with payload: the
    /// ones the kernel must answer (a retransmission, a D-SACK), so that
    /// its counters can be held against these.
    pub data_dropped: u64,
    pub data_duplicated: u64,
    /// Packets delivered after one that had been read later.
    pub reordered: u64,
    /// Per direction, as `bytes`: the highest rate over any [`WINDOW`] of
    /// deliveries, in bits per second.
    pub peak_bps: [u64; 2],
}

/// The span over which `peak_bps` is measured: long enough that a late
/// wake-up of this thread (a burst of overdue packets) barely moves it.
pub const WINDOW: Duration = Duration::from_secs(1);

/// The running forwarder; `stop` (or drop) ends it and closes both devices.
pub struct Forwarder {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Stats>>,
}

impl Forwarder {
    /// Forwards between `a` (the server's device) and `b` (the client's).
    pub fn start(a: OwnedFd, b: OwnedFd, faults: Faults, seed: u64) -> Forwarder {
        for fd in [&a, &b] {
            fcntl(fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).expect("nonblocking tun");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("forwarder".into())
            .spawn(move || Wire::new(faults, seed).run([a, b], &flag))
            .expect("spawn the forwarder");
        Forwarder {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops forwarding; returns what the wire did.
    pub fn stop(&mut self) -> Stats {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(t) => t.join().expect("the forwarder panicked"),
            None => Stats::default(),
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A packet waiting for its time; ordered by (time, arrival number).
type Held = Reverse<(Instant, u64, usize, Vec<u8>)>;

struct Wire {
    faults: Faults,
    rng: SplitMix64,
    held: BinaryHeap<Held>,
    /// Per direction: when the rate-limited link is free again.
    link_free: [Instant; 2],
    /// Per direction: the highest arrival number delivered so far.
    delivered: [u64; 2],
    /// Per direction: when the current rate window began, and its bytes.
    window: [(Instant, u64); 2],
    arrivals: u64,
    stats: Stats,
}

/// How often the thread looks at its stop flag when nothing is due.
const IDLE_POLL: Duration = Duration::from_millis(20);
/// The forwarder ends by itself after this, should its owner never stop
/// it: past any test's hard timeout.
const LIFETIME: Duration = Duration::from_secs(300);
/// Packets read from one device per round, so neither side starves the other.
const BATCH: usize = 64;

impl Wire {
    fn new(faults: Faults, seed: u64) -> Wire {
        let now = Instant::now();
        Wire {
            faults,
            rng: SplitMix64(seed),
            held: BinaryHeap::new(),
            link_free: [now; 2],
            delivered: [0; 2],
            window: [(now, 0); 2],
            arrivals: 0,
            stats: Stats::default(),
        }
    }

    fn run(mut self, fds: [OwnedFd; 2], stop: &AtomicBool) -> Stats {
        let mut buf = vec![0u8; 65536];
        let end = Instant::now() + LIFETIME;
        while !stop.load(Ordering::Relaxed) && Instant::now() < end {
            let now = Instant::now();
            let wait = match self.held.peek() {
                Some(Reverse((due, ..))) => due.saturating_duration_since(now).min(IDLE_POLL),
                None => IDLE_POLL,
            };
            // Round up: a zero timeout would spin until a packet is due.
            let ms = (wait.as_micros().div_ceil(1000)) as u16;
            let mut polled = [
                PollFd::new(fds[0].as_fd(), PollFlags::POLLIN),
                PollFd::new(fds[1].as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut polled, ms) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => panic!("poll the tun devices: {e}"),
            }
            for (from, fd) in fds.iter().enumerate() {
                for _ in 0..BATCH {
                    match nix::unistd::read(fd, &mut buf) {
                        Ok(n) if n > 0 => self.arrive(from, &buf[..n]),
                        Ok(_) | Err(Errno::EAGAIN) => break,
                        Err(Errno::EINTR) => continue,
                        Err(e) => panic!("read a tun device: {e}"),
                    }
                }
            }
            self.release(&fds);
        }
        self.stats
    }

    /// Decides a packet's fate as it comes off device `from`.
    fn arrive(&mut self, from: usize, packet: &[u8]) {
        // IPv4 only: whatever else the stack sends (IPv6 router
        // solicitations) is not the test's traffic.
        if packet[0] >> 4 != 4 {
            return;
        }
        let now = Instant::now();
        if self.rng.chance(self.faults.loss) {
            self.stats.dropped += 1;
            self.stats.data_dropped += carries_data(packet) as u64;
            return;
        }
        let mut due = now;
        if let Some(bps) = self.faults.rate_bps {
            let start = self.link_free[from].max(now);
            if start - now > self.faults.queue_limit {
                self.stats.queue_drops += 1;
                return;
            }
            let clocked = Duration::from_nanos(packet.len() as u64 * 8 * 1_000_000_000 / bps);
            self.link_free[from] = start + clocked;
            due = start + clocked;
        }
        due += self.delay();
        let copies = if self.rng.chance(self.faults.duplicate) {
            self.stats.duplicated += 1;
            self.stats.data_duplicated += carries_data(packet) as u64;
            2
        } else {
            1
        };
        for _ in 0..copies {
            self.arrivals += 1;
            self.held
                .push(Reverse((due, self.arrivals, 1 - from, packet.to_vec())));
        }
    }

    /// The packet's delay: `delay` plus a uniform jitter in ±`jitter`.
    fn delay(&mut self) -> Duration {
        let jitter = self.faults.jitter.as_nanos() as f64;
        let offset = (self.rng.unit() * 2.0 - 1.0) * jitter;
        let nanos = self.faults.delay.as_nanos() as f64 + offset;
        Duration::from_nanos(nanos.max(0.0) as u64)
    }

    /// Writes every packet whose time has come to its destination device.
    fn release(&mut self, fds: &[OwnedFd; 2]) {
        let now = Instant::now();
        while let Some(Reverse((due, ..))) = self.held.peek() {
            if *due > now {
                break;
            }
            let Some(Reverse((_, n, to, packet))) = self.held.pop() else {
                break;
            };
            if n < self.delivered[to] {
                self.stats.reordered += 1;
            }
            self.delivered[to] = self.delivered[to].max(n);
            self.stats.packets += 1;
            self.stats.bytes[1 - to] += packet.len() as u64;
            self.measure(1 - to, packet.len(), now);
            // A full device queue drops the packet, as a congested link
            // would; TCP recovers, and the test's counts say so.
            if nix::unistd::write(&fds[to], &packet).is_err() {
                self.stats.queue_drops += 1;
            }
        }
    }
}

/// Whether an IPv4 packet is a TCP segment with payload.
fn carries_data(packet: &[u8]) -> bool {
    let ip_header = usize::from(packet[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    let is_tcp = packet[9] == 6;
    match packet.get(ip_header + 12) {
        Some(offset) if is_tcp => total > ip_header + usize::from(offset >> 4) * 4,
        _ => false,
    }
}

impl Wire {
    /// Counts `len` bytes delivered in direction `dir` at `now` towards
    /// that direction's peak rate.
    fn measure(&mut self, dir: usize, len: usize, now: Instant) {
        let (start, bytes) = &mut self.window[dir];
        let span = now - *start;
        if span >= WINDOW {
            let bps = (*bytes * 8) as f64 / span.as_secs_f64();
            self.stats.peak_bps[dir] = self.stats.peak_bps[dir].max(bps as u64);
            *start = now;
            *bytes = 0;
        }
        *bytes += len as u64;
    }
}

/// A small seeded generator (SplitMix64): the schedule is reproducible from
/// the printed seed without another dependency. The clients draw their
/// lines from it too.
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }
}
