//! Timers: `--delay` holds replies without stalling anyone else and keeps order;
//! `--idle-timeout` closes the idle and spares the active (SPEC §3, §4). Bounds are one-sided
//! where the contract is (never early), with generous upper limits for a loaded machine.

use std::io::{Read, Write};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use crate::util::client::{
    check_pattern, fresh_seed, outcome, ping, read_line, send_pattern, Outcome,
};
use crate::util::stamp::{now_secs, parse_replies};
use crate::util::Daemon;

for_each_backend!(delay_holds_every_client_at_once);
/// 20 clients with `--delay 1s` are all answered after about 1 s, not 20 s: the delay is
/// a timer, not a sleep. Each reply takes at least 1 s; all of them well under 12 s.
fn delay_holds_every_client_at_once(backend: &'static str) {
    const N: usize = 20;
    let Some(d) = Daemon::spawn(backend, &["--delay", "1s"]) else {
        return;
    };
    let conns: Vec<_> = (0..N).map(|_| d.connect()).collect();
    let barrier = Barrier::new(N);
    let start = Instant::now();
    let results: Vec<(Vec<u8>, Duration)> = thread::scope(|sc| {
        let hs: Vec<_> = conns
            .into_iter()
            .enumerate()
            .map(|(i, mut s)| {
                let barrier = &barrier;
                sc.spawn(move || {
                    barrier.wait();
                    let t0 = Instant::now();
                    let back =
                        ping(&mut s, format!("client {i:02}\n").as_bytes()).unwrap_or_default();
                    (back, t0.elapsed())
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let total = start.elapsed();
    for (i, (back, took)) in results.iter().enumerate() {
        if *back != format!("client {i:02}\n").into_bytes() || *took < Duration::from_secs(1) {
            d.fail(&format!(
                "client {i}: reply {:?} after {took:?}; want its line back after >= 1 s",
                String::from_utf8_lossy(back)
            ));
        }
    }
    if total > Duration::from_secs(12) {
        d.fail(&format!(
            "{N} delayed clients took {total:?} together: replies are serialised"
        ));
    }
}

for_each_backend!(delay_keeps_order_and_is_never_early);
/// Delayed data comes back in order and never before the delay: ten 32 KiB chunks sent
/// 50 ms apart under `--delay 500ms`.
fn delay_keeps_order_and_is_never_early(backend: &'static str) {
    const CHUNK: usize = 32 << 10;
    let Some(d) = Daemon::spawn(backend, &["--delay", "500ms"]) else {
        return;
    };
    let s = d.connect();
    let seed = fresh_seed();
    let mut r = s.try_clone().unwrap();
    let t0 = Instant::now();
    let reader = thread::spawn(move || {
        let mut first = [0u8; 1];
        r.read_exact(&mut first)
            .map_err(|e| format!("first byte: {e}"))?;
        let first_at = t0.elapsed();
        let mut rest = std::io::Cursor::new(first).chain(r);
        check_pattern(&mut rest, seed, 10 * CHUNK)?;
        Ok::<_, String>(first_at)
    });
    // The pattern is one stream; send it in spaced-out slices of that stream.
    let mut all = Vec::new();
    send_pattern(&mut all, seed, 10 * CHUNK).unwrap();
    let mut w = &s;
    for c in all.chunks(CHUNK) {
        w.write_all(c).unwrap();
        thread::sleep(Duration::from_millis(50));
    }
    match reader.join().unwrap() {
        Err(e) => d.fail(&e),
        Ok(first) if first < Duration::from_millis(500) => d.fail(&format!(
            "first byte echoed after {first:?}, before the 500 ms delay"
        )),
        Ok(_) => {}
    }
}

/// In stamp mode the time is taken when the reply is made, after the delay.
#[test]
fn stamp_time_is_taken_after_the_delay() {
    let Some(d) = Daemon::with("select")
        .args(&["--mode", "stamp", "--delay", "2s"])
        .env("TZ", "UTC")
        .spawn()
    else {
        return;
    };
    let mut s = d.connect();
    let sent = now_secs();
    let t0 = Instant::now();
    s.write_all(b"late\n").unwrap();
    let got = read_line(&s).unwrap_or_else(|e| d.fail(&e));
    let took = t0.elapsed();
    let replies = parse_replies(&got).unwrap_or_else(|e| d.fail(&e));
    if took < Duration::from_secs(2)
        || replies.len() != 1
        || replies[0].body != b"late"
        || replies[0].stamp < sent + 2
    {
        d.fail(&format!(
            "want one `Echo=>late` stamped >= {} after >= 2 s; got {:?} after {took:?}",
            sent + 2,
            String::from_utf8_lossy(&got)
        ));
    }
}

for_each_backend!(idle_timeout_closes_only_the_idle);
/// `--idle-timeout 2s`: a silent client is closed (not before 2 s); one that talks every
/// 100 ms survives twice as long, then is closed too once it goes quiet. The margin is wide
/// on purpose: only a client thread stalled for 2 s (20 missed pings) could be cut off,
/// where a 500 ms timeout once failed at a load average of 16.
fn idle_timeout_closes_only_the_idle(backend: &'static str) {
    const IDLE: Duration = Duration::from_secs(2);
    /// How late a close may come on a loaded machine (a bound for a hang, not for speed).
    const SLACK: Duration = Duration::from_secs(8);
    let Some(d) = Daemon::spawn(backend, &["--idle-timeout", "2s"]) else {
        return;
    };
    let t0 = Instant::now();
    let idle = d.connect();
    let mut busy = d.connect();
    let talker = thread::spawn(move || {
        let start = Instant::now();
        while start.elapsed() < 2 * IDLE {
            if let Err(e) = ping(&mut busy, b"still here") {
                return Err(format!(
                    "active client cut off after {:?}: {e}",
                    start.elapsed()
                ));
            }
            thread::sleep(Duration::from_millis(100));
        }
        Ok(busy)
    });
    let idle_end = outcome(&idle, IDLE + SLACK + Duration::from_secs(2));
    let idle_after = t0.elapsed();
    let busy = talker.join().unwrap().unwrap_or_else(|e| d.fail(&e));
    if idle_end != Outcome::Closed || idle_after < IDLE || idle_after > IDLE + SLACK {
        d.fail(&format!(
            "idle client: {idle_end:?} after {idle_after:?}; want closed after {IDLE:?}..{:?}",
            IDLE + SLACK
        ));
    }
    let t1 = Instant::now();
    let busy_end = outcome(&busy, IDLE + SLACK + Duration::from_secs(2));
    if busy_end != Outcome::Closed || t1.elapsed() > IDLE + SLACK {
        d.fail(&format!(
            "once quiet, the formerly active client: {busy_end:?} after {:?}",
            t1.elapsed()
        ));
    }
}
