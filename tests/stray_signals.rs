//! Stray signals (SPEC §5, issue 15 item 10): every catchable signal that is not a fault and
//! has no job of its own is ignored, with one info line the first time each arrives, by the
//! one-process daemon, the supervisor and each worker alone; SIGQUIT ends everything at once
//! with exit 0, a log line, and the unix socket file removed.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::util::client::{echo_exact, fresh_seed};
use crate::util::{Daemon, TempSock};
use crate::workers::pool::{is_gone, Pool, PATIENCE};

/// The stray signals sent by these tests: SPEC §5's list, a few real-time ones.
fn strays() -> Vec<(libc::c_int, String)> {
    let mut out: Vec<(libc::c_int, String)> = [
        (libc::SIGUSR2, "SIGUSR2"),
        (libc::SIGALRM, "SIGALRM"),
        (libc::SIGVTALRM, "SIGVTALRM"),
        (libc::SIGPROF, "SIGPROF"),
        (libc::SIGIO, "SIGIO"),
        (libc::SIGPWR, "SIGPWR"),
        (libc::SIGXCPU, "SIGXCPU"),
        (libc::SIGXFSZ, "SIGXFSZ"),
        (libc::SIGSTKFLT, "SIGSTKFLT"),
        (libc::SIGTSTP, "SIGTSTP"),
        (libc::SIGTTIN, "SIGTTIN"),
        (libc::SIGTTOU, "SIGTTOU"),
    ]
    .iter()
    .map(|&(s, n)| (s, n.to_string()))
    .collect();
    let rt = libc::SIGRTMIN();
    for n in [0, 6, libc::SIGRTMAX() - rt] {
        out.push((rt + n, format!("SIGRTMIN+{n}")));
    }
    out
}

fn raw_kill(pid: i32, sig: libc::c_int) {
    // SAFETY: kill(2) with a pid this test started and a valid signal number.
    let r = unsafe { libc::kill(pid, sig) };
    assert_eq!(r, 0, "kill({pid}, {sig}) failed");
}

/// Send every stray signal to `pid` twice; each must give exactly one line
/// `<prefix><NAME> received and ignored` (a SIGUSR1 stats line from the same process after
/// the second one shows that it was taken and not reported).
fn send_strays(d: &Daemon, pid: i32, prefix: &str) {
    for (sig, name) in strays() {
        let mark = d.mark();
        raw_kill(pid, sig);
        let want = format!("{prefix}{name} received and ignored");
        d.expect_line(mark, &want, PATIENCE);
        raw_kill(pid, sig);
        raw_kill(pid, libc::SIGUSR1);
        d.expect_line(mark, &format!("{prefix}stats: "), PATIENCE);
        let n = d.stderr_since(mark).matches(&format!("{want} ")).count();
        if n != 1 {
            d.fail(&format!("{n} lines {want:?} for two {name}, want 1"));
        }
    }
}

for_each_backend!(stray_signals_leave_the_daemon_serving);
/// Every stray signal, twice each, to the one-process daemon: one info line each, still
/// serving; then SIGQUIT: exit 0 at once, a log line, the unix socket file removed and the
/// open client closed.
fn stray_signals_leave_the_daemon_serving(backend: &'static str) {
    let sock = TempSock::new("stray");
    let Some(mut d) = Daemon::with(backend)
        .args(&["--listen", "127.0.0.1:0", "--listen", &sock.listen_arg()])
        .spawn()
    else {
        return;
    };
    let held = d.connect();
    echo_exact(&held, fresh_seed(), 1000, false).unwrap_or_else(|e| d.fail(&e));
    send_strays(&d, d.pid(), "");
    echo_exact(&d.connect(), fresh_seed(), 10_000, true).unwrap_or_else(|e| d.fail(&e));
    echo_exact(&d.connect_unix(), fresh_seed(), 10_000, true).unwrap_or_else(|e| d.fail(&e));
    let mark = d.mark();
    d.signal(Signal::SIGQUIT);
    let st = d.wait_exit(Duration::from_secs(5));
    assert_eq!(st.code(), Some(0), "{}", d.describe());
    d.expect_line(mark, "SIGQUIT received: closing 1 connection", PATIENCE);
    assert!(!sock.0.exists(), "SIGQUIT left the socket file behind");
    assert!(matches!(
        crate::util::client::outcome(&held, PATIENCE),
        crate::util::client::Outcome::Closed
    ));
}

/// With --workers: stray signals to the supervisor, then to one worker: one line each from
/// the process that got them, no worker replaced, everything still served. SIGQUIT to a
/// worker ends that worker alone (it is replaced); SIGQUIT to the supervisor ends all of
/// them at once: exit 0, socket file removed, no worker left.
#[test]
fn stray_signals_leave_the_supervisor_and_workers_serving() {
    let sock = TempSock::new("stray-workers");
    let listen = sock.listen_arg();
    let Some(mut p) = Pool::start(
        "epoll",
        2,
        &["--listen", "127.0.0.1:0", "--listen", &listen],
    ) else {
        return;
    };
    let pids = p.worker_pids();
    send_strays(&p.d, p.pid(), "supervisor: ");
    send_strays(&p.d, pids[0], "worker 1: ");
    assert_eq!(p.worker_pids(), pids, "a worker was replaced");
    for (i, pid) in pids.iter().enumerate() {
        assert!(!is_gone(*pid), "worker {} died", i + 1);
    }
    if p.d.stderr().contains("restarting in") {
        p.d.fail("a worker ended");
    }
    // Worker 2 never got a stray signal: it logged none.
    if p.d.stderr().contains("worker 2: SIG") {
        p.d.fail("a signal sent to worker 1 reached worker 2");
    }
    for _ in 0..10 {
        echo_exact(&p.d.connect(), fresh_seed(), 5000, true).unwrap_or_else(|e| p.d.fail(&e));
    }
    let mark = p.d.mark();
    raw_kill(pids[1], libc::SIGQUIT);
    p.d.expect_line(mark, "worker 2: SIGQUIT received", PATIENCE);
    p.wait_replaced(2, mark, PATIENCE);
    let pids = p.worker_pids();
    let mark = p.d.mark();
    p.d.signal(Signal::SIGQUIT);
    assert_eq!(
        p.d.wait_exit(PATIENCE).code(),
        Some(0),
        "{}",
        p.d.describe()
    );
    p.d.expect_line(mark, "supervisor: SIGQUIT received", PATIENCE);
    assert!(!sock.0.exists(), "SIGQUIT left the socket file behind");
    for pid in pids {
        assert!(is_gone(pid), "worker {pid} outlived the supervisor");
    }
}
