//! Client-side helpers: connections with timeouts, reproducible payloads, exact-echo checks.
//!
//! Payloads come from a seeded generator, so a reader can check a stream of any length
//! against what the writer sent without either side keeping it in memory.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::socket::{
    bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
};

/// Read and write timeout on every test socket: a stuck daemon fails the test, never hangs it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// Run `op` again while it fails with EINTR. Reads and writes on sockets with a timeout
/// (all of ours) fail with EINTR whenever this process is interrupted, even without a
/// handler of ours: a stop and continue, or a handler installed by another test in this
/// process without SA_RESTART (signal(7), "Interruption of system calls").
pub fn retry<T>(mut op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match op() {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Connect to `addr` with [`IO_TIMEOUT`] on connect, reads and writes.
pub fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    super::lift_nofile();
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Connect to the unix socket at `path` with [`IO_TIMEOUT`] on reads and writes.
pub fn connect_unix(path: &Path) -> io::Result<UnixStream> {
    let s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

/// Can this machine listen on `[::1]`? (Tests of IPv6 skip, with a note, where it cannot.)
pub fn ipv6_loopback_works() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

/// A seed that differs between runs and between calls (logged by failing checks).
pub fn fresh_seed() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    ((t.as_nanos() as u64) ^ N.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)) | 1
}

/// An endless, reproducible pseudo-random byte stream (xorshift64*).
pub struct Pattern {
    state: u64,
    word: [u8; 8],
    used: usize,
}

impl Pattern {
    pub fn new(seed: u64) -> Self {
        Pattern {
            state: seed | 1,
            word: [0; 8],
            used: 8,
        }
    }

    /// A number in `lo..hi` (consumes the stream; use a separate Pattern for sizes).
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        let mut b = [0u8; 8];
        self.fill(&mut b);
        lo + (u64::from_le_bytes(b) % (hi - lo) as u64) as usize
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            if self.used == 8 {
                self.state ^= self.state >> 12;
                self.state ^= self.state << 25;
                self.state ^= self.state >> 27;
                self.word = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
                self.used = 0;
            }
            *b = self.word[self.used];
            self.used += 1;
        }
    }
}

/// A stream socket the helpers can split into a writer and a reader half.
pub trait Duplex: Read + Write + Send + Sized + 'static {
    fn dup(&self) -> io::Result<Self>;
    fn shutdown_write(&self) -> io::Result<()>;
}

impl Duplex for TcpStream {
    fn dup(&self) -> io::Result<Self> {
        self.try_clone()
    }
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

impl Duplex for UnixStream {
    fn dup(&self) -> io::Result<Self> {
        self.try_clone()
    }
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

/// Write `len` bytes of `Pattern::new(seed)` in chunks of at most 64 KiB.
pub fn send_pattern(w: &mut impl Write, seed: u64, len: usize) -> io::Result<()> {
    let mut p = Pattern::new(seed);
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len());
        p.fill(&mut buf[..n]);
        w.write_all(&buf[..n])?;
        left -= n;
    }
    Ok(())
}

/// Read exactly `len` bytes and check them against `Pattern::new(seed)`.
pub fn check_pattern(r: &mut impl Read, seed: u64, len: usize) -> Result<(), String> {
    let mut p = Pattern::new(seed);
    let mut got = vec![0u8; 64 * 1024];
    let mut want = vec![0u8; 64 * 1024];
    let mut done = 0;
    while done < len {
        let cap = (len - done).min(got.len());
        let n = match retry(|| r.read(&mut got[..cap])) {
            Ok(0) => return Err(format!("EOF after {done} of {len} bytes (seed {seed:#x})")),
            Ok(n) => n,
            Err(e) => {
                return Err(format!(
                    "read after {done} of {len} bytes (seed {seed:#x}): {e}"
                ))
            }
        };
        p.fill(&mut want[..n]);
        if let Some(i) = (0..n).find(|&i| got[i] != want[i]) {
            return Err(format!(
                "byte {} of {len} differs: got {:#04x}, sent {:#04x} (seed {seed:#x})",
                done + i,
                got[i],
                want[i]
            ));
        }
        done += n;
    }
    Ok(())
}

/// Send `len` pattern bytes from a writer thread while this thread reads them back and
/// checks them, so neither side can deadlock on full buffers. With `half_close`, the writer
/// then shuts down its side and the reader expects a clean EOF after the last byte.
pub fn echo_exact<S: Duplex>(s: &S, seed: u64, len: usize, half_close: bool) -> Result<(), String> {
    let mut w = s.dup().map_err(|e| format!("dup: {e}"))?;
    let writer = thread::spawn(move || -> io::Result<()> {
        send_pattern(&mut w, seed, len)?;
        if half_close {
            w.shutdown_write()?;
        }
        Ok(())
    });
    let mut r = s.dup().map_err(|e| format!("dup: {e}"))?;
    let read = check_pattern(&mut r, seed, len);
    let wrote = writer.join().unwrap();
    read?;
    wrote.map_err(|e| format!("write (seed {seed:#x}): {e}"))?;
    if half_close {
        expect_eof(&mut r).map_err(|e| format!("after the echo of a half-closed stream: {e}"))?;
    }
    Ok(())
}

/// The next read must be a clean end of stream.
pub fn expect_eof(r: &mut impl Read) -> Result<(), String> {
    let mut b = [0u8; 256];
    match retry(|| r.read(&mut b)) {
        Ok(0) => Ok(()),
        Ok(n) => Err(format!("expected EOF, got {n} more bytes: {:?}", &b[..n])),
        Err(e) => Err(format!("expected EOF, got error: {e}")),
    }
}

/// What the server did with a connection we are waiting on.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It sent these bytes.
    Data(Vec<u8>),
    /// It closed (EOF, or a reset).
    Closed,
    /// Nothing happened within the timeout.
    Silent,
}

/// Wait up to `timeout` for data or a close on `s`.
pub fn outcome(s: &TcpStream, timeout: Duration) -> Outcome {
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 4096];
    let res = retry(|| (&*s).read(&mut buf));
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    match res {
        Ok(0) => Outcome::Closed,
        Ok(n) => Outcome::Data(buf[..n].to_vec()),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            Outcome::Silent
        }
        Err(_) => Outcome::Closed,
    }
}

/// Send `msg` and read exactly its length back; the echoed bytes.
pub fn ping(mut s: impl Read + Write, msg: &[u8]) -> io::Result<Vec<u8>> {
    s.write_all(msg)?;
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back)?;
    Ok(back)
}

/// Read until `want` bytes arrived or the stream ends; returns what came and when the last
/// byte did (relative to `since`).
pub fn read_n(s: &mut impl Read, want: usize, since: Instant) -> (Vec<u8>, Duration) {
    let mut out = Vec::with_capacity(want);
    let mut buf = [0u8; 4096];
    while out.len() < want {
        match retry(|| s.read(&mut buf[..(want - out.len()).min(4096)])) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    (out, since.elapsed())
}

/// Read up to and including the next `\n`; on EOF or an error first, a message saying
/// what came, what ended it and after how long.
pub fn read_line(mut s: impl Read) -> Result<Vec<u8>, String> {
    let t0 = Instant::now();
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\n") {
        match retry(|| s.read(&mut b)) {
            Ok(1) => line.push(b[0]),
            Ok(_) => {
                return Err(format!(
                    "EOF after {:?} of a line, {:?} in",
                    String::from_utf8_lossy(&line),
                    t0.elapsed()
                ))
            }
            Err(e) => {
                return Err(format!(
                    "{e} after {:?} of a line, {:?} in",
                    String::from_utf8_lossy(&line),
                    t0.elapsed()
                ))
            }
        }
    }
    Ok(line)
}

/// A client connected from `source` (a loopback address such as 127.0.0.3) to `to`.
pub fn connect_from(source: Ipv4Addr, to: SocketAddr) -> io::Result<TcpStream> {
    super::lift_nofile();
    let fd: OwnedFd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // Pick the port at connect time, per destination: thousands of binds to port 0 on one
    // source address would otherwise run out of ports while earlier ones sit in TIME_WAIT.
    setsockopt(&fd, sockopt::IpBindAddressNoPort, &true)?;
    bind(
        fd.as_raw_fd(),
        &SockaddrIn::from(SocketAddrV4::new(source, 0)),
    )?;
    let SocketAddr::V4(to) = to else {
        panic!("{to} is not IPv4")
    };
    nix::sys::socket::connect(fd.as_raw_fd(), &SockaddrIn::from(to))?;
    let s = TcpStream::from(fd);
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    s.set_nodelay(true)?;
    Ok(s)
}
