//! Startup (issue 8): values beyond the duration maximum, signals that arrive while listeners
//! are being bound, a live unix socket whose backlog is full; inherited descriptors and
//! messages in the submodules.

mod inherited;
mod messages;
mod socket_mode;
mod wording;

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, UnixAddr};
use nix::unistd::Pid;

use crate::util::{run, wait_or_kill, Daemon, TempSock, BIN};

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
    let (status, timed_out) = wait_or_kill(&mut child, limit);
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
    d.expect_line(mark, "draining", Duration::from_secs(15));
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
    let deadline = Instant::now() + crate::util::START_TIMEOUT;
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
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(sock.0.exists(), "the daemon removed a live socket");
}
