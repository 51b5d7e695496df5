//! The three systemd protocols echo-mux speaks, without libsystemd (SPEC §6):
//!
//! - **sd_notify**: datagrams such as `READY=1` to the socket named by `NOTIFY_SOCKET`
//!   (a path, or `@name` for an abstract socket). See [`Notifier`].
//! - **watchdog**: `WATCHDOG_USEC` (and `WATCHDOG_PID`) say how often `WATCHDOG=1` is due.
//!   See [`watchdog_interval`].
//! - **socket activation**: `LISTEN_PID`/`LISTEN_FDS` hand in listening sockets as fds
//!   3, 4, … That one lives with the other sockets, in `net/listen/activation.rs`.
//!
//! The environment is read by thin wrappers; the decisions live in pure functions that take
//! the values as arguments, so the unit tests never touch the (process-global) environment.

use std::env;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::sys::socket::{
    sendto, setsockopt, socket, sockopt, AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr,
};
use nix::sys::time::TimeVal;

use crate::duration::MAX_DURATION;
use crate::error::Plain;

/// How long a one-shot message (`READY=1`, `STOPPING=1`) may wait for room in the manager's
/// queue. A unix datagram sender blocks while the receiver holds `net.unix.max_dgram_qlen`
/// unread datagrams; systemd drains its socket promptly, but a one-thread loop must never
/// hang on a wedged manager, so the wait is bounded.
const ONE_SHOT_TIMEOUT: Duration = Duration::from_millis(250);

/// An sd_notify client: a unix datagram socket and the manager's address.
pub struct Notifier {
    sock: OwnedFd,
    target: UnixAddr,
    /// `NOTIFY_SOCKET` as given, for log lines.
    name: String,
}

impl Notifier {
    /// The client for `NOTIFY_SOCKET`. `None` when it is unset or empty (not run by a service
    /// manager), or unusable (a debug line says why: the daemon runs on without it).
    pub fn from_env() -> Option<Notifier> {
        let name = env::var("NOTIFY_SOCKET").ok().filter(|s| !s.is_empty())?;
        match Notifier::new(&name) {
            Ok(n) => Some(n),
            Err(e) => {
                log::debug!("NOTIFY_SOCKET={name} is unusable: {}", Plain(&e));
                None
            }
        }
    }

    /// A client for `name`: an absolute path, or `@name` for an abstract socket.
    fn new(name: &str) -> io::Result<Notifier> {
        let target = notify_addr(name)?;
        let sock = socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        setsockopt(
            &sock,
            sockopt::SendTimeout,
            &TimeVal::new(
                ONE_SHOT_TIMEOUT.as_secs() as _,
                ONE_SHOT_TIMEOUT.subsec_micros() as _,
            ),
        )?;
        Ok(Notifier {
            sock,
            target,
            name: name.to_owned(),
        })
    }

    /// Send one datagram such as `READY=1` or `STATUS=3 connections`. Failure is a debug log
    /// line, never an error. Periodic messages (`WATCHDOG=`, `STATUS=`) never wait: if the
    /// manager's queue is full this one is dropped and the next comes soon. Others may wait
    /// up to [`ONE_SHOT_TIMEOUT`].
    pub fn notify(&self, state: &str) {
        let periodic = state.starts_with("WATCHDOG=") || state.starts_with("STATUS=");
        let mut flags = MsgFlags::MSG_NOSIGNAL;
        if periodic {
            flags |= MsgFlags::MSG_DONTWAIT;
        }
        match sendto(self.sock.as_raw_fd(), state.as_bytes(), &self.target, flags) {
            Ok(_) => log::trace!("sd_notify {state:?}"),
            Err(e) => log::debug!(
                "sd_notify {state:?} to {} failed: {}",
                self.name,
                Plain(&e.into())
            ),
        }
    }
}

/// `NOTIFY_SOCKET` → address. systemd only ever names an absolute path or `@abstract`.
fn notify_addr(name: &str) -> io::Result<UnixAddr> {
    if let Some(abstract_name) = name.strip_prefix('@') {
        Ok(UnixAddr::new_abstract(abstract_name.as_bytes())?)
    } else if name.starts_with('/') {
        Ok(UnixAddr::new(name)?)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "expected an absolute path or @name",
        ))
    }
}

/// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC` when it is set (and `WATCHDOG_PID`,
/// if set, is this process), else `None`.
pub fn watchdog_interval() -> Option<Duration> {
    let usec = env::var("WATCHDOG_USEC").ok();
    let pid = env::var("WATCHDOG_PID").ok();
    watchdog_interval_from(usec.as_deref(), pid.as_deref(), std::process::id())
}

/// The decision behind [`watchdog_interval`], on explicit values.
fn watchdog_interval_from(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != me {
            return None;
        }
    }
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    // Bounded like every other timer, so `now + interval` stays far from overflow.
    let half = Duration::from_micros(usec / 2).clamp(Duration::from_micros(1), MAX_DURATION);
    Some(half)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn notify_reaches_a_path_socket() {
        let dir = env::temp_dir().join(format!("echo-mux-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();

        let n = Notifier::new(path.to_str().unwrap()).unwrap();
        n.notify("READY=1");
        n.notify("STATUS=3 connections");
        let mut buf = [0u8; 256];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1");
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STATUS=3 connections");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn notify_reaches_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("echo-mux-test-{}-abstract", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();

        Notifier::new(&format!("@{name}"))
            .unwrap()
            .notify("STOPPING=1");
        let mut buf = [0u8; 64];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STOPPING=1");
    }

    #[test]
    fn notify_failure_is_not_an_error() {
        // Nobody listens there: the send fails, notify logs and returns.
        let n = Notifier::new("/nonexistent/echo-mux/notify.sock").unwrap();
        n.notify("READY=1");
        n.notify("WATCHDOG=1");
        assert!(Notifier::new("relative/path").is_err());
    }

    #[test]
    fn watchdog_interval_is_half_of_watchdog_usec() {
        let f = watchdog_interval_from;
        assert_eq!(f(Some("200000"), None, 7), Some(Duration::from_millis(100)));
        assert_eq!(
            f(Some("30000000"), Some("7"), 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(f(Some("1"), None, 7), Some(Duration::from_micros(1)));
        assert_eq!(
            f(Some("200000"), Some("8"), 7),
            None,
            "meant for another process"
        );
        assert_eq!(f(Some("200000"), Some("x"), 7), None);
        assert_eq!(f(None, None, 7), None);
        assert_eq!(f(Some("0"), None, 7), None);
        assert_eq!(f(Some("soon"), None, 7), None);
        let most = f(Some(&u64::MAX.to_string()), None, 7);
        assert_eq!(most, Some(MAX_DURATION), "bounded like every timer");
    }
}
