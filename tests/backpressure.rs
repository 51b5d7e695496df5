//! Backpressure (SPEC §4): a client that sends without reading is paused once its pending
//! output reaches `--max-buffer` (delayed data included), costs about that much memory, and
//! nobody else notices; once it reads, nothing it sent is lost.

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::util::client::{check_pattern, echo_exact, fresh_seed, ping, retry, Pattern};
use crate::util::Daemon;

/// A thread sending `total` pattern bytes and counting what the kernel took; it keeps
/// retrying through write timeouts (up to 2 minutes), so it can be blocked and released.
struct Blaster {
    sent: Arc<AtomicUsize>,
    handle: JoinHandle<Result<(), String>>,
}

fn blast(s: &TcpStream, seed: u64, total: usize) -> Blaster {
    let mut w = s.try_clone().unwrap();
    w.set_write_timeout(Some(Duration::from_millis(250)))
        .unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&sent);
    let handle = thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut p = Pattern::new(seed);
        let mut buf = vec![0u8; 64 << 10];
        let mut done = 0;
        while done < total {
            let n = buf.len().min(total - done);
            p.fill(&mut buf[..n]);
            let mut off = 0;
            while off < n {
                match retry(|| w.write(&buf[off..n])) {
                    Ok(k) => {
                        off += k;
                        counter.fetch_add(k, Ordering::SeqCst);
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        if Instant::now() > deadline {
                            return Err(format!(
                                "writer stuck for 2 minutes after {} bytes",
                                done + off
                            ));
                        }
                    }
                    Err(e) => return Err(format!("write after {} bytes: {e}", done + off)),
                }
            }
            done += n;
        }
        Ok(())
    });
    Blaster { sent, handle }
}

impl Blaster {
    /// Wait until the count has not moved for 1.5 s; the bytes sent by then, or `None` if
    /// everything was sent (or 30 s passed) without such a stall.
    fn wait_stall(&self, total: usize) -> Option<usize> {
        let start = Instant::now();
        let (mut last, mut since) = (usize::MAX, Instant::now());
        while start.elapsed() < Duration::from_secs(30) {
            let now = self.sent.load(Ordering::SeqCst);
            if now >= total {
                return None;
            }
            if now != last {
                (last, since) = (now, Instant::now());
            } else if since.elapsed() >= Duration::from_millis(1500) {
                return Some(now);
            }
            thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

const MIB: usize = 1 << 20;

for_each_backend!(slow_reader_is_paused_with_bounded_memory);
/// `--max-buffer 1MiB`; a client tries to send 64 MiB without reading. It must block,
/// the daemon's RSS must stay near its baseline, another client must be echoed
/// meanwhile, and once the slow client reads, all 64 MiB come back exactly.
fn slow_reader_is_paused_with_bounded_memory(backend: &'static str) {
    const TOTAL: usize = 64 * MIB;
    let Some(d) = Daemon::spawn(backend, &["--max-buffer", "1MiB"]) else {
        return;
    };
    let baseline = d.rss_kib();
    let slow = d.connect();
    let seed = fresh_seed();
    let blaster = blast(&slow, seed, TOTAL);
    let Some(stalled_at) = blaster.wait_stall(TOTAL) else {
        d.fail(&format!(
            "a client that never reads sent {} of 64 MiB without being blocked",
            blaster.sent.load(Ordering::SeqCst)
        ));
    };
    let rss = d.rss_kib();
    if rss > baseline + 16 * 1024 {
        d.fail(&format!(
            "RSS {rss} KiB with one blocked client (baseline {baseline} KiB, --max-buffer 1MiB)"
        ));
    }
    let other = d.connect();
    let t0 = Instant::now();
    if let Err(e) = echo_exact(&other, fresh_seed(), MIB, true) {
        d.fail(&format!("another client while one is blocked: {e}"));
    }
    if t0.elapsed() > Duration::from_secs(10) {
        d.fail(&format!(
            "another client took {:?} for 1 MiB while one is blocked",
            t0.elapsed()
        ));
    }
    let mut r = slow.try_clone().unwrap();
    if let Err(e) = check_pattern(&mut r, seed, TOTAL) {
        d.fail(&format!(
            "after the slow client started reading (blocked at {stalled_at} bytes): {e}"
        ));
    }
    if let Err(e) = blaster.handle.join().unwrap() {
        d.fail(&e);
    }
}

for_each_backend!(delayed_data_counts_toward_max_buffer);
/// Held (delayed) data counts toward `--max-buffer`: with `--delay 2s` a client that
/// floods is blocked long before 32 MiB instead of the daemon queueing it all in memory,
/// and the first bytes still come back intact after the delay.
fn delayed_data_counts_toward_max_buffer(backend: &'static str) {
    const TOTAL: usize = 32 * MIB;
    let Some(mut d) = Daemon::spawn(backend, &["--delay", "2s", "--max-buffer", "256KiB"]) else {
        return;
    };
    let baseline = d.rss_kib();
    let s = d.connect();
    let seed = fresh_seed();
    let blaster = blast(&s, seed, TOTAL);
    if blaster.wait_stall(TOTAL).is_none() {
        d.fail(&format!(
            "{} bytes sent into --delay 2s --max-buffer 256KiB without being blocked",
            blaster.sent.load(Ordering::SeqCst)
        ));
    }
    let rss = d.rss_kib();
    if rss > baseline + 16 * 1024 {
        d.fail(&format!("RSS {rss} KiB while holding delayed data (baseline {baseline} KiB, --max-buffer 256KiB)"));
    }
    let mut r = s.try_clone().unwrap();
    if let Err(e) = check_pattern(&mut r, seed, 256 << 10) {
        d.fail(&format!("the first 256 KiB after the delay: {e}"));
    }
    // Unblock the writer for good: close our side, the writer then fails and stops.
    let _ = s.shutdown(std::net::Shutdown::Both);
    let _ = blaster.handle.join();
    drop(r);
    if !d.is_running() {
        d.fail("the daemon died");
    }
}

for_each_backend!(idle_connections_cost_little);
/// An idle connection costs far less than its buffers (SPEC §4): 900 connections that
/// each echoed once and went quiet add under 4 KiB of RSS apiece, and cost no CPU (no
/// write interest left armed, nothing that wakes the loop): under 0.3 s in 1 s.
fn idle_connections_cost_little(backend: &'static str) {
    const N: usize = 900;
    let Some(d) = Daemon::spawn(backend, &[]) else {
        return;
    };
    let mut warm = d.connect();
    ping(&mut warm, &[b'w'; 64]).unwrap();
    let before = d.rss_kib();
    let mut conns: Vec<_> = (0..N).map(|_| d.connect()).collect();
    for (i, s) in conns.iter_mut().enumerate() {
        ping(s, &[b'i'; 64]).unwrap_or_else(|e| d.fail(&format!("client {i}: {e}")));
    }
    let grown = d.rss_kib().saturating_sub(before);
    if grown > 4 * N as u64 {
        d.fail(&format!(
            "{N} idle connections added {grown} KiB of RSS ({} bytes each)",
            grown * 1024 / N as u64
        ));
    }
    let burned = d.cpu_burned(Duration::from_secs(1));
    if burned > Duration::from_millis(300) {
        d.fail(&format!(
            "{burned:?} of CPU in 1 s with {N} idle connections"
        ));
    }
}

for_each_backend!(reset_while_paused_and_held_does_not_spin);
/// The DESIGN's reason for "empty interest means deregistered": a connection paused at
/// the cap with all its output held by `--delay` wants nothing; when its peer resets,
/// the loop must not wake on the hang-up every turn (under 0.3 s of CPU in 1 s), and the
/// connection is closed once its delayed output meets the reset.
fn reset_while_paused_and_held_does_not_spin(backend: &'static str) {
    let Some(d) = Daemon::spawn(backend, &["--delay", "5s", "--max-buffer", "64KiB"]) else {
        return;
    };
    let s = d.connect();
    let t0 = Instant::now();
    let blaster = blast(&s, fresh_seed(), 64 * MIB);
    if blaster.wait_stall(64 * MIB).is_none() {
        d.fail("a flood into --delay 5s --max-buffer 64KiB was never blocked");
    }
    use nix::sys::socket::{setsockopt, sockopt::Linger};
    setsockopt(
        &s,
        Linger,
        &libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    )
    .unwrap();
    let _ = s.shutdown(std::net::Shutdown::Both); // ends the writer thread
    let _ = blaster.handle.join();
    drop(s); // RST: the daemon's connection is paused and its output all held
    thread::sleep(Duration::from_millis(100));
    let burned = d.cpu_burned(Duration::from_secs(1));
    if t0.elapsed() >= Duration::from_millis(4900) {
        println!("note: machine too slow to measure inside the 5 s delay; skipping the CPU check");
    } else if burned > Duration::from_millis(300) {
        d.fail(&format!(
            "{burned:?} of CPU in 1 s after a reset on a paused, held connection: the loop spins"
        ));
    }
    if let Err(st) = d.wait_stat("open", "0", Duration::from_secs(15)) {
        d.fail(&format!("the reset connection was never closed: {st:?}"));
    }
}
