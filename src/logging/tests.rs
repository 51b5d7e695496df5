//! The queue against a real pipe and a real socket that nobody reads: pushing never blocks,
//! overflow is dropped whole and counted, and what arrives is whole lines in order.

use super::*;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::thread;

const LINES: usize = 60_000;

/// Push LINES numbered lines into a queue on `fd` on another thread; fails instead of
/// hanging if a push blocks.
fn flood(fd: RawFd, limit: usize) -> Queue {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut q = Queue::new(fd, limit);
        for i in 0..LINES {
            q.push(format!("line {i:06}\n").as_bytes());
        }
        tx.send(q).unwrap();
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("pushing log lines blocked on a descriptor nobody reads")
}

/// Read everything `r` has now and feed the queue, until the queue is empty.
fn drain(q: &mut Queue, r: &mut impl Read) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    for _ in 0..10_000 {
        match r.read(&mut buf) {
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("read: {e}"),
        }
        q.write_some();
        if q.bytes.is_empty() {
            while let Ok(n) = r.read(&mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
            return String::from_utf8(got).unwrap();
        }
    }
    panic!("the queue never drained");
}

/// Whole lines, strictly increasing, and with the dropped ones, every line accounted for.
fn check(text: &str, dropped: u64) {
    assert!(text.ends_with('\n'));
    let mut last = None;
    let mut count = 0;
    for line in text.lines() {
        let n: usize = line
            .strip_prefix("line ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("torn line {line:?}"));
        assert!(last < Some(n), "out of order: {n} after {last:?}");
        last = Some(n);
        count += 1;
    }
    assert_eq!(count + dropped as usize, LINES);
}

#[test]
fn a_full_pipe_drops_and_counts() {
    let (r, w) = nix::unistd::pipe().unwrap();
    let mut q = flood(w.as_raw_fd(), 4096);
    assert!(q.bytes.len() <= 4096);
    assert_eq!(
        q.take_dropped(),
        None,
        "not reported while lines are pending"
    );
    let dropped = q.dropped;
    assert!(dropped > 0, "{LINES} lines fit in a pipe?");
    let mut r = std::fs::File::from(r);
    nix::fcntl::fcntl(
        r.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .unwrap();
    let text = drain(&mut q, &mut r);
    check(&text, dropped);
    assert_eq!(q.take_dropped(), Some(dropped));
    assert_eq!(q.take_dropped(), None, "reported once");
    drop(w);
}

#[test]
fn a_full_socket_drops_and_counts() {
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    let mut q = flood(theirs.as_raw_fd(), 4096);
    let dropped = q.dropped;
    assert!(dropped > 0);
    assert_eq!(q.kind, Some(Kind::Socket));
    ours.set_nonblocking(true).unwrap();
    check(&drain(&mut q, &mut ours), dropped);
    assert_eq!(q.take_dropped(), Some(dropped));
}

#[test]
fn a_vanished_reader_discards_quietly() {
    let (r, w) = nix::unistd::pipe().unwrap();
    drop(r);
    let mut q = Queue::new(w.as_raw_fd(), 4096);
    q.push(b"nobody hears this\n");
    q.push(b"nor this\n");
    assert!(q.broken && q.bytes.is_empty());
    assert_eq!(q.take_dropped(), None);
}
