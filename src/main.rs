//! `echo-mux`: parse the command line, run the daemon, map the outcome to an exit code.

use std::io::{self, Write};
use std::process::ExitCode;

use echo_mux::cli::{self, Command};
use echo_mux::error::{Error, Plain};
use echo_mux::logging;

fn main() -> ExitCode {
    // SPEC §13: asked by a running daemon whether this binary can take over from it.
    if let Some(asked) = std::env::var_os(echo_mux::reload::check::ENV) {
        let (line, code) = echo_mux::reload::check::answer(&asked, cli::parse(std::env::args_os()));
        let _ = writeln!(io::stdout(), "{line}");
        return ExitCode::from(code);
    }
    echo_mux::reload::remember_origin(std::env::args_os().collect());
    match cli::parse(std::env::args_os()) {
        Ok(Command::Print(text)) => print(&text),
        // SPEC §12: the counters of a running daemon; none answering is one line, exit 1.
        Ok(Command::Status { addr, json }) => match echo_mux::status::run(&addr, json) {
            Ok(text) => print(&text),
            Err(e) => fail(&e),
        },
        Ok(Command::Run(config, level)) => {
            logging::init(level, config.log_format);
            let outcome = echo_mux::run(*config);
            echo_mux::pidfile::remove();
            match outcome {
                Ok(()) => {
                    logging::finish();
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Err(e) => fail(&e),
    }
}

/// `--help`/`--version`. `print!` would panic on a write error: a reader that left early
/// (`echo-mux --help | head -1`) is its own choice, so that is a quiet exit 0; any other
/// error (a full disk) is one line and exit 1.
fn print(text: &str) -> ExitCode {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            logging::emit(&format!(
                "echo-mux: cannot write to stdout: {}\n",
                Plain(&e)
            ));
            logging::finish();
            ExitCode::FAILURE
        }
    }
}

/// The one error line, after whatever the log still holds (neither may block for long:
/// see `logging`).
fn fail(e: &Error) -> ExitCode {
    logging::fatal(&e.to_string());
    logging::finish();
    ExitCode::from(e.exit_code())
}
