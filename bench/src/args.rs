//! Command line: the clap definition, the value parsers (durations, sizes, addresses) and the
//! run configuration they make.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Where the server under test listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `HOST:PORT`, resolved when the run starts (the first address is used).
    Tcp(String),
    /// `unix:/path`.
    Unix(PathBuf),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Tcp(a) => f.write_str(a),
            Target::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Load generator for echo servers: closed-loop requests over N connections (or N UDP sockets
/// with --udp), every echoed byte checked against what was sent.
///
/// Each connection sends a message of SIZE bytes (a deterministic per-connection byte pattern),
/// waits for all of it to come back, checks it, and sends the next; with --pipeline K it keeps
/// K messages outstanding. After --warmup, requests completed during --duration are counted and
/// their round-trip latency recorded.
///
/// With --udp, each of the N sockets sends one datagram of SIZE bytes, waits for the reply from
/// the server's address, checks it, and sends the next; a datagram with no reply within
/// --reply-timeout is counted as lost and the socket moves on.
///
/// With --churn, each of the N connections is a loop instead: connect, send one message of SIZE
/// bytes, read it all back (checked), close, and connect again. Requests/s is then connections/s,
/// and latency runs from the connect to the last echoed byte.
///
/// Exit status: 0 run completed without errors; 3 run completed but errors were seen (wrong
/// bytes, connections closed by the server, datagrams lost) or no request was answered at all;
/// 1 could not connect or failed at run time; 2 bad usage.
#[derive(Parser, Debug)]
#[command(name = "echo-mux-bench", version)]
pub struct Cli {
    /// Server address: HOST:PORT or unix:/path.
    #[arg(short = 'a', long, value_name = "ADDR", default_value = "127.0.0.1:50007", value_parser = parse_target)]
    pub addr: Target,

    /// Active connections (UDP sockets with --udp), each with --pipeline messages in flight.
    #[arg(short = 'c', long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub connections: u32,

    /// Message size: 64, 4KiB, 1MiB (K/KiB = 1024).
    #[arg(short = 's', long, value_name = "BYTES", default_value = "64", value_parser = parse_size)]
    pub size: usize,

    /// Measured time after the warmup: 10s, 500ms, 1.5s, 2m, or a bare number of seconds.
    #[arg(short = 'd', long, value_name = "DUR", default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Unmeasured time before the measurement [default: 1s, or 0 with --max-requests].
    #[arg(short = 'w', long, value_name = "DUR", value_parser = parse_duration)]
    pub warmup: Option<Duration>,

    /// Messages outstanding per connection.
    #[arg(short = 'p', long, value_name = "K", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub pipeline: u32,

    /// Extra idle connections, opened first and held open (and watched) for the whole run.
    #[arg(short = 'i', long, value_name = "M", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub idle: u32,

    /// Stop after N requests were sent and answered in the measured phase (--duration still
    /// caps the run). With no warmup this sends exactly N messages: handy for counting syscalls.
    #[arg(short = 'n', long, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_requests: Option<u64>,

    /// Give up on a connection attempt after this long.
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// Echo over UDP: N sockets, each with one datagram outstanding (ADDR must be HOST:PORT,
    /// SIZE at most 65507; --pipeline and --idle do not apply).
    #[arg(short = 'u', long)]
    pub udp: bool,

    /// With --udp: a datagram with no reply after this long is counted as lost.
    #[arg(long, value_name = "DUR", default_value = "200ms", value_parser = parse_duration)]
    pub reply_timeout: Duration,

    /// Connection churn: every connection is connect, one message echoed, close, over and over
    /// (--pipeline and --idle do not apply).
    #[arg(long)]
    pub churn: bool,

    /// The server's process id: report its CPU time (user + system, /proc/PID/stat) over the
    /// measured phase, per request (per connection with --churn).
    #[arg(long, value_name = "PID",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub server_pid: Option<u32>,

    /// Begin every TCP connection with a PROXY protocol header, v1 or v2, naming the
    /// connection's own address as the client (as a load balancer would: for an echo-mux
    /// started with --proxy-from).
    #[arg(long, value_name = "v1|v2", value_parser = parse_proxy)]
    pub proxy_header: Option<ProxyHeader>,

    /// Print the result as one JSON line on stdout instead of text.
    #[arg(long)]
    pub json: bool,

    /// No live progress line, even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
}

/// What to run (the validated command line).
pub struct Config {
    pub target: Target,
    pub connections: usize,
    pub size: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub pipeline: usize,
    pub idle: usize,
    pub max_requests: Option<u64>,
    pub connect_timeout: Duration,
    /// UDP instead of streams.
    pub udp: bool,
    /// UDP: how long a datagram may wait for its reply before it counts as lost.
    pub reply_timeout: Duration,
    /// Connection churn instead of long-lived connections.
    pub churn: bool,
    /// Whose CPU time to report per request.
    pub server_pid: Option<u32>,
    /// Draw the live progress line (stderr is a terminal and --no-progress was not given).
    pub progress: bool,
    /// Begin each TCP connection with this PROXY header.
    pub proxy_header: Option<ProxyHeader>,
}

/// `--proxy-header`: which PROXY protocol version to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyHeader {
    V1,
    V2,
}

fn parse_proxy(s: &str) -> Result<ProxyHeader, String> {
    match s {
        "v1" => Ok(ProxyHeader::V1),
        "v2" => Ok(ProxyHeader::V2),
        _ => Err("expected v1 or v2".into()),
    }
}

impl Cli {
    /// The run this command line asks for; `Err` is a usage error (options that do not go
    /// together).
    pub fn config(&self) -> Result<Config, String> {
        if self.udp {
            self.check_udp()?;
        }
        if self.churn {
            self.check_churn()?;
        }
        let default_warmup = if self.max_requests.is_some() {
            Duration::ZERO
        } else {
            Duration::from_secs(1)
        };
        Ok(Config {
            target: self.addr.clone(),
            connections: self.connections as usize,
            size: self.size,
            duration: self.duration,
            warmup: self.warmup.unwrap_or(default_warmup),
            pipeline: self.pipeline as usize,
            idle: self.idle as usize,
            max_requests: self.max_requests,
            connect_timeout: self.connect_timeout,
            udp: self.udp,
            reply_timeout: self.reply_timeout,
            churn: self.churn,
            server_pid: self.server_pid,
            progress: !self.no_progress && std::io::stderr().is_terminal(),
            proxy_header: self.proxy_header,
        })
    }

    fn check_churn(&self) -> Result<(), String> {
        if self.udp {
            return Err("'--churn' does not apply to '--udp' (there are no connections)".into());
        }
        if self.pipeline != 1 {
            return Err(
                "'--pipeline' does not apply to '--churn' (one message per connection)".into(),
            );
        }
        if self.idle != 0 {
            return Err("'--idle' does not apply to '--churn'".into());
        }
        Ok(())
    }

    fn check_udp(&self) -> Result<(), String> {
        if matches!(self.addr, Target::Unix(_)) {
            return Err("'--udp' needs '--addr HOST:PORT', not a unix socket".into());
        }
        if self.size > MAX_UDP_PAYLOAD {
            return Err(format!(
                "'--size {}' is too large for '--udp': a UDP datagram carries at most {MAX_UDP_PAYLOAD} bytes",
                self.size
            ));
        }
        if self.pipeline != 1 {
            return Err(
                "'--pipeline' does not apply to '--udp' (one datagram outstanding per socket)"
                    .into(),
            );
        }
        if self.idle != 0 {
            return Err("'--idle' does not apply to '--udp' (there are no connections)".into());
        }
        if self.proxy_header.is_some() {
            return Err(
                "'--proxy-header' does not apply to '--udp' (PROXY headers begin streams)".into(),
            );
        }
        if self.reply_timeout.is_zero() {
            return Err("'--reply-timeout' must be more than 0".into());
        }
        Ok(())
    }
}

/// The largest UDP payload over IPv4 (65,535 less the IP and UDP headers).
pub const MAX_UDP_PAYLOAD: usize = 65_507;

/// Parses `HOST:PORT`, `[V6]:PORT` or `unix:/path` (syntax only; names are resolved later).
pub fn parse_target(s: &str) -> Result<Target, String> {
    if let Some(path) = s.strip_prefix("unix:") {
        if path.is_empty() {
            return Err("expected unix:/path".into());
        }
        return Ok(Target::Unix(PathBuf::from(path)));
    }
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| "expected HOST:PORT or unix:/path".to_string())?;
    if host.is_empty() {
        return Err("expected HOST:PORT or unix:/path (host is empty)".into());
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(Target::Tcp(s.to_string())),
        _ => Err(format!("bad port '{port}': expected 1-65535")),
    }
}

/// A duration, in the daemon's own syntax (`250ms`, `5s`, `1.5`, `2m`): one parser for both.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    echo_mux::config::parse_duration(s)
}

/// A message size in the daemon's syntax (`64`, `4KiB`, `1MiB`), from 1 byte to 1 GiB.
pub fn parse_size(s: &str) -> Result<usize, String> {
    match echo_mux::config::parse_size(s)? {
        0 => Err("must be at least 1 byte".into()),
        n if n > 1 << 30 => Err("at most 1GiB".into()),
        n => Ok(n),
    }
}

/// Turns a clap error into the one line we print (`invalid value 'x' for '--size <BYTES>': ...`).
pub fn one_line(err: &clap::Error) -> String {
    let text = err.to_string();
    let first = text.lines().next().unwrap_or("bad usage").trim();
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("5y").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64"), Ok(64));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert!(parse_size("0").is_err());
        assert!(parse_size("-1").is_err());
    }

    #[test]
    fn targets() {
        assert_eq!(
            parse_target("127.0.0.1:80"),
            Ok(Target::Tcp("127.0.0.1:80".into()))
        );
        assert_eq!(parse_target("[::1]:80"), Ok(Target::Tcp("[::1]:80".into())));
        assert_eq!(
            parse_target("unix:/tmp/s"),
            Ok(Target::Unix("/tmp/s".into()))
        );
        assert!(parse_target("localhost").is_err());
        assert!(parse_target("h:0").is_err());
        assert!(parse_target("unix:").is_err());
    }

    fn config(args: &[&str]) -> Result<Config, String> {
        let argv = std::iter::once("echo-mux-bench").chain(args.iter().copied());
        Cli::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .config()
    }

    #[test]
    fn udp_options() {
        let c = config(&["--udp", "-c", "64", "-s", "65507"]).unwrap();
        assert!(c.udp);
        assert_eq!(c.reply_timeout, Duration::from_millis(200));
        assert_eq!(
            config(&["-u", "--reply-timeout", "1s"])
                .unwrap()
                .reply_timeout,
            Duration::from_secs(1)
        );
        for bad in [
            &["--udp", "-a", "unix:/tmp/x"][..],
            &["--udp", "-s", "65508"],
            &["--udp", "--pipeline", "2"],
            &["--udp", "--idle", "1"],
            &["--udp", "--reply-timeout", "0"],
        ] {
            assert!(config(bad).is_err(), "{bad:?} should be refused");
        }
        let c = config(&["--churn", "-c", "32", "--server-pid", "1"]).unwrap();
        assert!(c.churn);
        assert_eq!(c.server_pid, Some(1));
        for bad in [
            &["--churn", "--udp"][..],
            &["--churn", "--pipeline", "2"],
            &["--churn", "--idle", "1"],
            &["--server-pid", "0"],
        ] {
            assert!(config(bad).is_err(), "{bad:?} should be refused");
        }
        // Without --udp the UDP limits do not apply.
        assert!(config(&["-s", "1MiB", "--pipeline", "2"]).is_ok());
    }
}
