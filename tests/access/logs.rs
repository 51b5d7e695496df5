//! The refusal log's pace, `--log-connections` lines, peers at debug level.

use std::io::{Read, Write};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::socket::{setsockopt, sockopt};

use super::{connect_from, ip};
use crate::util::client::{outcome, ping, Outcome, IO_TIMEOUT};
use crate::util::{Daemon, TempSock};

/// Lines of the daemon's stderr after `mark` that contain every one of `needles`.
fn lines_with(d: &Daemon, mark: usize, needles: &[&str]) -> Vec<String> {
    d.stderr()[mark..]
        .lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .map(str::to_string)
        .collect()
}

/// The number before " connection" in `refused 37 connections in the last 1s (...)`.
fn refused_count(line: &str) -> u64 {
    let after = &line[line.find("refused ").expect("a refusal line") + "refused ".len()..];
    after
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A flood of refusals for two reasons over about 2.5 s: at most one line per second per
/// reason (so at most 4 of each), each with a count and an example peer.
#[test]
fn a_flood_of_refusals_logs_once_a_second_per_reason() {
    let Some(d) = Daemon::spawn("epoll", &["--deny", "127.0.0.3", "--max-per-source", "1"]) else {
        return;
    };
    let mark = d.mark();
    let mut keep = connect_from(&d, ip("127.0.0.4")).unwrap();
    ping(&mut keep, b"k").unwrap();
    let t0 = Instant::now();
    let mut sent = 0u64;
    while t0.elapsed() < Duration::from_millis(2500) {
        for source in ["127.0.0.3", "127.0.0.4"] {
            let s = connect_from(&d, ip(source)).unwrap();
            if outcome(&s, Duration::from_secs(5)) != Outcome::Closed {
                d.fail(&format!("a connection from {source} was not refused"));
            }
        }
        sent += 1;
        thread::sleep(Duration::from_millis(5));
    }
    let secs = t0.elapsed().as_secs() + 1;
    thread::sleep(Duration::from_millis(1200)); // let a last summary out, if one is pending
    for (reason, example) in [("(denied)", "127.0.0.3"), ("(max-per-source)", "127.0.0.4")] {
        let lines = lines_with(&d, mark, &["refused ", reason]);
        let shape =
            |l: &String| l.contains(&format!("e.g. from {example}")) && refused_count(l) > 0;
        if lines.is_empty() || lines.len() as u64 > secs + 1 || !lines.iter().all(shape) {
            d.fail(&format!(
                "{sent} refusals {reason} in {secs} s gave {} lines (want 1 to {}, each with a count and an example from {example}):\n{}",
                lines.len(),
                secs + 1,
                lines.join("\n")
            ));
        }
        let logged: u64 = lines.iter().map(|l| refused_count(l)).sum();
        if logged > sent {
            d.fail(&format!(
                "the lines {reason} count {logged} refusals of {sent}"
            ));
        }
    }
}

/// The `closed … after …s: in=N out=N (reason)` line for the client socket `s`.
fn closed_line(d: &Daemon, mark: usize, peer: &str, reason: &str) -> String {
    let needle = format!("closed {peer} after ");
    let line = d.expect_line(mark, &needle, Duration::from_secs(10));
    if !line.ends_with(&format!("({reason})")) {
        d.fail(&format!("want reason ({reason}) in {line:?}"));
    }
    line
}

/// `in=… out=…` of a closed line.
fn bytes_of(line: &str) -> (u64, u64) {
    let field = |k: &str| {
        let at = line.find(k).map(|i| i + k.len()).unwrap_or(line.len());
        line[at..]
            .split(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(u64::MAX)
    };
    (field(" in="), field(" out="))
}

for_each_backend!(log_connections_gives_peer_bytes_and_reason);
/// `--log-connections`: one line per closed connection with the peer, the exact bytes each
/// way and why it ended: peer closed, reset, idle timeout, drain deadline.
fn log_connections_gives_peer_bytes_and_reason(backend: &'static str) {
    let Some(mut d) = Daemon::spawn(
        backend,
        &[
            "--log-connections",
            "--idle-timeout",
            "1s",
            "--shutdown-timeout",
            "300ms",
        ],
    ) else {
        return;
    };
    let mark = d.mark();
    // Peer closed, after 120 bytes each way.
    let mut s = connect_from(&d, ip("127.0.0.2")).unwrap();
    let peer = s.local_addr().unwrap().to_string();
    ping(&mut s, &[b'a'; 100]).unwrap();
    ping(&mut s, &[b'b'; 20]).unwrap();
    drop(s);
    let line = closed_line(&d, mark, &peer, "peer closed");
    if bytes_of(&line) != (120, 120) || !line.contains("s: in=") {
        d.fail(&format!("want in=120 out=120 in {line:?}"));
    }
    // Reset: SO_LINGER 0 makes close send RST.
    let mut s = connect_from(&d, ip("127.0.0.2")).unwrap();
    let peer = s.local_addr().unwrap().to_string();
    ping(&mut s, b"1234567").unwrap();
    setsockopt(
        &s,
        sockopt::Linger,
        &libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    )
    .unwrap();
    drop(s);
    let line = closed_line(&d, mark, &peer, "reset");
    if bytes_of(&line) != (7, 7) {
        d.fail(&format!("want in=7 out=7 in {line:?}"));
    }
    // Idle timeout.
    let mut idle = connect_from(&d, ip("127.0.0.3")).unwrap();
    let peer = idle.local_addr().unwrap().to_string();
    ping(&mut idle, b"zz").unwrap();
    let line = closed_line(&d, mark, &peer, "idle timeout");
    if bytes_of(&line) != (2, 2) {
        d.fail(&format!("want in=2 out=2 in {line:?}"));
    }
    // Drain deadline: a client that keeps its side open through SIGTERM.
    let mut last = connect_from(&d, ip("127.0.0.4")).unwrap();
    let peer = last.local_addr().unwrap().to_string();
    ping(&mut last, b"abc").unwrap();
    d.signal(nix::sys::signal::Signal::SIGTERM);
    let line = closed_line(&d, mark, &peer, "drain deadline");
    if bytes_of(&line) != (3, 3) {
        d.fail(&format!("want in=3 out=3 in {line:?}"));
    }
    d.wait_exit(Duration::from_secs(10));
    let all = lines_with(&d, mark, &["closed "]);
    if all.len() != 4 {
        d.fail(&format!(
            "want 4 closed lines, got {}:\n{}",
            all.len(),
            all.join("\n")
        ));
    }
}

/// A unix-socket client has no address: its closed line names the socket it came through.
#[test]
fn log_connections_names_the_unix_socket() {
    let sock = TempSock::new("log");
    let listen = sock.listen_arg();
    let Some(d) = Daemon::spawn("poll", &["--listen", &listen, "--log-connections"]) else {
        return;
    };
    let mark = d.mark();
    let mut c = std::os::unix::net::UnixStream::connect(&sock.0).unwrap();
    c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    c.write_all(b"unix!").unwrap();
    let mut b = [0u8; 5];
    c.read_exact(&mut b).unwrap();
    drop(c);
    let line = closed_line(&d, mark, &listen, "peer closed");
    if bytes_of(&line) != (5, 5) {
        d.fail(&format!("want in=5 out=5 in {line:?}"));
    }
}

/// Without `--log-connections`, closing is not an info line; at debug level (`-v`) the
/// per-connection lines name the peer (and the closing one has the bytes and the reason).
#[test]
fn without_log_connections_peers_appear_at_debug_only() {
    let Some(d) = Daemon::spawn("epoll", &["-v"]) else {
        return;
    };
    let mark = d.mark();
    let mut s = connect_from(&d, ip("127.0.0.5")).unwrap();
    let peer = s.local_addr().unwrap().to_string();
    ping(&mut s, b"dbg").unwrap();
    drop(s);
    d.expect_line(
        mark,
        &format!("accepted from {peer}"),
        Duration::from_secs(10),
    );
    let line = d.expect_line(
        mark,
        &format!("from {peer} closed after"),
        Duration::from_secs(10),
    );
    if !line.contains("DEBUG") || bytes_of(&line) != (3, 3) || !line.ends_with("(peer closed)") {
        d.fail(&format!(
            "want a debug line with in=3 out=3 (peer closed): {line:?}"
        ));
    }
    let info = lines_with(&d, mark, &["INFO", "closed "]);
    if !info.is_empty() {
        d.fail(&format!(
            "info lines about closing without --log-connections: {info:?}"
        ));
    }
}
