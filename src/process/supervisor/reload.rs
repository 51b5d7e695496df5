//! SIGHUP with `--workers` (SPEC §13): the check, then every worker one after another, then
//! the supervisor last.
//!
//! 1. The supervisor asks the new binary (a check child, as the one-process daemon does)
//!    whether it takes this command line and this state version. "No" is one error line
//!    (`reload refused: …`) and nothing changes.
//! 2. Each live worker in turn gets SIGHUP and reloads itself exactly as the one-process
//!    daemon does (its own check, its state, the exec), its state carrying the worker part
//!    (`WRKR`, see `handover.rs`). The supervisor learns the outcome from the worker's slot
//!    (`shared/reloads.rs`): its reload generation moves when the new image has adopted
//!    everything, its refusal count when the old image said no. No pipe, no waiting in the
//!    loop: a 5 ms tick looks. A worker that dies meanwhile is replaced as any other; one that
//!    takes longer than [`RELOAD_PATIENCE`] is killed by the heartbeat check and replaced; the
//!    reload goes on with the next worker either way and says so.
//! 3. The supervisor writes its own state (`SUPV`) and executes itself; the new image logs
//!    `reload complete` and tells systemd `READY=1`.
//!
//! A SIGHUP during a reload queues one more reload (several coalesce into one), which starts
//! when this one is done, after the supervisor's own exec too (the flag travels in its
//! state). A SIGTERM/SIGINT/SIGQUIT during a reload ends the reload where it is: no worker
//! is sent SIGHUP after it, the supervisor does not exec, and the drain goes on as usual (a
//! worker in the middle of its exec gets the signal in its new image, which drains). A
//! SIGHUP during a drain is refused with one line.

use std::time::{Duration, Instant};

use log::{error, info, warn};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{Supervisor, Tick, RELOAD_PATIENCE};
use crate::reload::check::{Check, Verdict};
use crate::reload::state::{Shape, Writer};
use crate::shared::Reloads;

/// How often the supervisor looks at the slot of the worker whose reload it waits for.
pub(super) const RELOAD_POLL: Duration = Duration::from_millis(5);

/// A reload with workers under way.
#[derive(Debug)]
pub(super) struct Reloading {
    /// When the SIGHUP came.
    pub began: Instant,
    /// Worker numbers still to reload, in order. A worker forked by this (old) image while
    /// the reload runs is put back in.
    pub todo: Vec<usize>,
    /// The worker whose reload is under way.
    pub current: Option<Waiting>,
    /// Workers reloaded, and workers that died or were replaced on the way.
    pub reloaded: usize,
    pub lost: usize,
    /// A SIGHUP came meanwhile: one more reload follows this one.
    pub again: bool,
}

/// Worker `k`, sent SIGHUP at `since`, whose slot read `seen` just before.
#[derive(Clone, Copy, Debug)]
pub(super) struct Waiting {
    pub k: usize,
    pub pid: Pid,
    pub seen: Reloads,
    pub since: Instant,
}

/// What a worker's slot says of the reload we wait for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Outcome {
    Pending,
    Completed,
    Refused,
}

/// Compare a slot with what it read before the SIGHUP.
pub(super) fn outcome(seen: Reloads, now: Reloads) -> Outcome {
    if now.done != seen.done {
        Outcome::Completed
    } else if now.failed != seen.failed {
        Outcome::Refused
    } else {
        Outcome::Pending
    }
}

impl Supervisor {
    /// SIGHUP to the supervisor.
    pub(super) fn on_hangup(&mut self) {
        if self.stopping {
            return error!("reload refused: draining");
        }
        if let Some(r) = self.reloading.as_mut() {
            if !r.again {
                info!("SIGHUP during a reload: one more reload follows this one");
            }
            r.again = true;
            return;
        }
        if self.checking.is_some() {
            // The binary has not been asked yet past this point: one reload covers both.
            return info!("SIGHUP during a reload's check: one reload for both");
        }
        self.start_reload(self.now);
    }

    /// Begin a reload at `began`: systemd told, then the new binary asked (the check child
    /// runs while the loop goes on; a 5 ms tick looks at it).
    pub(super) fn start_reload(&mut self, began: Instant) {
        self.notify_reloading();
        match Check::start(crate::reload::origin(), self.now) {
            Ok(check) => {
                self.checking = Some((check, began));
                self.timers.add(self.now + RELOAD_POLL, Tick::Reload);
            }
            Err(reason) => {
                error!("reload refused: {reason}");
                self.notify_ready();
            }
        }
    }

    /// `Tick::Reload` while the check child runs: its answer, or its deadline.
    fn on_check_tick(&mut self) {
        let Some((check, began)) = self.checking.as_mut() else {
            return;
        };
        let began = *began;
        check.on_readable();
        let verdict = match check.finished() {
            Some(v) => v,
            None if self.now < check.deadline => {
                self.timers.add(self.now + RELOAD_POLL, Tick::Reload);
                return;
            }
            None => Verdict::No(format!(
                "the check of the new binary did not answer in {}s",
                crate::reload::check::TIMEOUT.as_secs()
            )),
        };
        if let Some((check, _)) = self.checking.take() {
            if matches!(verdict, Verdict::No(_)) {
                check.kill();
            }
        }
        match verdict {
            Verdict::Yes(line) => {
                log::debug!("reload check: {line}");
                self.reload_workers(began);
            }
            Verdict::No(reason) => {
                error!("reload refused: {reason}");
                self.notify_ready();
            }
        }
    }

    /// The check said yes: every worker in turn.
    fn reload_workers(&mut self, began: Instant) {
        let todo: Vec<usize> = (1..=self.workers.len()).collect();
        info!(
            "reloading: {} workers one after another, then the supervisor",
            todo.len()
        );
        self.reloading = Some(Reloading {
            began,
            todo,
            current: None,
            reloaded: 0,
            lost: 0,
            again: false,
        });
        self.next_worker();
    }

    /// A worker was forked while a reload runs: it runs this (old) image, so it gets its
    /// turn too.
    pub(super) fn forked_during_reload(&mut self, k: usize) {
        if let Some(r) = self.reloading.as_mut() {
            if !r.todo.contains(&k) && r.current.map(|w| w.k) != Some(k) {
                r.todo.push(k);
            }
        }
    }

    /// Send SIGHUP to the next live worker, or, when none is left, reload the supervisor.
    fn next_worker(&mut self) {
        loop {
            let Some(r) = self.reloading.as_mut() else {
                return;
            };
            if r.todo.is_empty() {
                return self.reload_self();
            }
            let k = r.todo.remove(0);
            // A worker in its back-off before a replacement has no process: the replacement
            // is forked by whichever image the supervisor runs by then.
            let Some(pid) = self.workers[k - 1]
                .pid
                .filter(|_| !self.workers[k - 1].wedged)
            else {
                continue;
            };
            let seen = self.region.slots()[k - 1].reloads();
            if let Err(e) = kill(pid, Signal::SIGHUP) {
                warn!("worker {k} (pid {pid}): cannot send SIGHUP: {}", e.desc());
                r.lost += 1;
                continue;
            }
            r.current = Some(Waiting {
                k,
                pid,
                seen,
                since: self.now,
            });
            self.timers.add(self.now + RELOAD_POLL, Tick::Reload);
            return;
        }
    }

    /// `Tick::Reload`: the check's answer, or has the worker we wait for completed its
    /// reload?
    pub(super) fn on_reload_tick(&mut self) {
        if self.checking.is_some() {
            return self.on_check_tick();
        }
        let Some(r) = self.reloading.as_mut() else {
            return;
        };
        let Some(w) = r.current else { return };
        let k = w.k;
        let seat = &self.workers[k - 1];
        if seat.pid != Some(w.pid) {
            // Reaped (it died, or was killed as wedged): the reap has warned and scheduled
            // its replacement already.
            warn!(
                "worker {k} (pid {}) ended during its reload; it is replaced as usual and the reload goes on",
                w.pid
            );
            r.lost += 1;
        } else {
            let took = self.now.saturating_duration_since(w.since);
            match outcome(w.seen, self.region.slots()[k - 1].reloads()) {
                Outcome::Completed => {
                    info!(
                        "worker {k} (pid {}) reloaded in {} ms",
                        w.pid,
                        took.as_millis()
                    );
                    r.reloaded += 1;
                }
                Outcome::Refused => {
                    // The worker logged why. The binary changed since our check: stop here,
                    // leaving the rest (and the supervisor) as they are.
                    error!(
                        "reload refused: worker {k} (pid {}) refused it; {} workers reloaded, the others and the supervisor keep running as they were",
                        w.pid, r.reloaded
                    );
                    self.reloading = None;
                    return self.notify_ready();
                }
                Outcome::Pending if took > RELOAD_PATIENCE + RELOAD_PATIENCE / 10 => {
                    // The heartbeat check kills it at RELOAD_PATIENCE; do not wait for that.
                    warn!(
                        "worker {k} (pid {}) did not complete its reload in {}s; the reload goes on",
                        w.pid,
                        took.as_secs()
                    );
                    r.lost += 1;
                }
                Outcome::Pending => {
                    self.timers.add(self.now + RELOAD_POLL, Tick::Reload);
                    return;
                }
            }
        }
        if let Some(r) = self.reloading.as_mut() {
            r.current = None;
        }
        self.next_worker();
    }

    /// The shutdown began (SIGTERM, SIGINT, SIGQUIT): the reload ends where it is.
    pub(super) fn abandon_reload(&mut self, name: &str) {
        if let Some((check, _)) = self.checking.take() {
            check.kill();
            warn!("{name} during a reload's check: the reload stops here, nothing was reloaded");
        }
        if let Some(r) = self.reloading.take() {
            let at = r.current.map_or(String::new(), |w| {
                format!(" (worker {} was reloading)", w.k)
            });
            warn!(
                "{name} during a reload: the reload stops here after {} workers{at}",
                r.reloaded
            );
        }
    }

    /// Every worker had its turn: the supervisor executes itself last.
    fn reload_self(&mut self) {
        let Some(r) = self.reloading.take() else {
            return;
        };
        if let Err(reason) = self.exec_self(&r) {
            error!(
                "reload refused: {reason}; {} workers reloaded, the supervisor keeps running as it was",
                r.reloaded
            );
            self.notify_ready();
            if r.again {
                self.start_reload(self.now);
            }
        }
    }

    /// Write the state and execute the binary again; returns only if that failed (then
    /// nothing changed: the reload branch's handover undoes itself).
    fn exec_self(&mut self, r: &Reloading) -> Result<(), String> {
        let mut w = Writer::new();
        Shape::Supervisor.write(&mut w);
        // No log line from here to the execve: what stderr has not taken goes along.
        w.section(super::handover::LOGS, |w| {
            w.bytes(&crate::logging::pending())
        });
        self.save(r, &mut w);
        let (bytes, fds) = w.finish();
        // The new image reads systemd's variables again, as this one did at its start.
        for (var, value) in &self.systemd_env {
            std::env::set_var(var, value);
        }
        // A signal taken since the loop last looked (a SIGTERM, a worker's SIGCHLD) is
        // posted again once blocked, so the new image gets it.
        let signals = &self.signals;
        let e = crate::reload::exec::handover(crate::reload::origin(), &bytes, &fds, || {
            signals.repost()
        });
        for (var, _) in &self.systemd_env {
            std::env::remove_var(var);
        }
        Err(format!(
            "cannot execute {}: {}",
            crate::reload::origin().path.display(),
            crate::error::Plain(&e)
        ))
    }

    /// In the new image, once everything is adopted: the reload is complete.
    pub(super) fn reload_completed(&mut self, r: &Reloading) {
        self.reloads += 1;
        let took = self.now.saturating_duration_since(r.began);
        let lost = match r.lost {
            0 => String::new(),
            n => format!(", {n} replaced on the way"),
        };
        info!(
            "reload complete: {} workers and the supervisor in {} ms{lost}",
            r.reloaded,
            took.as_millis()
        );
        self.notify_ready();
        if r.again {
            self.start_reload(self.now);
        }
    }

    /// systemd: `RELOADING=1` with the moment it began (sd_notify(3)).
    fn notify_reloading(&self) {
        if let Some(n) = &self.notifier {
            let usec = crate::reload::state::monotonic_ns() / 1000;
            n.notify(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
        }
    }

    /// systemd: `READY=1` again (after a reload, completed or refused), with the status.
    pub(super) fn notify_ready(&mut self) {
        if let Some(n) = &self.notifier {
            n.notify(&format!("READY=1\n{}", self.status_text()));
            self.status_sent = Some(self.status_key());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_tells_completed_refused_or_pending() {
        let seen = Reloads {
            since_ms: None,
            done: 3,
            failed: 1,
        };
        let under_way = Reloads {
            since_ms: Some(10),
            ..seen
        };
        assert_eq!(outcome(seen, seen), Outcome::Pending);
        assert_eq!(outcome(seen, under_way), Outcome::Pending);
        let done = Reloads { done: 4, ..seen };
        assert_eq!(outcome(seen, done), Outcome::Completed);
        let failed = Reloads { failed: 2, ..seen };
        assert_eq!(outcome(seen, failed), Outcome::Refused);
    }
}
