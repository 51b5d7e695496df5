//! The harness: runs the real `echo-mux` binary on loopback and reports everything on failure.
//!
//! [`Daemon`] spawns the binary on `127.0.0.1:0`, learns the bound address from the
//! `listening on …` log line (no fixed ports, no startup sleeps), collects stderr on a thread
//! and kills the process on drop. When a test panics while a daemon is alive, the drop prints
//! the command line, the exit status and the daemon's whole stderr. [`Builder`] sets the
//! options, environment (`NOTIFY_SOCKET`, `TZ`, …) and RLIMIT_NOFILE, and starts the daemon
//! under `systemd-socket-activate` or with descriptors passed as `LISTEN_FDS`;
//! `Builder::run` runs it to completion instead, for startups that must fail.
//!
//! One macro, `for_each_backend!`, stamps every test that runs once per backend.
//!
//! External-server mode: with `ECHO_MUX_ADDR=127.0.0.1:50007` (or `unix:/path`) set,
//! [`Daemon::shared`] hands out that running daemon instead of spawning one, so the tests
//! that need only an address also run against e.g. a daemon under systemd. Tests that need
//! options or signals get `None` from [`Builder::spawn`] and skip with a note.
#![allow(dead_code)]

mod activated;
pub mod client;
mod command;
mod daemon;
pub mod datagrams;
mod launch;
mod probe;
mod spawn;
pub mod stamp;
pub mod stream;
mod temp;
mod watchdog;

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub use activated::Activated;
pub use command::{run, run_command, run_tool, wait_or_kill, Run, RUN_LIMIT, TOOL_LIMIT};
pub use daemon::Daemon;
pub use spawn::Builder;
pub use temp::{TempDir, TempSock};
pub use watchdog::{Watchdog, TEST_LIMIT};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_echo-mux");
/// The three backends every daemon test runs against.
pub const BACKENDS: [&str; 3] = ["epoll", "poll", "select"];
/// Longest wait for the `listening on` line(s): generous, since the wait ends as soon as
/// they come, and a daemon's start on a loaded 2-core machine can take seconds.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The one backend matrix. `for_each_backend!(name);` beside `fn name(backend: &'static str)`
/// stamps out the tests `name_epoll`, `name_poll` and `name_select`, each calling `name`
/// with its backend's name. `for_each_backend!(name, runner);` calls `runner(backend, name)`
/// instead, for bodies that need something made from the name first (tests/backends.rs
/// runs `fn name(b: &mut dyn Backend)` on a fresh backend under a watchdog). Either way the
/// body stays an ordinary function, so rustfmt formats it. Each test runs under a
/// [`Watchdog`] of [`TEST_LIMIT`]: it can fail, but not hang the suite.
macro_rules! for_each_backend {
    ($name:ident) => {
        for_each_backend!(@stamp $name, |backend| $name(backend));
    };
    ($name:ident, $runner:path) => {
        for_each_backend!(@stamp $name, |backend| $runner(backend, $name));
    };
    (@watch $test:ident) => {
        crate::util::Watchdog::new(
            concat!(module_path!(), "::", stringify!($test)),
            crate::util::TEST_LIMIT,
        )
    };
    (@stamp $name:ident, |$b:ident| $call:expr) => {
        pastey::paste! {
            #[cfg(target_os = "linux")]
            #[test]
            fn [<$name _epoll>]() {
                let _watchdog = for_each_backend!(@watch [<$name _epoll>]);
                let $b = "epoll";
                $call
            }
            #[test]
            fn [<$name _poll>]() {
                let _watchdog = for_each_backend!(@watch [<$name _poll>]);
                let $b = "poll";
                $call
            }
            #[test]
            fn [<$name _select>]() {
                let _watchdog = for_each_backend!(@watch [<$name _select>]);
                let $b = "select";
                $call
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
