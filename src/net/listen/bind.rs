//! Binding: a TCP listener, a UDP socket or a unix socket file, made here for one process
//! and for every worker of a SO_REUSEPORT group alike.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use nix::errno::Errno;
use nix::sys::socket::{
    bind as nix_bind, connect as nix_connect, listen as nix_listen, setsockopt, socket, sockopt,
    AddressFamily, Backlog, SockFlag, SockType, SockaddrLike, SockaddrStorage, UnixAddr,
};

use super::{file_identity, local_label, Endpoint, BACKLOG};
use crate::error::Error;
use crate::net::addr::ListenAddr;

impl Endpoint {
    /// Bind and listen on `addr`.
    pub fn bind(addr: &ListenAddr) -> Result<Endpoint, Error> {
        Endpoint::bind_with(addr, false, None)
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
    ) -> Result<Endpoint, Error> {
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
                Ok(Endpoint {
                    fd,
                    label,
                    datagram: false,
                    owned_path: None,
                    shared: false,
                    inherited: false,
                })
            }
            ListenAddr::Udp(sa) => {
                let fd = datagram_socket(sa, reuseport).map_err(fail)?;
                let label = local_label(&fd).unwrap_or_else(|| sa.to_string());
                Ok(Endpoint {
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
                Ok(Endpoint {
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

/// Bind a UDP socket to `addr` (non-blocking, close-on-exec). No SO_REUSEADDR: for UDP it
/// would let a second daemon bind the same port and silently take half the datagrams.
/// An IPv6 socket is IPv6-only, as stream listeners are.
fn datagram_socket(addr: &SocketAddr, reuseport: bool) -> io::Result<OwnedFd> {
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let fd = socket(family, SockType::Datagram, flags, None)?;
    if reuseport {
        // One socket per worker of a `--workers` group (see `group.rs`); the kernel
        // hashes each sender onto one of them.
        setsockopt(&fd, sockopt::ReusePort, &true)?;
    }
    if addr.is_ipv6() {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    nix_bind(fd.as_raw_fd(), &SockaddrStorage::from(*addr))?;
    Ok(fd)
}
