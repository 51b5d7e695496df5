//! `--workers` (SPEC §8): a supervisor and its pre-forked workers. Which worker serves a
//! connection is read from /proc (the socket's inode among each worker's descriptors) and
//! from each worker's own SIGUSR1 line, never guessed from timing.

use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::util::client::{self, check_pattern, echo_exact, expect_eof, fresh_seed, ping};
use crate::util::TempSock;

mod activation;
// With the per-source limits (SPEC §10): one table for the whole daemon.
mod limits;
// A worker's death or stop and the per-source table (issues 15 and 20).
mod death;
pub(crate) mod pool;
mod replace;
mod start;

use pool::{is_gone, owner, Pool, PATIENCE};

fn signal(pid: i32, sig: Signal) {
    kill(Pid::from_raw(pid), sig).unwrap_or_else(|e| panic!("kill {sig} {pid}: {e}"));
}

/// Clients (already echoed once, so accepted) until every worker owns at least one; each
/// with the pid that serves it.
fn clients_on_every_worker(p: &Pool, at_least: usize) -> Vec<(TcpStream, i32)> {
    let pids = p.worker_pids();
    let mut out: Vec<(TcpStream, i32)> = Vec::new();
    for _ in 0..200 {
        let s = p.d.connect();
        ping(&s, b"hello").unwrap_or_else(|e| p.d.fail(&format!("ping: {e}")));
        let Some(pid) = owner(&s, &pids) else {
            p.d.fail("no worker holds the connection")
        };
        out.push((s, pid));
        let spread = pids.iter().all(|w| out.iter().any(|(_, o)| o == w));
        if spread && out.len() >= at_least {
            return out;
        }
    }
    p.d.fail("200 connections did not reach every worker")
}

for_each_backend!(connections_land_on_every_worker);
/// 64 connections over 2 workers: each worker's own stats line counts some (2^-63 that the
/// kernel's hash puts them all on one), the counts add up to 64, and so do the totals.
fn connections_land_on_every_worker(backend: &'static str) {
    let Some(p) = Pool::start(backend, 2, &[]) else {
        return;
    };
    let held: Vec<TcpStream> = (0..64)
        .map(|_| {
            let s = p.d.connect();
            ping(&s, b"x").unwrap();
            s
        })
        .collect();
    let per: Vec<_> = (1..=2).map(|k| p.worker_stats(k)).collect();
    for (k, s) in per.iter().enumerate() {
        if s["accepted"] == 0 || s["open"] != s["accepted"] {
            p.d.fail(&format!("worker {}: {s:?}", k + 1));
        }
    }
    assert_eq!(per[0]["accepted"] + per[1]["accepted"], 64, "{per:?}");
    let t = p.totals_until(|t| t["bytes_out"] == 64);
    assert_eq!(
        (t["accepted"], t["open"], t["workers"]),
        (64, 64, 2),
        "{t:?}"
    );
    drop(held);
}

for_each_backend!(sigterm_drains_every_worker);
/// SIGTERM to the supervisor while every worker holds unsent replies (`--delay`): each
/// worker drains, every byte comes back, the supervisor exits 0 and no process is left.
fn sigterm_drains_every_worker(backend: &'static str) {
    const LEN: usize = 256 << 10;
    let Some(mut p) = Pool::start(backend, 2, &["--delay", "1s", "--shutdown-timeout", "30s"])
    else {
        return;
    };
    let pids = p.worker_pids();
    let clients = clients_on_every_worker(&p, 4);
    // `ping` took one second each: now send LEN more, held by the delay, not read yet.
    let seeds: Vec<u64> = clients
        .iter()
        .map(|(s, _)| {
            let seed = fresh_seed();
            client::send_pattern(&mut &*s, seed, LEN).unwrap();
            seed
        })
        .collect();
    let mark = p.d.mark();
    p.d.signal(Signal::SIGTERM);
    for k in 1..=2 {
        p.d.expect_line(mark, &format!("worker {k}: SIGTERM received"), PATIENCE);
    }
    for ((s, pid), seed) in clients.iter().zip(seeds) {
        s.shutdown(std::net::Shutdown::Write).unwrap();
        check_pattern(&mut &*s, seed, LEN)
            .and_then(|_| expect_eof(&mut &*s))
            .unwrap_or_else(|e| p.d.fail(&format!("client of pid {pid}: {e}")));
    }
    let st = p.d.wait_exit(PATIENCE);
    if st.code() != Some(0) {
        p.d.fail("want exit 0");
    }
    for pid in pids {
        assert!(is_gone(pid), "worker {pid} outlived the supervisor");
    }
}

/// SIGHUP reloads every worker (clients stay); SIGINT starts every worker's drain (clients that stay open
/// keep it going); a second SIGINT is forwarded too and ends the drains at once: exit 0.
#[test]
fn a_second_sigint_is_forwarded_and_ends_the_drains() {
    let Some(mut p) = Pool::start("poll", 2, &["--shutdown-timeout", "60s"]) else {
        return;
    };
    let clients = clients_on_every_worker(&p, 2);
    let mark = p.d.mark();
    p.d.signal(Signal::SIGHUP);
    p.d.expect_line(mark, "supervisor: reload complete", PATIENCE);
    p.d.signal(Signal::SIGINT);
    for k in 1..=2 {
        p.d.expect_line(
            mark,
            &format!("worker {k}: SIGINT received: draining"),
            PATIENCE,
        );
    }
    if p.d.try_wait_exit(Duration::from_millis(300)).is_some() {
        p.d.fail("exited while clients were still open");
    }
    p.d.signal(Signal::SIGINT);
    for k in 1..=2 {
        p.d.expect_line(mark, &format!("worker {k}: second SIGINT"), PATIENCE);
    }
    assert_eq!(p.d.wait_exit(PATIENCE).code(), Some(0));
    for (s, _) in &clients {
        assert!(matches!(
            client::outcome(s, PATIENCE),
            client::Outcome::Closed
        ));
    }
}

/// SIGKILL to the supervisor: PR_SET_PDEATHSIG takes every worker with it within 2 s, and
/// nothing serves the port any more.
#[test]
fn killing_the_supervisor_takes_every_worker() {
    let Some(mut p) = Pool::start("epoll", 3, &[]) else {
        return;
    };
    let pids = p.worker_pids();
    let addr = p.d.addr();
    let _client = clients_on_every_worker(&p, 3);
    signal(p.pid(), Signal::SIGKILL);
    p.d.wait_exit(PATIENCE);
    let t0 = Instant::now();
    while !pids.iter().all(|&pid| is_gone(pid)) {
        if t0.elapsed() > Duration::from_secs(2) {
            p.d.fail(&format!(
                "workers still running 2 s after the supervisor died: {pids:?}"
            ));
        }
        thread::sleep(Duration::from_millis(10));
    }
    assert!(
        TcpStream::connect(addr).is_err(),
        "something still listens on {addr}"
    );
}

/// Totals are exact across generations: what went through a worker that was later killed
/// stays counted, and the replacement's own line starts from zero.
#[test]
fn totals_include_a_replaced_generation() {
    let Some(p) = Pool::start("epoll", 2, &[]) else {
        return;
    };
    let mut sent = 0u64;
    let mut round = |n: usize| {
        for i in 0..n {
            let s = p.d.connect();
            let len = 1000 + 37 * i;
            echo_exact(&s, fresh_seed(), len, true).unwrap_or_else(|e| p.d.fail(&e));
            sent += len as u64;
        }
    };
    round(20);
    let before = p.worker_stats(1);
    let mark = p.d.mark();
    signal(p.worker_pid(1), Signal::SIGKILL);
    p.wait_replaced(1, mark, PATIENCE);
    let fresh = p.worker_stats(1);
    assert_eq!((fresh["accepted"], fresh["bytes_in"]), (0, 0), "{fresh:?}");
    round(20);
    let want = sent;
    let t = p.totals_until(|t| t["bytes_out"] == want && t["open"] == 0);
    assert_eq!(
        (t["accepted"], t["bytes_in"], t["rejected"]),
        (40, sent, 0),
        "{t:?}"
    );
    // (2^-20 that the kernel's hash gave worker 1 none of the first 20.)
    assert!(before["accepted"] > 0, "{before:?}");
}

for_each_backend!(unix_listener_is_shared_and_kept);
/// A unix listener is one socket for both workers. A worker stopped on its own (SIGTERM to
/// it alone) is replaced and the socket file stays; the supervisor removes it at exit.
fn unix_listener_is_shared_and_kept(backend: &'static str) {
    let sock = TempSock::new("workers");
    let listen = sock.listen_arg();
    let Some(mut p) = Pool::start(backend, 2, &["--listen", &listen]) else {
        return;
    };
    let connect = || {
        let s = std::os::unix::net::UnixStream::connect(&sock.0).unwrap();
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        s
    };
    for _ in 0..20 {
        echo_exact(&connect(), fresh_seed(), 10_000, true).unwrap_or_else(|e| p.d.fail(&e));
    }
    let mark = p.d.mark();
    signal(p.worker_pid(1), Signal::SIGTERM);
    p.d.expect_line(mark, "worker 1 (pid ", PATIENCE);
    p.wait_replaced(1, mark, PATIENCE);
    assert!(
        sock.0.exists(),
        "a worker's drain removed the shared socket file"
    );
    for _ in 0..20 {
        echo_exact(&connect(), fresh_seed(), 10_000, true).unwrap_or_else(|e| p.d.fail(&e));
    }
    let t = p.totals_until(|t| t["accepted"] == 40);
    assert_eq!(t["bytes_in"], 400_000, "{t:?}");
    // poll and select workers all wake for each client; the losers' EAGAIN is silent.
    let noise: Vec<String> =
        p.d.stderr()
            .lines()
            .filter(|l| l.contains("WARN") && !l.contains("; restarting in "))
            .map(str::to_string)
            .collect();
    if !noise.is_empty() {
        p.d.fail(&format!("unexpected warnings: {noise:?}"));
    }
    p.d.signal(Signal::SIGTERM);
    assert_eq!(p.d.wait_exit(PATIENCE).code(), Some(0));
    assert!(
        !sock.0.exists(),
        "the supervisor left its socket file behind"
    );
}
