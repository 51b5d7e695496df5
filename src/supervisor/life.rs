//! A worker's life seen from the supervisor: reaping, the back-off before a replacement,
//! and the heartbeat check that finds a wedged worker.

use std::time::Duration;

use log::{debug, info, warn};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::{spawn, Supervisor, Tick, BACKOFF_MAX, BACKOFF_MIN, HEALTHY_AFTER, WEDGED_AFTER};

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
            self.region.retire(k);
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
        if self.now.duration_since(seat.since) >= HEALTHY_AFTER {
            seat.backoff = BACKOFF_MIN;
        }
        let delay = seat.backoff;
        seat.backoff = (seat.backoff * 2).min(BACKOFF_MAX);
        self.timers.add(self.now + delay, Tick::Spawn(k));
        delay
    }

    /// SIGKILL every worker whose loop has not turned for [`WEDGED_AFTER`]; the reap then
    /// replaces it (or, in a shutdown, just collects it).
    pub(super) fn check_heartbeats(&mut self) {
        let now_ms = self.region.now_ms(self.now);
        for (i, seat) in self.seats.iter_mut().enumerate() {
            let Some(pid) = seat.pid.filter(|_| !seat.wedged) else {
                continue;
            };
            let quiet = now_ms.saturating_sub(self.region.slots()[i].heartbeat_ms());
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
