//! Signals around a reload: SIGTERM while the check runs drains as usual (the check child
//! is killed); two SIGHUPs back to back are one or two reloads and lose nothing; SIGHUP
//! during a drain is refused with one line and the drain goes on.

use std::time::Duration;

use nix::sys::signal::Signal;

use super::{replace, script, started_from_a_copy, stat, RELOAD_PATIENCE};
use crate::util::Daemon;

for_each_backend!(sigterm_during_the_check_drains_cleanly);
fn sigterm_during_the_check_drains_cleanly(backend: &'static str) {
    let Some((_dir, path, mut d, client)) = started_from_a_copy(backend, "slow-check") else {
        return;
    };
    // A check that takes 30 s (the daemon's own limit is 10 s); `exec` so that the process
    // the daemon kills is the sleep itself.
    replace(&path, &script("exec sleep 30"));
    let mark = d.mark();
    d.signal(Signal::SIGHUP);
    d.expect_line(mark, "SIGHUP received: reloading", RELOAD_PATIENCE);
    // The check is running; the loop serves on meanwhile.
    d.expect_echo(&client, "while the check runs");
    d.signal(Signal::SIGTERM);
    d.expect_line(mark, "SIGTERM received: draining", RELOAD_PATIENCE);
    drop(client);
    let status = d.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status}");
    let err = d.stderr_since(mark);
    assert!(!err.contains("reloaded in"), "{err}");
}

for_each_backend!(two_sighups_back_to_back_lose_nothing);
fn two_sighups_back_to_back_lose_nothing(backend: &'static str) {
    let Some(d) = Daemon::spawn(backend, &[]) else {
        return;
    };
    let client = d.connect();
    d.expect_echo(&client, "before");
    let mark = d.mark();
    d.signal(Signal::SIGHUP);
    d.signal(Signal::SIGHUP);
    d.expect_line(mark, "reloaded in ", RELOAD_PATIENCE);
    d.expect_echo(&client, "after");
    // One reload for both (the two signals met in one turn, or the second joined the
    // first's check), or a second one after the first: wait until every reload that was
    // started has finished and the count says so.
    let st = d.stats_until(|st| {
        let err = d.stderr_since(mark);
        let started = err.matches("SIGHUP received: reloading").count() as u64;
        let done = err.matches("reloaded in ").count() as u64;
        done == started && stat(st, "reloads") == done
    });
    let reloads = stat(&st, "reloads");
    assert!((1..=2).contains(&reloads), "{st:?}");
    assert_eq!(stat(&st, "open"), 1, "{st:?}");
    d.expect_echo(&client, "at the end");
}

for_each_backend!(sighup_during_a_drain_is_refused);
fn sighup_during_a_drain_is_refused(backend: &'static str) {
    let Some(mut d) = Daemon::spawn(backend, &["--shutdown-timeout", "60s"]) else {
        return;
    };
    let client = d.connect();
    d.expect_echo(&client, "before");
    let mark = d.mark();
    d.signal(Signal::SIGTERM);
    d.expect_line(mark, "draining", RELOAD_PATIENCE);
    d.signal(Signal::SIGHUP);
    d.expect_line(mark, "reload refused: draining", RELOAD_PATIENCE);
    d.expect_echo(&client, "during the drain");
    drop(client);
    let status = d.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status}");
}

for_each_backend!(sigterm_at_the_handover_is_a_clean_drain);
/// SIGTERM sent the moment the handover begins lands before, during or after the execve:
/// whichever, it is a drain that ends with exit 0, never a death by the signal's default
/// action (the old image blocks the signals before the execve; the new one unblocks them
/// once its handlers are installed).
fn sigterm_at_the_handover_is_a_clean_drain(backend: &'static str) {
    let Some(mut d) = Daemon::spawn(backend, &["-v"]) else {
        return;
    };
    let client = d.connect();
    d.expect_echo(&client, "before");
    let mark = d.mark();
    d.signal(Signal::SIGHUP);
    d.expect_line(mark, "handing over", RELOAD_PATIENCE);
    d.signal(Signal::SIGTERM);
    d.expect_line(mark, "SIGTERM received: draining", RELOAD_PATIENCE);
    d.expect_echo(&client, "during the drain");
    drop(client);
    let status = d.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status}");
}
