//! The churn load (`--churn`): N slots, each a loop of connect, send SIZE bytes, read them all
//! back (checked), close, and again. One completed cycle is one "request" to the driver: its
//! latency runs from the connect to the last echoed byte, so requests/s is connections/s.
//! What it exercises is the server's per-connection cost: accept, registration, the first
//! read and write, end of input and the close.

use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrStorage, UnixAddr};
use polling::{Event, PollMode, Poller};

use crate::args::Config;
use crate::driver::{self, Load, Meter, Outcome};
use crate::pattern::Pattern;
use crate::sock::{is_transient, resolve, Dest, Sock};
use echo_mux::error::Plain;

/// A unix-socket connect refused for a full backlog (EAGAIN) is tried again this much later.
const RETRY: Duration = Duration::from_millis(1);

/// Where one slot is in its cycle.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No socket: between cycles, or the slot failed for good.
    Idle,
    /// A non-blocking connect is in progress (registered for writable).
    Connecting,
    /// Connected: sending the message, then reading it back.
    Echoing,
}

struct Slot {
    sock: Option<Sock>,
    phase: Phase,
    /// When this cycle's connect began.
    started: Instant,
    /// Stream position of this cycle's message (a new stretch of the pattern every cycle).
    pos: u64,
    sent: usize,
    received: usize,
    /// A wrong byte came back in this cycle.
    bad: bool,
    /// Registered for writable (connecting, or the message is not all sent).
    want_write: bool,
}

struct Churn<'a> {
    // Declared first so that it is dropped first: no registered descriptor outlives it.
    poller: Poller,
    slots: Vec<Slot>,
    dest: Dest<'a>,
    cfg: &'a Config,
    pattern: Pattern,
    buf: Vec<u8>,
    /// Slots whose unix connect met a full backlog, to try again at `retry_at`.
    retry: Vec<usize>,
    retry_at: Option<Instant>,
    /// Slots still cycling (a slot whose connect fails stops).
    open: usize,
}

/// Runs the churn load; `Err` is a one-line reason (cannot resolve, poller failure).
pub fn run(cfg: &Config) -> Result<Outcome, String> {
    let dest = resolve(&cfg.target)?;
    let poller = Poller::new().map_err(|e| format!("cannot create poller: {}", Plain(&e)))?;
    let now = Instant::now();
    let slots = (0..cfg.connections)
        .map(|i| Slot {
            sock: None,
            phase: Phase::Idle,
            started: now,
            pos: Pattern::start(i),
            sent: 0,
            received: 0,
            bad: false,
            want_write: false,
        })
        .collect();
    let mut load = Churn {
        poller,
        open: cfg.connections,
        slots,
        dest,
        cfg,
        pattern: Pattern::new(),
        buf: vec![0; cfg.size.min(256 * 1024)],
        retry: Vec::new(),
        retry_at: None,
    };
    driver::drive(&mut load, cfg)
}

impl Load for Churn<'_> {
    fn poller(&self) -> &Poller {
        &self.poller
    }

    fn start(&mut self, m: &mut Meter, now: Instant) {
        for key in 0..self.slots.len() {
            self.next_cycle(m, key, now);
        }
    }

    fn on_event(&mut self, m: &mut Meter, key: usize, readable: bool, writable: bool) {
        match self.slots[key].phase {
            Phase::Idle => {}
            Phase::Connecting if writable || readable => self.connected(m, key),
            Phase::Connecting => {}
            Phase::Echoing => {
                if writable && self.slots[key].want_write {
                    self.send(m, key);
                }
                if readable && self.slots[key].phase == Phase::Echoing {
                    self.receive(m, key);
                }
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.retry_at
    }

    fn on_time(&mut self, m: &mut Meter, now: Instant) {
        if self.retry_at.is_some_and(|t| t <= now) {
            self.retry_at = None;
            for key in std::mem::take(&mut self.retry) {
                self.connect(m, key, now);
            }
        }
    }

    fn alive(&self) -> bool {
        self.open > 0
    }

    fn dead_reason(&self) -> &'static str {
        "every connection slot failed to connect"
    }

    fn unanswered(&self) -> u64 {
        let busy = |s: &&Slot| s.phase != Phase::Idle;
        self.slots.iter().filter(busy).count() as u64
    }
}

impl Churn<'_> {
    /// Starts the slot's next cycle if --max-requests allows one.
    fn next_cycle(&mut self, m: &mut Meter, key: usize, now: Instant) {
        if m.allowance(1) == 1 {
            let s = &mut self.slots[key];
            (s.sent, s.received, s.bad, s.started) = (0, 0, false, now);
            self.connect(m, key, now);
        }
    }

    /// A non-blocking connect; on loopback it often completes at once.
    fn connect(&mut self, m: &mut Meter, key: usize, now: Instant) {
        let started = match start_connect(&self.dest) {
            Ok(started) => started,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // A unix listener's backlog is full: no socket to wait on, try again shortly.
                self.retry.push(key);
                self.retry_at.get_or_insert(now + RETRY);
                return;
            }
            Err(e) => return self.fail(m, key, format!("cannot connect: {}", Plain(&e))),
        };
        let (sock, done) = started;
        let fd = sock.raw();
        let s = &mut self.slots[key];
        s.sock = Some(sock);
        s.want_write = true;
        s.phase = Phase::Connecting;
        // SAFETY: the descriptor is deleted from the poller before its socket is dropped (see
        // `end_cycle` and `fail`), and the poller is dropped first at the end (field order).
        if let Err(e) = unsafe {
            self.poller
                .add_with_mode(fd, Event::writable(key), PollMode::Level)
        } {
            return self.fail(m, key, format!("poller add failed: {}", Plain(&e)));
        }
        if done {
            self.connected(m, key);
        }
    }

    /// The connect finished (or failed: SO_ERROR says which); send the message.
    fn connected(&mut self, m: &mut Meter, key: usize) {
        let Some(sock) = self.slots[key].sock.as_ref() else {
            return;
        };
        if let Err(e) = socket::getsockopt(&sock.fd(), socket::sockopt::SocketError)
            .map_err(io::Error::from)
            .and_then(|code| match code {
                0 => Ok(()),
                code => Err(io::Error::from_raw_os_error(code)),
            })
        {
            return self.fail(m, key, format!("cannot connect: {}", Plain(&e)));
        }
        if let Some(version) = self.cfg.proxy_header {
            if let Err(e) = send_header(sock, version) {
                let why = format!("cannot send the PROXY header: {}", Plain(&e));
                return self.end_cycle(m, key, Some(why));
            }
        }
        self.slots[key].phase = Phase::Echoing;
        self.send(m, key);
    }

    /// Writes what is left of the message; wants writable only while some is.
    fn send(&mut self, m: &mut Meter, key: usize) {
        let size = self.cfg.size;
        let s = &mut self.slots[key];
        let Some(sock) = s.sock.as_ref() else {
            return;
        };
        while s.sent < size {
            let w = self.pattern.window(s.pos + s.sent as u64, size - s.sent);
            match sock.write(w) {
                Ok(0) => return self.end_cycle(m, key, Some("write returned 0".into())),
                Ok(n) => s.sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    return self.end_cycle(m, key, Some(format!("write failed: {}", Plain(&e))))
                }
            }
        }
        let want_write = s.sent < size;
        if want_write != s.want_write {
            s.want_write = want_write;
            let ev = if want_write {
                Event::all(key)
            } else {
                Event::readable(key)
            };
            if let Err(e) = self.poller.modify_with_mode(sock.fd(), ev, PollMode::Level) {
                self.end_cycle(m, key, Some(format!("poller modify failed: {}", Plain(&e))));
            }
        }
    }

    /// One read of the echo; the cycle ends when all of it is back.
    fn receive(&mut self, m: &mut Meter, key: usize) {
        let size = self.cfg.size;
        let s = &mut self.slots[key];
        let Some(sock) = s.sock.as_ref() else {
            return;
        };
        let want = (size - s.received).min(self.buf.len());
        let n = match sock.read(&mut self.buf[..want]) {
            Ok(0) => {
                let got = s.received;
                let why = format!("closed by the server after echoing {got} of {size} bytes");
                return self.end_cycle(m, key, Some(why));
            }
            Ok(n) => n,
            Err(e) if is_transient(&e) => return,
            Err(e) => return self.end_cycle(m, key, Some(format!("read failed: {}", Plain(&e)))),
        };
        let chunk = &self.buf[..n];
        if !s.bad {
            if let Some(i) = self
                .pattern
                .first_mismatch(s.pos + s.received as u64, chunk)
            {
                s.bad = true;
                let at = s.received + i;
                m.note_error(|| format!("connection slot {}: wrong byte at offset {at}", key + 1));
            }
        }
        s.received += n;
        if s.received == size {
            self.end_cycle(m, key, None);
        }
    }

    /// Closes the slot's socket and counts the cycle (`why`: it failed), then starts the next.
    fn end_cycle(&mut self, m: &mut Meter, key: usize, why: Option<String>) {
        let now = Instant::now();
        let size = self.cfg.size as u64;
        let s = &mut self.slots[key];
        if let Some(sock) = s.sock.take() {
            let _ = self.poller.delete(sock.fd());
        }
        s.phase = Phase::Idle;
        s.pos += size;
        match why {
            None if !s.bad => m.answered(s.started, now),
            None => {
                m.errors.mismatches += 1;
                m.settled_badly();
            }
            Some(why) => {
                m.note_error(|| format!("connection slot {}: {why}", key + 1));
                m.errors.closed += 1;
                m.settled_badly();
            }
        }
        self.next_cycle(m, key, now);
    }

    /// The slot cannot connect: count it and stop the slot.
    fn fail(&mut self, m: &mut Meter, key: usize, why: String) {
        let s = &mut self.slots[key];
        if let Some(sock) = s.sock.take() {
            let _ = self.poller.delete(sock.fd());
        }
        s.phase = Phase::Idle;
        m.note_error(|| format!("connection slot {}: {why}", key + 1));
        m.errors.closed += 1;
        m.settled_badly();
        self.open -= 1;
    }
}

/// `--proxy-header`: the header goes out in a write of its own, as a balancer sends it at
/// connect, before the client's data. A fresh connection's send buffer takes it whole.
fn send_header(sock: &Sock, version: crate::args::ProxyHeader) -> io::Result<()> {
    let Sock::Tcp(tcp) = sock else {
        return Ok(());
    };
    let header = crate::sock::proxy_header(version, tcp.local_addr()?, tcp.peer_addr()?);
    match sock.write(&header)? {
        n if n == header.len() => Ok(()),
        _ => Err(io::ErrorKind::WriteZero.into()),
    }
}

/// A non-blocking socket connecting to `dest`: the socket and whether the connect is already
/// complete. `WouldBlock` means a unix listener's backlog is full (no socket is kept).
fn start_connect(dest: &Dest) -> io::Result<(Sock, bool)> {
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    match *dest {
        Dest::Tcp(sa) => {
            let family = if sa.is_ipv4() {
                AddressFamily::Inet
            } else {
                AddressFamily::Inet6
            };
            let fd = socket::socket(family, SockType::Stream, flags, None)?;
            socket::setsockopt(&fd, socket::sockopt::TcpNoDelay, &true)?;
            let done = match socket::connect(fd.as_raw_fd(), &SockaddrStorage::from(sa)) {
                Ok(()) => true,
                Err(Errno::EINPROGRESS) | Err(Errno::EINTR) => false,
                Err(e) => return Err(e.into()),
            };
            Ok((Sock::Tcp(std::net::TcpStream::from(fd)), done))
        }
        Dest::Unix(path) => {
            let fd = socket::socket(AddressFamily::Unix, SockType::Stream, flags, None)?;
            match socket::connect(fd.as_raw_fd(), &UnixAddr::new(path)?) {
                Ok(()) => Ok((Sock::Unix(std::os::unix::net::UnixStream::from(fd)), true)),
                Err(Errno::EAGAIN) => Err(io::ErrorKind::WouldBlock.into()),
                Err(e) => Err(e.into()),
            }
        }
    }
}
