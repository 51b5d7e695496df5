//! The harness: runs the real `echo-mux` binary on loopback and reports everything on failure.
//!
//! [`Daemon`] spawns the binary on `127.0.0.1:0`, learns the bound address from the
//! `listening on …` log line (no fixed ports, no startup sleeps), collects stderr on a thread
//! and kills the process on drop. When a test panics while a daemon is alive, the drop prints
//! the command line, the exit status and the daemon's whole stderr.
//!
//! External-server mode: with `ECHO_MUX_ADDR=127.0.0.1:50007` (or `unix:/path`) set,
//! [`Daemon::shared`] hands out that running daemon instead of spawning one, so the tests
//! that need only an address also run against e.g. a daemon under systemd. Tests that need
//! options or signals get `None` from [`Builder::spawn`] and skip with a note.
#![allow(dead_code)]

pub mod client;
pub mod stamp;

use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_echo-mux");
/// The three backends every daemon test runs against.
pub const BACKENDS: [&str; 3] = ["epoll", "poll", "select"];
/// Longest wait for the `listening on` line(s).
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Stamp out `$name_epoll`, `$name_poll` and `$name_select` tests from one body that takes
/// the backend name (`&'static str`).
macro_rules! for_each_backend {
    ($(#[$attr:meta])* fn $name:ident($backend:ident) $body:block) => {
        pastey::paste! {
            $(#[$attr])* #[test] fn [<$name _epoll>]() { let $backend: &'static str = "epoll"; $body }
            $(#[$attr])* #[test] fn [<$name _poll>]() { let $backend: &'static str = "poll"; $body }
            $(#[$attr])* #[test] fn [<$name _select>]() { let $backend: &'static str = "select"; $body }
        }
    };
}

/// A unique unix socket path under the temp dir, removed (if still there) on drop.
pub struct TempSock(pub PathBuf);

impl TempSock {
    pub fn new(tag: &str) -> TempSock {
        let name = format!(
            "echo-mux-test-{}-{tag}-{:x}.sock",
            std::process::id(),
            client::fresh_seed() & 0xffff_ffff
        );
        TempSock(std::env::temp_dir().join(name))
    }

    /// `unix:/path`, as `--listen` takes it.
    pub fn listen_arg(&self) -> String {
        format!("unix:{}", self.0.display())
    }
}

impl Drop for TempSock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// One address the daemon listens on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Addr {
    /// `127.0.0.1:41234`
    Tcp(SocketAddr),
    /// `unix:/path`
    Unix(PathBuf),
}

impl Addr {
    fn parse(s: &str) -> Option<Addr> {
        match s.strip_prefix("unix:") {
            Some(p) => Some(Addr::Unix(PathBuf::from(p))),
            None => s.parse().ok().map(Addr::Tcp),
        }
    }
}

/// Stderr of a child, filled by a reader thread; the condvar signals every new chunk.
#[derive(Default)]
struct Captured {
    text: String,
    eof: bool,
}
type Shared = Arc<(Mutex<Captured>, Condvar)>;

fn capture(mut from: impl Read + Send + 'static) -> Shared {
    let shared: Shared = Arc::default();
    let sink = Arc::clone(&shared);
    thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            let n = from.read(&mut buf).unwrap_or(0);
            let (lock, cvar) = &*sink;
            let mut c = lock.lock().unwrap();
            if n == 0 {
                c.eof = true;
            } else {
                c.text.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            cvar.notify_all();
            if n == 0 {
                return;
            }
        }
    });
    shared
}

/// Wait (bounded) until `done` holds for the captured text; returns its last answer.
fn wait_captured<T>(
    shared: &Shared,
    timeout: Duration,
    mut done: impl FnMut(&Captured) -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    let (lock, cvar) = &**shared;
    let mut c = lock.lock().unwrap();
    loop {
        if let Some(v) = done(&c) {
            return Some(v);
        }
        let now = Instant::now();
        if now >= deadline || c.eof {
            return None;
        }
        c = cvar.wait_timeout(c, deadline - now).unwrap().0;
    }
}

/// How to start a daemon: `Daemon::with("poll").args(&["--mode", "stamp"]).spawn()`.
pub struct Builder {
    backend: &'static str,
    backend_flag: bool,
    args: Vec<String>,
    nofile: Option<u64>,
    env: Vec<(String, String)>,
}

impl Builder {
    /// Add command-line arguments (after `--backend`).
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|s| s.to_string()));
        self
    }

    /// Leave `--backend` off the command line (to test the default).
    pub fn without_backend_flag(mut self) -> Self {
        self.backend_flag = false;
        self
    }

    /// Start the daemon with soft and hard RLIMIT_NOFILE set to `n`.
    pub fn nofile(mut self, n: u64) -> Self {
        self.nofile = Some(n);
        self
    }

    /// Set an environment variable for the daemon.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Start the daemon and wait for its listening line(s). `None` (with a note on stdout) in
    /// external-server mode, where the test cannot choose options or send signals.
    pub fn spawn(self) -> Option<Daemon> {
        if let Ok(addr) = std::env::var("ECHO_MUX_ADDR") {
            println!(
                "note: ECHO_MUX_ADDR={addr} is set; skipping a test that starts its own daemon"
            );
            return None;
        }
        Some(self.spawn_local())
    }

    fn spawn_local(mut self) -> Daemon {
        let mut listeners = self
            .args
            .iter()
            .filter(|a| *a == "--listen" || *a == "-l")
            .count();
        if listeners == 0 {
            self.args
                .splice(0..0, ["--listen".into(), "127.0.0.1:0".into()]);
            listeners = 1;
        }
        if self.backend_flag {
            self.args
                .splice(0..0, ["--backend".into(), self.backend.into()]);
        }
        let mut cmd = Command::new(BIN);
        cmd.args(&self.args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd.env_remove("RUST_LOG").env_remove("RUST_BACKTRACE");
        cmd.env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("NOTIFY_SOCKET");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if let Some(n) = self.nofile {
            let set = move || {
                use nix::sys::resource::{setrlimit, Resource};
                setrlimit(Resource::RLIMIT_NOFILE, n, n).map_err(io::Error::from)
            };
            // SAFETY: the closure only calls setrlimit(2), which is async-signal-safe, and
            // touches no memory shared with the parent.
            unsafe { cmd.pre_exec(set) };
        }
        let mut line = format!("{BIN} {}", self.args.join(" "));
        if let Some(n) = self.nofile {
            line = format!("(RLIMIT_NOFILE={n}) {line}");
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {line}: {e}"));
        let out = capture(child.stderr.take().unwrap());
        let mut d = Daemon {
            pid: child.id() as i32,
            child: Some(child),
            cmd: line,
            out,
            addrs: Vec::new(),
            status: None,
            backend: self.backend,
            reported: Default::default(),
        };
        let found = wait_captured(&d.out, START_TIMEOUT, |c| {
            let addrs = listening_addrs(&c.text);
            (addrs.len() >= listeners).then_some(addrs)
        });
        match found {
            Some(addrs) => d.addrs = addrs,
            None => {
                let _ = d.try_wait_exit(Duration::from_millis(200));
                d.fail(&format!(
                    "no {listeners} `listening on` line(s) within {START_TIMEOUT:?}"
                ));
            }
        }
        d
    }
}

/// The addresses of every complete `listening on ADDR (backend NAME)` line in `text`.
fn listening_addrs(text: &str) -> Vec<Addr> {
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    complete
        .lines()
        .filter_map(|l| {
            let rest = &l[l.find("listening on ")? + "listening on ".len()..];
            Addr::parse(&rest[..rest.find(" (backend")?])
        })
        .collect()
}

/// A running (or finished) daemon; killed with SIGKILL and reaped on drop.
pub struct Daemon {
    child: Option<Child>,
    pid: i32,
    cmd: String,
    out: Shared,
    addrs: Vec<Addr>,
    status: Option<ExitStatus>,
    backend: &'static str,
    /// Set once a failure message has carried the description (so drop does not repeat it).
    reported: std::cell::Cell<bool>,
}

impl Daemon {
    /// A builder for a daemon on `backend` (listening on `127.0.0.1:0` unless told otherwise).
    pub fn with(backend: &'static str) -> Builder {
        Builder {
            backend,
            backend_flag: true,
            args: Vec::new(),
            nofile: None,
            env: Vec::new(),
        }
    }

    /// Shorthand for `Daemon::with(backend).args(args).spawn()`.
    pub fn spawn(backend: &'static str, args: &[&str]) -> Option<Daemon> {
        Daemon::with(backend).args(args).spawn()
    }

    /// A daemon with default options, only to talk to: the external one when
    /// `ECHO_MUX_ADDR` is set, else a fresh one on `backend`.
    pub fn shared(backend: &'static str) -> Daemon {
        let Ok(addr) = std::env::var("ECHO_MUX_ADDR") else {
            return Daemon::with(backend).spawn_local();
        };
        let parsed = Addr::parse(&addr).unwrap_or_else(|| {
            panic!("ECHO_MUX_ADDR={addr:?} is neither HOST:PORT nor unix:/path")
        });
        Daemon {
            child: None,
            pid: 0,
            cmd: format!("(external daemon at {addr})"),
            out: Arc::default(),
            addrs: vec![parsed],
            status: None,
            backend,
            reported: Default::default(),
        }
    }

    /// Did this test start the daemon (false in external-server mode)?
    pub fn is_owned(&self) -> bool {
        self.child.is_some()
    }

    /// The backend this daemon was started with.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// Every address from the listening lines, in order.
    pub fn addrs(&self) -> &[Addr] {
        &self.addrs
    }

    /// The first TCP address.
    pub fn addr(&self) -> SocketAddr {
        self.addrs
            .iter()
            .find_map(|a| match a {
                Addr::Tcp(s) => Some(*s),
                Addr::Unix(_) => None,
            })
            .unwrap_or_else(|| self.fail("the daemon has no TCP listener"))
    }

    /// A client connected to [`Daemon::addr`], with I/O timeouts.
    pub fn connect(&self) -> TcpStream {
        client::connect(self.addr()).unwrap_or_else(|e| self.fail(&format!("connect: {e}")))
    }

    /// The daemon's pid (panics for an external daemon).
    pub fn pid(&self) -> i32 {
        assert!(self.child.is_some(), "no pid for an external daemon");
        self.pid
    }

    /// Send `sig` to the daemon.
    pub fn signal(&self, sig: Signal) {
        if self.status.is_some() {
            self.fail(&format!("cannot send {sig}: the daemon has exited"));
        }
        kill(Pid::from_raw(self.pid()), sig)
            .unwrap_or_else(|e| self.fail(&format!("kill {sig}: {e}")));
    }

    /// The exit status if the daemon exits within `timeout`.
    pub fn try_wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while self.status.is_none() {
            let child = self
                .child
                .as_mut()
                .expect("no process for an external daemon");
            match child.try_wait() {
                Ok(Some(st)) => self.status = Some(st),
                Ok(None) if Instant::now() >= deadline => return None,
                Ok(None) => thread::sleep(Duration::from_millis(5)),
                Err(e) => panic!("waitpid {}: {e}", self.pid),
            }
        }
        // The exit closed stderr's write end (unless a grandchild holds it): let the reader
        // thread catch up so that stderr() is complete.
        wait_captured(&self.out, Duration::from_secs(2), |c| c.eof.then_some(()));
        self.status
    }

    /// The exit status; fails the test unless the daemon exits within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        self.try_wait_exit(timeout)
            .unwrap_or_else(|| self.fail(&format!("still running after {timeout:?}")))
    }

    /// Still running?
    pub fn is_running(&mut self) -> bool {
        self.try_wait_exit(Duration::ZERO).is_none()
    }

    /// Everything the daemon wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.out.0.lock().unwrap().text.clone()
    }

    /// A position in stderr, for [`Daemon::wait_line`] to search after.
    pub fn mark(&self) -> usize {
        self.out.0.lock().unwrap().text.len()
    }

    /// The first complete stderr line after `mark` that contains `needle`, waiting up to
    /// `timeout` for it.
    pub fn wait_line(&self, mark: usize, needle: &str, timeout: Duration) -> Option<String> {
        wait_captured(&self.out, timeout, |c| {
            let tail = c.text.get(mark..)?;
            let complete = &tail[..tail.rfind('\n').map_or(0, |i| i + 1)];
            complete
                .lines()
                .find(|l| l.contains(needle))
                .map(str::to_string)
        })
    }

    /// Like [`Daemon::wait_line`], failing the test when no such line appears.
    pub fn expect_line(&self, mark: usize, needle: &str, timeout: Duration) -> String {
        self.wait_line(mark, needle, timeout).unwrap_or_else(|| {
            self.fail(&format!(
                "no stderr line containing {needle:?} within {timeout:?}"
            ))
        })
    }

    /// Send SIGUSR1 and parse the `stats:` line it produces into `key -> value`.
    pub fn stats(&self) -> std::collections::HashMap<String, String> {
        let mark = self.mark();
        self.signal(Signal::SIGUSR1);
        let line = self.expect_line(mark, "stats: ", Duration::from_secs(5));
        let body = &line[line.find("stats: ").unwrap() + "stats: ".len()..];
        body.split_whitespace()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => self.fail(&format!("stats field {kv:?} is not key=value in {line:?}")),
            })
            .collect()
    }

    /// Resident set size in KiB (`VmRSS` in /proc/PID/status).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap_or_else(|e| self.fail(&format!("read /proc status: {e}")));
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| self.fail("no VmRSS in /proc/PID/status"))
    }

    /// User plus system CPU time consumed so far (/proc/PID/stat utime + stime).
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .unwrap_or_else(|e| self.fail(&format!("read /proc stat: {e}")));
        // Fields after the parenthesised command name start at field 3 (state); utime and
        // stime are fields 14 and 15.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<u64> = rest
            .split(' ')
            .skip(11)
            .take(2)
            .map(|x| x.parse().unwrap())
            .collect();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        Duration::from_micros((f[0] + f[1]) * 1_000_000 / hz)
    }

    /// Everything known about the daemon, for failure messages.
    pub fn describe(&self) -> String {
        let status = match self.status {
            Some(st) => format!("{st}"),
            None if self.child.is_none() => "external".into(),
            None => "still running".into(),
        };
        format!(
            "\n--- command: {}\n--- status: {status}\n--- stderr:\n{}\n--- end of stderr",
            self.cmd,
            self.stderr()
        )
    }

    /// Fail the test with `msg` and everything known about the daemon.
    pub fn fail(&self, msg: &str) -> ! {
        self.reported.set(true);
        panic!("{msg}{}", self.describe())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        if self.status.is_none() {
            let _ = child.kill();
            self.status = child.wait().ok();
        }
        if thread::panicking() {
            if !self.reported.get() {
                eprintln!("daemon of the failed test:{}", self.describe());
            }
        } else {
            let err = self.stderr();
            if err.contains("panicked") || err.contains("RUST_BACKTRACE") {
                self.fail("the daemon panicked");
            }
        }
    }
}

/// What a finished run of the binary produced.
pub struct Run {
    pub cmd: String,
    /// Killed because it did not exit within 5 s.
    pub timed_out: bool,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Everything about the run, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "\n--- command: {}\n--- status: {}{}\n--- stdout:\n{}\n--- stderr:\n{}\n--- end",
            self.cmd,
            self.status,
            if self.timed_out {
                " (killed: still running after 5 s)"
            } else {
                ""
            },
            self.stdout,
            self.stderr
        )
    }
}

/// Run the binary with `args` to completion (killed after 5 s, see [`Run::timed_out`]).
pub fn run(args: &[&str]) -> Run {
    let cmd_line = format!("{BIN} {}", args.join(" "));
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd_line}: {e}"));
    let out = capture(child.stdout.take().unwrap());
    let err = capture(child.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(5);
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
        thread::sleep(Duration::from_millis(5));
    };
    let text = |s: &Shared| {
        wait_captured(s, Duration::from_secs(2), |c| c.eof.then_some(()));
        s.0.lock().unwrap().text.clone()
    };
    Run {
        cmd: cmd_line,
        timed_out,
        status,
        stdout: text(&out),
        stderr: text(&err),
    }
}
