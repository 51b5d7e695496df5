//! The daemon's configuration and the parsers for its values (sizes, addresses; durations
//! are in `duration.rs`). Parsers return a short reason; `cli.rs` makes it the usage error.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use crate::duration::{Human, MAX_DURATION};
use crate::error::Cut;
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
    /// Was `--listen` given (rather than the default)? Socket activation says it ignores
    /// only a `--listen` that was given.
    pub listen_given: bool,
    /// The readiness backend.
    pub backend: BackendKind,
    /// Raw or stamp.
    pub mode: Mode,
    /// How long every reply is held; zero for none.
    pub delay: Duration,
    /// Connections on all listeners together beyond which new ones are closed at once.
    pub max_clients: usize,
    /// Was `--max-clients` given (rather than the default)? Only a limit the user chose is
    /// worth a warning when `--backend select` cannot reach it.
    pub max_clients_given: bool,
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
    /// `--udp-loop-detect`: stop answering a UDP source that echoes our replies (SPEC §9).
    pub udp_loop_detect: bool,
    /// `--pid-file` (SPEC §12): where the (supervisor's) pid goes once listening.
    pub pid_file: Option<PathBuf>,
    /// `--log-format` (SPEC §12).
    pub log_format: crate::logging::Format,
    /// `--metrics`: where to serve /metrics and /status (SPEC §12); `None` = nowhere (unless
    /// socket activation hands in a socket named `metrics`).
    pub metrics: Option<ListenAddr>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec![ListenAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], 50007)))],
            listen_given: false,
            backend: BackendKind::Auto,
            mode: Mode::Raw,
            delay: Duration::ZERO,
            max_clients: 10_000,
            max_clients_given: false,
            max_buffer: 1 << 20,
            idle_timeout: None,
            shutdown_timeout: Duration::from_secs(5),
            access: crate::access::Policy::default(),
            keepalive: Some(Duration::from_secs(300)),
            log_connections: false,
            proxy_from: Vec::new(),
            socket_mode: None,
            workers: 1,
            udp_loop_detect: true,
            pid_file: None,
            log_format: crate::logging::Format::Text,
            metrics: None,
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
