//! The loop: one backend, the listeners, the connection slab, the timers and the signal pipe.
//!
//! One turn follows Redis's `aeProcessEvents`: wait (timeout = nearest deadline), dispatch
//! every event by its [`Target`], fire due timers, then give closed slots back. Slots are
//! reused only at the end of a turn, so a stale event in the same batch can never reach a
//! new connection; timers name a connection by slot *and* id for the same reason.

use std::time::{Duration, Instant};

use log::{info, warn};

use crate::config::Config;
use crate::error::{Error, Plain};
use crate::event::reactor::{Backend, Event, Interest};
use crate::event::signal::Signals;
use crate::event::timer::{later, Timers};
use crate::event::turn;
use crate::net::listen::Endpoint;
use crate::policy::access::Access;
use crate::serve::conn::{Conn, Ctx, Step};
use crate::serve::echo::Clock;
use crate::stats::Stats;
use crate::systemd::Notifier;

pub use reload::Handed;

use closed::End;
use token::Target;

mod accept;
mod closed;
mod conns;
mod drain;
mod metrics;
mod proxied;
mod reload;
mod signals;
mod status;
mod token;
mod udp;

/// A worker's loop turns at least this often, so its supervisor sees it alive.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// The shared read buffer every connection reads through.
const SCRATCH: usize = 64 * 1024;

/// What a timer entry asks for; checked for staleness when it pops.
#[derive(Clone, Copy, Debug)]
enum Timer {
    Idle {
        slot: usize,
        id: u64,
    },
    Delay {
        slot: usize,
        id: u64,
    },
    Shutdown,
    AcceptResume,
    Status,
    Watchdog,
    Refusals,
    Heartbeat,
    Udp {
        index: usize,
        at: Instant,
    },
    Http,
    /// A `--proxy-from` peer's header is due (SPEC §14).
    Header {
        slot: usize,
        id: u64,
    },
    /// The reload check's deadline, or a look for its exit (SPEC §13).
    Reload,
}

/// The whole daemon state; see the module docs for one turn.
pub struct Server {
    backend: Box<dyn Backend>,
    config: Config,
    listeners: Vec<Option<Endpoint>>,
    gate: accept::Gate,
    conns: conns::Conns,
    timers: Timers<Timer>,
    signals: Signals,
    scratch: Box<[u8]>,
    clock: Clock,
    stats: Stats,
    /// `--allow`/`--deny` and the per-source table (SPEC §10).
    access: Access,
    status: status::Status,
    now: Instant,
    draining: bool,
    udp: udp::Udp,
    /// `--metrics` (see `metrics.rs`).
    http: Option<crate::serve::metrics::Http>,
    /// A reload waiting for its check (SIGHUP, `reload.rs`).
    reloading: Option<reload::Reloading>,
    /// A worker of `--workers`: its number, supervisor and shared region, which its reload
    /// state carries (`WRKR`) so that the new image comes back as the same worker.
    worker: Option<crate::process::supervisor::handover::WorkerShape>,
}

impl Server {
    /// Register listeners and the signal pipe with `backend`; nothing runs until [`Server::run`].
    /// `access` is `config.access` compiled: over a table of its own, or with `--workers` over
    /// the per-source table the supervisor shares between its workers.
    pub fn new(
        mut backend: Box<dyn Backend>,
        config: Config,
        access: Access,
        listeners: Vec<Endpoint>,
        signals: Signals,
        notifier: Option<Notifier>,
    ) -> Result<Server, Error> {
        let name = backend.name();
        let fatal = |source| Error::Backend { name, source };
        let token = Target::Signal.into();
        backend
            .set_interest(signals.fd(), token, Interest::NONE, Interest::READ)
            .map_err(fatal)?;
        let (datagram, listeners): (Vec<_>, Vec<_>) =
            listeners.into_iter().partition(Endpoint::is_datagram);
        let nodelay = accept::register(backend.as_mut(), &listeners, config.keepalive)?;
        let udp = udp::Udp::new(backend.as_mut(), datagram, config.udp_loop_detect)?;
        let now = Instant::now();
        let mut gate = accept::Gate::new(nodelay);
        gate.trusted = crate::policy::proxy::Trusted::new(&config.proxy_from);
        Ok(Server {
            backend,
            access,
            config,
            listeners: listeners.into_iter().map(Some).collect(),
            gate,
            conns: conns::Conns::default(),
            timers: Timers::default(),
            signals,
            scratch: vec![0u8; SCRATCH].into_boxed_slice(),
            clock: Clock::default(),
            stats: Stats::new(now),
            status: status::Status::new(notifier),
            now,
            draining: false,
            udp,
            http: None,
            reloading: None,
            worker: None,
        })
    }

    /// Serve as worker `seat.number` of a supervisor (SPEC §8): count into its shared slot,
    /// name it in the stats line, and turn the loop at least once a second (the heartbeat).
    pub fn worker(mut self, shape: crate::process::supervisor::handover::WorkerShape) -> Server {
        let seat = shape.seat();
        self.stats = Stats::for_worker(seat, self.now);
        self.worker = Some(shape);
        // SPEC §10: the supervisor logs refusals for the whole daemon; a worker counts them.
        self.gate.refusals = crate::policy::refusal::RefusalLog::to_supervisor(seat.slot);
        self.timers.add(self.now, Timer::Heartbeat);
        self
    }

    /// Serve until a signal's drain is done. Only a failing backend is an error.
    pub fn run(mut self) -> Result<(), Error> {
        self.status.ready(self.now, &mut self.timers);
        crate::pidfile::publish();
        turn::run(&mut self, 1024)
    }

    /// End of turn: closed slots given back, stale timers purged, the open count published
    /// (stats, systemd's STATUS=); and once a drain has nothing left, the exit.
    fn end_of_turn(&mut self) -> Option<()> {
        self.conns.end_turn();
        self.compact_timers();
        let open = self.conns.open();
        self.stats.turn(open, self.now);
        self.status.report(open, self.now, &mut self.timers);
        if self.draining && open == 0 && self.udp.queued() == 0 {
            self.gate
                .refusals
                .flush(later(self.now, crate::policy::refusal::EVERY));
            info!("drain complete: exiting");
            return Some(());
        }
        None
    }

    fn dispatch(&mut self, ev: Event) {
        match Target::from(ev.token) {
            Target::Signal => self.on_signals(),
            Target::Listener(i) => {
                self.accept(i);
            }
            Target::Udp(i) => self.on_udp_event(i, ev.readable, ev.writable),
            Target::Http => self.on_http(ev.token),
            Target::Reload => self.on_check_output(),
            Target::Conn(slot) if self.header_pending(slot) => self.on_header(slot),
            Target::Conn(slot) => {
                let (readable, writable) = (ev.readable, ev.writable);
                self.with_conn(slot, |conn, scratch, ctx| {
                    let mut step = Step::Keep;
                    if readable && conn.registered().read {
                        step = conn.on_readable(scratch, ctx);
                    }
                    if step == Step::Keep && writable && conn.registered().write {
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
        let delay = self.turn_delay();
        let Some(conn) = self.conns.at(slot) else {
            return;
        };
        let mut ctx = Ctx {
            mode: self.config.mode,
            delay,
            max_buffer: self.config.max_buffer,
            now: self.now,
            clock: &mut self.clock,
            stats: &mut self.stats,
        };
        let step = f(conn, &mut self.scratch, &mut ctx);
        if step == Step::Close {
            return self.close(slot, End::Failed);
        }
        if conn.finished() {
            return self.close(slot, End::Done);
        }
        if let Some(due) = conn.delay_timer_needed() {
            self.timers.add(due, Timer::Delay { slot, id: conn.id });
        }
        if let Err(e) = conn.sync_interest(self.backend.as_mut(), Target::Conn(slot).into()) {
            warn!(
                "cannot update poller interest for fd {}: {}",
                conn.fd(),
                Plain(&e)
            );
            self.close(slot, End::Poller);
        }
    }

    /// How long input is held this turn, for connections and UDP sockets alike: `--delay`,
    /// or nothing once draining (what is held is answered at once).
    fn turn_delay(&self) -> Duration {
        if self.draining {
            Duration::ZERO
        } else {
            self.config.delay
        }
    }

    fn on_timer(&mut self, timer: Timer) {
        match timer {
            Timer::Idle { slot, id } => {
                let Some(idle) = self.config.idle_timeout else {
                    return;
                };
                let Some(conn) = self.conns.get(slot, id) else {
                    return;
                };
                // Held or unsent output: not idle; look again one idle period from now.
                let quiet_until = later(conn.idle_since().unwrap_or(self.now), idle);
                if quiet_until <= self.now {
                    self.close(slot, End::Idle);
                } else {
                    self.timers.add(quiet_until, Timer::Idle { slot, id });
                }
            }
            Timer::Delay { slot, id } => {
                if self.conns.is_live(slot, id) {
                    self.with_conn(slot, |conn, _, ctx| conn.on_delay_timer(ctx));
                }
            }
            Timer::Shutdown if self.draining => self.cut_off("shutdown timeout reached"),
            Timer::AcceptResume if !self.draining => self.set_listening(Interest::READ),
            Timer::Shutdown | Timer::AcceptResume => {}
            Timer::Status => {
                let open = self.conns.open();
                self.status.on_timer(open, self.now, &mut self.timers);
            }
            Timer::Watchdog => self.status.on_watchdog(self.now, &mut self.timers),
            Timer::Refusals => self.flush_refusals(),
            Timer::Heartbeat => self
                .timers
                .add(later(self.now, HEARTBEAT), Timer::Heartbeat),
            Timer::Udp { index, at } => self.on_udp_timer(index, at),
            Timer::Http => self.on_http_timer(),
            Timer::Header { slot, id } => self.header_deadline(slot, id),
            Timer::Reload => self.on_reload_timer(),
        }
    }

    /// Cancelled timers stay queued until due (lazy deletion): with --idle-timeout 1h, every
    /// short connection would leave an entry for an hour. Purge the stale ones once they
    /// outnumber the live ones (at most two per connection); amortised O(1) per entry.
    fn compact_timers(&mut self) {
        if self.timers.len() <= 4 * self.conns.open() + 64 {
            return;
        }
        let conns = &self.conns;
        self.timers.retain(|t| match *t {
            Timer::Idle { slot, id } | Timer::Delay { slot, id } | Timer::Header { slot, id } => {
                conns.is_live(slot, id)
            }
            _ => true,
        });
    }
}

impl turn::Duties for Server {
    type Exit = ();

    fn backend(&mut self) -> &mut dyn Backend {
        self.backend.as_mut()
    }

    fn timeout(&mut self, now: Instant) -> Option<Duration> {
        self.timers.timeout(now)
    }

    fn after_sleep(&mut self, now: Instant) {
        self.now = now;
    }

    fn on_event(&mut self, ev: Event) {
        self.dispatch(ev);
    }

    fn on_timers(&mut self) -> Result<Option<()>, Error> {
        while let Some(t) = self.timers.pop_due(self.now) {
            self.on_timer(t);
        }
        Ok(None)
    }

    fn before_sleep(&mut self) -> Option<()> {
        self.end_of_turn()
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
