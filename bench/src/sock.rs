//! Stream sockets to the server under test: resolving the target, connecting without hanging,
//! and reading and writing TCP and unix streams through one type.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::args::{ProxyHeader, Target};
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
    header: Option<ProxyHeader>,
) -> Result<Vec<Sock>, String> {
    (0..n)
        .map(|i| {
            connect(dest, timeout, header).map_err(|e| match role {
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

fn connect(dest: &Dest, timeout: Duration, header: Option<ProxyHeader>) -> io::Result<Sock> {
    match *dest {
        Dest::Tcp(sa) => {
            let mut s = TcpStream::connect_timeout(&sa, timeout)?;
            s.set_nodelay(true)?;
            if let Some(version) = header {
                // At most 52 bytes on a fresh connection: the kernel takes them at once.
                s.write_all(&proxy_header(version, s.local_addr()?, sa))?;
            }
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

/// The PROXY protocol header a load balancer would send for a client at `client` connecting
/// to `server` (HAProxy's specification: v1 is one text line, v2 a binary block).
pub fn proxy_header(version: ProxyHeader, client: SocketAddr, server: SocketAddr) -> Vec<u8> {
    match version {
        ProxyHeader::V1 => {
            let family = if client.is_ipv4() { "TCP4" } else { "TCP6" };
            let (c, s) = (client.ip().to_canonical(), server.ip().to_canonical());
            let (cp, sp) = (client.port(), server.port());
            format!("PROXY {family} {c} {s} {cp} {sp}\r\n").into_bytes()
        }
        ProxyHeader::V2 => {
            let mut h = b"\r\n\r\n\0\r\nQUIT\n\x21".to_vec();
            match (client, server) {
                (SocketAddr::V4(c), SocketAddr::V4(s)) => {
                    h.extend([0x11, 0, 12]);
                    h.extend(c.ip().octets());
                    h.extend(s.ip().octets());
                }
                (c, s) => {
                    let six = |a: SocketAddr| match a {
                        SocketAddr::V4(a) => a.ip().to_ipv6_mapped().octets(),
                        SocketAddr::V6(a) => a.ip().octets(),
                    };
                    h.extend([0x21, 0, 36]);
                    h.extend(six(c));
                    h.extend(six(s));
                }
            }
            h.extend(client.port().to_be_bytes());
            h.extend(server.port().to_be_bytes());
            h
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_headers_as_the_specification_writes_them() {
        let (c, s) = (
            "192.0.2.7:53412".parse().unwrap(),
            "127.0.0.1:50007".parse().unwrap(),
        );
        assert_eq!(
            proxy_header(ProxyHeader::V1, c, s),
            b"PROXY TCP4 192.0.2.7 127.0.0.1 53412 50007\r\n"
        );
        let v2 = proxy_header(ProxyHeader::V2, c, s);
        assert_eq!(&v2[..16], b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c");
        assert_eq!(
            &v2[16..],
            [192, 0, 2, 7, 127, 0, 0, 1, 0xd0, 0xa4, 0xc3, 0x57]
        );
        let six = proxy_header(ProxyHeader::V2, "[2001:db8::7]:1".parse().unwrap(), s);
        assert_eq!((six.len(), six[13], six[15]), (52, 0x21, 36));
    }
}
