//! A connection with held or unsent output is not idle; its idle clock starts when the
//! output is gone (SPEC §4, issue 8 defect 6).

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::socket::{
    connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
};

use crate::util::client::{check_pattern, fresh_seed, outcome, send_pattern, Outcome, IO_TIMEOUT};
use crate::util::Daemon;

for_each_backend!(held_replies_are_not_idle);
/// `--delay 2s --idle-timeout 1s`: the reply comes after 2 s (the connection is not closed
/// while it is held), then the connection is closed about 1 s after the reply went out.
fn held_replies_are_not_idle(backend: &'static str) {
    let args = ["--delay", "2s", "--idle-timeout", "1s"];
    let Some(d) = Daemon::spawn(backend, &args) else {
        return;
    };
    let mut s = d.connect();
    let t0 = Instant::now();
    s.write_all(b"hello").unwrap();
    let first = outcome(&s, Duration::from_secs(12));
    let replied = t0.elapsed();
    if first != Outcome::Data(b"hello".to_vec()) || replied < Duration::from_secs(2) {
        d.fail(&format!(
            "want the held reply after 2 s; got {first:?} after {replied:?}"
        ));
    }
    let end = outcome(&s, Duration::from_secs(12));
    // The daemon sent the reply at t0 + 2 s or later (this thread may see it a little
    // later), so its idle clock cannot run out before t0 + 3 s.
    let closed = t0.elapsed();
    if end != Outcome::Closed
        || closed < Duration::from_secs(3)
        || closed > replied + Duration::from_secs(8)
    {
        d.fail(&format!(
            "want a close 1 s after the reply ({replied:?}); got {end:?} after {closed:?}"
        ));
    }
}

/// A client with a 4 KiB receive buffer (set before connecting, which also turns off the
/// kernel's autotuning), so that the daemon's output backs up soon.
pub fn small_window_client(d: &Daemon) -> TcpStream {
    // Close-on-exec like every std socket: tests spawn daemons in parallel, and a leaked
    // client socket at fd 4 fails startup::inherited's "fd 4 is not open" case.
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    setsockopt(&fd, sockopt::RcvBuf, &4096).unwrap();
    let addr = match d.addr() {
        SocketAddr::V4(a) => SockaddrIn::from(a),
        SocketAddr::V6(_) => d.fail("want an IPv4 listener"),
    };
    connect(fd.as_raw_fd(), &addr).unwrap_or_else(|e| d.fail(&format!("connect: {e}")));
    let s = TcpStream::from(fd);
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

for_each_backend!(unsent_output_is_not_idle);
/// `--idle-timeout 1s --max-buffer 64KiB`: a client with a small receive window sends 8 MiB
/// without reading (more than the kernel buffers on the daemon's way out can hold), stays
/// silent for 2.5 s with its echo pending, then reads it all: nothing is cut off.
fn unsent_output_is_not_idle(backend: &'static str) {
    const LEN: usize = 8 << 20;
    let args = ["--idle-timeout", "1s", "--max-buffer", "64KiB"];
    let Some(d) = Daemon::spawn(backend, &args) else {
        return;
    };
    let s = small_window_client(&d);
    let seed = fresh_seed();
    let mut w = s.try_clone().unwrap();
    let writer = thread::spawn(move || send_pattern(&mut w, seed, LEN));
    thread::sleep(Duration::from_millis(2500));
    let mut r = s.try_clone().unwrap();
    if let Err(e) = check_pattern(&mut r, seed, LEN) {
        d.fail(&format!("echo of a client with pending output: {e}"));
    }
    if let Err(e) = writer.join().unwrap() {
        d.fail(&format!("writer: {e}"));
    }
}
