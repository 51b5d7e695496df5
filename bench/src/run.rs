//! The load itself: connect, then one level-triggered `polling` loop that keeps K messages in
//! flight on every connection, checks every echoed byte and times every round trip.

use std::collections::VecDeque;
use std::io::{self, IsTerminal, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use polling::{Event, Events, PollMode, Poller};

use crate::args::Target;
use crate::pattern::Pattern;

/// What to run (validated command line).
pub struct Config {
    pub target: Target,
    pub connections: usize,
    pub size: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub pipeline: usize,
    pub idle: usize,
    pub max_requests: Option<u64>,
    pub connect_timeout: Duration,
    pub progress: bool,
}

/// What a run measured.
pub struct Outcome {
    /// Requests answered (and checked) in the measured phase.
    pub requests: u64,
    /// Length of the measured phase.
    pub elapsed: Duration,
    /// Round-trip latency of those requests, in nanoseconds.
    pub hist: Histogram<u64>,
    /// Messages whose echo differed from what was sent, or bytes nobody asked for.
    pub mismatches: u64,
    /// Active connections closed or reset by the server during the run.
    pub closed: u64,
    /// Idle connections closed by the server, or idle connections that received data.
    pub idle_closed: u64,
    /// The first error seen, in words.
    pub first_error: Option<String>,
    /// Why the run ended before its time, if it did.
    pub early_stop: Option<String>,
    /// Requests still waiting for their echo when the run ended.
    pub unanswered: u64,
}

impl Outcome {
    pub fn errors(&self) -> u64 {
        self.mismatches + self.closed + self.idle_closed
    }
}

/// A connected, non-blocking stream.
enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Sock {
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => (&*s).read(buf),
            Sock::Unix(s) => (&*s).read(buf),
        }
    }

    fn write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => (&*s).write(buf),
            Sock::Unix(s) => (&*s).write(buf),
        }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Sock::Tcp(s) => s.as_fd(),
            Sock::Unix(s) => s.as_fd(),
        }
    }

    fn raw(&self) -> RawFd {
        self.fd().as_raw_fd()
    }
}

/// Resolved address to connect to.
enum Dest<'a> {
    Tcp(std::net::SocketAddr),
    Unix(&'a Path),
}

fn resolve(target: &Target) -> Result<Dest<'_>, String> {
    match target {
        Target::Unix(p) => Ok(Dest::Unix(p)),
        Target::Tcp(a) => a
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {a}: {e}"))?
            .next()
            .map(Dest::Tcp)
            .ok_or_else(|| format!("cannot resolve {a}: no address")),
    }
}

fn connect(dest: &Dest, timeout: Duration) -> io::Result<Sock> {
    match *dest {
        Dest::Tcp(sa) => {
            let s = TcpStream::connect_timeout(&sa, timeout)?;
            s.set_nodelay(true)?;
            s.set_nonblocking(true)?;
            Ok(Sock::Tcp(s))
        }
        Dest::Unix(path) => connect_unix(path, timeout).map(Sock::Unix),
    }
}

/// A unix-socket connect that cannot hang: non-blocking, retried while the server's backlog is
/// full (EAGAIN), until `timeout`.
fn connect_unix(path: &Path, timeout: Duration) -> io::Result<UnixStream> {
    use nix::errno::Errno;
    use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr};
    let addr = UnixAddr::new(path)?;
    let deadline = Instant::now() + timeout;
    loop {
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        match socket::connect(fd.as_raw_fd(), &addr) {
            Ok(()) => return Ok(UnixStream::from(fd)),
            Err(Errno::EAGAIN) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2))
            }
            Err(Errno::EAGAIN) => return Err(io::ErrorKind::TimedOut.into()),
            Err(e) => return Err(e.into()),
        }
    }
}

/// One active connection.
struct Conn {
    /// `None` once closed.
    sock: Option<Sock>,
    /// Stream position of the next byte to write.
    send_pos: u64,
    /// Bytes of issued messages not yet written.
    unsent: usize,
    /// Stream position of the next byte expected back.
    recv_pos: u64,
    /// Bytes of the oldest outstanding message received so far.
    recv_in_msg: usize,
    /// Issue time of every outstanding message, oldest first.
    sent: VecDeque<Instant>,
    /// The message being received has a wrong byte.
    bad: bool,
    /// Write interest is registered (output pending).
    want_write: bool,
}

/// Counters for the phase in progress (reset when the warmup ends).
struct Counters {
    requests: u64,
    issued: u64,
    hist: Histogram<u64>,
}

struct Run<'a> {
    // Declared first so that it is dropped first: no registered descriptor outlives it.
    poller: Poller,
    conns: Vec<Conn>,
    idle: Vec<Option<Sock>>,
    cfg: &'a Config,
    pattern: Pattern,
    buf: Vec<u8>,
    measuring: bool,
    counters: Counters,
    open: usize,
    mismatches: u64,
    closed: u64,
    idle_closed: u64,
    first_error: Option<String>,
}

/// Connects everything, runs the load, returns what it measured. `Err` is a one-line reason
/// (cannot connect, poller failure).
pub fn run(cfg: &Config) -> Result<Outcome, String> {
    let dest = resolve(&cfg.target)?;
    let poller = Poller::new().map_err(|e| format!("cannot create poller: {e}"))?;

    // Idle connections first, so that the active ones get the higher descriptors (this is what
    // makes poll and select pay for them).
    let mut idle = Vec::with_capacity(cfg.idle);
    for i in 0..cfg.idle {
        let s = connect(&dest, cfg.connect_timeout).map_err(|e| {
            format!(
                "cannot connect to {} (idle connection {} of {}): {e}",
                cfg.target,
                i + 1,
                cfg.idle
            )
        })?;
        idle.push(Some(s));
    }
    let mut conns = Vec::with_capacity(cfg.connections);
    for i in 0..cfg.connections {
        let s = connect(&dest, cfg.connect_timeout).map_err(|e| {
            if cfg.connections == 1 {
                format!("cannot connect to {}: {e}", cfg.target)
            } else {
                format!(
                    "cannot connect to {} (connection {} of {}): {e}",
                    cfg.target,
                    i + 1,
                    cfg.connections
                )
            }
        })?;
        let start = Pattern::start(i);
        conns.push(Conn {
            sock: Some(s),
            send_pos: start,
            unsent: 0,
            recv_pos: start,
            recv_in_msg: 0,
            sent: VecDeque::with_capacity(cfg.pipeline),
            bad: false,
            want_write: false,
        });
    }

    let hist = Histogram::new_with_bounds(1, 3_600_000_000_000, 3)
        .map_err(|e| format!("cannot create histogram: {e}"))?;
    let mut run = Run {
        poller,
        open: conns.len(),
        conns,
        idle,
        cfg,
        pattern: Pattern::new(),
        buf: vec![0; 256 * 1024],
        measuring: false,
        counters: Counters {
            requests: 0,
            issued: 0,
            hist,
        },
        mismatches: 0,
        closed: 0,
        idle_closed: 0,
        first_error: None,
    };
    run.register()
        .map_err(|e| format!("cannot register with poller: {e}"))?;
    run.go()
}

impl Run<'_> {
    fn register(&mut self) -> io::Result<()> {
        let n = self.conns.len();
        for (key, c) in self.conns.iter().enumerate() {
            let fd = c.sock.as_ref().map(Sock::raw).expect("open");
            // SAFETY: every registered descriptor is deleted from the poller before its socket
            // is dropped (see `close` and `close_idle`), and the poller is dropped before any
            // socket still open at the end (field order of `Run`).
            unsafe {
                self.poller
                    .add_with_mode(fd, Event::readable(key), PollMode::Level)?
            };
        }
        for (i, s) in self.idle.iter().enumerate() {
            let fd = s.as_ref().map(Sock::raw).expect("open");
            // SAFETY: as above.
            unsafe {
                self.poller
                    .add_with_mode(fd, Event::readable(n + i), PollMode::Level)?
            };
        }
        Ok(())
    }

    fn go(mut self) -> Result<Outcome, String> {
        let cfg = self.cfg;
        let mut events = Events::with_capacity(NonZeroUsize::new(1024).expect("nonzero"));
        let t0 = Instant::now();
        let warm_end = t0 + cfg.warmup;
        let end = warm_end + cfg.duration;
        let mut measure_start = t0;
        if cfg.warmup.is_zero() {
            self.measuring = true;
        }
        let progress = cfg.progress;
        let tick = Duration::from_millis(500);
        let mut next_tick = t0 + tick;
        let mut last_tick = (t0, 0u64);

        for key in 0..self.conns.len() {
            let k = self.allowance(cfg.pipeline);
            self.issue(key, k, t0);
        }

        let mut early_stop = None;
        let mut now = t0;
        loop {
            if now >= end {
                break;
            }
            if !self.measuring && now >= warm_end {
                self.measuring = true;
                self.counters.requests = 0;
                self.counters.issued = 0;
                self.counters.hist.reset();
                measure_start = now;
                last_tick = (now, 0);
            }
            if self.measuring {
                if let Some(n) = cfg.max_requests {
                    if self.counters.requests >= n {
                        break;
                    }
                }
            }
            if self.open == 0 {
                early_stop = Some("every connection was closed by the server".to_string());
                break;
            }
            let mut wake = if self.measuring { end } else { warm_end };
            if progress {
                wake = wake.min(next_tick);
            }
            let timeout = wake.saturating_duration_since(now);
            events.clear();
            if let Err(e) = self.poller.wait(&mut events, Some(timeout)) {
                return Err(format!("poller wait failed: {e}"));
            }
            for ev in events.iter() {
                self.on_event(ev.key, ev.readable, ev.writable);
            }
            now = Instant::now();
            if progress && now >= next_tick {
                let (t, r) = last_tick;
                let rate = (self.counters.requests - r) as f64 / (now - t).as_secs_f64();
                let phase = if self.measuring { "run   " } else { "warmup" };
                eprint!(
                    "\r\x1b[2K{phase} {:6.1}s  {:>10.0} req/s  errors {}",
                    (now - t0).as_secs_f64(),
                    rate,
                    self.mismatches + self.closed + self.idle_closed
                );
                last_tick = (now, self.counters.requests);
                next_tick = now + tick;
            }
        }
        if progress {
            eprint!("\r\x1b[2K");
        }
        let elapsed = if self.measuring {
            Instant::now().min(end) - measure_start
        } else {
            Duration::ZERO
        };
        Ok(Outcome {
            requests: if self.measuring {
                self.counters.requests
            } else {
                0
            },
            elapsed,
            hist: std::mem::replace(
                &mut self.counters.hist,
                Histogram::new(1).expect("histogram"),
            ),
            mismatches: self.mismatches,
            closed: self.closed,
            idle_closed: self.idle_closed,
            first_error: self.first_error.take(),
            early_stop,
            unanswered: self.conns.iter().map(|c| c.sent.len() as u64).sum(),
        })
    }

    /// How many of `want` new messages may be issued now (--max-requests).
    fn allowance(&mut self, want: usize) -> usize {
        let n = match self.cfg.max_requests {
            Some(max) if self.measuring => {
                (max.saturating_sub(self.counters.issued)).min(want as u64) as usize
            }
            _ => want,
        };
        if self.measuring {
            self.counters.issued += n as u64;
        }
        n
    }

    fn note_error(&mut self, what: String) {
        if self.first_error.is_none() {
            self.first_error = Some(what);
        }
    }

    fn on_event(&mut self, key: usize, readable: bool, writable: bool) {
        if key >= self.conns.len() {
            self.on_idle_event(key - self.conns.len());
            return;
        }
        if self.conns[key].sock.is_none() {
            return;
        }
        if writable && self.conns[key].unsent > 0 {
            self.flush(key);
        }
        if readable && self.conns[key].sock.is_some() {
            self.on_readable(key);
        }
    }

    fn on_idle_event(&mut self, i: usize) {
        let Some(sock) = self.idle[i].as_ref() else {
            return;
        };
        let what = match sock.read(&mut self.buf) {
            Ok(0) => "closed by the server".to_string(),
            Ok(n) => format!("received {n} byte(s) it never asked for"),
            Err(e) if is_transient(&e) => return,
            Err(e) => e.to_string(),
        };
        self.note_error(format!("idle connection {}: {what}", i + 1));
        self.idle_closed += 1;
        if let Some(s) = self.idle[i].take() {
            let _ = self.poller.delete(s.fd());
        }
    }

    fn close(&mut self, key: usize, why: String) {
        self.note_error(format!("connection {}: {why}", key + 1));
        self.closed += 1;
        self.open -= 1;
        let c = &mut self.conns[key];
        c.sent.clear();
        c.unsent = 0;
        if let Some(s) = c.sock.take() {
            let _ = self.poller.delete(s.fd());
        }
    }

    fn on_readable(&mut self, key: usize) {
        let sock = self.conns[key].sock.as_ref().expect("open");
        let n = match sock.read(&mut self.buf) {
            Ok(0) => {
                self.close(key, "closed by the server".into());
                return;
            }
            Ok(n) => n,
            Err(e) if is_transient(&e) => return,
            Err(e) => {
                self.close(key, e.to_string());
                return;
            }
        };
        let now = Instant::now();
        let size = self.cfg.size;
        let mut done = 0;
        let mut completed = 0usize;
        let c = &mut self.conns[key];
        while done < n {
            if c.sent.is_empty() {
                self.mismatches += 1;
                let extra = n - done;
                if self.first_error.is_none() {
                    self.first_error = Some(format!(
                        "connection {}: {extra} byte(s) echoed that were never sent",
                        key + 1
                    ));
                }
                break;
            }
            let take = (size - c.recv_in_msg).min(n - done);
            let chunk = &self.buf[done..done + take];
            if !c.bad {
                if let Some(i) = self.pattern.first_mismatch(c.recv_pos, chunk) {
                    c.bad = true;
                    if self.first_error.is_none() {
                        self.first_error = Some(format!(
                            "connection {}: wrong byte at offset {} of message (got {:#04x}, sent {:#04x})",
                            key + 1,
                            c.recv_in_msg + i,
                            chunk[i],
                            self.pattern.window(c.recv_pos + i as u64, 1)[0]
                        ));
                    }
                }
            }
            c.recv_pos += take as u64;
            c.recv_in_msg += take;
            done += take;
            if c.recv_in_msg == size {
                let sent = c.sent.pop_front().expect("outstanding");
                c.recv_in_msg = 0;
                if c.bad {
                    self.mismatches += 1;
                    c.bad = false;
                } else {
                    self.counters.requests += 1;
                    if self.measuring {
                        let ns = now.duration_since(sent).as_nanos();
                        self.counters
                            .hist
                            .saturating_record(u64::try_from(ns).unwrap_or(u64::MAX));
                    }
                }
                completed += 1;
            }
        }
        if completed > 0 {
            let k = self.allowance(completed);
            self.issue(key, k, now);
        }
    }

    /// Queues `k` new messages on connection `key` and writes what the kernel takes.
    fn issue(&mut self, key: usize, k: usize, now: Instant) {
        if k == 0 {
            return;
        }
        let c = &mut self.conns[key];
        for _ in 0..k {
            c.sent.push_back(now);
        }
        c.unsent += k * self.cfg.size;
        self.flush(key);
    }

    /// Writes pending output; registers write interest only while some is left.
    fn flush(&mut self, key: usize) {
        let c = &mut self.conns[key];
        let Some(sock) = c.sock.as_ref() else {
            return;
        };
        let mut failed = None;
        while c.unsent > 0 {
            let w = self.pattern.window(c.send_pos, c.unsent);
            match sock.write(w) {
                Ok(0) => {
                    failed = Some("write returned 0".to_string());
                    break;
                }
                Ok(n) => {
                    c.send_pos += n as u64;
                    c.unsent -= n;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    failed = Some(e.to_string());
                    break;
                }
            }
        }
        if let Some(why) = failed {
            self.close(key, why);
            return;
        }
        let want = c.unsent > 0;
        if want != c.want_write {
            c.want_write = want;
            let ev = if want {
                Event::all(key)
            } else {
                Event::readable(key)
            };
            if let Err(e) = self.poller.modify_with_mode(sock.fd(), ev, PollMode::Level) {
                self.close(key, format!("poller modify failed: {e}"));
            }
        }
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// Whether the live progress line should be drawn.
pub fn stderr_is_terminal() -> bool {
    io::stderr().is_terminal()
}
