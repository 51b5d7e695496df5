//! Signals and shutdown (SPEC §5): graceful drain that loses nothing, the drain deadline,
//! a second signal, SIGUSR1 stats, SIGHUP keeps serving.

use std::io::{ErrorKind, Write};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::util::client::{
    self, check_pattern, expect_eof, fresh_seed, outcome, ping, Outcome, Pattern,
};
use crate::util::Daemon;

/// Wait up to 10 s for connects to `addr` to be refused (the listener is closed).
fn wait_refused(d: &Daemon, addr: SocketAddr) {
    let start = Instant::now();
    loop {
        match client::connect(addr) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => return,
            _ if start.elapsed() > Duration::from_secs(10) => {
                d.fail("new connections are still accepted 10 s after the shutdown signal")
            }
            _ => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// A line after `mark` that is a warning and counts `n` (as a separate number).
fn warning_counting(d: &Daemon, mark: usize, n: usize) -> Option<String> {
    d.stderr_since(mark)
        .lines()
        .find(|l| {
            l.to_ascii_lowercase().contains("warn")
                && l.split(|c: char| !c.is_ascii_alphanumeric())
                    .any(|w| w == n.to_string())
        })
        .map(str::to_string)
}

for_each_backend!(sigterm_drains_without_losing_a_byte);
/// SIGTERM while four clients are mid-transfer: listeners close at once, but the clients
/// go on sending (7 MiB more each, after the signal), get every byte back, then EOF once
/// they half-close; then the daemon exits 0.
fn sigterm_drains_without_losing_a_byte(backend: &'static str) {
    const N: usize = 4;
    const TOTAL: usize = 8 << 20;
    let Some(mut d) = Daemon::spawn(backend, &["--shutdown-timeout", "60s"]) else {
        return;
    };
    let (tx, rx) = mpsc::channel();
    let results: Vec<Result<(), String>> = thread::scope(|sc| {
        let mut go = Vec::new();
        let hs: Vec<_> = (0..N)
            .map(|_| {
                let s = d.connect();
                let tx = tx.clone();
                // Dropped (so the client goes on) if this thread panics first.
                let (go_tx, go_rx) = mpsc::channel::<()>();
                go.push(go_tx);
                let seed = fresh_seed();
                sc.spawn(move || {
                    let mut r = s.try_clone().unwrap();
                    let reader = thread::spawn(move || {
                        check_pattern(&mut r, seed, TOTAL).and_then(|_| expect_eof(&mut r))
                    });
                    let (mut p, mut buf, mut w) = (Pattern::new(seed), vec![0u8; 64 << 10], &s);
                    for i in 0..TOTAL / buf.len() {
                        if i == 16 {
                            tx.send(()).unwrap(); // 1 MiB sent: now mid-transfer
                            let _ = go_rx.recv_timeout(Duration::from_secs(30));
                        }
                        p.fill(&mut buf);
                        w.write_all(&buf).map_err(|e| format!("write: {e}"))?;
                    }
                    s.shutdown(std::net::Shutdown::Write)
                        .map_err(|e| format!("shutdown: {e}"))?;
                    reader.join().unwrap()
                })
            })
            .collect();
        for _ in 0..N {
            rx.recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| d.fail("clients did not get going"));
        }
        d.signal(Signal::SIGTERM);
        wait_refused(&d, d.addr());
        for g in go.drain(..) {
            let _ = g.send(());
        }
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, r) in results.iter().enumerate() {
        if let Err(e) = r {
            d.fail(&format!("client {i} during the drain: {e}"));
        }
    }
    let st = d.wait_exit(Duration::from_secs(10));
    if !st.success() {
        d.fail("want exit 0 after the drain");
    }
}

for_each_backend!(drain_releases_delayed_replies_at_once);
/// Replies held by `--delay 30s` are released at once when the drain starts.
fn drain_releases_delayed_replies_at_once(backend: &'static str) {
    let Some(mut d) = Daemon::spawn(backend, &["--delay", "30s", "--shutdown-timeout", "60s"])
    else {
        return;
    };
    let s = d.connect();
    (&s).write_all(b"held back").unwrap();
    // The bytes arrived and are held (read, not yet answered) before the drain starts.
    let st = d.stats_until(|st| st["bytes_in"] == "9");
    if st["bytes_in"] != "9" || st["bytes_out"] != "0" {
        d.fail(&format!("want the 9 bytes read and held, got {st:?}"));
    }
    let t0 = Instant::now();
    d.signal(Signal::SIGTERM);
    // "At once" next to the 30 s delay: 10 s is room for a loaded machine.
    let got = outcome(&s, Duration::from_secs(15));
    if got != Outcome::Data(b"held back".to_vec()) || t0.elapsed() > Duration::from_secs(10) {
        d.fail(&format!(
            "after SIGTERM, want the delayed reply at once; got {got:?} after {:?}",
            t0.elapsed()
        ));
    }
    s.shutdown(std::net::Shutdown::Write).unwrap();
    if let Err(e) = expect_eof(&mut &s) {
        d.fail(&e);
    }
    if !d.wait_exit(Duration::from_secs(10)).success() {
        d.fail("want exit 0");
    }
}

for_each_backend!(drain_deadline_cuts_off_and_warns);
/// `--shutdown-timeout 500ms` and a client that never closes: exit 0 after the deadline
/// (not before), the client cut off, and a warning that counts 1 connection.
fn drain_deadline_cuts_off_and_warns(backend: &'static str) {
    let Some(mut d) = Daemon::spawn(backend, &["--shutdown-timeout", "500ms"]) else {
        return;
    };
    let mut s = d.connect();
    ping(&mut s, b"hello").unwrap();
    let mark = d.mark();
    let t0 = Instant::now();
    d.signal(Signal::SIGTERM);
    let st = d.wait_exit(Duration::from_secs(10));
    let took = t0.elapsed();
    if !st.success() || took < Duration::from_millis(500) {
        d.fail(&format!(
            "want exit 0 no sooner than the 500 ms deadline; took {took:?}"
        ));
    }
    if outcome(&s, Duration::from_secs(2)) != Outcome::Closed {
        d.fail("the stuck client was not closed");
    }
    if warning_counting(&d, mark, 1).is_none() {
        d.fail("no warning counting the 1 connection cut off");
    }
}

/// `--shutdown-timeout 0` closes everything at once: exit 0 right away, client cut off.
#[test]
fn shutdown_timeout_0_closes_at_once() {
    let Some(mut d) = Daemon::spawn("poll", &["--shutdown-timeout", "0"]) else {
        return;
    };
    let mut s = d.connect();
    ping(&mut s, b"hello").unwrap();
    let t0 = Instant::now();
    d.signal(Signal::SIGTERM);
    // At once, not after the default 5 s drain: under 4 s even on a loaded machine.
    let st = d.wait_exit(Duration::from_secs(10));
    if !st.success() || t0.elapsed() > Duration::from_secs(4) {
        d.fail(&format!("want exit 0 at once; took {:?}", t0.elapsed()));
    }
    if outcome(&s, Duration::from_secs(2)) != Outcome::Closed {
        d.fail("the client was not closed");
    }
}

for_each_backend!(second_signal_ends_the_drain);
/// A second signal (SIGINT, then SIGTERM) ends a 60 s drain at once, exit 0 with the warning.
fn second_signal_ends_the_drain(backend: &'static str) {
    let Some(mut d) = Daemon::spawn(backend, &["--shutdown-timeout", "60s"]) else {
        return;
    };
    let mut s = d.connect();
    ping(&mut s, b"hello").unwrap();
    let mark = d.mark();
    d.signal(Signal::SIGINT);
    // The drain has begun, with our one client. (Not wait_refused: under load its first
    // probe can be accepted before the signal is handled, and be drained as a second
    // connection, which the warning then counts.)
    d.expect_line(mark, "draining 1 connection", Duration::from_secs(10));
    if !d.is_running() {
        d.fail("exited on the first signal with a client still connected");
    }
    let t0 = Instant::now();
    d.signal(Signal::SIGTERM);
    // Soon, next to the 60 s drain.
    let st = d.wait_exit(Duration::from_secs(20));
    if !st.success() || t0.elapsed() > Duration::from_secs(10) {
        d.fail(&format!(
            "want exit 0 soon after the second signal; took {:?}",
            t0.elapsed()
        ));
    }
    if warning_counting(&d, mark, 1).is_none() {
        d.fail("no warning counting the 1 connection cut off");
    }
}

for_each_backend!(idle_daemon_exits_0_on_sigterm_and_sigint);
/// With no clients, SIGTERM and SIGINT each end the daemon promptly with exit 0.
fn idle_daemon_exits_0_on_sigterm_and_sigint(backend: &'static str) {
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        let Some(mut d) = Daemon::spawn(backend, &[]) else {
            return;
        };
        d.signal(sig);
        if !d.wait_exit(Duration::from_secs(10)).success() {
            d.fail(&format!("want exit 0 on {sig}"));
        }
    }
}

for_each_backend!(sigusr1_logs_one_stats_line);
/// SIGUSR1 logs exactly one stats line per signal, with the right numbers.
fn sigusr1_logs_one_stats_line(backend: &'static str) {
    let Some(d) = Daemon::spawn(backend, &[]) else {
        return;
    };
    let mut conns: Vec<_> = (0..3).map(|_| d.connect()).collect();
    for c in &mut conns {
        ping(c, &[b'x'; 1000]).unwrap();
    }
    let mark = d.mark();
    let st = d.stats();
    let want = [
        ("backend", backend),
        ("open", "3"),
        ("accepted", "3"),
        ("rejected", "0"),
        ("bytes_in", "3000"),
        ("bytes_out", "3000"),
    ];
    for (k, v) in want {
        if st.get(k).map(String::as_str) != Some(v) {
            d.fail(&format!("stats: want {k}={v}, got {st:?}"));
        }
    }
    let up = st
        .get("uptime")
        .and_then(|u| u.strip_suffix('s'))
        .and_then(|u| u.parse::<u64>().ok());
    if !matches!(up, Some(0..=60)) {
        d.fail(&format!("stats: want uptime=<seconds>s, got {st:?}"));
    }
    drop(conns.pop());
    let (start, mut sent) = (Instant::now(), 1);
    let st = loop {
        let st = d.stats();
        sent += 1;
        if st.get("open").map(String::as_str) == Some("2")
            || start.elapsed() > Duration::from_secs(15)
        {
            break st;
        }
        thread::sleep(Duration::from_millis(50));
    };
    if st.get("open").map(String::as_str) != Some("2")
        || st.get("accepted").map(String::as_str) != Some("3")
    {
        d.fail(&format!(
            "after one client left: want open=2 accepted=3, got {st:?}"
        ));
    }
    thread::sleep(Duration::from_millis(100)); // room for a stray second line
    let lines = d
        .stderr_since(mark)
        .lines()
        .filter(|l| l.contains("stats: "))
        .count();
    if lines != sent {
        d.fail(&format!(
            "{sent} SIGUSR1 gave {lines} stats lines; want exactly one each"
        ));
    }
}

for_each_backend!(sighup_keeps_serving);
/// SIGHUP reloads in place (tests/reload/ has the rest): the daemon keeps serving existing
/// and new clients.
fn sighup_keeps_serving(backend: &'static str) {
    let Some(mut d) = Daemon::spawn(backend, &[]) else {
        return;
    };
    let mut before = d.connect();
    let mark = d.mark();
    d.signal(Signal::SIGHUP);
    d.expect_line(mark, "reloaded in", Duration::from_secs(30));
    let mut after = d.connect();
    if ping(&mut before, b"one").is_err() || ping(&mut after, b"two").is_err() || !d.is_running() {
        d.fail("not serving after SIGHUP");
    }
}
