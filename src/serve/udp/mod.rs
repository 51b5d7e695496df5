//! UDP echo (RFC 862, SPEC §9): a UDP socket is one more source in the loop, with no
//! per-peer state. Its only buffer is one queue of replies that are held (`--delay`) or that
//! the kernel would not take yet (EAGAIN, ENOBUFS), bounded by `--max-buffer` like a
//! connection's output.
//!
//! The hot path, with no delay and nothing queued: one `recvmmsg` fills up to 64 datagrams
//! into the worker's shared receive area ([`batch::RecvArea`]); each is checked by the loop
//! protection ([`guard`]) and the loop detection ([`loops`]) and answered straight from that
//! area with one `sendmmsg`, stamp replies gathered around the payload without a copy. Only
//! what the kernel refuses is copied into the queue, into buffers reused from sent replies.
//! A short batch means the socket is drained: back to the poller. Nothing on this path
//! allocates once the areas exist (tests.rs counts).

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use log::debug;
use nix::sys::socket::{getsockname, setsockopt, sockopt, SockaddrStorage};

use crate::event::reactor::Interest;
use crate::net::addr::to_socket_addr;
use crate::net::listen::Endpoint;
use crate::policy::access::Access;
use crate::policy::refusal::RefusalLog;
use crate::serve::echo::Clock;
use crate::serve::echo::Mode;
use crate::stats::Stats;

pub mod addr;
pub mod batch;
pub mod guard;
mod handover;
pub mod loops;
mod reply;

use addr::Local;
use batch::{RecvArea, SendArea, BATCH};
pub use guard::Guard;
pub use loops::Loops;

/// The largest reply sent over IPv4 (SPEC §9): 65,535 less the IPv4 and UDP headers.
pub const MAX_REPLY: usize = 65_507;
/// The largest reply sent over IPv6: 65,535 (the payload length field) less the UDP header;
/// larger ones would need jumbograms.
pub const MAX_REPLY_V6: usize = 65_527;
/// Batches read per readiness event at most, so one busy socket cannot starve the others
/// (level-triggered: the rest is reported on the next turn).
const READ_BATCHES: usize = 8;
/// After ENOBUFS (a full device queue, which writability does not report), retry this soon.
const NOBUFS_RETRY: Duration = Duration::from_millis(5);
/// What one queued datagram costs beyond its reply bytes (entry and allocator overhead),
/// charged to `--max-buffer` so a flood of tiny datagrams stays within it too.
const QUEUED_OVERHEAD: usize = std::mem::size_of::<Queued>() + 32;
/// Payload buffers of sent queued replies kept for the next ones (so a steady `--delay`
/// allocates nothing): at most this many per socket, …
const SPARE_BUFFERS: usize = 64;
/// … of at most this capacity each (larger ones are freed).
const SPARE_CAPACITY: usize = 2048;

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
    pub stats: &'a mut Stats,
    /// Loop protection.
    pub guard: &'a mut Guard,
    /// Loop detection (`--udp-loop-detect`), or `None` when it is off.
    pub loops: Option<&'a mut Loops>,
    /// `--allow`/`--deny` and `--rate-per-source` (SPEC §10), or `None` when no list or
    /// limit is set: then a datagram costs no check at all.
    pub access: Option<&'a Access>,
    /// Where refused datagrams are logged (the server's, shared with refused connections).
    pub refusals: &'a mut RefusalLog,
    /// Set when the refusal log asks to be flushed at this time (the server queues it).
    pub refusal_flush: Option<Instant>,
}

impl Ctx<'_> {
    /// Does SPEC §10 let a datagram from `from` in? A refused one is counted (`rejected` and
    /// `denied` or `limited`) and logged; the caller drops it.
    #[inline]
    fn admits(&mut self, from: SocketAddr) -> bool {
        let Some(access) = self.access else {
            return true;
        };
        let Err(reason) = access.datagram(crate::net::addr::fold(from.ip()), self.now) else {
            return true;
        };
        debug!(
            "udp: datagram from {} refused ({})",
            crate::net::addr::fold_socket(from),
            reason.name()
        );
        self.stats.refused(reason);
        if let Some(at) = self.refusals.refused_datagram(reason, from, self.now) {
            self.refusal_flush = Some(at);
        }
        false
    }
}

/// The largest reply that may go to `to`: an IPv4 peer (a v4-mapped one on a dual-stack
/// socket included) takes an IPv4 datagram.
fn max_reply(to: SocketAddr) -> usize {
    match to {
        SocketAddr::V6(v6) if v6.ip().to_ipv4_mapped().is_none() => MAX_REPLY_V6,
        _ => MAX_REPLY,
    }
}

/// A reply waiting: held until `due` (`--delay`), or refused by the kernel for now.
struct Queued {
    due: Instant,
    to: SocketAddr,
    from: Option<Local>,
    /// The payload (raw mode) or the line (stamp mode, stamped when sent).
    payload: Vec<u8>,
    /// The raw reply's loop detection key ([`batch::Reply::loop_key`]).
    loop_key: u64,
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
    listener: Endpoint,
    local: SocketAddr,
    queue: VecDeque<Queued>,
    /// Emptied payload buffers for the queue to reuse ([`SPARE_BUFFERS`]).
    spare: Vec<Vec<u8>>,
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
    pub fn new(listener: Endpoint) -> io::Result<UdpSocket> {
        let fd = listener.fd();
        let local: SockaddrStorage = getsockname(fd)?;
        let Some(local) = to_socket_addr(&local) else {
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
                // datagrams through IPV6_PKTINFO too, as v4-mapped addresses, and takes a
                // v4-mapped IPV6_PKTINFO back when sending to a v4-mapped peer.
            }
        }
        Ok(UdpSocket {
            listener,
            local,
            queue: VecDeque::new(),
            spare: Vec::new(),
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

    /// Make `backend`'s interest `new`, given it was `old` (exclusively for a socket the
    /// workers share, see [`Endpoint::set_interest`]).
    pub fn set_interest(
        &self,
        backend: &mut dyn crate::event::reactor::Backend,
        token: crate::event::reactor::Token,
        old: Interest,
        new: Interest,
    ) -> io::Result<()> {
        self.listener.set_interest(backend, token, old, new)
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
                        debug!("{}: recvmmsg: {}", self.label(), crate::error::Plain(&e));
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
        ctx.stats.dropped(n);
        self.queue.clear();
        self.pending = 0;
        self.blocked = None;
        n
    }
}

#[cfg(test)]
mod tests;
