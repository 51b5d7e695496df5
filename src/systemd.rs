//! The three systemd protocols echo-mux speaks, without libsystemd (SPEC §6):
//!
//! - **sd_notify**: datagrams such as `READY=1` to the socket named by `NOTIFY_SOCKET`
//!   (a path, or `@name` for an abstract socket). See [`Notifier`].
//! - **watchdog**: `WATCHDOG_USEC` (and `WATCHDOG_PID`) say how often `WATCHDOG=1` is due.
//!   See [`watchdog_interval`].
//! - **socket activation**: `LISTEN_PID`/`LISTEN_FDS` hand in listening sockets as fds
//!   3, 4, … See [`listen_fds`].
//!
//! The environment is read by thin wrappers; the decisions live in pure functions that take
//! the values as arguments, so the unit tests never touch the (process-global) environment.

use std::env;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::sys::socket::{
    getsockopt, sendto, setsockopt, socket, sockopt, AddressFamily, MsgFlags, SockFlag, SockType,
    SockaddrLike, UnixAddr,
};
use nix::sys::time::TimeVal;

use crate::duration::MAX_DURATION;
use crate::error::{Error, Plain};

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

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

/// Socket activation. When `LISTEN_PID` is this process and `LISTEN_FDS` >= 1, take fds
/// 3..3+N, check that each is an open, listening stream socket, make them non-blocking and
/// close-on-exec, remove `LISTEN_PID`/`LISTEN_FDS`/`LISTEN_FDNAMES` from the environment and
/// return them. `Ok(None)` when not socket-activated. Call it once, at start, before any
/// thread exists (it edits the environment) and before the process opens any descriptor of
/// its own (one could take a number that `LISTEN_FDS` claims but systemd did not pass).
pub fn listen_fds() -> Result<Option<Vec<OwnedFd>>, Error> {
    let pid = env::var("LISTEN_PID").ok();
    let fds = env::var("LISTEN_FDS").ok();
    if pid.is_some() {
        // Like sd_listen_fds(1): once read they are gone, whoever they were meant for, so
        // nothing started later inherits them by mistake (and a second call finds nothing).
        for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
            env::remove_var(var);
        }
    }
    let Some(count) = listen_count(pid.as_deref(), fds.as_deref(), std::process::id())? else {
        return Ok(None);
    };
    let mut taken = Vec::with_capacity(count);
    for raw in LISTEN_FDS_START..LISTEN_FDS_START + count as RawFd {
        taken.push(adopt(raw, count)?);
    }
    Ok(Some(taken))
}

/// [`listen_fds`] with each descriptor's name from `LISTEN_FDNAMES` (the socket unit's
/// `FileDescriptorName=`; empty when systemd passed none), so that the `metrics` socket can
/// be told from the echo listeners (SPEC §12).
pub fn listen_fds_named() -> Result<Option<Vec<(OwnedFd, String)>>, Error> {
    let names = env::var("LISTEN_FDNAMES").unwrap_or_default();
    let Some(fds) = listen_fds()? else {
        return Ok(None);
    };
    let mut names = names.split(':').map(str::to_owned);
    Ok(Some(
        fds.into_iter()
            .map(|fd| (fd, names.next().unwrap_or_default()))
            .collect(),
    ))
}

/// The decision behind [`listen_fds`]: how many descriptors are ours, on explicit values.
fn listen_count(pid: Option<&str>, fds: Option<&str>, me: u32) -> Result<Option<usize>, Error> {
    let invalid = |var: &str, value: &str, expected: &str| {
        Error::io(
            format!("invalid {var}={value:?} in the environment"),
            io::Error::new(io::ErrorKind::InvalidInput, expected.to_owned()),
        )
    };
    let Some(pid) = pid else { return Ok(None) };
    match pid.trim().parse::<u32>() {
        Ok(p) if p > 0 && p != me => return Ok(None),
        Ok(p) if p > 0 => {}
        _ => return Err(invalid("LISTEN_PID", pid, "expected a process id")),
    }
    let Some(fds) = fds else { return Ok(None) };
    // The descriptors must fit below RawFd::MAX; anything near that is garbage anyway.
    match fds.trim().parse::<usize>() {
        Ok(0) => Ok(None),
        Ok(n) if n <= (RawFd::MAX - LISTEN_FDS_START) as usize => Ok(Some(n)),
        _ => Err(invalid(
            "LISTEN_FDS",
            fds,
            "expected a number of descriptors",
        )),
    }
}

/// Take ownership of inherited descriptor `raw` (one of `announced`) once it is known to be
/// open and a listening stream socket or a UDP socket (`ListenDatagram=`), and set O_NONBLOCK and FD_CLOEXEC on it. A descriptor
/// that fails a check is left alone: it is not ours to close.
fn adopt(raw: RawFd, announced: usize) -> Result<OwnedFd, Error> {
    let err = |what: &str, source: io::Error| {
        Error::io(
            format!("inherited descriptor {raw} (LISTEN_FDS={announced}) {what}"),
            source,
        )
    };
    let bad = |source: io::Error| err("is not a listening stream socket or a UDP socket", source);
    let refuse = |why: String| bad(io::Error::new(io::ErrorKind::InvalidInput, why));
    if let Err(e) = fcntl(raw, FcntlArg::F_GETFD) {
        return Err(err("is not open", e.into()));
    }
    // SAFETY: `raw` is open (F_GETFD succeeded) and stays open while borrowed: this thread
    // closes nothing meanwhile, and no other thread exists yet.
    let fd = unsafe { BorrowedFd::borrow_raw(raw) };
    let kind = getsockopt(&fd, sockopt::SockType).map_err(|e| bad(e.into()))?;
    if kind == SockType::Datagram {
        // UDP only: a unix datagram socket has no peer address to answer to.
        let local: nix::sys::socket::SockaddrStorage =
            nix::sys::socket::getsockname(raw).map_err(|e| bad(e.into()))?;
        if !matches!(
            local.family(),
            Some(AddressFamily::Inet | AddressFamily::Inet6)
        ) {
            return Err(refuse("it is a unix datagram socket".into()));
        }
    } else if kind != SockType::Stream {
        return Err(refuse(format!("it is a {kind:?} socket").to_lowercase()));
    } else if !getsockopt(&fd, sockopt::AcceptConn).map_err(|e| bad(e.into()))? {
        return Err(refuse("it is not listening".into()));
    }
    let flags = fcntl(raw, FcntlArg::F_GETFL).map_err(|e| bad(e.into()))?;
    let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
    fcntl(raw, FcntlArg::F_SETFL(flags)).map_err(|e| bad(e.into()))?;
    fcntl(raw, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(|e| bad(e.into()))?;
    // SAFETY: `raw` is an open, listening socket. It was inherited: `listen_fds` runs before
    // echo-mux opens or binds anything, so no descriptor of ours can hold a number in
    // 3..3+LISTEN_FDS, and systemd hands these to this process alone. The LISTEN_*
    // variables are gone, so a second call to `listen_fds` cannot take it again.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
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

    #[test]
    fn listen_count_follows_sd_listen_fds() {
        let f = listen_count;
        assert_eq!(f(None, Some("2"), 7).unwrap(), None, "no LISTEN_PID");
        assert_eq!(f(Some("8"), Some("2"), 7).unwrap(), None, "for another pid");
        assert_eq!(f(Some("7"), Some("2"), 7).unwrap(), Some(2));
        assert_eq!(f(Some("7"), Some("0"), 7).unwrap(), None);
        assert_eq!(f(Some("7"), None, 7).unwrap(), None);
        let e = f(Some("seven"), Some("2"), 7).unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid LISTEN_PID=\"seven\" in the environment: expected a process id"
        );
        let e = f(Some("7"), Some("-1"), 7).unwrap_err().to_string();
        assert!(e.contains("LISTEN_FDS=\"-1\""), "{e}");
        assert!(f(Some("7"), Some("99999999999"), 7).is_err());
    }

    #[test]
    fn listen_fds_for_another_pid_is_none() {
        // The one test that touches the environment: LISTEN_PID names another process.
        env::set_var("LISTEN_PID", (std::process::id() + 1).to_string());
        env::set_var("LISTEN_FDS", "1");
        assert!(listen_fds().unwrap().is_none());
        assert!(env::var_os("LISTEN_PID").is_none() && env::var_os("LISTEN_FDS").is_none());
    }

    #[test]
    fn adopt_checks_the_descriptor() {
        use std::os::fd::IntoRawFd;
        // A datagram socket is refused, naming the descriptor.
        let dgram = UnixDatagram::unbound().unwrap();
        let raw = dgram.into_raw_fd();
        let e = adopt(raw, 1).unwrap_err().to_string();
        let want =
            format!("inherited descriptor {raw} (LISTEN_FDS=1) is not a listening stream socket");
        assert!(e.starts_with(&want), "{e}");
        // Refused, so not taken: still open, and ours to close.
        assert!(
            fcntl(raw, FcntlArg::F_GETFD).is_ok(),
            "a refused descriptor was closed"
        );
        // SAFETY: `raw` came from into_raw_fd above and nothing took ownership of it.
        drop(unsafe { OwnedFd::from_raw_fd(raw) });
        // A descriptor that is not open is named as such.
        let e = adopt(raw, 1).unwrap_err().to_string();
        assert!(
            e.contains(&format!("descriptor {raw} (LISTEN_FDS=1) is not open")),
            "{e}"
        );
        // A listening socket is taken, made non-blocking and close-on-exec.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let raw = listener.into_raw_fd();
        let fd = adopt(raw, 1).unwrap();
        let fl = OFlag::from_bits_retain(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL).unwrap());
        assert!(fl.contains(OFlag::O_NONBLOCK));
        // A UDP socket (ListenDatagram=) is taken too.
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let fd = adopt(udp.into_raw_fd(), 1).unwrap();
        let fl = OFlag::from_bits_retain(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL).unwrap());
        assert!(fl.contains(OFlag::O_NONBLOCK));
        let fd_flags = FdFlag::from_bits_retain(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFD).unwrap());
        assert!(fd_flags.contains(FdFlag::FD_CLOEXEC));
    }
}
