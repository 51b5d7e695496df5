//! What the supervisor tells: the SIGUSR1 totals line and systemd's STATUS=.

use super::Supervisor;
use crate::shared::Counter;

impl Supervisor {
    /// The SPEC §5 line with exact totals over every worker, earlier generations included.
    pub(super) fn stats_line(&self) -> String {
        let t = self.region.totals();
        let mut line = format!(
            "stats: backend={} open={} accepted={} rejected={} bytes_in={} bytes_out={} uptime={}s workers={}",
            self.config.backend.resolve().name(),
            t.get(Counter::Open),
            t.get(Counter::Accepted),
            t.get(Counter::Rejected),
            t.get(Counter::BytesIn),
            t.get(Counter::BytesOut),
            self.now.duration_since(self.started).as_secs(),
            self.n
        );
        if self.config.access.is_active() {
            // SPEC §5: after `workers=`, before any UDP fields.
            let (denied, limited) = (t.get(Counter::Denied), t.get(Counter::Limited));
            line.push_str(&format!(" denied={denied} limited={limited}"));
        }
        if self.listeners.has_datagram() {
            // SPEC §5: last, when a UDP listener exists.
            line.push_str(&format!(
                " datagrams_in={} datagrams_out={} dropped={}",
                t.get(Counter::DatagramsIn),
                t.get(Counter::DatagramsOut),
                t.get(Counter::Dropped)
            ));
        }
        line
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
