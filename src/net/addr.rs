//! Addresses in one canonical form: an IPv4-mapped IPv6 peer is its IPv4 address, decided
//! here once for access checks, per-source keys, the UDP loop guard and every log line;
//! and the `--listen` addresses, parsed strictly (no octal, no inet_aton shorthand).

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use nix::sys::socket::SockaddrStorage;

use crate::error::Cut;

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

/// The IP socket address in what nix read back from the kernel (getsockname), if any.
pub fn to_socket_addr(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(std::net::SocketAddrV4::from(*v4).into());
    }
    addr.as_sockaddr_in6()
        .map(|v6| std::net::SocketAddrV6::from(*v6).into())
}

/// One address to listen on.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ListenAddr {
    /// A TCP address (names are resolved when parsed: the first address is used).
    Tcp(SocketAddr),
    /// A unix stream socket at this path.
    Unix(PathBuf),
    /// A UDP socket (SPEC §9): `udp:HOST:PORT`, resolved like a TCP address.
    Udp(SocketAddr),
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "{a}"),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            ListenAddr::Udp(a) => write!(f, "udp:{a}"),
        }
    }
}

/// `HOST:PORT`, `[V6]:PORT`, `unix:/path`, `udp:HOST:PORT`, `udp:[V6]:PORT`. Names are
/// resolved now; the first address wins.
pub fn parse_listen(s: &str) -> Result<ListenAddr, String> {
    if let Some(rest) = s.strip_prefix("udp:") {
        return match parse_listen(rest) {
            Ok(ListenAddr::Tcp(addr)) => Ok(ListenAddr::Udp(addr)),
            // A bad port or an unknown host says so; anything else gets the udp: forms.
            Err(why) if !why.starts_with("expected") => Err(why),
            _ => Err("expected udp:HOST:PORT or udp:[IPv6]:PORT".into()),
        };
    }
    if let Some(path) = s.strip_prefix("unix:") {
        if path.is_empty() {
            return Err("expected a path after unix:".into());
        }
        // sun_path holds 108 bytes including the terminating NUL.
        if path.len() >= 108 {
            return Err("unix socket path is longer than 107 bytes".into());
        }
        return Ok(ListenAddr::Unix(PathBuf::from(path)));
    }
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(ListenAddr::Tcp(addr));
    }
    const EXPECTED: &str = "expected HOST:PORT, [IPv6]:PORT, unix:/path or udp:HOST:PORT";
    let (host, port) = s.rsplit_once(':').ok_or(EXPECTED)?;
    if host.is_empty() || host.contains(':') || host.contains(['[', ']', ' ', '/']) {
        return Err(EXPECTED.into());
    }
    let port: u16 = port
        .parse()
        .map_err(|_| format!("invalid port '{}'", Cut(port)))?;
    // The resolver would read 010.0.0.1 as octal (8.0.0.1), and 127.1 or 0x7f.0.0.1 in
    // inet_aton's other forms: a host made of numbers only is a dotted IPv4 address or an error.
    if let Some(ip) = numeric_ipv4(host) {
        return Ok(ListenAddr::Tcp(SocketAddr::new(ip?.into(), port)));
    }
    let mut addrs = (host, port)
        .to_socket_addrs()
        .map_err(|_| format!("cannot resolve host '{}'", Cut(host)))?;
    addrs
        .next()
        .map(ListenAddr::Tcp)
        .ok_or_else(|| format!("cannot resolve host '{}'", Cut(host)))
}

/// Four dotted decimal parts, one with a leading zero (`010.0.0.1`): what inet_aton reads
/// as octal.
pub(crate) fn octal_looking(host: &str) -> bool {
    let parts: Vec<&str> = host.split('.').collect();
    parts.len() == 4
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && parts.iter().any(|p| p.len() > 1 && p.starts_with('0'))
}

/// Why an [`octal_looking`] host is refused.
pub(crate) fn octal_why(host: &str) -> String {
    format!(
        "'{}' has a part with a leading zero, which would be read as octal: write each part in decimal without leading zeros",
        Cut(host)
    )
}

/// A host written as numbers only (`10.0.0.1`, `010.0.0.1`, `127.1`, `0x7f.1`, `2130706433`):
/// `None` for anything else (a name). Only the strict dotted form of four decimal parts
/// without leading zeros is an address (SPEC §1): the C resolver would read `010` as octal.
pub(crate) fn numeric_ipv4(host: &str) -> Option<Result<std::net::Ipv4Addr, String>> {
    let numeric = |part: &str| {
        let hex = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X"));
        match hex {
            Some(h) => h.bytes().all(|b| b.is_ascii_hexdigit()),
            None => !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()),
        }
    };
    if !host.split('.').all(numeric) {
        return None;
    }
    if let Ok(ip) = host.parse() {
        return Some(Ok(ip));
    }
    let why = if octal_looking(host) {
        octal_why(host)
    } else {
        format!(
            "'{}' is not a dotted IPv4 address (four decimal parts, e.g. 10.0.0.1)",
            Cut(host)
        )
    };
    Some(Err(why))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let tcp = |s: &str| ListenAddr::Tcp(s.parse().unwrap());
        assert_eq!(parse_listen("127.0.0.1:50007"), Ok(tcp("127.0.0.1:50007")));
        assert_eq!(parse_listen("0.0.0.0:0"), Ok(tcp("0.0.0.0:0")));
        assert_eq!(parse_listen("[::1]:7"), Ok(tcp("[::1]:7")));
        assert_eq!(parse_listen("[::]:7"), Ok(tcp("[::]:7")));
        assert_eq!(
            parse_listen("unix:/tmp/x.sock"),
            Ok(ListenAddr::Unix("/tmp/x.sock".into()))
        );
        match parse_listen("localhost:80") {
            Ok(ListenAddr::Tcp(a)) => assert!(a.ip().is_loopback() && a.port() == 80),
            other => panic!("localhost:80 gave {other:?}"),
        }
        for bad in [
            "garbage",
            "127.0.0.1",
            "127.0.0.1:x",
            ":80",
            "::1:80",
            "unix:",
            "1.2.3.4:70000",
        ] {
            assert!(parse_listen(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(parse_listen(&format!("unix:/{}", "a".repeat(120))).is_err());
    }

    /// SPEC §1: `010.0.0.1` is a usage error, never 8.0.0.1; so are inet_aton's other
    /// numeric forms. Names and strict dotted addresses still work.

    #[test]
    fn numeric_hosts_are_strict_dotted_ipv4() {
        for bad in [
            "010.0.0.1:7000",
            "10.0.0.01:7000",
            "udp:010.0.0.1:7",
            "127.1:7",
            "0x7f.0.0.1:7",
            "2130706433:7",
            "1.2.3.4.5:7",
            "256.0.0.1:7",
        ] {
            let why = parse_listen(bad).unwrap_err();
            assert!(
                why.contains("IPv4") || why.contains("octal"),
                "{bad}: {why}"
            );
        }
        assert!(parse_listen("010.0.0.1:7000")
            .unwrap_err()
            .contains("leading zero"));
        assert_eq!(
            parse_listen("10.0.0.1:7000"),
            Ok(ListenAddr::Tcp("10.0.0.1:7000".parse().unwrap()))
        );
        assert_eq!(
            parse_listen("0.0.0.0:0"),
            Ok(ListenAddr::Tcp("0.0.0.0:0".parse().unwrap()))
        );
        assert_eq!(numeric_ipv4("localhost"), None);
        assert_eq!(numeric_ipv4("10.example"), None);
    }

    #[test]
    fn udp_addresses() {
        let udp = |s: &str| ListenAddr::Udp(s.parse().unwrap());
        assert_eq!(parse_listen("udp:127.0.0.1:7"), Ok(udp("127.0.0.1:7")));
        assert_eq!(parse_listen("udp:[::]:0"), Ok(udp("[::]:0")));
        assert_eq!(
            parse_listen("udp:0.0.0.0:0").unwrap().to_string(),
            "udp:0.0.0.0:0"
        );
        assert_eq!(
            parse_listen("udp:[::1]:7").unwrap().to_string(),
            "udp:[::1]:7"
        );
        assert!(matches!(parse_listen("udp:localhost:7"), Ok(ListenAddr::Udp(a)) if a.port() == 7));
        for bad in [
            "udp:",
            "udp:garbage",
            "udp:unix:/x",
            "udp:udp:1.2.3.4:5",
            "udp:1.2.3.4",
        ] {
            assert!(parse_listen(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn display_matches_what_the_user_wrote() {
        assert_eq!(parse_listen("[::1]:7").unwrap().to_string(), "[::1]:7");
        assert_eq!(parse_listen("unix:/a/b").unwrap().to_string(), "unix:/a/b");
    }
}
