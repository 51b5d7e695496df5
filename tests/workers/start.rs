//! Starting (or not): bad `--workers` values, bind errors before any fork, a second
//! instance on the same port, `--workers 1` and `auto`, and the shipped unit.

use crate::util::{run, Daemon};

use super::pool::{children, Pool, PATIENCE};

#[test]
fn bad_worker_counts_are_usage_errors() {
    for bad in ["0", "-1", "two", "", "1.5", "99999"] {
        let r = run(&["--workers", bad, "--listen", "127.0.0.1:0"]);
        let line = format!("echo-mux: invalid value '{bad}' for '--workers'");
        assert_eq!(r.status.code(), Some(2), "{}", r.describe());
        assert!(r.stderr.starts_with(&line), "{}", r.describe());
        assert_eq!(r.stderr.lines().count(), 1, "{}", r.describe());
    }
}

/// A listener that cannot be bound ends the supervisor with exit 1 before any fork.
#[test]
fn a_bind_error_starts_no_worker() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let r = run(&[
        "--workers",
        "2",
        "--listen",
        "127.0.0.1:0",
        "--listen",
        &addr,
    ]);
    assert_eq!(r.status.code(), Some(1), "{}", r.describe());
    assert!(
        r.stderr.contains("address already in use"),
        "{}",
        r.describe()
    );
    assert!(!r.stderr.contains("started (pid"), "{}", r.describe());
}

/// A second supervisor on a port the first one serves fails ("address already in use")
/// instead of joining its SO_REUSEPORT group and taking half its clients.
#[test]
fn a_second_instance_cannot_join_the_group() {
    let Some(p) = Pool::start("epoll", 2, &[]) else {
        return;
    };
    let addr = p.d.addr().to_string();
    let r = run(&["--workers", "2", "--listen", &addr]);
    assert_eq!(r.status.code(), Some(1), "{}", r.describe());
    assert!(
        r.stderr.contains("address already in use"),
        "{}",
        r.describe()
    );
    assert!(p.d.serves_new_client());
}

/// `--workers 1` (and the default) is one process: no supervisor, no child.
#[test]
fn one_worker_is_one_process() {
    let Some(d) = Daemon::spawn("epoll", &["--workers", "1"]) else {
        return;
    };
    assert!(d.serves_new_client());
    assert!(children(d.pid()).is_empty());
    assert!(!d.stderr().contains("supervisor"), "{}", d.stderr());
    let s = d.stats();
    assert!(
        !s.contains_key("workers") && !s.contains_key("worker"),
        "{s:?}"
    );
}

/// `--workers auto` starts one worker per CPU this process may run on.
#[test]
fn auto_is_the_cpu_count() {
    // nproc(1) counts the CPUs in this process's affinity mask, as `auto` does.
    let out = std::process::Command::new("nproc").output().unwrap();
    let cpus: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    if cpus < 2 {
        return println!("note: one CPU here; --workers auto is the one-process daemon");
    }
    let Some(d) = Daemon::spawn("epoll", &["--workers", "auto"]) else {
        return;
    };
    d.expect_line(0, &format!("all {cpus} workers are accepting"), PATIENCE);
    assert_eq!(children(d.pid()).len(), cpus);
}

/// The shipped unit runs one worker per CPU, and systemd's SIGTERM goes to the supervisor
/// alone (`KillMode=mixed`), which forwards it once to each worker.
#[test]
fn the_unit_runs_workers_auto_with_killmode_mixed() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/echo-mux.service"
    ))
    .unwrap();
    let exec = unit.lines().find(|l| l.starts_with("ExecStart=")).unwrap();
    assert!(exec.contains(" --workers auto"), "{exec}");
    assert!(unit.lines().any(|l| l == "KillMode=mixed"), "{unit}");
    assert!(unit.lines().any(|l| l == "NotifyAccess=main"), "{unit}");
}
