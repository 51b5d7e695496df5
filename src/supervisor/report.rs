//! What the supervisor tells: the SIGUSR1 totals line and systemd's STATUS=.

use super::Supervisor;
use crate::server::{Line, Totals};
use crate::shared::Counter;

impl Supervisor {
    /// The SPEC §5 line with exact totals over every worker, earlier generations included.
    pub(super) fn stats_line(&self) -> String {
        let t = self.region.totals();
        let backend = self.config.backend.resolve().name();
        let uptime = self.now.duration_since(self.started);
        Line::new(backend, t.get(Counter::Open), Totals::from(&t), uptime)
            .with_workers(self.seats.len())
            .with_access(self.config.access.is_active())
            .with_udp(self.listeners.has_datagram())
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
        (open, self.seats.iter().filter(|s| s.pid.is_some()).count())
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
