//! Issue 16 item 6: `hammer.sh --udp` with no server (nothing bound, or a socket that never
//! answers) says so in one line and exits 1, as the TCP mode does, instead of one "echo
//! differs" line per client; against the daemon it still passes on every backend.

use std::net::UdpSocket;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::util::*;

/// `hammer.sh --udp --port PORT ARGS...` under coreutils `timeout` (SIGTERM after `limit`).
fn hammer_udp(port: u16, args: &[&str], limit: Duration) -> Output {
    Command::new("timeout")
        .arg("--kill-after=5")
        .arg(limit.as_secs().to_string())
        .arg(format!("{}/scripts/hammer.sh", env!("CARGO_MANIFEST_DIR")))
        .args(["--udp", "--port", &port.to_string()])
        .args(args)
        .output()
        .expect("run hammer.sh")
}

/// Exit 1, one line on stderr naming the address, the TCP mode's summary on stdout, and no
/// client started (no "echo differs" lines).
fn expect_no_server(out: &Output, port: u16) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let all = format!(
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status.code()
    );
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert_eq!(
        stderr.trim_end(),
        format!("hammer.sh: no UDP echo from 127.0.0.1:{port} (is the server running?)"),
        "{all}"
    );
    assert_eq!(stdout.trim_end(), "0 passed, 6 failed", "{all}");
}

#[test]
/// Nothing bound at the port: the probe's ICMP "port unreachable" ends it at once.
fn hammer_udp_with_nothing_bound_says_so_once() {
    let port = {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
        s.local_addr().expect("addr").port()
    }; // closed again: nothing listens there now
    let out = hammer_udp(port, &["--clients", "3", "--rounds", "2"], TOOL_LIMIT);
    expect_no_server(&out, port);
}

#[test]
/// A socket that takes datagrams and never answers: the probe gives up after its 2 s, long
/// before the clients' --timeout would have.
fn hammer_udp_with_a_silent_socket_says_so_once() {
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let started = Instant::now();
    let args = ["--clients", "3", "--rounds", "2", "--timeout", "60"];
    let out = hammer_udp(port, &args, TOOL_LIMIT);
    expect_no_server(&out, port);
    assert!(
        started.elapsed() < Duration::from_secs(50),
        "the clients were started: {:?}",
        started.elapsed()
    );
    let mut buf = [0u8; 64];
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let (n, _) = silent.recv_from(&mut buf).expect("the probe datagram");
    assert!(n > 0, "the probe is not empty");
}

for_each_backend!(hammer_udp_passes_against_the_daemon);
/// The probe does not get in the way: 4 clients × 2 rounds of 1,000 bytes all pass.
fn hammer_udp_passes_against_the_daemon(backend: &'static str) {
    let Some(d) = Daemon::spawn(backend, &["-l", "udp:127.0.0.1:0"]) else {
        return;
    };
    let port = d.udp_addr().port();
    let args = ["--clients", "4", "--bytes", "1000", "--rounds", "2"];
    let out = hammer_udp(port, &args, TOOL_LIMIT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", d.describe());
    assert!(stdout.contains("8 passed, 0 failed"), "{stdout}");
}
