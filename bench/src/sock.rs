//! Stream sockets to the server under test: resolving the target, connecting without hanging,
//! and reading and writing TCP and unix streams through one type.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::args::Target;
use echo_mux::error::Plain;

/// A connected, non-blocking stream.
pub enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Sock {
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => (&*s).read(buf),
            Sock::Unix(s) => (&*s).read(buf),
        }
    }

    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => (&*s).write(buf),
            Sock::Unix(s) => (&*s).write(buf),
        }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Sock::Tcp(s) => s.as_fd(),
            Sock::Unix(s) => s.as_fd(),
        }
    }

    pub fn raw(&self) -> RawFd {
        self.fd().as_raw_fd()
    }
}

/// Resolved address to connect to.
pub enum Dest<'a> {
    Tcp(SocketAddr),
    Unix(&'a Path),
}

/// The first address `HOST:PORT` resolves to.
pub fn resolve_inet(a: &str) -> Result<SocketAddr, String> {
    a.to_socket_addrs()
        .map_err(|e| format!("cannot resolve {a}: {}", Plain(&e)))?
        .next()
        .ok_or_else(|| format!("cannot resolve {a}: no address"))
}

pub fn resolve(target: &Target) -> Result<Dest<'_>, String> {
    match target {
        Target::Unix(p) => Ok(Dest::Unix(p)),
        Target::Tcp(a) => resolve_inet(a).map(Dest::Tcp),
    }
}

/// Which group of connections is being opened (for the error message).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Idle,
    Active,
}

/// Opens `n` connections to `dest`; the first failure is a one-line reason naming which.
pub fn connect_all(
    dest: &Dest,
    target: &Target,
    timeout: Duration,
    n: usize,
    role: Role,
) -> Result<Vec<Sock>, String> {
    (0..n)
        .map(|i| {
            connect(dest, timeout).map_err(|e| match role {
                Role::Active if n == 1 => format!("cannot connect to {target}: {}", Plain(&e)),
                Role::Active => format!(
                    "cannot connect to {target} (connection {} of {n}): {}",
                    i + 1,
                    Plain(&e)
                ),
                Role::Idle => format!(
                    "cannot connect to {target} (idle connection {} of {n}): {}",
                    i + 1,
                    Plain(&e)
                ),
            })
        })
        .collect()
}

fn connect(dest: &Dest, timeout: Duration) -> io::Result<Sock> {
    match *dest {
        Dest::Tcp(sa) => {
            let s = TcpStream::connect_timeout(&sa, timeout)?;
            s.set_nodelay(true)?;
            s.set_nonblocking(true)?;
            Ok(Sock::Tcp(s))
        }
        Dest::Unix(path) => connect_unix(path, timeout).map(Sock::Unix),
    }
}

/// A unix-socket connect that cannot hang: non-blocking, retried while the server's backlog is
/// full (EAGAIN), until `timeout`.
fn connect_unix(path: &Path, timeout: Duration) -> io::Result<UnixStream> {
    use nix::errno::Errno;
    use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr};
    let addr = UnixAddr::new(path)?;
    let deadline = Instant::now() + timeout;
    loop {
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        match socket::connect(fd.as_raw_fd(), &addr) {
            Ok(()) => return Ok(UnixStream::from(fd)),
            Err(Errno::EAGAIN) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2))
            }
            Err(Errno::EAGAIN) => return Err(io::ErrorKind::TimedOut.into()),
            Err(e) => return Err(e.into()),
        }
    }
}

/// An error that only means "not now".
pub fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}
