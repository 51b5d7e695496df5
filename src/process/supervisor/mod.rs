//! `--workers N` (SPEC §8): a supervisor that forks N workers, each the one-thread daemon of
//! §1-§7, and keeps them running. nginx's master process, kept boring on purpose:
//!
//! - It owns processes, never connections: it binds the listeners, forks, and then only
//!   watches its signal pipes and a timer through the project's own reactor.
//! - Everything it knows about a worker comes from `waitpid` and from the shared region
//!   (`shared.rs`: counters, heartbeat, readiness); there is no pipe protocol to block on.
//! - Reaping: SIGCHLD writes to its own self-pipe; `waitpid(-1, WNOHANG)` then runs until
//!   nothing is left, so exits that arrive together never leave a zombie. A worker's pid is
//!   only signalled before it has been reaped, so it can never name a recycled process.
//! - Replacing: a worker that ends outside a shutdown comes back under the same number
//!   after a back-off (100 ms doubling to 10 s, reset once it has run 30 s); one that has
//!   not turned its loop for 5 s is killed with SIGKILL first.
//! - Shutdown: SIGTERM/SIGINT closes the supervisor's listeners, is forwarded to every
//!   worker (a second one too), and the supervisor exits 0 once all are reaped.
//!   SIGQUIT does the same with SIGQUIT (each worker closes everything at once).
//! - Refusals: workers count them per reason in their slots; the supervisor alone logs the
//!   once-a-second line per reason for the whole daemon (SPEC §10, `report.rs`).

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::config::Config;
use crate::error::Error;
use crate::event::reactor::{Backend, BackendKind, Event, Interest, Token};
use crate::event::signal::{Request, Signals};
use crate::event::timer::Timers;
use crate::event::turn;
use crate::policy::access::{Access, SourceTable};
use crate::serve::metrics::{Generations, Http};
use crate::shared::Region;
use crate::systemd::{self, Notifier};

pub(crate) mod handover;
mod life;
mod metrics;
mod reload;
mod report;
mod sources;
mod spawn;

use crate::net::listen::group::Endpoints;
pub(crate) use spawn::rejoin;
use spawn::{Forked, WorkerStart};

/// A worker whose loop has not turned for this long is wedged.
const WEDGED_AFTER: Duration = Duration::from_secs(5);
/// A worker's reload (its check child, the exec, the new image's start and adoption) that
/// has not completed in this long is wedged: it is killed and replaced.
const RELOAD_PATIENCE: Duration = Duration::from_secs(30);
/// How often heartbeats, exits and the systemd status are checked.
const CHECK_EVERY: Duration = Duration::from_millis(500);
/// How often readiness is polled until every worker accepts.
const READY_POLL: Duration = Duration::from_millis(10);

const SIGNALS: Token = Token(0);
/// `--metrics`: the listener, then its connections (`crate::serve::metrics::TOKENS` tokens).
const HTTP_BASE: usize = 1;

#[derive(Clone, Copy, Debug)]
enum Tick {
    Spawn(usize),
    Check,
    Refusals,
    Ready,
    Watchdog(Duration),
    Http,
    /// A reload waits for a worker's (see `reload.rs`).
    Reload,
}

/// One worker number's history.
struct Worker {
    pid: Option<Pid>,
    life: life::Life,
    /// Killed by us for missing heartbeats.
    wedged: bool,
    /// When its replacement is due, while it has none (handed over by a reload).
    respawn_at: Option<Instant>,
}

struct Supervisor {
    config: Config,
    backend: Box<dyn Backend>,
    signals: Signals,
    notifier: Option<Notifier>,
    listeners: Endpoints,
    region: &'static Region,
    /// The per-source table in `region`'s extra block, when a per-source limit is set
    /// (SPEC §10: the limits hold for the daemon as a whole).
    table: Option<SourceTable>,
    workers: Vec<Worker>,
    /// The refusal log for the whole daemon (SPEC §10), fed from the workers' slots.
    refusals: crate::policy::refusal::RefusalLog,
    /// Per worker: what of its slot's refusal counts the log has had.
    refusals_seen: Vec<report::Seen>,
    timers: Timers<Tick>,
    me: Pid,
    started: Instant,
    now: Instant,
    /// When the last heartbeat check ran, to notice that the supervisor itself stalled.
    last_check: Instant,
    /// Heartbeats older than this do not count against a worker (see `check_heartbeats`).
    judged_from: Instant,
    stopping: bool,
    ready_sent: bool,
    status_sent: Option<(u64, usize)>,
    /// `--metrics`, served here from the shared counters (see `metrics.rs`).
    http: Option<Http>,
    /// Each worker number's earlier generations and restarts, for the per-worker series.
    generations: Generations,
    /// The reload under way (SIGHUP, SPEC §13; see `reload.rs`): its check child, then the
    /// workers one by one.
    checking: Option<(crate::reload::check::Check, Instant)>,
    reloading: Option<reload::Reloading>,
    /// Reloads of the daemon completed since it started (the supervisor's own re-executions).
    reloads: u64,
    /// systemd's variables, taken out of the environment the workers inherit and put back
    /// for the supervisor's new image at a reload.
    systemd_env: Vec<(&'static str, std::ffi::OsString)>,
}

/// What [`Supervisor::serve`] ended as: the supervisor done, or a freshly forked worker.
enum Role {
    Done,
    Worker(usize, nix::sys::signal::SigSet),
}

/// Run the supervisor and its `config.workers` workers until a shutdown completes. In each
/// forked worker this never returns: the worker exits the process when its drain is done.
/// `inherited` and `signals` come from `run()`, which takes them first (see its docs).
pub(crate) fn run(
    config: Config,
    inherited: Option<Vec<OwnedFd>>,
    signals: Signals,
    http: Option<Http>,
) -> Result<(), Error> {
    let mut sup = Supervisor::start(config, inherited, signals)?;
    sup.serve_metrics(http)?;
    // SPEC §13: every socket is bound; the workers are forked as the user already.
    let files = sup.listeners.socket_files();
    let files = files.chain(sup.http.as_ref().and_then(Http::socket_file));
    crate::privilege::after_binding(sup.config.privileges.as_ref(), files)?;
    match sup.serve()? {
        Role::Done => Ok(()),
        Role::Worker(k, mask) => spawn::worker_main(sup.into_worker(k, mask)),
    }
}

/// The supervisor's new image after a reload (SPEC §13): adopt the `SUPV` section of the
/// state in `r` (the shape section read already), finish the reload and serve on. Its workers
/// are the same processes, still its children.
pub(crate) fn resume(
    config: Config,
    r: &mut crate::reload::state::Reader<'_>,
    signals: Signals,
) -> Result<(), Error> {
    crate::logging::set_prefix("supervisor: ".into());
    let mut logs = r
        .section(handover::LOGS)
        .map_err(|e| handover::adopt_error(e.to_string()))?;
    crate::logging::requeue(
        logs.bytes()
            .map_err(|e| handover::adopt_error(e.to_string()))?,
    );
    let adopted = handover::adopt(&config, r).map_err(handover::adopt_error)?;
    let mut sup = Supervisor::resumed(config, adopted, signals)?;
    match sup.serve()? {
        Role::Done => Ok(()),
        Role::Worker(k, mask) => spawn::worker_main(sup.into_worker(k, mask)),
    }
}

/// What a fresh start and a reload's new image both set up first.
struct Basics {
    /// The backend, with the signal pipe in it.
    backend: Box<dyn Backend>,
    notifier: Option<Notifier>,
    systemd_env: Vec<(&'static str, std::ffi::OsString)>,
    /// The periodic ticks: the workers' check, the refusal log, systemd's watchdog.
    timers: Timers<Tick>,
}

impl Basics {
    fn open(config: &Config, signals: &mut Signals, now: Instant) -> Result<Basics, Error> {
        let name = config.backend.resolve().name();
        let mut backend = crate::event::wait::open_backend(config.backend)?;
        signals
            .watch_children()
            .map_err(|e| Error::io("cannot install the SIGCHLD handler", e))?;
        backend
            .set_interest(signals.fd(), SIGNALS, Interest::NONE, Interest::READ)
            .map_err(|source| Error::Backend { name, source })?;
        // Only the supervisor talks to systemd: take the protocol out of the environment
        // the workers inherit (sd_notify(3)'s unset_environment).
        let notifier = Notifier::from_env();
        let watchdog = systemd::watchdog_interval();
        let systemd_env = take_systemd_env();
        let mut timers = Timers::default();
        timers.add(now + CHECK_EVERY, Tick::Check);
        timers.add(now + report::REFUSALS_EVERY, Tick::Refusals);
        if let Some(every) = watchdog {
            timers.add(now + every, Tick::Watchdog(every));
        }
        Ok(Basics {
            backend,
            notifier,
            systemd_env,
            timers,
        })
    }
}

impl Supervisor {
    /// [`Supervisor::start`]'s twin for a reload's new image: everything from `adopted`.
    fn resumed(
        config: Config,
        adopted: handover::Adopted,
        mut signals: Signals,
    ) -> Result<Supervisor, Error> {
        let now = Instant::now();
        let Basics {
            backend,
            notifier,
            systemd_env,
            mut timers,
        } = Basics::open(&config, &mut signals, now)?;
        // Every handler is in: what arrived during the execve is delivered now.
        crate::reload::exec::unblock_signals();
        for (i, seat) in adopted.workers.iter().enumerate() {
            if seat.pid.is_none() {
                timers.add(seat.respawn_at.unwrap_or(now), Tick::Spawn(i + 1));
            }
        }
        if !adopted.ready_sent {
            timers.add(now + READY_POLL, Tick::Ready);
        }
        let n = adopted.workers.len();
        let mut sup = Supervisor {
            config,
            backend,
            signals,
            notifier,
            listeners: adopted.listeners,
            region: adopted.region,
            table: adopted.table,
            refusals: Default::default(),
            refusals_seen: adopted.refusals_seen,
            workers: adopted.workers,
            timers,
            me: nix::unistd::getpid(),
            started: adopted.started,
            now,
            last_check: now,
            judged_from: adopted.judged_from,
            stopping: false,
            ready_sent: adopted.ready_sent,
            status_sent: None,
            http: None,
            generations: adopted.generations,
            checking: None,
            reloading: None,
            reloads: adopted.reloads,
            systemd_env,
        };
        debug_assert_eq!(sup.workers.len(), n);
        sup.serve_metrics(adopted.http)?;
        // A worker that ended while this image was being executed: reaped (and replaced)
        // now, before anything else looks at the table.
        sup.reap();
        sup.reload_completed(&adopted.reloading);
        Ok(sup)
    }

    fn start(
        config: Config,
        inherited: Option<Vec<OwnedFd>>,
        mut signals: Signals,
    ) -> Result<Supervisor, Error> {
        let n = config.workers;
        crate::logging::set_prefix("supervisor: ".into());
        let listeners = Endpoints::open(&config.wanted(), n, inherited)?;
        if config.backend.resolve() == BackendKind::Select {
            listeners.select_can_watch(signals.fd())?;
        }
        let (region, table) = sources::map_region(n, &config.access)?;
        let name = config.backend.resolve().name();
        let now = Instant::now();
        let Basics {
            backend,
            notifier,
            systemd_env,
            mut timers,
        } = Basics::open(&config, &mut signals, now)?;
        for k in 1..=n {
            timers.add(now, Tick::Spawn(k));
        }
        timers.add(now + READY_POLL, Tick::Ready);
        info!(
            "starting {n} workers (backend {name}, {})",
            crate::net::listen::sockets(listeners.len(), "listening")
        );
        let workers = (0..n)
            .map(|_| Worker {
                pid: None,
                life: life::Life::new(now),
                wedged: false,
                respawn_at: None,
            })
            .collect();
        Ok(Supervisor {
            config,
            backend,
            signals,
            notifier,
            listeners,
            region,
            table,
            refusals: Default::default(),
            refusals_seen: vec![Default::default(); n],
            workers,
            timers,
            me: nix::unistd::getpid(),
            started: now,
            now,
            last_check: now,
            judged_from: now,
            stopping: false,
            ready_sent: false,
            status_sent: None,
            http: None,
            generations: Generations::new(n),
            checking: None,
            reloading: None,
            reloads: 0,
            systemd_env,
        })
    }

    /// The loop. Returns `Done` after a shutdown, or `Worker` in a child right after a fork.
    fn serve(&mut self) -> Result<Role, Error> {
        turn::run(self, 4)
    }

    fn on_tick(&mut self, tick: Tick) -> Result<Option<Role>, Error> {
        match tick {
            Tick::Spawn(k) if !self.stopping && self.workers[k - 1].pid.is_none() => {
                return self.spawn(k);
            }
            Tick::Spawn(_) => {}
            Tick::Check => {
                self.reap();
                self.check_heartbeats();
                self.report_status();
                self.timers.add(self.now + CHECK_EVERY, Tick::Check);
            }
            Tick::Ready => {
                if self.region.slots().iter().all(|s| s.is_ready()) {
                    self.ready_sent = true;
                    info!("all {} workers are accepting", self.workers.len());
                    crate::pidfile::publish();
                    if let Some(n) = &self.notifier {
                        n.notify(&format!("READY=1\n{}", self.status_text()));
                        self.status_sent = Some(self.status_key());
                    }
                } else if !self.stopping {
                    self.timers.add(self.now + READY_POLL, Tick::Ready);
                }
            }
            Tick::Refusals => self.on_refusals_tick(),
            Tick::Watchdog(every) => {
                if let Some(n) = &self.notifier {
                    n.notify("WATCHDOG=1");
                }
                self.timers.add(self.now + every, Tick::Watchdog(every));
            }
            Tick::Http => self.on_http_timer(),
            Tick::Reload => self.on_reload_tick(),
        }
        Ok(None)
    }

    /// Fork worker `k`. In the child, returns `Worker(k)` (the caller unwinds to `run`).
    fn spawn(&mut self, k: usize) -> Result<Option<Role>, Error> {
        self.region.prepare(k, self.now);
        match spawn::fork() {
            Ok((Forked::Child, mask)) => {
                crate::logging::after_fork();
                crate::reload::forget_adopted();
                crate::logging::set_prefix(format!("worker {k}: "));
                spawn::become_worker(self.me);
                Ok(Some(Role::Worker(k, mask)))
            }
            Ok((Forked::Parent(pid), _)) => {
                info!("worker {k} started (pid {pid})");
                self.generations.spawned(k);
                let seat = &mut self.workers[k - 1];
                (seat.pid, seat.wedged, seat.respawn_at) = (Some(pid), false, None);
                seat.life.started(self.now);
                self.forked_during_reload(k);
                Ok(None)
            }
            Err(e) => {
                // EAGAIN/ENOMEM: a failed start (SPEC §8): try again after the back-off,
                // which keeps doubling; one warning per try.
                let delay = self.workers[k - 1].life.fork_failed(self.now);
                self.workers[k - 1].respawn_at = Some(self.now + delay);
                self.timers.add(self.now + delay, Tick::Spawn(k));
                warn!(
                    "cannot fork worker {k}: {}; retrying in {delay:?}",
                    crate::error::Plain(&e)
                );
                Ok(None)
            }
        }
    }

    /// In a child right after the fork: keep what worker `k` serves, let go of the rest
    /// (handlers unregistered, pipes, poller and notify socket closed).
    fn into_worker(self, k: usize, mask: nix::sys::signal::SigSet) -> WorkerStart {
        let Supervisor {
            config,
            backend,
            signals,
            notifier,
            listeners,
            region,
            table,
            http,
            me,
            ..
        } = self;
        drop((backend, signals, notifier));
        if let Some(mut http) = http {
            http.disown();
        }
        // The lists are read-only, compiled once before the fork. The table is shared.
        let access = Access::with_table(&config.access, table.map(|t| t.for_worker(k)));
        WorkerStart {
            access,
            config,
            listeners: listeners.for_worker(k),
            shape: handover::WorkerShape {
                number: k,
                supervisor: me,
                region,
            },
            mask,
        }
    }

    fn on_signals(&mut self) {
        for request in self.signals.take() {
            match request {
                Request::Terminate(name) => {
                    self.abandon_reload(name);
                    self.terminate(name)
                }
                Request::Stats => info!("{}", self.stats_line()),
                Request::Hangup => self.on_hangup(),
                Request::Quit => {
                    self.abandon_reload("SIGQUIT");
                    self.quit()
                }
                Request::Stray(name) => info!("{}", crate::event::signal::stray_line(name)),
                Request::Children => self.reap(),
            }
        }
    }

    /// SPEC §8: forward SIGTERM/SIGINT to every worker; the first one also closes the
    /// supervisor's listeners (new connects are refused, socket files removed).
    fn terminate(&mut self, name: &'static str) {
        let sig = if name == "SIGINT" {
            Signal::SIGINT
        } else {
            Signal::SIGTERM
        };
        let live = self.workers.iter().filter(|s| s.pid.is_some()).count();
        if self.stopping {
            info!("second {name}: forwarding it to {live} workers");
        } else {
            info!("{name} received: stopping {live} workers");
            self.stop();
        }
        self.forward(sig);
    }

    /// SIGQUIT (SPEC §5): immediate shutdown. Every worker gets SIGQUIT (each closes
    /// everything and exits 0 at once); the supervisor exits 0 once all are reaped.
    fn quit(&mut self) {
        let live = self.workers.iter().filter(|s| s.pid.is_some()).count();
        info!("SIGQUIT received: closing everything, stopping {live} workers now");
        if !self.stopping {
            self.stop();
        }
        self.forward(Signal::SIGQUIT);
    }

    /// The shutdown begins: no more replacements, listeners closed, systemd told.
    fn stop(&mut self) {
        self.stopping = true;
        if let Some(n) = &self.notifier {
            n.notify("STOPPING=1");
        }
        self.listeners.close();
    }

    /// Send `sig` to every worker not yet reaped (a reaped pid is never signalled).
    fn forward(&self, sig: Signal) {
        for seat in &self.workers {
            if let Some(pid) = seat.pid {
                if let Err(e) = kill(pid, sig) {
                    debug!("kill {pid}: {e}");
                }
            }
        }
    }
}

impl turn::Duties for Supervisor {
    type Exit = Role;

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
        match ev.token {
            SIGNALS => self.on_signals(),
            t if self.http.as_ref().is_some_and(|h| h.owns(t)) => self.on_http(t),
            t => debug!("an event for unknown token {t:?}"),
        }
    }

    /// A tick may fork: in the child it ends the loop at once with `Worker`.
    fn on_timers(&mut self) -> Result<Option<Role>, Error> {
        while let Some(tick) = self.timers.pop_due(self.now) {
            if let Some(role) = self.on_tick(tick)? {
                return Ok(Some(role));
            }
        }
        Ok(None)
    }

    /// Stopping, and every worker reaped: the refusals of the last second are logged now,
    /// not lost, and the loop is done.
    fn before_sleep(&mut self) -> Option<Role> {
        if !(self.stopping && self.workers.iter().all(|s| s.pid.is_none())) {
            return None;
        }
        let end = crate::event::timer::later(self.now, crate::policy::refusal::EVERY);
        self.refusals.flush(end);
        info!("all workers have exited");
        Some(Role::Done)
    }
}

/// systemd's variables: taken out of the environment (only the supervisor talks to systemd,
/// sd_notify(3)'s unset_environment), kept to be put back for a reload's new image.
fn take_systemd_env() -> Vec<(&'static str, std::ffi::OsString)> {
    let mut kept = Vec::new();
    for var in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
        if let Some(value) = std::env::var_os(var) {
            kept.push((var, value));
        }
        std::env::remove_var(var);
    }
    kept
}
