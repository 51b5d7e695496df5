//! Workers that die or wedge: kill -9 mid-stream, several at once, the back-off, SIGSTOP.

use std::io::Write;
use std::net::TcpStream;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::pool::{children, is_gone, owner, Pool, ZombieWatch, PATIENCE};
use super::{clients_on_every_worker, signal};
use crate::util::client::{self, check_pattern, expect_eof, fresh_seed, ping};

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

/// Connections queued for a worker when it dies are served by its replacement, not reset:
/// the supervisor keeps every worker's listening socket open. Worker 1 is stopped (so
/// clients queue in its socket's backlog), then killed; every client gets its echo.
#[test]
fn clients_queued_for_a_dead_worker_wait_for_its_replacement() {
    let Some(p) = Pool::start("epoll", 2, &[]) else {
        return;
    };
    let (victim, mark) = (p.worker_pid(1), p.d.mark());
    signal(victim, Signal::SIGSTOP);
    let t0 = Instant::now();
    while !children(p.pid()).contains(&(victim, 'T')) {
        assert!(t0.elapsed() < PATIENCE, "worker 1 did not stop");
        thread::sleep(Duration::from_millis(5));
    }
    let clients: Vec<TcpStream> = (0..24)
        .map(|i| {
            let s = p.d.connect();
            (&s).write_all(format!("queued {i:02}").as_bytes()).unwrap();
            s
        })
        .collect();
    signal(victim, Signal::SIGKILL);
    p.wait_replaced(1, mark, PATIENCE);
    for (i, s) in clients.iter().enumerate() {
        let want = format!("queued {i:02}").into_bytes();
        match client::outcome(s, PATIENCE) {
            client::Outcome::Data(got) if got == want => {}
            other => p.d.fail(&format!("client {i}: {other:?}")),
        }
    }
    let served_by_fresh = clients
        .iter()
        .filter(|s| owner(s, &[p.worker_pid(1)]).is_some());
    assert!(
        served_by_fresh.count() > 0,
        "(2^-24 that none was queued for worker 1)"
    );
}

/// A host that stood still is not a wedged worker. The supervisor and both workers are
/// stopped for 6 s; the supervisor runs again first (for two of its checks) and finds
/// heartbeats 6 s old, but as it was late itself it judges them from then on: when the
/// workers run again no worker is killed.
#[test]
fn a_stalled_host_is_not_a_wedged_worker() {
    let Some(p) = Pool::start("epoll", 2, &[]) else {
        return;
    };
    let pids = p.worker_pids();
    let mark = p.d.mark();
    signal(p.pid(), Signal::SIGSTOP);
    for &pid in &pids {
        signal(pid, Signal::SIGSTOP);
    }
    thread::sleep(Duration::from_secs(6));
    signal(p.pid(), Signal::SIGCONT);
    thread::sleep(Duration::from_millis(1200));
    for &pid in &pids {
        signal(pid, Signal::SIGCONT);
    }
    p.d.expect_line(mark, "did not run for", PATIENCE);
    thread::sleep(Duration::from_secs(1));
    if p.d.wait_line(mark, "is wedged", Duration::ZERO).is_some() {
        p.d.fail("a worker was killed for the host's stall");
    }
    assert_eq!(p.worker_pids(), pids);
    assert!(p.d.serves_new_client());
}
