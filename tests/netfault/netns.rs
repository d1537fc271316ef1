//! Network namespaces and TUN devices, made with `ip` and torn down by
//! `Drop`, so that a failing test leaves nothing behind. Names carry the
//! test process's pid: two runs never collide, and a run killed before its
//! guards ran is recognised (its pid is gone) and cleaned up by the next.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Command;

use nix::libc;

/// Every namespace this test target makes starts with this.
const PREFIX: &str = "oneshotd-nf-";

/// A named network namespace (`ip netns add`), deleted on drop.
pub struct Netns {
    name: String,
    handle: NsHandle,
}

/// An open reference to a namespace, enough for a thread to enter it. Owning
/// one keeps the namespace alive, not its name.
pub struct NsHandle(File);

impl Netns {
    /// `ip netns add`; `tag` tells a run's namespaces apart.
    pub fn create(tag: &str) -> Netns {
        let name = format!("{PREFIX}{}-{tag}", std::process::id());
        // A namespace left by an earlier run of this very pid is stale.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run("ip", &["netns", "add", &name]);
        let file = File::open(format!("/run/netns/{name}"))
            .unwrap_or_else(|e| panic!("open /run/netns/{name}: {e}"));
        let ns = Netns {
            name,
            handle: NsHandle(file),
        };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME ARGS...`, which must succeed.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all);
    }

    pub fn handle(&self) -> NsHandle {
        NsHandle(self.handle.0.try_clone().expect("dup a netns handle"))
    }

    /// Runs `f` on a thread of its own inside the namespace (the calling
    /// thread stays where it is).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let handle = self.handle();
        std::thread::scope(|s| {
            s.spawn(move || {
                handle.enter();
                f()
            })
            .join()
            .expect("a thread inside the namespace panicked")
        })
    }

    /// The namespace's TCP counters (`/proc/net/snmp` and `netstat`), keyed
    /// `Tcp.RetransSegs`, `TcpExt.TCPOFOQueue`, ...: the kernel's own word
    /// on what the wire did to it.
    pub fn tcp_counters(&self) -> HashMap<String, u64> {
        self.run(|| {
            let mut out = HashMap::new();
            for file in ["snmp", "netstat"] {
                // `thread-self`: `self` would name the thread group leader's
                // namespace, not this thread's.
                let text = std::fs::read_to_string(format!("/proc/thread-self/net/{file}"))
                    .unwrap_or_else(|e| panic!("read {file}: {e}"));
                let rows: Vec<&str> = text.lines().collect();
                // Rows come in pairs: the names, then the values.
                for pair in rows.chunks(2) {
                    let [names, values] = pair else { continue };
                    let mut names = names.split_whitespace();
                    let mut values = values.split_whitespace();
                    let group = names.next().unwrap_or("").trim_end_matches(':');
                    values.next();
                    for (n, v) in names.zip(values) {
                        if let Ok(v) = v.parse() {
                            out.insert(format!("{group}.{n}"), v);
                        }
                    }
                }
            }
            out
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

impl NsHandle {
    /// Moves the calling thread (only it: `CLONE_NEWNET` is per thread) into
    /// the namespace; the sockets it makes from now on live there.
    pub fn enter(&self) {
        // SAFETY: the descriptor is open (owned by `self`) and names a
        // network namespace; setns only changes this thread's namespace.
        let rc = unsafe { libc::setns(self.0.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            panic!("setns: {}", io::Error::last_os_error());
        }
    }
}

/// Fails the test, with what is missing, unless this process may make
/// namespaces: a test that silently passed without them would prove nothing.
pub fn require_netns() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "the netfault tests need root (network namespaces, TUN devices); running as uid {euid}"
    );
    for (tool, package) in [("ip", "iproute2"), ("setpriv", "util-linux")] {
        let found = Command::new(tool).arg("-V").output().is_ok();
        assert!(
            found,
            "the netfault tests need `{tool}` (Debian: {package})"
        );
    }
    assert!(
        std::path::Path::new("/dev/net/tun").exists(),
        "the netfault tests need /dev/net/tun (the tun module)"
    );
    remove_stale();
}

/// Deletes namespaces of earlier runs whose process is gone (killed before
/// their guards could run).
fn remove_stale() {
    let Ok(list) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&list.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or("");
        if !pid.is_empty() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}

/// Opens a TUN device (IP packets, no extra header) in `ns`, configured as
/// a point-to-point link from `local` to `peer`, and up. The device lives
/// as long as the returned descriptor.
pub fn tun(ns: &Netns, device: &str, local: &str, peer: &str) -> OwnedFd {
    let fd = ns.run(|| {
        // Opened inside the namespace: the device is made in the namespace
        // of the task that opens the file.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .unwrap_or_else(|e| panic!("open /dev/net/tun: {e}"));
        // SAFETY: ifreq is plain old data, for which all zeroes is valid.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(device.bytes()) {
            *dst = src as libc::c_char;
        }
        req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: the descriptor is open, and TUNSETIFF reads (and may
        // update) one ifreq, which `req` is, for the length of the call.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
        if rc != 0 {
            panic!("TUNSETIFF {device}: {}", io::Error::last_os_error());
        }
        OwnedFd::from(file)
    });
    ns.ip(&["addr", "add", local, "peer", peer, "dev", device]);
    ns.ip(&["link", "set", device, "mtu", "1500", "up"]);
    fd
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e} (Debian: iproute2)"));
    assert!(
        out.status.success(),
        "{program} {}: {}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
