//! A running daemon: its addresses, signals, exit, stderr, stats and resource use.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::process::{Child, ExitStatus};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{client, wait_captured, Addr, Builder, Shared};

/// A running (or finished) daemon; killed with SIGKILL and reaped on drop.
pub struct Daemon {
    pub(super) child: Option<Child>,
    pub(super) pid: i32,
    pub(super) cmd: String,
    pub(super) out: Shared,
    pub(super) addrs: Vec<Addr>,
    pub(super) status: Option<ExitStatus>,
    pub(super) backend: &'static str,
    /// Set once a failure message has carried the description (so drop does not repeat it).
    pub(super) reported: std::cell::Cell<bool>,
}

impl Daemon {
    /// A builder for a daemon on `backend` (listening on `127.0.0.1:0` unless told otherwise).
    pub fn with(backend: &'static str) -> Builder {
        Builder::new(backend)
    }

    /// Shorthand for `Daemon::with(backend).args(args).spawn()`.
    pub fn spawn(backend: &'static str, args: &[&str]) -> Option<Daemon> {
        Daemon::with(backend).args(args).spawn()
    }

    /// A daemon with default options, only to talk to: the external one when
    /// `ECHO_MUX_ADDR` is set, else a fresh one on `backend`.
    pub fn shared(backend: &'static str) -> Daemon {
        let Ok(addr) = std::env::var("ECHO_MUX_ADDR") else {
            return Daemon::with(backend).launch();
        };
        // A host name (`localhost:50007`) is resolved once; its first address is used.
        let resolved = || addr.to_socket_addrs().ok()?.next().map(Addr::Tcp);
        let parsed = Addr::parse(&addr).or_else(resolved).unwrap_or_else(|| {
            panic!("ECHO_MUX_ADDR={addr:?} is neither HOST:PORT nor unix:/path")
        });
        Daemon {
            child: None,
            pid: 0,
            cmd: format!("(external daemon at {addr})"),
            out: Arc::default(),
            addrs: vec![parsed],
            status: None,
            backend,
            reported: Default::default(),
        }
    }

    /// Did this test start the daemon (false in external-server mode)?
    pub fn is_owned(&self) -> bool {
        self.child.is_some()
    }

    /// The backend this daemon was started with.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// Every address from the listening lines, in order.
    pub fn addrs(&self) -> &[Addr] {
        &self.addrs
    }

    /// Does a new client get echoed within 20 s? (Connect, send one byte, wait for it;
    /// reconnect after a close.) For checking that the daemon recovers from a limit.
    pub fn serves_new_client(&self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(s) = client::connect(self.addr()) {
                let _ = (&s).write_all(b"!");
                loop {
                    match client::outcome(&s, Duration::from_millis(500)) {
                        client::Outcome::Data(b) if b == b"!" => return true,
                        client::Outcome::Silent if Instant::now() < deadline => continue,
                        _ => break,
                    }
                }
            }
            thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// The first TCP address.
    pub fn addr(&self) -> SocketAddr {
        self.addrs
            .iter()
            .find_map(|a| match a {
                Addr::Tcp(s) => Some(*s),
                _ => None,
            })
            .unwrap_or_else(|| self.fail("the daemon has no TCP listener"))
    }

    /// Every TCP address, in the order of the listening lines.
    pub fn tcp_addrs(&self) -> Vec<SocketAddr> {
        let tcp = self.addrs.iter().filter_map(|a| match a {
            Addr::Tcp(s) => Some(*s),
            _ => None,
        });
        tcp.collect()
    }

    /// Every UDP address, in order.
    pub fn udp_addrs(&self) -> Vec<SocketAddr> {
        let udp = |a: &Addr| match a {
            Addr::Udp(s) => Some(*s),
            _ => None,
        };
        self.addrs.iter().filter_map(udp).collect()
    }

    /// The first UDP address.
    pub fn udp_addr(&self) -> SocketAddr {
        let all = self.udp_addrs();
        *all.first()
            .unwrap_or_else(|| self.fail("the daemon has no UDP listener"))
    }

    /// A client connected to [`Daemon::addr`], with I/O timeouts.
    pub fn connect(&self) -> TcpStream {
        client::connect(self.addr()).unwrap_or_else(|e| self.fail(&format!("connect: {e}")))
    }

    /// A client connected to `addr` (one of several listeners), with I/O timeouts.
    pub fn connect_at(&self, addr: SocketAddr) -> TcpStream {
        client::connect(addr).unwrap_or_else(|e| self.fail(&format!("connect {addr}: {e}")))
    }

    /// A client connected to the first unix socket address, with I/O timeouts.
    pub fn connect_unix(&self) -> UnixStream {
        let Some(path) = self.addrs.iter().find_map(|a| match a {
            Addr::Unix(p) => Some(p),
            _ => None,
        }) else {
            self.fail("the daemon has no unix listener")
        };
        client::connect_unix(path)
            .unwrap_or_else(|e| self.fail(&format!("connect unix:{}: {e}", path.display())))
    }

    /// Send one line naming `what` on `s`; fail the test unless it comes back unchanged.
    pub fn expect_echo(&self, s: impl Read + Write, what: &str) {
        let msg = format!("hello from {what}\n");
        match client::ping(s, msg.as_bytes()) {
            Ok(back) if back == msg.as_bytes() => {}
            Ok(back) => self.fail(&format!(
                "echo from {what}: sent {msg:?}, got {:?}",
                String::from_utf8_lossy(&back)
            )),
            Err(e) => self.fail(&format!("no echo from {what}: {e}")),
        }
    }

    /// The daemon's pid (panics for an external daemon).
    pub fn pid(&self) -> i32 {
        assert!(self.child.is_some(), "no pid for an external daemon");
        self.pid
    }

    /// Send `sig` to the daemon.
    pub fn signal(&self, sig: Signal) {
        if self.status.is_some() {
            self.fail(&format!("cannot send {sig}: the daemon has exited"));
        }
        kill(Pid::from_raw(self.pid()), sig)
            .unwrap_or_else(|e| self.fail(&format!("kill {sig}: {e}")));
    }

    /// The exit status if the daemon exits within `timeout`.
    pub fn try_wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while self.status.is_none() {
            let child = self
                .child
                .as_mut()
                .expect("no process for an external daemon");
            match child.try_wait() {
                Ok(Some(st)) => {
                    self.status = Some(st);
                    super::watchdog::track(self.pid, false);
                }
                Ok(None) if Instant::now() >= deadline => return None,
                Ok(None) => thread::sleep(Duration::from_millis(5)),
                Err(e) => panic!("waitpid {}: {e}", self.pid),
            }
        }
        // The exit closed stderr's write end (unless a grandchild holds it): let the reader
        // thread catch up so that stderr() is complete.
        wait_captured(&self.out, Duration::from_secs(2), |c| c.eof.then_some(()));
        self.status
    }

    /// The exit status; fails the test unless the daemon exits within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        self.try_wait_exit(timeout)
            .unwrap_or_else(|| self.fail(&format!("still running after {timeout:?}")))
    }

    /// SIGTERM, then the daemon must exit 0 within `within` (SPEC §2, §5).
    pub fn terminate(&mut self, within: Duration) {
        self.signal(Signal::SIGTERM);
        let st = self.wait_exit(within);
        if !st.success() {
            self.fail(&format!("exit {st} after SIGTERM, want 0"));
        }
    }

    /// Still running?
    pub fn is_running(&mut self) -> bool {
        self.try_wait_exit(Duration::ZERO).is_none()
    }

    /// Everything the daemon wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.out.0.lock().unwrap().text.clone()
    }

    /// What the daemon wrote to stderr after `mark` (see [`Daemon::mark`]).
    pub fn stderr_since(&self, mark: usize) -> String {
        self.out
            .0
            .lock()
            .unwrap()
            .text
            .get(mark..)
            .unwrap_or("")
            .to_string()
    }

    /// A position in stderr, for [`Daemon::wait_line`] to search after.
    pub fn mark(&self) -> usize {
        self.out.0.lock().unwrap().text.len()
    }

    /// The first complete stderr line after `mark` that contains `needle`, waiting up to
    /// `timeout` for it.
    pub fn wait_line(&self, mark: usize, needle: &str, timeout: Duration) -> Option<String> {
        wait_captured(&self.out, timeout, |c| {
            let tail = c.text.get(mark..)?;
            let complete = &tail[..tail.rfind('\n').map_or(0, |i| i + 1)];
            complete
                .lines()
                .find(|l| l.contains(needle))
                .map(str::to_string)
        })
    }

    /// Like [`Daemon::wait_line`], failing the test when no such line appears.
    pub fn expect_line(&self, mark: usize, needle: &str, timeout: Duration) -> String {
        self.wait_line(mark, needle, timeout).unwrap_or_else(|| {
            self.fail(&format!(
                "no stderr line containing {needle:?} within {timeout:?}"
            ))
        })
    }

    /// Everything known about the daemon, for failure messages.
    pub fn describe(&self) -> String {
        let status = match self.status {
            Some(st) => format!("{st}"),
            None if self.child.is_none() => "external".into(),
            None => "still running".into(),
        };
        format!(
            "\n--- command: {}\n--- status: {status}\n--- stderr:\n{}\n--- end of stderr",
            self.cmd,
            self.stderr()
        )
    }

    /// Fail the test with `msg` and everything known about the daemon.
    pub fn fail(&self, msg: &str) -> ! {
        self.reported.set(true);
        panic!("{msg}{}", self.describe())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        if self.status.is_none() {
            let _ = child.kill();
            self.status = child.wait().ok();
            super::watchdog::track(self.pid, false);
        }
        if thread::panicking() {
            if !self.reported.get() {
                eprintln!("daemon of the failed test:{}", self.describe());
            }
        } else {
            let err = self.stderr();
            if err.contains("panicked") || err.contains("RUST_BACKTRACE") {
                self.fail("the daemon panicked");
            }
        }
    }
}
