//! Startup (issue 8): values beyond the duration maximum, inherited descriptors that are not
//! open, signals that arrive while listeners are being bound, a live unix socket whose
//! backlog is full, and `--help`/`--version` on a stdout that cannot be written.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, UnixAddr};
use nix::unistd::Pid;

use crate::util::client::{self, ping};
use crate::util::{lift_nofile, run, Daemon, Run, TempSock, BIN};

/// A finished child started by one of the tests below (not through the harness, because
/// they need their own stdout, descriptors or timing).
struct Ended {
    cmd: String,
    status: ExitStatus,
    timed_out: bool,
    stderr: String,
}

impl Ended {
    fn describe(&self) -> String {
        format!(
            "\n--- command: {}\n--- status: {}{}\n--- stderr:\n{}--- end",
            self.cmd,
            self.status,
            if self.timed_out { " (killed)" } else { "" },
            self.stderr
        )
    }

    /// Exit `code` with exactly one `echo-mux: ` line on stderr containing every needle
    /// (besides log lines, such as socket activation's info line).
    fn assert_one_line(&self, code: i32, needles: &[&str]) {
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| !l.starts_with('['))
            .collect();
        let ok = !self.timed_out
            && self.status.code() == Some(code)
            && lines.len() == 1
            && lines[0].starts_with("echo-mux: ")
            && needles.iter().all(|n| lines[0].contains(n));
        assert!(
            ok,
            "want exit {code} and one line naming {needles:?}:{}",
            self.describe()
        );
    }
}

/// Wait for `child` (SIGKILL after `limit`), then read the rest of its stderr.
fn finish(mut child: Child, cmd: String, limit: Duration) -> Ended {
    let deadline = Instant::now() + limit;
    let mut timed_out = false;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            timed_out = true;
            break child.wait().unwrap();
        }
        thread::sleep(Duration::from_millis(2));
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    Ended {
        cmd,
        status,
        timed_out,
        stderr,
    }
}

/// The daemon with `args`, stdin and stdout on /dev/null, stderr piped.
fn daemon_cmd(args: &[&str]) -> (Command, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("RUST_LOG")
        .env_remove("RUST_BACKTRACE")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDS")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let line = format!("{BIN} {}", args.join(" "));
    (cmd, line)
}

// ---------------------------------------------------------------------------------------
// Defect 1: durations beyond the maximum
// ---------------------------------------------------------------------------------------

/// `10000000000000000000` seconds used to be accepted, then `Instant + Duration` panicked
/// on the first connection. Every duration option now has a maximum, named in the error.
#[test]
fn durations_beyond_the_maximum_are_usage_errors() {
    for flag in ["--idle-timeout", "--delay", "--shutdown-timeout"] {
        for value in ["10000000000000000000", "721h"] {
            // Listening on port 0 in case it wrongly starts.
            let r = run(&["--listen", "127.0.0.1:0", flag, value]);
            let line = r.stderr.trim_end();
            let ok = !r.timed_out
                && r.status.code() == Some(2)
                && !line.contains('\n')
                && line.starts_with(&format!("echo-mux: invalid value '{value}' for '{flag}'"))
                && line.contains("at most 720h");
            assert!(ok, "want a usage error naming the maximum:{}", r.describe());
        }
    }
}

for_each_backend!(the_longest_durations_work);
/// The maximum itself is served: a connection, its held reply, stats and the drain all add
/// 720h to the clock without a panic (the harness fails the test on a panic line).
fn the_longest_durations_work(backend: &'static str) {
    let long = ["--idle-timeout", "720h", "--delay", "720h"];
    let Some(mut d) = Daemon::spawn(
        backend,
        &[&long[..], &["--shutdown-timeout", "720h"]].concat(),
    ) else {
        return;
    };
    let mut s = d.connect();
    use std::io::Write;
    s.write_all(b"held").unwrap();
    assert!(d.stats().contains_key("open"));
    let mark = d.mark();
    d.signal(Signal::SIGTERM);
    d.expect_line(mark, "draining", Duration::from_secs(5));
    // The drain releases the held reply at once.
    let mut got = [0u8; 4];
    s.read_exact(&mut got)
        .unwrap_or_else(|e| d.fail(&format!("held reply not released: {e}")));
    assert_eq!(&got, b"held");
    drop(s);
    let st = d.wait_exit(Duration::from_secs(10));
    assert_eq!(st.code(), Some(0), "{}", d.describe());
}

// ---------------------------------------------------------------------------------------
// Defect 2 (and 14): inherited descriptors
// ---------------------------------------------------------------------------------------

/// Run the daemon socket-activated, the way systemd does: `listener` dup'ed onto each of
/// fds `3..3+passed`, `LISTEN_FDS=announced`, `LISTEN_PID` set by a shell to its own pid
/// just before it execs the daemon. Waits at most `limit` for the exit.
fn activated(listener: &OwnedFd, passed: i32, announced: usize, args: &[&str]) -> Ended {
    lift_nofile();
    let raw: RawFd = listener.as_raw_fd();
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(r#"LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@""#)
        .arg(BIN)
        .args(args)
        .env("LISTEN_FDS", announced.to_string())
        .env_remove("LISTEN_PID")
        .env_remove("RUST_LOG")
        .env_remove("RUST_BACKTRACE")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let place = move || {
        // Park a close-on-exec copy above the target range first: `raw` itself may lie in
        // 3..3+passed, and dup2 onto itself would keep its FD_CLOEXEC.
        // SAFETY: fcntl, dup2 and close are async-signal-safe and touch only descriptors.
        unsafe {
            let high = libc::fcntl(raw, libc::F_DUPFD_CLOEXEC, 3 + passed + 16);
            if high < 0 {
                return Err(std::io::Error::last_os_error());
            }
            for fd in 3..3 + passed {
                if libc::dup2(high, fd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            libc::close(high);
        }
        Ok(())
    };
    // SAFETY: the closure only makes async-signal-safe calls (above).
    unsafe { cmd.pre_exec(place) };
    let line = format!(
        "LISTEN_FDS={announced} (fds 3..{}) {BIN} {}",
        3 + passed,
        args.join(" ")
    );
    let child = cmd.spawn().unwrap();
    finish(child, line, Duration::from_secs(5))
}

fn tcp_listener() -> OwnedFd {
    OwnedFd::from(std::net::TcpListener::bind("127.0.0.1:0").unwrap())
}

for_each_backend!(announced_descriptor_that_is_not_open_is_an_error);
/// `LISTEN_FDS=2` but only fd 3 passed: fd 4 is not ours. The daemon used to open its
/// poller first, so fd 4 was its own epoll descriptor, adopted, rejected and closed twice.
/// Now the inherited descriptors are checked before anything is opened: one line, exit 1.
fn announced_descriptor_that_is_not_open_is_an_error(backend: &'static str) {
    let l = tcp_listener();
    let r = activated(&l, 1, 2, &["--backend", backend]);
    r.assert_one_line(1, &["inherited descriptor 4", "LISTEN_FDS=2", "not open"]);
}

/// With `-b select`, an inherited listener at fd >= 1024 cannot be watched: the error names
/// the descriptor and FD_SETSIZE, and says what to use instead.
#[test]
fn select_names_an_inherited_descriptor_beyond_fd_setsize() {
    if lift_nofile() < 2048 {
        println!("note: RLIMIT_NOFILE below 2048; cannot pass 1,023 descriptors, skipping");
        return;
    }
    let l = tcp_listener();
    let port = std::net::TcpListener::from(l.try_clone().unwrap())
        .local_addr()
        .unwrap()
        .port();
    let r = activated(&l, 1023, 1023, &["--backend", "select"]);
    r.assert_one_line(
        1,
        &[
            "inherited descriptor 1024",
            &format!("127.0.0.1:{port}"),
            "FD_SETSIZE",
            "1024",
            "--backend poll",
        ],
    );
}

// ---------------------------------------------------------------------------------------
// Defect 3: signals before listeners
// ---------------------------------------------------------------------------------------

for_each_backend!(sigterm_while_listeners_are_bound_leaves_no_socket_file);
/// SIGTERM as soon as the unix socket file appears, while 300 more listeners are still
/// being bound. The handlers used to be installed after binding: the signal killed the
/// process outright and left the file behind. Now it is a clean drain: exit 0, file gone.
fn sigterm_while_listeners_are_bound_leaves_no_socket_file(backend: &'static str) {
    let sock = TempSock::new("early-term");
    let unix = sock.listen_arg();
    let mut args = vec!["--backend", backend, "--listen", &unix];
    for _ in 0..300 {
        args.extend(["--listen", "127.0.0.1:0"]);
    }
    let (mut cmd, _) = daemon_cmd(&args);
    let line = format!("{BIN} --backend {backend} --listen {unix} (+300 × --listen 127.0.0.1:0)");
    let child = cmd.spawn().unwrap();
    let pid = Pid::from_raw(child.id() as i32);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.0.exists() && Instant::now() < deadline {
        std::hint::spin_loop();
    }
    assert!(sock.0.exists(), "the socket file never appeared");
    kill(pid, Signal::SIGTERM).unwrap();
    let r = finish(child, line, Duration::from_secs(10));
    assert_eq!(
        (r.status.signal(), r.status.code()),
        (None, Some(0)),
        "SIGTERM during startup must drain and exit 0:{}",
        r.describe()
    );
    assert!(
        !sock.0.exists(),
        "the socket file was left behind:{}",
        r.describe()
    );
}

// ---------------------------------------------------------------------------------------
// Defect 9: a live unix socket whose backlog is full
// ---------------------------------------------------------------------------------------

/// A listener on `path` with a backlog of 1, filled: further connects would block (or
/// fail with EAGAIN when non-blocking). Returns the listener and the queued clients.
fn full_unix_listener(path: &Path) -> (OwnedFd, Vec<OwnedFd>) {
    let flags = SockFlag::SOCK_CLOEXEC;
    let l = socket::socket(AddressFamily::Unix, SockType::Stream, flags, None).unwrap();
    socket::bind(l.as_raw_fd(), &UnixAddr::new(path).unwrap()).unwrap();
    socket::listen(&l, Backlog::new(1).unwrap()).unwrap();
    let mut queued = Vec::new();
    let addr = UnixAddr::new(path).unwrap();
    for _ in 0..64 {
        let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
        let c = socket::socket(AddressFamily::Unix, SockType::Stream, flags, None).unwrap();
        match socket::connect(c.as_raw_fd(), &addr) {
            Ok(()) => queued.push(c),
            Err(nix::errno::Errno::EAGAIN) => return (l, queued),
            Err(e) => panic!("connect to the test listener: {e}"),
        }
    }
    panic!("the backlog of 1 took 64 connections");
}

for_each_backend!(live_unix_socket_with_a_full_backlog_is_in_use);
/// The stale-socket probe used a blocking connect(), which waits forever on a full backlog.
/// A non-blocking probe's EAGAIN means "in use": exit 1 at once, the path left alone.
fn live_unix_socket_with_a_full_backlog_is_in_use(backend: &'static str) {
    let sock = TempSock::new("full-backlog");
    let (_listener, _queued) = full_unix_listener(&sock.0);
    let started = Instant::now();
    let r = run(&["--backend", backend, "--listen", &sock.listen_arg()]);
    let took = started.elapsed();
    let path = sock.0.display().to_string();
    let ok = !r.timed_out
        && r.status.code() == Some(1)
        && r.stderr.lines().count() == 1
        && r.stderr.contains(&path)
        && r.stderr.contains("address already in use");
    assert!(ok, "want exit 1, address already in use:{}", r.describe());
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert!(sock.0.exists(), "the daemon removed a live socket");
}

// ---------------------------------------------------------------------------------------
// Defect 12: --help and --version on a stdout that cannot be written
// ---------------------------------------------------------------------------------------

/// Run `args` with stdout set to `out`; at most 5 s.
fn run_with_stdout(args: &[&str], out: Stdio) -> Ended {
    let (mut cmd, line) = daemon_cmd(args);
    cmd.stdout(out);
    finish(cmd.spawn().unwrap(), line, Duration::from_secs(5))
}

/// `echo-mux --help | true` after the reader left used to panic with a backtrace (exit
/// 101). A closed pipe is the reader's choice: exit 0 quietly. Any other write error
/// (/dev/full) is one line and exit 1.
#[test]
fn help_and_version_survive_a_stdout_that_cannot_be_written() {
    for flag in ["--help", "--version"] {
        let (r, w) = nix::unistd::pipe().unwrap();
        drop(r); // the reader is gone before the first byte
        let ended = run_with_stdout(&[flag], Stdio::from(w));
        assert!(
            !ended.timed_out && ended.status.code() == Some(0) && ended.stderr.is_empty(),
            "closed stdout: want exit 0 and nothing on stderr:{}",
            ended.describe()
        );
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let ended = run_with_stdout(&[flag], Stdio::from(full));
        ended.assert_one_line(1, &["cannot write", "no space left on device"]);
    }
}

// ---------------------------------------------------------------------------------------
// Defect 14: messages
// ---------------------------------------------------------------------------------------

/// Negative values used to read "unknown option '-1'"; `-v -q` gave clap's own text.
#[test]
fn messages_name_the_option_and_the_expected_value() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--delay", "-1"],
            "invalid value '-1' for '--delay': must not be negative",
        ),
        (
            &["--idle-timeout", "-2s"],
            "invalid value '-2s' for '--idle-timeout': must not be negative",
        ),
        (
            &["--max-clients", "-5"],
            "invalid value '-5' for '--max-clients': expected a whole number of at least 1",
        ),
        (
            &["--max-buffer", "-1"],
            "invalid value '-1' for '--max-buffer': expected a size such as 4096, 64KiB, 1MiB or 1GiB",
        ),
        (&["-v", "-q"], "--verbose and --quiet cannot be used together"),
        (&["-q", "-vv"], "--quiet and --verbose cannot be used together"),
    ];
    for (args, want) in cases {
        let args = [&["--listen", "127.0.0.1:0"], *args].concat();
        let r: Run = run(&args);
        assert!(
            !r.timed_out && r.status.code() == Some(2) && r.stderr == format!("echo-mux: {want}\n"),
            "want exactly `echo-mux: {want}`:{}",
            r.describe()
        );
    }
}

for_each_backend!(drain_line_and_warnings_read_like_the_startup_errors);
/// `--shutdown-timeout 0` used to log "at most 0ns", and runtime warnings kept the raw
/// "Too many open files (os error 24)". Durations are human (0s, 1.5s); errors are plain.
fn drain_line_and_warnings_read_like_the_startup_errors(backend: &'static str) {
    for (value, want) in [("0", "(at most 0s)"), ("1.5s", "(at most 1.5s)")] {
        let Some(mut d) = Daemon::spawn(backend, &["--shutdown-timeout", value]) else {
            return;
        };
        let mark = d.mark();
        d.signal(Signal::SIGTERM);
        let line = d.expect_line(mark, "draining", Duration::from_secs(5));
        assert!(line.contains(want), "want {want:?} in {line:?}");
        d.wait_exit(Duration::from_secs(10));
    }
    // Out of descriptors on accept: the warning names the error as the startup errors do.
    let Some(d) = Daemon::with(backend).nofile(32).spawn() else {
        return;
    };
    let mark = d.mark();
    let mut held = Vec::new();
    for _ in 0..40 {
        match client::connect(d.addr()) {
            Ok(s) => held.push(s),
            Err(_) => break,
        }
    }
    let line = d.expect_line(mark, "cannot accept", Duration::from_secs(10));
    assert!(
        line.contains("too many open files") && !line.contains("os error"),
        "{line:?}"
    );
    drop(held);
    let mut s = d.connect();
    ping(&mut s, b"after").unwrap_or_else(|e| d.fail(&format!("after the shortage: {e}")));
}
