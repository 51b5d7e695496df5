//! Limits and hostile peers (SPEC §2, §4): `--max-clients`, running out of descriptors,
//! select's FD_SETSIZE, and clients that reset mid-stream.

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::util::client::{self, echo_exact, fresh_seed, outcome, ping, Outcome};
use crate::util::Daemon;

/// Connect and ping until a new client is echoed (up to 10 s); false if none is.
fn eventually_served(d: &Daemon) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(s) = client::connect(d.addr()) {
            let _ = (&s).write_all(b"!");
            loop {
                match outcome(&s, Duration::from_millis(500)) {
                    Outcome::Data(b) if b == b"!" => return true,
                    Outcome::Silent if Instant::now() < deadline => continue,
                    _ => break,
                }
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
    false
}

for_each_backend! {
    /// `--max-clients 5`: the 6th connection is accepted and closed at once with nothing
    /// sent, the five go on echoing, stats count it as rejected; a slot freed is usable again.
    fn max_clients_rejects_the_sixth(backend) {
        let Some(d) = Daemon::spawn(backend, &["--max-clients", "5"]) else { return };
        let mut five: Vec<_> = (0..5).map(|_| d.connect()).collect();
        for s in &mut five {
            ping(s, b"in").unwrap_or_else(|e| d.fail(&format!("one of the first five: {e}")));
        }
        let sixth = d.connect();
        let t0 = Instant::now();
        let got = outcome(&sixth, Duration::from_secs(5));
        if got != Outcome::Closed || t0.elapsed() > Duration::from_secs(2) {
            d.fail(&format!("6th connection: want closed at once with nothing sent; got {got:?} after {:?}", t0.elapsed()));
        }
        for s in &mut five {
            ping(s, b"still").unwrap_or_else(|e| d.fail(&format!("one of the first five after the 6th: {e}")));
        }
        let st = d.stats();
        if st.get("rejected").map(String::as_str) != Some("1") || st.get("open").map(String::as_str) != Some("5") {
            d.fail(&format!("want rejected=1 open=5, got {st:?}"));
        }
        drop(five.pop());
        if !eventually_served(&d) {
            d.fail("after one of five left, a new client is still not served");
        }
    }
}

/// `--max-clients` counts both listeners together.
#[test]
fn max_clients_counts_all_listeners() {
    let Some(d) = Daemon::spawn(
        "epoll",
        &[
            "--max-clients",
            "2",
            "--listen",
            "127.0.0.1:0",
            "--listen",
            "127.0.0.1:0",
        ],
    ) else {
        return;
    };
    let addrs: Vec<_> = d
        .addrs()
        .iter()
        .map(|a| match a {
            crate::util::Addr::Tcp(s) => *s,
            crate::util::Addr::Unix(_) => unreachable!(),
        })
        .collect();
    let mut a = client::connect(addrs[0]).unwrap();
    let mut b = client::connect(addrs[1]).unwrap();
    ping(&mut a, b"a").unwrap();
    ping(&mut b, b"b").unwrap();
    for addr in &addrs {
        let c = client::connect(*addr).unwrap();
        let got = outcome(&c, Duration::from_secs(5));
        if got != Outcome::Closed {
            d.fail(&format!(
                "3rd client on {addr} with --max-clients 2 over two listeners: {got:?}"
            ));
        }
    }
}

for_each_backend! {
    /// Under RLIMIT_NOFILE 64 the daemon runs out of descriptors on accept. It must not spin
    /// (under 0.5 s of CPU in 1 s of exhaustion) nor flood the log, must keep serving the
    /// open connections, and must serve new clients again once some leave.
    fn fd_exhaustion_does_not_spin(backend) {
        let Some(d) = Daemon::with(backend).nofile(64).spawn() else { return };
        let (mut served, mut waiting, mut shed) = (Vec::new(), Vec::new(), 0);
        while served.len() < 200 && shed < 3 && waiting.is_empty() {
            let Ok(s) = client::connect(d.addr()) else { break };
            let _ = (&s).write_all(b"?");
            match outcome(&s, Duration::from_secs(2)) {
                Outcome::Data(b) if b == b"?" => served.push(s),
                Outcome::Data(b) => d.fail(&format!("unexpected echo {b:?}")),
                Outcome::Closed => shed += 1,
                Outcome::Silent => waiting.push(s),
            }
        }
        if !(30..64).contains(&served.len()) {
            d.fail(&format!("{} clients served under a limit of 64 descriptors", served.len()));
        }
        // More pressure: these wait in the backlog or are shed.
        waiting.extend((0..10).filter_map(|_| client::connect(d.addr()).ok()));
        let mark = d.mark();
        let cpu0 = d.cpu_time();
        thread::sleep(Duration::from_secs(1));
        let burned = d.cpu_time().saturating_sub(cpu0);
        if burned > Duration::from_millis(500) {
            d.fail(&format!("{burned:?} of CPU in 1 s while out of descriptors: the loop spins"));
        }
        let logged = d.stderr()[mark..].lines().count();
        if logged > 5 {
            d.fail(&format!("{logged} log lines in 1 s while out of descriptors; want one per burst"));
        }
        for s in [0, served.len() - 1] {
            ping(&mut served[s], b"alive").unwrap_or_else(|e| d.fail(&format!("open client {s} while out of descriptors: {e}")));
        }
        drop(waiting);
        served.truncate(served.len() - 10);
        if !eventually_served(&d) {
            d.fail("10 descriptors freed, but a new client is not served within 10 s");
        }
        for s in &mut served {
            ping(s, b"after").unwrap_or_else(|e| d.fail(&format!("an old client after recovery: {e}")));
        }
    }
}

/// SPEC §1: at start the soft RLIMIT_NOFILE is raised to the hard limit.
#[test]
fn soft_nofile_limit_is_raised_to_hard() {
    let Some(d) = Daemon::with("epoll").nofile_limits(256, 2048).spawn() else {
        return;
    };
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", d.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or("");
    let nums: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    if nums != ["2048", "2048"] {
        d.fail(&format!(
            "started with 256:2048, want soft raised to 2048; /proc limits: {line:?}"
        ));
    }
}

/// Make dropping `s` send a RST instead of a FIN.
fn set_linger_zero(s: &TcpStream) {
    use nix::sys::socket::{setsockopt, sockopt::Linger};
    setsockopt(
        s,
        Linger,
        &libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    )
    .unwrap();
}

for_each_backend! {
    /// 200 clients that reset at awkward moments (right away, after sending, while their
    /// echo is in flight) do not disturb a well-behaved client, and leak no connection.
    fn resets_mid_stream_are_harmless(backend) {
        let d = Daemon::shared(backend);
        let (good, addr) = (d.connect(), d.addr());
        let stop = AtomicBool::new(false);
        let good_result = thread::scope(|sc| {
            let g = sc.spawn(|| {
                let mut rounds = 0;
                while !stop.load(Ordering::SeqCst) {
                    echo_exact(&good, fresh_seed(), 64 << 10, false).map_err(|e| format!("round {rounds}: {e}"))?;
                    rounds += 1;
                }
                Ok::<_, String>(rounds)
            });
            let storm: Vec<_> = (0..4).map(|t| sc.spawn(move || {
                for i in 0..50 {
                    let Ok(s) = client::connect(addr) else { continue };
                    set_linger_zero(&s);
                    match (t + i) % 3 {
                        0 => {}
                        1 => { let _ = (&s).write_all(&vec![7u8; 256 << 10]); }
                        _ => { let _ = ping(&mut &s, &[9u8; 8192]); let _ = (&s).write_all(&[1u8; 100_000]); }
                    }
                    drop(s);
                }
            })).collect();
            for h in storm {
                h.join().unwrap();
            }
            stop.store(true, Ordering::SeqCst);
            g.join().unwrap()
        });
        match good_result {
            Err(e) => d.fail(&format!("the well-behaved client during the reset storm: {e}")),
            Ok(0) => d.fail("the well-behaved client made no progress"),
            Ok(_) => {}
        }
        if let Err(e) = echo_exact(&d.connect(), fresh_seed(), 100_000, true) {
            d.fail(&format!("a new client after the storm: {e}"));
        }
        if d.is_owned() {
            let start = Instant::now();
            while d.stats().get("open").map(String::as_str) != Some("1") {
                if start.elapsed() > Duration::from_secs(5) {
                    d.fail(&format!("connections leaked after the resets: {:?}", d.stats()));
                }
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Raise this process's soft RLIMIT_NOFILE to at least `want`; false if the hard limit forbids it.
fn raise_nofile(want: u64) -> bool {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    soft >= want
        || (hard >= want && setrlimit(Resource::RLIMIT_NOFILE, want.max(soft), hard).is_ok())
}

/// select cannot watch descriptors >= 1024: with 1100 clients, those whose descriptor is
/// too large are closed at accept with a warning, all the others echo, and once some leave
/// new clients are served again.
#[test]
fn select_closes_descriptors_beyond_fd_setsize() {
    const N: usize = 1100;
    if !raise_nofile(4096) {
        println!("note: RLIMIT_NOFILE hard limit below 4096; skipping the FD_SETSIZE test");
        return;
    }
    let Some(d) = Daemon::spawn("select", &[]) else {
        return;
    };
    let mark = d.mark();
    let mut conns: Vec<_> = (0..N).map(|_| d.connect()).collect();
    let mut served = Vec::new();
    let mut closed = 0;
    for (i, s) in conns.drain(..).enumerate() {
        let _ = (&s).write_all(b"p");
        match outcome(&s, Duration::from_secs(10)) {
            Outcome::Data(b) if b == b"p" => served.push(s),
            Outcome::Closed => closed += 1,
            other => d.fail(&format!(
                "client {i} of {N}: {other:?}; want an echo or a close"
            )),
        }
    }
    if !(950..=1021).contains(&served.len()) || closed != N - served.len() {
        d.fail(&format!(
            "{} served and {closed} closed of {N}; want about 1,015 served, the rest closed",
            served.len()
        ));
    }
    let warned = d.stderr()[mark..]
        .lines()
        .any(|l| l.to_ascii_lowercase().contains("warn") && l.contains("select"));
    if !warned {
        d.fail("no warning mentioning select for the connections over FD_SETSIZE");
    }
    for s in served.iter_mut().step_by(97) {
        ping(s, b"again").unwrap_or_else(|e| d.fail(&format!("a served client, later: {e}")));
    }
    served.truncate(served.len() - 100);
    if !eventually_served(&d) {
        d.fail("100 low descriptors freed, but a new client is not served");
    }
}
