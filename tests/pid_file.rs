//! `--pid-file PATH` (SPEC §12, issue 17): written atomically once every listener accepts
//! (with `--workers`, the supervisor's pid once every worker accepts), a stale file replaced,
//! removed at a SIGTERM exit and never by a worker, an unwritable path one line and exit 1.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::util::{Daemon, TempDir};
use crate::workers::pool::{Pool, PATIENCE};

/// A pid no live process of this test has: what a run killed long ago left behind.
const STALE: &str = "4194304\n";

/// Wait until `path` holds `pid`. Every read on the way must be the stale file or the whole
/// new one: a reader never sees an empty or half-written pid file.
fn wait_for_pid(d: &Daemon, path: &Path, pid: i32) {
    let want = format!("{pid}\n");
    let deadline = Instant::now() + PATIENCE;
    loop {
        match std::fs::read_to_string(path) {
            Ok(text) if text == want => return,
            Ok(text) if text == STALE => {}
            Ok(text) => d.fail(&format!(
                "pid file {} holds {text:?}: neither the stale file nor {want:?}",
                path.display()
            )),
            Err(e) => d.fail(&format!("reading {}: {e}", path.display())),
        }
        if Instant::now() > deadline {
            d.fail(&format!("pid file never held {pid} within {PATIENCE:?}"));
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Nothing but the pid file in `dir`: no temporary file left beside it.
fn only_the_pid_file(d: &Daemon, dir: &TempDir) {
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    if names != ["echo-mux.pid"] {
        d.fail(&format!(
            "want only echo-mux.pid in the directory, got {names:?}"
        ));
    }
}

/// Removed by the exit (checked after the process is reaped, so this is not a race).
fn removed(d: &Daemon, dir: &TempDir) {
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    if !left.is_empty() {
        d.fail(&format!("left behind after exit: {left:?}"));
    }
}

/// One process: its own pid, over a stale file, once listening; gone after SIGTERM.
fn written_once_listening_and_removed_at_exit(backend: &'static str) {
    let dir = TempDir::new("pidfile");
    let path = dir.join("echo-mux.pid");
    std::fs::write(&path, STALE).unwrap();
    let arg = path.to_str().unwrap();
    let Some(mut d) = Daemon::spawn(backend, &["--pid-file", arg]) else {
        return;
    };
    wait_for_pid(&d, &path, d.pid());
    only_the_pid_file(&d, &dir);
    let s = d.connect();
    d.expect_echo(&s, "a client while the pid file is in place");
    drop(s);
    d.terminate(PATIENCE);
    removed(&d, &dir);
}
for_each_backend!(written_once_listening_and_removed_at_exit);

/// `--workers 2`: the supervisor's pid once every worker accepts. A worker that exits (a
/// SIGTERM to it alone, a SIGKILL) leaves the file alone; the supervisor's exit removes it.
fn workers_write_the_supervisor_pid(backend: &'static str) {
    let dir = TempDir::new("pidfile-workers");
    let path = dir.join("echo-mux.pid");
    std::fs::write(&path, STALE).unwrap();
    let arg = path.to_str().unwrap();
    let Some(mut p) = Pool::start(backend, 2, &["--pid-file", arg]) else {
        return;
    };
    wait_for_pid(&p.d, &path, p.pid());
    only_the_pid_file(&p.d, &dir);
    for (k, sig) in [(1, Signal::SIGTERM), (2, Signal::SIGKILL)] {
        let mark = p.d.mark();
        kill(Pid::from_raw(p.worker_pid(k)), sig).unwrap();
        p.wait_replaced(k, mark, PATIENCE);
        wait_for_pid(&p.d, &path, p.pid());
    }
    only_the_pid_file(&p.d, &dir);
    p.d.terminate(PATIENCE);
    removed(&p.d, &dir);
}
for_each_backend!(workers_write_the_supervisor_pid);

/// A path that cannot be written: one line naming it and why, exit 1, before anything is
/// bound or forked, with and without `--workers`; no temporary file left.
#[test]
fn an_unwritable_pid_file_is_one_line_and_exit_1() {
    let dir = TempDir::new("pidfile-bad");
    let missing = dir.join("no-such-dir/echo-mux.pid");
    let cases = [
        (
            missing.to_str().unwrap().to_string(),
            "no such file or directory",
        ),
        (dir.path().to_str().unwrap().to_string(), "is a directory"),
    ];
    for (path, why) in &cases {
        for workers in ["1", "2"] {
            let run = Daemon::with("poll")
                .args(&["--pid-file", path, "--workers", workers])
                .run();
            let want = format!("echo-mux: cannot write the pid file {path}: {why}\n");
            assert!(
                run.status.code() == Some(1) && run.stderr == want,
                "want exit 1 and {want:?}{}",
                run.describe()
            );
        }
    }
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
