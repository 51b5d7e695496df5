//! Listening sockets: bound from `--listen` addresses, or inherited from systemd.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::sys::socket::{getsockname, SockaddrStorage};

use crate::error::{Error, Plain};
use crate::event::reactor::{Backend, Interest, Token};
use crate::net::addr::to_socket_addr;

pub mod activation;
mod bind;
pub mod group;

/// Connections the kernel may queue per listener while we are busy (SPEC: at least 1024;
/// the kernel caps it at net.core.somaxconn).
pub const BACKLOG: i32 = 4096;

/// An address echo-mux serves on: a listening, non-blocking stream socket or a bound UDP
/// socket, and what to show for it in logs.
pub struct Endpoint {
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

impl Endpoint {
    /// The IP address this socket is bound to (`None` for a unix socket).
    pub fn local_ip_addr(&self) -> Option<SocketAddr> {
        to_socket_addr(&getsockname(self.fd()).ok()?)
    }

    /// Mark this listener as one socket that several worker processes wait on (inherited
    /// and unix listeners under `--workers`): it is registered exclusively (see
    /// [`Endpoint::set_interest`]).
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

impl AsFd for Endpoint {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for Endpoint {
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

/// select(2) cannot watch a descriptor >= FD_SETSIZE. Clients beyond it are refused one by
/// one (SPEC §4), but a listener or the signal pipe there is fatal: say which and why.
pub fn select_can_watch(listeners: &[Endpoint], signal_pipe: RawFd) -> Result<(), Error> {
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

impl Endpoint {
    /// Write this endpoint for a reload's new image ([`Endpoint::adopt`]): the descriptor
    /// (kept open across the execve) and everything it remembers, the socket file it must
    /// remove at the end included. This image then execs without dropping it, so the file
    /// stays.
    pub fn save(&self, w: &mut crate::reload::state::Writer) {
        use std::os::unix::ffi::OsStrExt;
        w.fd(self.fd());
        w.str(&self.label);
        w.bool(self.datagram);
        w.bool(self.inherited);
        w.bool(self.shared);
        w.bool(self.owned_path.is_some());
        if let Some((path, (dev, ino))) = &self.owned_path {
            w.bytes(path.as_os_str().as_bytes());
            w.u64(*dev);
            w.u64(*ino);
        }
    }

    /// The endpoint an earlier image saved with [`Endpoint::save`].
    pub fn adopt(r: &mut crate::reload::state::Reader<'_>) -> Result<Endpoint, String> {
        use std::os::unix::ffi::OsStrExt;
        let s = |e: crate::reload::state::Error| e.to_string();
        let raw = r.fd().map_err(s)?;
        let label = r.str().map_err(s)?.to_string();
        let datagram = r.bool().map_err(s)?;
        let inherited = r.bool().map_err(s)?;
        let shared = r.bool().map_err(s)?;
        let owned_path = if r.bool().map_err(s)? {
            let path = PathBuf::from(std::ffi::OsStr::from_bytes(r.bytes().map_err(s)?));
            Some((path, (r.u64().map_err(s)?, r.u64().map_err(s)?)))
        } else {
            None
        };
        let fd = crate::reload::state::adopt(raw)
            .map_err(|e| format!("listener {label} (fd {raw}): {}", Plain(&e)))?;
        Ok(Endpoint {
            fd,
            label,
            datagram,
            owned_path,
            inherited,
            shared,
        })
    }
}
