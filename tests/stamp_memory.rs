//! Stamp mode under `--delay` keeps one client within about `--max-buffer` (SPEC §4, issue 8
//! defect 8): held input counts at what its replies will cost (an empty line, 1 byte in,
//! becomes a 35-byte reply), in the loop and in the drain's release alike.

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::idle_output::small_window_client;
use crate::util::Daemon;

/// `n` connections, each with a thread writing empty lines and never reading. Their
/// receive windows are small, so the replies stay in the daemon (a client's kernel buffer
/// would otherwise absorb megabytes of them, and hide the daemon's share).
fn flood(d: &Daemon, n: usize) -> (Vec<TcpStream>, Vec<thread::JoinHandle<()>>) {
    let mut socks = Vec::new();
    let mut writers = Vec::new();
    for _ in 0..n {
        let s = small_window_client(d);
        let mut w = s.try_clone().unwrap();
        writers.push(thread::spawn(move || {
            let lines = vec![b'\n'; 64 * 1024];
            // Ends when the test shuts the socket down (or the daemon closes it).
            while w.write_all(&lines).is_ok() {}
        }));
        socks.push(s);
    }
    (socks, writers)
}

fn stop(socks: Vec<TcpStream>, writers: Vec<thread::JoinHandle<()>>) {
    for s in &socks {
        let _ = s.shutdown(Shutdown::Both);
    }
    for w in writers {
        let _ = w.join();
    }
}

/// The highest RSS (KiB) seen while sampling for `span`.
fn peak_rss(d: &Daemon, span: Duration) -> u64 {
    let end = Instant::now() + span;
    let mut peak = 0;
    while Instant::now() < end {
        peak = peak.max(d.rss_kib());
        thread::sleep(Duration::from_millis(50));
    }
    peak
}

for_each_backend!(stamp_delay_flood_stays_within_max_buffer);
/// 20 clients flood empty lines and never read, `--mode stamp --delay 200ms --max-buffer
/// 64KiB`: the daemon grows by at most a few MiB while the replies pile up (20 × 64 KiB is
/// 1.25 MiB; 12 MiB leaves room for allocator slack). It grew by 35-48 MiB before.
fn stamp_delay_flood_stays_within_max_buffer(backend: &'static str) {
    const MAX_GROWTH_KIB: u64 = 12 * 1024;
    let args = [
        "--mode",
        "stamp",
        "--delay",
        "200ms",
        "--max-buffer",
        "64KiB",
    ];
    let Some(d) = Daemon::spawn(backend, &args) else {
        return;
    };
    let base = d.rss_kib();
    let (socks, writers) = flood(&d, 20);
    let peak = peak_rss(&d, Duration::from_secs(4));
    stop(socks, writers);
    if peak.saturating_sub(base) > MAX_GROWTH_KIB {
        d.fail(&format!(
            "RSS grew from {base} KiB to {peak} KiB (more than {MAX_GROWTH_KIB} KiB) for \
             20 clients at --max-buffer 64KiB"
        ));
    }
}

for_each_backend!(drain_release_stays_within_max_buffer);
/// 5 clients flood empty lines under `--delay 1h --max-buffer 1MiB`, then SIGTERM: the
/// drain releases every held line at once, and that release stays within the bound too
/// (5 × 1 MiB, 24 MiB with slack; a release of 1 MiB of empty lines was 35 MiB each).
fn drain_release_stays_within_max_buffer(backend: &'static str) {
    const MAX_GROWTH_KIB: u64 = 24 * 1024;
    let args = [
        "--mode",
        "stamp",
        "--delay",
        "1h",
        "--max-buffer",
        "1MiB",
        "--shutdown-timeout",
        "2s",
    ];
    let Some(mut d) = Daemon::spawn(backend, &args) else {
        return;
    };
    let base = d.rss_kib();
    let (socks, writers) = flood(&d, 5);
    let before = peak_rss(&d, Duration::from_millis(1500));
    let mark = d.mark();
    d.signal(Signal::SIGTERM);
    d.expect_line(mark, "draining", Duration::from_secs(15));
    let after = peak_rss(&d, Duration::from_millis(1000));
    stop(socks, writers);
    let peak = before.max(after);
    if peak.saturating_sub(base) > MAX_GROWTH_KIB {
        d.fail(&format!(
            "RSS grew from {base} KiB to {before} KiB while held and {after} KiB after the \
             drain's release (more than {MAX_GROWTH_KIB} KiB) for 5 clients"
        ));
    }
    if !d.wait_exit(Duration::from_secs(10)).success() {
        d.fail("want exit 0 after the drain");
    }
}
