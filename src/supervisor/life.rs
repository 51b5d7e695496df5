//! A worker's life seen from the supervisor: reaping, the back-off before a replacement,
//! and the heartbeat check that finds a wedged worker.

use std::time::Duration;

use log::{debug, info, warn};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::{spawn, Supervisor, Tick, CHECK_EVERY, WEDGED_AFTER};

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
    /// Collect every exited child; never blocks.
    pub(super) fn reap(&mut self) {
        loop {
            let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => return,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return warn!("waitpid: {e}"),
                Ok(status) => status,
            };
            let Some(pid) = status.pid() else { continue };
            let Some(k) = self.seats.iter().position(|s| s.pid == Some(pid)) else {
                debug!("reaped pid {pid}, not a worker");
                continue;
            };
            let k = k + 1;
            self.seats[k - 1].pid = None;
            self.generations.retire(self.region, k);
            self.forget_sources(k, pid, &status);
            let how = spawn::how_it_ended(&status);
            if self.stopping {
                match status {
                    WaitStatus::Exited(_, 0) => info!("worker {k} (pid {pid}) exited"),
                    _ => warn!("worker {k} (pid {pid}) {how}"),
                }
            } else {
                let delay = self.schedule_restart(k);
                warn!("worker {k} (pid {pid}) {how}; restarting in {delay:?}");
            }
        }
    }

    /// Queue worker `k`'s replacement after its back-off; returns the delay.
    pub(super) fn schedule_restart(&mut self, k: usize) -> Duration {
        let seat = &mut self.seats[k - 1];
        let delay = seat.backoff.next(self.now.duration_since(seat.since));
        self.timers.add(self.now + delay, Tick::Spawn(k));
        delay
    }

    /// SIGKILL every worker whose loop has not turned for [`WEDGED_AFTER`]; the reap then
    /// replaces it (or, in a shutdown, just collects it).
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
        for (i, seat) in self.seats.iter_mut().enumerate() {
            let Some(pid) = seat.pid.filter(|_| !seat.wedged) else {
                continue;
            };
            let beat = self.region.slots()[i].heartbeat_ms().max(from_ms);
            let quiet = now_ms.saturating_sub(beat);
            if quiet > WEDGED_AFTER.as_millis() as u64 {
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
}
