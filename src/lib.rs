//! echo-mux: a one-thread TCP and unix-socket echo daemon with a hand-written reactor.
//!
//! ```text
//!  main.rs ─ cli::parse ─► Config ─► run()
//!                                     │ listen.rs   bind --listen addresses, or adopt systemd's
//!                                     │ reactor/    open(epoll | poll | select) behind `Backend`
//!                                     │ signal.rs   self-pipe, registered like any socket
//!                                     ▼
//!  server/mod.rs  loop { wait(nearest deadline) → dispatch(Signal | Listener | Udp | Conn) → timers }
//!     accept.rs   listener registration; accept gate: --max-clients, EMFILE pause, backend refusals
//!     wait.rs     open the poller; one turn's wait (log flush, EINTR) for every loop
//!     signals.rs  the signal pipe's requests: drain, stats line, SIGHUP
//!     drain.rs    SIGTERM/SIGINT drain, its deadline, the cut-off
//!     stats.rs    counters and the SIGUSR1 line     status.rs  sd_notify STATUS pacing, watchdog
//!     conns.rs    connection slab (slots reused only after the turn)   source.rs  token layout
//!  conn/mod.rs    per connection: read through the shared buffer → echo.rs (raw | stamp)
//!                 → send at once; only the unsent rest goes to its buffer.rs OutBuf;
//!                 interest computed from state (read unless paused/closed, write iff pending)
//!                 and synced to the poller by the connection itself
//!     held.rs     --delay's held input, counted at what its replies will cost
//!  refusal.rs     refused connections: one info line per reason per second, with a count
//!  udp/           UDP echo: recvmmsg/sendmmsg batches, pktinfo, loop protection, reply queue
//!  timer.rs       deadline heap: --delay, --idle-timeout, drain deadline, accept pause, watchdog
//!  pidfile.rs     --pid-file: prepared at start, renamed into place with READY=1, removed at exit
//!  systemd.rs     sd_notify (READY/STATUS/STOPPING/WATCHDOG) and LISTEN_FDS socket activation
//!  metrics/       --metrics: HTTP/1.1 on the same loop (httparse heads, 8 KiB / 5 s, 64
//!                 connections), /metrics (Prometheus text) and /status (JSON) from one View
//!  status.rs      `echo-mux status [ADDR] [--json]`: GET /status, printed as a table
//!
//!  --workers N > 1: supervisor/ binds every listener, forks N of the above (each its own
//!     poller), reaps and replaces them; shared.rs is the MAP_SHARED region they count in;
//!     the supervisor serves --metrics from it (workers render nothing)
//! ```
//!
//! The seam is [`reactor::Backend`]: its doc comment is the contract every backend keeps.
//! Policy (EINTR, fatal errors, backpressure, closing) lives once, above it, in `server/`
//! and `conn/`; the three backends only translate.
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod access;
mod buffer;
pub mod cli;
pub mod config;
mod conn;
pub mod duration;
mod echo;
pub mod error;
pub mod listen;
pub mod logging;
mod metrics;
pub mod pidfile;
pub mod proxy;
pub mod reactor;
mod refusal;
mod server;
pub mod shared;
mod signal;
pub mod status;
pub mod supervisor;
pub mod sys;
pub mod systemd;
mod timer;
mod udp;

use config::Config;
use error::Error;
use listen::Listener;
use reactor::BackendKind;
use signal::Signals;

/// Run the daemon until a signal's drain completes.
///
/// The order matters. Inherited descriptors come first, before this process opens anything
/// that could take a number `LISTEN_FDS` claims. Signal handlers come next, before any
/// listener exists: from the first socket file on, a SIGTERM is a clean drain that removes
/// it, never a kill that leaves it behind.
pub fn run(config: Config) -> Result<(), Error> {
    config.check().map_err(Error::Usage)?;
    let (inherited, metrics_fd) = metrics::split_inherited(systemd::listen_fds_named()?);
    let signals = Signals::install().map_err(|e| Error::io("cannot install signal handlers", e))?;
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
    let http = metrics::open(&config, metrics_fd)?;
    if config.workers > 1 {
        return supervisor::run(config, inherited, signals, http);
    }
    let kind = config.backend.resolve();
    let backend = server::open_backend(config.backend)?;
    let listeners = match inherited {
        Some(fds) => listen::adopt(fds, &config),
        None => config
            .listen
            .iter()
            .map(|addr| Listener::bind_with(addr, false, config.socket_mode))
            .collect::<Result<Vec<_>, _>>()?,
    };
    if kind == BackendKind::Select {
        listen::select_can_watch(&listeners, signals.fd())?;
    }
    let notifier = systemd::Notifier::from_env();
    let access = access::Access::new(&config.access, std::time::Instant::now())
        .map_err(|e| Error::io("cannot map the per-source table", e))?;
    server::Server::new(backend, config, access, listeners, signals, notifier)?
        .with_metrics(http)?
        .run()
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
