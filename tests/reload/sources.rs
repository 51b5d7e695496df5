//! The per-source table survives a reload: connections counted before it still count
//! toward `--max-per-source` after it, and closing one gives its count back.

use std::time::Duration;

use super::{reload, stat};
use crate::util::client::{outcome, Outcome};
use crate::util::Daemon;

for_each_backend!(per_source_counts_carry_over);
fn per_source_counts_carry_over(backend: &'static str) {
    let Some(d) = Daemon::spawn(backend, &["--max-per-source", "2"]) else {
        return;
    };
    let a = d.connect();
    let b = d.connect();
    d.expect_echo(&a, "a");
    d.expect_echo(&b, "b");
    reload(&d);
    // The third from the same source is refused by the table the old image filled.
    let c = d.connect();
    if outcome(&c, Duration::from_secs(20)) != Outcome::Closed {
        d.fail("a third connection was served after the reload");
    }
    let st = d.stats_until(|st| stat(st, "limited") == 1);
    assert_eq!(stat(&st, "limited"), 1, "{st:?}");
    // Closing one gives its count back (its ticket came through the reload).
    drop(a);
    d.stats_until(|st| stat(st, "open") == 1);
    let e = d.connect();
    d.expect_echo(&e, "e after a close");
    d.expect_echo(&b, "b at the end");
}

for_each_backend!(connections_keep_working_with_gaps_between_them);
/// Connections closed before the reload leave gaps in the slots: the ones after a gap keep
/// their slot (their token in a handed-over epoll instance) and are served, and new
/// connections fill the gaps.
fn connections_keep_working_with_gaps_between_them(backend: &'static str) {
    let Some(d) = Daemon::spawn(backend, &[]) else {
        return;
    };
    let mut clients: Vec<_> = (0..6).map(|_| d.connect()).collect();
    for (i, c) in clients.iter().enumerate() {
        d.expect_echo(c, &format!("client {i}"));
    }
    // Close the 1st, 3rd and 4th.
    for i in [3, 2, 0] {
        drop(clients.remove(i));
    }
    d.stats_until(|st| stat(st, "open") == 3);
    reload(&d);
    let fresh: Vec<_> = (0..4).map(|_| d.connect()).collect();
    for (i, c) in clients.iter().chain(&fresh).enumerate() {
        d.expect_echo(c, &format!("after the reload, client {i}"));
    }
    let st = d.stats_until(|st| stat(st, "open") == 7);
    assert_eq!(stat(&st, "open"), 7, "{st:?}");
}
