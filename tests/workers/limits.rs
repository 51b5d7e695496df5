//! `--workers` with the per-source limits (SPEC §8 + §10): the limits hold for the daemon as
//! a whole, because the per-source table lives in the memory the workers share. Which worker
//! holds a connection is read from /proc (`owner`) and each worker's own stats line, so every
//! test knows it really had connections (or refusals) on both workers.

use std::collections::HashMap;
use std::net::{Ipv4Addr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use super::pool::{owner, Pool, PATIENCE};
use crate::access::{connect_from, ip, served};
use crate::util::client::{outcome, ping, Outcome};

/// `n` connections from `source` that the daemon serves (each echoed once), with the pid of
/// the worker that holds each.
fn served_from(p: &Pool, source: &str, n: usize) -> Vec<(TcpStream, i32)> {
    let pids = p.worker_pids();
    (0..n)
        .map(|i| {
            let s = connect_from(&p.d, ip(source)).unwrap();
            if !served(&p.d, &s) {
                p.d.fail(&format!("connection {i} from {source} was refused"));
            }
            let pid = owner(&s, &pids).unwrap_or_else(|| p.d.fail("no worker holds it"));
            (s, pid)
        })
        .collect()
}

/// Connect from `source` until one is served (a close reaches the server's table a moment
/// after the client's own close).
fn served_again(p: &Pool, source: &str) -> TcpStream {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let s = connect_from(&p.d, ip(source)).unwrap();
        if served(&p.d, &s) {
            return s;
        }
        if Instant::now() > deadline {
            p.d.fail(&format!("{source} is still refused"));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn field(stats: &HashMap<String, u64>, key: &str) -> u64 {
    stats.get(key).copied().unwrap_or(u64::MAX)
}

for_each_backend!(max_per_source_holds_across_workers);
/// `--workers 2 --max-per-source 3`: three connections from 127.0.0.2 spread over both
/// workers are all it gets, however SO_REUSEPORT spreads the next ones (both workers refuse
/// some); 127.0.0.3 is still served; once the three close, 127.0.0.2 is served again. The
/// totals line counts every refusal, after `workers=`; `--log-connections` lines name the
/// worker. With a table per worker, the worker holding fewer of the three would admit more.
fn max_per_source_holds_across_workers(backend: &'static str) {
    let Some(p) = Pool::start(backend, 2, &["--max-per-source", "3", "--log-connections"]) else {
        return;
    };
    let pids = p.worker_pids();
    // Three on one worker prove nothing (1 in 4): close them and draw again.
    let mut three = Vec::new();
    for _ in 0..12 {
        three = served_from(&p, "127.0.0.2", 3);
        if pids.iter().all(|w| three.iter().any(|(_, o)| o == w)) {
            break;
        }
        drop(std::mem::take(&mut three));
        let t = p.totals_until(|t| t["open"] == 0);
        assert_eq!(t["limited"], 0, "{t:?}");
    }
    if three.is_empty() {
        p.d.fail("12 draws of 3 connections never reached both workers");
    }
    const REFUSED: usize = 16;
    for i in 0..REFUSED {
        let s = connect_from(&p.d, ip("127.0.0.2")).unwrap();
        if outcome(&s, Duration::from_secs(5)) != Outcome::Closed {
            p.d.fail(&format!("connection {} from 127.0.0.2 was served", i + 4));
        }
    }
    let other = served_from(&p, "127.0.0.3", 3);
    let before = p.d.mark();
    // Each worker refused some (2^-15 that the kernel's hash sent all 16 to one).
    let mut limited = 0;
    for k in 1..=2 {
        let s = p.worker_stats(k);
        if field(&s, "accepted") == 0 || field(&s, "limited") == 0 {
            p.d.fail(&format!("worker {k} served or refused nothing: {s:?}"));
        }
        limited += field(&s, "limited");
    }
    assert_eq!(limited, REFUSED as u64);
    let mark = p.d.mark();
    let t = p.totals_until(|t| (t["rejected"], t["open"]) == (16, 6));
    let line = p.d.expect_line(mark, "supervisor: stats: ", PATIENCE);
    assert!(
        line.contains(" workers=2 denied=0 limited=16"),
        "fields out of SPEC §5 order: {line}"
    );
    assert_eq!((t["rejected"], t["open"]), (16, 6), "{t:?}");
    let worker_line = p.d.expect_line(before, "worker 1: stats: ", PATIENCE);
    assert!(
        worker_line.contains(" worker=1 denied=0 limited="),
        "fields out of SPEC §5 order: {worker_line}"
    );

    // The three leave: 127.0.0.2 may open three again (and only three).
    let mark = p.d.mark();
    let owners: Vec<i32> = three.iter().map(|(_, o)| *o).collect();
    drop(three);
    let again = [(); 3].map(|_| served_again(&p, "127.0.0.2"));
    let fourth = connect_from(&p.d, ip("127.0.0.2")).unwrap();
    if outcome(&fourth, Duration::from_secs(5)) != Outcome::Closed {
        p.d.fail("a fourth from 127.0.0.2 was served after the three came back");
    }
    // Each worker's connection log names it.
    for (k, pid) in pids.iter().enumerate() {
        if owners.contains(pid) {
            let k = k + 1;
            p.d.expect_line(mark, &format!("worker {k}: closed 127.0.0.2:"), PATIENCE);
        }
    }
    drop((again, other));
}

/// Connect `n` times from `source` as fast as possible; then how many the daemon kept (it
/// closes refused ones at accept) and how long it took to accept or refuse them all (the
/// time in which its tokens refilled).
fn burst(p: &Pool, source: Ipv4Addr, n: usize) -> (usize, Duration) {
    let t0 = Instant::now();
    let conns: Vec<TcpStream> = (0..n)
        .map(|i| connect_from(&p.d, source).unwrap_or_else(|e| p.d.fail(&format!("{i}: {e}"))))
        .collect();
    // A kept connection echoes; a refused one is closed at accept, so the ping ends in EOF
    // or a reset. A ping waits for the daemon to get to its connection (a pause that a
    // loaded machine can outlast would not), and the callers check the kept ones against
    // the totals' `accepted`.
    let mut kept = 0;
    for s in &conns {
        match ping(s, b"ok") {
            Ok(back) if back == b"ok" => kept += 1,
            Ok(back) => p.d.fail(&format!("a connection got {back:?} for \"ok\"")),
            Err(_) => {}
        }
    }
    (kept, t0.elapsed())
}

for_each_backend!(rate_per_source_holds_across_workers);
/// `--workers 2 --rate-per-source 20`: a burst of 60 connects from one source is served
/// about 20 times in all (plus what refilled during the burst), not 20 per worker, though
/// both workers took some; the totals count the rest as limited.
fn rate_per_source_holds_across_workers(backend: &'static str) {
    let Some(p) = Pool::start(backend, 2, &["--rate-per-source", "20"]) else {
        return;
    };
    let (got, took) = burst(&p, ip("127.0.0.2"), 60);
    let most = 20 + (took.as_secs_f64() * 20.0).ceil() as usize + 1;
    if !(20..=most).contains(&got) {
        p.d.fail(&format!(
            "served {got} of 60 in {took:?}; want 20 to {most}"
        ));
    }
    for k in 1..=2 {
        let s = p.worker_stats(k);
        if field(&s, "accepted") + field(&s, "limited") == 0 {
            p.d.fail(&format!("worker {k} saw none of the burst: {s:?}"));
        }
    }
    let t = p.totals_until(|t| t["accepted"] + t["limited"] == 60);
    let want = (got as u64, (60 - got) as u64, (60 - got) as u64, 0);
    assert_eq!(
        (t["accepted"], t["limited"], t["rejected"], t["denied"]),
        want,
        "{t:?}"
    );
}
