//! What a running daemon reports about itself: SIGUSR1 stats, and its memory and CPU time
//! from /proc.

use std::collections::HashMap;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::Daemon;

/// Longest wait for the stats to show a value a test expects: generous, since the wait
/// ends as soon as they do.
pub const STATS_PATIENCE: Duration = Duration::from_secs(20);

impl Daemon {
    /// Send SIGUSR1 and parse the `stats:` line it produces into `key -> value`.
    pub fn stats(&self) -> HashMap<String, String> {
        let mark = self.mark();
        self.signal(Signal::SIGUSR1);
        let line = self.expect_line(mark, "stats: ", Duration::from_secs(15));
        let body = &line[line.find("stats: ").unwrap() + "stats: ".len()..];
        body.split_whitespace()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => self.fail(&format!("stats field {kv:?} is not key=value in {line:?}")),
            })
            .collect()
    }

    /// Ask for the stats (every 50 ms, up to [`STATS_PATIENCE`]) until `ok` holds for them:
    /// the stats that matched, or the last ones seen when none did. A counter lands a moment
    /// after the client saw the byte or datagram it counts (a supervisor's totals are summed
    /// from what the workers publish), so a test waits for the values it wants and then
    /// asserts on what it got, never on one read.
    pub fn stats_until(
        &self,
        ok: impl Fn(&HashMap<String, String>) -> bool,
    ) -> HashMap<String, String> {
        let deadline = Instant::now() + STATS_PATIENCE;
        loop {
            let st = self.stats();
            if ok(&st) || Instant::now() >= deadline {
                return st;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Poll the stats (every 100 ms, up to `within`) until `key` is `want`; the last stats
    /// as the error when it never is.
    pub fn wait_stat(
        &self,
        key: &str,
        want: &str,
        within: Duration,
    ) -> Result<(), HashMap<String, String>> {
        let start = Instant::now();
        loop {
            let st = self.stats();
            if st.get(key).map(String::as_str) == Some(want) {
                return Ok(());
            }
            if start.elapsed() > within {
                return Err(st);
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The CPU time the daemon uses while this thread sleeps for `span`: a loop that
    /// should be idle and spins shows here.
    pub fn cpu_burned(&self, span: Duration) -> Duration {
        let cpu0 = self.cpu_time();
        thread::sleep(span);
        self.cpu_time().saturating_sub(cpu0)
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
}
