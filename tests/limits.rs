//! Limits and hostile peers (SPEC §2, §4): `--max-clients` and clients that reset
//! mid-stream.

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::util::client::{self, echo_exact, fresh_seed, outcome, ping, Outcome};
use crate::util::Daemon;
use nix::sys::signal::Signal;

for_each_backend!(max_clients_rejects_the_sixth);
/// `--max-clients 5`: the 6th connection is accepted and closed at once with nothing
/// sent, the five go on echoing, stats count it as rejected; a slot freed is usable again.
fn max_clients_rejects_the_sixth(backend: &'static str) {
    let Some(d) = Daemon::spawn(backend, &["--max-clients", "5"]) else {
        return;
    };
    let mut five: Vec<_> = (0..5).map(|_| d.connect()).collect();
    for s in &mut five {
        ping(s, b"in").unwrap_or_else(|e| d.fail(&format!("one of the first five: {e}")));
    }
    let sixth = d.connect();
    let t0 = Instant::now();
    let got = outcome(&sixth, Duration::from_secs(10));
    if got != Outcome::Closed || t0.elapsed() > Duration::from_secs(5) {
        d.fail(&format!(
            "6th connection: want closed at once with nothing sent; got {got:?} after {:?}",
            t0.elapsed()
        ));
    }
    for s in &mut five {
        ping(s, b"still")
            .unwrap_or_else(|e| d.fail(&format!("one of the first five after the 6th: {e}")));
    }
    let st = d.stats_until(|st| {
        st.get("rejected").map(String::as_str) == Some("1")
            && st.get("open").map(String::as_str) == Some("5")
    });
    if st.get("rejected").map(String::as_str) != Some("1")
        || st.get("open").map(String::as_str) != Some("5")
    {
        d.fail(&format!("want rejected=1 open=5, got {st:?}"));
    }
    drop(five.pop());
    if !d.serves_new_client() {
        d.fail("after one of five left, a new client is still not served");
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
    let addrs = d.tcp_addrs();
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

for_each_backend!(resets_mid_stream_are_harmless);
/// 200 clients that reset at awkward moments (right away, after sending, while their
/// echo is in flight) do not disturb a well-behaved client, leak no connection, and log
/// nothing at the default level (a failing peer is a debug line, SPEC §2).
fn resets_mid_stream_are_harmless(backend: &'static str) {
    let d = Daemon::shared(backend);
    let (good, addr, mark) = (d.connect(), d.addr(), d.mark());
    let stop = AtomicBool::new(false);
    let good_result = thread::scope(|sc| {
        let g = sc.spawn(|| {
            let mut rounds = 0;
            while !stop.load(Ordering::SeqCst) {
                echo_exact(&good, fresh_seed(), 64 << 10, false)
                    .map_err(|e| format!("round {rounds}: {e}"))?;
                rounds += 1;
            }
            Ok::<_, String>(rounds)
        });
        let storm: Vec<_> = (0..4)
            .map(|t| {
                sc.spawn(move || {
                    for i in 0..50 {
                        let Ok(s) = client::connect(addr) else {
                            continue;
                        };
                        set_linger_zero(&s);
                        match (t + i) % 3 {
                            0 => {}
                            1 => {
                                let _ = (&s).write_all(&vec![7u8; 256 << 10]);
                            }
                            _ => {
                                let _ = ping(&mut &s, &[9u8; 8192]);
                                let _ = (&s).write_all(&[1u8; 100_000]);
                            }
                        }
                        drop(s);
                    }
                })
            })
            .collect();
        for h in storm {
            h.join().unwrap();
        }
        stop.store(true, Ordering::SeqCst);
        g.join().unwrap()
    });
    match good_result {
        Err(e) => d.fail(&format!(
            "the well-behaved client during the reset storm: {e}"
        )),
        Ok(0) => d.fail("the well-behaved client made no progress"),
        Ok(_) => {}
    }
    if let Err(e) = echo_exact(&d.connect(), fresh_seed(), 100_000, true) {
        d.fail(&format!("a new client after the storm: {e}"));
    }
    let logged = d.stderr_since(mark);
    if !logged.is_empty() {
        d.fail(&format!(
            "resetting peers logged at the default level:\n{logged}"
        ));
    }
    if d.is_owned() {
        if let Err(st) = d.wait_stat("open", "1", Duration::from_secs(15)) {
            d.fail(&format!("connections leaked after the resets: {st:?}"));
        }
    }
}

/// The listen backlog is at least 1024 (SPEC §1): while the daemon is stopped (SIGSTOP),
/// 1000 connections complete their handshakes in the kernel; after SIGCONT every one of
/// them is accepted and echoes.
#[test]
fn listen_backlog_holds_1000_pending_connections() {
    const N: usize = 1000;
    let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if somaxconn < 1024 {
        println!("note: net.core.somaxconn is {somaxconn} < 1024; skipping the backlog test");
        return;
    }
    let Some(d) = Daemon::spawn("epoll", &[]) else {
        return;
    };
    d.signal(Signal::SIGSTOP);
    let conns: Vec<_> = (0..N)
        .map(|i| {
            let s = TcpStream::connect_timeout(&d.addr(), Duration::from_secs(2));
            s.unwrap_or_else(|e| {
                d.signal(Signal::SIGCONT);
                d.fail(&format!(
                    "connection {i} of {N} while stopped: {e} (backlog too small?)"
                ))
            })
        })
        .collect();
    d.signal(Signal::SIGCONT);
    for (i, s) in conns.into_iter().enumerate() {
        s.set_read_timeout(Some(client::IO_TIMEOUT)).unwrap();
        ping(&s, b"b").unwrap_or_else(|e| d.fail(&format!("connection {i} of {N}: {e}")));
    }
}

/// SO_REUSEADDR (SPEC §1): a daemon restarted on the port of one that closed a connection
/// first (leaving it in TIME_WAIT) can listen there again at once.
#[test]
fn restart_on_a_port_in_time_wait() {
    let Some(mut first) = Daemon::spawn("poll", &["--idle-timeout", "200ms"]) else {
        return;
    };
    let addr = first.addr();
    let mut c = first.connect();
    ping(&mut c, b"x").unwrap();
    if outcome(&c, Duration::from_secs(5)) != Outcome::Closed {
        first.fail("the idle timeout did not close the client");
    }
    drop(c); // the daemon closed first: its end is in TIME_WAIT now
    first.signal(Signal::SIGTERM);
    if !first.wait_exit(Duration::from_secs(5)).success() {
        first.fail("want exit 0");
    }
    let Some(second) = Daemon::spawn("poll", &["--listen", &addr.to_string()]) else {
        return;
    };
    let mut c = second.connect();
    ping(&mut c, b"again").unwrap_or_else(|e| second.fail(&format!("after restart: {e}")));
}
