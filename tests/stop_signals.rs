//! SIGTERM and SIGINT that reach the daemon in one loop turn are one stop request, as two of
//! the same signal are (issue 8 defect 4): the drain starts and is not cut off at once.

use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::util::client::ping;
use crate::util::Daemon;

/// Wait until the daemon is stopped (state `T` in /proc/PID/stat), so that signals sent now
/// are all pending when it continues, and its handlers run before its loop turns again.
fn wait_stopped(d: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", d.pid())).unwrap_or_default();
        let state = stat.rfind(')').and_then(|i| stat.get(i + 2..i + 3));
        if state == Some("T") {
            return;
        }
        if Instant::now() >= deadline {
            d.fail("the daemon did not stop on SIGSTOP");
        }
        thread::sleep(Duration::from_millis(5));
    }
}

for_each_backend!(sigterm_and_sigint_in_one_turn_are_one_request);
/// SIGTERM and SIGINT delivered together start a 60 s drain; the connected client is still
/// served, nothing is cut off, and the daemon exits 0 once the client leaves.
fn sigterm_and_sigint_in_one_turn_are_one_request(backend: &'static str) {
    let Some(mut d) = Daemon::spawn(backend, &["--shutdown-timeout", "60s"]) else {
        return;
    };
    let mut s = d.connect();
    ping(&mut s, b"hello").unwrap_or_else(|e| d.fail(&format!("first ping: {e}")));
    let mark = d.mark();
    d.signal(Signal::SIGSTOP);
    wait_stopped(&d);
    d.signal(Signal::SIGTERM);
    d.signal(Signal::SIGINT);
    d.signal(Signal::SIGCONT);
    d.expect_line(mark, "draining 1 connection", Duration::from_secs(15));
    thread::sleep(Duration::from_millis(300));
    if !d.is_running() {
        d.fail("two stop signals in one turn ended the drain at once");
    }
    if d.stderr()[mark..].contains("had not finished") {
        d.fail("the drain was cut off");
    }
    ping(&mut s, b"still served")
        .unwrap_or_else(|e| d.fail(&format!("the client is not served while draining: {e}")));
    drop(s);
    if !d.wait_exit(Duration::from_secs(10)).success() {
        d.fail("want exit 0 once the last client left");
    }
}
