//! echo-mux: a one-thread TCP, UDP and unix-socket echo daemon with a hand-written reactor.
//!
//! The folders are the layers; imports run only downward (docs/architecture.md has one line
//! per module):
//!
//! ```text
//!  main.rs ─ cli.rs ─► Config ─► run()   (status.rs: the `echo-mux status` client)
//!  process/    the two process shapes, each the loop core plus its own duties
//!     server/      the serving loop (one process, or one worker): dispatch by token.rs's
//!                  Target; accept.rs, proxied.rs, conns.rs, closed.rs, drain.rs,
//!                  signals.rs, status.rs, udp.rs, metrics.rs
//!     supervisor/  --workers N: bind once, fork, reap, replace; serves --metrics for all
//!  config.rs   the validated configuration, handing each layer its part
//!  serve/      conn/ (stream echo), udp/ (datagram echo), metrics/ (HTTP), echo.rs, buffer.rs
//!  policy/     access/ (--allow/--deny, the per-source table), proxy/ (PROXY header trust
//!              and parser), refusal.rs (one line a second)
//!  stats.rs    Stats, Totals, the SIGUSR1 Line; shared/ the MAP_SHARED ledgers of workers
//!  net/        addr.rs (one canonical form), listen/ (bind, activation, groups), keepalive.rs
//!  event/      reactor/ (epoll | poll | select), turn.rs (the loop skeleton), wait.rs,
//!              timer.rs, signal.rs (one self-pipe), pacer.rs
//!  ground      logging/, systemd.rs, pidfile.rs, privilege.rs, sys.rs, error.rs, duration.rs
//! ```
//!
//! The seam is [`event::reactor::Backend`]: its doc comment is the contract every backend
//! keeps. Policy (EINTR, fatal errors, backpressure, closing) lives once, above it, in
//! `event/wait.rs`, `process/server/` and `serve/conn/`; the three backends only translate.
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod cli;
pub mod config;
pub mod duration;
pub mod error;
pub mod event;
pub mod logging;
pub mod net;
pub mod pidfile;
pub mod policy;
pub mod privilege;
pub mod process;
pub mod reload;
pub(crate) mod serve;
pub mod shared;
mod stats;
pub mod status;
pub mod sys;
pub mod systemd;
pub mod version;

use config::Config;
use error::Error;
use event::reactor::BackendKind;
use event::signal::Signals;

/// Run the daemon until a signal's drain completes.
///
/// The order matters. Inherited descriptors come first, before this process opens anything
/// that could take a number `LISTEN_FDS` claims. Signal handlers come next, before any
/// listener exists: from the first socket file on, a SIGTERM is a clean drain that removes
/// it, never a kill that leaves it behind.
pub fn run(config: Config) -> Result<(), Error> {
    config.check().map_err(Error::Usage)?;
    // A reload's new image (SPEC §13): the state's memfd is read and closed before anything
    // else is opened.
    let handed = reload::state::take_inherited()
        .map_err(|e| Error::io("cannot read the state handed over by the reload", e))?;
    if let Some(bytes) = handed {
        return run_adopted(config, &bytes);
    }
    if let Some(target) = &config.privileges {
        privilege::check(target)?;
    }
    let (inherited, metrics_fd) =
        serve::metrics::split_inherited(net::listen::activation::listen_fds_named()?);
    let signals = Signals::install().map_err(|e| Error::io("cannot install signal handlers", e))?;
    reload::exec::unblock_signals();
    if let Some(path) = &config.pid_file {
        pidfile::prepare(path)?;
    }
    match sys::raise_nofile_limit() {
        Ok(limit) => log::debug!("RLIMIT_NOFILE soft limit is {limit}"),
        Err(e) => log::warn!("cannot raise RLIMIT_NOFILE: {}", error::Plain(&e)),
    }
    if config.backend.resolve() == BackendKind::Select {
        let listeners = inherited.as_ref().map_or(config.listen.len(), Vec::len);
        warn_select_capacity(&config, listeners);
    }
    let http = serve::metrics::open(config.metrics.as_ref(), config.socket_mode, metrics_fd)?;
    if config.workers > 1 {
        return process::supervisor::run(config, inherited, signals, http);
    }
    let kind = config.backend.resolve();
    let backend = crate::event::wait::open_backend(config.backend)?;
    let listeners = net::listen::group::open(&config.wanted(), inherited)?;
    if kind == BackendKind::Select {
        net::listen::select_can_watch(&listeners, signals.fd())?;
    }
    let files = listeners
        .iter()
        .filter_map(net::listen::Endpoint::socket_file);
    let files = files.chain(http.as_ref().and_then(serve::metrics::Http::socket_file));
    privilege::after_binding(config.privileges.as_ref(), files)?;
    let notifier = systemd::Notifier::from_env();
    let access = policy::access::Access::new(&config.access, std::time::Instant::now())
        .map_err(|e| Error::io("cannot map the per-source table", e))?;
    process::server::Server::new(backend, config, access, listeners, signals, notifier)?
        .with_metrics(http)?
        .run()
}

/// The new image of a reload of the one-process daemon (SPEC §13): every descriptor and
/// the state the old image handed over are adopted (no listener is bound again, the pid
/// file stays as it is), the handlers installed and the signals the old image blocked
/// before its execve unblocked; then the server serves on, `READY=1` said again.
fn run_adopted(config: Config, bytes: &[u8]) -> Result<(), Error> {
    reload::set_adopted();
    let fail = |why: String| {
        Error::io(
            "cannot take over from the reload",
            std::io::Error::other(why),
        )
    };
    // With --workers the supervisor's state is its own (`SUPV`); a worker's is the serving
    // loop's with its worker section first.
    let mut r = reload::state::Reader::new(bytes).map_err(|e| fail(e.to_string()))?;
    if reload::state::Shape::read(&mut r).map_err(|e| fail(e.to_string()))?
        == reload::state::Shape::Supervisor
    {
        let signals =
            Signals::install().map_err(|e| Error::io("cannot install signal handlers", e))?;
        if let Some(path) = &config.pid_file {
            pidfile::adopt(path);
        }
        if let Err(e) = sys::raise_nofile_limit() {
            log::warn!("cannot raise RLIMIT_NOFILE: {}", error::Plain(&e));
        }
        return process::supervisor::resume(config, &mut r, signals);
    }
    let mut handed = process::server::Handed::read(bytes, &config.access).map_err(fail)?;
    let worker = handed.worker;
    if let Some(w) = &worker {
        crate::logging::set_prefix(format!("worker {}: ", w.number));
        process::supervisor::rejoin(w);
    }
    let signals = Signals::install().map_err(|e| Error::io("cannot install signal handlers", e))?;
    reload::exec::unblock_signals();
    if let (Some(path), None) = (&config.pid_file, &worker) {
        pidfile::adopt(path);
    }
    if let Err(e) = sys::raise_nofile_limit() {
        log::warn!("cannot raise RLIMIT_NOFILE: {}", error::Plain(&e));
    }
    // The old image's epoll instance, with every connection registered in it, when this
    // image uses epoll too (the same command line: it does): nothing to register again.
    let backend = match handed.epoll.take() {
        #[cfg(target_os = "linux")]
        Some(ep) if config.backend.resolve() == BackendKind::Epoll => {
            handed.registered = true;
            event::reactor::adopt_epoll(ep)
        }
        _ => crate::event::wait::open_backend(config.backend)?,
    };
    let listeners = std::mem::take(&mut handed.listeners);
    if config.backend.resolve() == BackendKind::Select {
        net::listen::select_can_watch(&listeners, signals.fd())?;
    }
    let notifier = systemd::Notifier::from_env();
    let table = handed.table.take();
    let access = match (table, config.access.limits.any()) {
        (Some(table), _) => policy::access::Access::with_table(&config.access, Some(table)),
        (None, _) => policy::access::Access::new(&config.access, std::time::Instant::now())
            .map_err(|e| Error::io("cannot map the per-source table", e))?,
    };
    let http = handed.http.take();
    let mut server =
        process::server::Server::new(backend, config, access, listeners, signals, notifier)?
            .with_metrics(http)?;
    if let Some(w) = worker {
        server = server.worker(w);
    }
    server.adopt(&mut handed).map_err(fail)?;
    server.log_reloaded(&handed);
    if let Some(w) = worker {
        // The supervisor waits for this to move on to the next worker.
        w.seat().reload_completed();
    }
    server.run()
}

/// Descriptors a select process holds besides its connections and listeners (stdio, the
/// signal pipe, spare room for the log and the like): an estimate for the warning below.
const SELECT_RESERVED: usize = 8;

/// `--backend select` watches only descriptors below FD_SETSIZE: a `--max-clients` the user
/// chose above that cannot be reached (the connections past it are closed at accept, SPEC
/// §4). Say so once at start, for one process and for each worker of `--workers` alike.
fn warn_select_capacity(config: &Config, listeners: usize) {
    let room = libc::FD_SETSIZE.saturating_sub(SELECT_RESERVED + listeners);
    if config.max_clients_given && config.max_clients > room {
        log::warn!(
            "--max-clients {} is more than --backend select can watch: about {room} connections \
             (descriptors below FD_SETSIZE, {}); more are closed at accept (use --backend poll or epoll)",
            config.max_clients,
            libc::FD_SETSIZE
        );
    }
}
