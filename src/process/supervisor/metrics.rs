//! `--metrics` with workers (SPEC §12): the supervisor serves it from the shared region
//! (exact totals, plus one series per worker number); the workers render nothing.

use super::{Supervisor, Tick, HTTP_BASE};
use crate::error::Error;
use crate::event::reactor::Token;
use crate::serve::metrics::{Http, View};
use crate::shared::Counter;
use crate::stats::Totals;

impl Supervisor {
    /// Register the metrics listener with the supervisor's own poller.
    pub(super) fn serve_metrics(&mut self, http: Option<Http>) -> Result<(), Error> {
        if let Some(mut http) = http {
            http.register(self.backend.as_mut(), HTTP_BASE)?;
            self.http = Some(http);
        }
        Ok(())
    }

    /// An event for the metrics listener or one of its connections.
    pub(super) fn on_http(&mut self, token: Token) {
        let Some(http) = self.http.as_mut() else {
            return;
        };
        let (region, generations, now) = (self.region, &self.generations, self.now);
        let pids: Vec<Option<u32>> = self
            .workers
            .iter()
            .map(|s| s.pid.map(|p| p.as_raw() as u32))
            .collect();
        let backend_name = self.backend.name();
        let uptime = now.saturating_duration_since(self.started);
        let reloads = self.reloads;
        let mut view = || {
            let t = region.totals();
            View {
                backend: backend_name,
                uptime,
                open: t.get(Counter::Open),
                totals: Totals::from(&t),
                workers: generations.views(region, &pids, now),
                reloads,
                ..View::default()
            }
        };
        if let Some(at) = http.on_event(self.backend.as_mut(), token, now, &mut view) {
            self.timers.add(at, Tick::Http);
        }
    }

    /// The metrics timer fired: 408s and closes of what is past its deadline.
    pub(super) fn on_http_timer(&mut self) {
        let (backend, now) = (self.backend.as_mut(), self.now);
        if let Some(at) = self.http.as_mut().and_then(|h| h.on_timer(backend, now)) {
            self.timers.add(at, Tick::Http);
        }
    }
}
