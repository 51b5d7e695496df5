//! The signal pipe's requests, handled in the loop like any other event.

use log::info;

use super::Server;
use crate::signal::Request;

impl Server {
    /// What the signal pipe brought: SIGTERM/SIGINT start the drain (a second one ends it),
    /// SIGUSR1 logs the stats line (SPEC §5), SIGHUP is logged and ignored.
    pub(super) fn on_signals(&mut self) {
        for request in self.signals.take() {
            match request {
                Request::Terminate(name) if self.draining => {
                    self.cut_off(&format!("second {name}"));
                }
                Request::Terminate(name) => self.start_drain(name),
                Request::Stats => {
                    let line = self
                        .stats
                        .line(self.backend.name(), self.conns.open(), self.now)
                        .with_access(self.config.access.is_active())
                        .with_udp(self.udp.exists());
                    info!("{line}");
                }
                Request::Hangup => {
                    info!("SIGHUP received and ignored: there is no configuration to reload")
                }
            }
        }
    }
}
