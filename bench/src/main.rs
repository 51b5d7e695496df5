//! echo-mux-bench: a one-thread load generator for echo servers (TCP, unix sockets or UDP).
//!
//! Keeps N connections busy with closed-loop requests of S bytes (K in flight on each), or N UDP
//! sockets with one datagram outstanding each, checks every echoed byte, and reports
//! requests/s, MB/s and latency percentiles; or (`--churn`) N connections that each connect,
//! echo one message and close, over and over, reporting connections/s. See `--help`.

mod args;
mod churn;
mod driver;
mod pattern;
mod report;
mod sock;
mod tcp;
mod udp;

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;

fn main() -> ExitCode {
    let cli = match args::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            // --help and --version go to stdout, exit 0.
            print!("{e}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("echo-mux-bench: {}", args::one_line(&e));
            return ExitCode::from(2);
        }
    };
    let cfg = match cli.config() {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("echo-mux-bench: {e}");
            return ExitCode::from(2);
        }
    };
    raise_nofile_limit(cfg.connections + cfg.idle);

    let result = if cfg.udp {
        udp::run(&cfg)
    } else if cfg.churn {
        churn::run(&cfg)
    } else {
        tcp::run(&cfg)
    };
    match result {
        Ok(outcome) => {
            if cli.json {
                println!("{}", report::json(&cfg, &outcome));
            } else {
                print!("{}", report::text(&cfg, &outcome));
            }
            if outcome.errors() > 0 || outcome.requests == 0 {
                ExitCode::from(3)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("echo-mux-bench: {e}");
            ExitCode::from(1)
        }
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; warns if even that is too low for `need`
/// sockets (the connects will then fail with a clear error).
fn raise_nofile_limit(need: usize) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft < hard {
        if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            eprintln!("echo-mux-bench: warning: cannot raise the open-file limit to {hard}: {e}");
            return;
        }
    }
    let headroom = 16;
    if (need as u64).saturating_add(headroom) > hard {
        eprintln!(
            "echo-mux-bench: warning: {need} connections need more descriptors than the limit of {hard} (ulimit -n)"
        );
    }
}
