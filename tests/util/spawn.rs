//! Starting a daemon: the [`Builder`], and waiting for its `listening on` lines.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{capture, wait_captured, Addr, Daemon, BIN, START_TIMEOUT};

/// How to start a daemon: `Daemon::with("poll").args(&["--mode", "stamp"]).spawn()`.
pub struct Builder {
    pub(super) backend: &'static str,
    pub(super) backend_flag: bool,
    pub(super) args: Vec<String>,
    pub(super) nofile: Option<(u64, u64)>,
    pub(super) env: Vec<(String, String)>,
}

impl Builder {
    /// Add command-line arguments (after `--backend`).
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|s| s.to_string()));
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

    /// Set an environment variable for the daemon.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Start the daemon and wait for its listening line(s). `None` (with a note on stdout) in
    /// external-server mode, where the test cannot choose options or send signals.
    pub fn spawn(self) -> Option<Daemon> {
        if let Ok(addr) = std::env::var("ECHO_MUX_ADDR") {
            println!(
                "note: ECHO_MUX_ADDR={addr} is set; skipping a test that starts its own daemon"
            );
            return None;
        }
        Some(self.spawn_local())
    }

    pub(super) fn spawn_local(mut self) -> Daemon {
        super::lift_nofile();
        let mut listeners = self
            .args
            .iter()
            .filter(|a| *a == "--listen" || *a == "-l")
            .count();
        if listeners == 0 {
            self.args
                .splice(0..0, ["--listen".into(), "127.0.0.1:0".into()]);
            listeners = 1;
        }
        if self.backend_flag {
            self.args
                .splice(0..0, ["--backend".into(), self.backend.into()]);
        }
        let mut cmd = Command::new(BIN);
        cmd.args(&self.args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd.env_remove("RUST_LOG").env_remove("RUST_BACKTRACE");
        cmd.env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("NOTIFY_SOCKET");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if let Some((soft, hard)) = self.nofile {
            let set = move || {
                use nix::sys::resource::{setrlimit, Resource};
                setrlimit(Resource::RLIMIT_NOFILE, soft, hard).map_err(io::Error::from)
            };
            // SAFETY: the closure only calls setrlimit(2), which is async-signal-safe, and
            // touches no memory shared with the parent.
            unsafe { cmd.pre_exec(set) };
        }
        let mut line = format!("{BIN} {}", self.args.join(" "));
        if let Some((soft, hard)) = self.nofile {
            line = format!("(RLIMIT_NOFILE={soft}:{hard}) {line}");
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {line}: {e}"));
        let out = capture(child.stderr.take().unwrap());
        let mut d = Daemon {
            pid: child.id() as i32,
            child: Some(child),
            cmd: line,
            out,
            addrs: Vec::new(),
            status: None,
            backend: self.backend,
            reported: Default::default(),
        };
        let found = wait_captured(&d.out, START_TIMEOUT, |c| {
            let addrs = listening_addrs(&c.text);
            (addrs.len() >= listeners).then_some(addrs)
        });
        match found {
            Some(addrs) => d.addrs = addrs,
            None => {
                let why = match d.try_wait_exit(Duration::from_millis(200)) {
                    Some(_) => "the daemon exited first".to_string(),
                    None => format!("none within {START_TIMEOUT:?}"),
                };
                d.fail(&format!("want {listeners} `listening on` line(s): {why}"));
            }
        }
        d
    }
}

/// The addresses of every complete `listening on ADDR (backend NAME)` line in `text`.
fn listening_addrs(text: &str) -> Vec<Addr> {
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    complete
        .lines()
        .filter_map(|l| {
            let rest = &l[l.find("listening on ")? + "listening on ".len()..];
            Addr::parse(&rest[..rest.find(" (backend")?])
        })
        .collect()
}
