//! Accepting: `--max-clients`, descriptor shortage (EMFILE/ENFILE) without spinning, and the
//! select backend's FD_SETSIZE refusal. The [`Gate`] holds what accepting remembers between
//! turns: whether the listeners are watched, the shortage, the refusal log.

use std::io;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::{connections, later, Server, Source, Timer};
use crate::listen::Listener;
use crate::reactor::Interest;
use crate::refusal::{Peer, Reason, RefusalLog};
use crate::sys;

/// Connections accepted per listener per turn at most, so clients are not starved by a storm.
pub(super) const ACCEPT_BATCH: usize = 128;
/// How long accepting pauses after EMFILE/ENFILE (the backlog holds new clients meanwhile).
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
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

/// What accepting remembers between turns.
pub(super) struct Gate {
    /// What the poller watches on every listener (all of them alike): READ, or NONE while
    /// accepting is paused or the drain has closed them.
    listening: Interest,
    /// The last EMFILE/ENFILE on accept, while a descriptor shortage lasts.
    shortage: Option<Instant>,
    refused_by_backend: u64,
    refusal_logged: Option<Instant>,
    /// `--max-clients` (and, with access lists, SPEC §10's other reasons).
    pub(super) refusals: RefusalLog,
}

impl Gate {
    pub(super) fn new() -> Gate {
        Gate {
            listening: Interest::READ,
            shortage: None,
            refused_by_backend: 0,
            refusal_logged: None,
            refusals: RefusalLog::default(),
        }
    }

    /// An accept worked: a shortage that has been quiet for a while is over.
    fn accepted(&mut self, now: Instant) {
        if let Some(last) = self.shortage {
            if now >= later(last, SHORTAGE_QUIET) {
                self.shortage = None;
                info!("descriptors are available again: accepting as usual");
            }
        }
    }

    /// A connection the backend cannot watch is closed at once. For select (fd >=
    /// FD_SETSIZE) that is expected at about 1,000 connections; warn at most once a second,
    /// counting the refusals, so a flood of clients cannot flood the log too.
    fn refused_by_backend(&mut self, name: &str, fd: i32, e: &io::Error, now: Instant) {
        self.refused_by_backend += 1;
        let due = self
            .refusal_logged
            .is_none_or(|t| now >= later(t, REFUSAL_LOG_EVERY));
        if !due {
            return;
        }
        self.refusal_logged = Some(now);
        let total = self.refused_by_backend;
        if e.kind() == io::ErrorKind::InvalidInput {
            warn!("closing connection: fd {fd} is beyond the {name} backend's limit (FD_SETSIZE); {total} refused so far");
        } else {
            warn!("closing connection: the {name} backend cannot watch fd {fd}: {e}; {total} refused so far");
        }
    }
}

impl Server {
    /// Accept up to a batch of connections from listener `index`.
    pub(super) fn accept(&mut self, index: usize) -> Backlog {
        let listener = self.listeners.get(index).and_then(Option::as_ref);
        let Some(fd) = listener.map(Listener::fd) else {
            return Backlog::Empty;
        };
        for _ in 0..ACCEPT_BATCH {
            let (stream, peer) = match sys::accept(fd) {
                Ok((stream, ip)) => (stream, ip.map_or(Peer::Unix, Peer::Ip)),
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
            self.gate.accepted(self.now);
            if self.conns.open() >= self.config.max_clients {
                drop(stream);
                self.refuse(Reason::MaxClients, peer);
                continue;
            }
            if let Err(e) = sys::set_nodelay(&stream) {
                debug!("TCP_NODELAY: {e}"); // unix sockets have no Nagle to turn off
            }
            let slot = self.conns.insert(stream, self.now);
            let Some(conn) = self.conns.at(slot) else {
                continue;
            };
            let (fd, id) = (conn.fd(), conn.id);
            if let Err(e) = conn.sync_interest(self.backend.as_mut(), Source::Conn(slot).into()) {
                self.conns.remove(slot);
                self.stats.rejected();
                let name = self.backend.name();
                self.gate.refused_by_backend(name, fd, &e, self.now);
                continue;
            }
            self.stats.accepted();
            debug!("conn {id} (fd {fd}) accepted from {peer}");
            if let Some(idle) = self.config.idle_timeout {
                self.timers
                    .add(later(self.now, idle), Timer::Idle { slot, id });
            }
        }
        Backlog::More
    }

    /// A connection was closed at once for `reason` (the caller has closed it): count it,
    /// and log it the SPEC §10 way, one line per reason per second.
    pub(super) fn refuse(&mut self, reason: Reason, peer: Peer) {
        self.stats.rejected();
        if let Some(at) = self.gate.refusals.refused(reason, peer, self.now) {
            self.timers.add(at, Timer::Refusals);
        }
    }

    /// `Timer::Refusals` fired: log what was refused since the last line.
    pub(super) fn flush_refusals(&mut self) {
        if let Some(at) = self.gate.refusals.flush(self.now) {
            self.timers.add(at, Timer::Refusals);
        }
    }

    /// Watch every listener for `want` (READ, or NONE to stop accepting).
    pub(super) fn set_listening(&mut self, want: Interest) {
        if want == self.gate.listening {
            return;
        }
        for (i, l) in self.listeners.iter().enumerate() {
            if let Some(l) = l {
                let token = Source::Listener(i).into();
                if let Err(e) = self
                    .backend
                    .set_interest(l.fd(), token, self.gate.listening, want)
                {
                    warn!("cannot update poller interest for {}: {e}", l.label());
                }
            }
        }
        self.gate.listening = want;
    }

    /// Out of descriptors: stop watching the listeners for a moment instead of spinning on a
    /// level-triggered listener we cannot accept from. New clients wait in the listen backlog.
    fn pause_accepting(&mut self, e: &io::Error) {
        if self.gate.shortage.is_none() {
            warn!(
                "cannot accept: {e}; pausing accepts ({} open, retrying every {:?})",
                connections(self.conns.open()),
                ACCEPT_PAUSE
            );
        }
        self.gate.shortage = Some(self.now);
        self.set_listening(Interest::NONE);
        self.timers
            .add(later(self.now, ACCEPT_PAUSE), Timer::AcceptResume);
    }
}
