//! Raw data streaming both ways across 20 reloads in a row: every byte back, in order, no
//! duplicate, no reset; one client does not read for a while, so its output is pending in
//! the daemon (and the kernel's buffers are full) across several reloads.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use super::{reload, stat};
use crate::util::Daemon;

const RELOADS: usize = 20;
const STEADY: usize = 4;

/// Byte `i` of stream `seed`: a position-keyed pattern, so a lost, repeated or reordered
/// byte shows at the first position where it happens.
fn pat(seed: u64, i: u64) -> u8 {
    ((i ^ (seed << 40)).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8
}

fn fill(seed: u64, from: u64, buf: &mut [u8]) {
    for (k, b) in buf.iter_mut().enumerate() {
        *b = pat(seed, from + k as u64);
    }
}

/// Read everything until EOF, checking each byte; returns how many came.
fn read_all(mut s: TcpStream, seed: u64) -> Result<u64, String> {
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut at = 0u64;
    let mut buf = vec![0u8; 65536];
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) => return Ok(at),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("client {seed}: read after {at} bytes: {e}")),
        };
        for (k, &b) in buf[..n].iter().enumerate() {
            let i = at + k as u64;
            if b != pat(seed, i) {
                // Unblock the writer at once rather than at its timeout.
                let _ = s.shutdown(Shutdown::Both);
                return Err(format!("client {seed}: byte {i} is wrong"));
            }
        }
        at += n as u64;
    }
}

/// Write chunks of varied sizes until `stop`, then at least `min` bytes, then half-close;
/// returns how many were written.
fn write_until(
    mut s: TcpStream,
    seed: u64,
    stop: Arc<AtomicBool>,
    min: u64,
) -> Result<u64, String> {
    let mut at = 0u64;
    let sizes = [1usize, 7, 100, 1500, 4096, 65536, 300, 20_000];
    let mut buf = vec![0u8; 65536];
    let mut k = seed as usize;
    while !stop.load(Ordering::Relaxed) || at < min {
        let n = sizes[k % sizes.len()];
        k += 1;
        fill(seed, at, &mut buf[..n]);
        s.write_all(&buf[..n])
            .map_err(|e| format!("client {seed}: write after {at} bytes: {e}"))?;
        at += n as u64;
        if k.is_multiple_of(16) {
            thread::sleep(Duration::from_millis(2));
        }
    }
    s.shutdown(Shutdown::Write)
        .map_err(|e| format!("client {seed}: shutdown: {e}"))?;
    Ok(at)
}

for_each_backend!(twenty_reloads_lose_no_byte);
fn twenty_reloads_lose_no_byte(backend: &'static str) {
    let Some(d) = Daemon::spawn(backend, &["--max-buffer", "256KiB"]) else {
        return;
    };
    // The slow reader first: 48 MiB written, nothing read until the 10th reload. Its
    // writer blocks once the kernel's buffers both ways are full and the daemon has paused
    // it at --max-buffer with that much output pending, which the reloads then carry.
    let slow_seed = 99;
    let slow = d.connect();
    slow.set_write_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let slow_r = slow.try_clone().unwrap();
    let slow_w = thread::spawn({
        let stop = Arc::new(AtomicBool::new(true));
        move || write_until(slow, slow_seed, stop, 48 << 20)
    });
    let st = d.stats_until(|st| stat(st, "bytes_in") >= stat(st, "bytes_out") + (256 << 10));
    if stat(&st, "bytes_in") < stat(&st, "bytes_out") + (256 << 10) {
        d.fail(&format!("no output pending for the slow reader: {st:?}"));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    for c in 0..STEADY as u64 {
        let s = d.connect();
        s.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
        let r = s.try_clone().unwrap();
        let stop = Arc::clone(&stop);
        writers.push(thread::spawn(move || write_until(s, c + 1, stop, 0)));
        readers.push(Some(thread::spawn(move || read_all(r, c + 1))));
    }
    let mut slow_reader = None;
    for i in 1..=RELOADS {
        let line = reload(&d);
        if !line.contains(&format!("reload {i})")) {
            d.fail(&format!("reload {i} logged {line:?}"));
        }
        if i == RELOADS / 2 {
            let r = slow_r.try_clone().unwrap();
            slow_reader = Some(thread::spawn(move || read_all(r, slow_seed)));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut outcome = Vec::new();
    for (w, r) in writers.into_iter().zip(readers.iter_mut()) {
        let sent = w.join().unwrap();
        let back = r.take().unwrap().join().unwrap();
        outcome.push((sent, back));
    }
    outcome.push((slow_w.join().unwrap(), slow_reader.unwrap().join().unwrap()));
    for (sent, back) in &outcome {
        match (sent, back) {
            (Ok(s), Ok(b)) if s == b && *s > 0 => {}
            _ => d.fail(&format!("sent and echoed: {outcome:?}")),
        }
    }
    let st = d.stats();
    if stat(&st, "accepted") != STEADY as u64 + 1 || stat(&st, "reloads") != RELOADS as u64 {
        d.fail(&format!(
            "want accepted={} reloads={RELOADS}: {st:?}",
            STEADY + 1
        ));
    }
    let total: u64 = outcome.iter().map(|(s, _)| *s.as_ref().unwrap()).sum();
    if stat(&st, "bytes_in") != total || stat(&st, "bytes_out") != total {
        d.fail(&format!("want bytes_in = bytes_out = {total}: {st:?}"));
    }
}
