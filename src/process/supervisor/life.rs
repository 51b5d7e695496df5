//! A worker's life seen from the supervisor: reaping, the back-off before a replacement,
//! and the heartbeat check that finds a wedged worker.

use std::time::{Duration, Instant};

use log::{debug, info, warn};
use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{Supervisor, Tick, CHECK_EVERY, RELOAD_PATIENCE, WEDGED_AFTER};

/// The supervisor's own check this late means the host, not a worker, stood still.
const STALLED_AFTER: Duration = Duration::from_secs(2);
const _: () = assert!(STALLED_AFTER.as_millis() > 2 * CHECK_EVERY.as_millis());

/// First delay before a worker is replaced; doubled on each quick failure.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest delay before a replacement.
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A worker that ran this long was healthy: its next replacement starts at BACKOFF_MIN.
const HEALTHY_AFTER: Duration = Duration::from_secs(30);

impl Supervisor {
    /// Collect every exited child; never blocks. However a worker ended, it is reaped here,
    /// its seat forgets the pid (so it is never signalled again) and, outside a shutdown,
    /// its replacement is scheduled (SPEC §8).
    ///
    /// While a reload's check child runs, only the workers' pids are waited for: that child
    /// is the check's to reap (its exit status is the answer).
    pub(super) fn reap(&mut self) {
        let mut pids: Vec<libc::pid_t> = match self.checking {
            Some(_) => self
                .workers
                .iter()
                .filter_map(|s| s.pid.map(Pid::as_raw))
                .collect(),
            None => vec![-1],
        };
        loop {
            let Some(&which) = pids.last() else { return };
            let (pid, ended) = match wait_child(which) {
                Ok(Some(reaped)) => reaped,
                Ok(None) | Err(Errno::ECHILD) if which != -1 => {
                    pids.pop();
                    continue;
                }
                Ok(None) | Err(Errno::ECHILD) => return,
                Err(e) => return warn!("waitpid: {}", e.desc()),
            };
            if which != -1 {
                pids.pop();
            }
            let Some(k) = self.workers.iter().position(|s| s.pid == Some(pid)) else {
                debug!("reaped pid {pid}, not a worker");
                continue;
            };
            let k = k + 1;
            self.workers[k - 1].pid = None;
            self.collect_refusals(k);
            self.refusals_seen[k - 1] = Default::default();
            self.generations.retire(self.region, k);
            self.forget_sources(k);
            if self.stopping {
                match ended {
                    Ended::Exited(0) => info!("worker {k} (pid {pid}) exited"),
                    _ => warn!("worker {k} (pid {pid}) {ended}"),
                }
            } else {
                let delay = self.schedule_restart(k);
                warn!("worker {k} (pid {pid}) {ended}; restarting in {delay:?}");
            }
        }
    }

    /// Queue worker `k`'s replacement after its back-off; returns the delay.
    pub(super) fn schedule_restart(&mut self, k: usize) -> Duration {
        let delay = self.workers[k - 1].life.ended(self.now);
        self.workers[k - 1].respawn_at = Some(self.now + delay);
        self.timers.add(self.now + delay, Tick::Spawn(k));
        delay
    }

    /// SIGKILL every worker whose loop has not turned for [`WEDGED_AFTER`] (for
    /// [`RELOAD_PATIENCE`] from the start of a reload under way); the reap then replaces it
    /// (or, in a shutdown, just collects it).
    ///
    /// A heartbeat is only evidence while the supervisor itself runs on time: when the whole
    /// host stalled (a VM paused or starved, every process stopped and continued), the
    /// supervisor wakes to heartbeats that are old only because nobody ran. So if its own
    /// check comes [`STALLED_AFTER`] late, quiet time counts from now on, and the workers get
    /// the full [`WEDGED_AFTER`] to show a loop turn.
    pub(super) fn check_heartbeats(&mut self) {
        let late = self.now.saturating_duration_since(self.last_check);
        self.last_check = self.now;
        if late > STALLED_AFTER {
            warn!(
                "the supervisor itself did not run for {:.1}s; judging heartbeats from now",
                late.as_secs_f64()
            );
            self.judged_from = self.now;
        }
        let now_ms = self.region.now_ms(self.now);
        let from_ms = self.region.now_ms(self.judged_from);
        for (i, seat) in self.workers.iter_mut().enumerate() {
            let Some(pid) = seat.pid.filter(|_| !seat.wedged) else {
                continue;
            };
            let slot = &self.region.slots()[i];
            // SPEC §13: a worker whose reload is under way has a loop that stands still
            // while its new image starts; it gets RELOAD_PATIENCE from the reload's start.
            let (beat, patience) = match slot.reloads().since_ms {
                Some(since) => (slot.heartbeat_ms().max(since), RELOAD_PATIENCE),
                None => (slot.heartbeat_ms(), WEDGED_AFTER),
            };
            let quiet = now_ms.saturating_sub(beat.max(from_ms));
            if quiet > patience.as_millis() as u64 {
                warn!(
                    "worker {} (pid {pid}) is wedged: no loop turn for {:.1}s; killing it",
                    i + 1,
                    quiet as f64 / 1000.0
                );
                seat.wedged = true;
                if let Err(e) = kill(pid, Signal::SIGKILL) {
                    warn!("kill {pid}: {e}");
                }
            }
        }
    }
}

/// How a reaped child ended, decoded from the raw wait status with the C macros, so that
/// every signal has a value: nix's `Signal` has no real-time signals, and its `waitpid`
/// fails with EINVAL *after* the kernel has reaped such a child (the pid then looked alive).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Ended {
    Exited(i32),
    Killed {
        signal: i32,
        core: bool,
    },
    /// Anything else the kernel reports for a reaped child (not expected without WUNTRACED).
    Other(i32),
}

impl Ended {
    pub(super) fn from_raw(status: libc::c_int) -> Ended {
        if libc::WIFEXITED(status) {
            Ended::Exited(libc::WEXITSTATUS(status))
        } else if libc::WIFSIGNALED(status) {
            Ended::Killed {
                signal: libc::WTERMSIG(status),
                core: libc::WCOREDUMP(status),
            }
        } else {
            Ended::Other(status)
        }
    }
}

/// "exited with status 1", "killed by SIGKILL", "killed by SIGRTMIN+6 (core dumped)".
impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Ended::Exited(code) => write!(f, "exited with status {code}"),
            Ended::Killed { signal, core } => {
                let core = if core { " (core dumped)" } else { "" };
                write!(f, "killed by {}{core}", crate::event::signal::name(signal))
            }
            Ended::Other(raw) => write!(f, "ended (wait status {raw:#x})"),
        }
    }
}

/// `waitpid(pid, WNOHANG)` on the raw status: the child reaped, if one had ended.
fn wait_child(pid: libc::pid_t) -> Result<Option<(Pid, Ended)>, Errno> {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: `status` is a valid c_int to write to; WNOHANG never blocks.
        let got = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        match got {
            0 => return Ok(None),
            -1 if Errno::last() == Errno::EINTR => continue,
            -1 => return Err(Errno::last()),
            pid => return Ok(Some((Pid::from_raw(pid), Ended::from_raw(status)))),
        }
    }
}

/// One worker number's starts and the back-off before its next one.
#[derive(Clone, Copy, Debug)]
pub(super) struct Life {
    /// When the current (or last) worker under this number was started, or a start failed.
    since: Instant,
    backoff: Backoff,
}

impl Life {
    pub(super) fn new(now: Instant) -> Life {
        Life {
            since: now,
            backoff: Backoff::default(),
        }
    }

    /// Write the start time and the back-off for a reload's new image.
    pub(super) fn save(&self, w: &mut crate::reload::state::Writer) {
        w.instant(self.since);
        w.duration(self.backoff.0);
    }

    /// What [`Life::save`] wrote.
    pub(super) fn adopt(
        r: &mut crate::reload::state::Reader<'_>,
    ) -> crate::reload::state::Result<Life> {
        let since = r.instant()?;
        let delay = r.duration()?.clamp(BACKOFF_MIN, BACKOFF_MAX);
        Ok(Life {
            since,
            backoff: Backoff(delay),
        })
    }

    /// A worker was forked at `now`.
    pub(super) fn started(&mut self, now: Instant) {
        self.since = now;
    }

    /// A fork failed at `now`: a failed start (SPEC §8), so it ran for no time at all and
    /// the back-off keeps doubling instead of counting from the last worker that ran.
    pub(super) fn fork_failed(&mut self, now: Instant) -> Duration {
        self.since = now;
        self.ended(now)
    }

    /// The worker under this number ended at `now`: the delay before the next one.
    pub(super) fn ended(&mut self, now: Instant) -> Duration {
        self.backoff.next(now.saturating_duration_since(self.since))
    }
}

/// The delay before one worker number's next replacement: 100 ms, doubled after each
/// replacement up to 10 s, back to 100 ms once a worker under that number has run 30 s.
/// A worker that crashes at start therefore costs one fork per 10 s, not a busy loop.
#[derive(Clone, Copy, Debug)]
pub(super) struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Backoff(BACKOFF_MIN)
    }
}

impl Backoff {
    /// The worker that just ended ran for `ran`: how long to wait before the next one.
    pub(super) fn next(&mut self, ran: Duration) -> Duration {
        if ran >= HEALTHY_AFTER {
            self.0 = BACKOFF_MIN;
        }
        let delay = self.0;
        self.0 = (self.0 * 2).min(BACKOFF_MAX);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_ten_seconds_and_resets_after_thirty() {
        let mut b = Backoff::default();
        let quick = Duration::from_millis(50);
        let got: Vec<u64> = (0..9).map(|_| b.next(quick).as_millis() as u64).collect();
        assert_eq!(got, [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000]);
        assert_eq!(b.next(Duration::from_secs(29)), Duration::from_secs(10));
        assert_eq!(b.next(Duration::from_secs(30)), Duration::from_millis(100));
        assert_eq!(b.next(quick), Duration::from_millis(200));
    }

    /// Issue 15 item 9: a worker that ran a minute, then forks that fail for a minute: the
    /// delays double to 10 s and stay there (they dropped back to 100 ms for good once the
    /// last successful start was 30 s ago).
    #[test]
    fn failed_forks_keep_the_backoff_doubling() {
        let t0 = Instant::now();
        let mut life = Life::new(t0);
        let mut now = t0 + Duration::from_secs(60);
        let mut delays = vec![life.ended(now).as_millis() as u64];
        while now < t0 + Duration::from_secs(120) {
            now += *delays
                .last()
                .map(|&d| Duration::from_millis(d))
                .as_ref()
                .unwrap();
            delays.push(life.fork_failed(now).as_millis() as u64);
        }
        assert_eq!(
            delays[..10],
            [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000]
        );
        assert!(delays[10..].iter().all(|&d| d == 10_000), "{delays:?}");
        // A fork that works and a worker that then runs 30 s: back to 100 ms.
        life.started(now);
        assert_eq!(
            life.ended(now + Duration::from_secs(30)),
            Duration::from_millis(100)
        );
        // One that dies at once after that start: 200 ms.
        life.started(now + Duration::from_secs(31));
        assert_eq!(
            life.ended(now + Duration::from_secs(31)),
            Duration::from_millis(200)
        );
    }

    /// Issue 15 item 2: every raw status decodes, the real-time signals included.
    #[test]
    fn raw_wait_statuses_decode_with_real_time_signals() {
        let rt = libc::SIGRTMIN();
        let cases = [
            (0, Ended::Exited(0), "exited with status 0"),
            (3 << 8, Ended::Exited(3), "exited with status 3"),
            (
                libc::SIGKILL,
                Ended::Killed {
                    signal: libc::SIGKILL,
                    core: false,
                },
                "killed by SIGKILL",
            ),
            (
                libc::SIGSEGV | 0x80,
                Ended::Killed {
                    signal: libc::SIGSEGV,
                    core: true,
                },
                "killed by SIGSEGV (core dumped)",
            ),
            (
                rt,
                Ended::Killed {
                    signal: rt,
                    core: false,
                },
                "killed by SIGRTMIN+0",
            ),
            (
                64,
                Ended::Killed {
                    signal: 64,
                    core: false,
                },
                "killed by SIGRTMIN+30",
            ),
        ];
        for (raw, want, text) in cases {
            let got = Ended::from_raw(raw);
            assert_eq!((got, got.to_string().as_str()), (want, text), "{raw:#x}");
        }
    }

    /// A real child killed by a real-time signal (left at its default action) is reaped
    /// by `wait_child` and named; its pid is then gone (ECHILD).
    #[test]
    fn a_child_killed_by_a_real_time_signal_is_reaped() {
        let sig = libc::SIGRTMIN() + 6;
        // SAFETY: the child only calls async-signal-safe functions (signal, raise, _exit).
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: as above.
            unsafe {
                libc::signal(sig, libc::SIG_DFL);
                libc::raise(sig);
                libc::_exit(7);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        let (got, ended) = loop {
            if let Some(r) = wait_child(pid).unwrap() {
                break r;
            }
            assert!(Instant::now() < deadline, "child {pid} never ended");
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(got.as_raw(), pid);
        assert_eq!(ended.to_string(), "killed by SIGRTMIN+6");
        assert_eq!(wait_child(pid), Err(Errno::ECHILD));
    }
}
