//! What waits across a reload keeps its time: held `--delay` replies in stamp mode arrive
//! at their original due time (lateness logged, asserted loosely), a partial stamp-mode line
//! finished after the reload is one reply, queued UDP replies go out after it, and
//! `--log-connections` counts the whole connection.

use std::io::Write;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use super::reload;
use crate::util::client::{ping, read_line};
use crate::util::stamp::parse_replies;
use crate::util::Daemon;

/// `--delay` in the stamp test.
const DELAY: Duration = Duration::from_secs(2);
/// Never early by more than this (timer granularity), never later than this loose bound.
const EARLY: Duration = Duration::from_millis(50);
const LATE: Duration = Duration::from_secs(1);

fn one_reply(line: &[u8]) -> Vec<u8> {
    let replies = parse_replies(line).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(replies.len(), 1, "{:?}", String::from_utf8_lossy(line));
    replies.into_iter().next().unwrap().body
}

for_each_backend!(held_replies_keep_their_due_time);
fn held_replies_keep_their_due_time(backend: &'static str) {
    let Some(d) = Daemon::spawn(backend, &["--mode", "stamp", "--delay", "2s"]) else {
        return;
    };
    let mut a = d.connect();
    let mut b = d.connect();
    // B's unfinished line is sent first; once A's reply is out, B's chunk (due earlier)
    // has been released too: "part" waits in B's stamper, not in its held input.
    b.write_all(b"part").unwrap();
    a.write_all(b"first\n").unwrap();
    assert_eq!(one_reply(&read_line(&mut a).unwrap()), b"first");
    // A reply held across the reload, and a held partial line on a third connection.
    let mut c = d.connect();
    let sent = Instant::now();
    a.write_all(b"held\n").unwrap();
    c.write_all(b"half").unwrap();
    reload(&d);
    // Under load a reload may outlast the delay; the reply is then due while it runs and
    // may be late by that much.
    let reloaded = sent.elapsed();
    b.write_all(b" end\n").unwrap();
    c.write_all(b" more\n").unwrap();
    let reply = read_line(&mut a).unwrap();
    let arrived = sent.elapsed();
    eprintln!(
        "held reply across a reload: due after {DELAY:?}, arrived after {arrived:?} \
         (reload done after {reloaded:?})"
    );
    assert_eq!(one_reply(&reply), b"held");
    if arrived + EARLY < DELAY || arrived > DELAY.max(reloaded) + LATE {
        d.fail(&format!(
            "held reply arrived after {arrived:?}, due after {DELAY:?}"
        ));
    }
    assert_eq!(one_reply(&read_line(&mut b).unwrap()), b"part end");
    assert_eq!(one_reply(&read_line(&mut c).unwrap()), b"half more");
}

for_each_backend!(queued_datagrams_are_answered_after_a_reload);
fn queued_datagrams_are_answered_after_a_reload(backend: &'static str) {
    let Some(d) = Daemon::spawn(backend, &["--listen", "udp:127.0.0.1:0", "--delay", "1s"]) else {
        return;
    };
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let sent = Instant::now();
    for i in 0..5 {
        sock.send_to(format!("datagram {i}").as_bytes(), d.udp_addr())
            .unwrap();
    }
    // Received and held by the old image before the reload starts.
    if d.wait_stat("datagrams_in", "5", Duration::from_secs(20))
        .is_err()
    {
        d.fail("the datagrams never arrived");
    }
    reload(&d);
    let mut buf = [0u8; 100];
    let mut got = Vec::new();
    for _ in 0..5 {
        let n = sock
            .recv(&mut buf)
            .unwrap_or_else(|e| d.fail(&format!("recv: {e}")));
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let arrived = sent.elapsed();
    eprintln!("held datagrams across a reload: due after 1s, last arrived after {arrived:?}");
    let want: Vec<String> = (0..5).map(|i| format!("datagram {i}")).collect();
    assert_eq!(got, want);
    assert!(
        arrived + EARLY >= Duration::from_secs(1),
        "early: {arrived:?}"
    );
}

for_each_backend!(the_closed_line_counts_the_whole_connection);
fn the_closed_line_counts_the_whole_connection(backend: &'static str) {
    let Some(d) = Daemon::spawn(backend, &["--log-connections"]) else {
        return;
    };
    let mut s = d.connect();
    let opened = Instant::now();
    assert_eq!(ping(&mut s, &[b'a'; 100]).unwrap(), vec![b'a'; 100]);
    // Let time pass before the reload, so that the duration shows where it starts.
    std::thread::sleep(Duration::from_millis(500));
    let before = opened.elapsed();
    reload(&d);
    assert_eq!(ping(&mut s, &[b'b'; 50]).unwrap(), vec![b'b'; 50]);
    let mark = d.mark();
    drop(s);
    let line = d.expect_line(mark, "closed 127.0.0.1:", Duration::from_secs(20));
    let secs: f64 = line
        .split(" after ")
        .nth(1)
        .and_then(|r| r.split('s').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| d.fail(&format!("no duration in {line:?}")));
    if !line.contains("in=150 out=150") || secs < before.as_secs_f64() - 0.01 {
        d.fail(&format!(
            "want in=150 out=150 and at least {before:?} in {line:?}"
        ));
    }
}

for_each_backend!(a_pending_proxy_header_is_finished_after_a_reload);
fn a_pending_proxy_header_is_finished_after_a_reload(backend: &'static str) {
    let args = ["--proxy-from", "127.0.0.1", "--log-connections"];
    let Some(d) = Daemon::spawn(backend, &args) else {
        return;
    };
    let mut s = d.connect();
    let header = b"PROXY TCP4 192.0.2.9 192.0.2.1 4242 50007\r\n";
    s.write_all(&header[..10]).unwrap();
    reload(&d);
    s.write_all(&header[10..]).unwrap();
    assert_eq!(ping(&mut s, b"hello\n").unwrap(), b"hello\n");
    let mark = d.mark();
    drop(s);
    let line = d.expect_line(mark, "closed ", Duration::from_secs(20));
    assert!(line.contains("closed 192.0.2.9:4242 after"), "{line}");
    assert!(line.contains("in=6 out=6"), "{line}");
}

for_each_backend!(the_idle_clock_runs_on_across_a_reload);
fn the_idle_clock_runs_on_across_a_reload(backend: &'static str) {
    let Some(d) = Daemon::spawn(backend, &["--idle-timeout", "3s"]) else {
        return;
    };
    let mut s = d.connect();
    assert_eq!(ping(&mut s, b"x").unwrap(), b"x");
    let quiet = Instant::now();
    // Half the idle period passes, then the reload: the clock must not start again.
    std::thread::sleep(Duration::from_millis(1500));
    reload(&d);
    let reloaded = quiet.elapsed();
    let closed = crate::util::client::outcome(&s, Duration::from_secs(20));
    let after = quiet.elapsed();
    eprintln!("idle for 3s with a reload after 1.5s: closed after {after:?}");
    assert_eq!(closed, crate::util::client::Outcome::Closed);
    // Idle since the last byte: 3 s (or as soon as a slow reload is done). Restarted by
    // the reload it would be 4.5 s.
    let latest = Duration::from_secs(3).max(reloaded) + Duration::from_millis(1200);
    if after + EARLY < Duration::from_secs(3) || after > latest {
        d.fail(&format!("closed as idle after {after:?}, want about 3s"));
    }
}

for_each_backend!(a_unix_listener_and_its_file_survive_a_reload);
fn a_unix_listener_and_its_file_survive_a_reload(backend: &'static str) {
    let sock = crate::util::TempSock::new("reload");
    let Some(mut d) = Daemon::spawn(backend, &["--listen", &sock.listen_arg()]) else {
        return;
    };
    let before = d.connect_unix();
    d.expect_echo(&before, "before");
    reload(&d);
    assert!(sock.0.exists(), "the socket file is gone after the reload");
    d.expect_echo(&before, "after");
    d.expect_echo(d.connect_unix(), "a new client");
    drop(before);
    d.terminate(Duration::from_secs(20));
    assert!(
        !sock.0.exists(),
        "the new image did not remove the socket file at exit"
    );
}
