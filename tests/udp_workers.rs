//! UDP with `--workers` (SPEC §8 + §9): one SO_REUSEPORT socket per worker spreads senders
//! over the workers, the supervisor's totals carry exact datagram counts, a worker killed
//! with -9 is replaced and its senders answered again, and a socket-activated UDP socket is
//! one socket served by both workers (registered EPOLLEXCLUSIVE with epoll).

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::udp::{client, recv, REPLY_WAIT};
use crate::util::client::ping;
use crate::util::Activated;
use crate::workers::pool::{parse_stats, Pool, PATIENCE};

/// Senders: enough that SO_REUSEPORT's hash puts some on each of two workers (all on one:
/// odds 2^-31).
const SENDERS: usize = 32;

/// Send `payload` from `c` to `to`; the exact reply must come back from `to`.
fn exchange(c: &UdpSocket, to: SocketAddr, payload: &[u8]) -> Result<(), String> {
    c.send_to(payload, to).map_err(|e| format!("send: {e}"))?;
    match recv(c) {
        Some((back, from)) if back == payload && from == to => Ok(()),
        Some((back, from)) => Err(format!("{} bytes from {from}, not ours", back.len())),
        None => Err(format!(
            "no reply to {:?}",
            String::from_utf8_lossy(payload)
        )),
    }
}

fn field(stats: &HashMap<String, u64>, key: &str) -> u64 {
    stats.get(key).copied().unwrap_or(u64::MAX)
}

for_each_backend!(udp_senders_spread_over_workers_and_survive_a_kill);
/// `--workers 2` with a UDP and a TCP listener: 32 senders (own ports) × 5 datagrams are all
/// answered exactly; each worker's own stats line shows it received some; the supervisor's
/// totals line ends in exact `datagrams_in= datagrams_out= dropped=` sums. Then worker 1 is
/// killed with SIGKILL: once its replacement listens every sender is answered again, and
/// the totals still add up (the dead generation included).
fn udp_senders_spread_over_workers_and_survive_a_kill(backend: &'static str) {
    const ROUNDS: usize = 5;
    let args = ["-l", "127.0.0.1:0", "-l", "udp:127.0.0.1:0"];
    let Some(p) = Pool::start(backend, 2, &args) else {
        return;
    };
    let to = p.d.udp_addr();
    let senders: Vec<UdpSocket> = (0..SENDERS)
        .map(|_| client("127.0.0.1:0", REPLY_WAIT))
        .collect();
    let mut bytes = 0;
    for round in 0..ROUNDS {
        for (i, c) in senders.iter().enumerate() {
            let payload = format!("sender {i} round {round}");
            bytes += payload.len() as u64;
            exchange(c, to, payload.as_bytes()).unwrap_or_else(|e| p.d.fail(&e));
        }
    }
    for k in 1..=2 {
        let w = p.worker_stats(k);
        if field(&w, "datagrams_in") == 0 || field(&w, "datagrams_in") == u64::MAX {
            p.d.fail(&format!("worker {k} received no datagram: {w:?}"));
        }
    }
    let sent = (SENDERS * ROUNDS) as u64;
    let t = p.totals_until(|t| field(t, "datagrams_out") == sent);
    let want = [
        ("datagrams_in", sent),
        ("datagrams_out", sent),
        ("dropped", 0),
        ("bytes_in", bytes),
        ("bytes_out", bytes),
        ("workers", 2),
    ];
    for (key, v) in want {
        if field(&t, key) != v {
            p.d.fail(&format!("totals: want {key}={v}, got {t:?}"));
        }
    }
    let tcp = p.d.connect();
    ping(&tcp, b"tcp too").unwrap_or_else(|e| p.d.fail(&format!("TCP ping: {e}")));

    // kill -9 worker 1: replaced within ~2 s (back-off 100 ms), then everyone is answered.
    let mark = p.d.mark();
    let t0 = Instant::now();
    kill(Pid::from_raw(p.worker_pid(1)), Signal::SIGKILL).unwrap();
    p.wait_replaced(1, mark, PATIENCE);
    if t0.elapsed() > Duration::from_millis(2500) {
        p.d.fail(&format!("replaced only after {:?}", t0.elapsed()));
    }
    let mut again = 0;
    for (i, c) in senders.iter().enumerate() {
        let payload = format!("sender {i} again");
        again += payload.len() as u64;
        exchange(c, to, payload.as_bytes())
            .unwrap_or_else(|e| p.d.fail(&format!("after the kill: {e}")));
    }
    let sent = sent + SENDERS as u64;
    let t = p.totals_until(|t| field(t, "datagrams_out") == sent);
    if field(&t, "datagrams_in") != sent || field(&t, "bytes_in") != bytes + again + 7 {
        p.d.fail(&format!("totals after the kill: {t:?}"));
    }
}

impl Activated {
    /// The first line after byte `mark` of stderr that contains `needle`, within `within`.
    fn wait_line(&self, mark: usize, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let text = self.stderr();
            let tail = text.get(mark..).unwrap_or("");
            let complete = &tail[..tail.rfind('\n').map_or(0, |i| i + 1)];
            if let Some(l) = complete.lines().find(|l| l.contains(needle)) {
                return l.to_string();
            }
            if Instant::now() > deadline {
                self.fail(&format!("no line with {needle:?}"));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn fail(&self, why: &str) -> ! {
        panic!("{why}\n--- stderr:\n{}", self.stderr())
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Worker `k`'s latest pid, from the supervisor's `worker K started (pid P)`.
    fn worker_pid(&self, k: usize) -> i32 {
        let needle = format!("worker {k} started (pid ");
        self.stderr()
            .lines()
            .rev()
            .filter_map(|l| l.split_once(&needle))
            .find_map(|(_, rest)| rest.split(')').next()?.parse().ok())
            .unwrap_or_else(|| self.fail(&format!("no start line for worker {k}")))
    }

    /// SIGUSR1 to `pid`; the stats line it logs (containing `needle`).
    fn stats(&self, pid: i32, needle: &str) -> HashMap<String, u64> {
        let mark = self.stderr().len();
        kill(Pid::from_raw(pid), Signal::SIGUSR1).unwrap();
        parse_stats(&self.wait_line(mark, needle, PATIENCE))
    }

    /// [`Activated::stats`] again (every 50 ms, up to [`PATIENCE`]) until `ok` holds: the
    /// stats that matched, or the last ones seen.
    fn stats_until(
        &self,
        pid: i32,
        needle: &str,
        ok: impl Fn(&HashMap<String, u64>) -> bool,
    ) -> HashMap<String, u64> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let st = self.stats(pid, needle);
            if ok(&st) || Instant::now() >= deadline {
                return st;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Is `pid` stopped (state T)?
fn stopped(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rfind(')')
        .is_some_and(|i| stat[i + 2..].starts_with('T'))
}

/// The epoll event mask `pid` registered for its descriptor `fd`, from the fdinfo of its
/// epoll instance (`tfd: FD events: HEX ...`).
fn epoll_mask(pid: i32, fd: i32) -> Option<u32> {
    for e in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        let is_epoll =
            std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().contains("eventpoll"));
        if !is_epoll {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            e.file_name().to_string_lossy()
        ))
        .ok()?;
        for l in info.lines() {
            let mut f = l.split_whitespace();
            if f.next() == Some("tfd:") && f.next() == Some(&fd.to_string()) {
                f.next(); // "events:"
                return u32::from_str_radix(f.next()?, 16).ok();
            }
        }
    }
    None
}

for_each_backend!(udp_socket_activation_with_two_workers);
/// `systemd-socket-activate --datagram` hands one UDP socket to a supervisor with 2
/// workers: both serve it (each shown answering alone while the other is stopped), with
/// epoll each registered it EPOLLEXCLUSIVE, the totals add up, and after worker 1 is killed
/// with -9 the other answers at once and the replacement serves too.
fn udp_socket_activation_with_two_workers(backend: &'static str) {
    let a = Activated::udp(
        "udp-workers",
        backend,
        &["--backend", backend, "--workers", "2"],
    );
    let port = a.port;
    a.wait_line(0, "as 3.", PATIENCE);
    let to: SocketAddr = ([127, 0, 0, 1], port).into();
    let first = client("127.0.0.1:0", PATIENCE);
    exchange(&first, to, b"start").unwrap_or_else(|e| a.fail(&e)); // starts the daemon
    a.wait_line(0, "1 inherited", PATIENCE);
    a.wait_line(0, "all 2 workers are accepting", PATIENCE);
    let workers = [a.worker_pid(1), a.worker_pid(2)];
    if backend == "epoll" {
        for w in workers {
            let mask = epoll_mask(w, 3).unwrap_or_else(|| a.fail("fd 3 not in the epoll set"));
            if mask & libc::EPOLLEXCLUSIVE as u32 == 0 {
                a.fail(&format!(
                    "worker {w} registered fd 3 as {mask:#x}: not exclusive"
                ));
            }
        }
    }
    let senders: Vec<UdpSocket> = (0..SENDERS)
        .map(|_| client("127.0.0.1:0", REPLY_WAIT))
        .collect();
    let mut sent = 1;
    for (stop, serving) in [(0, 1), (1, 0)] {
        kill(Pid::from_raw(workers[stop]), Signal::SIGSTOP).unwrap();
        let t0 = Instant::now();
        while !stopped(workers[stop]) {
            assert!(t0.elapsed() < PATIENCE, "{} did not stop", workers[stop]);
            thread::sleep(Duration::from_millis(5));
        }
        for (i, c) in senders.iter().enumerate().take(10) {
            exchange(c, to, format!("while {stop} sleeps: {i}").as_bytes())
                .unwrap_or_else(|e| a.fail(&e));
            sent += 1;
        }
        kill(Pid::from_raw(workers[stop]), Signal::SIGCONT).unwrap();
        let w = a.stats_until(
            workers[serving],
            &format!("worker {}: stats: ", serving + 1),
            |w| field(w, "datagrams_in") >= 10,
        );
        if field(&w, "datagrams_in") < 10 {
            a.fail(&format!(
                "worker {} while the other slept: {w:?}",
                serving + 1
            ));
        }
    }
    for (i, c) in senders.iter().enumerate() {
        exchange(c, to, format!("all {i}").as_bytes()).unwrap_or_else(|e| a.fail(&e));
        sent += 1;
    }
    // The totals are what the workers have published: the last reply's count lands a moment
    // after the reply itself.
    let t = a.stats_until(a.pid(), "supervisor: stats: ", |t| {
        field(t, "datagrams_in") == sent && field(t, "datagrams_out") == sent
    });
    if field(&t, "datagrams_in") != sent || field(&t, "datagrams_out") != sent {
        a.fail(&format!("want {sent} datagrams in and out: {t:?}"));
    }
    // kill -9 worker 1: the shared socket is still served by worker 2 at once, and by the
    // replacement once it runs.
    let mark = a.stderr().len();
    kill(Pid::from_raw(workers[0]), Signal::SIGKILL).unwrap();
    for (i, c) in senders.iter().enumerate() {
        exchange(c, to, format!("after kill {i}").as_bytes()).unwrap_or_else(|e| a.fail(&e));
    }
    a.wait_line(mark, "worker 1: listening on", PATIENCE);
    let replacement = a.worker_pid(1);
    kill(Pid::from_raw(workers[1]), Signal::SIGSTOP).unwrap();
    let t0 = Instant::now();
    while !stopped(workers[1]) {
        assert!(t0.elapsed() < PATIENCE, "{} did not stop", workers[1]);
        thread::sleep(Duration::from_millis(5));
    }
    let answered = exchange(&senders[0], to, b"replacement");
    kill(Pid::from_raw(workers[1]), Signal::SIGCONT).unwrap();
    answered.unwrap_or_else(|e| a.fail(&format!("replacement {replacement}: {e}")));
    kill(Pid::from_raw(a.pid()), Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + PATIENCE;
    let mut child = a;
    loop {
        if let Some(st) = child.child.try_wait().unwrap() {
            if !st.success() {
                child.fail(&format!("exit {st} after SIGTERM"));
            }
            break;
        }
        if Instant::now() > deadline {
            child.fail("no exit after SIGTERM");
        }
        thread::sleep(Duration::from_millis(20));
    }
}
