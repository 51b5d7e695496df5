//! Listening sockets: bound from `--listen` addresses, or inherited from systemd.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::socket::{
    bind as nix_bind, connect as nix_connect, getsockname, listen as nix_listen, setsockopt,
    socket, sockopt, AddressFamily, Backlog, SockFlag, SockType, SockaddrLike, SockaddrStorage,
    UnixAddr,
};

use crate::config::{Config, ListenAddr};
use crate::error::{Error, Plain};
use crate::reactor::{Backend, Interest, Token};

/// Connections the kernel may queue per listener while we are busy (SPEC: at least 1024;
/// the kernel caps it at net.core.somaxconn).
pub const BACKLOG: i32 = 4096;

/// A listening, non-blocking socket (or a bound UDP socket) and what to show for it in logs.
pub struct Listener {
    fd: OwnedFd,
    label: String,
    /// A UDP socket (served by `udp/`), not a stream listener.
    datagram: bool,
    /// A unix socket path we created, with its (device, inode), removed again when the
    /// listener is dropped if it is still that file.
    owned_path: Option<(PathBuf, (u64, u64))>,
    inherited: bool,
    /// One socket several worker processes wait on (registered exclusively).
    shared: bool,
}

impl Listener {
    /// Bind and listen on `addr`.
    pub fn bind(addr: &ListenAddr) -> Result<Listener, Error> {
        Listener::bind_with(addr, false, None)
    }

    /// The IP address this socket is bound to (`None` for a unix socket).
    pub fn local_ip_addr(&self) -> Option<SocketAddr> {
        to_socket_addr(&getsockname(self.fd()).ok()?)
    }

    /// Bind and listen on `addr`, with SO_REUSEPORT if asked (TCP and UDP; a unix socket
    /// ignores it: one socket per worker of a group, see `supervisor/listeners.rs`). A unix socket file gets permissions
    /// `socket_mode` (`--socket-mode`) as bind creates it, through the umask (see
    /// [`bind_with_mode`]): never through its path afterwards, where a symlink swapped in by
    /// whoever owns the directory could redirect a chmod to any file (SPEC §10).
    pub fn bind_with(
        addr: &ListenAddr,
        reuseport: bool,
        socket_mode: Option<u32>,
    ) -> Result<Listener, Error> {
        let fail = |source: io::Error| Error::Listen {
            addr: addr.to_string(),
            source,
        };
        match addr {
            ListenAddr::Tcp(sa) => {
                let family = if sa.is_ipv4() {
                    AddressFamily::Inet
                } else {
                    AddressFamily::Inet6
                };
                let fd = stream_socket(family).map_err(fail)?;
                setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(|e| fail(e.into()))?;
                if reuseport {
                    setsockopt(&fd, sockopt::ReusePort, &true).map_err(|e| fail(e.into()))?;
                }
                if sa.is_ipv6() {
                    // [::]:P means IPv6 only, so that 0.0.0.0:P can be listened on beside it.
                    setsockopt(&fd, sockopt::Ipv6V6Only, &true).map_err(|e| fail(e.into()))?;
                }
                let storage = SockaddrStorage::from(*sa);
                bind_listen(&fd, &storage).map_err(fail)?;
                let label = local_label(&fd).unwrap_or_else(|| sa.to_string());
                Ok(Listener {
                    fd,
                    label,
                    datagram: false,
                    owned_path: None,
                    shared: false,
                    inherited: false,
                })
            }
            ListenAddr::Udp(sa) => {
                let fd = crate::udp::bind(sa, reuseport).map_err(fail)?;
                let label = local_label(&fd).unwrap_or_else(|| sa.to_string());
                Ok(Listener {
                    fd,
                    label: format!("udp:{label}"),
                    datagram: true,
                    owned_path: None,
                    shared: false,
                    inherited: false,
                })
            }
            ListenAddr::Unix(path) => {
                remove_stale_socket(path).map_err(fail)?;
                let fd = stream_socket(AddressFamily::Unix).map_err(fail)?;
                let ua = UnixAddr::new(path.as_path()).map_err(|e| fail(e.into()))?;
                bind_with_mode(&fd, &ua, socket_mode).map_err(fail)?;
                listen(&fd).map_err(fail)?;
                let identity = file_identity(path).map_err(fail)?;
                Ok(Listener {
                    fd,
                    label: addr.to_string(),
                    datagram: false,
                    owned_path: Some((path.clone(), identity)),
                    shared: false,
                    inherited: false,
                })
            }
        }
    }

    /// Adopt a socket handed in by systemd (already listening, already non-blocking), or a
    /// UDP socket from `ListenDatagram=`. Its path, if any, is never unlinked: it belongs to
    /// the socket unit.
    pub fn inherited(fd: OwnedFd) -> Listener {
        let datagram = nix::sys::socket::getsockopt(&fd, sockopt::SockType)
            .is_ok_and(|t| t == SockType::Datagram);
        let mut label = local_label(&fd).unwrap_or_else(|| format!("fd {}", fd.as_raw_fd()));
        if datagram {
            label.insert_str(0, "udp:");
        }
        Listener {
            fd,
            label,
            datagram,
            owned_path: None,
            inherited: true,
            shared: false,
        }
    }

    /// Mark this listener as one socket that several worker processes wait on (inherited
    /// and unix listeners under `--workers`): it is registered exclusively (see
    /// [`Listener::set_interest`]).
    pub fn set_shared(&mut self) {
        self.shared = true;
    }

    /// Is this one socket that several workers share?
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// Forget the socket file: dropping this copy will not remove it. A forked worker's
    /// copies are disowned; the supervisor, which created the file, removes it.
    pub fn disown(&mut self) {
        self.owned_path = None;
    }

    /// Make `backend`'s interest in this listener `new`, given it was `old`. A shared
    /// listener is added with [`Backend::add_exclusive`], so one worker wakes per connection
    /// (or datagram batch) with epoll. An exclusive entry cannot be modified (EINVAL), only
    /// removed: a shared UDP socket going from READ to READ|WRITE (a reply refused with
    /// EAGAIN) is removed and added again, which happens only at such rare edges.
    pub fn set_interest(
        &self,
        backend: &mut dyn Backend,
        token: Token,
        old: Interest,
        new: Interest,
    ) -> io::Result<()> {
        if !self.shared || new.is_none() {
            return backend.set_interest(self.fd(), token, old, new);
        }
        if !old.is_none() {
            backend.set_interest(self.fd(), token, old, Interest::NONE)?;
        }
        backend.add_exclusive(self.fd(), token, new)
    }

    /// Handed in by systemd rather than bound here.
    pub fn is_inherited(&self) -> bool {
        self.inherited
    }

    /// A UDP socket, not a stream listener.
    pub fn is_datagram(&self) -> bool {
        self.datagram
    }

    /// The address actually bound, e.g. `127.0.0.1:41234` or `unix:/run/echo.sock`.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The descriptor, for registration and accept.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let Some((path, identity)) = &self.owned_path else {
            return;
        };
        // Someone may have replaced the path since (another instance, an operator): only
        // remove the socket file we created.
        match file_identity(path) {
            Ok(now) if now == *identity => {
                if let Err(e) = std::fs::remove_file(path) {
                    log::debug!("cannot remove {}: {}", path.display(), Plain(&e));
                }
            }
            Ok(_) => log::warn!(
                "not removing {}: it is no longer our socket",
                path.display()
            ),
            Err(e) => log::debug!("not removing {}: {}", path.display(), Plain(&e)),
        }
    }
}

/// `1 inherited socket`, `2 listening sockets`: `n` sockets described by `kind`.
pub fn sockets(n: usize, kind: &str) -> String {
    match n {
        1 => format!("1 {kind} socket"),
        n => format!("{n} {kind} sockets"),
    }
}

/// Socket activation (SPEC §6): adopt systemd's descriptors. They replace `--listen`, and
/// their files' permissions are the socket unit's `SocketMode=`, so `--socket-mode` does not
/// apply. The one place that decides this and says so, for one process and for the
/// supervisor of `--workers` alike.
pub fn adopt(fds: Vec<OwnedFd>, config: &Config) -> Vec<Listener> {
    let ignored = if config.listen_given {
        "; --listen is ignored"
    } else {
        ""
    };
    log::info!(
        "socket activation: serving {}{ignored}",
        sockets(fds.len(), "inherited")
    );
    if config.socket_mode.is_some() {
        log::warn!("--socket-mode is ignored: the socket unit's SocketMode= applies");
    }
    fds.into_iter().map(Listener::inherited).collect()
}

/// select(2) cannot watch a descriptor >= FD_SETSIZE. Clients beyond it are refused one by
/// one (SPEC §4), but a listener or the signal pipe there is fatal: say which and why.
pub fn select_can_watch(listeners: &[Listener], signal_pipe: RawFd) -> Result<(), Error> {
    let limit = libc::FD_SETSIZE;
    let why = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("select watches only descriptors below FD_SETSIZE ({limit}); use --backend poll or epoll"),
        )
    };
    if let Some(l) = listeners.iter().find(|l| l.fd() as usize >= limit) {
        let what = if l.is_inherited() {
            "inherited descriptor"
        } else {
            "descriptor"
        };
        let context = format!(
            "{what} {} ({}) cannot be used with --backend select",
            l.fd(),
            l.label()
        );
        return Err(Error::io(context, why()));
    }
    if signal_pipe as usize >= limit {
        let context =
            format!("the signal pipe is descriptor {signal_pipe}, too high for --backend select");
        return Err(Error::io(context, why()));
    }
    Ok(())
}

fn file_identity(path: &Path) -> io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path)?;
    Ok((meta.dev(), meta.ino()))
}

fn stream_socket(family: AddressFamily) -> io::Result<OwnedFd> {
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    Ok(socket(family, SockType::Stream, flags, None)?)
}

fn bind_listen(fd: &OwnedFd, addr: &dyn SockaddrLike) -> io::Result<()> {
    nix_bind(fd.as_raw_fd(), addr)?;
    listen(fd)
}

fn listen(fd: &OwnedFd) -> io::Result<()> {
    nix_listen(fd, Backlog::new(BACKLOG).unwrap_or(Backlog::MAXCONN))?;
    Ok(())
}

/// Bind a unix socket so that its file is created with permissions `mode` (`None`: what the
/// umask gives). Linux creates a socket file with 0777 less the umask and offers no way to
/// change it through the descriptor (fchmod on a socket does not reach the file), so the
/// umask is set to `!mode` for the bind alone and put back at once. Nothing here, nor
/// anywhere in echo-mux, changes a mode by path: clippy.toml disallows `set_permissions`,
/// `chmod` and `fchmodat`, so `cargo clippy -D warnings` rejects any such call. (The
/// process has one thread while it binds, so no other file creation sees the umask.)
fn bind_with_mode(fd: &OwnedFd, addr: &UnixAddr, mode: Option<u32>) -> io::Result<()> {
    use nix::sys::stat::{umask, Mode};
    let Some(mode) = mode else {
        return Ok(nix_bind(fd.as_raw_fd(), addr)?);
    };
    let wanted = Mode::from_bits_truncate((!mode & 0o777) as libc::mode_t);
    let before = umask(wanted);
    let bound = nix_bind(fd.as_raw_fd(), addr);
    umask(before);
    Ok(bound?)
}

/// A socket file left by an earlier run is replaced only if nothing listens on it.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket",
        ));
    }
    // A non-blocking probe: a blocking connect() to a live listener whose backlog is full
    // waits until it accepts, which may be never. For unix sockets EAGAIN is that full
    // backlog (they never return EINPROGRESS): someone is listening.
    let probe = stream_socket(AddressFamily::Unix)?;
    let addr = UnixAddr::new(path).map_err(io::Error::from)?;
    match nix_connect(probe.as_raw_fd(), &addr) {
        Ok(()) | Err(Errno::EAGAIN | Errno::EINPROGRESS) => {
            Err(io::Error::from_raw_os_error(libc::EADDRINUSE))
        }
        Err(Errno::ECONNREFUSED) => {
            log::debug!("removing stale socket {}", path.display());
            std::fs::remove_file(path)
        }
        Err(Errno::ENOENT) => Ok(()), // removed meanwhile
        Err(e) => Err(e.into()),
    }
}

fn to_socket_addr(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(std::net::SocketAddrV4::from(*v4).into());
    }
    addr.as_sockaddr_in6()
        .map(|v6| std::net::SocketAddrV6::from(*v6).into())
}

/// `127.0.0.1:41234`, `[::1]:50007` or `unix:/path`, read back from the kernel (the caller
/// adds `udp:` for a datagram socket).
fn local_label(fd: &OwnedFd) -> Option<String> {
    let addr: SockaddrStorage = getsockname(fd.as_raw_fd()).ok()?;
    if let Some(ip) = to_socket_addr(&addr) {
        return Some(ip.to_string());
    }
    let unix = addr.as_unix_addr()?;
    match (unix.path(), unix.as_abstract()) {
        (Some(p), _) => Some(format!("unix:{}", p.display())),
        (None, Some(name)) => Some(format!("unix:@{}", String::from_utf8_lossy(name))),
        _ => Some("unix:(unnamed)".into()),
    }
}
