//! Issue 15: the close path. `Backend::deregister_for_close` on every backend (a private
//! descriptor leaves nothing behind once closed, a shared one stops reporting at once), epoll
//! leaving a private descriptor's entry to the close (no `EPOLL_CTL_DEL`, seen in
//! /proc/self/fdinfo), and the daemon under connection churn: every connection's entry gone
//! from its epoll set once it is closed, and serving on with reused descriptor numbers.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use echo_mux::reactor::{self, Backend, BackendKind, Event, Interest, Sharing, Token};

use crate::util::Daemon;

/// How long a wait that must report something may take on a loaded machine.
const SOON: Duration = Duration::from_secs(10);
/// How long a wait that must report nothing is watched.
const QUIET: Duration = Duration::from_millis(100);

fn open(backend: &str) -> Box<dyn Backend> {
    let kind: BackendKind = backend.parse().expect("a backend name");
    reactor::open(kind).expect("open backend")
}

/// A connected loopback pair: (client, the accepted side).
fn tcp_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let c = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
    let (s, _) = l.accept().expect("accept");
    (c, s)
}

/// Events of one wait of at most `timeout` (an interrupted wait is an empty one).
fn wait(b: &mut dyn Backend, timeout: Duration) -> Vec<Event> {
    let mut events = Vec::new();
    match b.wait(&mut events, Some(timeout)) {
        Ok(()) => events,
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Vec::new(),
        Err(e) => panic!("{}: wait failed: {e}", b.name()),
    }
}

/// Waits until something is reported (or panics after `SOON`).
fn soon(b: &mut dyn Backend) -> Vec<Event> {
    let deadline = Instant::now() + SOON;
    loop {
        let events = wait(b, Duration::from_millis(200));
        if !events.is_empty() {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "{}: nothing reported in {SOON:?}",
            b.name()
        );
    }
}

for_each_backend!(private_close_leaves_nothing_behind);
/// A private descriptor, readable, handed to `deregister_for_close` and closed: nothing is
/// reported for it, and a new socket that gets the same descriptor number registers anew
/// (no EEXIST) and is reported under its own token only.
fn private_close_leaves_nothing_behind(backend: &'static str) {
    let mut b = open(backend);
    let (mut c1, s1) = tcp_pair();
    let fd = s1.as_raw_fd();
    b.set_interest(fd, Token(1), Interest::NONE, Interest::READ)
        .expect("add");
    c1.write_all(b"x").expect("write");
    assert!(soon(&mut *b).iter().all(|e| e.token == Token(1)));
    b.deregister_for_close(fd, Token(1), Interest::READ, Sharing::Private)
        .expect("deregister_for_close");
    drop(s1);
    let events = wait(&mut *b, QUIET);
    assert!(events.is_empty(), "{backend}: {events:?} after the close");

    // The lowest free number is the one just closed, unless another test thread took it.
    let (mut c2, s2) = tcp_pair();
    b.set_interest(s2.as_raw_fd(), Token(2), Interest::NONE, Interest::READ)
        .expect("the new socket registers (the old entry is gone)");
    c2.write_all(b"y").expect("write");
    c1.write_all(b"z").ok(); // the old peer: must stay unheard
    let events = soon(&mut *b);
    assert!(
        events.iter().all(|e| e.token == Token(2)),
        "{backend}: {events:?}"
    );
}

for_each_backend!(shared_close_stops_reports_at_once);
/// A shared descriptor (here a `dup` stays open) is removed by `deregister_for_close`: the
/// socket it named stays readable through the duplicate, and still nothing is reported under
/// the old token (epoll would keep the entry, keyed by the open socket, until the duplicate
/// closed too).
fn shared_close_stops_reports_at_once(backend: &'static str) {
    let mut b = open(backend);
    let (mut c, s) = tcp_pair();
    let dup = s.try_clone().expect("dup");
    b.set_interest(s.as_raw_fd(), Token(7), Interest::NONE, Interest::READ)
        .expect("add");
    b.deregister_for_close(s.as_raw_fd(), Token(7), Interest::READ, Sharing::Shared)
        .expect("deregister_for_close");
    drop(s);
    c.write_all(b"still readable through the dup")
        .expect("write");
    let mut one = [0u8; 1];
    dup.peek(&mut one).expect("the dup sees the data");
    let events = wait(&mut *b, QUIET);
    assert!(events.is_empty(), "{backend}: {events:?} for a closed fd");
}

/// The inode number of `fd`'s socket, as fdinfo prints it (lower-case hex).
fn ino_hex(fd: RawFd) -> String {
    let meta = std::fs::metadata(format!("/proc/self/fd/{fd}")).expect("stat the socket");
    format!("{:x}", meta.ino())
}

/// How many entries of the epoll sets of process `pid` watch the socket with inode `ino`
/// (hex), from /proc/PID/fdinfo ("tfd: 5 events: 19 data: 1 pos:0 ino:61af sdev:9").
/// With `ino` None: all entries, over every epoll set of the process.
fn epoll_entries(pid: &str, ino: Option<&str>) -> usize {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    let mut n = 0;
    for fd in fds.flatten() {
        let is_epoll =
            std::fs::read_link(fd.path()).is_ok_and(|t| t.to_string_lossy().contains("eventpoll"));
        if !is_epoll {
            continue;
        }
        let info = format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy());
        let Ok(text) = std::fs::read_to_string(info) else {
            continue;
        };
        n += text
            .lines()
            .filter(|l| l.starts_with("tfd:"))
            .filter(|l| ino.is_none_or(|i| l.split_whitespace().any(|w| w == format!("ino:{i}"))))
            .count();
    }
    n
}

#[cfg(target_os = "linux")]
#[test]
/// epoll makes no `EPOLL_CTL_DEL` for a private descriptor: its entry is still in the set
/// after `deregister_for_close` and gone once the descriptor is closed (the kernel removed
/// it). A shared one is deleted by `deregister_for_close` itself.
fn epoll_leaves_a_private_entry_to_the_close() {
    let mut b = open("epoll");
    let (_c, s) = tcp_pair();
    let ino = ino_hex(s.as_raw_fd());
    b.set_interest(s.as_raw_fd(), Token(1), Interest::NONE, Interest::READ)
        .expect("add");
    assert_eq!(epoll_entries("self", Some(&ino)), 1, "registered");
    b.deregister_for_close(s.as_raw_fd(), Token(1), Interest::READ, Sharing::Private)
        .expect("deregister_for_close");
    assert_eq!(
        epoll_entries("self", Some(&ino)),
        1,
        "a private descriptor's entry is left to the close, not deleted"
    );
    drop(s);
    assert_eq!(
        epoll_entries("self", Some(&ino)),
        0,
        "the close removed the entry"
    );

    let (_c, s) = tcp_pair();
    let ino = ino_hex(s.as_raw_fd());
    b.set_interest(s.as_raw_fd(), Token(2), Interest::NONE, Interest::READ)
        .expect("add");
    b.deregister_for_close(s.as_raw_fd(), Token(2), Interest::READ, Sharing::Shared)
        .expect("deregister_for_close");
    assert_eq!(
        epoll_entries("self", Some(&ino)),
        0,
        "a shared descriptor is deleted before the close"
    );
}

for_each_backend!(daemon_churn_leaves_no_entries);
/// 200 connections, 8 at a time, each: connect, 64 bytes echoed, close. The daemon keeps
/// serving (descriptor numbers are reused all along) and, with epoll, its set ends with what
/// it had before the churn: no connection's entry outlives the connection.
fn daemon_churn_leaves_no_entries(backend: &'static str) {
    let Some(d) = Daemon::spawn(backend, &[]) else {
        return;
    };
    let pid = d.pid().to_string();
    let before = epoll_entries(&pid, None);
    if backend == "epoll" {
        assert!(before >= 2, "the listener and the signal pipe: {before}");
    }
    let msg = [0x5au8; 64];
    for _ in 0..25 {
        let mut batch: Vec<TcpStream> = (0..8).map(|_| d.connect()).collect();
        for s in &mut batch {
            s.write_all(&msg).expect("send");
        }
        for s in &mut batch {
            let mut back = [0u8; 64];
            s.read_exact(&mut back).expect("echo");
            assert_eq!(back, msg);
        }
    }
    // The daemon closes each connection after reading its client's FIN: wait for that.
    let deadline = Instant::now() + Duration::from_secs(20);
    while epoll_entries(&pid, None) != before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        epoll_entries(&pid, None),
        before,
        "{backend}: entries left in the daemon's epoll set after the churn"
    );
    d.expect_echo(d.connect(), "after the churn");
}
