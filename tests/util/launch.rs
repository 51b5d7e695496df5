//! From a [`Builder`] to a running daemon: the command line and environment, descriptors
//! passed the systemd way, and the bounded wait until the daemon is ready.

use std::io::{self, ErrorKind};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::command::not_installed;
use super::spawn::Via;
use super::{capture, wait_captured, Addr, Builder, Daemon, BIN, START_TIMEOUT};

/// Variables of the test's own environment that would switch on a protocol by accident
/// (e.g. when the suite itself runs under systemd); the daemon sees only those a test sets.
const SCRUBBED: [&str; 9] = [
    "RUST_LOG",
    "RUST_BACKTRACE",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "JOURNAL_STREAM",
];

/// Most descriptors [`Builder::inherit`] passes (a fixed array in the forked child).
const MAX_INHERITED: usize = 64;

/// How often a socket-activated start is retried when its free port was taken meanwhile.
const PORT_ATTEMPTS: usize = 5;

impl Builder {
    /// The daemon's arguments: `--backend` first, and `--listen 127.0.0.1:0` when the
    /// listeners come from the options and the test gave none.
    fn daemon_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if self.backend_flag {
            args.extend(["--backend".to_string(), self.backend.to_string()]);
        }
        if matches!(self.via, Via::Options) && self.listen_options() == 0 {
            args.extend(["--listen".to_string(), "127.0.0.1:0".to_string()]);
        }
        args.extend(self.args.iter().cloned());
        args
    }

    fn listen_options(&self) -> usize {
        self.args
            .iter()
            .filter(|a| *a == "--listen" || *a == "-l")
            .count()
    }

    /// The command to start (`specs`: the `-l` arguments for `systemd-socket-activate`) and
    /// the line that shows it in failure messages.
    pub(super) fn command(&self, specs: &[String]) -> (Command, String) {
        super::lift_nofile();
        let args = self.daemon_args();
        let program = self.program.as_deref().unwrap_or(BIN);
        let mut shown = format!("{program} {}", args.join(" "));
        let fresh = |program: &str| {
            let mut c = Command::new(program);
            for var in SCRUBBED {
                if !self.env.iter().any(|(k, _)| k == var) {
                    c.env_remove(var);
                }
            }
            c
        };
        let mut cmd = match &self.via {
            Via::Options => fresh(program),
            Via::Activator(_) => {
                let mut c = fresh("systemd-socket-activate");
                for s in specs {
                    c.arg("-l").arg(s);
                }
                c.arg(BIN);
                let ls: Vec<String> = specs.iter().map(|s| format!("-l {s}")).collect();
                shown = format!("systemd-socket-activate {} {shown}", ls.join(" "));
                c
            }
            Via::Inherited(fds) => {
                // LISTEN_PID must be the daemon's own pid: a shell learns its pid, then
                // execs the daemon in its place.
                let mut c = fresh("sh");
                match self.env.iter().any(|(k, _)| k == "LISTEN_PID") {
                    true => c.args(["-c", r#"exec "$0" "$@""#, BIN]),
                    false => c.args(["-c", r#"export LISTEN_PID=$$; exec "$0" "$@""#, BIN]),
                };
                if !self.env.iter().any(|(k, _)| k == "LISTEN_FDS") {
                    c.env("LISTEN_FDS", fds.len().to_string());
                }
                pass_fds(&mut c, fds.iter().map(AsRawFd::as_raw_fd).collect());
                let numbers: Vec<String> = (0..fds.len()).map(|i| (3 + i).to_string()).collect();
                shown = format!("(inherited fds {}) {shown}", numbers.join(", "));
                c
            }
        };
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
            shown = format!("{k}={v} {shown}");
        }
        if let Some((soft, hard)) = self.nofile {
            let set = move || {
                use nix::sys::resource::{setrlimit, Resource};
                setrlimit(Resource::RLIMIT_NOFILE, soft, hard).map_err(io::Error::from)
            };
            // SAFETY: the closure only calls setrlimit(2), which is async-signal-safe, and
            // touches no memory shared with the parent.
            unsafe { cmd.pre_exec(set) };
            shown = format!("(RLIMIT_NOFILE={soft}:{hard}) {shown}");
        }
        (cmd, shown)
    }

    /// Start the daemon and wait (bounded) until it is ready.
    pub(super) fn launch(self) -> Daemon {
        let Via::Activator(listen) = &self.via else {
            let n = self.listeners.unwrap_or(match &self.via {
                Via::Inherited(fds) => fds.len(),
                _ => self.listen_options().max(1),
            });
            let (cmd, line) = self.command(&[]);
            let want = format!("{n} `listening on` line(s)");
            let ready = |text: &str| {
                let addrs = listening_addrs(text);
                (addrs.len() >= n).then_some(Some(addrs))
            };
            return start(cmd, line, self.backend, &want, ready).expect("no retry without ports");
        };
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            let specs = listen(port);
            let (cmd, line) = self.command(&specs);
            let want = format!("systemd-socket-activate's `Listening on` for {specs:?}");
            let ready = |text: &str| {
                if (0..specs.len()).all(|i| text.contains(&format!(" as {}.\n", 3 + i))) {
                    return Some(Some(specs.iter().map(|s| spec_addr(s)).collect()));
                }
                text.contains("already in use").then_some(None)
            };
            match start(cmd, line, self.backend, &want, ready) {
                Some(d) => return d,
                None => println!("note: port {port} was taken meanwhile; retrying"),
            }
        }
        panic!("no free port found in {PORT_ATTEMPTS} attempts");
    }
}

/// Start `cmd` and wait until `ready`, given the complete lines of its stderr so far, says
/// `Some(Some(addresses))`; `Some(None)` gives up quietly (the process is killed and `None`
/// returned, to retry). Fails the test when neither comes within [`START_TIMEOUT`].
fn start(
    mut cmd: Command,
    line: String,
    backend: &'static str,
    want: &str,
    mut ready: impl FnMut(&str) -> Option<Option<Vec<Addr>>>,
) -> Option<Daemon> {
    let mut child = cmd.spawn().unwrap_or_else(|e| match e.kind() {
        ErrorKind::NotFound => panic!("cannot run {line}: {}", not_installed(cmd.get_program())),
        _ => panic!("cannot run {line}: {e}"),
    });
    let out = capture(child.stderr.take().unwrap());
    super::watchdog::backstop();
    super::watchdog::track(child.id() as i32, true);
    let mut d = Daemon {
        pid: child.id() as i32,
        child: Some(child),
        cmd: line,
        out,
        addrs: Vec::new(),
        status: None,
        backend,
        reported: Default::default(),
    };
    let found = wait_captured(&d.out, START_TIMEOUT, |c| {
        ready(&c.text[..c.text.rfind('\n').map_or(0, |i| i + 1)])
    });
    match found {
        Some(Some(addrs)) => d.addrs = addrs,
        Some(None) => return None,
        None => {
            let why = match d.try_wait_exit(Duration::from_millis(200)) {
                Some(_) => "the daemon exited first".to_string(),
                None => format!("none within {START_TIMEOUT:?}"),
            };
            d.fail(&format!("want {want}: {why}"));
        }
    }
    Some(d)
}

/// The addresses of every `listening on ADDR (backend NAME)` line in `text`.
fn listening_addrs(text: &str) -> Vec<Addr> {
    text.lines()
        .filter_map(|l| {
            let rest = &l[l.find("listening on ")? + "listening on ".len()..];
            Addr::parse(&rest[..rest.find(" (backend")?])
        })
        .collect()
}

/// A `systemd-socket-activate -l` spec as an address: a path, or HOST:PORT.
fn spec_addr(spec: &str) -> Addr {
    match spec.starts_with('/') {
        true => Addr::Unix(PathBuf::from(spec)),
        false => Addr::parse(spec).unwrap_or_else(|| panic!("bad -l spec {spec:?}")),
    }
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// Make the child's descriptors 3, 4, … copies of `fds`, open across exec.
fn pass_fds(cmd: &mut Command, fds: Vec<RawFd>) {
    assert!(fds.len() <= MAX_INHERITED, "at most {MAX_INHERITED} fds");
    let n = fds.len() as RawFd;
    let place = move || -> io::Result<()> {
        // First out of the way (above 3 + n) so that no source is overwritten before it is
        // copied; the copies are close-on-exec. dup2 then clears the flag on 3, 4, ….
        let mut high = [0 as RawFd; MAX_INHERITED];
        for (i, &fd) in fds.iter().enumerate() {
            // SAFETY: fcntl(2) on a descriptor number; it is async-signal-safe.
            high[i] = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3 + n) };
            if high[i] < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        for (i, &fd) in high[..fds.len()].iter().enumerate() {
            // SAFETY: dup2(2) on descriptor numbers; it is async-signal-safe.
            if unsafe { libc::dup2(fd, 3 + i as RawFd) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    };
    // SAFETY: the closure calls only fcntl(2) and dup2(2), both async-signal-safe, on a
    // stack array and a vector allocated before the fork; it allocates nothing.
    unsafe { cmd.pre_exec(place) };
}
