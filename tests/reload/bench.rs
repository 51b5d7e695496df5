//! The cost of a reload (SPEC §13: at most 50 ms with 10,000 open connections): a
//! measurement, not a timed assertion. Run it in release:
//!
//! ```text
//! cargo test --release --test integration reload_pause -- --ignored --nocapture --test-threads=1
//! ```
//!
//! It prints the pause the daemon logs (from the last event the old image served to the
//! new image's first turn) and the state's size per connection; then, with `--workers 4`,
//! the time of a whole reload (the supervisor's `reload complete` line) and each worker's
//! own pause.

use std::net::TcpStream;

use super::{reload, stat, RELOAD_PATIENCE};
use crate::util::{lift_nofile, Daemon};
use crate::workers::pool::Pool;

const CONNECTIONS: usize = 10_000;

/// Room for the clients' ends of every connection, or a note and `false`.
fn enough_descriptors() -> bool {
    let limit = lift_nofile();
    let want = (CONNECTIONS + 200) as u64;
    if limit < want {
        eprintln!("skipped: RLIMIT_NOFILE is {limit}, want {want}");
    }
    limit >= want
}

#[test]
#[ignore = "a measurement: run it in release with --ignored --nocapture"]
fn reload_pause_with_10000_connections() {
    if !enough_descriptors() {
        return;
    }
    for backend in ["epoll", "poll"] {
        let Some(d) = Daemon::with(backend)
            .args(&["--max-clients", "20000"])
            .spawn()
        else {
            return;
        };
        let clients: Vec<TcpStream> = (0..CONNECTIONS).map(|_| d.connect()).collect();
        let st = d.stats_until(|st| stat(st, "accepted") == CONNECTIONS as u64);
        assert_eq!(stat(&st, "open"), CONNECTIONS as u64);
        let mut lines = Vec::new();
        for _ in 0..3 {
            lines.push(reload(&d));
        }
        for line in &lines {
            let ms: u64 = line
                .split("reloaded in ")
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let state = line
                .split("(state ")
                .nth(1)
                .and_then(|r| r.split(',').next())
                .unwrap_or("?");
            eprintln!(
                "backend {backend}: {CONNECTIONS} connections: pause {ms} ms, state {state} \
                 ({line})"
            );
        }
        d.expect_echo(&clients[0], "after the reloads");
        d.expect_echo(&clients[CONNECTIONS - 1], "after the reloads");
    }
}

#[test]
#[ignore = "a measurement: run it in release with --ignored --nocapture"]
fn reload_pause_with_10000_connections_and_4_workers() {
    if !enough_descriptors() {
        return;
    }
    let Some(p) = Pool::start("epoll", 4, &["--max-clients", "20000"]) else {
        return;
    };
    let d = &p.d;
    let clients: Vec<TcpStream> = (0..CONNECTIONS).map(|_| d.connect()).collect();
    d.stats_until(|st| stat(st, "accepted") == CONNECTIONS as u64);
    for _ in 0..3 {
        let mark = d.mark();
        d.signal(nix::sys::signal::Signal::SIGHUP);
        let done = d.expect_line(mark, "supervisor: reload complete: ", RELOAD_PATIENCE);
        let since = d.stderr_since(mark);
        // A worker's own line (`reloaded in 3 ms: echo-mux …`): its loop's pause. The
        // supervisor's (`worker K (pid P) reloaded in 10 ms`): that worker's whole step,
        // its check child included.
        let ms = |l: &str| -> Option<String> {
            let rest = l.split("reloaded in ").nth(1)?;
            Some(rest.split(" ms").next()?.to_string())
        };
        let pauses: Vec<String> = since
            .lines()
            .filter(|l| l.contains(": echo-mux "))
            .filter_map(ms)
            .collect();
        let steps: Vec<String> = since
            .lines()
            .filter(|l| l.contains("(pid "))
            .filter_map(ms)
            .collect();
        eprintln!(
            "--workers 4, {CONNECTIONS} connections: {done}; each worker's pause (ms): \
             {pauses:?}; each worker's step (ms): {steps:?}"
        );
    }
    d.expect_echo(&clients[0], "after the reloads");
    d.expect_echo(&clients[CONNECTIONS - 1], "after the reloads");
}
