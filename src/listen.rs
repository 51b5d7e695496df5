//! Listening sockets: bound from `--listen` addresses, or inherited from systemd.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::sys::socket::{
    bind as nix_bind, getsockname, listen as nix_listen, setsockopt, socket, sockopt,
    AddressFamily, Backlog, SockFlag, SockType, SockaddrLike, SockaddrStorage, UnixAddr,
};

use crate::config::ListenAddr;
use crate::error::Error;

/// Connections the kernel may queue per listener while we are busy (SPEC: at least 1024;
/// the kernel caps it at net.core.somaxconn).
pub const BACKLOG: i32 = 4096;

/// A listening, non-blocking socket (or a bound UDP socket) and what to show for it in logs.
pub struct Listener {
    fd: OwnedFd,
    label: String,
    /// A UDP socket (served by `udp.rs`), not a stream listener.
    datagram: bool,
    /// A unix socket path we created, with its (device, inode), removed again when the
    /// listener is dropped if it is still that file.
    owned_path: Option<(PathBuf, (u64, u64))>,
}

impl Listener {
    /// Bind and listen on `addr`.
    pub fn bind(addr: &ListenAddr) -> Result<Listener, Error> {
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
                })
            }
            ListenAddr::Udp(sa) => {
                let fd = crate::udp::bind(sa).map_err(fail)?;
                let label = local_label(&fd).unwrap_or_else(|| sa.to_string());
                Ok(Listener {
                    fd,
                    label: format!("udp:{label}"),
                    datagram: true,
                    owned_path: None,
                })
            }
            ListenAddr::Unix(path) => {
                remove_stale_socket(path).map_err(fail)?;
                let fd = stream_socket(AddressFamily::Unix).map_err(fail)?;
                let ua = UnixAddr::new(path.as_path()).map_err(|e| fail(e.into()))?;
                bind_listen(&fd, &ua).map_err(fail)?;
                let identity = file_identity(path).map_err(fail)?;
                Ok(Listener {
                    fd,
                    label: addr.to_string(),
                    datagram: false,
                    owned_path: Some((path.clone(), identity)),
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
        }
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
                    log::debug!("cannot remove {}: {e}", path.display());
                }
            }
            Ok(_) => log::warn!(
                "not removing {}: it is no longer our socket",
                path.display()
            ),
            Err(e) => log::debug!("not removing {}: {e}", path.display()),
        }
    }
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
    nix_listen(fd, Backlog::new(BACKLOG).unwrap_or(Backlog::MAXCONN))?;
    Ok(())
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
    match UnixStream::connect(path) {
        Ok(_) => Err(io::Error::from_raw_os_error(libc::EADDRINUSE)),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            log::debug!("removing stale socket {}", path.display());
            std::fs::remove_file(path)
        }
        Err(e) => Err(e),
    }
}

/// `127.0.0.1:41234`, `[::1]:50007` or `unix:/path`, read back from the kernel (the caller
/// adds `udp:` for a datagram socket).
fn local_label(fd: &OwnedFd) -> Option<String> {
    let addr: SockaddrStorage = getsockname(fd.as_raw_fd()).ok()?;
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(std::net::SocketAddrV4::from(*v4).to_string());
    }
    if let Some(v6) = addr.as_sockaddr_in6() {
        return Some(std::net::SocketAddrV6::from(*v6).to_string());
    }
    let unix = addr.as_unix_addr()?;
    match (unix.path(), unix.as_abstract()) {
        (Some(p), _) => Some(format!("unix:{}", p.display())),
        (None, Some(name)) => Some(format!("unix:@{}", String::from_utf8_lossy(name))),
        _ => Some("unix:(unnamed)".into()),
    }
}
