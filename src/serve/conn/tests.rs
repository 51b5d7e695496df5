//! Handler tests on a socketpair: backpressure with partial lines, held-input accounting,
//! failed sends.

use super::*;
use crate::serve::echo::Mode;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

fn ctx<'a>(clock: &'a mut Clock, stats: &'a mut Stats, delay: Duration) -> Ctx<'a> {
    Ctx {
        mode: Mode::Stamp,
        delay,
        max_buffer: 1000,
        now: Instant::now(),
        clock,
        stats,
    }
}

/// A paused connection whose output drained must read again even when an unfinished
/// line (which only more input can complete) holds more than half the cap.
#[test]
fn a_long_partial_line_does_not_keep_reading_paused() {
    let (ours, mut peer) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let mut conn = Conn::new(OwnedFd::from(ours), 0, Instant::now());
    let (mut clock, mut counters) = (Clock::default(), Stats::new(Instant::now()));
    let mut scratch = vec![0u8; 64 * 1024];
    let mut input = vec![b'\n'; 10];
    input.extend_from_slice(&[b'x'; 600]);
    peer.write_all(&input).unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut c = ctx(&mut clock, &mut counters, Duration::from_secs(1));
    for _ in 0..1000 {
        if !conn.wanted().read {
            break;
        }
        assert_eq!(conn.on_readable(&mut scratch, &mut c), Step::Keep);
    }
    assert!(!conn.wanted().read, "held input reaches the cap");
    assert!(
        conn.held.cost() > 10 * STAMP_GROWTH,
        "held at its reply cost"
    );
    assert_eq!(conn.release(true, &mut c), Step::Keep);
    assert!(conn.out.is_empty(), "the 10 replies went to the socket");
    assert!(
        conn.stamper.pending() > 1000 / 2,
        "a long partial line is left"
    );
    assert!(
        conn.wanted().read,
        "nothing is pending but the partial line: read on"
    );
    let mut sink = vec![0u8; 10 * 35];
    peer.read_exact(&mut sink).unwrap();
}

/// Held stamp-mode input counts at its reply size: 1,000 empty lines (1,000 bytes in)
/// will be 35,000 bytes of replies, so at `--max-buffer 1000` reading stops after a
/// few of them, and the release stays near the cap (it was 35 times the cap).
#[test]
fn held_empty_lines_count_at_their_reply_size() {
    let (ours, mut peer) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let mut conn = Conn::new(OwnedFd::from(ours), 0, Instant::now());
    let (mut clock, mut counters) = (Clock::default(), Stats::new(Instant::now()));
    let mut scratch = vec![0u8; 64 * 1024];
    peer.write_all(&[b'\n'; 1000]).unwrap();
    let mut c = ctx(&mut clock, &mut counters, Duration::from_secs(3600));
    for _ in 0..1000 {
        assert_eq!(conn.on_readable(&mut scratch, &mut c), Step::Keep);
    }
    assert!(!conn.wanted().read, "reading paused at the cap");
    conn.write_blocked = true; // the replies stay in OUT, as for a client that does not read
    assert_eq!(conn.release(true, &mut c), Step::Keep);
    let released = conn.out.len();
    assert!(
        released > 0 && released <= 1000 + STAMP_GROWTH,
        "released {released} bytes"
    );
}

/// A send that fails hard ends the handler with Close; nothing more is queued for a peer
/// that is gone (raw mode used to copy the unsent input into `out` first).
#[test]
fn a_failed_send_closes_without_queueing_output() {
    let (ours, mut peer) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let mut conn = Conn::new(OwnedFd::from(ours), 0, Instant::now());
    let (mut clock, mut stats) = (Clock::default(), Stats::new(Instant::now()));
    let mut scratch = vec![0u8; 64 * 1024];
    peer.write_all(b"held until the peer is gone").unwrap();
    let mut c = ctx(&mut clock, &mut stats, Duration::from_secs(60));
    c.mode = Mode::Raw;
    assert_eq!(conn.on_readable(&mut scratch, &mut c), Step::Keep);
    drop(peer);
    assert_eq!(conn.release(true, &mut c), Step::Close);
    assert!(
        conn.out.is_empty(),
        "nothing queued for a peer that is gone"
    );
}

/// 999 bytes and a CR that may begin a CRLF: held back, yet reading must go on.
#[test]
fn a_held_back_cr_does_not_reach_the_cap() {
    let (ours, mut peer) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let mut conn = Conn::new(OwnedFd::from(ours), 0, Instant::now());
    let (mut clock, mut counters) = (Clock::default(), Stats::new(Instant::now()));
    let mut scratch = vec![0u8; 64 * 1024];
    let mut input = vec![b'x'; 999];
    input.push(b'\r');
    peer.write_all(&input).unwrap();
    let mut c = ctx(&mut clock, &mut counters, Duration::ZERO);
    for _ in 0..100 {
        assert_eq!(conn.on_readable(&mut scratch, &mut c), Step::Keep);
    }
    assert!(
        conn.wanted().read,
        "a partial line alone never pauses reading"
    );
}
