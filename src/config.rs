//! The daemon's configuration and the parsers for its values (sizes, addresses; durations
//! are in `duration.rs`). Parsers return a short reason; `cli.rs` makes it the usage error.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::duration::{Human, MAX_DURATION};
use crate::event::reactor::BackendKind;
use crate::net::addr::ListenAddr;
use crate::net::listen::group::Wanted;
use crate::serve::echo::Mode;

pub use crate::duration::parse_duration;

/// More worker processes than this is a typo, not a plan (and a fork bomb).
pub const MAX_WORKERS: usize = 1024;

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
    pub access: crate::policy::access::Policy,
    /// TCP keepalive's first probe after this much silence; `None` = off.
    pub keepalive: Option<Duration>,
    /// One info line per closed connection.
    pub log_connections: bool,
    /// `--proxy-from`: TCP peers that must begin with a PROXY header (SPEC §14).
    pub proxy_from: Vec<crate::policy::access::Cidr>,
    /// Permissions of unix socket files we create; `None` leaves them to the umask.
    pub socket_mode: Option<u32>,
    /// Worker processes (SPEC §8); 1 = no supervisor, `auto` already resolved.
    pub workers: usize,
    /// `--udp-loop-detect`: stop answering a UDP source that echoes our replies (SPEC §9).
    pub udp_loop_detect: bool,
    /// `--pid-file` (SPEC §12): where the (supervisor's) pid goes once listening.
    pub pid_file: Option<PathBuf>,
    /// `--user`/`--group` (SPEC §13): who to become once every listener is bound; `None`
    /// = stay as started.
    pub privileges: Option<crate::privilege::Target>,
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
            access: crate::policy::access::Policy::default(),
            keepalive: Some(Duration::from_secs(300)),
            log_connections: false,
            proxy_from: Vec::new(),
            socket_mode: None,
            workers: 1,
            udp_loop_detect: true,
            pid_file: None,
            privileges: None,
            log_format: crate::logging::Format::Text,
            metrics: None,
        }
    }
}

impl Config {
    /// The listening part, for either process shape.
    pub fn wanted(&self) -> Wanted<'_> {
        Wanted {
            listen: &self.listen,
            given: self.listen_given,
            socket_mode: self.socket_mode,
        }
    }

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
        if !(1..=MAX_WORKERS).contains(&self.workers) {
            let max = MAX_WORKERS;
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
}
