//! Graceful shutdown (SPEC §5): SIGTERM/SIGINT start the drain, a second one or
//! `--shutdown-timeout` cuts it off.

use log::{info, warn};

use super::accept::{Backlog, ACCEPT_BATCH};
use super::{connections, End, Server, Timer};
use crate::duration::Human;
use crate::event::reactor::Interest;
use crate::event::timer::later;

impl Server {
    /// Listeners closed at once, held replies released, every connection served until its
    /// client closes and its output is flushed, up to `--shutdown-timeout`.
    pub(super) fn start_drain(&mut self, name: &str) {
        info!(
            "{name} received: draining {} (at most {})",
            connections(self.conns.open()),
            Human(self.config.shutdown_timeout)
        );
        self.draining = true;
        self.status.stopping();
        // Clients whose connect already completed sit in the listen backlog and may have
        // sent data before the signal: take them in (within --max-clients) before closing,
        // which would reset them. At most one backlog's worth per listener, so a flood of
        // new connects cannot hold the drain here.
        for i in 0..self.listeners.len() {
            for _ in 0..=crate::net::listen::BACKLOG as usize / ACCEPT_BATCH {
                if self.accept(i) != Backlog::More {
                    break;
                }
            }
        }
        self.set_listening(Interest::NONE);
        self.listeners.clear(); // closes them (and removes unix socket files we created)
        self.stop_udp();
        for slot in 0..self.conns.slots() {
            self.with_conn(slot, |conn, _, ctx| conn.release(true, ctx));
        }
        if self.config.shutdown_timeout.is_zero() {
            self.cut_off("--shutdown-timeout is 0");
        } else {
            let deadline = later(self.now, self.config.shutdown_timeout);
            self.timers.add(deadline, Timer::Shutdown);
        }
    }

    /// End the drain now: close whatever is left, with one warning that counts it.
    pub(super) fn cut_off(&mut self, why: &str) {
        self.abandon_udp(why);
        let open = self.conns.open();
        if open > 0 {
            warn!("{why}: closing {} that had not finished", connections(open));
        }
        for slot in 0..self.conns.slots() {
            self.close(slot, End::Drain);
        }
    }
}
