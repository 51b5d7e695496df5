//! Commands run to completion: the binary with bad options, or a tool such as
//! `systemd-analyze`. Every run is bounded in time and its whole output kept for the message.

use std::ffi::OsStr;
use std::io::ErrorKind;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::{capture, wait_captured, Shared, BIN};

/// How long [`run`] lets the binary run before killing it. The runs are expected to end at
/// once (bad options, failed starts), so this is only paid by a wrong start; generous so
/// that a loaded machine's slow process start is never mistaken for one.
pub const RUN_LIMIT: Duration = Duration::from_secs(15);
/// How long [`run_tool`] lets a tool run (`systemd-analyze security` is slow on a busy box;
/// the runs end when the tool does, so only a hung tool pays this).
pub const TOOL_LIMIT: Duration = Duration::from_secs(180);

/// What a finished run produced.
pub struct Run {
    pub cmd: String,
    /// Killed because it did not exit within `limit`.
    pub timed_out: bool,
    pub limit: Duration,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Everything about the run, for failure messages.
    pub fn describe(&self) -> String {
        let killed = match self.timed_out {
            true => format!(" (killed: still running after {:?})", self.limit),
            false => String::new(),
        };
        format!(
            "\n--- command: {}\n--- status: {}{killed}\n--- stdout:\n{}\n--- stderr:\n{}\n--- end",
            self.cmd, self.status, self.stdout, self.stderr
        )
    }
}

/// Run the binary with `args` to completion (killed after [`RUN_LIMIT`], see
/// [`Run::timed_out`]).
pub fn run(args: &[&str]) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("RUST_LOG")
        .env_remove("RUST_BACKTRACE");
    run_command(cmd, format!("{BIN} {}", args.join(" ")), RUN_LIMIT)
}

/// Run an external tool to completion (bounded by [`TOOL_LIMIT`]); a missing tool fails
/// the test saying which package provides it.
pub fn run_tool(program: &str, args: &[&str]) -> Run {
    let mut cmd = Command::new(program);
    // The units say Documentation=man:echo-mux(8): `systemd-analyze verify` runs man(1) on it,
    // which finds the generated page in dist/man (man-db must be installed).
    cmd.env("MANPATH", concat!(env!("CARGO_MANIFEST_DIR"), "/dist/man"));
    cmd.args(args);
    run_command(cmd, format!("{program} {}", args.join(" ")), TOOL_LIMIT)
}

/// Run `cmd` (shown as `line` in messages) with stdin closed and both outputs captured;
/// killed when it is still running after `limit`.
pub fn run_command(mut cmd: Command, line: String, limit: Duration) -> Run {
    super::watchdog::backstop();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| match e.kind() {
            ErrorKind::NotFound => {
                panic!("cannot run {line}: {}", not_installed(cmd.get_program()))
            }
            _ => panic!("cannot run {line}: {e}"),
        });
    let out = capture(child.stdout.take().unwrap());
    let err = capture(child.stderr.take().unwrap());
    let (status, timed_out) = wait_or_kill(&mut child, limit);
    let text = |s: &Shared| {
        wait_captured(s, Duration::from_secs(2), |c| c.eof.then_some(()));
        s.0.lock().unwrap().text.clone()
    };
    Run {
        cmd: line,
        timed_out,
        limit,
        status,
        stdout: text(&out),
        stderr: text(&err),
    }
}

/// Wait for `child` to exit; SIGKILL it when it is still running after `limit`. Returns the
/// status and whether it had to be killed.
pub fn wait_or_kill(child: &mut Child, limit: Duration) -> (ExitStatus, bool) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return (st, false);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            return (child.wait().unwrap(), true);
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// What to install when `program` is missing.
pub(super) fn not_installed(program: &OsStr) -> String {
    match &*program.to_string_lossy() {
        p if p.starts_with("systemd-") => {
            format!("{p} is not installed: install the `systemd` package (apt-get install systemd)")
        }
        p => format!("{p} is not installed (.ci/run lists what the tests need)"),
    }
}
