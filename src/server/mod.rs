//! The loop: one backend, the listeners, the connection slab, the timers and the signal pipe.
//!
//! One turn follows Redis's `aeProcessEvents`: wait (timeout = nearest deadline), dispatch
//! every event by its [`Source`], fire due timers, then give closed slots back. Slots are
//! reused only at the end of a turn, so a stale event in the same batch can never reach a
//! new connection; timers name a connection by slot *and* id for the same reason.

use std::io;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use crate::config::Config;
use crate::conn::{Conn, Ctx, Step};
use crate::echo::Clock;
use crate::error::Error;
use crate::listen::Listener;
use crate::reactor::{Backend, Event, Interest, Token};
use crate::signal::{Request, Signals};
use crate::systemd::Notifier;
use crate::timer::Timers;

mod accept;
mod udp;

/// Connections accepted per listener per turn at most, so clients are not starved by a storm.
const ACCEPT_BATCH: usize = 128;
/// How long accepting pauses after EMFILE/ENFILE (the backlog holds new clients meanwhile).
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// The shared read buffer every connection reads through.
const SCRATCH: usize = 64 * 1024;
/// STATUS= updates to systemd at most this often.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// Token layout: 0 is the signal pipe, then listeners, UDP sockets, then connections.
const LISTENER_BASE: usize = 1;
const UDP_BASE: usize = 1 << 15;
const CONN_BASE: usize = 1 << 16;

/// Who a token belongs to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Source {
    Signal,
    Listener(usize),
    Udp(usize),
    Conn(usize),
}

impl From<Token> for Source {
    fn from(t: Token) -> Source {
        match t.0 {
            0 => Source::Signal,
            n if n < UDP_BASE => Source::Listener(n - LISTENER_BASE),
            n if n < CONN_BASE => Source::Udp(n - UDP_BASE),
            n => Source::Conn(n - CONN_BASE),
        }
    }
}

impl From<Source> for Token {
    fn from(s: Source) -> Token {
        Token(match s {
            Source::Signal => 0,
            Source::Listener(i) => LISTENER_BASE + i,
            Source::Udp(i) => UDP_BASE + i,
            Source::Conn(i) => CONN_BASE + i,
        })
    }
}

/// What a timer entry asks for; checked for staleness when it pops.
#[derive(Clone, Copy, Debug)]
enum Timer {
    Idle { slot: usize, id: u64 },
    Delay { slot: usize, id: u64 },
    Shutdown,
    AcceptResume,
    Status,
    Watchdog(Duration),
    Udp { index: usize, at: Instant },
}

#[derive(Default)]
struct Stats {
    accepted: u64,
    rejected: u64,
    bytes_in: u64,
    bytes_out: u64,
}

/// The whole daemon state; see the module docs for one turn.
pub struct Server {
    backend: Box<dyn Backend>,
    config: Config,
    listeners: Vec<Option<Listener>>,
    listening: Interest,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    closed_this_turn: Vec<usize>,
    open: usize,
    next_id: u64,
    timers: Timers<Timer>,
    signals: Signals,
    scratch: Box<[u8]>,
    clock: Clock,
    stats: Stats,
    started: Instant,
    now: Instant,
    draining: bool,
    /// The last EMFILE/ENFILE on accept, while a descriptor shortage lasts.
    fd_shortage: Option<Instant>,
    refused_by_backend: u64,
    refusal_logged: Option<Instant>,
    notifier: Option<Notifier>,
    status_sent: (usize, Option<Instant>),
    status_armed: bool,
    udp: udp::Udp,
}

impl Server {
    /// Register listeners and the signal pipe with `backend`; nothing runs until [`Server::run`].
    pub fn new(
        mut backend: Box<dyn Backend>,
        config: Config,
        listeners: Vec<Listener>,
        signals: Signals,
        notifier: Option<Notifier>,
    ) -> Result<Server, Error> {
        let name = backend.name();
        let fatal = |source| Error::Backend { name, source };
        let (datagram, listeners): (Vec<_>, Vec<_>) =
            listeners.into_iter().partition(Listener::is_datagram);
        let udp_sockets = datagram
            .into_iter()
            .map(|l| {
                let addr = l.label().to_string();
                crate::udp::UdpSocket::new(l).map_err(|source| Error::Listen { addr, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        backend
            .set_interest(
                signals.fd(),
                Source::Signal.into(),
                Interest::NONE,
                Interest::READ,
            )
            .map_err(fatal)?;
        for (i, l) in listeners.iter().enumerate() {
            backend
                .set_interest(
                    l.fd(),
                    Source::Listener(i).into(),
                    Interest::NONE,
                    Interest::READ,
                )
                .map_err(|source| Error::Listen {
                    addr: l.label().to_string(),
                    source,
                })?;
            info!("listening on {} (backend {name})", l.label());
        }
        let now = Instant::now();
        let mut server = Server {
            backend,
            config,
            listeners: listeners.into_iter().map(Some).collect(),
            listening: Interest::READ,
            conns: Vec::new(),
            free: Vec::new(),
            closed_this_turn: Vec::new(),
            open: 0,
            next_id: 0,
            timers: Timers::default(),
            signals,
            scratch: vec![0u8; SCRATCH].into_boxed_slice(),
            clock: Clock::default(),
            stats: Stats::default(),
            started: now,
            now,
            draining: false,
            fd_shortage: None,
            refused_by_backend: 0,
            refusal_logged: None,
            notifier,
            status_sent: (0, None),
            status_armed: false,
            udp: udp::Udp::new(udp_sockets),
        };
        server.register_udp()?;
        Ok(server)
    }

    /// Serve until a signal's drain is done. Only a failing backend is an error.
    pub fn run(mut self) -> Result<(), Error> {
        if let Some(n) = &self.notifier {
            n.notify("READY=1\nSTATUS=0 connections");
        }
        if let Some(every) = crate::systemd::watchdog_interval() {
            self.timers.add(self.now + every, Timer::Watchdog(every));
        }
        let mut events = Vec::with_capacity(1024);
        loop {
            let timeout = self.timers.timeout(Instant::now());
            match self.backend.wait(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => events.clear(),
                Err(source) => {
                    let name = self.backend.name();
                    return Err(Error::Backend { name, source });
                }
            }
            self.now = Instant::now();
            for ev in &events {
                self.dispatch(*ev);
            }
            while let Some(t) = self.timers.pop_due(self.now) {
                self.on_timer(t);
            }
            self.free.append(&mut self.closed_this_turn);
            self.compact_timers();
            self.report_status();
            if self.draining && self.open == 0 && self.udp.queued() == 0 {
                info!("drain complete: exiting");
                return Ok(());
            }
        }
    }

    fn dispatch(&mut self, ev: Event) {
        match Source::from(ev.token) {
            Source::Signal => self.on_signals(),
            Source::Listener(i) => {
                self.accept(i);
            }
            Source::Udp(i) => self.on_udp_event(i, ev.readable, ev.writable),
            Source::Conn(slot) => {
                let (readable, writable) = (ev.readable, ev.writable);
                self.with_conn(slot, |conn, scratch, ctx| {
                    let mut step = Step::Keep;
                    if readable && conn.registered.read {
                        step = conn.on_readable(scratch, ctx);
                    }
                    if step == Step::Keep && writable && conn.registered.write {
                        step = conn.on_writable(ctx);
                    }
                    step
                });
            }
        }
    }

    /// Run a handler on a live connection, then close it or bring its interest up to date.
    /// The connection is looked up again: an earlier event of this turn may have closed it.
    fn with_conn(
        &mut self,
        slot: usize,
        f: impl FnOnce(&mut Conn, &mut [u8], &mut Ctx<'_>) -> Step,
    ) {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let mut ctx = Ctx {
            mode: self.config.mode,
            delay: if self.draining {
                Duration::ZERO
            } else {
                self.config.delay
            },
            max_buffer: self.config.max_buffer,
            now: self.now,
            clock: &mut self.clock,
            bytes_in: &mut self.stats.bytes_in,
            bytes_out: &mut self.stats.bytes_out,
        };
        let step = f(conn, &mut self.scratch, &mut ctx);
        if step == Step::Close {
            return self.close(slot, "connection error");
        }
        if conn.finished() {
            return self.close(slot, "done");
        }
        if let Some(due) = conn.delay_timer_needed() {
            self.timers.add(due, Timer::Delay { slot, id: conn.id });
        }
        let wanted = conn.wanted();
        if wanted != conn.registered {
            let (fd, old) = (conn.fd(), conn.registered);
            let result = self
                .backend
                .set_interest(fd, Source::Conn(slot).into(), old, wanted);
            match result {
                Ok(()) => conn.registered = wanted,
                Err(e) => {
                    warn!("cannot update poller interest for fd {fd}: {e}");
                    self.close(slot, "poller error");
                }
            }
        }
    }

    fn close(&mut self, slot: usize, why: &str) {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::take) else {
            return;
        };
        if !conn.registered.is_none() {
            // Deregister before close (see the Backend contract).
            let token = Source::Conn(slot).into();
            if let Err(e) =
                self.backend
                    .set_interest(conn.fd(), token, conn.registered, Interest::NONE)
            {
                debug!("deregistering fd {}: {e}", conn.fd());
            }
        }
        debug!("conn {} (fd {}) closed: {why}", conn.id, conn.fd());
        self.open -= 1;
        self.closed_this_turn.push(slot);
    }

    fn set_listening(&mut self, want: Interest) {
        if want == self.listening {
            return;
        }
        for (i, l) in self.listeners.iter().enumerate() {
            if let Some(l) = l {
                let token = Source::Listener(i).into();
                if let Err(e) = self
                    .backend
                    .set_interest(l.fd(), token, self.listening, want)
                {
                    warn!("cannot update poller interest for {}: {e}", l.label());
                }
            }
        }
        self.listening = want;
    }

    fn on_timer(&mut self, timer: Timer) {
        match timer {
            Timer::Idle { slot, id } => {
                let Some(idle) = self.config.idle_timeout else {
                    return;
                };
                let Some(conn) = self.conn(slot, id) else {
                    return;
                };
                let quiet_until = conn.last_active + idle;
                if quiet_until <= self.now {
                    self.close(slot, "idle timeout");
                } else {
                    self.timers.add(quiet_until, Timer::Idle { slot, id });
                }
            }
            Timer::Delay { slot, id } => {
                let Some(conn) = self.conn(slot, id) else {
                    return;
                };
                conn.delay_armed = false;
                self.with_conn(slot, |conn, _, ctx| conn.release(false, ctx));
            }
            Timer::Shutdown => {
                if self.draining {
                    self.cut_off("shutdown timeout reached");
                }
            }
            Timer::AcceptResume => {
                if !self.draining {
                    self.set_listening(Interest::READ);
                }
            }
            Timer::Status => {
                self.status_armed = false;
                self.report_status();
            }
            Timer::Watchdog(every) => {
                if let Some(n) = &self.notifier {
                    n.notify("WATCHDOG=1");
                }
                self.timers.add(self.now + every, Timer::Watchdog(every));
            }
            Timer::Udp { index, at } => self.on_udp_timer(index, at),
        }
    }

    /// Cancelled timers stay queued until due (lazy deletion): with --idle-timeout 1h, every
    /// short connection would leave an entry for an hour. Purge the stale ones once they
    /// outnumber the live ones (at most two per connection); amortised O(1) per entry.
    fn compact_timers(&mut self) {
        if self.timers.len() <= 4 * self.open + 64 {
            return;
        }
        let conns = &self.conns;
        self.timers.retain(|t| match *t {
            Timer::Idle { slot, id } | Timer::Delay { slot, id } => conns
                .get(slot)
                .and_then(Option::as_ref)
                .is_some_and(|c| c.id == id),
            _ => true,
        });
    }

    /// The live connection in `slot` if it is still the one a timer was set for.
    fn conn(&mut self, slot: usize, id: u64) -> Option<&mut Conn> {
        self.conns
            .get_mut(slot)
            .and_then(Option::as_mut)
            .filter(|c| c.id == id)
    }

    fn on_signals(&mut self) {
        for request in self.signals.take() {
            match request {
                Request::Terminate(name) if self.draining => {
                    self.cut_off(&format!("second {name}"));
                }
                Request::Terminate(name) => self.start_drain(name),
                Request::Stats => info!(
                    "stats: backend={} open={} accepted={} rejected={} bytes_in={} bytes_out={} uptime={}s{}",
                    self.backend.name(),
                    self.open,
                    self.stats.accepted,
                    self.stats.rejected,
                    self.stats.bytes_in + self.udp.counters.bytes_in,
                    self.stats.bytes_out + self.udp.counters.bytes_out,
                    self.now.duration_since(self.started).as_secs(),
                    self.udp.stats_fields()
                ),
                Request::Hangup => info!("SIGHUP received and ignored: there is no configuration to reload"),
            }
        }
    }

    /// SPEC §5: listeners closed at once, held replies released, every connection served
    /// until its client closes and its output is flushed, up to `--shutdown-timeout`.
    fn start_drain(&mut self, name: &str) {
        info!(
            "{name} received: draining {} (at most {:?})",
            connections(self.open),
            self.config.shutdown_timeout
        );
        self.draining = true;
        if let Some(n) = &self.notifier {
            n.notify("STOPPING=1");
        }
        // Clients whose connect already completed sit in the listen backlog and may have
        // sent data before the signal: take them in (within --max-clients) before closing,
        // which would reset them. At most one backlog's worth per listener, so a flood of
        // new connects cannot hold the drain here.
        for i in 0..self.listeners.len() {
            for _ in 0..=crate::listen::BACKLOG as usize / ACCEPT_BATCH {
                if self.accept(i) != accept::Backlog::More {
                    break;
                }
            }
        }
        self.set_listening(Interest::NONE);
        self.listeners.clear(); // closes them (and removes unix socket files we created)
        self.stop_udp();
        for slot in 0..self.conns.len() {
            self.with_conn(slot, |conn, _, ctx| conn.release(true, ctx));
        }
        if self.config.shutdown_timeout.is_zero() {
            self.cut_off("--shutdown-timeout is 0");
        } else {
            self.timers
                .add(self.now + self.config.shutdown_timeout, Timer::Shutdown);
        }
    }

    fn cut_off(&mut self, why: &str) {
        self.abandon_udp(why);
        if self.open > 0 {
            warn!(
                "{why}: closing {} that had not finished",
                connections(self.open)
            );
        }
        for slot in 0..self.conns.len() {
            self.close(slot, why);
        }
    }

    /// Tell systemd the connection count when it changed, at most once a second.
    fn report_status(&mut self) {
        let Some(n) = &self.notifier else { return };
        if self.open == self.status_sent.0 || self.status_armed {
            return;
        }
        match self.status_sent.1 {
            Some(t) if self.now < t + STATUS_EVERY => {
                self.timers.add(t + STATUS_EVERY, Timer::Status);
                self.status_armed = true;
            }
            _ => {
                n.notify(&format!("STATUS={} connections", self.open));
                self.status_sent = (self.open, Some(self.now));
            }
        }
    }
}

/// "1 connection", "3 connections".
pub(crate) fn connections(n: usize) -> String {
    if n == 1 {
        "1 connection".to_string()
    } else {
        format!("{n} connections")
    }
}
