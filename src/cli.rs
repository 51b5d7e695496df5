//! argv → [`Config`]. clap does the parsing and `--help`; every error is reduced to exactly
//! one line (`echo-mux: invalid value 'kqueue' for '--backend': expected ...`), exit 2.

use clap::builder::{PossibleValue, StringValueParser, TypedValueParser};
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{ArgAction, CommandFactory, FromArgMatches, Parser, ValueHint};
use log::LevelFilter;

use crate::config::{parse_duration, parse_size, parse_socket_mode, Config, MAX_WORKERS};
use crate::error::{Cut, Error};
use crate::event::reactor::BackendKind;
use crate::net::addr::{parse_listen, ListenAddr};
use crate::net::keepalive;
use crate::policy::access::{Cidr, MAX_SOURCES, MIN_SOURCES};
use crate::serve::echo::Mode;

/// What echo-mux is, in one line: `--help`'s first line and the man page's NAME. It is
/// Cargo.toml's `description` (also the package's short description), so the two cannot
/// differ; a test checks that the package's long description, the systemd units' first
/// comment and README.md say the same.
pub const DESCRIPTION: &str = env!("CARGO_PKG_DESCRIPTION");

/// The values of `--backend`, `--mode` and `--workers` that the shell completions offer.
pub const BACKENDS: Choices = Choices(&[
    ("epoll", "the kernel keeps the set; the default on Linux"),
    ("poll", "one pollfd array, scanned on every wait"),
    ("select", "fd_set pair; descriptors below 1024 only"),
    ("auto", "epoll on Linux, poll elsewhere"),
]);
/// See [`BACKENDS`].
pub const MODES: Choices = Choices(&[
    ("raw", "every byte echoed back unchanged"),
    ("stamp", "each line answered with a time stamp"),
]);
/// See [`BACKENDS`]: `--udp-loop-detect`.
pub const ON_OFF: Choices = Choices(&[
    ("on", "detect echo loops"),
    ("off", "answer every datagram"),
]);
/// See [`BACKENDS`].
pub const LOG_FORMATS: Choices = Choices(&[
    (
        "text",
        "[timestamp LEVEL] message; <N>message when stderr is the journal",
    ),
    (
        "json",
        "one JSON object per line: ts, level, msg and the line's fields",
    ),
]);
/// See [`BACKENDS`]; a number is accepted too, but there is no point offering one.
pub const WORKERS: Choices = Choices(&[("auto", "one worker per CPU this process may run on")]);

/// A value from a fixed set, for the completions: clap_complete offers these instead of file
/// names. Parsing stays with [`parse`] (any string passes here), so a bad value still gets
/// its one-line message (`expected epoll, poll, select or auto`).
#[derive(Clone, Copy, Debug)]
pub struct Choices(pub &'static [(&'static str, &'static str)]);

impl TypedValueParser for Choices {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<String, clap::Error> {
        StringValueParser::new().parse_ref(cmd, arg, value)
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        let values = self
            .0
            .iter()
            .map(|(v, help)| PossibleValue::new(*v).help(*help));
        Some(Box::new(values))
    }
}

/// What the command line asks for.
pub enum Command {
    /// Run the daemon.
    Run(Box<Config>, LevelFilter),
    /// Print this text on stdout and exit 0 (`--help`, `--version`).
    Print(String),
    /// `echo-mux status [ADDR] [--json]`: ask a running daemon (SPEC §12).
    Status {
        /// Its `--metrics` address.
        addr: ListenAddr,
        /// Print `/status` as it is.
        json: bool,
    },
}

/// Where `echo-mux status` looks without an address: the packaged units' metrics socket.
pub const DEFAULT_METRICS: &str = "127.0.0.1:50008";

/// `echo-mux status`: parsed on its own, before the daemon's options, rather than as a clap
/// subcommand: with one, clap_complete's fish script cannot complete `--backend <TAB>`
/// (its argparse check fails on the missing value), and the daemon's command line would
/// take a positional word it never needs.
#[derive(Parser, Debug)]
#[command(
    name = "echo-mux status",
    version,
    about = "Print the live counters of a running echo-mux (from its --metrics address): totals, then one row per worker"
)]
struct StatusArgs {
    /// The daemon's --metrics address: HOST:PORT or unix:/path [default: 127.0.0.1:50008, the packaged units']
    #[arg(value_name = "ADDR", value_hint = ValueHint::Other)]
    addr: Option<String>,
    /// Print the /status JSON object as the daemon sent it
    #[arg(long)]
    json: bool,
}

/// `echo-mux status [ADDR] [--json]` (argv without the program name and `status`).
fn parse_status(argv: Vec<std::ffi::OsString>) -> Result<Command, Error> {
    let argv = std::iter::once("echo-mux status".into()).chain(argv);
    let args = match StatusArgs::try_parse_from(argv) {
        Ok(args) => args,
        Err(e) => return clap_error(e),
    };
    let text = args.addr.as_deref().unwrap_or(DEFAULT_METRICS);
    let addr = parse_metrics(text)
        .map_err(|why| Error::Usage(format!("invalid value '{text}' for '[ADDR]': {why}")))?;
    Ok(Command::Status {
        addr,
        json: args.json,
    })
}

#[derive(Parser, Debug)]
#[command(
    name = "echo-mux",
    version,
    about = DESCRIPTION,
    after_help = "DUR: 250ms, 5s, 1.5s, 2m or a bare number of seconds.  BYTES: 4096, 64KiB, 1MiB, 1GiB.\n\
                  Signals: SIGTERM/SIGINT drain and exit 0, SIGUSR1 logs a stats line, SIGHUP reloads in place.\n\
                  echo-mux status [ADDR] [--json]: the live counters of a running echo-mux (see status --help).\n\
                  RUST_LOG overrides -v/-q."
)]
// The number-valued options take values that start with '-' (`--delay -1`), so that their
// error names the option and the expected value instead of "unknown option '-1'".
struct Args {
    /// Listen on HOST:PORT, [V6ADDR]:PORT, unix:/path or udp:HOST:PORT (repeatable) [default: 127.0.0.1:50007]
    #[arg(short, long, value_name = "ADDR", value_hint = ValueHint::Other)]
    listen: Vec<String>,
    /// Readiness backend: epoll, poll, select or auto
    #[arg(
        short,
        long,
        value_name = "NAME",
        default_value = "auto",
        value_parser = BACKENDS,
        hide_possible_values = true
    )]
    backend: String,
    /// raw: echo every byte unchanged; stamp: answer each line with "Echo=><line> at <ctime>"
    #[arg(
        long,
        value_name = "MODE",
        default_value = "raw",
        value_parser = MODES,
        hide_possible_values = true
    )]
    mode: String,
    /// Hold every reply for DUR after its data arrived
    #[arg(
        long,
        value_name = "DUR",
        default_value = "0",
        allow_hyphen_values = true,
        value_hint = ValueHint::Other
    )]
    delay: String,
    /// Connections beyond N open at once (per worker with --workers) are accepted and closed at once
    #[arg(
        long,
        value_name = "N",
        default_value = "10000",
        allow_hyphen_values = true,
        value_hint = ValueHint::Other
    )]
    max_clients: String,
    /// Cap on one connection's pending output; reading pauses at the cap
    #[arg(
        long,
        value_name = "BYTES",
        default_value = "1MiB",
        allow_hyphen_values = true,
        value_hint = ValueHint::Other
    )]
    max_buffer: String,
    /// Close a connection with no traffic either way for DUR; 0 = never
    #[arg(
        long,
        value_name = "DUR",
        default_value = "0",
        allow_hyphen_values = true,
        value_hint = ValueHint::Other
    )]
    idle_timeout: String,
    /// Longest graceful drain on SIGTERM/SIGINT; 0 = close everything at once
    #[arg(
        long,
        value_name = "DUR",
        default_value = "5s",
        allow_hyphen_values = true,
        value_hint = ValueHint::Other
    )]
    shutdown_timeout: String,
    /// Serve peers in CIDR (repeatable); the longest matching prefix decides, a tie denies;
    /// with any --allow, a peer that matches nothing is refused
    #[arg(long, value_name = "CIDR", allow_hyphen_values = true, value_hint = ValueHint::Other)]
    allow: Vec<String>,
    /// Refuse peers in CIDR (repeatable): connections closed at once, datagrams dropped
    #[arg(long, value_name = "CIDR", allow_hyphen_values = true, value_hint = ValueHint::Other)]
    deny: Vec<String>,
    /// TCP connections open at once from one source (IPv4 address or IPv6 /64); 0 = no limit
    #[arg(
        long,
        value_name = "N",
        default_value = "0",
        allow_hyphen_values = true,
        value_hint = ValueHint::Other
    )]
    max_per_source: String,
    /// New TCP connections and UDP datagrams per second from one source (burst N); 0 = no limit
    #[arg(
        long,
        value_name = "N",
        default_value = "0",
        allow_hyphen_values = true,
        value_hint = ValueHint::Other
    )]
    rate_per_source: String,
    /// Sources the per-source table has room for; when full, entries with no open connection
    /// are evicted, least recently seen first [default: max(65536, max-clients × workers)]
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    source_table: Option<String>,
    /// TCP keepalive: first probe after DUR of silence, then 3 probes 10 s apart; 0 = off
    #[arg(
        long,
        value_name = "DUR",
        default_value = "5m",
        allow_hyphen_values = true,
        value_hint = ValueHint::Other
    )]
    keepalive: String,
    /// One info line per closed connection: peer, duration, bytes in and out, reason
    #[arg(long)]
    log_connections: bool,
    /// TCP peers in CIDR (repeatable, e.g. a load balancer) must begin each connection with a
    /// PROXY protocol header (v1 or v2); the client it names is the source for everything
    #[arg(long, value_name = "CIDR", allow_hyphen_values = true, value_hint = ValueHint::Other)]
    proxy_from: Vec<String>,
    /// Octal permissions of unix socket files echo-mux creates, e.g. 0660 [default: umask]
    #[arg(long, value_name = "MODE", allow_hyphen_values = true, value_hint = ValueHint::Other)]
    socket_mode: Option<String>,
    /// Worker processes, each its own reactor, under a supervisor; auto = CPUs this process may run on
    #[arg(
        long,
        value_name = "N|auto",
        default_value = "1",
        allow_hyphen_values = true,
        value_parser = WORKERS,
        hide_possible_values = true
    )]
    workers: String,
    /// UDP: stop answering a source that keeps sending our replies back (an echo loop): on or off
    #[arg(
        long,
        value_name = "on|off",
        default_value = "on",
        value_parser = ON_OFF,
        hide_possible_values = true
    )]
    udp_loop_detect: String,
    /// Write the pid (the supervisor's with --workers) to PATH once listening; removed at exit
    #[arg(long, value_name = "PATH", value_hint = ValueHint::FilePath)]
    pid_file: Option<std::path::PathBuf>,
    /// Log line format: text, or json (one object per line: ts, level, msg, fields)
    #[arg(
        long,
        value_name = "FORMAT",
        default_value = "text",
        value_parser = LOG_FORMATS,
        hide_possible_values = true
    )]
    log_format: String,
    /// Serve /metrics (Prometheus text) and /status (JSON) over HTTP on HOST:PORT or unix:/path
    #[arg(long, value_name = "ADDR", value_hint = ValueHint::Other)]
    metrics: Option<String>,
    /// More logging (-v debug, -vv trace)
    #[arg(short, long, action = ArgAction::Count)]
    verbose: u8,
    /// Less logging (-q warn, -qq error)
    #[arg(short, long, action = ArgAction::Count, conflicts_with = "verbose")]
    quiet: u8,
}

/// The clap definition behind `--help`: the man page and the shell completions are generated
/// from it (`cargo xtask dist`), so they cannot drift from what the parser accepts.
pub fn command() -> clap::Command {
    Args::command().version(crate::version::version())
}

fn invalid(value: &str, flag: &str, why: impl std::fmt::Display) -> Error {
    Error::Usage(format!(
        "invalid value '{}' for '--{flag}': {why}",
        Cut(value)
    ))
}

/// Parse the command line (without the program name's special treatment: `argv[0]` first).
pub fn parse<I, T>(argv: I) -> Result<Command, Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let argv: Vec<std::ffi::OsString> = argv.into_iter().map(Into::into).collect();
    if argv.get(1).is_some_and(|a| a == "status") {
        return parse_status(argv[2..].to_vec());
    }
    // Matches first, then the struct: whether a value was typed or is the default
    // (`--max-clients`) is known only to the matches.
    let matches = match command().try_get_matches_from(argv) {
        Ok(matches) => matches,
        Err(e) => return clap_error(e),
    };
    let args = match Args::from_arg_matches(&matches) {
        Ok(args) => args,
        Err(e) => return clap_error(e),
    };
    let mut config = Config::default();
    if let Some(s) = &args.metrics {
        config.metrics = Some(parse_metrics(s).map_err(|why| invalid(s, "metrics", why))?);
    }
    if !args.listen.is_empty() {
        config.listen = Vec::with_capacity(args.listen.len());
        config.listen_given = true;
        for s in &args.listen {
            config
                .listen
                .push(parse_listen(s).map_err(|why| invalid(s, "listen", why))?);
        }
    }
    config.backend = args.backend.parse().map_err(|()| {
        invalid(
            &args.backend,
            "backend",
            "expected epoll, poll, select or auto",
        )
    })?;
    if config.backend == BackendKind::Epoll && !cfg!(target_os = "linux") {
        return Err(invalid(
            &args.backend,
            "backend",
            "epoll is only available on Linux",
        ));
    }
    config.mode = match args.mode.as_str() {
        "raw" => Mode::Raw,
        "stamp" => Mode::Stamp,
        other => return Err(invalid(other, "mode", "expected raw or stamp")),
    };
    config.delay = parse_duration(&args.delay).map_err(|why| invalid(&args.delay, "delay", why))?;
    config.max_clients = match args.max_clients.trim().parse::<usize>() {
        Ok(n) if n >= 1 => n,
        _ => {
            return Err(invalid(
                &args.max_clients,
                "max-clients",
                "expected a whole number of at least 1",
            ))
        }
    };
    config.max_clients_given =
        matches.value_source("max_clients") == Some(ValueSource::CommandLine);
    config.max_buffer = match parse_size(&args.max_buffer) {
        Ok(n) if n >= 1 => n,
        Ok(_) => {
            return Err(invalid(
                &args.max_buffer,
                "max-buffer",
                "must be at least 1",
            ))
        }
        Err(why) => return Err(invalid(&args.max_buffer, "max-buffer", why)),
    };
    let idle = parse_duration(&args.idle_timeout)
        .map_err(|why| invalid(&args.idle_timeout, "idle-timeout", why))?;
    config.idle_timeout = (!idle.is_zero()).then_some(idle);
    config.shutdown_timeout = parse_duration(&args.shutdown_timeout)
        .map_err(|why| invalid(&args.shutdown_timeout, "shutdown-timeout", why))?;
    access_options(&args, &mut config)?;
    config.workers = parse_workers(&args.workers)?;
    config.udp_loop_detect = match args.udp_loop_detect.as_str() {
        "on" => true,
        "off" => false,
        other => return Err(invalid(other, "udp-loop-detect", "expected on or off")),
    };
    config.access.source_table = source_table(&args, &config)?;
    config.log_format = match args.log_format.as_str() {
        "text" => crate::logging::Format::Text,
        "json" => crate::logging::Format::Json,
        other => return Err(invalid(other, "log-format", "expected text or json")),
    };
    config.pid_file = args.pid_file.clone();

    config.check().map_err(Error::Usage)?;

    let level = match (args.verbose, args.quiet) {
        (0, 0) => LevelFilter::Info,
        (1, _) => LevelFilter::Debug,
        (v, _) if v >= 2 => LevelFilter::Trace,
        (_, 1) => LevelFilter::Warn,
        _ => LevelFilter::Error,
    };
    Ok(Command::Run(Box::new(config), level))
}

/// `--metrics ADDR` (and `status [ADDR]`): a stream address, TCP or unix.
fn parse_metrics(s: &str) -> Result<ListenAddr, String> {
    match parse_listen(s) {
        Ok(ListenAddr::Udp(_)) => {
            Err("expected HOST:PORT or unix:/path (HTTP needs a stream)".into())
        }
        Ok(addr) => Ok(addr),
        Err(why) if why.starts_with("expected") => Err("expected HOST:PORT or unix:/path".into()),
        Err(why) => Err(why),
    }
}

/// SPEC §10's options (and `--socket-mode`, §1).
fn access_options(args: &Args, config: &mut Config) -> Result<(), Error> {
    let cidrs = |values: &[String], flag| {
        values
            .iter()
            .map(|s| Cidr::parse(s).map_err(|why| invalid(s, flag, why)))
            .collect::<Result<Vec<_>, _>>()
    };
    config.access.allow = cidrs(&args.allow, "allow")?;
    config.access.deny = cidrs(&args.deny, "deny")?;
    config.proxy_from = cidrs(&args.proxy_from, "proxy-from")?;
    let count = |s: &String, flag| {
        s.trim()
            .parse::<u32>()
            .map_err(|_| invalid(s, flag, "expected a whole number (0 = no limit)"))
    };
    config.access.limits.max_per_source = count(&args.max_per_source, "max-per-source")?;
    config.access.limits.rate_per_source = count(&args.rate_per_source, "rate-per-source")?;
    let keepalive = parse_duration(&args.keepalive)
        .map_err(|why| invalid(&args.keepalive, "keepalive", why))?;
    if keepalive.as_secs() > keepalive::MAX_IDLE_SECS {
        let why = format!("at most {}s (the kernel's limit)", keepalive::MAX_IDLE_SECS);
        return Err(invalid(&args.keepalive, "keepalive", why));
    }
    config.keepalive = (!keepalive.is_zero()).then_some(keepalive);
    config.log_connections = args.log_connections;
    if let Some(mode) = &args.socket_mode {
        let parsed = parse_socket_mode(mode).map_err(|why| invalid(mode, "socket-mode", why))?;
        config.socket_mode = Some(parsed);
    }
    Ok(())
}

/// `--source-table N`: 1..=[`MAX_SOURCES`]; by default room for every connection the daemon
/// may hold (SPEC §10), and at least [`MIN_SOURCES`].
fn source_table(args: &Args, config: &Config) -> Result<usize, Error> {
    let Some(s) = &args.source_table else {
        let held = config.max_clients.saturating_mul(config.workers);
        return Ok(held.clamp(MIN_SOURCES, MAX_SOURCES));
    };
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_SOURCES).contains(&n) => Ok(n),
        _ => Err(invalid(
            s,
            "source-table",
            format!("expected a whole number from 1 to {MAX_SOURCES}"),
        )),
    }
}

/// `--workers N|auto`: 1..=[`MAX_WORKERS`], or the CPUs this process may run on.
fn parse_workers(s: &str) -> Result<usize, Error> {
    if s.trim() == "auto" {
        return Ok(crate::sys::available_cpus().min(MAX_WORKERS));
    }
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_WORKERS).contains(&n) => Ok(n),
        _ => Err(invalid(
            s,
            "workers",
            format_args!("expected a whole number from 1 to {MAX_WORKERS}, or auto"),
        )),
    }
}

/// `--verbose` from clap's `--verbose...` or `--listen <ADDR>`.
fn flag(arg: &str) -> &str {
    let name = arg.split_whitespace().next().unwrap_or(arg);
    name.trim_end_matches("...")
}

/// Names other daemons use for an option echo-mux calls something else.
const SYNONYMS: &[(&str, &str)] = &[
    ("--port", "--listen"),
    ("--bind", "--listen"),
    ("--address", "--listen"),
    ("--addr", "--listen"),
    ("--host", "--listen"),
    ("--threads", "--workers"),
    ("--processes", "--workers"),
    ("--max-connections", "--max-clients"),
    ("--maxconn", "--max-clients"),
    ("--timeout", "--idle-timeout"),
    ("--pidfile", "--pid-file"),
];

/// The option an unknown `arg` most likely meant: a known synonym, or the long option within
/// a small edit distance (a typo such as `--listne`), if exactly one is nearest.
fn nearest_option(arg: &str) -> Option<String> {
    let name = arg.split('=').next().unwrap_or(arg);
    let longs: Vec<String> = command()
        .get_arguments()
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .chain(["--help".to_string(), "--version".to_string()])
        .collect();
    if let Some((_, to)) = SYNONYMS.iter().find(|(from, _)| *from == name) {
        if longs.iter().any(|l| l == to) {
            return Some(to.to_string());
        }
    }
    if !name.starts_with("--") {
        return None;
    }
    let limit = (name.len() / 4).clamp(1, 3);
    let mut best: Vec<(usize, &String)> = longs
        .iter()
        .map(|l| (edit_distance(name, l), l))
        .filter(|(d, _)| *d <= limit)
        .collect();
    best.sort();
    match best.as_slice() {
        [(d, l), rest @ ..] if rest.first().is_none_or(|(d2, _)| d2 > d) => Some(l.to_string()),
        _ => None,
    }
}

/// Levenshtein distance between two short ASCII-ish strings (one row of the table).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// Reduce clap's multi-line report to one line, or pass `--help`/`--version` through.
fn clap_error(e: clap::Error) -> Result<Command, Error> {
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => Ok(Command::Print(e.to_string())),
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => Ok(Command::Print(e.to_string())),
        kind => {
            let ctx = |k| match e.get(k) {
                Some(ContextValue::String(s)) => Some(s.clone()),
                Some(ContextValue::Strings(v)) => v.first().cloned(),
                _ => None,
            };
            let arg = ctx(ContextKind::InvalidArg);
            let msg = match (kind, arg) {
                (ErrorKind::UnknownArgument, Some(a)) => match nearest_option(&a) {
                    Some(near) => format!("unknown option '{}' (did you mean '{near}'?)", Cut(&a)),
                    None => format!("unknown option '{}' (see --help)", Cut(&a)),
                },
                (ErrorKind::InvalidValue, Some(a)) => {
                    format!("missing value for '{}' (see --help)", flag(&a))
                }
                (ErrorKind::ArgumentConflict, Some(a)) => {
                    let b = ctx(ContextKind::PriorArg).unwrap_or_default();
                    format!("{} and {} cannot be used together", flag(&a), flag(&b))
                }
                _ => {
                    // Fall back to clap's own first line, without its "error: " prefix.
                    // A line that quotes a value is cut like any quoted value (SPEC §2).
                    let text = e.render().to_string();
                    let line = text.lines().next().unwrap_or("bad usage");
                    let line = line.trim_start_matches("error: ");
                    match line.char_indices().nth(3 * crate::error::QUOTE_MAX) {
                        Some((at, _)) => format!("{}…", &line[..at]),
                        None => line.to_string(),
                    }
                }
            };
            Err(Error::Usage(msg))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(args: &[&str]) -> String {
        let argv = std::iter::once("echo-mux").chain(args.iter().copied());
        match parse(argv) {
            Err(Error::Usage(msg)) => msg,
            Err(other) => panic!("{args:?}: not a usage error: {other}"),
            Ok(_) => panic!("{args:?}: accepted"),
        }
    }

    fn config(args: &[&str]) -> Config {
        match parse(std::iter::once("echo-mux").chain(args.iter().copied())) {
            Ok(Command::Run(c, _)) => *c,
            Ok(Command::Print(_)) => panic!("{args:?}: printed"),
            Ok(Command::Status { .. }) => panic!("{args:?}: status"),
            Err(e) => panic!("{args:?}: {e}"),
        }
    }

    #[test]
    fn metrics_and_status_addresses() {
        let c = config(&["--metrics", "127.0.0.1:0"]);
        assert_eq!(c.metrics, Some(ListenAddr::Tcp(([127, 0, 0, 1], 0).into())));
        assert_eq!(config(&[]).metrics, None);
        let msg = usage(&["--metrics", "udp:127.0.0.1:9"]);
        assert!(msg.contains("'udp:127.0.0.1:9' for '--metrics'"), "{msg}");
        let status = |args: &[&str]| match parse(args.iter().copied()) {
            Ok(Command::Status { addr, json }) => (addr.to_string(), json),
            _ => panic!("{args:?}: not status"),
        };
        assert_eq!(
            status(&["echo-mux", "status"]),
            (DEFAULT_METRICS.to_string(), false)
        );
        assert_eq!(
            status(&["echo-mux", "status", "unix:/run/m.sock", "--json"]),
            ("unix:/run/m.sock".to_string(), true)
        );
    }

    #[test]
    fn usage_errors_are_one_line_and_name_the_value() {
        assert_eq!(
            usage(&["--backend", "kqueue"]),
            "invalid value 'kqueue' for '--backend': expected epoll, poll, select or auto"
        );
        assert!(
            usage(&["--listen", "garbage"]).starts_with("invalid value 'garbage' for '--listen'")
        );
        assert!(usage(&["--delay", "x"]).starts_with("invalid value 'x' for '--delay'"));
        assert!(usage(&["--max-buffer", "0"]).contains("at least 1"));
        assert!(usage(&["--max-clients", "0"]).contains("at least 1"));
        for bad in ["0", "-1", "two", "1.5", "", "1025"] {
            let msg = usage(&["--workers", bad]);
            assert_eq!(
                msg,
                format!("invalid value '{bad}' for '--workers': expected a whole number from 1 to 1024, or auto")
            );
        }
        assert_eq!(
            usage(&["--frobnicate"]),
            "unknown option '--frobnicate' (see --help)"
        );
        assert_eq!(
            usage(&["--port", "7"]),
            "unknown option '--port' (did you mean '--listen'?)"
        );
        assert_eq!(
            usage(&["--listne", "x"]),
            "unknown option '--listne' (did you mean '--listen'?)"
        );
        assert_eq!(
            usage(&["--max-client=3"]),
            "unknown option '--max-client' (did you mean '--max-clients'?)"
        );
        assert!(usage(&["--delay"]).contains("--delay"));
        for args in [
            &["--frobnicate"][..],
            &["--delay"],
            &["-v", "-q"],
            &["extra"],
        ] {
            assert!(!usage(args).contains('\n'), "{args:?}");
        }
    }

    #[test]
    fn values_reach_the_config() {
        let c = config(&[
            "-l",
            "127.0.0.1:0",
            "-l",
            "unix:/tmp/e.sock",
            "-b",
            "poll",
            "--mode",
            "stamp",
            "--delay",
            "1.5s",
            "--max-clients",
            "7",
            "--max-buffer",
            "64KiB",
            "--idle-timeout",
            "2m",
            "--shutdown-timeout",
            "0",
        ]);
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.backend, BackendKind::Poll);
        assert_eq!(c.mode, Mode::Stamp);
        assert_eq!(c.delay, std::time::Duration::from_millis(1500));
        assert_eq!((c.max_clients, c.max_buffer), (7, 64 << 10));
        assert_eq!(c.idle_timeout, Some(std::time::Duration::from_secs(120)));
        assert!(c.shutdown_timeout.is_zero());
        assert_eq!(config(&["--idle-timeout", "0"]).idle_timeout, None);
        assert!(c.max_clients_given && c.listen_given);
        let d = config(&[]);
        assert!(!d.max_clients_given && !d.listen_given);
        assert!(config(&["--max-clients", "10000"]).max_clients_given);
        assert_eq!(config(&[]).workers, 1);
        assert_eq!(config(&["--workers", "3"]).workers, 3);
        assert!(config(&[]).udp_loop_detect);
        assert!(!config(&["--udp-loop-detect", "off"]).udp_loop_detect);
        assert!(config(&["--udp-loop-detect", "on"]).udp_loop_detect);
        assert_eq!(
            usage(&["--udp-loop-detect", "yes"]),
            "invalid value 'yes' for '--udp-loop-detect': expected on or off"
        );
        let auto = config(&["--workers", "auto"]).workers;
        assert!((1..=MAX_WORKERS).contains(&auto), "{auto}");
    }

    #[test]
    fn access_options() {
        let c = config(&[
            "--allow",
            "10.0.0.0/8",
            "--allow",
            "[2001:db8::]/32",
            "--deny",
            "10.1.0.0/16",
            "--max-per-source",
            "3",
            "--rate-per-source",
            "20",
            "--keepalive",
            "90s",
            "--log-connections",
            "--socket-mode",
            "0660",
        ]);
        assert_eq!(c.access.allow.len(), 2);
        assert_eq!(c.access.deny[0].to_string(), "10.1.0.0/16");
        assert_eq!(c.access.limits.max_per_source, 3);
        assert_eq!(c.access.limits.rate_per_source, 20);
        assert_eq!(c.keepalive, Some(std::time::Duration::from_secs(90)));
        assert!(c.log_connections);
        assert_eq!(c.socket_mode, Some(0o660));
        assert!(c.proxy_from.is_empty());
        let p = config(&["--proxy-from", "10.0.0.0/8", "--proxy-from", "::1"]);
        assert_eq!(p.proxy_from.len(), 2);
        assert_eq!(p.proxy_from[1].to_string(), "::1/128");
        let d = config(&[]);
        assert!(!d.access.is_active() && !d.log_connections && d.socket_mode.is_none());
        assert_eq!(d.keepalive, Some(std::time::Duration::from_secs(300)));
        assert_eq!(config(&["--keepalive", "0"]).keepalive, None);
    }

    #[test]
    fn source_table_defaults_to_every_connection_the_daemon_may_hold() {
        assert_eq!(config(&[]).access.source_table, 65_536);
        let big = config(&["--max-clients", "50000", "--workers", "4"]);
        assert_eq!(big.access.source_table, 200_000);
        assert_eq!(config(&["--source-table", "16"]).access.source_table, 16);
        for bad in ["0", "-1", "x", "16777217", ""] {
            let msg = usage(&["--source-table", bad]);
            assert!(
                msg.starts_with(&format!("invalid value '{bad}' for '--source-table'")),
                "{msg}"
            );
        }
    }

    #[test]
    fn access_usage_errors() {
        assert_eq!(
            usage(&["--allow", "10.0.0.0/33"]),
            "invalid value '10.0.0.0/33' for '--allow': a prefix length of /33 is longer than 32 bits"
        );
        assert!(
            usage(&["--deny", "nope"]).starts_with("invalid value 'nope' for '--deny': expected")
        );
        assert!(usage(&["--deny", "10.1.2.3/8"]).contains("did you mean 10.0.0.0/8?"));
        assert!(usage(&["--max-per-source", "-1"]).contains("'--max-per-source'"));
        assert!(usage(&["--rate-per-source", "x"]).contains("'--rate-per-source'"));
        assert_eq!(
            usage(&["--proxy-from", "10.0.0.0/33"]),
            "invalid value '10.0.0.0/33' for '--proxy-from': a prefix length of /33 is longer than 32 bits"
        );
        assert!(usage(&["--keepalive", "10h"]).contains("at most 32767s"));
        assert!(usage(&["--socket-mode", "0980"])
            .starts_with("invalid value '0980' for '--socket-mode'"));
        assert!(usage(&["--socket-mode", "1777"]).contains("--socket-mode"));
    }

    /// SPEC §2: a quoted value is cut at about 100 characters, whatever its size (one over
    /// 64 KiB used to print nothing at all), and the message stays one line.
    #[test]
    fn long_values_are_cut() {
        let huge = "9".repeat(70_000);
        let with_newline = format!("{}\nsecond", "x".repeat(10));
        for flag in [
            "--listen",
            "--backend",
            "--delay",
            "--max-clients",
            "--allow",
            "--deny",
            "--socket-mode",
            "--workers",
            "--keepalive",
        ] {
            for value in [huge.as_str(), with_newline.as_str()] {
                let msg = usage(&[flag, value]);
                assert!(msg.chars().count() < 400, "{flag}: {} chars", msg.len());
                assert!(!msg.contains('\n'), "{flag}: {msg}");
                assert!(msg.contains(flag), "{flag}: {msg}");
            }
            assert!(usage(&[flag, &huge]).contains("99999…'"), "{flag}");
        }
        for args in [
            vec![format!("--{huge}")],
            vec![huge.clone()],
            vec!["--listen".into(), format!("127.0.0.1:{huge}")],
            vec!["--listen".into(), format!("{huge}.example:7")],
        ] {
            let msg = usage(&args.iter().map(String::as_str).collect::<Vec<_>>());
            assert!(
                msg.chars().count() < 400,
                "{} chars: {}",
                msg.len(),
                &msg[..200]
            );
        }
    }

    #[test]
    fn help_and_version_are_printed() {
        for flag in ["--help", "-h", "--version", "-V"] {
            assert!(
                matches!(parse(["echo-mux", flag]), Ok(Command::Print(_))),
                "{flag}"
            );
        }
    }
}
