//! The daemon's configuration and the parsers for its values (durations, sizes, addresses).
//! Parsers return a short reason on failure; `cli.rs` turns it into the one-line usage error.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use crate::reactor::BackendKind;

/// How input is turned into replies (SPEC §3).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// Every byte echoed back unchanged and in order.
    Raw,
    /// Each line answered as `Echo=><line> at <ctime>\n`.
    Stamp,
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

/// Everything `run` needs, fully validated.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where to listen (ignored under socket activation).
    pub listen: Vec<ListenAddr>,
    /// The readiness backend.
    pub backend: BackendKind,
    /// Raw or stamp.
    pub mode: Mode,
    /// How long every reply is held; zero for none.
    pub delay: Duration,
    /// Connections on all listeners together beyond which new ones are closed at once.
    pub max_clients: usize,
    /// Cap on one connection's pending output, in bytes (at least 1).
    pub max_buffer: usize,
    /// Close connections without traffic for this long; `None` = never.
    pub idle_timeout: Option<Duration>,
    /// Longest graceful drain after SIGTERM/SIGINT.
    pub shutdown_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec![ListenAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], 50007)))],
            backend: BackendKind::Auto,
            mode: Mode::Raw,
            delay: Duration::ZERO,
            max_clients: 10_000,
            max_buffer: 1 << 20,
            idle_timeout: None,
            shutdown_timeout: Duration::from_secs(5),
        }
    }
}

/// `250ms`, `5s`, `1.5s`, `2m`, `1h`, `100us`, or a bare number of seconds (`0`, `2.5`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let scale = match unit.trim() {
        "" | "s" | "sec" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err("expected a duration such as 250ms, 5s, 1.5s or 2m".into()),
    };
    let value: f64 = num
        .parse()
        .map_err(|_| "expected a duration such as 250ms, 5s, 1.5s or 2m".to_string())?;
    Duration::try_from_secs_f64(value * scale).map_err(|_| "duration out of range".into())
}

/// `4096`, `64KiB`, `1MiB`, `1GiB` (also `K`/`KB`, `M`, `G`, any case, as binary multiples).
pub fn parse_size(s: &str) -> Result<usize, String> {
    const EXPECTED: &str = "expected a size such as 4096, 64KiB, 1MiB or 1GiB";
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(EXPECTED.into()),
    };
    let value: usize = num.parse().map_err(|_| EXPECTED.to_string())?;
    value
        .checked_mul(1 << shift)
        .ok_or_else(|| "size out of range".into())
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
    let port: u16 = port.parse().map_err(|_| format!("invalid port '{port}'"))?;
    let mut addrs = (host, port)
        .to_socket_addrs()
        .map_err(|_| format!("cannot resolve host '{host}'"))?;
    addrs
        .next()
        .map(ListenAddr::Tcp)
        .ok_or_else(|| format!("cannot resolve host '{host}'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0.25"), Ok(Duration::from_millis(250)));
        for bad in ["", "x", "5x", "-1s", "1.2.3s", "ms", "1e3"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("2M"), Ok(2 << 20));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert_eq!(parse_size("64kib"), Ok(64 << 10));
        assert_eq!(parse_size("0"), Ok(0));
        for bad in ["", "x", "1.5MiB", "-1", "1TiB", "99999999999999999999"] {
            assert!(parse_size(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(parse_size("18446744073709551615GiB").is_err());
    }

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
