//! File descriptors (SPEC §1, §4): running out of them on accept, select's FD_SETSIZE,
//! and the soft RLIMIT_NOFILE raised at start.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::util::client::{self, outcome, ping, Outcome};
use crate::util::Daemon;

for_each_backend!(fd_exhaustion_does_not_spin);
/// Under RLIMIT_NOFILE 64 the daemon runs out of descriptors on accept. It must not spin
/// (under 0.5 s of CPU in 1 s of exhaustion) nor flood the log, must keep serving the
/// open connections, and must serve new clients again once some leave.
fn fd_exhaustion_does_not_spin(backend: &'static str) {
    let Some(d) = Daemon::with(backend).nofile(64).spawn() else {
        return;
    };
    let (mut served, mut waiting, mut shed) = (Vec::new(), Vec::new(), 0);
    while served.len() < 200 && shed < 3 && waiting.is_empty() {
        let Ok(s) = client::connect(d.addr()) else {
            break;
        };
        let _ = (&s).write_all(b"?");
        // Silent ends the loop (the normal end: this one waits in the backlog), so the
        // wait is generous: a busy machine's slow echo must not end it early.
        match outcome(&s, Duration::from_secs(5)) {
            Outcome::Data(b) if b == b"?" => served.push(s),
            Outcome::Data(b) => d.fail(&format!("unexpected echo {b:?}")),
            Outcome::Closed => shed += 1,
            Outcome::Silent => waiting.push(s),
        }
    }
    if !(30..64).contains(&served.len()) {
        d.fail(&format!(
            "{} clients served under a limit of 64 descriptors",
            served.len()
        ));
    }
    // More pressure: these wait in the backlog or are shed.
    waiting.extend((0..10).filter_map(|_| client::connect(d.addr()).ok()));
    let mark = d.mark();
    let burned = d.cpu_burned(Duration::from_secs(1));
    if burned > Duration::from_millis(500) {
        d.fail(&format!(
            "{burned:?} of CPU in 1 s while out of descriptors: the loop spins"
        ));
    }
    let logged = d.stderr_since(mark).lines().count();
    if logged > 5 {
        d.fail(&format!(
            "{logged} log lines in 1 s while out of descriptors; want one per burst"
        ));
    }
    for s in [0, served.len() - 1] {
        ping(&mut served[s], b"alive")
            .unwrap_or_else(|e| d.fail(&format!("open client {s} while out of descriptors: {e}")));
    }
    drop(waiting);
    served.truncate(served.len() - 10);
    if !d.serves_new_client() {
        d.fail("10 descriptors freed, but a new client is not served within 20 s");
    }
    for s in &mut served {
        ping(s, b"after").unwrap_or_else(|e| d.fail(&format!("an old client after recovery: {e}")));
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

/// select cannot watch descriptors >= 1024: with 1100 clients, those whose descriptor is
/// too large are closed at accept with a warning, all the others echo, and once some leave
/// new clients are served again.
#[test]
fn select_closes_descriptors_beyond_fd_setsize() {
    const N: usize = 1100;
    if crate::util::lift_nofile() < 4096 {
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
    // The warning may still be on its way through the pipe: wait for it, bounded.
    let deadline = Instant::now() + Duration::from_secs(15);
    let warned = loop {
        let warned = d
            .stderr_since(mark)
            .lines()
            .any(|l| l.to_ascii_lowercase().contains("warn") && l.contains("select"));
        if warned || Instant::now() >= deadline {
            break warned;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if !warned {
        d.fail("no warning mentioning select for the connections over FD_SETSIZE");
    }
    for s in served.iter_mut().step_by(97) {
        ping(s, b"again").unwrap_or_else(|e| d.fail(&format!("a served client, later: {e}")));
    }
    served.truncate(served.len() - 100);
    if !d.serves_new_client() {
        d.fail("100 low descriptors freed, but a new client is not served");
    }
}
