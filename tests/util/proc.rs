//! What `/proc` says about the daemon: descriptors, memory, CPU time and
//! threads.

use std::fs;
use std::time::{Duration, Instant};

use super::Daemon;

impl Daemon {
    /// Open descriptors of the daemon process.
    pub fn fd_count(&self) -> usize {
        fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }

    /// The daemon's descriptors at rest: the least of a few samples, so
    /// that nothing momentary (a log file reopened, a probe) is counted.
    pub fn resting_fd_count(&self) -> usize {
        (0..5)
            .map(|_| {
                std::thread::sleep(Duration::from_millis(10));
                self.fd_count()
            })
            .min()
            .unwrap()
    }

    /// Waits until the daemon holds exactly `baseline` descriptors again;
    /// on timeout, lists what it still holds (with each TCP socket's state)
    /// before panicking.
    pub fn wait_fds_back_to(&self, baseline: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.fd_count() != baseline {
            if Instant::now() >= deadline {
                let fds: Vec<String> = fs::read_dir(format!("/proc/{}/fd", self.pid()))
                    .unwrap()
                    .filter_map(|e| {
                        let e = e.ok()?;
                        let target = fs::read_link(e.path()).ok()?;
                        Some(format!(
                            "{} -> {}",
                            e.file_name().to_string_lossy(),
                            target.display()
                        ))
                    })
                    .collect();
                let tcp = fs::read_to_string("/proc/net/tcp").unwrap_or_default();
                let states: Vec<&str> = tcp
                    .lines()
                    .filter(|row| {
                        fds.iter().any(|f| {
                            let inode = row.split_whitespace().nth(9).unwrap_or("-");
                            f.ends_with(&format!("socket:[{inode}]"))
                        })
                    })
                    .collect();
                self.report();
                panic!(
                    "fd count {} != baseline {baseline} after {timeout:?}\nfds: {fds:#?}\ntcp rows (st: 01 ESTABLISHED, 07 CLOSE, 08 CLOSE_WAIT, 0A LISTEN): {states:#?}",
                    self.fd_count()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Resident memory of the daemon process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        proc_status_field(self.pid(), "VmRSS:")
    }

    /// CPU time (user + system) the daemon has used so far.
    fn cpu_time(&self) -> Duration {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // Fields after the parenthesised command name; utime and stime are
        // the 14th and 15th fields of the whole line, in clock ticks.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // USER_HZ, which /proc reports in, is 100 on every Linux ABI.
        Duration::from_millis(ticks * 10)
    }

    /// CPU time the daemon uses while `activity` runs (a sleep, to see
    /// whether it spins while nothing should happen, or a load).
    pub fn cpu_during(&self, activity: impl FnOnce()) -> Duration {
        let before = self.cpu_time();
        activity();
        self.cpu_time() - before
    }

    pub fn threads(&self) -> u64 {
        proc_status_field(self.pid(), "Threads:")
    }
}

pub fn proc_status_field(pid: u32, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
