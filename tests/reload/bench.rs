//! The cost of a reload (SPEC §13: at most 50 ms with 10,000 open connections): a
//! measurement, not a timed assertion. Run it in release:
//!
//! ```text
//! cargo test --release --test integration reload_pause -- --ignored --nocapture
//! ```
//!
//! It prints the pause the daemon logs (from the last event the old image served to the
//! new image's first turn) and the state's size per connection.

use std::net::TcpStream;

use super::{reload, stat};
use crate::util::{lift_nofile, Daemon};

const CONNECTIONS: usize = 10_000;

#[test]
#[ignore = "a measurement: run it in release with --ignored --nocapture"]
fn reload_pause_with_10000_connections() {
    let limit = lift_nofile();
    if limit < (CONNECTIONS + 200) as u64 {
        eprintln!(
            "skipped: RLIMIT_NOFILE is {limit}, want {}",
            CONNECTIONS + 200
        );
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
