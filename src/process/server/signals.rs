//! The signal pipe's requests, handled in the loop like any other event.

use log::info;

use super::{connections, Server};
use crate::event::reactor::Interest;
use crate::event::signal::{stray_line, Request};

impl Server {
    /// What the signal pipe brought: SIGTERM/SIGINT start the drain (a second one ends it),
    /// SIGUSR1 logs the stats line (SPEC §5), SIGHUP reloads (`reload.rs`), SIGQUIT ends
    /// everything at once, a stray signal is logged the first time and ignored.
    pub(super) fn on_signals(&mut self) {
        for request in self.signals.take() {
            match request {
                Request::Terminate(name) if self.draining => {
                    self.cut_off(&format!("second {name}"));
                }
                Request::Terminate(name) => {
                    self.cancel_reload();
                    self.start_drain(name)
                }
                Request::Stats => {
                    let line = self
                        .stats
                        .line(self.backend.name(), self.conns.open(), self.now)
                        .with_access(self.config.access.is_active())
                        .with_udp(self.udp.exists());
                    info!("{line}");
                }
                Request::Hangup => self.on_hangup(),
                Request::Quit => self.quit(),
                Request::Stray(name) => info!("{}", stray_line(name)),
                // Only a supervisor watches for SIGCHLD; a worker has no children.
                Request::Children => {}
            }
        }
    }
}

impl Server {
    /// SIGQUIT (SPEC §5): immediate shutdown. Listeners closed (unix socket files removed),
    /// every connection closed, queued UDP replies dropped; the loop then ends with exit 0.
    fn quit(&mut self) {
        self.cancel_reload();
        info!(
            "SIGQUIT received: closing {} and exiting now",
            connections(self.conns.open())
        );
        if !self.draining {
            self.draining = true;
            self.status.stopping();
            self.set_listening(Interest::NONE);
            self.listeners.clear();
            self.stop_udp();
        }
        self.cut_off("SIGQUIT");
    }
}
