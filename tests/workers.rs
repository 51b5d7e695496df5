//! `--workers` (SPEC §8): a supervisor and its pre-forked workers. Which worker serves a
//! connection is read from /proc (the socket's inode among each worker's descriptors) and
//! from each worker's own SIGUSR1 line, never guessed from timing.

use std::io::Write;
use std::net::TcpStream;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::util::client::{self, check_pattern, echo_exact, expect_eof, fresh_seed, ping};
use crate::util::{run, Daemon, TempSock};

mod activation;
mod pool;

use pool::{children, is_gone, owner, Pool, ZombieWatch, PATIENCE};

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

for_each_backend!(kill_9_one_worker_while_both_stream);
/// Clients of both workers stream 4 MiB each; worker 1 is killed with SIGKILL when they are
/// 1 MiB in. Worker 2's clients get every byte back; worker 1's are cut off; worker 1 comes
/// back (same number, new pid) and serves within 2 s; no child is ever left a zombie.
fn kill_9_one_worker_while_both_stream(backend: &'static str) {
    const TOTAL: usize = 4 << 20;
    let Some(p) = Pool::start(backend, 2, &[]) else {
        return;
    };
    let watch = ZombieWatch::start(p.pid(), Duration::from_millis(500));
    let victim = p.worker_pid(1);
    let clients = clients_on_every_worker(&p, 6);
    let (tx, rx) = mpsc::channel();
    let results: Vec<(i32, Result<(), String>)> = thread::scope(|sc| {
        let mut go = Vec::new();
        let hs: Vec<_> = clients
            .iter()
            .map(|(s, pid)| {
                let (tx, (go_tx, go_rx)) = (tx.clone(), mpsc::channel::<()>());
                go.push(go_tx);
                let seed = fresh_seed();
                sc.spawn(move || {
                    let mut r = s.try_clone().unwrap();
                    let reader = thread::spawn(move || {
                        check_pattern(&mut r, seed, TOTAL).and_then(|_| expect_eof(&mut r))
                    });
                    let mut pat = client::Pattern::new(seed);
                    let mut buf = vec![0u8; 64 << 10];
                    let mut w = s;
                    let sent = (|| {
                        for i in 0..TOTAL / buf.len() {
                            if i == 16 {
                                tx.send(()).unwrap();
                                let _ = go_rx.recv_timeout(Duration::from_secs(30));
                            }
                            pat.fill(&mut buf);
                            w.write_all(&buf).map_err(|e| format!("write: {e}"))?;
                        }
                        s.shutdown(std::net::Shutdown::Write)
                            .map_err(|e| format!("shutdown: {e}"))
                    })();
                    if sent.is_err() {
                        let _ = s.shutdown(std::net::Shutdown::Both);
                    }
                    (*pid, sent.and(reader.join().unwrap()))
                })
            })
            .collect();
        for _ in &hs {
            rx.recv_timeout(PATIENCE)
                .unwrap_or_else(|_| p.d.fail("clients did not get going"));
        }
        let mark = p.d.mark();
        let t0 = Instant::now();
        signal(victim, Signal::SIGKILL);
        for g in go.drain(..) {
            let _ = g.send(());
        }
        let want = format!("worker 1 (pid {victim}) killed by SIGKILL; restarting");
        p.d.expect_line(mark, &want, PATIENCE);
        let fresh = p.wait_replaced(1, mark, Duration::from_secs(2));
        assert_ne!(fresh, victim);
        // 16 new clients, each echoed, with when its echo came back; the first one the
        // replacement serves (the hash picks its socket about every second time; who owns
        // which is looked up afterwards, as /proc/net/tcp is slow to read on a busy host).
        let echoed: Vec<(TcpStream, Duration)> = (0..16)
            .filter_map(|_| {
                let s = p.d.connect();
                ping(&s, b"new").ok().map(|_| (s, t0.elapsed()))
            })
            .collect();
        let served = echoed
            .iter()
            .find(|(s, _)| owner(s, &[fresh]).is_some())
            .map(|(_, at)| *at);
        match served {
            Some(at) if at <= Duration::from_secs(2) => {}
            _ => p.d.fail(&format!(
                "replacement pid {fresh} served {served:?} after the kill"
            )),
        }
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (pid, r) in &results {
        match (pid == &victim, r) {
            (false, Err(e)) => p.d.fail(&format!("a client of the other worker: {e}")),
            (true, Ok(())) => {
                p.d.fail("a client of the killed worker got everything back")
            }
            _ => {}
        }
    }
    let zombies = watch.finish();
    if !zombies.is_empty() {
        p.d.fail(&format!("zombies: {zombies:?}"));
    }
}

/// Four workers that die together while the supervisor is stopped: when it runs again it
/// holds one pending SIGCHLD for four exits (standard signals do not queue), and must still
/// reap every one at once (no zombie stays) and replace each under its own number.
#[test]
fn workers_that_die_together_are_all_reaped_and_replaced() {
    let Some(p) = Pool::start("epoll", 4, &[]) else {
        return;
    };
    let pids = p.worker_pids();
    let mark = p.d.mark();
    signal(p.pid(), Signal::SIGSTOP);
    for &pid in &pids {
        signal(pid, Signal::SIGKILL);
    }
    let t0 = Instant::now();
    while children(p.pid()).iter().filter(|c| c.1 == 'Z').count() < 4 {
        if t0.elapsed() > PATIENCE {
            signal(p.pid(), Signal::SIGCONT);
            p.d.fail("the killed workers did not all become zombies");
        }
        thread::sleep(Duration::from_millis(5));
    }
    // One reap per wake-up would leave the last of four for two 500 ms checks or more.
    let watch = ZombieWatch::start(p.pid(), Duration::from_millis(600));
    signal(p.pid(), Signal::SIGCONT);
    for (k, old) in pids.iter().enumerate() {
        let new = p.wait_replaced(k + 1, mark, PATIENCE);
        assert_ne!(new, *old);
    }
    thread::sleep(Duration::from_millis(700));
    let zombies = watch.finish();
    if !zombies.is_empty() {
        p.d.fail(&format!("zombies: {zombies:?}"));
    }
    let kids = children(p.pid());
    assert!(
        kids.len() == 4 && kids.iter().all(|c| c.1 != 'Z'),
        "{kids:?}"
    );
}

/// A worker that keeps dying is replaced after 100 ms, then 200 ms, then 400 ms, with a
/// warning naming it, its pid and how it ended.
#[test]
fn replacements_back_off() {
    let Some(p) = Pool::start("epoll", 2, &[]) else {
        return;
    };
    for delay in ["100ms", "200ms", "400ms"] {
        let (pid, mark) = (p.worker_pid(2), p.d.mark());
        signal(pid, Signal::SIGKILL);
        let want = format!("worker 2 (pid {pid}) killed by SIGKILL; restarting in {delay}");
        p.d.expect_line(mark, &want, PATIENCE);
        p.wait_replaced(2, mark, PATIENCE);
    }
}

for_each_backend!(a_stopped_worker_is_replaced);
/// SIGSTOP freezes worker 2's loop: no heartbeat for 5 s, so the supervisor kills it with
/// SIGKILL and starts another worker 2, within about 8 s.
fn a_stopped_worker_is_replaced(backend: &'static str) {
    let Some(p) = Pool::start(backend, 2, &[]) else {
        return;
    };
    let frozen = p.worker_pid(2);
    let mark = p.d.mark();
    let t0 = Instant::now();
    signal(frozen, Signal::SIGSTOP);
    let line = p.d.expect_line(mark, "is wedged", Duration::from_secs(8));
    assert!(line.contains(&format!("worker 2 (pid {frozen})")), "{line}");
    let fresh = p.wait_replaced(2, mark, Duration::from_secs(8));
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(9), "replaced after {took:?}");
    assert_ne!(fresh, frozen);
    assert!(is_gone(frozen) || !children(p.pid()).iter().any(|c| c.0 == frozen));
    // The running worker was never touched.
    assert_eq!(p.worker_pid(1), p.worker_pids()[0]);
    assert!(p.d.serves_new_client());
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

/// SIGHUP is logged and ignored; SIGINT starts every worker's drain (clients that stay open
/// keep it going); a second SIGINT is forwarded too and ends the drains at once: exit 0.
#[test]
fn a_second_sigint_is_forwarded_and_ends_the_drains() {
    let Some(mut p) = Pool::start("poll", 2, &["--shutdown-timeout", "60s"]) else {
        return;
    };
    let clients = clients_on_every_worker(&p, 2);
    let mark = p.d.mark();
    p.d.signal(Signal::SIGHUP);
    p.d.expect_line(mark, "SIGHUP received and ignored", PATIENCE);
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

#[test]
fn bad_worker_counts_are_usage_errors() {
    for bad in ["0", "-1", "two", "", "1.5", "99999"] {
        let r = run(&["--workers", bad, "--listen", "127.0.0.1:0"]);
        let line = format!("echo-mux: invalid value '{bad}' for '--workers'");
        assert_eq!(r.status.code(), Some(2), "{}", r.describe());
        assert!(r.stderr.starts_with(&line), "{}", r.describe());
        assert_eq!(r.stderr.lines().count(), 1, "{}", r.describe());
    }
}

/// A listener that cannot be bound ends the supervisor with exit 1 before any fork.
#[test]
fn a_bind_error_starts_no_worker() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let r = run(&[
        "--workers",
        "2",
        "--listen",
        "127.0.0.1:0",
        "--listen",
        &addr,
    ]);
    assert_eq!(r.status.code(), Some(1), "{}", r.describe());
    assert!(
        r.stderr.contains("address already in use"),
        "{}",
        r.describe()
    );
    assert!(!r.stderr.contains("started (pid"), "{}", r.describe());
}

/// A second supervisor on a port the first one serves fails ("address already in use")
/// instead of joining its SO_REUSEPORT group and taking half its clients.
#[test]
fn a_second_instance_cannot_join_the_group() {
    let Some(p) = Pool::start("epoll", 2, &[]) else {
        return;
    };
    let addr = p.d.addr().to_string();
    let r = run(&["--workers", "2", "--listen", &addr]);
    assert_eq!(r.status.code(), Some(1), "{}", r.describe());
    assert!(
        r.stderr.contains("address already in use"),
        "{}",
        r.describe()
    );
    assert!(p.d.serves_new_client());
}

/// `--workers 1` (and the default) is one process: no supervisor, no child.
#[test]
fn one_worker_is_one_process() {
    let Some(d) = Daemon::spawn("epoll", &["--workers", "1"]) else {
        return;
    };
    assert!(d.serves_new_client());
    assert!(children(d.pid()).is_empty());
    assert!(!d.stderr().contains("supervisor"), "{}", d.stderr());
    let s = d.stats();
    assert!(
        !s.contains_key("workers") && !s.contains_key("worker"),
        "{s:?}"
    );
}

/// `--workers auto` starts one worker per CPU this process may run on.
#[test]
fn auto_is_the_cpu_count() {
    // nproc(1) counts the CPUs in this process's affinity mask, as `auto` does.
    let out = std::process::Command::new("nproc").output().unwrap();
    let cpus: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    if cpus < 2 {
        return println!("note: one CPU here; --workers auto is the one-process daemon");
    }
    let Some(d) = Daemon::spawn("epoll", &["--workers", "auto"]) else {
        return;
    };
    d.expect_line(0, &format!("all {cpus} workers are accepting"), PATIENCE);
    assert_eq!(children(d.pid()).len(), cpus);
}

/// The shipped unit runs one worker per CPU, and systemd's SIGTERM goes to the supervisor
/// alone (`KillMode=mixed`), which forwards it once to each worker.
#[test]
fn the_unit_runs_workers_auto_with_killmode_mixed() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/echo-mux.service"
    ))
    .unwrap();
    let exec = unit.lines().find(|l| l.starts_with("ExecStart=")).unwrap();
    assert!(exec.contains(" --workers auto"), "{exec}");
    assert!(unit.lines().any(|l| l == "KillMode=mixed"), "{unit}");
    assert!(unit.lines().any(|l| l == "NotifyAccess=main"), "{unit}");
}
