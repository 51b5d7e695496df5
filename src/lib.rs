//! echo-mux: a one-thread TCP and unix-socket echo daemon with a hand-written reactor.
//!
//! ```text
//!  main.rs ─ cli::parse ─► Config ─► run()
//!                                     │ listen.rs   bind --listen addresses, or adopt systemd's
//!                                     │ reactor/    open(epoll | poll | select) behind `Backend`
//!                                     │ signal.rs   self-pipe, registered like any socket
//!                                     ▼
//!  server/mod.rs  loop { wait(nearest deadline) → dispatch(Signal | Listener | Udp | Conn) → timers }
//!     accept.rs   accept gate: --max-clients, EMFILE pause, backend refusals
//!     drain.rs    SIGTERM/SIGINT drain, its deadline, the cut-off
//!     stats.rs    counters and the SIGUSR1 line     status.rs  sd_notify STATUS pacing, watchdog
//!     conns.rs    connection slab (slots reused only after the turn)   source.rs  token layout
//!  conn.rs        per connection: read through the shared buffer → echo.rs (raw | stamp)
//!                 → send at once; only the unsent rest goes to its buffer.rs OutBuf;
//!                 interest computed from state (read unless paused/closed, write iff pending)
//!                 and synced to the poller by the connection itself
//!  refusal.rs     refused connections: one info line per reason per second, with a count
//!  udp/           UDP echo: recvmmsg/sendmmsg batches, pktinfo, loop protection, reply queue
//!  timer.rs       deadline heap: --delay, --idle-timeout, drain deadline, accept pause, watchdog
//!  systemd.rs     sd_notify (READY/STATUS/STOPPING/WATCHDOG) and LISTEN_FDS socket activation
//! ```
//!
//! The seam is [`reactor::Backend`]: its doc comment is the contract every backend keeps.
//! Policy (EINTR, fatal errors, backpressure, closing) lives once, above it, in `server/`
//! and `conn.rs`; the three backends only translate.
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

mod buffer;
pub mod cli;
pub mod config;
mod conn;
mod echo;
pub mod error;
pub mod listen;
pub mod reactor;
mod refusal;
mod server;
mod signal;
pub mod sys;
pub mod systemd;
mod timer;
mod udp;

use std::io::Write;

use config::Config;
use error::Error;
use listen::Listener;

/// Run the daemon until a signal's drain completes.
pub fn run(config: Config) -> Result<(), Error> {
    match sys::raise_nofile_limit() {
        Ok(limit) => log::debug!("RLIMIT_NOFILE soft limit is {limit}"),
        Err(e) => log::warn!("cannot raise RLIMIT_NOFILE: {e}"),
    }
    let backend = reactor::open(config.backend).map_err(|source| Error::Backend {
        name: config.backend.resolve().name(),
        source,
    })?;
    let listeners = match systemd::listen_fds()? {
        Some(fds) => {
            log::info!(
                "socket activation: serving {} inherited sockets; --listen is ignored",
                fds.len()
            );
            fds.into_iter().map(Listener::inherited).collect()
        }
        None => config
            .listen
            .iter()
            .map(Listener::bind)
            .collect::<Result<Vec<_>, _>>()?,
    };
    let signals =
        signal::Signals::install().map_err(|e| Error::io("cannot install signal handlers", e))?;
    let notifier = systemd::Notifier::from_env();
    server::Server::new(backend, config, listeners, signals, notifier)?.run()
}

/// Log to stderr at `level` unless `RUST_LOG` says otherwise. Under systemd (JOURNAL_STREAM
/// set) lines carry `<N>` priority prefixes for journald instead of timestamps.
pub fn init_logging(level: log::LevelFilter) {
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    builder.format(move |f, record| {
        if journald {
            let prio = match record.level() {
                log::Level::Error => 3,
                log::Level::Warn => 4,
                log::Level::Info => 6,
                log::Level::Debug | log::Level::Trace => 7,
            };
            writeln!(f, "<{prio}>{}", record.args())
        } else {
            let ts = f.timestamp_millis();
            writeln!(f, "[{ts} {:<5}] {}", record.level(), record.args())
        }
    });
    builder.init();
}
