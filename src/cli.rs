//! argv → [`Config`]. clap does the parsing and `--help`; every error is reduced to exactly
//! one line (`echo-mux: invalid value 'kqueue' for '--backend': expected ...`), exit 2.

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{ArgAction, Parser};
use log::LevelFilter;

use crate::config::{parse_duration, parse_listen, parse_size, Config, Mode};
use crate::error::Error;
use crate::reactor::BackendKind;

/// What the command line asks for.
pub enum Command {
    /// Run the daemon.
    Run(Config, LevelFilter),
    /// Print this text on stdout and exit 0 (`--help`, `--version`).
    Print(String),
}

#[derive(Parser, Debug)]
#[command(
    name = "echo-mux",
    version,
    about = "A one-thread TCP and unix-socket echo daemon (epoll, poll or select)",
    after_help = "DUR: 250ms, 5s, 1.5s, 2m or a bare number of seconds.  BYTES: 4096, 64KiB, 1MiB, 1GiB.\n\
                  Signals: SIGTERM/SIGINT drain and exit 0, SIGUSR1 logs a stats line, SIGHUP is ignored.\n\
                  RUST_LOG overrides -v/-q."
)]
struct Args {
    /// Listen on HOST:PORT, [V6ADDR]:PORT, unix:/path or udp:HOST:PORT (repeatable) [default: 127.0.0.1:50007]
    #[arg(short, long, value_name = "ADDR")]
    listen: Vec<String>,
    /// Readiness backend: epoll, poll, select or auto
    #[arg(short, long, value_name = "NAME", default_value = "auto")]
    backend: String,
    /// raw: echo every byte unchanged; stamp: answer each line with "Echo=><line> at <ctime>"
    #[arg(long, value_name = "MODE", default_value = "raw")]
    mode: String,
    /// Hold every reply for DUR after its data arrived
    #[arg(long, value_name = "DUR", default_value = "0")]
    delay: String,
    /// Connections beyond N (all listeners together) are accepted and closed at once
    #[arg(long, value_name = "N", default_value = "10000")]
    max_clients: String,
    /// Cap on one connection's pending output; reading pauses at the cap
    #[arg(long, value_name = "BYTES", default_value = "1MiB")]
    max_buffer: String,
    /// Close a connection with no traffic either way for DUR; 0 = never
    #[arg(long, value_name = "DUR", default_value = "0")]
    idle_timeout: String,
    /// Longest graceful drain on SIGTERM/SIGINT; 0 = close everything at once
    #[arg(long, value_name = "DUR", default_value = "5s")]
    shutdown_timeout: String,
    /// More logging (-v debug, -vv trace)
    #[arg(short, long, action = ArgAction::Count)]
    verbose: u8,
    /// Less logging (-q warn, -qq error)
    #[arg(short, long, action = ArgAction::Count, conflicts_with = "verbose")]
    quiet: u8,
}

fn invalid(value: &str, flag: &str, why: impl std::fmt::Display) -> Error {
    Error::Usage(format!("invalid value '{value}' for '--{flag}': {why}"))
}

/// Parse the command line (without the program name's special treatment: `argv[0]` first).
pub fn parse<I, T>(argv: I) -> Result<Command, Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args = match Args::try_parse_from(argv) {
        Ok(args) => args,
        Err(e) => return clap_error(e),
    };
    let mut config = Config::default();
    if !args.listen.is_empty() {
        config.listen = Vec::with_capacity(args.listen.len());
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

    let level = match (args.verbose, args.quiet) {
        (0, 0) => LevelFilter::Info,
        (1, _) => LevelFilter::Debug,
        (v, _) if v >= 2 => LevelFilter::Trace,
        (_, 1) => LevelFilter::Warn,
        _ => LevelFilter::Error,
    };
    Ok(Command::Run(config, level))
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
                (ErrorKind::UnknownArgument, Some(a)) => {
                    format!("unknown option '{a}' (see --help)")
                }
                (ErrorKind::InvalidValue, Some(a)) => {
                    let flag = a.split_whitespace().next().unwrap_or(&a).to_string();
                    format!("missing value for '{flag}' (see --help)")
                }
                (ErrorKind::ArgumentConflict, Some(a)) => {
                    format!(
                        "'{a}' cannot be used together with '{}'",
                        ctx(ContextKind::PriorArg).unwrap_or_default()
                    )
                }
                _ => {
                    // Fall back to clap's own first line, without its "error: " prefix.
                    let text = e.render().to_string();
                    let line = text.lines().next().unwrap_or("bad usage");
                    line.trim_start_matches("error: ").to_string()
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
            Ok(Command::Run(c, _)) => c,
            Ok(Command::Print(_)) => panic!("{args:?}: printed"),
            Err(e) => panic!("{args:?}: {e}"),
        }
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
        assert_eq!(
            usage(&["--frobnicate"]),
            "unknown option '--frobnicate' (see --help)"
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
