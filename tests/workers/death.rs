//! A worker's death and the per-source table (SPEC §8 + §10, issues 15 and 20): a worker that
//! dies, however it dies (inside a table update included), gives back exactly the
//! connections it held, and the counts the other workers hold stay; a worker stopped inside
//! a table update stops nobody else. Which worker holds a connection is read from /proc.
//!
//! The tests that stop or kill a worker *inside* an update use the daemon's test hook
//! (debug builds): `ECHO_MUX_TEST_TABLE_PAUSE=claim:CIDR@2` or `count:CIDR@2` makes worker 2's
//! first update for a source in CIDR pause there for 30 s, after a `test hook: pausing` log
//! line.

use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::pool::{owner, Pool, PATIENCE};
use super::signal;
use crate::access::{connect_from, ip, served};
use crate::util::client::{outcome, ping, Outcome};
use crate::util::Daemon;

/// The source whose connections the tests count (`--max-per-source 2`).
const COUNTED: &str = "127.0.0.50";
/// The sources whose first update in worker 2 pauses under the hook: 127.0.1.1, .2, …
const PAUSED: &str = "127.0.1.0/24";

fn start(backend: &'static str, hook: Option<&str>) -> Option<Pool> {
    let mut b = Daemon::with(backend)
        .args(&["--workers", "2", "--max-per-source", "2"])
        .expect_listeners(2);
    if let Some(h) = hook {
        b = b.env("ECHO_MUX_TEST_TABLE_PAUSE", h);
    }
    let d = b.spawn()?;
    d.expect_line(0, "all 2 workers are accepting", PATIENCE);
    Some(Pool { d, n: 2 })
}

/// Which of `pids` has accepted `s` (None within `within`: still queued, e.g. for a worker
/// that is paused or stopped).
fn accepted_by(s: &TcpStream, pids: &[i32], within: Duration) -> Option<i32> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(pid) = owner(s, pids) {
            return Some(pid);
        }
        if Instant::now() > deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Two served connections from [`COUNTED`] that one worker (`on`, if given) holds, and its
/// pid. A draw that lands elsewhere is closed and drawn again; the close reaches
/// the table a moment later, so a refusal meanwhile is retried.
fn two_on_one_worker(p: &Pool, on: Option<i32>) -> (Vec<TcpStream>, i32) {
    let pids = p.worker_pids();
    let mut held: Vec<(TcpStream, i32)> = Vec::new();
    let deadline = Instant::now() + PATIENCE * 3;
    while Instant::now() < deadline {
        let s = connect_from(&p.d, ip(COUNTED)).unwrap();
        let Some(o) = accepted_by(&s, &pids, Duration::from_millis(500)) else {
            continue; // queued for a paused worker: not ours
        };
        if !served(&p.d, &s) {
            thread::sleep(Duration::from_millis(20));
            continue;
        }
        if on.is_some_and(|w| w != o) {
            continue;
        }
        held.retain(|(_, w)| *w == o);
        held.push((s, o));
        if held.len() == 2 {
            return (held.into_iter().map(|(s, _)| s).collect(), o);
        }
    }
    p.d.fail("never got two connections from 127.0.0.50 onto one worker")
}

fn refused(p: &Pool, what: &str) {
    let s = connect_from(&p.d, ip(COUNTED)).unwrap();
    if outcome(&s, Duration::from_secs(5)) != Outcome::Closed {
        p.d.fail(&format!(
            "{what}: a third connection from {COUNTED} was served"
        ));
    }
}

fn still_echo(p: &Pool, held: &[TcpStream]) {
    for s in held {
        if ping(s, b"still").ok().as_deref() != Some(b"still".as_slice()) {
            p.d.fail("a connection of the surviving worker was disturbed");
        }
    }
}

for_each_backend!(a_dead_worker_gives_back_only_its_own);
/// Issue 20's reproduction: `--workers 2 --max-per-source 2`; two connections from
/// 127.0.0.50 on one worker; `kill -9` of the other worker; after its replacement a third
/// connection from 127.0.0.50 is refused (a reset of the table would serve it), the two
/// still echo, and once one closes the source is served again.
fn a_dead_worker_gives_back_only_its_own(backend: &'static str) {
    let Some(p) = start(backend, None) else {
        return;
    };
    let (held, holder) = two_on_one_worker(&p, None);
    refused(&p, "before");
    let pids = p.worker_pids();
    let k = 1 + pids.iter().position(|&w| w != holder).unwrap();
    let mark = p.d.mark();
    signal(pids[k - 1], Signal::SIGKILL);
    p.wait_replaced(k, mark, PATIENCE);
    refused(&p, "after the other worker's death");
    still_echo(&p, &held);
    let mut held = held;
    drop(held.pop());
    let again = served_again(&p);
    refused(&p, "one closed, one opened");
    drop((held, again));
}

/// Connect from [`COUNTED`] until one is served (a close reaches the table a moment after
/// the client's own).
fn served_again(p: &Pool) -> TcpStream {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let s = connect_from(&p.d, ip(COUNTED)).unwrap();
        if served(&p.d, &s) {
            return s;
        }
        if Instant::now() > deadline {
            p.d.fail(&format!("{COUNTED} is still refused"));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// With the hook on [`PAUSED`] in worker 2: connect from new sources in it until worker 2
/// pauses inside the update (connections worker 1 takes are served as usual); worker 2's pid.
fn pause_worker_2(p: &Pool) -> (i32, String) {
    let mark = p.d.mark();
    for n in 1..=64 {
        let source = format!("127.0.1.{n}");
        let s = connect_from(&p.d, ip(&source)).unwrap();
        if p.d
            .wait_line(
                mark,
                "worker 2: test hook: pausing inside a table update",
                Duration::from_millis(300),
            )
            .is_some()
        {
            std::mem::forget(s); // left open: the worker dies with it
            return (p.worker_pid(2), source);
        }
    }
    p.d.fail("64 connections from 127.0.1.0/24 never reached worker 2")
}

/// Issue 20 with the dead worker killed inside a table update (a claim of a new source's
/// slot, or a count raised and not yet confirmed): the same as above.
fn killed_inside_an_update(backend: &'static str, stage: &str) {
    let hook = format!("{stage}:{PAUSED}@2");
    let Some(p) = start(backend, Some(&hook)) else {
        return;
    };
    let k = 2;
    let (held, _) = two_on_one_worker(&p, Some(p.worker_pid(1)));
    refused(&p, "before");
    // Within 5 s of the pause (or the supervisor kills it as wedged, also with SIGKILL).
    let (pid, _) = pause_worker_2(&p);
    let mark = p.d.mark();
    signal(pid, Signal::SIGKILL);
    p.wait_replaced(k, mark, PATIENCE);
    refused(&p, "after a death inside an update");
    still_echo(&p, &held);
    // Another new source is served by both workers (nothing left half-done blocks a slot).
    let pids = p.worker_pids();
    let mut seen = Vec::new();
    for i in 0..64 {
        let s = connect_from(&p.d, ip("127.0.0.52")).unwrap();
        if !served(&p.d, &s) {
            p.d.fail(&format!("connection {i} from 127.0.0.52 refused"));
        }
        if let Some(o) = owner(&s, &pids) {
            if !seen.contains(&o) {
                seen.push(o);
            }
        }
        if seen.len() == 2 {
            return;
        }
    }
    p.d.fail("64 connections never reached both workers");
}

#[cfg(debug_assertions)]
for_each_backend!(killed_while_claiming_a_slot);
#[cfg(debug_assertions)]
fn killed_while_claiming_a_slot(backend: &'static str) {
    killed_inside_an_update(backend, "claim");
}

#[cfg(debug_assertions)]
for_each_backend!(killed_while_counting_a_connection);
#[cfg(debug_assertions)]
fn killed_while_counting_a_connection(backend: &'static str) {
    killed_inside_an_update(backend, "count");
}

/// Issue 15 item 3: a worker SIGSTOPped inside a table update. The other worker goes on:
/// it serves the same source (taking over the stopped claim), other sources, and answers
/// SIGUSR1; only the stopped one is judged wedged and replaced.
fn stopped_inside_an_update(backend: &'static str, stage: &str) {
    let hook = format!("{stage}:{PAUSED}@2");
    let Some(p) = start(backend, Some(&hook)) else {
        return;
    };
    let (pid, paused) = pause_worker_2(&p);
    let k = 2;
    signal(pid, Signal::SIGSTOP);
    let mark = p.d.mark();
    let other = 1;
    let other_pid = p.worker_pid(other);
    for source in [paused.as_str(), COUNTED] {
        // Connections the kernel gives the stopped worker wait in its queue: draw again.
        let mut done = false;
        for _ in 0..40 {
            let s = connect_from(&p.d, ip(source)).unwrap();
            if accepted_by(&s, &[other_pid], Duration::from_millis(500)).is_some() {
                if !served(&p.d, &s) {
                    p.d.fail(&format!("the running worker refused {source}"));
                }
                done = true;
                break;
            }
        }
        if !done {
            p.d.fail(&format!(
                "40 connections from {source} never reached worker {other}"
            ));
        }
    }
    let stats = p.worker_stats(other);
    if stats.get("accepted").copied().unwrap_or(0) < 2 {
        p.d.fail(&format!("worker {other}: {stats:?}"));
    }
    p.d.expect_line(
        mark,
        &format!("worker {k} (pid {pid}) is wedged"),
        PATIENCE + Duration::from_secs(5),
    );
    p.wait_replaced(k, mark, PATIENCE);
    if p.d
        .stderr_since(mark)
        .contains(&format!("worker {other} (pid {other_pid}) is wedged"))
    {
        p.d.fail("the running worker was judged wedged too");
    }
    let _ = p.worker_stats(other);
}

#[cfg(debug_assertions)]
for_each_backend!(stopped_while_claiming_a_slot);
#[cfg(debug_assertions)]
fn stopped_while_claiming_a_slot(backend: &'static str) {
    stopped_inside_an_update(backend, "claim");
}

#[cfg(debug_assertions)]
for_each_backend!(stopped_while_counting_a_connection);
#[cfg(debug_assertions)]
fn stopped_while_counting_a_connection(backend: &'static str) {
    stopped_inside_an_update(backend, "count");
}
