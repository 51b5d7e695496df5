//! The loop's side of `--metrics` (SPEC §12): the responder lives in `crate::serve::metrics`; this
//! registers it, forwards its events and timers, and says what the counters are now.

use super::token::HTTP_BASE;
use super::{Server, Timer};
use crate::error::Error;
use crate::event::reactor::Token;
use crate::serve::metrics::{Http, View};

impl Server {
    /// Serve /metrics and /status on `http`'s listener from this loop's own counters.
    pub fn with_metrics(mut self, http: Option<Http>) -> Result<Server, Error> {
        if let Some(mut http) = http {
            http.register(self.backend.as_mut(), HTTP_BASE)?;
            self.http = Some(http);
        }
        Ok(self)
    }

    /// An event for the metrics listener or one of its connections.
    pub(super) fn on_http(&mut self, token: Token) {
        let Some(http) = self.http.as_mut() else {
            return;
        };
        let (stats, now) = (&self.stats, self.now);
        let (backend_name, open) = (self.backend.name(), self.conns.open() as u64);
        let mut view = || View {
            backend: backend_name,
            uptime: stats.uptime(now),
            open,
            totals: stats.snapshot(),
            reloads: stats.reloads(),
            ..View::default()
        };
        if let Some(at) = http.on_event(self.backend.as_mut(), token, now, &mut view) {
            self.timers.add(at, Timer::Http);
        }
    }

    /// The metrics timer fired: 408s and closes of what is past its deadline.
    pub(super) fn on_http_timer(&mut self) {
        let (backend, now) = (self.backend.as_mut(), self.now);
        if let Some(at) = self.http.as_mut().and_then(|h| h.on_timer(backend, now)) {
            self.timers.add(at, Timer::Http);
        }
    }
}
