//! One client connection: its socket, pending output, held (delayed) input and what it wants
//! from the poller. Handlers never fail upward: a peer's I/O error becomes [`Step::Close`]
//! plus a debug line, so a bad client can never end the server.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::error::Plain;
use crate::event::interest;
use crate::event::reactor::{Backend, Interest, Sharing, Token};
use crate::event::timer::later;
use crate::net::addr::Peer;
use crate::policy::access::Ticket;
use crate::serve::buffer::OutBuf;
use crate::serve::echo::Mode;
use crate::serve::echo::{Clock, Stamper};
use crate::stats::Stats;
use crate::sys;

mod handover;
mod header;
mod held;

pub use header::HeaderRead;
use held::{HeldInput, STAMP_GROWTH};

/// Bytes read from one connection per readiness event at most, so that one fast sender
/// cannot starve the others (level-triggered: the rest is reported on the next turn).
const READ_BUDGET: usize = 256 * 1024;

/// Reads per readiness event at most: the byte budget alone is no bound on the work when
/// reads are tiny (`--max-buffer 1` makes every read one byte: 262,144 recv/send pairs per
/// event, and seconds of delay for everyone else). With full 64 KiB reads the byte budget
/// ends the batch first, so the common case costs nothing more.
const READ_CALLS: usize = 16;

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

pub struct Conn {
    fd: OwnedFd,
    /// Unique for the life of the server: timers name a connection by slot *and* id.
    pub id: u64,
    out: OutBuf,
    held: HeldInput,
    stamper: Stamper,
    /// What the backend has been told; only `sync_interest` and `deregister_for_close`
    /// change it.
    registered: Interest,
    /// The socket refused a write since the last writable event: wait for the next one.
    write_blocked: bool,
    /// The peer shut down its sending side (or we read EOF).
    read_closed: bool,
    /// Reading is paused by backpressure until pending output falls to half the cap.
    paused: bool,
    /// Last time a byte moved either way, or held input was answered.
    last_active: Instant,
    /// Who is at the other end (SPEC §10: logs, `--log-connections`).
    pub peer: Peer,
    /// The count this connection holds under `--max-per-source`, released at close.
    pub source: Option<Ticket>,
    /// For `--log-connections`: when it was accepted, bytes each way, how a failure ended it.
    pub opened: Instant,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub failure: Option<Failure>,
    /// A `--proxy-from` peer's PROXY header, while it is pending (SPEC §14): boxed, so
    /// every other connection pays one pointer for it.
    header: Option<Box<crate::policy::proxy::Parser>>,
}

/// How a peer's I/O failed, for the `--log-connections` reason.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Failure {
    /// The peer reset the connection (or stopped reading and made our write fail).
    Reset,
    /// Anything else.
    Error,
}

impl Conn {
    pub fn new(fd: OwnedFd, id: u64, now: Instant) -> Conn {
        Conn {
            fd,
            id,
            out: OutBuf::default(),
            held: HeldInput::default(),
            stamper: Stamper::default(),
            registered: Interest::NONE,
            write_blocked: false,
            read_closed: false,
            paused: false,
            last_active: now,
            peer: Peer::Unix,
            source: None,
            opened: now,
            bytes_in: 0,
            bytes_out: 0,
            failure: None,
            header: None,
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

    /// Stop the poller reporting the connection; call right before it is closed (dropped).
    /// Its socket is [`Sharing::Private`]: this process accepted it and never duplicates it
    /// (the supervisor forks workers before they accept anything, and nothing is passed on),
    /// so epoll lets the close remove it and poll and select remove it here (see the Backend
    /// contract).
    pub fn deregister_for_close(
        &mut self,
        backend: &mut dyn Backend,
        token: Token,
    ) -> io::Result<()> {
        let old = std::mem::replace(&mut self.registered, Interest::NONE);
        backend.deregister_for_close(self.fd(), token, old, Sharing::Private)
    }

    fn set_registered(
        &mut self,
        backend: &mut dyn Backend,
        token: Token,
        want: Interest,
    ) -> io::Result<()> {
        let fd = self.fd();
        interest::sync(&mut self.registered, want, |old, new| {
            backend.set_interest(fd, token, old, new)
        })
    }

    /// What the connection needs from the poller now. Computed, never set by hand.
    pub fn wanted(&self) -> Interest {
        Interest {
            read: !self.read_closed && !self.paused,
            write: !self.out.is_empty(),
        }
    }

    /// Since when the connection has been idle (SPEC §4): `None` while it holds delayed or
    /// unsent output, which is not idleness, whatever the clock says. When the output is
    /// gone, the last send (or the release of held input) starts the idle clock.
    pub fn idle_since(&self) -> Option<Instant> {
        (self.held.is_empty() && self.out.is_empty()).then_some(self.last_active)
    }

    /// Everything the client sent has been answered and it will send no more.
    pub fn finished(&self) -> bool {
        self.read_closed && self.held.is_empty() && self.out.is_empty()
    }

    /// When the next held chunk is due, if a timer must be queued for it (marks it queued).
    pub fn delay_timer_needed(&mut self) -> Option<Instant> {
        self.held.timer_needed()
    }

    /// Bytes this connection holds on the client's behalf (output, held input, a partial line).
    fn pending(&self) -> usize {
        self.out.len() + self.held.cost() + self.stamper.pending()
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
        self.held.timer_fired();
        self.release(false, ctx)
    }

    /// Answer held input that is due (all of it with `all`, when the drain starts).
    pub fn release(&mut self, all: bool, ctx: &mut Ctx<'_>) -> Step {
        let result = self.release_due(all, ctx);
        self.update_pause(ctx.max_buffer);
        self.step(result)
    }

    fn read(&mut self, scratch: &mut [u8], ctx: &mut Ctx<'_>) -> Result<(), Failed> {
        let (mut budget, mut calls) = (READ_BUDGET, READ_CALLS);
        while !self.paused && !self.read_closed && budget > 0 && calls > 0 {
            calls -= 1;
            let want = self.read_size(ctx).min(scratch.len()).min(budget);
            match sys::recv(&self.fd, &mut scratch[..want]) {
                Ok(0) => {
                    self.read_closed = true;
                    if self.held.is_empty() {
                        self.end_of_input(ctx)?;
                    }
                }
                Ok(n) => {
                    self.received(&scratch[..n], ctx)?;
                    budget -= n;
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

    /// Bytes the client sent: count them and answer them (now, or held for `--delay`).
    fn received(&mut self, data: &[u8], ctx: &mut Ctx<'_>) -> Result<(), Failed> {
        ctx.stats.add_in(data.len());
        self.bytes_in += data.len() as u64;
        self.last_active = ctx.now;
        self.ingest(data, ctx)?;
        self.update_pause(ctx.max_buffer);
        Ok(())
    }

    fn release_due(&mut self, all: bool, ctx: &mut Ctx<'_>) -> Result<(), Failed> {
        while let Some(bytes) = self.held.pop_due(ctx.now, all) {
            self.last_active = ctx.now;
            self.produce(&bytes, ctx)?;
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
        self.held.hold(data, due, ctx.mode, ctx.max_buffer);
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
            self.bytes_out += n as u64;
            self.last_active = ctx.now;
        }
    }

    /// A handler's outcome: a peer's I/O error closes the connection, with a debug line.
    fn step(&mut self, result: Result<(), Failed>) -> Step {
        match result {
            Ok(()) => Step::Keep,
            Err(Failed(what, e)) => {
                log::debug!("conn fd {}: {what} failed: {}", self.fd(), Plain(&e));
                use io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
                self.failure = Some(match e.kind() {
                    ConnectionReset | BrokenPipe | ConnectionAborted => Failure::Reset,
                    _ => Failure::Error,
                });
                Step::Close
            }
        }
    }

    fn update_pause(&mut self, max: usize) {
        if self.pending() >= max {
            self.paused = true;
        } else if self.paused && self.out.len() + self.held.cost() <= max / 2 {
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
mod tests;
