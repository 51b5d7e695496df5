//! Socket activation's descriptors (issue 8, defects 2 and 14): one announced but not passed,
//! and, for select, one beyond FD_SETSIZE.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{finish, Ended};
use crate::util::{lift_nofile, BIN};

// ---------------------------------------------------------------------------------------
// Defect 2 (and 14): inherited descriptors
// ---------------------------------------------------------------------------------------

/// Run the daemon socket-activated, the way systemd does: `listener` dup'ed onto each of
/// fds `3..3+passed`, `LISTEN_FDS=announced`, `LISTEN_PID` set by a shell to its own pid
/// just before it execs the daemon. Waits at most `limit` for the exit.
fn activated(listener: &OwnedFd, passed: i32, announced: usize, args: &[&str]) -> Ended {
    lift_nofile();
    let raw: RawFd = listener.as_raw_fd();
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(r#"LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@""#)
        .arg(BIN)
        .args(args)
        .env("LISTEN_FDS", announced.to_string())
        .env_remove("LISTEN_PID")
        .env_remove("RUST_LOG")
        .env_remove("RUST_BACKTRACE")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let place = move || {
        // Park a close-on-exec copy above the target range first: `raw` itself may lie in
        // 3..3+passed, and dup2 onto itself would keep its FD_CLOEXEC.
        // SAFETY: fcntl, dup2 and close are async-signal-safe and touch only descriptors.
        unsafe {
            let high = libc::fcntl(raw, libc::F_DUPFD_CLOEXEC, 3 + passed + 16);
            if high < 0 {
                return Err(std::io::Error::last_os_error());
            }
            for fd in 3..3 + passed {
                if libc::dup2(high, fd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            libc::close(high);
            // The announced descriptors that are not passed must be closed, as under
            // systemd, even if this process leaked one without close-on-exec.
            for fd in 3 + passed..3 + announced as i32 {
                libc::close(fd);
            }
        }
        Ok(())
    };
    // SAFETY: the closure only makes async-signal-safe calls (above).
    unsafe { cmd.pre_exec(place) };
    let line = format!(
        "LISTEN_FDS={announced} (fds 3..{}) {BIN} {}",
        3 + passed,
        args.join(" ")
    );
    let child = cmd.spawn().unwrap();
    finish(child, line, Duration::from_secs(15))
}

fn tcp_listener() -> OwnedFd {
    OwnedFd::from(std::net::TcpListener::bind("127.0.0.1:0").unwrap())
}

for_each_backend!(announced_descriptor_that_is_not_open_is_an_error);
/// `LISTEN_FDS=2` but only fd 3 passed: fd 4 is not ours. The daemon used to open its
/// poller first, so fd 4 was its own epoll descriptor, adopted, rejected and closed twice.
/// Now the inherited descriptors are checked before anything is opened: one line, exit 1.
fn announced_descriptor_that_is_not_open_is_an_error(backend: &'static str) {
    let l = tcp_listener();
    let r = activated(&l, 1, 2, &["--backend", backend]);
    r.assert_one_line(1, &["inherited descriptor 4", "LISTEN_FDS=2", "not open"]);
}

/// With `-b select`, an inherited listener at fd >= 1024 cannot be watched: the error names
/// the descriptor and FD_SETSIZE, and says what to use instead.
#[test]
fn select_names_an_inherited_descriptor_beyond_fd_setsize() {
    if lift_nofile() < 2048 {
        println!("note: RLIMIT_NOFILE below 2048; cannot pass 1,023 descriptors, skipping");
        return;
    }
    let l = tcp_listener();
    let port = std::net::TcpListener::from(l.try_clone().unwrap())
        .local_addr()
        .unwrap()
        .port();
    let r = activated(&l, 1023, 1023, &["--backend", "select"]);
    r.assert_one_line(
        1,
        &[
            "inherited descriptor 1024",
            &format!("127.0.0.1:{port}"),
            "FD_SETSIZE",
            "1024",
            "--backend poll",
        ],
    );
}
