//! What the user reads (issue 8, defects 12 and 14): `--help` on a stdout that cannot be
//! written, option values and conflicts, human durations and plain errors in runtime lines.

use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::{daemon_cmd, finish, Ended};
use crate::util::client::{self, ping};
use crate::util::{run, Daemon, Run};

// ---------------------------------------------------------------------------------------
// Defect 12: --help and --version on a stdout that cannot be written
// ---------------------------------------------------------------------------------------

/// Run `args` with stdout set to `out`; at most 15 s.
fn run_with_stdout(args: &[&str], out: Stdio) -> Ended {
    let (mut cmd, line) = daemon_cmd(args);
    cmd.stdout(out);
    finish(cmd.spawn().unwrap(), line, Duration::from_secs(15))
}

/// `echo-mux --help | true` after the reader left used to panic with a backtrace (exit
/// 101). A closed pipe is the reader's choice: exit 0 quietly. Any other write error
/// (/dev/full) is one line and exit 1.
#[test]
fn help_and_version_survive_a_stdout_that_cannot_be_written() {
    for flag in ["--help", "--version"] {
        // Close-on-exec: a daemon spawned meanwhile by another test must not hold the read end.
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        drop(r); // the reader is gone before the first byte
        let ended = run_with_stdout(&[flag], Stdio::from(w));
        assert!(
            !ended.timed_out && ended.status.code() == Some(0) && ended.stderr.is_empty(),
            "closed stdout: want exit 0 and nothing on stderr:{}",
            ended.describe()
        );
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let ended = run_with_stdout(&[flag], Stdio::from(full));
        ended.assert_one_line(1, &["cannot write", "no space left on device"]);
    }
}

// ---------------------------------------------------------------------------------------
// Defect 14: messages
// ---------------------------------------------------------------------------------------

/// Negative values used to read "unknown option '-1'"; `-v -q` gave clap's own text.
#[test]
fn messages_name_the_option_and_the_expected_value() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--delay", "-1"],
            "invalid value '-1' for '--delay': must not be negative",
        ),
        (
            &["--idle-timeout", "-2s"],
            "invalid value '-2s' for '--idle-timeout': must not be negative",
        ),
        (
            &["--max-clients", "-5"],
            "invalid value '-5' for '--max-clients': expected a whole number of at least 1",
        ),
        (
            &["--max-buffer", "-1"],
            "invalid value '-1' for '--max-buffer': expected a size such as 4096, 64KiB, 1MiB or 1GiB",
        ),
        (&["-v", "-q"], "--verbose and --quiet cannot be used together"),
        (&["-q", "-vv"], "--quiet and --verbose cannot be used together"),
    ];
    for (args, want) in cases {
        let args = [&["--listen", "127.0.0.1:0"], *args].concat();
        let r: Run = run(&args);
        assert!(
            !r.timed_out && r.status.code() == Some(2) && r.stderr == format!("echo-mux: {want}\n"),
            "want exactly `echo-mux: {want}`:{}",
            r.describe()
        );
    }
}

for_each_backend!(drain_line_and_warnings_read_like_the_startup_errors);
/// `--shutdown-timeout 0` used to log "at most 0ns", and runtime warnings kept the raw
/// "Too many open files (os error 24)". Durations are human (0s, 1.5s); errors are plain.
fn drain_line_and_warnings_read_like_the_startup_errors(backend: &'static str) {
    for (value, want) in [("0", "(at most 0s)"), ("1.5s", "(at most 1.5s)")] {
        let Some(mut d) = Daemon::spawn(backend, &["--shutdown-timeout", value]) else {
            return;
        };
        let mark = d.mark();
        d.signal(Signal::SIGTERM);
        let line = d.expect_line(mark, "draining", Duration::from_secs(15));
        assert!(line.contains(want), "want {want:?} in {line:?}");
        d.wait_exit(Duration::from_secs(10));
    }
    // Out of descriptors on accept: the warning names the error as the startup errors do.
    let Some(d) = Daemon::with(backend).nofile(32).spawn() else {
        return;
    };
    let mark = d.mark();
    let mut held = Vec::new();
    for _ in 0..40 {
        match client::connect(d.addr()) {
            Ok(s) => held.push(s),
            Err(_) => break,
        }
    }
    let line = d.expect_line(mark, "cannot accept", Duration::from_secs(10));
    assert!(
        line.contains("too many open files") && !line.contains("os error"),
        "{line:?}"
    );
    drop(held);
    let mut s = d.connect();
    ping(&mut s, b"after").unwrap_or_else(|e| d.fail(&format!("after the shortage: {e}")));
}
