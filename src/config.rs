//! The daemon's configuration and the parsers for its values (sizes, addresses; durations
//! are in `duration.rs`). Parsers return a short reason; `cli.rs` makes it the usage error.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use crate::duration::{Human, MAX_DURATION};
use crate::reactor::BackendKind;

pub use crate::duration::parse_duration;

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
    /// `--allow`, `--deny`, `--max-per-source`, `--rate-per-source` (SPEC §10).
    pub access: crate::access::Policy,
    /// TCP keepalive's first probe after this much silence; `None` = off.
    pub keepalive: Option<Duration>,
    /// One info line per closed connection.
    pub log_connections: bool,
    /// `--proxy-from`: TCP peers that must begin with a PROXY header (SPEC §14).
    pub proxy_from: Vec<crate::access::Cidr>,
    /// Permissions of unix socket files we create; `None` leaves them to the umask.
    pub socket_mode: Option<u32>,
    /// Worker processes (SPEC §8); 1 = no supervisor, `auto` already resolved.
    pub workers: usize,
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
            access: crate::access::Policy::default(),
            keepalive: Some(Duration::from_secs(300)),
            log_connections: false,
            proxy_from: Vec::new(),
            socket_mode: None,
            workers: 1,
        }
    }
}

impl Config {
    /// Check what the types cannot say, for callers that build a `Config` by hand (the
    /// command line checks each value as it parses it, naming the value as typed).
    pub fn check(&self) -> Result<(), String> {
        let durations = [
            ("--delay", Some(self.delay)),
            ("--idle-timeout", self.idle_timeout),
            ("--shutdown-timeout", Some(self.shutdown_timeout)),
        ];
        for (flag, d) in durations {
            if let Some(d) = d.filter(|d| *d > MAX_DURATION) {
                return Err(format!(
                    "invalid value '{}' for '{flag}': must be at most {}",
                    Human(d),
                    Human(MAX_DURATION)
                ));
            }
        }
        if self.max_clients == 0 || self.max_buffer == 0 {
            return Err("--max-clients and --max-buffer must be at least 1".into());
        }
        if !(1..=crate::cli::MAX_WORKERS).contains(&self.workers) {
            let max = crate::cli::MAX_WORKERS;
            return Err(format!("--workers must be from 1 to {max}"));
        }
        Ok(())
    }
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

/// `--socket-mode`: octal permission bits such as `0660` or `660` (at most `0777`).
pub fn parse_socket_mode(s: &str) -> Result<u32, String> {
    const EXPECTED: &str = "expected octal permissions such as 0660 (at most 0777)";
    let digits = s.trim();
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        return Err(EXPECTED.into());
    }
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => Err(EXPECTED.into()),
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
    fn check_bounds_hand_built_configs() {
        assert_eq!(Config::default().check(), Ok(()));
        let mut c = Config {
            idle_timeout: Some(Duration::from_secs(u64::MAX)),
            ..Config::default()
        };
        let e = c.check().unwrap_err();
        assert!(
            e.contains("'--idle-timeout'") && e.contains("at most 720h"),
            "{e}"
        );
        c.idle_timeout = Some(MAX_DURATION);
        assert_eq!(c.check(), Ok(()));
        c.delay = MAX_DURATION + Duration::from_nanos(1);
        assert!(c.check().unwrap_err().contains("'--delay'"));
        c.delay = Duration::ZERO;
        c.max_clients = 0;
        assert!(c.check().is_err());
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
    fn socket_modes() {
        assert_eq!(parse_socket_mode("0660"), Ok(0o660));
        assert_eq!(parse_socket_mode("600"), Ok(0o600));
        assert_eq!(parse_socket_mode("0777"), Ok(0o777));
        for bad in [
            "",
            "8",
            "0o660",
            "rw-rw----",
            "01777",
            "4755",
            "00660",
            "-660",
        ] {
            assert!(
                parse_socket_mode(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
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
