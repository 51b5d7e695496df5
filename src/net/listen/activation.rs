//! Socket activation (SPEC §6): `LISTEN_PID`/`LISTEN_FDS` hand in listening sockets as
//! descriptors 3, 4, … They are checked and taken at start, before echo-mux opens anything,
//! and then served in place of `--listen`, by one process or by every worker alike.

use std::env;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::sys::socket::{getsockopt, sockopt, AddressFamily, SockType, SockaddrLike};

use super::{local_label, sockets, Endpoint};
use crate::error::Error;

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

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

impl Endpoint {
    /// Adopt a socket handed in by systemd (already listening, already non-blocking), or a
    /// UDP socket from `ListenDatagram=`. Its path, if any, is never unlinked: it belongs to
    /// the socket unit.
    pub fn inherited(fd: OwnedFd) -> Endpoint {
        let datagram = nix::sys::socket::getsockopt(&fd, sockopt::SockType)
            .is_ok_and(|t| t == SockType::Datagram);
        let mut label = local_label(&fd).unwrap_or_else(|| format!("fd {}", fd.as_raw_fd()));
        if datagram {
            label.insert_str(0, "udp:");
        }
        Endpoint {
            fd,
            label,
            datagram,
            owned_path: None,
            inherited: true,
            shared: false,
        }
    }
}

/// Socket activation (SPEC §6): serve systemd's descriptors. They replace `--listen`, and
/// their files' permissions are the socket unit's `SocketMode=`, so `--socket-mode` does not
/// apply. The one place that decides this and says so, for one process and for the
/// supervisor of `--workers` alike.
pub fn activated(fds: Vec<OwnedFd>, listen_given: bool, socket_mode: Option<u32>) -> Vec<Endpoint> {
    let ignored = if listen_given {
        "; --listen is ignored"
    } else {
        ""
    };
    log::info!(
        "socket activation: serving {}{ignored}",
        sockets(fds.len(), "inherited")
    );
    if socket_mode.is_some() {
        log::warn!("--socket-mode is ignored: the socket unit's SocketMode= applies");
    }
    fds.into_iter().map(Endpoint::inherited).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

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
