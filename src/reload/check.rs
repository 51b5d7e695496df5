//! The check before a reload (SPEC §13: "like `nginx -t`"): the old image runs the binary at
//! its path as a child, with the same arguments and `ECHO_MUX_RELOAD_CHECK=<state format
//! version>` in its environment. The child parses and checks the command line (and what it
//! names), says whether it reads that state version, prints one line and exits 0 (yes) or
//! non-zero (no: the line is the reason). It binds nothing and opens no listener.
//!
//! The old image runs the check without waiting for it: the child's output comes back
//! through a non-blocking pipe registered with the loop's backend, and its end is the
//! pipe's end of file followed by its exit status ([`Check::finished`]).

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

use super::{state, Origin};
use crate::cli::Command;
use crate::error::{Error, Plain};

/// The environment variable that puts the binary in check mode; its value is the state
/// format version the old image would write.
pub const ENV: &str = "ECHO_MUX_RELOAD_CHECK";

/// How long the check may take before the reload is refused.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes of the child's output kept (its last line is the answer).
const OUTPUT_LIMIT: usize = 4096;

/// The check child's side: the answer line and the exit code for `asked` (the value of
/// [`ENV`]) and the command line as parsed.
pub fn answer(asked: &OsStr, parsed: Result<Command, Error>) -> (String, u8) {
    let version = asked.to_str().and_then(|v| v.trim().parse::<u32>().ok());
    let Some(version) = version else {
        return (
            format!(
                "{ENV}={} is not a state format version",
                asked.to_string_lossy()
            ),
            1,
        );
    };
    if !state::reads(version) {
        return (
            format!(
                "echo-mux {} reads state format versions {} to {}, not {version}",
                crate::version::version(),
                state::OLDEST,
                state::VERSION
            ),
            1,
        );
    }
    let config = match parsed {
        Ok(Command::Run(config, _)) => config,
        Ok(_) => return ("the command line does not run the daemon".to_string(), 1),
        Err(e) => return (e.to_string(), e.exit_code()),
    };
    if let Err(why) = config.check() {
        return (why, 2);
    }
    (
        format!(
            "echo-mux {} can take over (state format version {version})",
            crate::version::version()
        ),
        0,
    )
}

/// A check child running.
pub struct Check {
    child: Child,
    output: OwnedFd,
    text: Vec<u8>,
    eof: bool,
    /// When it was started.
    pub started: Instant,
    /// When it is refused for taking too long.
    pub deadline: Instant,
}

/// What the check said.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Yes, with the child's line.
    Yes(String),
    /// No, with the reason.
    No(String),
}

impl Check {
    /// Start the binary at `origin.path` in check mode. A path that cannot be executed is
    /// the reason, as `PATH: what the kernel said`.
    pub fn start(origin: &Origin, now: Instant) -> Result<Check, String> {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| format!("cannot create a pipe: {}", Plain(&e.into())))?;
        set_nonblocking(&read).map_err(|e| format!("cannot create a pipe: {}", Plain(&e)))?;
        let err = write
            .try_clone()
            .map_err(|e| format!("cannot create a pipe: {}", Plain(&e)))?;
        let mut cmd = Process::new(&origin.path);
        if let Some(arg0) = origin.args.first() {
            cmd.arg0(arg0);
        }
        cmd.args(origin.args.iter().skip(1))
            .env(ENV, state::VERSION.to_string())
            .env_remove(state::FD_ENV)
            .stdin(Stdio::null())
            .stdout(Stdio::from(write))
            .stderr(Stdio::from(err));
        let child = cmd
            .spawn()
            .map_err(|e| format!("{}: {}", origin.path.display(), Plain(&e)))?;
        drop(cmd);
        Ok(Check {
            child,
            output: read,
            text: Vec::new(),
            eof: false,
            started: now,
            deadline: now + TIMEOUT,
        })
    }

    /// The pipe to watch for reading.
    pub fn fd(&self) -> RawFd {
        self.output.as_raw_fd()
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The pipe is readable: take what is there (up to end of file).
    pub fn on_readable(&mut self) {
        let mut buf = [0u8; 1024];
        while !self.eof {
            match crate::sys::read_fd(&self.output, &mut buf) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.text.extend_from_slice(&buf[..n]);
                    if self.text.len() > OUTPUT_LIMIT {
                        let cut = self.text.len() - OUTPUT_LIMIT;
                        self.text.drain(..cut);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => self.eof = true,
            }
        }
    }

    /// Has the output ended (the pipe need not be watched any more)?
    pub fn output_done(&self) -> bool {
        self.eof
    }

    /// The answer, once the output has ended and the child has exited; `None` until then.
    pub fn finished(&mut self) -> Option<Verdict> {
        if !self.eof {
            return None;
        }
        let status = self.child.try_wait().ok()??;
        let line = last_line(&self.text);
        Some(match status.code() {
            Some(0) => Verdict::Yes(line.unwrap_or_else(|| "yes".to_string())),
            Some(code) => Verdict::No(line.unwrap_or_else(|| {
                format!("the check of the new binary exited with status {code}")
            })),
            None => Verdict::No(format!(
                "the check of the new binary was killed by {}",
                crate::event::signal::name(status.signal().unwrap_or(0))
            )),
        })
    }

    /// Stop the child (SIGKILL) and reap it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last non-empty line of `text`, trimmed, without a leading `echo-mux: `.
fn last_line(text: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(text);
    let line = text.lines().rev().map(str::trim).find(|l| !l.is_empty())?;
    let line = line.strip_prefix("echo-mux: ").unwrap_or(line);
    Some(line.chars().take(300).collect())
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_child_refuses_a_version_it_does_not_read_and_a_bad_command_line() {
        let ok = crate::cli::parse(["echo-mux", "--listen", "127.0.0.1:0"]);
        let (line, code) = answer(OsStr::new("99"), ok);
        assert_eq!(code, 1);
        assert!(
            line.contains("reads state format versions 1 to 2, not 99"),
            "{line}"
        );
        let bad = crate::cli::parse(["echo-mux", "--delay", "x"]);
        let (line, code) = answer(OsStr::new("2"), bad);
        assert_eq!(code, 2, "{line}");
        assert!(line.contains("--delay"), "{line}");
        let ok = crate::cli::parse(["echo-mux", "--listen", "127.0.0.1:0"]);
        let (line, code) = answer(OsStr::new("1"), ok);
        assert_eq!(code, 0, "{line}");
        assert!(line.contains("can take over"), "{line}");
    }

    #[test]
    fn the_reason_is_the_last_line_without_the_program_prefix() {
        assert_eq!(
            last_line(b"noise\necho-mux: /etc/x:7: invalid CIDR\n\n").as_deref(),
            Some("/etc/x:7: invalid CIDR")
        );
        assert_eq!(last_line(b"  \n"), None);
    }
}
