//! `echo-mux`: parse the command line, run the daemon, map the outcome to an exit code.

use std::process::ExitCode;

use echo_mux::cli::{self, Command};

fn main() -> ExitCode {
    match cli::parse(std::env::args_os()) {
        Ok(Command::Print(text)) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Ok(Command::Run(config, level)) => {
            echo_mux::init_logging(level);
            match echo_mux::run(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
        Err(e) => fail(&e),
    }
}

fn fail(e: &echo_mux::error::Error) -> ExitCode {
    eprintln!("echo-mux: {e}");
    ExitCode::from(e.exit_code())
}
