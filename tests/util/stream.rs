//! Clients that stream raw data without pause until told to stop, for the reload tests: each
//! has a writer thread (pattern bytes in chunks of varied sizes, pipelined: it never waits for
//! an echo) and a reader thread that checks every byte against the pattern as it arrives.
//! A slow reader reads a little at a time, so the daemon holds output for it (the kernel's
//! buffers full). [`Streams::finish`] stops the writers, half-closes, and checks that every
//! byte sent came back, in order, then a clean end of stream: no reset, no gap, no extra.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::client::{connect, fresh_seed, Pattern, IO_TIMEOUT};

/// One streaming client.
struct Stream {
    seed: u64,
    sent: Arc<AtomicU64>,
    writer: JoinHandle<Result<u64, String>>,
    reader: JoinHandle<Result<u64, String>>,
    stream: TcpStream,
}

/// Several streaming clients and their stop flag.
pub struct Streams {
    stop: Arc<AtomicBool>,
    all: Vec<Stream>,
}

impl Streams {
    /// `fast` clients reading as fast as they can and `slow` ones reading 4 KiB every 20 ms,
    /// all to `addr`.
    pub fn start(addr: SocketAddr, fast: usize, slow: usize) -> Streams {
        let stop = Arc::new(AtomicBool::new(false));
        let all = (0..fast + slow)
            .map(|i| Stream::start(addr, Arc::clone(&stop), i >= fast))
            .collect();
        Streams { stop, all }
    }

    /// Bytes every client has sent so far, summed.
    pub fn sent(&self) -> u64 {
        self.all
            .iter()
            .map(|s| s.sent.load(Ordering::Relaxed))
            .sum()
    }

    /// The local addresses of the clients (to find which worker serves each).
    pub fn streams(&self) -> Vec<&TcpStream> {
        self.all.iter().map(|s| &s.stream).collect()
    }

    /// Stop sending, half-close, and check everything came back. `Err` names each failure.
    pub fn finish(self) -> Result<u64, String> {
        self.stop.store(true, Ordering::Relaxed);
        let mut errors = Vec::new();
        let mut total = 0;
        for s in self.all {
            let sent = s.writer.join().unwrap();
            let _ = s.stream.shutdown(Shutdown::Write);
            let got = s.reader.join().unwrap();
            match (sent, got) {
                (Ok(sent), Ok(got)) if sent == got => total += got,
                (Ok(sent), Ok(got)) => errors.push(format!(
                    "seed {:#x}: sent {sent} bytes, {got} came back",
                    s.seed
                )),
                (sent, got) => errors.push(format!("seed {:#x}: {sent:?} / {got:?}", s.seed)),
            }
        }
        if errors.is_empty() {
            Ok(total)
        } else {
            Err(errors.join("\n"))
        }
    }
}

impl Stream {
    fn start(addr: SocketAddr, stop: Arc<AtomicBool>, slow: bool) -> Stream {
        let stream = connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        let seed = fresh_seed();
        let sent = Arc::new(AtomicU64::new(0));
        let mut w = stream.try_clone().unwrap();
        let stop_writing = Arc::clone(&stop);
        let counter = Arc::clone(&sent);
        let writer = thread::spawn(move || {
            let mut data = Pattern::new(seed);
            let mut sizes = Pattern::new(seed ^ 0x5555);
            let mut buf = vec![0u8; 256 * 1024];
            let mut total = 0u64;
            while !stop_writing.load(Ordering::Relaxed) {
                // 1 byte to 256 KiB, most of them small.
                let n = match sizes.range(0, 4) {
                    0 => sizes.range(1, 16),
                    1 => sizes.range(16, 1500),
                    2 => sizes.range(1500, 32 * 1024),
                    _ => sizes.range(32 * 1024, 256 * 1024),
                };
                data.fill(&mut buf[..n]);
                w.write_all(&buf[..n])
                    .map_err(|e| format!("write after {total} bytes: {e}"))?;
                total += n as u64;
                counter.store(total, Ordering::Relaxed);
                // Pipelined but not flat out: the machine is shared.
                thread::sleep(Duration::from_millis(if slow { 5 } else { 1 }));
            }
            Ok(total)
        });
        let mut r = stream.try_clone().unwrap();
        let stopped = Arc::clone(&stop);
        let reader = thread::spawn(move || {
            let mut want = Pattern::new(seed);
            let mut got = vec![0u8; 64 * 1024];
            let mut expect = vec![0u8; 64 * 1024];
            let mut total = 0u64;
            loop {
                // Slow until the end: then the rest is read at full speed.
                let slow = slow && !stopped.load(Ordering::Relaxed);
                let cap = if slow { 4096 } else { got.len() };
                let n = match r.read(&mut got[..cap]) {
                    Ok(0) => return Ok(total),
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(format!("read after {total} bytes: {e}")),
                };
                want.fill(&mut expect[..n]);
                if let Some(i) = (0..n).find(|&i| got[i] != expect[i]) {
                    return Err(format!("byte {} differs", total + i as u64));
                }
                total += n as u64;
                if slow {
                    thread::sleep(Duration::from_millis(20));
                }
            }
        });
        Stream {
            seed,
            sent,
            writer,
            reader,
            stream,
        }
    }
}
