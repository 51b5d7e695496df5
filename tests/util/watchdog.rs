//! Watchdogs, so that a test can fail but never hang the suite: every `for_each_backend!`
//! test runs under a [`Watchdog`], and the whole test binary under a backstop started with
//! the first daemon or client. When one fires it names the test(s) still running, kills the
//! daemons the harness started, and aborts the binary: CI then fails at once with a name
//! instead of sitting until its own time limit. Cheap: one sleeping thread per test.

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Mutex, Once};
use std::thread;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Longest a single test may run (the slowest legitimate ones take about 2 minutes on a
/// loaded 2-core machine).
pub const TEST_LIMIT: Duration = Duration::from_secs(300);
/// Longest the whole integration binary may run (about 2.5 minutes on a loaded machine).
const BINARY_LIMIT: Duration = Duration::from_secs(30 * 60);

/// Daemons running now (pids), and the watched tests running now (names).
static DAEMONS: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());
static RUNNING: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());

/// Aborts the test binary unless dropped within its limit.
pub struct Watchdog {
    name: &'static str,
    _done: mpsc::Sender<()>,
}

impl Watchdog {
    pub fn new(name: &'static str, limit: Duration) -> Watchdog {
        backstop();
        RUNNING.lock().unwrap().insert(name);
        let (done, finished) = mpsc::channel::<()>();
        thread::spawn(move || {
            // Disconnected (the guard was dropped: the test ended, or panicked) is the
            // normal way out.
            if let Err(RecvTimeoutError::Timeout) = finished.recv_timeout(limit) {
                fire(&format!("test {name} is still running after {limit:?}"));
            }
        });
        Watchdog { name, _done: done }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        RUNNING.lock().unwrap().remove(self.name);
    }
}

/// Start the binary-wide backstop (once).
pub fn backstop() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        thread::spawn(|| {
            thread::sleep(BINARY_LIMIT);
            fire(&format!(
                "the tests are still running after {BINARY_LIMIT:?}"
            ));
        });
    });
}

/// A daemon was started (`pid`) or has been reaped (`None` on drop).
pub fn track(pid: i32, running: bool) {
    let mut daemons = DAEMONS.lock().unwrap_or_else(|e| e.into_inner());
    match running {
        true => daemons.insert(pid),
        false => daemons.remove(&pid),
    };
}

fn fire(why: &str) -> ! {
    let running = RUNNING.lock().unwrap_or_else(|e| e.into_inner()).clone();
    // Straight to fd 2: eprintln! would be captured by the test harness, and lost.
    let _ = writeln!(
        std::io::stderr(),
        "\nWATCHDOG: {why}; aborting the test binary (watched tests still running: {running:?})"
    );
    for &pid in DAEMONS.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    std::process::abort();
}
