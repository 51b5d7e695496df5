//! What systemd hears from the loop (SPEC §6): `READY=1`, `STATUS=` with the number of open
//! connections (paced), `STOPPING=1`, and `WATCHDOG=1` at half of `WATCHDOG_USEC`.

use std::time::{Duration, Instant};

use super::Timer;
use crate::event::pacer::Pacer;
use crate::event::timer::later;
use crate::event::timer::Timers;
use crate::systemd::Notifier;

/// `STATUS=` at most this often: a connection storm must not become a datagram storm.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// The notifier, if systemd gave one, and the pacing of its `STATUS=` updates.
pub(super) struct Status {
    notifier: Option<Notifier>,
    watchdog: Option<Duration>,
    /// The count last sent.
    sent: usize,
    pacer: Pacer,
    /// A `Timer::Status` is queued to send the count once the pacing allows it.
    armed: bool,
}

impl Status {
    pub(super) fn new(notifier: Option<Notifier>) -> Status {
        Status {
            notifier,
            watchdog: crate::systemd::watchdog_interval(),
            sent: 0,
            pacer: Pacer::new(STATUS_EVERY),
            armed: false,
        }
    }

    /// Listeners are registered: tell systemd, and start the watchdog if the unit asks for it.
    pub(super) fn ready(&mut self, now: Instant, timers: &mut Timers<Timer>) {
        self.notify("READY=1\nSTATUS=0 connections");
        if let Some(every) = self.watchdog {
            timers.add(later(now, every), Timer::Watchdog);
        }
    }

    /// A reload is handing over (SPEC §13): `RELOADING=1` with the monotonic time.
    pub(super) fn reloading(&self) {
        let usec = crate::reload::state::monotonic_ns() / 1000;
        self.notify(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
    }

    /// The handover's execve failed: serving on as before.
    pub(super) fn reload_failed(&self) {
        self.notify("READY=1");
    }

    pub(super) fn stopping(&self) {
        self.notify("STOPPING=1");
    }

    /// `Timer::Watchdog` fired: ping, and queue the next one.
    pub(super) fn on_watchdog(&self, now: Instant, timers: &mut Timers<Timer>) {
        if let Some(every) = self.watchdog {
            self.notify("WATCHDOG=1");
            timers.add(later(now, every), Timer::Watchdog);
        }
    }

    /// `Timer::Status` fired: the pacing allows a report again.
    pub(super) fn on_timer(&mut self, open: usize, now: Instant, timers: &mut Timers<Timer>) {
        self.armed = false;
        self.report(open, now, timers);
    }

    /// Called once per turn: send the connection count if it changed, at most once a
    /// second; a change inside the second is sent when the second is over.
    pub(super) fn report(&mut self, open: usize, now: Instant, timers: &mut Timers<Timer>) {
        if self.notifier.is_none() || open == self.sent || self.armed {
            return;
        }
        match self.pacer.next(now) {
            Some(due) => {
                timers.add(due, Timer::Status);
                self.armed = true;
            }
            None => {
                self.notify(&format!("STATUS={open} connections"));
                self.sent = open;
                self.pacer.sent(now);
            }
        }
    }

    fn notify(&self, state: &str) {
        if let Some(n) = &self.notifier {
            n.notify(state);
        }
    }
}
