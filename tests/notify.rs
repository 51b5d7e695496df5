//! sd_notify and the watchdog: READY=1, STATUS=, STOPPING=1 and WATCHDOG=1 datagrams on a
//! NOTIFY_SOCKET the test binds itself (a path, or an abstract name).

use std::io::IoSliceMut;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;
use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};
use nix::sys::time::TimeSpec;

use crate::util::{Daemon, TempDir};

/// Longest wait for anything that should be near-instant (generous for a loaded CI box).
const PATIENCE: Duration = Duration::from_secs(10);

/// The receiving end of NOTIFY_SOCKET: every datagram, split into its `KEY=value` lines,
/// with the time it arrived.
struct NotifyRx {
    sock: UnixDatagram,
    got: Vec<(Instant, String)>,
}

impl NotifyRx {
    fn new(sock: UnixDatagram) -> NotifyRx {
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        // The kernel stamps each datagram as it arrives: a test thread that a loaded
        // machine runs late then still sees the daemon's spacing, not a burst.
        setsockopt(&sock, sockopt::ReceiveTimestampns, &true).unwrap();
        NotifyRx {
            sock,
            got: Vec::new(),
        }
    }

    /// Receive until a line equal to `want` arrives (true) or `within` passes (false).
    fn wait_for(&mut self, want: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let start = self.got.len();
        loop {
            if self.got[start..].iter().any(|(_, l)| l == want) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            self.poll_once();
        }
    }

    /// Receive one datagram (or time out after 50 ms), timed by its kernel arrival stamp.
    fn poll_once(&mut self) {
        let mut buf = [0u8; 4096];
        let mut cmsg = nix::cmsg_space!(TimeSpec);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let fd = self.sock.as_raw_fd();
        // A timeout or an EINTR: the callers simply poll again.
        let Ok(msg) = recvmsg::<()>(fd, &mut iov, Some(&mut cmsg), MsgFlags::empty()) else {
            return;
        };
        let (now, wall) = (Instant::now(), SystemTime::now());
        let stamped = msg
            .cmsgs()
            .ok()
            .into_iter()
            .flatten()
            .find_map(|c| match c {
                ControlMessageOwned::ScmTimestampns(ts) => Some(
                    SystemTime::UNIX_EPOCH + Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32),
                ),
                _ => None,
            });
        // The arrival on this process's monotonic clock: now, less how long ago it came.
        let ago = stamped.and_then(|t| wall.duration_since(t).ok());
        let at = ago.map_or(now, |ago| now.checked_sub(ago).unwrap_or(now));
        let n = msg.bytes;
        for line in String::from_utf8_lossy(&buf[..n]).lines() {
            self.got.push((at, line.to_string()));
        }
    }

    /// Receive for `d`, whatever comes.
    fn collect_for(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        while Instant::now() < deadline {
            self.poll_once();
        }
    }

    fn count(&self, want: &str) -> usize {
        self.got.iter().filter(|(_, l)| l == want).count()
    }

    fn lines(&self) -> Vec<&str> {
        self.got.iter().map(|(_, l)| l.as_str()).collect()
    }
}

/// READY=1 once, then serving; STATUS= follows the connection count; SIGTERM → STOPPING=1
/// and exit 0.
fn notify_lifecycle(rx: UnixDatagram, notify_env: &str) {
    let mut rx = NotifyRx::new(rx);
    let Some(mut d) = Daemon::with("epoll").notify_socket(notify_env).spawn() else {
        return;
    };
    if !rx.wait_for("READY=1", PATIENCE) {
        d.fail(&format!("no READY=1 (got {:?})", rx.lines()));
    }
    // READY=1 means every listener accepts.
    let client = d.connect();
    d.expect_echo(&client, "the notified daemon");
    if !rx.wait_for("STATUS=1 connections", PATIENCE) {
        d.fail(&format!("no STATUS=1 connections (got {:?})", rx.lines()));
    }
    drop(client);
    d.signal(Signal::SIGTERM);
    if !rx.wait_for("STOPPING=1", PATIENCE) {
        d.fail(&format!("no STOPPING=1 (got {:?})", rx.lines()));
    }
    let status = d.wait_exit(PATIENCE);
    if !status.success() {
        d.fail(&format!("exit {status} after SIGTERM, want 0"));
    }
    rx.collect_for(Duration::from_millis(100));
    assert_eq!(
        rx.count("READY=1"),
        1,
        "READY=1 is sent exactly once: {:?}",
        rx.lines()
    );
    assert_eq!(rx.count("STOPPING=1"), 1, "{:?}", rx.lines());
}

#[test]
fn notify_socket_path() {
    let dir = TempDir::new("notify");
    let path = dir.join("notify.sock");
    let rx = UnixDatagram::bind(&path).unwrap();
    notify_lifecycle(rx, path.to_str().unwrap());
}

#[test]
fn notify_socket_abstract() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("echo-mux-test-notify-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let rx = UnixDatagram::bind_addr(&addr).unwrap();
    notify_lifecycle(rx, &format!("@{name}"));
}

/// A daemon with `env`, notifying a socket bound in `dir`, once it has sent READY=1.
fn ready_daemon(dir: &TempDir, env: &[(&str, &str)]) -> Option<(NotifyRx, Daemon)> {
    let path = dir.join("notify.sock");
    let mut rx = NotifyRx::new(UnixDatagram::bind(&path).unwrap());
    let mut notified = Daemon::with("epoll").notify_socket(path.to_str().unwrap());
    for (k, v) in env {
        notified = notified.env(k, v);
    }
    let d = notified.spawn()?;
    if !rx.wait_for("READY=1", PATIENCE) {
        d.fail("no READY=1");
    }
    Some((rx, d))
}

#[test]
fn watchdog_pings_at_half_watchdog_usec() {
    let dir = TempDir::new("watchdog");
    let Some((mut rx, mut d)) = ready_daemon(&dir, &[("WATCHDOG_USEC", "200000")]) else {
        return;
    };
    let from = Instant::now();
    rx.collect_for(Duration::from_secs(2));
    let pings: Vec<Instant> = rx
        .got
        .iter()
        .filter(|(t, l)| l == "WATCHDOG=1" && *t >= from)
        .map(|(t, _)| *t)
        .collect();
    // Due every 100 ms: about 20 in 2 s. One-sided bounds that a slow CI box still meets,
    // plus a ceiling that catches a loop pinging on every turn.
    assert!(
        pings.len() >= 3,
        "only {} WATCHDOG=1 in 2 s: {:?}",
        pings.len(),
        rx.lines()
    );
    assert!(
        pings.len() <= 60,
        "{} WATCHDOG=1 in 2 s: far too many",
        pings.len()
    );
    let gaps = pings.windows(2).map(|w| w[1] - w[0]);
    let too_early = gaps.filter(|g| *g < Duration::from_millis(50)).count();
    assert!(
        too_early <= 2,
        "{too_early} pings came less than 50 ms apart"
    );
    d.terminate(PATIENCE);
}

#[test]
fn watchdog_for_another_pid_is_silent() {
    let dir = TempDir::new("watchdog-pid");
    let env = [("WATCHDOG_USEC", "100000"), ("WATCHDOG_PID", "1")];
    let Some((mut rx, mut d)) = ready_daemon(&dir, &env) else {
        return;
    };
    rx.collect_for(Duration::from_millis(600));
    assert_eq!(rx.count("WATCHDOG=1"), 0, "{:?}", rx.lines());
    d.terminate(PATIENCE);
}

#[test]
fn unusable_notify_socket_is_not_fatal() {
    let dir = TempDir::new("notify-gone");
    let gone = dir.join("nobody-listens.sock");
    let notified = Daemon::with("epoll").notify_socket(gone.to_str().unwrap());
    let Some(mut d) = notified.spawn() else {
        return;
    };
    d.expect_echo(d.connect(), "a daemon without its manager");
    d.terminate(PATIENCE);
}
