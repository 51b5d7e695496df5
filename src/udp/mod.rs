//! UDP echo (RFC 862, SPEC §9): a UDP socket is one more source in the loop, with no
//! per-peer state. Its only buffer is one queue of replies that are held (`--delay`) or that
//! the kernel would not take yet (EAGAIN, ENOBUFS), bounded by `--max-buffer` like a
//! connection's output.
//!
//! The hot path, with no delay and nothing queued: one `recvmmsg` fills up to 64 datagrams
//! into the worker's shared receive area ([`batch::RecvArea`]); each is checked by the loop
//! protection ([`guard`]) and answered straight from that area with one `sendmmsg`, stamp
//! replies gathered around the payload without a copy. Only what the kernel refuses is copied
//! into the queue. A short batch means the socket is drained: back to the poller.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use log::debug;
use nix::sys::socket::{
    bind as nix_bind, getsockname, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType,
    SockaddrStorage,
};

use crate::config::Mode;
use crate::echo::Clock;
use crate::listen::Listener;
use crate::reactor::Interest;

pub mod batch;
pub mod guard;

use batch::{Local, RecvArea, Reply, SendArea, BATCH, STAMP_EXTRA};
pub use guard::Guard;

/// The largest reply sent (SPEC §9): the largest UDP payload over IPv4.
pub const MAX_REPLY: usize = 65_507;
/// Batches read per readiness event at most, so one busy socket cannot starve the others
/// (level-triggered: the rest is reported on the next turn).
const READ_BATCHES: usize = 8;
/// After ENOBUFS (a full device queue, which writability does not report), retry this soon.
const NOBUFS_RETRY: Duration = Duration::from_millis(5);
/// What one queued datagram costs beyond its reply bytes (entry and allocator overhead),
/// charged to `--max-buffer` so a flood of tiny datagrams stays within it too.
const QUEUED_OVERHEAD: usize = std::mem::size_of::<Queued>() + 32;

/// The UDP counters of the stats line (bytes go to the daemon's `bytes_in`/`bytes_out`).
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Replies sent.
    pub datagrams_out: u64,
    /// Datagrams not answered: loop protection, oversized stamp replies, over the cap, send
    /// errors, and replies still queued when a drain was cut off.
    pub dropped: u64,
    /// Payload bytes received.
    pub bytes_in: u64,
    /// Reply bytes sent.
    pub bytes_out: u64,
}

/// The worker's shared batch areas (one of each, for all UDP sockets).
#[derive(Default)]
pub struct Areas {
    recv: Option<Box<RecvArea>>,
    send: SendArea,
}

/// Per-turn context lent to the handlers by the server.
pub struct Ctx<'a> {
    /// Raw or stamp.
    pub mode: Mode,
    /// How long replies are held; zero while draining.
    pub delay: Duration,
    /// `--max-buffer`: held plus queued reply bytes per socket.
    pub max_buffer: usize,
    /// The time the current turn started.
    pub now: Instant,
    /// Stamp mode's time source.
    pub clock: &'a mut Clock,
    /// Counters for the stats line.
    pub counters: &'a mut Counters,
    /// Loop protection.
    pub guard: &'a mut Guard,
}

/// Bind a UDP socket to `addr` (non-blocking, close-on-exec). No SO_REUSEADDR: for UDP it
/// would let a second daemon bind the same port and silently take half the datagrams.
/// An IPv6 socket is IPv6-only, as stream listeners are.
pub fn bind(addr: &SocketAddr) -> io::Result<OwnedFd> {
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let fd = socket(family, SockType::Datagram, flags, None)?;
    if addr.is_ipv6() {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    nix_bind(fd.as_raw_fd(), &SockaddrStorage::from(*addr))?;
    Ok(fd)
}

/// A reply waiting: held until `due` (`--delay`), or refused by the kernel for now.
struct Queued {
    due: Instant,
    to: SocketAddr,
    from: Option<Local>,
    /// The payload (raw mode) or the line (stamp mode, stamped when sent).
    payload: Vec<u8>,
}

/// Why sending stopped.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Blocked {
    /// EAGAIN: the send buffer is full; wait for writability.
    Writable,
    /// ENOBUFS: retry at this time.
    Until(Instant),
}

/// One UDP socket and its reply queue.
pub struct UdpSocket {
    listener: Listener,
    local: SocketAddr,
    queue: VecDeque<Queued>,
    /// Reply bytes queued, plus [`QUEUED_OVERHEAD`] each.
    pending: usize,
    /// Not read: the queue reached `--max-buffer` (until it falls to half).
    paused: bool,
    /// Not read any more: the drain has begun.
    stopped: bool,
    blocked: Option<Blocked>,
    /// The earliest timer queued for this socket.
    armed: Option<Instant>,
    /// What the backend has been told (kept in step by the server).
    pub registered: Interest,
}

impl UdpSocket {
    /// Serve the datagram socket `listener`. A wildcard address turns pktinfo on, so that
    /// replies leave from the address each datagram was sent to.
    pub fn new(listener: Listener) -> io::Result<UdpSocket> {
        let fd = listener.fd();
        let local: SockaddrStorage = getsockname(fd)?;
        let local = if let Some(v4) = local.as_sockaddr_in() {
            SocketAddr::V4((*v4).into())
        } else if let Some(v6) = local.as_sockaddr_in6() {
            SocketAddr::V6((*v6).into())
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not an IPv4 or IPv6 datagram socket",
            ));
        };
        if local.ip().is_unspecified() {
            // SAFETY: a borrowed view of the listener's descriptor, which outlives the call.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            if local.is_ipv4() {
                setsockopt(&fd, sockopt::Ipv4PacketInfo, &true)?;
            } else {
                setsockopt(&fd, sockopt::Ipv6RecvPacketInfo, &true)?;
                // A dual-stack socket (inherited without IPV6_V6ONLY) reports IPv4
                // datagrams through IPV6_PKTINFO too, as v4-mapped addresses.
            }
        }
        Ok(UdpSocket {
            listener,
            local,
            queue: VecDeque::new(),
            pending: 0,
            paused: false,
            stopped: false,
            blocked: None,
            armed: None,
            registered: Interest::NONE,
        })
    }

    /// The descriptor.
    pub fn fd(&self) -> RawFd {
        self.listener.fd()
    }

    /// The address bound.
    pub fn local(&self) -> SocketAddr {
        self.local
    }

    /// `udp:127.0.0.1:41234`.
    pub fn label(&self) -> &str {
        self.listener.label()
    }

    /// What the socket needs from the poller now: read unless paused or stopped, write only
    /// while the kernel refused a reply with EAGAIN.
    pub fn wanted(&self) -> Interest {
        Interest {
            read: !self.stopped && !self.paused,
            write: self.blocked == Some(Blocked::Writable),
        }
    }

    /// Nothing held or queued.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty()
    }

    /// Replies held or queued.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// When the server must call [`UdpSocket::on_timer`] next, if a timer has to be queued
    /// for it (one not already queued at or before that time).
    pub fn timer_needed(&mut self) -> Option<Instant> {
        let at = match self.blocked {
            Some(Blocked::Until(t)) => t,
            Some(Blocked::Writable) => return None,
            None => self.queue.front()?.due,
        };
        if self.armed.is_some_and(|a| a <= at) {
            return None;
        }
        self.armed = Some(at);
        Some(at)
    }

    /// The socket is readable (or has an error to report): read and answer batches.
    pub fn on_readable(&mut self, areas: &mut Areas, ctx: &mut Ctx<'_>) {
        let recv = areas.recv.get_or_insert_with(|| Box::new(RecvArea::new()));
        for _ in 0..READ_BATCHES {
            if self.stopped || self.paused {
                break;
            }
            let n = match recv.recv(self.fd()) {
                Ok(n) => n,
                Err(e) => match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    // An ICMP error for an earlier reply (port unreachable and the like),
                    // reported once and consumed by this call: nothing to do.
                    Some(libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH) => continue,
                    Some(libc::EAGAIN) => break,
                    _ => {
                        debug!("{}: recvmmsg: {e}", self.label());
                        break;
                    }
                },
            };
            self.answer(recv, n, &mut areas.send, ctx);
            if n < BATCH {
                break; // drained: a short batch means the queue was empty
            }
        }
    }

    /// The socket is writable again (after EAGAIN).
    pub fn on_writable(&mut self, areas: &mut Areas, ctx: &mut Ctx<'_>) {
        if self.blocked == Some(Blocked::Writable) {
            self.blocked = None;
        }
        self.flush(&mut areas.send, ctx);
    }

    /// A timer queued for this socket at `at` fired: send held replies that are due, or retry
    /// after ENOBUFS.
    pub fn on_timer(&mut self, at: Instant, areas: &mut Areas, ctx: &mut Ctx<'_>) {
        if self.armed == Some(at) {
            self.armed = None;
        }
        if matches!(self.blocked, Some(Blocked::Until(t)) if t <= ctx.now) {
            self.blocked = None;
        }
        self.flush(&mut areas.send, ctx);
    }

    /// The drain begins: stop reading at once and send every held reply now.
    pub fn stop(&mut self, areas: &mut Areas, ctx: &mut Ctx<'_>) {
        self.stopped = true;
        for q in &mut self.queue {
            q.due = q.due.min(ctx.now);
        }
        self.flush(&mut areas.send, ctx);
    }

    /// The drain was cut off: drop what is still queued; returns how many replies that was.
    pub fn abandon(&mut self, ctx: &mut Ctx<'_>) -> usize {
        let n = self.queue.len();
        ctx.counters.dropped += n as u64;
        self.queue.clear();
        self.pending = 0;
        self.blocked = None;
        n
    }

    /// Answer the `n` datagrams just received: straight from the receive area when nothing is
    /// held or queued, else behind the queue.
    fn answer(&mut self, recv: &RecvArea, n: usize, send: &mut SendArea, ctx: &mut Ctx<'_>) {
        let direct = ctx.delay.is_zero() && self.queue.is_empty() && self.blocked.is_none();
        let mut replies = Vec::with_capacity(if direct { n } else { 0 });
        for i in 0..n {
            let d = recv.get(i);
            ctx.counters.datagrams_in += 1;
            ctx.counters.bytes_in += d.data.len() as u64;
            let Some(to) = d.from else {
                ctx.counters.dropped += 1;
                continue;
            };
            if d.truncated {
                debug!("{}: datagram from {to} truncated: dropped", self.label());
                ctx.counters.dropped += 1;
                continue;
            }
            if let Some(why) = ctx.guard.check(to, d.local) {
                ctx.guard.note(to, why, ctx.now);
                ctx.counters.dropped += 1;
                continue;
            }
            let payload = match ctx.mode {
                Mode::Raw => d.data,
                Mode::Stamp => strip_line_end(d.data),
            };
            if reply_len(payload.len(), ctx.mode) > MAX_REPLY {
                debug!(
                    "{}: the reply to {to} would exceed {MAX_REPLY} bytes: dropped",
                    self.label()
                );
                ctx.counters.dropped += 1;
                continue;
            }
            let reply = Reply {
                to,
                from: d.local,
                payload,
            };
            if direct {
                replies.push(reply);
            } else {
                self.enqueue(ctx.now + ctx.delay, &reply, ctx);
            }
        }
        if !replies.is_empty() {
            let done = self.transmit(&replies, send, ctx);
            for r in &replies[done..] {
                self.enqueue(ctx.now, r, ctx);
            }
        }
    }

    /// Queue a reply (copying its payload) unless that would pass `--max-buffer`; a reply
    /// always fits in an empty queue, so a datagram larger than the cap is still answered.
    fn enqueue(&mut self, due: Instant, r: &Reply<'_>, ctx: &mut Ctx<'_>) {
        let cost = reply_len(r.payload.len(), ctx.mode) + QUEUED_OVERHEAD;
        if self.pending > 0 && self.pending + cost > ctx.max_buffer {
            debug!(
                "{}: {} bytes queued: reply to {} dropped",
                self.label(),
                self.pending,
                r.to
            );
            ctx.counters.dropped += 1;
            self.paused = true;
            return;
        }
        self.queue.push_back(Queued {
            due,
            to: r.to,
            from: r.from,
            payload: r.payload.to_vec(),
        });
        self.pending += cost;
        if self.pending >= ctx.max_buffer {
            self.paused = true;
        }
    }

    /// Send queued replies that are due, a batch at a time, until the queue has none left or
    /// the kernel refuses.
    fn flush(&mut self, send: &mut SendArea, ctx: &mut Ctx<'_>) {
        while self.blocked.is_none() {
            let due = self
                .queue
                .iter()
                .take(BATCH)
                .take_while(|q| q.due <= ctx.now)
                .count();
            if due == 0 {
                break;
            }
            let replies: Vec<Reply<'_>> = self
                .queue
                .iter()
                .take(due)
                .map(|q| Reply {
                    to: q.to,
                    from: q.from,
                    payload: &q.payload,
                })
                .collect();
            let (done, blocked) = transmit(self.fd(), &replies, send, ctx);
            drop(replies);
            self.blocked = blocked;
            for q in self.queue.drain(..done) {
                self.pending -= reply_len(q.payload.len(), ctx.mode) + QUEUED_OVERHEAD;
            }
        }
        if self.paused && self.pending <= ctx.max_buffer / 2 {
            self.paused = false;
        }
    }

    fn transmit(&mut self, replies: &[Reply<'_>], send: &mut SendArea, ctx: &mut Ctx) -> usize {
        let (done, blocked) = transmit(self.fd(), replies, send, ctx);
        self.blocked = blocked;
        done
    }
}

/// Send `replies` in batches. Returns how many are done (sent, or dropped after an error of
/// their own) and why sending stopped early, if it did.
fn transmit(
    fd: RawFd,
    replies: &[Reply<'_>],
    send: &mut SendArea,
    ctx: &mut Ctx<'_>,
) -> (usize, Option<Blocked>) {
    let stamp = ctx.mode == Mode::Stamp;
    let mut done = 0;
    for chunk in replies.chunks(BATCH) {
        let ctime = stamp.then(|| ctx.clock.ctime());
        let mut out = send.start(ctime);
        for r in chunk {
            out.push(r);
        }
        let mut at = 0;
        let mut refused_once = false;
        while at < out.len() {
            match out.send(fd, at) {
                Ok(k) => {
                    for i in at..at + k {
                        ctx.counters.bytes_out += out.sent_len(i) as u64;
                    }
                    ctx.counters.datagrams_out += k as u64;
                    at += k;
                    refused_once = false;
                }
                Err(e) => match e.raw_os_error() {
                    Some(libc::EINTR) => {}
                    Some(libc::EAGAIN) => return (done + at, Some(Blocked::Writable)),
                    Some(libc::ENOBUFS) => {
                        return (done + at, Some(Blocked::Until(ctx.now + NOBUFS_RETRY)))
                    }
                    // A pending ICMP error from an earlier reply is reported (and cleared)
                    // by this call instead of sending: try the same reply once more.
                    Some(libc::ECONNREFUSED) if !refused_once => refused_once = true,
                    _ => {
                        debug!("udp: reply to {} failed: {e}", chunk[at].to);
                        ctx.counters.dropped += 1;
                        at += 1;
                        refused_once = false;
                    }
                },
            }
        }
        done += at;
    }
    (done, None)
}

/// Stamp mode's payload: the datagram less one trailing `\n` (and a `\r` before it).
pub fn strip_line_end(data: &[u8]) -> &[u8] {
    match data.strip_suffix(b"\n") {
        Some(line) => line.strip_suffix(b"\r").unwrap_or(line),
        None => data,
    }
}

/// The size of the reply to a payload of `len` bytes.
fn reply_len(len: usize, mode: Mode) -> usize {
    match mode {
        Mode::Raw => len,
        Mode::Stamp => len + STAMP_EXTRA,
    }
}

#[cfg(test)]
mod tests;
