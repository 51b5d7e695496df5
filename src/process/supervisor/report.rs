//! What the supervisor tells: the SIGUSR1 totals line and systemd's STATUS=.

use super::{Supervisor, Tick};
use crate::shared::Counter;
use crate::shared::{Reason, REASONS};
use crate::stats::{Line, Totals};

/// How often the workers' refusal counts are read: a refusal after a quiet second is in the
/// log this long after it at most.
pub(super) const REFUSALS_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// Per reason: the (connections, datagrams) of one worker's slot already fed to the log.
pub(super) type Seen = [(u64, u64); REASONS];

impl Supervisor {
    /// The SPEC §5 line with exact totals over every worker, earlier generations included.
    pub(super) fn stats_line(&self) -> String {
        let t = self.region.totals();
        let backend = self.config.backend.resolve().name();
        let uptime = self.now.duration_since(self.started);
        Line::new(backend, t.get(Counter::Open), Totals::from(&t), uptime)
            .with_workers(self.workers.len())
            .with_access(self.config.access.is_active())
            .with_udp(self.listeners.has_datagram())
            .with_reloads(self.reloads)
            .to_string()
    }

    /// `STATUS=3 connections, 2 workers` (the one-process daemon's wording, plus workers).
    pub(super) fn status_text(&self) -> String {
        let (open, live) = self.status_key();
        format!("STATUS={open} connections, {live} workers")
    }

    /// (open connections, live workers): what STATUS= shows.
    pub(super) fn status_key(&self) -> (u64, usize) {
        let open = self.region.totals().get(Counter::Open);
        (
            open,
            self.workers.iter().filter(|s| s.pid.is_some()).count(),
        )
    }

    /// STATUS= when the open count or the worker count changed (checked every tick).
    pub(super) fn report_status(&mut self) {
        let Some(n) = &self.notifier else { return };
        if !self.ready_sent {
            return;
        }
        let key = self.status_key();
        if self.status_sent != Some(key) {
            n.notify(&self.status_text());
            self.status_sent = Some(key);
        }
    }
}

impl Supervisor {
    /// `Tick::Refusals`: add up what every worker refused since the last look and log it,
    /// one line per reason a second for the whole daemon (SPEC §10).
    pub(super) fn on_refusals_tick(&mut self) {
        for k in 1..=self.workers.len() {
            self.collect_refusals(k);
        }
        self.refusals.flush(self.now);
        self.timers.add(self.now + REFUSALS_EVERY, Tick::Refusals);
    }

    /// Feed worker `k`'s refusals since the last look into the log. Also called right
    /// before its slot is retired (its last counts are final then) and zeroed.
    pub(super) fn collect_refusals(&mut self, k: usize) {
        let slot = &self.region.slots()[k - 1];
        for reason in Reason::ALL {
            let r = slot.refusals(reason);
            let seen = &mut self.refusals_seen[k - 1][reason as usize];
            let (conns, grams) = (
                r.conns.wrapping_sub(seen.0),
                r.datagrams.wrapping_sub(seen.1),
            );
            *seen = (r.conns, r.datagrams);
            self.refusals
                .refused_many(reason, conns, grams, r.example, self.now);
        }
    }
}
