//! The guarantees of the dispatcher under load: exclusivity, no forgotten
//! re-arm, no leaked descriptor, no reply to the wrong client.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use oneshotd::config::{Config, ListenAddr};
use oneshotd::dispatcher::Server;
use oneshotd::listeners;
use oneshotd::service::{ConnectionId, Input, Served, Service};
use oneshotd::upper::Upper;

use crate::util::*;

/// "upper", but it sleeps in every call and records how many workers are
/// inside it for the same connection at once, and, so that a server that
/// ran all the work on one worker could not pass for exclusive, how many
/// are inside it at once over all connections and which threads called it.
#[derive(Default)]
struct Exclusive {
    inside: Mutex<HashMap<ConnectionId, Arc<AtomicUsize>>>,
    max_overlap: AtomicUsize,
    busy: AtomicUsize,
    max_busy: AtomicUsize,
    threads: Mutex<HashSet<ThreadId>>,
    calls: AtomicUsize,
}

impl Service for Exclusive {
    fn serve(&self, input: Input<'_>, output: &mut Vec<u8>) -> Served {
        let counter = Arc::clone(
            self.inside
                .lock()
                .unwrap()
                .entry(input.connection)
                .or_default(),
        );
        let overlap = counter.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_overlap.fetch_max(overlap, Ordering::SeqCst);
        let busy = self.busy.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_busy.fetch_max(busy, Ordering::SeqCst);
        self.threads
            .lock()
            .unwrap()
            .insert(std::thread::current().id());
        self.calls.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_micros(200));
        let served = Upper.serve(input, output);
        self.busy.fetch_sub(1, Ordering::SeqCst);
        counter.fetch_sub(1, Ordering::SeqCst);
        served
    }

    fn request_timeout(&self, output: &mut Vec<u8>) {
        Upper.request_timeout(output)
    }
}

#[test]
fn at_most_one_worker_serves_a_connection_at_once() {
    let config = Config {
        workers: 8,
        listen: vec![ListenAddr::Tcp("127.0.0.1:0".parse().unwrap())],
        ..Config::default()
    };
    let service = Arc::new(Exclusive::default());
    let sockets = listeners::bind(&config.listen).unwrap();
    let server = Server::start(&config, sockets, service.clone()).unwrap();
    let addr = server.listeners().next().unwrap().tcp_addr().unwrap();
    assert_eq!(server.status().workers, 8);

    let clients: Vec<_> = (0..64)
        .map(|c| {
            std::thread::spawn(move || {
                let client = connect(addr);
                let mut writer = client.try_clone().unwrap();
                // Written in small pieces so requests arrive as many events.
                let sender = std::thread::spawn(move || {
                    for r in 0..200 {
                        writer
                            .write_all(format!("client {c} request {r}\n").as_bytes())
                            .unwrap();
                        if r % 10 == 0 {
                            std::thread::sleep(Duration::from_micros(100));
                        }
                    }
                });
                let mut reader = BufReader::new(&client);
                for (r, reply) in read_lines(&mut reader, 200).into_iter().enumerate() {
                    assert_eq!(reply, format!("CLIENT {c} REQUEST {r}\n"));
                }
                sender.join().unwrap();
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    let calls = service.calls.load(Ordering::Relaxed);
    let max_busy = service.max_busy.load(Ordering::SeqCst);
    let threads = service.threads.lock().unwrap().len();
    eprintln!(
        "exclusivity: {calls} service calls over 64 connections, by {threads} workers, \
         up to {max_busy} at once"
    );
    assert_eq!(service.max_overlap.load(Ordering::SeqCst), 1);
    assert!(calls >= 64, "{calls}");
    // Exclusivity per connection, not one worker for everything: with 64
    // busy connections and each call sleeping 200 us, the 8 workers must
    // have served different connections at the same time.
    assert!(
        max_busy >= 2,
        "never two workers at once ({threads} threads)"
    );
    assert!(threads >= 2, "one worker served everything");
    server.drain(Duration::from_secs(5));
}

#[test]
fn every_request_answered_and_no_fd_leaks() {
    let daemon = Daemon::builder("fdleak").config("workers = 4").spawn();
    let addr = daemon.addr();
    let baseline = daemon.resting_fd_count();
    let start = Instant::now();
    let clients: Vec<_> = (0..200)
        .map(|c| {
            std::thread::spawn(move || {
                let mut client = connect(addr);
                let mut reader = BufReader::new(client.try_clone().unwrap());
                // 500 requests, 50 in flight at a time.
                for batch in 0..10 {
                    let requests: String =
                        (0..50).map(|i| format!("c{c} b{batch} r{i}\n")).collect();
                    client.write_all(requests.as_bytes()).unwrap();
                    for (i, reply) in read_lines(&mut reader, 50).into_iter().enumerate() {
                        assert_eq!(reply, format!("C{c} B{batch} R{i}\n"));
                    }
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    let took = start.elapsed();
    eprintln!("200 x 500 requests answered in {took:?}");
    assert!(took < Duration::from_secs(60), "{took:?}");
    daemon.wait_fds_back_to(baseline, SOON);
}

#[test]
fn replies_never_reach_the_wrong_client_while_fds_are_reused() {
    let daemon = Daemon::builder("tokens").config("workers = 4").spawn();
    let addr = daemon.addr();
    let baseline = daemon.resting_fd_count();
    let deadline = Instant::now() + Duration::from_secs(30);

    // Steady clients: each checks that every reply carries its own name.
    let steady: Vec<_> = (0..8)
        .map(|c| {
            std::thread::spawn(move || {
                let mut client = connect(addr);
                let mut reader = BufReader::new(client.try_clone().unwrap());
                let mut line = String::new();
                for r in 0..3000 {
                    client
                        .write_all(format!("steady{c}-{r}\n").as_bytes())
                        .unwrap();
                    line.clear();
                    reader.read_line(&mut line).unwrap();
                    assert_eq!(line, format!("STEADY{c}-{r}\n"));
                }
            })
        })
        .collect();

    // Churners: open, send, maybe read, close — over and over, so the fd
    // numbers in the daemon are reused all the time.
    let churn: Vec<_> = (0..8)
        .map(|c| {
            std::thread::spawn(move || {
                for n in 0..400 {
                    if Instant::now() > deadline {
                        break;
                    }
                    let mut client = connect(addr);
                    client
                        .write_all(format!("churn{c}-{n}\n").as_bytes())
                        .unwrap();
                    match n % 3 {
                        0 => drop(client), // close without reading
                        1 => {
                            client.shutdown(Shutdown::Write).unwrap();
                            assert_eq!(
                                String::from_utf8(read_to_end(&client)).unwrap(),
                                format!("CHURN{c}-{n}\n")
                            );
                        }
                        _ => {
                            let mut line = String::new();
                            BufReader::new(&client).read_line(&mut line).unwrap();
                            assert_eq!(line, format!("CHURN{c}-{n}\n"));
                        }
                    }
                }
            })
        })
        .collect();
    for t in steady.into_iter().chain(churn) {
        t.join().unwrap();
    }
    daemon.wait_fds_back_to(baseline, SOON);
}

/// Spinning before sleeping (`spin_before_sleep_us`) must stop paying out
/// when events stop coming quickly: a client that sends a request every
/// few milliseconds must not keep a worker polling between them. With the
/// longest spin allowed (1 ms), a worker that spun before every sleep
/// would burn 1 ms per request here, 250 ms in all.
#[test]
fn a_slow_trickle_of_requests_does_not_keep_a_worker_spinning() {
    let daemon = Daemon::builder("spin")
        .config("workers = 2\nspin_before_sleep_us = 1000")
        .spawn();
    let mut client = connect(daemon.addr());
    assert_eq!(roundtrip(&mut client, "warm up\n"), "WARM UP\n");
    let cpu = daemon.cpu_during(|| {
        for i in 0..250 {
            assert_eq!(
                roundtrip(&mut client, &format!("r{i}\n")),
                format!("R{i}\n")
            );
            std::thread::sleep(Duration::from_millis(4));
        }
    });
    eprintln!("250 requests 4 ms apart: {cpu:?} CPU");
    assert!(
        cpu < Duration::from_millis(125),
        "workers keep spinning between requests: {cpu:?} CPU"
    );
}
