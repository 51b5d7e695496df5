//! UDP with the access lists and per-source limits (SPEC §10): a datagram from a denied
//! source is dropped and counted `denied` (and `rejected`, never `dropped`); beyond
//! `--rate-per-source` a source's datagrams are dropped and counted `limited`, from a bucket
//! of their own per source (TCP connects have another), and with `--workers` from one bucket
//! for the whole daemon. Sources are loopback addresses the sender binds (127.0.0.2, .3, …).

use std::collections::HashMap;
use std::net::UdpSocket;
use std::thread;
use std::time::Duration;

use crate::access::{connect_from, ip};
use crate::udp::recv;
use crate::util::client::ping;
use crate::util::datagrams::{self, burst};
use crate::util::Daemon;
use crate::workers::pool::{Pool, PATIENCE};

/// How long a reply that should not come is waited for.
const SILENCE: Duration = Duration::from_millis(400);

fn sender(d: &Daemon, source: &str) -> UdpSocket {
    datagrams::sender(d, ip(source).into(), SILENCE)
}

fn num(stats: &HashMap<String, String>, key: &str) -> u64 {
    stats
        .get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX)
}

for_each_backend!(udp_deny_and_allow_lists);
/// `--deny 127.0.0.3/32`: 127.0.0.3's datagrams get no answer and count `denied` and
/// `rejected` (not `dropped`), logged as datagrams; 127.0.0.2 is answered. `--allow
/// 127.0.0.2/32`: only 127.0.0.2 is answered.
fn udp_deny_and_allow_lists(backend: &'static str) {
    let Some(d) = Daemon::spawn(
        backend,
        &["-l", "udp:127.0.0.1:0", "--deny", "127.0.0.3/32"],
    ) else {
        return;
    };
    let to = d.udp_addr();
    let (two, three) = (sender(&d, "127.0.0.2"), sender(&d, "127.0.0.3"));
    if burst(&d, &three, to, 5, "burst ") != 0 {
        d.fail("a denied source was answered");
    }
    if burst(&d, &two, to, 5, "burst ") != 5 {
        d.fail("an allowed source was not answered five times");
    }
    let want = [
        ("datagrams_in", 10),
        ("datagrams_out", 5),
        ("dropped", 0),
        ("denied", 5),
        ("limited", 0),
        ("rejected", 5),
    ];
    // A denied datagram has no reply to wait for: wait for its count.
    let s = d.stats_until(|s| want.iter().all(|&(key, v)| num(s, key) == v));
    for (key, v) in want {
        if num(&s, key) != v {
            d.fail(&format!("want {key}={v} in {s:?}"));
        }
    }
    d.expect_line(
        0,
        "refused 1 datagram in the last 1s (denied), e.g. from 127.0.0.3",
        PATIENCE,
    );
    d.expect_line(
        0,
        "refused 4 datagrams in the last 1s (denied), e.g. from 127.0.0.3",
        PATIENCE,
    );

    let Some(d) = Daemon::spawn(
        backend,
        &["-l", "udp:127.0.0.1:0", "--allow", "127.0.0.2/32"],
    ) else {
        return;
    };
    let to = d.udp_addr();
    for (source, want) in [("127.0.0.2", 3), ("127.0.0.3", 0), ("127.0.0.1", 0)] {
        let got = burst(&d, &sender(&d, source), to, 3, "burst ");
        if got != want {
            d.fail(&format!("{source}: {got} answers, want {want}"));
        }
    }
    let s = d.stats_until(|s| (num(s, "denied"), num(s, "datagrams_out")) == (6, 3));
    if (num(&s, "denied"), num(&s, "datagrams_out")) != (6, 3) {
        d.fail(&format!("want denied=6 datagrams_out=3 in {s:?}"));
    }
}

for_each_backend!(udp_rate_per_source);
/// `--rate-per-source 20`, two buckets per source (SPEC §10): 20 TCP connects from
/// 127.0.0.2 spend its TCP tokens, and a burst of 10 datagrams right after is answered in
/// full.
/// A second later, a burst of 60 gets about 20 answers (the burst, plus what refills while
/// it arrives), the rest count `limited`; 127.0.0.3 is unaffected; after another second
/// 127.0.0.2 is answered again.
fn udp_rate_per_source(backend: &'static str) {
    let args = [
        "-l",
        "127.0.0.1:0",
        "-l",
        "udp:127.0.0.1:0",
        "--rate-per-source",
        "20",
    ];
    let Some(d) = Daemon::spawn(backend, &args) else {
        return;
    };
    let to = d.udp_addr();
    let two = sender(&d, "127.0.0.2");
    // Each connect is echoed once, so it has been accepted (and has spent its token).
    let conns: Vec<_> = (0..20)
        .map(|i| {
            let c = connect_from(&d, ip("127.0.0.2")).unwrap();
            if ping(&c, b"tcp").is_err() {
                d.fail(&format!(
                    "TCP connect {i} of 20 (the burst allows 20) was refused"
                ));
            }
            c
        })
        .collect();
    let after_tcp = burst(&d, &two, to, 10, "burst ");
    if after_tcp != 10 {
        d.fail(&format!(
            "{after_tcp} of 10 datagrams answered after 20 TCP connects: the TCP tokens are not theirs"
        ));
    }
    drop(conns);
    thread::sleep(Duration::from_millis(1100));
    let got = burst(&d, &two, to, 60, "burst ");
    if !(20..=25).contains(&got) {
        d.fail(&format!("a burst of 60 at 20/s got {got} answers"));
    }
    if burst(&d, &sender(&d, "127.0.0.3"), to, 10, "burst ") != 10 {
        d.fail("another source was limited too");
    }
    let limited = (70 - got - after_tcp) as u64;
    let out = (got + after_tcp + 10) as u64;
    let s = d.stats_until(|s| {
        num(s, "limited") == limited
            && num(s, "rejected") == limited
            && num(s, "datagrams_out") == out
    });
    if num(&s, "limited") != limited || num(&s, "rejected") != limited {
        d.fail(&format!("want limited=rejected={limited} in {s:?}"));
    }
    if num(&s, "datagrams_out") != out || num(&s, "dropped") != 0 {
        d.fail(&format!("want datagrams_out={out} dropped=0 in {s:?}"));
    }
    d.expect_line(
        0,
        "datagrams in the last 1s (rate-per-source), e.g. from 127.0.0.2",
        PATIENCE,
    );
    thread::sleep(Duration::from_millis(1100));
    let again = burst(&d, &two, to, 10, "burst ");
    if again != 10 {
        d.fail(&format!("after a second: {again} of 10 answered"));
    }
}

for_each_backend!(udp_rate_per_source_holds_across_workers);
/// `--workers 2 --rate-per-source 20`: 32 senders on 127.0.0.2 (own ports, so SO_REUSEPORT
/// puts some on each worker, shown by each worker's stats line) send 2 datagrams each at
/// once: about 20 of the 64 are answered, not the ~40 a bucket per worker would allow, and
/// the totals count the rest as `limited`.
fn udp_rate_per_source_holds_across_workers(backend: &'static str) {
    let args = ["-l", "udp:127.0.0.1:0", "--rate-per-source", "20"];
    let Some(p) = Pool::start(backend, 2, &args) else {
        return;
    };
    let to = p.d.udp_addr();
    let senders: Vec<UdpSocket> = (0..32).map(|_| sender(&p.d, "127.0.0.2")).collect();
    for s in &senders {
        for i in 0..2 {
            s.send_to(format!("burst {i}").as_bytes(), to).unwrap();
        }
    }
    let mut got = 0;
    for s in &senders {
        while recv(s).is_some() {
            got += 1;
        }
    }
    if !(20..=25).contains(&got) {
        p.d.fail(&format!(
            "64 datagrams at 20/s for the daemon: {got} answered"
        ));
    }
    for k in 1..=2 {
        let w = p.worker_stats(k);
        if w.get("datagrams_in").copied().unwrap_or(0) == 0 {
            p.d.fail(&format!("worker {k} received none of them: {w:?}"));
        }
    }
    let t = p.totals_until(|t| t.get("datagrams_in") == Some(&64));
    let (limited, out) = (t.get("limited").copied(), t.get("datagrams_out").copied());
    if limited != Some(64 - got as u64) || out != Some(got as u64) {
        p.d.fail(&format!("{got} answered; totals {t:?}"));
    }
}
