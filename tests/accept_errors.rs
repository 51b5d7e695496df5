//! An accept error the daemon does not expect pauses that listener and is warned about once
//! per burst; the loop never spins (issue 8 defects 5 and 10).
//!
//! The hostile case: a socket-activated listener is shared with another process, which shuts
//! it down; from then on accept(2) fails with EINVAL while the socket stays readable. The
//! test plays the other process: it takes a duplicate of the daemon's listening socket with
//! pidfd_getfd(2) and calls shutdown(SHUT_RD) on it.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::thread;
use std::time::Duration;

use nix::sys::socket::{getsockname, getsockopt, shutdown, sockopt, Shutdown, SockaddrStorage};

use crate::util::client::ping;
use crate::util::Daemon;

/// A duplicate of the daemon's listening socket on `port` (pidfd_open + pidfd_getfd).
fn steal_listener(d: &Daemon, port: u16) -> OwnedFd {
    let pid = d.pid();
    // SAFETY: plain system call with integer arguments.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        d.fail(&format!("pidfd_open: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: pidfd_open just returned this descriptor; nobody else owns it.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap();
    for entry in dir.flatten() {
        let Ok(target) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // SAFETY: plain system call with integer arguments.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target, 0) };
        if fd < 0 {
            continue;
        }
        // SAFETY: pidfd_getfd just returned this new descriptor; nobody else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let listening = getsockopt(&fd, sockopt::AcceptConn).unwrap_or(false);
        let bound = getsockname::<SockaddrStorage>(fd.as_raw_fd())
            .ok()
            .and_then(|a| a.as_sockaddr_in().map(|a| a.port()));
        if listening && bound == Some(port) {
            return fd;
        }
    }
    d.fail(&format!("no listening socket on port {port} in the daemon"))
}

for_each_backend!(a_listener_shut_down_elsewhere_does_not_spin);
/// After another process shuts the listener down, the daemon uses next to no CPU, warns
/// once, and goes on serving the client it has.
fn a_listener_shut_down_elsewhere_does_not_spin(backend: &'static str) {
    let Some(d) = Daemon::spawn(backend, &[]) else {
        return;
    };
    let mut s = d.connect();
    ping(&mut s, b"before").unwrap_or_else(|e| d.fail(&format!("first ping: {e}")));
    let listener = steal_listener(&d, d.addr().port());
    let mark = d.mark();
    let cpu0 = d.cpu_time();
    shutdown(listener.as_raw_fd(), Shutdown::Read).unwrap();
    thread::sleep(Duration::from_secs(2));
    let cpu = d.cpu_time() - cpu0;
    // A loaded machine may run the daemon's first failing accept late: wait for its warning
    // (more of them, within the burst, would be the defect).
    d.wait_line(mark, "cannot accept", Duration::from_secs(15));
    let text = d.stderr();
    let warnings: Vec<&str> = text[mark..]
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("accept"))
        .collect();
    if cpu > Duration::from_millis(300) {
        d.fail(&format!(
            "the daemon used {cpu:?} of CPU in the 2 s after its listener broke ({} warnings)",
            warnings.len()
        ));
    }
    if warnings.len() != 1 {
        d.fail(&format!(
            "want exactly one warning for the burst, got {}: {:?}",
            warnings.len(),
            &warnings[..warnings.len().min(5)]
        ));
    }
    ping(&mut s, b"after")
        .unwrap_or_else(|e| d.fail(&format!("the connected client is no longer served: {e}")));
}
