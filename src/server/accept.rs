//! Accepting: `--max-clients`, descriptor shortage (EMFILE/ENFILE) without spinning, and the
//! select backend's FD_SETSIZE refusal. Part of [`Server`]; split out to keep the loop short.

use std::io;
use std::time::Duration;

use log::{debug, info, warn};

use super::{Server, Source, Timer, ACCEPT_BATCH, ACCEPT_PAUSE};
use crate::conn::Conn;
use crate::listen::Listener;
use crate::reactor::Interest;
use crate::sys;

/// A shortage is over once accepts have worked for this long without EMFILE/ENFILE; one
/// warning and one recovery line per shortage, however often descriptors come and go in it.
const SHORTAGE_QUIET: Duration = Duration::from_secs(1);
/// Refusals by the backend (select's FD_SETSIZE) are logged at most this often.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(1);

/// How an accept batch ended.
#[derive(PartialEq, Eq)]
pub(super) enum Backlog {
    /// The listen queue is empty (EAGAIN) or the listener is gone.
    Empty,
    /// The batch limit was reached: more may be waiting.
    More,
    /// Accepting had to pause (out of descriptors, or an unexpected error).
    Stopped,
}

impl Server {
    /// Accept up to a batch of connections from listener `index`.
    pub(super) fn accept(&mut self, index: usize) -> Backlog {
        let listener = self.listeners.get(index).and_then(Option::as_ref);
        let Some(fd) = listener.map(Listener::fd) else {
            return Backlog::Empty;
        };
        for _ in 0..ACCEPT_BATCH {
            let stream = match sys::accept(fd) {
                Ok(stream) => stream,
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => return Backlog::Empty,
                    Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO) => continue,
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                        self.pause_accepting(&e);
                        return Backlog::Stopped;
                    }
                    _ => {
                        warn!("accept failed: {e}");
                        return Backlog::Stopped;
                    }
                },
            };
            if let Some(last) = self.fd_shortage {
                if self.now >= last + SHORTAGE_QUIET {
                    self.fd_shortage = None;
                    info!("descriptors are available again: accepting as usual");
                }
            }
            if self.open >= self.config.max_clients {
                self.stats.rejected += 1;
                debug!(
                    "connection over --max-clients {} closed",
                    self.config.max_clients
                );
                continue;
            }
            if let Err(e) = sys::set_nodelay(&stream) {
                debug!("TCP_NODELAY: {e}"); // unix sockets have no Nagle to turn off
            }
            let slot = self.free.pop().unwrap_or_else(|| {
                self.conns.push(None);
                self.conns.len() - 1
            });
            let mut conn = Conn::new(stream, self.next_id, self.now);
            self.next_id += 1;
            let token = Source::Conn(slot).into();
            let registered =
                self.backend
                    .set_interest(conn.fd(), token, Interest::NONE, Interest::READ);
            if let Err(e) = registered {
                self.stats.rejected += 1;
                self.free.push(slot);
                self.refused_by_backend(conn.fd(), &e);
                continue;
            }
            conn.registered = Interest::READ;
            self.stats.accepted += 1;
            debug!("conn {} (fd {}) accepted", conn.id, conn.fd());
            if let Some(idle) = self.config.idle_timeout {
                let id = conn.id;
                self.timers.add(self.now + idle, Timer::Idle { slot, id });
            }
            self.conns[slot] = Some(conn);
            self.open += 1;
        }
        Backlog::More
    }

    /// A connection the backend cannot watch is closed at once. For select (fd >=
    /// FD_SETSIZE) that is expected at about 1,000 connections; warn at most once a second,
    /// counting the refusals, so a flood of clients cannot flood the log too.
    fn refused_by_backend(&mut self, fd: i32, e: &io::Error) {
        self.refused_by_backend += 1;
        let due = self
            .refusal_logged
            .is_none_or(|t| self.now >= t + REFUSAL_LOG_EVERY);
        if !due {
            return;
        }
        self.refusal_logged = Some(self.now);
        let (name, total) = (self.backend.name(), self.refused_by_backend);
        if e.kind() == io::ErrorKind::InvalidInput {
            warn!("closing connection: fd {fd} is beyond the {name} backend's limit (FD_SETSIZE); {total} refused so far");
        } else {
            warn!("closing connection: the {name} backend cannot watch fd {fd}: {e}; {total} refused so far");
        }
    }

    /// Out of descriptors: stop watching the listeners for a moment instead of spinning on a
    /// level-triggered listener we cannot accept from. New clients wait in the listen backlog.
    fn pause_accepting(&mut self, e: &io::Error) {
        if self.fd_shortage.is_none() {
            warn!(
                "cannot accept: {e}; pausing accepts ({} open, retrying every {:?})",
                super::connections(self.open),
                ACCEPT_PAUSE
            );
        }
        self.fd_shortage = Some(self.now);
        self.set_listening(Interest::NONE);
        self.timers
            .add(self.now + ACCEPT_PAUSE, Timer::AcceptResume);
    }
}
