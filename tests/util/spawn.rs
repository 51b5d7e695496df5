//! How to start a daemon: the [`Builder`] and its options.

use std::os::fd::OwnedFd;

use super::{Daemon, Run, RUN_LIMIT};

/// How to start a daemon: `Daemon::with("poll").args(&["--mode", "stamp"]).spawn()`.
pub struct Builder {
    pub(super) backend: &'static str,
    pub(super) backend_flag: bool,
    pub(super) args: Vec<String>,
    pub(super) nofile: Option<(u64, u64)>,
    pub(super) env: Vec<(String, String)>,
    pub(super) via: Via,
    pub(super) listeners: Option<usize>,
    /// The binary to start instead of the one cargo built (a copy, a wrapper script).
    pub(super) program: Option<String>,
}

/// Where the daemon's listeners come from.
pub(super) enum Via {
    /// Its own `--listen` options (`127.0.0.1:0` unless the test gives some).
    Options,
    /// `systemd-socket-activate`, one `-l` for each spec the closure makes from a free port.
    Activator(Box<dyn Fn(u16) -> Vec<String>>),
    /// Descriptors 3, 4, … with `LISTEN_FDS` and `LISTEN_PID`, as systemd passes them.
    Inherited(Vec<OwnedFd>),
}

impl Builder {
    pub(super) fn new(backend: &'static str) -> Builder {
        Builder {
            backend,
            backend_flag: true,
            args: Vec::new(),
            nofile: None,
            env: Vec::new(),
            via: Via::Options,
            listeners: None,
            program: None,
        }
    }

    /// Add command-line arguments (after `--backend`).
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|s| s.to_string()));
        self
    }

    /// Start `path` instead of the binary cargo built (with the daemon's own options).
    pub fn program(mut self, path: &std::path::Path) -> Self {
        self.program = Some(path.to_string_lossy().into_owned());
        self
    }

    /// Leave `--backend` off the command line (to test the default).
    pub fn without_backend_flag(mut self) -> Self {
        self.backend_flag = false;
        self
    }

    /// Start the daemon with soft and hard RLIMIT_NOFILE set to `n`.
    pub fn nofile(self, n: u64) -> Self {
        self.nofile_limits(n, n)
    }

    /// Start the daemon with RLIMIT_NOFILE set to `soft` and `hard`.
    pub fn nofile_limits(mut self, soft: u64, hard: u64) -> Self {
        self.nofile = Some((soft, hard));
        self
    }

    /// Set an environment variable for the daemon. (The systemd protocol variables and
    /// `RUST_LOG` of the test's own environment never reach it; only the ones set here.)
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// `NOTIFY_SOCKET=socket`: where the daemon sends its sd_notify datagrams.
    pub fn notify_socket(self, socket: &str) -> Self {
        self.env("NOTIFY_SOCKET", socket)
    }

    /// Start the daemon under `systemd-socket-activate`, with one `-l` for each entry of
    /// `listen(port)`, `port` being one that was free a moment ago (a fresh one is tried if
    /// another process takes it first). The tool binds the sockets and execs the daemon in
    /// the same process on the first connection, passing them as descriptors 3, 4, …;
    /// [`Daemon::addrs`] are the specs, ready to connect to as soon as `spawn` returns.
    pub fn socket_activated(mut self, listen: impl Fn(u16) -> Vec<String> + 'static) -> Self {
        self.via = Via::Activator(Box::new(listen));
        self
    }

    /// Pass `fds` as descriptors 3, 4, … with `LISTEN_FDS` set to their count and
    /// `LISTEN_PID` to the daemon's pid, as systemd does (either variable set with
    /// [`Builder::env`] wins, to test wrong values). The daemon gets no `--listen`, and
    /// `spawn` waits for one listening line per descriptor.
    pub fn inherit(mut self, fds: Vec<OwnedFd>) -> Self {
        self.via = Via::Inherited(fds);
        self
    }

    /// How many `listening on` lines `spawn` waits for (by default one per `--listen`, or
    /// per inherited descriptor).
    pub fn expect_listeners(mut self, n: usize) -> Self {
        self.listeners = Some(n);
        self
    }

    /// Start the daemon and wait until it is ready: its listening line(s), or under
    /// `systemd-socket-activate` the tool's. `None` (with a note on stdout) in
    /// external-server mode, where the test cannot choose options or send signals.
    pub fn spawn(self) -> Option<Daemon> {
        if let Ok(addr) = std::env::var("ECHO_MUX_ADDR") {
            println!(
                "note: ECHO_MUX_ADDR={addr} is set; skipping a test that starts its own daemon"
            );
            return None;
        }
        Some(self.launch())
    }

    /// Run the daemon set up like this to completion, killed after [`RUN_LIMIT`]: for
    /// startups that must fail. (Not under `systemd-socket-activate`, which waits for a
    /// connection before it starts the daemon.)
    pub fn run(self) -> Run {
        assert!(
            !matches!(self.via, Via::Activator(_)),
            "Builder::run: an activated daemon starts only on a connection; use spawn"
        );
        let (cmd, line) = self.command(&[]);
        super::run_command(cmd, line, RUN_LIMIT)
    }
}
