//! systemd during a reload: `RELOADING=1` with `MONOTONIC_USEC=` (CLOCK_MONOTONIC now), then
//! `READY=1` from the same pid, and never a `MAINPID=`.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use super::reload;
use crate::util::{Daemon, TempDir};

/// Every datagram's lines until one equal to `want` (true), or `within` passes (false).
fn until(sock: &UnixDatagram, want: &str, within: Duration, seen: &mut Vec<String>) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        let Ok(n) = sock.recv(&mut buf) else {
            continue;
        };
        for line in String::from_utf8_lossy(&buf[..n]).lines() {
            seen.push(line.to_string());
            if line == want {
                return true;
            }
        }
    }
    false
}

fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

#[test]
fn systemd_hears_reloading_then_ready_from_the_same_pid() {
    let dir = TempDir::new("reload-notify");
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let Some(d) = Daemon::with("poll")
        .notify_socket(&path.to_string_lossy())
        .spawn()
    else {
        return;
    };
    let mut seen = Vec::new();
    assert!(
        until(&sock, "READY=1", Duration::from_secs(20), &mut seen),
        "{seen:?}"
    );
    let before = monotonic_usec();
    seen.clear();
    reload(&d);
    assert!(
        until(&sock, "READY=1", Duration::from_secs(20), &mut seen),
        "{seen:?}"
    );
    let after = monotonic_usec();
    let at = seen.iter().position(|l| l == "RELOADING=1");
    let usec: Option<u64> = seen
        .iter()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse().ok());
    let ready = seen.iter().rposition(|l| l == "READY=1");
    assert!(
        at.is_some() && at < ready,
        "RELOADING=1 before READY=1: {seen:?}"
    );
    assert!(
        usec.is_some_and(|u| (before..=after).contains(&u)),
        "MONOTONIC_USEC= between {before} and {after}: {seen:?}"
    );
    assert!(!seen.iter().any(|l| l.starts_with("MAINPID=")), "{seen:?}");
}
