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
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "{a}"),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
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

/// The longest `--delay`, `--idle-timeout` and `--shutdown-timeout`: 30 days. Longer values
/// are almost certainly typos, and a bound keeps every `Instant + Duration` in the daemon far
/// from overflow (an `Instant` plus 10^19 s panics).
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

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
                    "invalid value '{}' for '{flag}': {}",
                    Human(d),
                    too_long()
                ));
            }
        }
        if self.max_clients == 0 || self.max_buffer == 0 {
            return Err("--max-clients and --max-buffer must be at least 1".into());
        }
        Ok(())
    }
}

fn too_long() -> String {
    format!("must be at most {}", Human(MAX_DURATION))
}

/// `250ms`, `5s`, `1.5s`, `2m`, `1h`, `100us`, or a bare number of seconds (`0`, `2.5`), up
/// to [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.starts_with('-') {
        return Err("must not be negative".into());
    }
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
    match Duration::try_from_secs_f64(value * scale) {
        Ok(d) if d <= MAX_DURATION => Ok(d),
        _ => Err(too_long()),
    }
}

/// A duration as a person writes it: `0s`, `250ms`, `1.5s`, `2m30s`, `720h`, `100us`.
/// (`{:?}` says `0ns` and `1.5s` but also `90s` and `2592000s`.)
pub struct Human(pub Duration);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        /// `value` with at most three decimals, trailing zeros dropped.
        fn decimal(f: &mut fmt::Formatter<'_>, value: f64, unit: &str) -> fmt::Result {
            let text = format!("{value:.3}");
            let text = text.trim_end_matches('0').trim_end_matches('.');
            write!(f, "{text}{unit}")
        }
        let d = self.0;
        let secs = d.as_secs();
        if d < Duration::from_micros(1) {
            write!(
                f,
                "{}{}",
                d.as_nanos(),
                if d.is_zero() { "s" } else { "ns" }
            )
        } else if d < Duration::from_millis(1) {
            decimal(f, d.as_nanos() as f64 / 1e3, "us")
        } else if d < Duration::from_secs(1) {
            decimal(f, d.as_nanos() as f64 / 1e6, "ms")
        } else if secs < 60 {
            decimal(f, d.as_secs_f64(), "s")
        } else {
            let (h, m) = (secs / 3600, secs / 60 % 60);
            let s = (secs % 60) as f64 + f64::from(d.subsec_nanos()) / 1e9;
            if h > 0 {
                write!(f, "{h}h")?;
            }
            if m > 0 {
                write!(f, "{m}m")?;
            }
            if s >= 0.0005 {
                decimal(f, s, "s")?;
            }
            Ok(())
        }
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

/// `HOST:PORT`, `[V6]:PORT`, `unix:/path`. Names are resolved now; the first address wins.
pub fn parse_listen(s: &str) -> Result<ListenAddr, String> {
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
    const EXPECTED: &str = "expected HOST:PORT, [IPv6]:PORT or unix:/path";
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
        assert_eq!(parse_duration("-1"), Err("must not be negative".into()));
        assert_eq!(parse_duration("720h"), Ok(MAX_DURATION));
        for long in [
            "721h",
            "2592001",
            "10000000000000000000",
            "1000000000000000000000",
        ] {
            assert_eq!(
                parse_duration(long),
                Err("must be at most 720h".into()),
                "{long}"
            );
        }
    }

    #[test]
    fn durations_read_like_their_input() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(7), "7ns"),
            (Duration::from_micros(100), "100us"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_micros(1500), "1.5ms"),
            (Duration::from_secs(5), "5s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(120), "2m"),
            (Duration::from_secs(150), "2m30s"),
            (Duration::from_millis(90_500), "1m30.5s"),
            (Duration::from_secs(3600 + 60), "1h1m"),
            (MAX_DURATION, "720h"),
        ];
        for (d, want) in cases {
            assert_eq!(Human(d).to_string(), want, "{d:?}");
        }
        for text in ["0s", "250ms", "1.5s", "5s", "2m", "100us"] {
            let d = parse_duration(text).unwrap();
            assert_eq!(Human(d).to_string(), text, "round trip");
        }
    }

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
    fn display_matches_what_the_user_wrote() {
        assert_eq!(parse_listen("[::1]:7").unwrap().to_string(), "[::1]:7");
        assert_eq!(parse_listen("unix:/a/b").unwrap().to_string(), "unix:/a/b");
    }
}
