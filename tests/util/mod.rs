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
mod daemon;
mod spawn;
pub mod stamp;

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub use daemon::Daemon;
pub use spawn::Builder;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_echo-mux");
/// The three backends every daemon test runs against.
pub const BACKENDS: [&str; 3] = ["epoll", "poll", "select"];
/// Longest wait for the `listening on` line(s).
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// `for_each_backend!(name);` beside `fn name(backend: &'static str)` stamps out the tests
/// `name_epoll`, `name_poll` and `name_select`, each calling `name` with its backend. (The
/// body stays an ordinary function, so rustfmt formats it.)
macro_rules! for_each_backend {
    ($name:ident) => {
        pastey::paste! {
            #[test]
            fn [<$name _epoll>]() {
                $name("epoll")
            }
            #[test]
            fn [<$name _poll>]() {
                $name("poll")
            }
            #[test]
            fn [<$name _select>]() {
                $name("select")
            }
        }
    };
}

/// Lift this process's soft RLIMIT_NOFILE to its hard limit (at most 65,536), once; the
/// soft limit in force. Tests here hold thousands of sockets at once (1,100 in the
/// FD_SETSIZE test, 1,000 in the backlog test, 600 in the 200-client echo, in parallel),
/// more than a common soft limit of 1,024. Daemons inherit it; they raise theirs to the
/// hard limit at start anyway (SPEC §1).
pub fn lift_nofile() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard.min(65_536).max(soft), hard);
        }
    });
    getrlimit(Resource::RLIMIT_NOFILE).map_or(0, |(soft, _)| soft)
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
    /// `udp:127.0.0.1:41234`
    Udp(SocketAddr),
}

impl Addr {
    fn parse(s: &str) -> Option<Addr> {
        if let Some(p) = s.strip_prefix("unix:") {
            return Some(Addr::Unix(PathBuf::from(p)));
        }
        if let Some(a) = s.strip_prefix("udp:") {
            return a.parse().ok().map(Addr::Udp);
        }
        s.parse().ok().map(Addr::Tcp)
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
            let n = client::retry(|| from.read(&mut buf)).unwrap_or(0);
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
