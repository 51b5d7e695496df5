//! `--max-per-source` and `--rate-per-source`, from one source and from thousands.

use std::net::{Ipv4Addr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use super::{connect_from, ip, stat};
use crate::util::client::{outcome, ping, Outcome};
use crate::util::Daemon;

for_each_backend!(max_per_source_three_from_two_sources);
/// `--max-per-source 3`: each of two sources gets three; the fourth of each is closed at
/// once; when one of three closes, its source may connect again.
fn max_per_source_three_from_two_sources(backend: &'static str) {
    let Some(d) = Daemon::spawn(backend, &["--max-per-source", "3"]) else {
        return;
    };
    let mut held = Vec::new();
    for source in ["127.0.0.2", "127.0.0.3"] {
        for i in 0..3 {
            let mut s = connect_from(&d, ip(source)).unwrap();
            if ping(&mut s, b"x").ok().as_deref() != Some(b"x") {
                d.fail(&format!("connection {i} from {source} not served"));
            }
            held.push(s);
        }
        let fourth = connect_from(&d, ip(source)).unwrap();
        if outcome(&fourth, Duration::from_secs(5)) != Outcome::Closed {
            d.fail(&format!("the fourth from {source} was not closed at once"));
        }
    }
    let (limited, rejected, open) = (stat(&d, "limited"), stat(&d, "rejected"), stat(&d, "open"));
    if (limited, rejected, open, stat(&d, "denied")) != (2, 2, 6, 0) {
        d.fail(&format!(
            "want limited=2 rejected=2 open=6, got {limited} {rejected} {open}"
        ));
    }
    drop(held.remove(0)); // one from 127.0.0.2 leaves
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = connect_from(&d, ip("127.0.0.2")).unwrap();
        if ping(&mut s, b"again").is_ok() {
            break;
        }
        if Instant::now() > deadline {
            d.fail("127.0.0.2 could not connect again after one of its three closed");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Connect `n` times from `source` as fast as possible: how many were served, and how long
/// the server took to accept or refuse them all (the time in which its bucket refilled).
/// Refused connections are closed by the server at accept, so their ping ends in EOF or a
/// reset; a ping waits for the server to get to its connection, where a pause that a loaded
/// machine can outlast would not. The callers check the served ones against the stats.
fn burst(d: &Daemon, source: Ipv4Addr, n: usize) -> (usize, Duration) {
    let t0 = Instant::now();
    let conns: Vec<TcpStream> = (0..n)
        .map(|i| connect_from(d, source).unwrap_or_else(|e| d.fail(&format!("connect {i}: {e}"))))
        .collect();
    let mut served = 0;
    for s in &conns {
        match ping(s, b"ok") {
            Ok(back) if back == b"ok" => served += 1,
            Ok(back) => d.fail(&format!("a connection got {back:?} for \"ok\"")),
            Err(_) => {}
        }
    }
    (served, t0.elapsed())
}

/// Tokens a bucket refilled at 20 per second gains in `took` (rounded up, plus one).
fn refill(took: Duration) -> usize {
    (took.as_secs_f64() * 20.0).ceil() as usize + 1
}

for_each_backend!(rate_per_source_bursts_then_recovers);
/// `--rate-per-source 20`: of 60 quick connects, 20 (plus what refilled meanwhile) are
/// served, the rest closed; a second later a source has a whole burst again. Another source
/// has its own bucket.
fn rate_per_source_bursts_then_recovers(backend: &'static str) {
    let Some(d) = Daemon::spawn(backend, &["--rate-per-source", "20"]) else {
        return;
    };
    let (got, took) = burst(&d, ip("127.0.0.2"), 60);
    // The burst itself took a while: the bucket refilled 20 per second meanwhile.
    if got < 20 || got > 20 + refill(took) {
        d.fail(&format!(
            "served {got} of 60 in {took:?}; want 20 to {}",
            20 + refill(took)
        ));
    }
    if stat(&d, "limited") != (60 - got) as u64 {
        d.fail(&format!("want limited={} (60 - {got} served)", 60 - got));
    }
    let (other, _) = burst(&d, ip("127.0.0.3"), 5);
    assert_eq!(other, 5, "127.0.0.3 has its own bucket");
    thread::sleep(Duration::from_millis(1100));
    let (again, took) = burst(&d, ip("127.0.0.2"), 25);
    if again < 20 || again > 20 + refill(took) {
        d.fail(&format!(
            "a second later: served {again} of 25 in {took:?}; want a full burst of 20"
        ));
    }
}

/// A few thousand distinct sources (127.1.x.y), each allowed one connection a second: each
/// one's first is served and its second refused, so the table tracks every one of them.
#[test]
fn thousands_of_sources_each_have_their_own_bucket() {
    let Some(d) = Daemon::spawn("epoll", &["--rate-per-source", "1"]) else {
        return;
    };
    const N: usize = 2000;
    let source = |i: usize| Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8);
    for i in 0..N {
        let mut first = connect_from(&d, source(i)).unwrap();
        let second = connect_from(&d, source(i)).unwrap();
        if ping(&mut first, b"1").is_err() {
            d.fail(&format!(
                "the first connection from {} was not served",
                source(i)
            ));
        }
        if outcome(&second, Duration::from_secs(5)) != Outcome::Closed {
            d.fail(&format!(
                "the second from {} (within its second) was served",
                source(i)
            ));
        }
    }
    let (accepted, limited) = (stat(&d, "accepted"), stat(&d, "limited"));
    if (accepted, limited) != (N as u64, N as u64) {
        d.fail(&format!(
            "want accepted={N} limited={N}, got {accepted} {limited}"
        ));
    }
    // A second on, the buckets are full again: everyone is served.
    thread::sleep(Duration::from_millis(1100));
    for i in (0..N).step_by(97) {
        let mut s = connect_from(&d, source(i)).unwrap();
        if ping(&mut s, b"2").is_err() {
            d.fail(&format!("{} not served a second later", source(i)));
        }
    }
}
