//! Accepting: `--max-clients`, descriptor shortage (EMFILE/ENFILE) without spinning, and the
//! select backend's FD_SETSIZE refusal. The [`Gate`] holds what accepting remembers between
//! turns: whether the listeners are watched, the shortage, the refusal log.

use std::io;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::{connections, Server, Target, Timer};
use crate::duration::Human;
use crate::error::{Error, Plain};
use crate::event::interest;
use crate::event::pacer::Pacer;
use crate::event::reactor::{Backend, Interest};
use crate::event::timer::later;
use crate::net::addr::fold_socket;
use crate::net::addr::Peer;
use crate::net::keepalive;
use crate::net::listen::Endpoint;
use crate::policy::refusal::RefusalLog;
use crate::shared::Reason;
use crate::sys;

/// Connections accepted per listener per turn at most, so clients are not starved by a storm.
pub(super) const ACCEPT_BATCH: usize = 128;
/// How long accepting pauses after EMFILE/ENFILE (the backlog holds new clients meanwhile).
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// A shortage (or a listener's failure burst) is over once accepts have worked for this long
/// without the error; one warning and one recovery line per burst, however often the error
/// comes and goes in it.
const QUIET: Duration = Duration::from_secs(1);
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
    /// What the poller watches on each listener: READ, or NONE while accepting from it is
    /// paused or the drain has closed it.
    listening: Vec<Interest>,
    /// The last EMFILE/ENFILE on accept, while a descriptor shortage lasts.
    shortage: Option<Instant>,
    /// Per listener: the last accept error that was about the listener itself, while such a
    /// burst lasts (one warning per burst, however long it lasts).
    failing: Vec<Option<Instant>>,
    /// Per listener: has an accept returned EAGAIN since `--keepalive` was set on it? Until
    /// then a connection may have been queued before the option and not inherited it (under
    /// socket activation the one that started us always was), so it gets the option itself;
    /// after that, every queued connection was created after the option and has it.
    settled: Vec<bool>,
    refused_by_backend: u64,
    refusal_log: Pacer,
    /// `--max-clients` (and, with access lists, SPEC §10's other reasons).
    pub(super) refusals: RefusalLog,
    /// Per listener: the sockets accepted from it have TCP_NODELAY already (see `register`).
    nodelay: Vec<bool>,
    /// `--proxy-from`: peers whose connections wait for a PROXY header (proxied.rs).
    pub(super) trusted: crate::policy::proxy::Trusted,
}

impl Gate {
    /// For the listeners `register` returned `nodelay` for, all registered for READ.
    pub(super) fn new(nodelay: Vec<bool>) -> Gate {
        let listeners = nodelay.len();
        Gate {
            nodelay,
            listening: vec![Interest::READ; listeners],
            shortage: None,
            failing: vec![None; listeners],
            settled: vec![false; listeners],
            refused_by_backend: 0,
            refusal_log: Pacer::new(REFUSAL_LOG_EVERY),
            refusals: RefusalLog::default(),
            trusted: crate::policy::proxy::Trusted::default(),
        }
    }

    /// An accept from `listener` worked: a shortage or a failure burst that has been quiet
    /// for a while is over.
    fn accepted(&mut self, listener: &Endpoint, index: usize, now: Instant) {
        let over = |last: Option<Instant>| last.is_some_and(|t| now >= later(t, QUIET));
        if over(self.shortage) {
            self.shortage = None;
            info!("descriptors are available again: accepting as usual");
        }
        if let Some(failing) = self.failing.get_mut(index) {
            if over(*failing) {
                *failing = None;
                info!("accepting on {} again", listener.label());
            }
        }
    }

    /// A connection the backend cannot watch is closed at once. For select (fd >=
    /// FD_SETSIZE) that is expected at about 1,000 connections; warn at most once a second,
    /// counting the refusals, so a flood of clients cannot flood the log too.
    fn refused_by_backend(&mut self, name: &str, fd: i32, e: &io::Error, now: Instant) {
        self.refused_by_backend += 1;
        if !self.refusal_log.ready(now) {
            return;
        }
        let total = self.refused_by_backend;
        if e.kind() == io::ErrorKind::InvalidInput {
            warn!("closing connection: fd {fd} is beyond the {name} backend's limit (FD_SETSIZE); {total} refused so far");
        } else {
            let e = Plain(e);
            warn!("closing connection: the {name} backend cannot watch fd {fd}: {e}; {total} refused so far");
        }
    }
}

impl Server {
    /// Accept up to a batch of connections from listener `index`.
    pub(super) fn accept(&mut self, index: usize) -> Backlog {
        let listener = self.listeners.get(index).and_then(Option::as_ref);
        let Some(fd) = listener.map(Endpoint::fd) else {
            return Backlog::Empty;
        };
        for _ in 0..ACCEPT_BATCH {
            let (stream, peer) = match sys::accept(fd) {
                // SPEC §10: a mapped peer is its IPv4 address, in the access checks and in
                // every line that shows it (refusals, --log-connections, debug).
                Ok((stream, ip)) => (stream, ip.map_or(Peer::Unix, |a| Peer::Ip(fold_socket(a)))),
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => {
                        if let Some(settled) = self.gate.settled.get_mut(index) {
                            *settled = true;
                        }
                        return Backlog::Empty;
                    }
                    Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO) => continue,
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                        self.pause_accepting(&e);
                        return Backlog::Stopped;
                    }
                    _ => {
                        self.listener_failed(index, &e);
                        return Backlog::Stopped;
                    }
                },
            };
            if let Some(l) = self.listeners[index].as_ref() {
                self.gate.accepted(l, index, self.now);
            }
            // SPEC §10, before anything is spent on the peer: the lists, --max-clients, then
            // the per-source limits (so a connection refused for any other reason spends no
            // token). Refused connections are closed with nothing sent (dropping `stream`).
            // A --proxy-from peer is only held to --max-clients here: the rest is decided
            // for the client its header names, once it is complete (proxied.rs).
            let ip = peer.ip();
            let trusted = ip.is_some_and(|ip| self.gate.trusted.trusts(ip));
            let checked = if trusted { None } else { ip };
            if checked.is_some_and(|ip| !self.access.allows(ip)) {
                self.refuse(Reason::Denied, peer);
                continue;
            }
            if self.conns.open() >= self.config.max_clients {
                drop(stream);
                self.refuse(Reason::MaxClients, peer);
                continue;
            }
            let source = match checked.map(|ip| self.access.admit(ip, self.now)) {
                Some(Err(reason)) => {
                    self.refuse(reason, peer);
                    continue;
                }
                Some(Ok(source)) => source,
                None => None,
            };
            self.tune(&stream, peer, index);
            let slot = self.conns.insert(stream, self.now);
            let Some(conn) = self.conns.at(slot) else {
                continue;
            };
            (conn.peer, conn.source) = (peer, source);
            let (fd, id) = (conn.fd(), conn.id);
            if let Err(e) = conn.sync_interest(self.backend.as_mut(), Target::Conn(slot).into()) {
                self.conns.remove(slot);
                if let Some(source) = source {
                    self.access.release(source, self.now);
                }
                self.stats.rejected();
                let name = self.backend.name();
                self.gate.refused_by_backend(name, fd, &e, self.now);
                continue;
            }
            if trusted {
                debug!("conn {id} (fd {fd}) from {peer}: waiting for its PROXY header");
                self.await_header(slot);
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

    /// Socket options for a connection about to be served: TCP_NODELAY (unix sockets have
    /// no Nagle to turn off), unless it came with it from its listener (see `register`).
    /// `--keepalive` comes from the listener (see access/keepalive.rs). Both are copied from
    /// the listener only into connections created after it had them: those accepted before
    /// the listener's first EAGAIN may have been queued earlier ([`Gate::settled`]) and get
    /// them here.
    fn tune(&self, stream: &OwnedFd, peer: Peer, index: usize) {
        if let Peer::Unix = peer {
            return;
        }
        let settled = self.gate.settled.get(index).copied().unwrap_or(true);
        let inherited = settled && self.gate.nodelay.get(index).copied().unwrap_or(false);
        if !inherited {
            if let Err(e) = sys::set_nodelay(stream) {
                debug!("TCP_NODELAY: {}", Plain(&e));
            }
        }
        if !settled {
            if let Err(e) = keepalive::apply_to_connection(stream, self.config.keepalive) {
                debug!("TCP keepalive on a connection queued early: {}", Plain(&e));
            }
        }
    }

    /// A connection was closed at once for `reason` (the caller has closed it): count it,
    /// and log it the SPEC §10 way, one line per reason per second.
    pub(super) fn refuse(&mut self, reason: Reason, peer: Peer) {
        self.stats.refused(reason);
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
        for i in 0..self.listeners.len() {
            self.set_listener(i, want);
        }
    }

    fn set_listener(&mut self, index: usize, want: Interest) {
        let (Some(Some(l)), Some(registered)) = (
            self.listeners.get(index),
            self.gate.listening.get_mut(index),
        ) else {
            return;
        };
        let token = Target::Listener(index).into();
        let backend = self.backend.as_mut();
        let synced = interest::sync(registered, want, |old, new| {
            l.set_interest(backend, token, old, new)
        });
        if let Err(e) = synced {
            warn!(
                "cannot update poller interest for {}: {}",
                l.label(),
                Plain(&e)
            );
            // Counted as done all the same: a listener the poller refuses is not retried.
            *registered = want;
        }
    }

    /// An accept error about the listener itself, not one connection nor a descriptor
    /// shortage: EINVAL from a socket-activated listener that the process sharing it shut
    /// down, say. The socket stays readable, so it is paused like a shortage pauses them all
    /// (the loop must not spin on it), but alone: the other listeners go on accepting.
    fn listener_failed(&mut self, index: usize, e: &io::Error) {
        let Some(Some(l)) = self.listeners.get(index) else {
            return;
        };
        if self.gate.failing[index].is_none() {
            warn!(
                "cannot accept on {}: {}; pausing that listener (retrying every {})",
                l.label(),
                Plain(e),
                Human(ACCEPT_PAUSE)
            );
        }
        self.gate.failing[index] = Some(self.now);
        self.set_listener(index, Interest::NONE);
        self.timers
            .add(later(self.now, ACCEPT_PAUSE), Timer::AcceptResume);
    }

    /// Out of descriptors: stop watching the listeners for a moment instead of spinning on a
    /// level-triggered listener we cannot accept from. New clients wait in the listen backlog.
    fn pause_accepting(&mut self, e: &io::Error) {
        if self.gate.shortage.is_none() {
            warn!(
                "cannot accept: {}; pausing accepts ({} open, retrying every {})",
                Plain(e),
                connections(self.conns.open()),
                Human(ACCEPT_PAUSE)
            );
        }
        self.gate.shortage = Some(self.now);
        self.set_listening(Interest::NONE);
        self.timers
            .add(later(self.now, ACCEPT_PAUSE), Timer::AcceptResume);
    }
}

/// Watch every stream listener for connections (shared ones exclusively), give TCP listeners
/// `--keepalive` and TCP_NODELAY (accepted sockets inherit both), and log each bound address:
/// SPEC §1's `listening on ADDR (backend NAME)` line that scripts and tests wait for. Returns,
/// per listener, whether TCP_NODELAY is on it (then no connection needs its own setsockopt).
pub(super) fn register(
    backend: &mut dyn Backend,
    listeners: &[Endpoint],
    keepalive: Option<Duration>,
) -> Result<Vec<bool>, Error> {
    let name = backend.name();
    let mut nodelay = Vec::with_capacity(listeners.len());
    for (i, l) in listeners.iter().enumerate() {
        nodelay.push(nodelay_on_listener(l));
        let token = Target::Listener(i).into();
        l.set_interest(backend, token, Interest::NONE, Interest::READ)
            .map_err(|source| Error::Listen {
                addr: l.label().to_string(),
                source,
            })?;
        if let Err(e) = keepalive::apply_to_listener(l, keepalive) {
            warn!("cannot set TCP keepalive on {}: {}", l.label(), Plain(&e));
        }
        if crate::reload::adopted() {
            debug!("listening on {} (backend {name}, handed over)", l.label());
        } else {
            info!("listening on {} (backend {name})", l.label());
        }
    }
    Ok(nodelay)
}

/// TCP_NODELAY on a TCP listener. Linux copies it to every socket accepted from it, so this
/// one call at start replaces a setsockopt per connection (issue 15: a short connection's
/// system calls). False, and set per connection as before, for unix listeners, on other
/// systems, or if the call fails.
fn nodelay_on_listener(l: &Endpoint) -> bool {
    use nix::sys::socket::{getsockname, setsockopt, sockopt};
    use nix::sys::socket::{AddressFamily, SockaddrLike, SockaddrStorage};
    if !cfg!(target_os = "linux") {
        return false;
    }
    let family = getsockname::<SockaddrStorage>(l.fd())
        .ok()
        .and_then(|a| a.family());
    matches!(family, Some(AddressFamily::Inet | AddressFamily::Inet6))
        && setsockopt(l, sockopt::TcpNoDelay, &true).is_ok()
}

#[cfg(test)]
mod tests {
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixListener;

    use nix::sys::socket::{getsockopt, sockopt};

    use super::*;

    #[test]
    fn tcp_listeners_hand_nodelay_to_accepted_sockets() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = tcp.local_addr().unwrap();
        let dir = std::env::temp_dir().join(format!("echo-mux-nodelay-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let unix = UnixListener::bind(&dir).unwrap();
        let listeners = [
            Endpoint::inherited(OwnedFd::from(tcp)),
            Endpoint::inherited(OwnedFd::from(unix)),
        ];
        let mut backend =
            crate::event::reactor::open(crate::event::reactor::BackendKind::Poll).unwrap();
        let nodelay = register(backend.as_mut(), &listeners, None).unwrap();
        let _ = std::fs::remove_file(&dir);
        assert_eq!(nodelay, [cfg!(target_os = "linux"), false]);
        if !cfg!(target_os = "linux") {
            return;
        }
        assert!(getsockopt(&listeners[0], sockopt::TcpNoDelay).unwrap());
        // What the per-connection setsockopt is skipped for: the kernel's copy.
        let _client = std::net::TcpStream::connect(addr).unwrap();
        let (stream, _) = sys::accept(listeners[0].fd()).unwrap();
        assert!(getsockopt(&stream, sockopt::TcpNoDelay).unwrap());
    }
}
