//! `--user`/`--group` (SPEC §13, issue 18): bind as root (a port below 1024, a unix socket,
//! the metrics listener), then serve as the user with no supplementary groups, read from
//! /proc/PID/status, never from the daemon's own word. With `--workers`, the supervisor and
//! every worker. An unknown name is a usage error before anything is bound; not being root
//! is one line, exit 1; a process that already runs as the target (what a reload's new
//! image is) starts without any privilege.
//!
//! Switching users needs root: when the suite does not run as root, the tests that need it
//! say so and return.

use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use crate::util::client::ping;
use crate::util::{Daemon, TempDir, TempSock};
use crate::workers::pool::{Pool, PATIENCE};

/// Debian's `nobody` and `nogroup`; by number where the names are missing.
const NOBODY: u32 = 65534;
const NOGROUP: u32 = 65534;

/// The names to pass: the account names if this system has them, else the numbers.
fn nobody_args() -> (String, String) {
    let user = nix::unistd::User::from_name("nobody")
        .ok()
        .flatten()
        .filter(|u| u.uid.as_raw() == NOBODY)
        .map_or_else(|| NOBODY.to_string(), |u| u.name);
    let group = nix::unistd::Group::from_name("nogroup")
        .ok()
        .flatten()
        .filter(|g| g.gid.as_raw() == NOGROUP)
        .map_or_else(|| NOGROUP.to_string(), |g| g.name);
    (user, group)
}

fn is_root(what: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        println!("note: switching users needs root; not testing {what}");
    }
    root
}

/// A port below 1024 on `host` (a loopback address of the test's own) that nothing listens
/// on a moment ago: binding it as root proves the listener was bound before the switch.
fn privileged_addr(host: &str) -> String {
    for port in 900..1024 {
        let addr: SocketAddr = format!("{host}:{port}").parse().unwrap();
        if TcpListener::bind(addr).is_ok() {
            return addr.to_string();
        }
    }
    panic!("no free port below 1024 on {host}");
}

/// The `Uid:`, `Gid:` and `Groups:` lines of /proc/PID/status: real, effective, saved and
/// file-system ids, and the supplementary groups.
fn credentials(pid: i32) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    let field = |name: &str| -> Vec<u32> {
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} line in /proc/{pid}/status"));
        line.split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect()
    };
    (field("Uid:"), field("Gid:"), field("Groups:"))
}

/// A copy of the built binary in `dir` (under the temp dir, mode 755): what nobody can run
/// and a reload can execute again as nobody, wherever the checkout is (a clone under /root,
/// mode 700, is out of nobody's reach).
fn reachable_binary(dir: &TempDir) -> std::path::PathBuf {
    crate::reload::copy_binary(dir)
}

/// Process `pid` runs as nobody:nogroup in every id, with no supplementary group.
fn runs_as_nobody(d: &Daemon, pid: i32, who: &str) {
    let (uid, gid, groups) = credentials(pid);
    if uid != [NOBODY; 4] || gid != [NOGROUP; 4] || !groups.is_empty() {
        d.fail(&format!(
            "{who} (pid {pid}) runs as uids {uid:?}, gids {gid:?}, groups {groups:?}; \
             want {NOBODY} and {NOGROUP} everywhere and no groups"
        ));
    }
}

for_each_backend!(serves_as_the_user_after_binding_a_privileged_port);
/// Root binds a port below 1024, a unix socket and a unix metrics socket, writes the pid
/// file, then runs as nobody:nogroup with no groups and echoes on both listeners. The
/// socket files belong to the user and group (`--socket-mode 0660` is theirs), so the
/// daemon can remove them at exit.
fn serves_as_the_user_after_binding_a_privileged_port(backend: &'static str) {
    if !is_root("--user") {
        return;
    }
    let host = match backend {
        "epoll" => "127.0.0.81",
        "poll" => "127.0.0.82",
        _ => "127.0.0.83",
    };
    let tcp = privileged_addr(host);
    let sock = TempSock::new("user");
    let metrics = TempSock::new("user-metrics");
    let dir = TempDir::new("user-pid");
    let pid_file = dir.join("echo-mux.pid");
    let (user, group) = nobody_args();
    let Some(mut d) = Daemon::with(backend)
        .args(&[
            "-l",
            &tcp,
            "-l",
            &sock.listen_arg(),
            "--metrics",
            &metrics.listen_arg(),
            "--socket-mode",
            "0660",
            "--pid-file",
            pid_file.to_str().unwrap(),
            "--user",
            &user,
            "--group",
            &group,
        ])
        .spawn()
    else {
        return;
    };
    runs_as_nobody(&d, d.pid(), "the daemon");
    d.expect_line(0, "running as user 'nobody' (uid 65534)", PATIENCE);
    if d.addr().port() >= 1024 {
        d.fail(&format!("listening on {}, not below 1024", d.addr()));
    }
    let reply = ping(d.connect(), b"privileged port").unwrap();
    assert_eq!(reply, b"privileged port");
    let reply = ping(d.connect_unix(), b"unix socket").unwrap();
    assert_eq!(reply, b"unix socket");
    for path in [&sock.0, &metrics.0] {
        let meta = std::fs::metadata(path).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        if (meta.uid(), meta.gid(), mode) != (NOBODY, NOGROUP, 0o660) {
            d.fail(&format!(
                "{} is {}:{} mode {mode:o}, want {NOBODY}:{NOGROUP} 660",
                path.display(),
                meta.uid(),
                meta.gid()
            ));
        }
    }
    let written = std::fs::read_to_string(&pid_file).unwrap();
    assert_eq!(written, format!("{}\n", d.pid()), "{}", d.describe());
    d.terminate(PATIENCE);
    for path in [&sock.0, &metrics.0] {
        if path.exists() {
            d.fail(&format!("{} left behind after exit", path.display()));
        }
    }
}

for_each_backend!(workers_and_supervisor_all_run_as_the_user);
/// `--workers 2`: the supervisor switches before it forks, so it and every worker run as
/// nobody:nogroup with no groups, and a worker killed and replaced is born as the user too.
fn workers_and_supervisor_all_run_as_the_user(backend: &'static str) {
    if !is_root("--user with --workers") {
        return;
    }
    let host = match backend {
        "epoll" => "127.0.0.84",
        "poll" => "127.0.0.85",
        _ => "127.0.0.86",
    };
    let tcp = privileged_addr(host);
    let (user, group) = nobody_args();
    let Some(p) = Pool::start(
        backend,
        2,
        &["-l", &tcp, "--user", &user, "--group", &group],
    ) else {
        return;
    };
    runs_as_nobody(&p.d, p.pid(), "the supervisor");
    for (k, pid) in p.worker_pids().into_iter().enumerate() {
        runs_as_nobody(&p.d, pid, &format!("worker {}", k + 1));
    }
    for _ in 0..8 {
        assert_eq!(ping(p.d.connect(), b"w").unwrap(), b"w");
    }
    let mark = p.d.mark();
    let old = p.worker_pid(1);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let new = p.wait_replaced(1, mark, PATIENCE);
    runs_as_nobody(&p.d, new, "the replaced worker 1");
    let mut d = p.d;
    d.terminate(PATIENCE);
}

/// An unknown user or group is a usage error naming it: exit 2, one line, and nothing was
/// bound (the unix socket file was never created). No root needed.
#[test]
fn unknown_user_or_group_is_a_usage_error() {
    let sock = TempSock::new("nouser");
    for (flag, value, what) in [
        ("--user", "no-such-user-echo-mux", "no such user"),
        ("--group", "no-such-group-echo-mux", "no such group"),
    ] {
        let run = Daemon::with("epoll")
            .args(&["-l", &sock.listen_arg(), flag, value])
            .run();
        let want = format!("echo-mux: invalid value '{value}' for '{flag}': {what}\n");
        assert_eq!(run.status.code(), Some(2), "{}", run.describe());
        assert_eq!(run.stderr, want, "{}", run.describe());
        assert!(!sock.0.exists(), "bound before the check{}", run.describe());
    }
}

/// Not root, and asked to become another user: one line naming the user, exit 1, before a
/// socket is bound.
#[test]
fn switching_without_root_is_a_runtime_error() {
    if !is_root("a start as another user") {
        return;
    }
    let sock = TempSock::new("notroot");
    let run = Daemon::with("epoll")
        .args(&["-l", &sock.listen_arg(), "--user", "root"])
        .run_as(NOBODY, NOGROUP)
        .run();
    assert_eq!(run.status.code(), Some(1), "{}", run.describe());
    let want = "echo-mux: cannot switch to user 'root' (uid 0), group 'root' (gid 0): \
                not running as root (uid 65534)\n";
    assert_eq!(run.stderr, want, "{}", run.describe());
    assert!(!sock.0.exists(), "bound before the check{}", run.describe());
}

/// What a reload's new image is: the same command line (`--user nobody --group nogroup`),
/// started by a process that has already switched. It needs no privilege and serves.
#[test]
fn already_the_user_starts_without_privilege() {
    if !is_root("a start as the target user") {
        return;
    }
    let (user, group) = nobody_args();
    let sock = TempSock::new("already");
    let bin = TempDir::new("already-bin");
    let Some(mut d) = Daemon::with("epoll")
        .program(&reachable_binary(&bin))
        .args(&[
            "-l",
            "127.0.0.1:0",
            "-l",
            &sock.listen_arg(),
            "--user",
            &user,
            "--group",
            &group,
        ])
        .run_as(NOBODY, NOGROUP)
        .spawn()
    else {
        return;
    };
    runs_as_nobody(&d, d.pid(), "the daemon");
    assert_eq!(ping(d.connect(), b"again").unwrap(), b"again");
    if d.stderr().contains("running as user") {
        d.fail("switched again although it already ran as the user");
    }
    d.terminate(Duration::from_secs(10));
}

for_each_backend!(a_reload_after_the_switch_needs_no_privilege);
/// Started as root with `--user nobody --group nogroup`, the daemon switches; a SIGHUP then
/// runs the check child and the new image as nobody, which need no privilege: the reload
/// completes, the connection opened before it goes on echoing, and every id is still nobody's.
fn a_reload_after_the_switch_needs_no_privilege(backend: &'static str) {
    if !is_root("a reload after the switch") {
        return;
    }
    let (user, group) = nobody_args();
    let bin = TempDir::new("reload-bin");
    let Some(mut d) = Daemon::with(backend)
        .program(&reachable_binary(&bin))
        .args(&["-l", "127.0.0.1:0", "--user", &user, "--group", &group])
        .spawn()
    else {
        return;
    };
    let c = d.connect();
    assert_eq!(ping(&c, b"before").unwrap(), b"before");
    crate::reload::reload(&d);
    runs_as_nobody(&d, d.pid(), "the reloaded daemon");
    if ping(&c, b"after").ok().as_deref() != Some(&b"after"[..]) {
        d.fail("the connection opened before the reload stopped echoing");
    }
    d.terminate(Duration::from_secs(10));
}
