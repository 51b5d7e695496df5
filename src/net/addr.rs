//! Addresses in one canonical form: an IPv4-mapped IPv6 peer is its IPv4 address, decided
//! here once for access checks, per-source keys, the UDP loop guard and every log line.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// A peer address as SPEC §10 sees it: an IPv4-mapped IPv6 address is its IPv4 address.
/// The one place this is decided: access checks, per-source keys, the UDP loop guard and
/// every log line that shows a peer go through it (or [`fold_socket`]).
pub fn fold(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// A peer's socket address with its IP [`fold`]ed: `[::ffff:127.0.0.1]:5` is `127.0.0.1:5`.
pub fn fold_socket(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(fold(addr.ip()), addr.port())
}

/// The other end of an accepted connection.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Peer {
    /// A TCP client.
    Ip(SocketAddr),
    /// A unix-socket client: it has no address worth showing, and no source (SPEC §10).
    Unix,
}

impl Peer {
    /// The source address of SPEC §10: the IP, with an IPv4-mapped IPv6 address as its IPv4
    /// address; `None` for unix-socket peers.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Peer::Ip(a) => Some(fold(a.ip())),
            Peer::Unix => None,
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Ip(a) => write!(f, "{a}"),
            Peer::Unix => f.write_str("a unix-socket client"),
        }
    }
}
