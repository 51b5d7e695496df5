//! Reload with `--workers` (SIGHUP, issue 18): every worker in turn, then the supervisor, each
//! keeping its pid and its connections; SIGHUP to one worker; SIGTERM during a reload; two
//! SIGHUPs back to back; SIGHUP during a drain; a refused reload; a worker killed mid-reload.
//! Every wait is for a log line, a stats field or a process state, with a deadline.

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpStream;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::util::client::{echo_exact, fresh_seed, ping};
use crate::util::stream::Streams;
use crate::util::{Daemon, TempDir, BIN};
use crate::workers::pool::{children, is_gone, owner, Pool, PATIENCE};

/// Longest wait for one whole reload (a check child and an exec per process, 4 workers and
/// the supervisor, on a loaded 2-core machine).
const RELOAD_PATIENCE: Duration = Duration::from_secs(60);
/// The supervisor's line once its new image has adopted everything.
const COMPLETE: &str = "supervisor: reload complete: ";
/// The variable that puts the binary in check mode (src/reload/check.rs).
const CHECK_ENV: &str = "ECHO_MUX_RELOAD_CHECK";

fn signal(pid: i32, sig: Signal) {
    kill(Pid::from_raw(pid), sig).unwrap_or_else(|e| panic!("kill {sig} {pid}: {e}"));
}

/// SIGHUP to the supervisor, and wait for its `reload complete` line; the line.
fn reload(p: &Pool) -> String {
    let mark = p.d.mark();
    p.d.signal(Signal::SIGHUP);
    p.d.expect_line(mark, COMPLETE, RELOAD_PATIENCE)
}

/// How many lines of the whole log contain `needle`.
fn count(d: &Daemon, needle: &str) -> usize {
    d.stderr().lines().filter(|l| l.contains(needle)).count()
}

/// The pids of every live child of `ppid`, sorted.
fn live_children(ppid: i32) -> Vec<i32> {
    let mut v: Vec<i32> = children(ppid)
        .into_iter()
        .filter(|&(_, st)| st != 'Z' && st != 'X')
        .map(|(p, _)| p)
        .collect();
    v.sort_unstable();
    v
}

/// Wait until `ok` holds for worker `k`'s own stats line.
fn worker_stats_until(
    p: &Pool,
    k: usize,
    ok: impl Fn(&HashMap<String, u64>) -> bool,
) -> HashMap<String, u64> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let s = p.worker_stats(k);
        if ok(&s) {
            return s;
        }
        if Instant::now() > deadline {
            p.d.fail(&format!("worker {k}'s stats never matched: last {s:?}"));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// A copy of the binary under test in a fresh directory, so a test can put something else
/// at the path the daemon was started from. `path` is where the daemon starts from; `real`
/// keeps the real binary.
struct Binary {
    dir: TempDir,
    path: PathBuf,
    real: PathBuf,
}

impl Binary {
    fn new(tag: &str) -> Binary {
        let dir = TempDir::new(tag);
        let (path, real) = (dir.join("echo-mux"), dir.join("echo-mux.real"));
        copy(std::path::Path::new(BIN), &real);
        copy(std::path::Path::new(BIN), &path);
        Binary { dir, path, real }
    }

    /// Replace the started path with a shell script: `check` runs in check mode, then the
    /// real binary either way (unless `check` exits).
    fn script(&self, check: &str) {
        self.script_with(check, ":");
    }

    /// The started path becomes a script whose first check (the supervisor's) says yes at
    /// once and whose later checks (the workers') wait until [`Binary::open_gate`], at most
    /// 20 s (the daemon gives a check 10 s). The test then acts while worker 1's reload is
    /// surely under way, however late its thread runs, rather than within a sleep's length.
    fn script_gated(&self) {
        let (first, gate) = (self.dir.join("first-check"), self.dir.join("gate"));
        let _ = std::fs::remove_file(&first);
        let _ = std::fs::remove_file(&gate);
        self.script(&format!(
            "if [ -e {first} ]; then\n  n=0\n  while [ ! -e {gate} ] && [ $n -lt 400 ]; do sleep 0.05; n=$((n+1)); done\nelse\n  : > {first}\nfi",
            first = first.display(),
            gate = gate.display()
        ));
    }

    /// Let every check of [`Binary::script_gated`] that waits (and every later one) answer.
    fn open_gate(&self) {
        std::fs::write(self.dir.join("gate"), b"").unwrap();
    }

    /// [`Binary::script`], with `before` run first outside check mode (a slow start).
    fn script_with(&self, check: &str, before: &str) {
        let tmp = self.dir.join("next");
        let text = format!(
            "#!/bin/sh\nif [ -n \"${CHECK_ENV}\" ]; then\n{check}\nelse\n{before}\nfi\nexec {} \"$@\"\n",
            self.real.display()
        );
        let src = self.dir.join("next.src");
        let _ = std::fs::remove_file(&src);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o755)
            .open(&src)
            .unwrap();
        file.write_all(text.as_bytes()).unwrap();
        drop(file);
        let _ = std::fs::remove_file(&tmp);
        copy(&src, &tmp);
        std::fs::rename(&tmp, &self.path).unwrap();
    }

    fn start(&self, backend: &'static str, n: usize) -> Option<Pool> {
        let n_arg = n.to_string();
        let d = Daemon::with(backend)
            .program(&self.path)
            .args(&["--workers", &n_arg])
            .expect_listeners(n)
            .spawn()?;
        d.expect_line(0, &format!("all {n} workers are accepting"), PATIENCE);
        Some(Pool { d, n })
    }
}

/// Copy `from` to `to` with cp(1), so that the new file is never open for writing in this
/// test process: a child another test forks meanwhile would inherit that descriptor until its
/// exec, and an execve of the file then fails with ETXTBSY ("text file busy").
fn copy(from: &std::path::Path, to: &std::path::Path) {
    let status = std::process::Command::new("cp")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success(), "cp {} {}", from.display(), to.display());
}

/// Clients (echoed once) until worker `k` serves one; that one.
fn client_on(p: &Pool, k: usize) -> TcpStream {
    let pids = p.worker_pids();
    for _ in 0..200 {
        let s = p.d.connect();
        ping(&s, b"hello").unwrap_or_else(|e| p.d.fail(&format!("ping: {e}")));
        if owner(&s, &pids) == Some(pids[k - 1]) {
            return s;
        }
    }
    p.d.fail(&format!("200 connections did not reach worker {k}"))
}

/// The supervisor's pid, every worker's pid and the set of its live children are as before.
fn same_processes(p: &Pool, workers: &[i32]) {
    assert!(!is_gone(p.pid()), "the supervisor is gone");
    assert_eq!(p.worker_pids(), workers, "a worker was replaced");
    let mut sorted = workers.to_vec();
    sorted.sort_unstable();
    assert_eq!(live_children(p.pid()), sorted, "the supervisor's children");
}

for_each_backend!(streams_survive_reloads_with_workers);
/// `--workers 4`, six clients streaming varied sizes pipelined and one slow reader with
/// output pending in its worker, across 10 reloads in a row: every byte back in order, no
/// reset; the supervisor's and the workers' pids unchanged; `accepted` not reset;
/// `reloads=10` in the totals and in every worker's own line.
fn streams_survive_reloads_with_workers(backend: &'static str) {
    const RELOADS: u64 = 10;
    let Some(p) = Pool::start(backend, 4, &[]) else {
        return;
    };
    let workers = p.worker_pids();
    let streams = Streams::start(p.d.addr(), 6, 1);
    let mut took = Vec::new();
    for _ in 0..RELOADS {
        // Data is flowing before each reload.
        let sent = streams.sent();
        let deadline = Instant::now() + PATIENCE;
        while streams.sent() < sent + 64 * 1024 {
            assert!(Instant::now() < deadline, "the streams stalled");
            thread::sleep(Duration::from_millis(5));
        }
        let line = reload(&p);
        took.push(line);
    }
    let accepted = p.totals()["accepted"];
    let total = streams.finish().unwrap_or_else(|e| p.d.fail(&e));
    println!(
        "{total} bytes echoed across {RELOADS} reloads; last: {:?}",
        took.last()
    );
    same_processes(&p, &workers);
    let t = p.totals_until(|t| t["open"] == 0);
    assert!(t["accepted"] >= accepted && accepted >= 7, "{t:?}");
    assert_eq!(t.get("reloads"), Some(&RELOADS), "{t:?}");
    for k in 1..=4 {
        let s = p.worker_stats(k);
        assert_eq!(s.get("reloads"), Some(&RELOADS), "worker {k}: {s:?}");
    }
    let log = p.d.stderr();
    assert!(
        !log.contains("wedged"),
        "a worker was judged wedged:\n{log}"
    );
    assert!(!log.contains("restarting"), "a worker was replaced:\n{log}");
}

for_each_backend!(hammer_passes_across_reloads_with_workers);
/// `scripts/hammer.sh` (parallel netcat clients, SHA-256 compared) against `--workers 4`
/// while the daemon reloads three times: 0 failures.
fn hammer_passes_across_reloads_with_workers(backend: &'static str) {
    let Some(p) = Pool::start(backend, 4, &[]) else {
        return;
    };
    let port = p.d.addr().port().to_string();
    let script = format!("{}/scripts/hammer.sh", env!("CARGO_MANIFEST_DIR"));
    let hammer = std::process::Command::new("timeout")
        .args(["--kill-after=5", "180", &script, "--port", &port])
        .args(["--clients", "12", "--bytes", "200000", "--rounds", "6"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut reloads = 0;
    while reloads < 3 {
        reload(&p);
        reloads += 1;
    }
    let out = hammer.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() || !text.contains("72 passed, 0 failed") {
        p.d.fail(&format!("hammer.sh failed ({}):\n{text}", out.status));
    }
}

for_each_backend!(sighup_to_one_worker_reloads_it_alone);
/// SIGHUP sent to worker 2 rather than the supervisor: worker 2 reloads itself alone (same
/// pid, its connection goes on), the other worker and the supervisor do not.
fn sighup_to_one_worker_reloads_it_alone(backend: &'static str) {
    let Some(p) = Pool::start(backend, 2, &[]) else {
        return;
    };
    let workers = p.worker_pids();
    let s = client_on(&p, 2);
    let mark = p.d.mark();
    signal(workers[1], Signal::SIGHUP);
    worker_stats_until(&p, 2, |s| s.get("reloads") == Some(&1));
    echo_exact(&s, fresh_seed(), 300_000, false).unwrap_or_else(|e| p.d.fail(&e));
    same_processes(&p, &workers);
    let w1 = p.worker_stats(1);
    assert_eq!(w1.get("reloads").copied().unwrap_or(0), 0, "{w1:?}");
    let t = p.totals();
    assert_eq!(t.get("reloads").copied().unwrap_or(0), 0, "{t:?}");
    assert!(!p.d.stderr_since(mark).contains(COMPLETE));
}

for_each_backend!(sigterm_during_a_workers_reload_drains_every_worker);
/// SIGTERM to the supervisor while worker 1's reload waits for its (slow) check child:
/// the reload stops, every worker drains (a client of each gets its echo), exit 0, and no
/// worker is left behind.
fn sigterm_during_a_workers_reload_drains_every_worker(backend: &'static str) {
    let bin = Binary::new("reload-term");
    let Some(mut p) = bin.start(backend, 2) else {
        return;
    };
    let workers = p.worker_pids();
    let clients = [client_on(&p, 1), client_on(&p, 2)];
    // The supervisor's check says yes; worker 1's waits for the gate, which stays shut.
    bin.script_gated();
    p.d.signal(Signal::SIGHUP);
    wait_for(&p, "worker 1's check child", || {
        !live_children(workers[0]).is_empty()
    });
    let mark = p.d.mark();
    p.d.signal(Signal::SIGTERM);
    p.d.expect_line(mark, "during a reload", PATIENCE);
    bin.open_gate();
    for s in &clients {
        let mut w = s;
        w.write_all(b"last words").unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let got = crate::util::client::read_n(&mut &*s, 10, Instant::now()).0;
        assert_eq!(got, b"last words", "a draining worker's client");
    }
    let status = p.d.wait_exit(RELOAD_PATIENCE);
    assert_eq!(status.code(), Some(0), "{}", p.d.describe());
    for pid in workers {
        wait_for(&p, "every worker gone", || is_gone(pid));
    }
}

for_each_backend!(sigterm_during_the_supervisors_check_drains_every_worker);
/// SIGTERM while the supervisor's own check child runs: nothing was reloaded, the check is
/// stopped, every worker drains and the daemon exits 0.
fn sigterm_during_the_supervisors_check_drains_every_worker(backend: &'static str) {
    let bin = Binary::new("check-term");
    let Some(mut p) = bin.start(backend, 2) else {
        return;
    };
    let workers = p.worker_pids();
    bin.script("exec sleep 30");
    p.d.signal(Signal::SIGHUP);
    wait_for(&p, "the supervisor's check child", || {
        live_children(p.pid()).len() > workers.len()
    });
    let mark = p.d.mark();
    p.d.signal(Signal::SIGTERM);
    p.d.expect_line(mark, "during a reload's check", PATIENCE);
    let status = p.d.wait_exit(RELOAD_PATIENCE);
    assert_eq!(status.code(), Some(0), "{}", p.d.describe());
    for pid in workers {
        wait_for(&p, "every worker gone", || is_gone(pid));
    }
    assert_eq!(count(&p.d, "reloaded in"), 0, "no worker was reloaded");
}

for_each_backend!(two_sighups_back_to_back_are_two_reloads_one_at_a_time);
/// A second SIGHUP while a reload runs queues one more: two `reload complete` lines, each
/// worker reloaded exactly twice, one after the other (never two of one worker at once).
fn two_sighups_back_to_back_are_two_reloads_one_at_a_time(backend: &'static str) {
    let bin = Binary::new("reload-twice");
    let Some(p) = bin.start(backend, 3) else {
        return;
    };
    let workers = p.worker_pids();
    // Worker 1's check waits for the gate, so the second SIGHUP surely lands inside the
    // first reload however late this thread runs.
    bin.script_gated();
    let s = p.d.connect();
    ping(&s, b"before").unwrap();
    let mark = p.d.mark();
    p.d.signal(Signal::SIGHUP);
    p.d.expect_line(mark, "reloading: 3 workers", RELOAD_PATIENCE);
    p.d.signal(Signal::SIGHUP);
    p.d.signal(Signal::SIGHUP);
    p.d.expect_line(mark, "one more reload follows", PATIENCE);
    bin.open_gate();
    let deadline = Instant::now() + 2 * RELOAD_PATIENCE;
    while count(&p.d, COMPLETE) < 2 {
        assert!(Instant::now() < deadline, "{}", p.d.describe());
        thread::sleep(Duration::from_millis(20));
    }
    ping(&s, b"after").unwrap_or_else(|e| p.d.fail(&format!("ping: {e}")));
    same_processes(&p, &workers);
    let t = p.totals();
    assert_eq!(t.get("reloads"), Some(&2), "{t:?}");
    // The supervisor's lines show one worker at a time, each worker twice.
    let log = p.d.stderr_since(mark);
    let order: Vec<usize> = log
        .lines()
        .filter(|l| l.contains(" reloaded in "))
        .filter_map(|l| {
            l.split_once("supervisor: worker ")?
                .1
                .split_once(" (pid ")?
                .0
                .parse()
                .ok()
        })
        .collect();
    assert_eq!(order, [1, 2, 3, 1, 2, 3], "{log}");
    for k in 1..=3 {
        let s = p.worker_stats(k);
        assert_eq!(s.get("reloads"), Some(&2), "worker {k}: {s:?}");
    }
}

for_each_backend!(sighup_during_a_drain_is_refused);
/// SIGHUP to the supervisor (and to a worker) during a drain: refused with one line; the
/// held client is still echoed and the daemon exits 0 once it leaves.
fn sighup_during_a_drain_is_refused(backend: &'static str) {
    let Some(mut p) = Pool::start(backend, 2, &[]) else {
        return;
    };
    let workers = p.worker_pids();
    let s = client_on(&p, 1);
    let mark = p.d.mark();
    p.d.signal(Signal::SIGTERM);
    p.d.expect_line(mark, "stopping 2 workers", PATIENCE);
    p.d.signal(Signal::SIGHUP);
    p.d.expect_line(mark, "supervisor: reload refused: draining", PATIENCE);
    signal(workers[0], Signal::SIGHUP);
    p.d.expect_line(mark, "worker 1: reload refused", PATIENCE);
    ping(&s, b"still here").unwrap_or_else(|e| p.d.fail(&format!("ping: {e}")));
    drop(s);
    let status = p.d.wait_exit(RELOAD_PATIENCE);
    assert_eq!(status.code(), Some(0), "{}", p.d.describe());
    assert_eq!(count(&p.d, "reload refused"), 2, "{}", p.d.describe());
    assert_eq!(count(&p.d, "reloaded in"), 0);
}

for_each_backend!(a_refused_check_changes_nothing_with_workers);
/// The binary at the started path now exits 1 in check mode: one `reload refused` line, no
/// worker touched, every client served as before; the next good reload works.
fn a_refused_check_changes_nothing_with_workers(backend: &'static str) {
    let bin = Binary::new("refuse");
    let Some(p) = bin.start(backend, 3) else {
        return;
    };
    let workers = p.worker_pids();
    let streams = Streams::start(p.d.addr(), 4, 0);
    bin.script("echo 'echo-mux: not today' >&2; exit 1");
    let mark = p.d.mark();
    p.d.signal(Signal::SIGHUP);
    let line = p.d.expect_line(mark, "reload refused: ", RELOAD_PATIENCE);
    assert!(line.contains("not today"), "{line}");
    // The refusal is one line, and no worker was asked to reload.
    ping(&p.d.connect(), b"new client").unwrap();
    for k in 1..=3 {
        let s = p.worker_stats(k);
        assert_eq!(
            s.get("reloads").copied().unwrap_or(0),
            0,
            "worker {k}: {s:?}"
        );
    }
    let since = p.d.stderr_since(mark);
    assert_eq!(since.matches("reload refused").count(), 1, "{since}");
    assert!(
        !since.contains("reloaded in") && !since.contains(COMPLETE),
        "{since}"
    );
    same_processes(&p, &workers);
    // With a good binary there again, the next reload goes through.
    bin.script(":");
    reload(&p);
    streams.finish().unwrap_or_else(|e| p.d.fail(&e));
    same_processes(&p, &workers);
}

for_each_backend!(a_worker_killed_during_its_reload_is_replaced);
/// Worker 1 is killed with SIGKILL while its reload waits for its (slow) check child: it is
/// replaced as usual, the reload goes on with the other workers and the supervisor, and
/// says so; every worker serves afterwards.
fn a_worker_killed_during_its_reload_is_replaced(backend: &'static str) {
    let bin = Binary::new("reload-kill");
    let Some(p) = bin.start(backend, 2) else {
        return;
    };
    let workers = p.worker_pids();
    let other = client_on(&p, 2);
    // Worker 1's check waits for the gate: it is killed while its reload is surely under way.
    bin.script_gated();
    let mark = p.d.mark();
    p.d.signal(Signal::SIGHUP);
    wait_for(&p, "worker 1's check child", || {
        !live_children(workers[0]).is_empty()
    });
    signal(workers[0], Signal::SIGKILL);
    wait_for(&p, "worker 1 gone", || is_gone(workers[0]));
    bin.open_gate();
    let line = p.d.expect_line(mark, COMPLETE, RELOAD_PATIENCE);
    assert!(line.contains("1 replaced on the way"), "{line}");
    p.d.expect_line(mark, "ended during its reload", PATIENCE);
    let new = p.wait_replaced(1, mark, PATIENCE);
    assert_ne!(new, workers[0]);
    ping(&other, b"worker 2's client").unwrap_or_else(|e| p.d.fail(&format!("ping: {e}")));
    assert_eq!(p.worker_pid(2), workers[1]);
    let w2 = worker_stats_until(&p, 2, |s| s.get("reloads") == Some(&1));
    assert_eq!(w2["worker"], 2);
    assert!(p.d.serves_new_client());
}

/// Wait (with [`PATIENCE`]) for `ok`, failing with `what`.
fn wait_for(p: &Pool, what: &str, ok: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !ok() {
        if Instant::now() > deadline {
            p.d.fail(&format!("never saw {what}"));
        }
        thread::sleep(Duration::from_millis(5));
    }
}

for_each_backend!(systemd_sees_reloading_then_ready_from_the_same_supervisor);
/// With NOTIFY_SOCKET: a reload with workers is `RELOADING=1` with `MONOTONIC_USEC=` at
/// its start and `READY=1` once the supervisor's new image is up (so its notify socket and
/// watchdog settings went along); the main pid is the same process throughout, and the
/// workers never got the variable.
fn systemd_sees_reloading_then_ready_from_the_same_supervisor(backend: &'static str) {
    let dir = TempDir::new("reload-notify");
    let path = dir.join("notify");
    let rx = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let Some(d) = Daemon::with(backend)
        .args(&["--workers", "2"])
        .notify_socket(&path.to_string_lossy())
        .expect_listeners(2)
        .spawn()
    else {
        return;
    };
    let p = Pool { d, n: 2 };
    let mut got: Vec<String> = Vec::new();
    let mut wait_for = |pred: &dyn Fn(&str) -> bool, what: &str| {
        let deadline = Instant::now() + RELOAD_PATIENCE;
        loop {
            let mut buf = [0u8; 4096];
            if let Ok(n) = rx.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                got.push(msg.clone());
                if pred(&msg) {
                    return msg;
                }
            }
            if Instant::now() > deadline {
                p.d.fail(&format!("no {what} on NOTIFY_SOCKET; got {got:?}"));
            }
        }
    };
    wait_for(&|m| m.lines().any(|l| l == "READY=1"), "first READY=1");
    // The datagram can overtake stderr: the test's reader of the pipe may not have taken
    // the supervisor's `worker K started (pid P)` lines yet, which the worker pids are read
    // from. The supervisor logs this line after them and before READY=1: wait for it.
    p.d.expect_line(0, "all 2 workers are accepting", PATIENCE);
    let supervisor = p.pid();
    let workers = p.worker_pids();
    p.d.signal(Signal::SIGHUP);
    let reloading = wait_for(&|m| m.contains("RELOADING=1"), "RELOADING=1");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading:?}");
    wait_for(
        &|m| m.lines().any(|l| l == "READY=1"),
        "READY=1 after the reload",
    );
    p.d.expect_line(0, COMPLETE, PATIENCE);
    assert_eq!(p.pid(), supervisor);
    same_processes(&p, &workers);
    for pid in workers {
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let env = String::from_utf8_lossy(&env);
        assert!(
            !env.contains("NOTIFY_SOCKET="),
            "worker {pid} has NOTIFY_SOCKET"
        );
    }
}

for_each_backend!(metrics_go_on_across_a_reload_with_workers);
/// `--metrics` with workers: the supervisor's metrics listener is handed over (same address,
/// never refused), the totals and per-worker series go on (not reset), the start time is
/// the same, no worker counts a restart, and `echo_mux_reloads_total` is 1.
fn metrics_go_on_across_a_reload_with_workers(backend: &'static str) {
    let Some(p) = Pool::start(backend, 2, &["--metrics", "127.0.0.1:0"]) else {
        return;
    };
    let addr = crate::metrics::metrics_addr(&p.d);
    let held: Vec<TcpStream> = (0..8)
        .map(|_| {
            let s = p.d.connect();
            ping(&s, b"counted").unwrap();
            s
        })
        .collect();
    let before =
        crate::metrics::scrape_until(&addr, |m| m["echo_mux_connections_accepted_total"] == 8.0);
    reload(&p);
    let after = crate::metrics::scrape_until(&addr, |m| m["echo_mux_reloads_total"] == 1.0);
    for key in [
        "echo_mux_connections_accepted_total",
        "echo_mux_connections_open",
        "echo_mux_received_bytes_total",
        "echo_mux_start_time_seconds",
        "echo_mux_worker_restarts_total{worker=\"1\"}",
        "echo_mux_worker_restarts_total{worker=\"2\"}",
        "echo_mux_worker_connections_accepted_total{worker=\"1\"}",
    ] {
        assert_eq!(after.get(key), before.get(key), "{key}");
    }
    for s in &held {
        ping(s, b"still").unwrap_or_else(|e| p.d.fail(&format!("ping: {e}")));
    }
}

for_each_backend!(the_per_source_table_goes_on_across_a_reload_with_workers);
/// `--workers 2 --max-per-source 3`: three connections from 127.0.0.2 held across a reload
/// still count (the fourth is refused after it), 127.0.0.3 is served, and once one of the
/// three closes, 127.0.0.2 is served again: the workers' new images share the same table.
fn the_per_source_table_goes_on_across_a_reload_with_workers(backend: &'static str) {
    use crate::access::{connect_from, ip, served};
    let Some(p) = Pool::start(backend, 2, &["--max-per-source", "3"]) else {
        return;
    };
    let mut held: Vec<TcpStream> = (0..3)
        .map(|_| {
            let s = connect_from(&p.d, ip("127.0.0.2")).unwrap();
            assert!(served(&p.d, &s), "one of the first three was refused");
            s
        })
        .collect();
    reload(&p);
    for _ in 0..4 {
        let s = connect_from(&p.d, ip("127.0.0.2")).unwrap();
        assert!(
            !served(&p.d, &s),
            "a fourth connection was served after the reload"
        );
    }
    let other = connect_from(&p.d, ip("127.0.0.3")).unwrap();
    assert!(served(&p.d, &other));
    for s in &held {
        ping(s, b"held").unwrap_or_else(|e| p.d.fail(&format!("ping: {e}")));
    }
    drop(held.pop());
    let deadline = Instant::now() + PATIENCE;
    loop {
        let s = connect_from(&p.d, ip("127.0.0.2")).unwrap();
        if served(&p.d, &s) {
            break;
        }
        assert!(Instant::now() < deadline, "127.0.0.2 is still refused");
        thread::sleep(Duration::from_millis(50));
    }
}

for_each_backend!(udp_is_answered_across_a_reload_with_workers);
/// A UDP listener beside the TCP one under `--workers 2`: answered before and after a
/// reload, and the datagram counters go on.
fn udp_is_answered_across_a_reload_with_workers(backend: &'static str) {
    let args = ["--listen", "127.0.0.1:0", "--listen", "udp:127.0.0.1:0"];
    let Some(p) = Pool::start(backend, 2, &args) else {
        return;
    };
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let to = p.d.udp_addr();
    let ask = |payload: &[u8]| {
        let deadline = Instant::now() + PATIENCE;
        let mut buf = [0u8; 2048];
        loop {
            sock.send_to(payload, to).unwrap();
            // An earlier question's late second answer (after a resend) is skipped.
            while let Ok(n) = sock.recv(&mut buf) {
                if &buf[..n] == payload {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "no UDP answer");
        }
    };
    ask(b"before");
    let t = p.totals_until(|t| t["datagrams_out"] >= 1);
    reload(&p);
    ask(b"after");
    let after = p.totals_until(|a| a["datagrams_out"] > t["datagrams_out"]);
    assert!(after["datagrams_in"] > t["datagrams_in"], "{after:?}");
    assert_eq!(after.get("reloads"), Some(&1), "{after:?}");
}

for_each_backend!(a_unix_listener_and_the_pid_file_are_kept_then_removed_at_exit);
/// A unix listener and `--pid-file` under `--workers 2`: a client connected before the
/// reload is echoed after it, new clients are served, the pid file still names the
/// supervisor, and the supervisor's new image removes both files when it exits.
fn a_unix_listener_and_the_pid_file_are_kept_then_removed_at_exit(backend: &'static str) {
    let sock = crate::util::TempSock::new("reload-workers");
    let listen = sock.listen_arg();
    let dir = TempDir::new("reload-pid");
    let pid_file = dir.join("echo-mux.pid");
    let pid_arg = pid_file.to_string_lossy().into_owned();
    let Some(mut p) = Pool::start(backend, 2, &["--listen", &listen, "--pid-file", &pid_arg])
    else {
        return;
    };
    let named = || std::fs::read_to_string(&pid_file).unwrap_or_default();
    // Published right after the `all 2 workers are accepting` line.
    wait_for(&p, "the pid file", || named().trim() == p.pid().to_string());
    let before = p.d.connect_unix();
    ping(&before, b"before").unwrap();
    reload(&p);
    ping(&before, b"after").unwrap_or_else(|e| p.d.fail(&format!("ping: {e}")));
    ping(&p.d.connect_unix(), b"new").unwrap_or_else(|e| p.d.fail(&format!("ping: {e}")));
    assert!(sock.0.exists());
    assert_eq!(
        named().trim(),
        p.pid().to_string(),
        "the pid file after the reload"
    );
    drop(before);
    p.d.signal(Signal::SIGTERM);
    assert_eq!(p.d.wait_exit(RELOAD_PATIENCE).code(), Some(0));
    assert!(!sock.0.exists(), "the socket file outlived the daemon");
    assert!(!pid_file.exists(), "the pid file outlived the daemon");
}

for_each_backend!(an_inherited_listener_is_kept_across_a_reload_with_workers);
/// A socket handed in by systemd (LISTEN_FDS), shared by both workers: kept across the
/// reload (never closed, so nothing queued is lost), and both workers go on accepting on it.
fn an_inherited_listener_is_kept_across_a_reload_with_workers(backend: &'static str) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let Some(d) = Daemon::with(backend)
        .args(&["--workers", "2"])
        .inherit(vec![std::os::fd::OwnedFd::from(l)])
        .expect_listeners(2)
        .spawn()
    else {
        return;
    };
    d.expect_line(0, "all 2 workers are accepting", PATIENCE);
    let p = Pool { d, n: 2 };
    let before = p.d.connect();
    ping(&before, b"before").unwrap();
    reload(&p);
    ping(&before, b"after").unwrap_or_else(|e| p.d.fail(&format!("ping: {e}")));
    let clients: Vec<TcpStream> = (0..20)
        .map(|_| {
            let s = p.d.connect();
            ping(&s, b"new").unwrap_or_else(|e| p.d.fail(&format!("ping: {e}")));
            s
        })
        .collect();
    let t = p.totals_until(|t| t["accepted"] == 21);
    assert_eq!(t.get("reloads"), Some(&1), "{t:?}");
    drop(clients);
}

for_each_backend!(a_worker_replaced_after_a_reload_starts_as_any_worker);
/// A worker that dies after a reload is replaced by the supervisor's new image: the
/// replacement logs its `listening on` line as every worker's start does (it adopted
/// nothing: a reload's new supervisor must not make its fresh workers' start quiet), and
/// serves.
fn a_worker_replaced_after_a_reload_starts_as_any_worker(backend: &'static str) {
    let Some(p) = Pool::start(backend, 2, &[]) else {
        return;
    };
    let workers = p.worker_pids();
    reload(&p);
    let mark = p.d.mark();
    signal(workers[0], Signal::SIGKILL);
    let new = p.wait_replaced(1, mark, PATIENCE);
    assert_ne!(new, workers[0]);
    let s = client_on(&p, 1);
    ping(&s, b"the replacement").unwrap_or_else(|e| p.d.fail(&format!("ping: {e}")));
}

/// A new image that takes 6 s to start (the binary at the started path sleeps before it
/// executes the real one): longer than the 5 s after which a silent worker is wedged, but a
/// worker whose reload is under way is not judged wedged; every worker and the supervisor
/// come back with the same pids. (Backend-independent: the supervisor's judgement.)
#[test]
fn a_slow_new_image_is_not_judged_wedged() {
    let _watchdog = crate::util::Watchdog::new(
        "a_slow_new_image_is_not_judged_wedged",
        crate::util::TEST_LIMIT,
    );
    let bin = Binary::new("reload-slow");
    let Some(p) = bin.start("epoll", 2) else {
        return;
    };
    let workers = p.worker_pids();
    let held = p.d.connect();
    ping(&held, b"before").unwrap();
    bin.script_with(":", "sleep 6");
    let line = reload(&p);
    assert!(!p.d.stderr().contains("wedged"), "{}", p.d.describe());
    same_processes(&p, &workers);
    ping(&held, b"after").unwrap_or_else(|e| p.d.fail(&format!("ping: {e}")));
    println!("{line}");
}
