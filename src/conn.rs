//! One client connection: its socket, pending output, held (delayed) input and what it wants
//! from the poller. Handlers never fail upward: a peer's I/O error becomes [`Step::Close`]
//! plus a debug line, so a bad client can never end the server.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::buffer::OutBuf;
use crate::config::Mode;
use crate::echo::{Clock, Stamper};
use crate::reactor::{Backend, Interest, Token};
use crate::server::Stats;
use crate::sys;
use crate::timer::later;

/// Bytes read from one connection per readiness event at most, so that one fast sender
/// cannot starve the others (level-triggered: the rest is reported on the next turn).
const READ_BUDGET: usize = 256 * 1024;

/// The longest stamp-mode reply per input byte: an empty line "\n" becomes
/// `Echo=> at Sun Jun 18 22:44:55 2000\n`. Reads are sized so replies fit under the cap.
const STAMP_GROWTH: usize = 35;

/// What one held chunk costs beyond its bytes (queue entry and allocator overhead). Charged
/// to `--max-buffer`, so that a client trickling tiny segments under `--delay` cannot make
/// the bookkeeping cost tens of times the cap.
const HELD_OVERHEAD: usize = std::mem::size_of::<Held>() + 32;

/// What the server should do with a connection after a handler ran.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Step {
    /// Keep it (and bring its registered interest up to date).
    Keep,
    Close,
}

/// Per-turn context lent to the handlers by the server.
pub struct Ctx<'a> {
    pub mode: Mode,
    /// How long input is held before it is answered; zero while draining.
    pub delay: Duration,
    pub max_buffer: usize,
    /// The time the current turn started.
    pub now: Instant,
    /// Formats the ctime text at most once a second, for every connection.
    pub clock: &'a mut Clock,
    pub stats: &'a mut Stats,
}

/// A chunk of input waiting out `--delay`.
struct Held {
    due: Instant,
    bytes: Vec<u8>,
}

pub struct Conn {
    fd: OwnedFd,
    /// Unique for the life of the server: timers name a connection by slot *and* id.
    pub id: u64,
    out: OutBuf,
    held: VecDeque<Held>,
    /// Bytes held, plus `HELD_OVERHEAD` per chunk.
    held_bytes: usize,
    stamper: Stamper,
    /// What the backend has been told; only `sync_interest` and `deregister` change it.
    registered: Interest,
    /// The socket refused a write since the last writable event: wait for the next one.
    write_blocked: bool,
    /// The peer shut down its sending side (or we read EOF).
    read_closed: bool,
    /// Reading is paused by backpressure until pending output falls to half the cap.
    paused: bool,
    /// A delay timer is queued for the head of `held`.
    delay_armed: bool,
    /// Last time a byte moved either way.
    pub last_active: Instant,
}

impl Conn {
    pub fn new(fd: OwnedFd, id: u64, now: Instant) -> Conn {
        Conn {
            fd,
            id,
            out: OutBuf::default(),
            held: VecDeque::new(),
            held_bytes: 0,
            stamper: Stamper::default(),
            registered: Interest::NONE,
            write_blocked: false,
            read_closed: false,
            paused: false,
            delay_armed: false,
            last_active: now,
        }
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn registered(&self) -> Interest {
        self.registered
    }

    /// Tell the poller what the connection wants now, if that changed (libev's `fd_reify`,
    /// per connection): the one place a connection's registration changes while it lives.
    pub fn sync_interest(&mut self, backend: &mut dyn Backend, token: Token) -> io::Result<()> {
        self.set_registered(backend, token, self.wanted())
    }

    /// Remove the connection from the poller; call before closing (see the Backend contract).
    pub fn deregister(&mut self, backend: &mut dyn Backend, token: Token) -> io::Result<()> {
        self.set_registered(backend, token, Interest::NONE)
    }

    fn set_registered(
        &mut self,
        backend: &mut dyn Backend,
        token: Token,
        want: Interest,
    ) -> io::Result<()> {
        if want != self.registered {
            backend.set_interest(self.fd(), token, self.registered, want)?;
            self.registered = want;
        }
        Ok(())
    }

    /// What the connection needs from the poller now. Computed, never set by hand.
    pub fn wanted(&self) -> Interest {
        Interest {
            read: !self.read_closed && !self.paused,
            write: !self.out.is_empty(),
        }
    }

    /// Everything the client sent has been answered and it will send no more.
    pub fn finished(&self) -> bool {
        self.read_closed && self.held.is_empty() && self.out.is_empty()
    }

    /// When the next held chunk is due, if a timer must be queued for it (marks it queued).
    pub fn delay_timer_needed(&mut self) -> Option<Instant> {
        if self.delay_armed {
            return None;
        }
        let due = self.held.front()?.due;
        self.delay_armed = true;
        Some(due)
    }

    /// Bytes this connection holds on the client's behalf (output, held input, a partial line).
    fn pending(&self) -> usize {
        self.out.len() + self.held_bytes + self.stamper.pending()
    }

    /// The socket is readable (or has an error to report).
    pub fn on_readable(&mut self, scratch: &mut [u8], ctx: &mut Ctx<'_>) -> Step {
        let result = self.read(scratch, ctx);
        self.step(result)
    }

    /// The socket is writable (or has an error to report).
    pub fn on_writable(&mut self, ctx: &mut Ctx<'_>) -> Step {
        self.write_blocked = false;
        let result = self.flush(ctx);
        self.update_pause(ctx.max_buffer);
        self.step(result)
    }

    /// The delay timer queued by [`Conn::delay_timer_needed`] fired.
    pub fn on_delay_timer(&mut self, ctx: &mut Ctx<'_>) -> Step {
        self.delay_armed = false;
        self.release(false, ctx)
    }

    /// Answer held input that is due (all of it with `all`, when the drain starts).
    pub fn release(&mut self, all: bool, ctx: &mut Ctx<'_>) -> Step {
        let result = self.release_due(all, ctx);
        self.update_pause(ctx.max_buffer);
        self.step(result)
    }

    fn read(&mut self, scratch: &mut [u8], ctx: &mut Ctx<'_>) -> Result<(), Failed> {
        let mut budget = READ_BUDGET;
        while !self.paused && !self.read_closed && budget > 0 {
            let want = self.read_size(ctx).min(scratch.len()).min(budget);
            match sys::recv(&self.fd, &mut scratch[..want]) {
                Ok(0) => {
                    self.read_closed = true;
                    if self.held.is_empty() {
                        self.end_of_input(ctx)?;
                    }
                }
                Ok(n) => {
                    ctx.stats.add_in(n);
                    self.last_active = ctx.now;
                    self.ingest(&scratch[..n], ctx)?;
                    budget -= n;
                    self.update_pause(ctx.max_buffer);
                    if n < want {
                        break; // drained for now; level-triggered wakes us for the rest
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Failed("read", e)),
            }
        }
        Ok(())
    }

    fn release_due(&mut self, all: bool, ctx: &mut Ctx<'_>) -> Result<(), Failed> {
        while self.held.front().is_some_and(|h| all || h.due <= ctx.now) {
            let Some(h) = self.held.pop_front() else {
                break;
            };
            self.held_bytes -= h.bytes.len() + HELD_OVERHEAD;
            self.produce(&h.bytes, ctx)?;
        }
        if self.held.is_empty() && self.read_closed {
            self.end_of_input(ctx)?;
        }
        Ok(())
    }

    /// How many bytes one read may take without the replies overshooting `--max-buffer`.
    /// Never zero while reading is allowed: a readable socket that is not read would spin.
    fn read_size(&self, ctx: &Ctx<'_>) -> usize {
        let room = ctx.max_buffer.saturating_sub(self.pending());
        let room = match ctx.mode {
            Mode::Raw => room,
            Mode::Stamp => room / STAMP_GROWTH,
        };
        room.max(1)
    }

    fn ingest(&mut self, data: &[u8], ctx: &mut Ctx<'_>) -> Result<(), Failed> {
        if ctx.delay.is_zero() {
            return self.produce(data, ctx);
        }
        let due = later(ctx.now, ctx.delay);
        match self.held.back_mut() {
            // Read in the same turn: one chunk, one due time.
            Some(last) if last.due == due => last.bytes.extend_from_slice(data),
            _ => {
                self.held.push_back(Held {
                    due,
                    bytes: data.to_vec(),
                });
                self.held_bytes += HELD_OVERHEAD;
            }
        }
        self.held_bytes += data.len();
        Ok(())
    }

    /// Turn input into output and send what the socket takes now.
    fn produce(&mut self, data: &[u8], ctx: &mut Ctx<'_>) -> Result<(), Failed> {
        match ctx.mode {
            Mode::Raw if self.out.is_empty() && !self.write_blocked => {
                // The common case: straight from the shared read buffer back to the socket;
                // only what the kernel refuses is copied into this connection's buffer.
                let sent = self.send(data, ctx)?;
                if sent < data.len() {
                    self.out.extend(&data[sent..]);
                }
                Ok(())
            }
            Mode::Raw => {
                self.out.extend(data);
                Ok(())
            }
            Mode::Stamp => {
                let time = ctx.clock.ctime().as_bytes();
                self.stamper.feed(data, ctx.max_buffer, time, &mut self.out);
                self.flush(ctx)
            }
        }
    }

    fn end_of_input(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Failed> {
        if ctx.mode == Mode::Stamp {
            let time = ctx.clock.ctime().as_bytes();
            self.stamper.finish(ctx.max_buffer, time, &mut self.out);
            self.flush(ctx)?;
        }
        Ok(())
    }

    fn flush(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Failed> {
        if self.out.is_empty() || self.write_blocked {
            return Ok(());
        }
        let sent = send_once(&self.fd, self.out.as_slice()).map_err(|e| Failed("write", e))?;
        self.sent(sent, ctx);
        self.out.consume(sent.0);
        Ok(())
    }

    /// Send from `data`; returns how much the kernel took.
    fn send(&mut self, data: &[u8], ctx: &mut Ctx<'_>) -> Result<usize, Failed> {
        let sent = send_once(&self.fd, data).map_err(|e| Failed("write", e))?;
        self.sent(sent, ctx);
        Ok(sent.0)
    }

    fn sent(&mut self, (n, full): (usize, bool), ctx: &mut Ctx<'_>) {
        self.write_blocked = full;
        if n > 0 {
            ctx.stats.add_out(n);
            self.last_active = ctx.now;
        }
    }

    /// A handler's outcome: a peer's I/O error closes the connection, with a debug line.
    fn step(&self, result: Result<(), Failed>) -> Step {
        match result {
            Ok(()) => Step::Keep,
            Err(Failed(what, e)) => {
                log::debug!("conn fd {}: {what} failed: {e}", self.fd());
                Step::Close
            }
        }
    }

    fn update_pause(&mut self, max: usize) {
        if self.pending() >= max {
            self.paused = true;
        } else if self.paused && self.out.len() + self.held_bytes <= max / 2 {
            // An unfinished stamp-mode line is left out here: only reading can complete it,
            // so counting it would keep a drained connection paused (and unread) forever.
            self.paused = false;
        }
    }
}

/// A peer's I/O failed: which operation ("read", "write") and how.
struct Failed(&'static str, io::Error);

/// One `send`: how much the kernel took, and whether the socket is now full (a short write
/// means the send buffer is full, so we wait for writability instead of trying again).
fn send_once(fd: &OwnedFd, data: &[u8]) -> io::Result<(usize, bool)> {
    loop {
        match sys::send(fd, data) {
            Ok(n) => return Ok((n, n < data.len())),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((0, true)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let mut input = vec![b'\n'; 400];
        input.extend_from_slice(&[b'x'; 600]);
        peer.write_all(&input).unwrap();
        let mut c = ctx(&mut clock, &mut counters, Duration::from_secs(1));
        assert_eq!(conn.on_readable(&mut scratch, &mut c), Step::Keep);
        assert!(!conn.wanted().read, "1000 held bytes reach the cap");
        assert_eq!(conn.release(true, &mut c), Step::Keep);
        assert!(conn.out.is_empty(), "the 400 replies went to the socket");
        assert!(
            conn.wanted().read,
            "nothing is pending but the partial line: read on"
        );
        let mut sink = vec![0u8; 400 * 35];
        peer.read_exact(&mut sink).unwrap();
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
}
