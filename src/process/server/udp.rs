//! The loop's side of UDP (SPEC §9): registering the sockets, dispatching their events and
//! timers, the drain. The datagram path itself lives in `crate::serve::udp`; this is only glue.

use std::time::Instant;

use log::{info, warn};

use super::{Server, Target, Timer};
use crate::error::Error;
use crate::event::interest;
use crate::event::reactor::{Backend, Interest};
use crate::net::listen::Endpoint;
use crate::serve::udp::{self, UdpSocket};

/// The UDP sockets of one worker and what they share.
#[derive(Default)]
pub(super) struct Udp {
    sockets: Vec<UdpSocket>,
    areas: udp::Areas,
    guard: udp::Guard,
    /// `None` with `--udp-loop-detect off` (or no UDP socket).
    loops: Option<udp::Loops>,
}

impl Udp {
    /// Serve the datagram `listeners`: each is registered for reading and logged; loop
    /// protection knows all of their addresses.
    pub(super) fn new(
        backend: &mut dyn Backend,
        listeners: Vec<Endpoint>,
        loop_detect: bool,
    ) -> Result<Udp, Error> {
        let name = backend.name();
        let mut sockets = Vec::with_capacity(listeners.len());
        for (i, l) in listeners.into_iter().enumerate() {
            let fail = |l: &Endpoint, source| Error::Listen {
                addr: l.label().to_string(),
                source,
            };
            // A socket all workers share (socket activation) is registered EPOLLEXCLUSIVE
            // with epoll, so a datagram wakes one worker, not all (the losers' recvmmsg
            // would only find EAGAIN); poll and select wake all, and EAGAIN is silent.
            let token = Target::Udp(i).into();
            l.set_interest(backend, token, Interest::NONE, Interest::READ)
                .map_err(|e| fail(&l, e))?;
            if crate::reload::adopted() {
                log::debug!("listening on {} (backend {name}, handed over)", l.label());
            } else {
                info!("listening on {} (backend {name})", l.label());
            }
            let label = l.label().to_string();
            let mut sock = UdpSocket::new(l).map_err(|source| Error::Listen {
                addr: label,
                source,
            })?;
            sock.registered = Interest::READ;
            sockets.push(sock);
        }
        Ok(Udp {
            guard: udp::Guard::new(sockets.iter().map(UdpSocket::local)),
            loops: (loop_detect && !sockets.is_empty()).then(udp::Loops::new),
            sockets,
            areas: udp::Areas::default(),
        })
    }

    /// Replies held or queued on every socket together.
    pub(super) fn queued(&self) -> usize {
        self.sockets.iter().map(UdpSocket::queued).sum()
    }

    /// Is there a UDP socket at all (the stats line then shows the datagram fields)?
    pub(super) fn exists(&self) -> bool {
        !self.sockets.is_empty()
    }
}

impl Server {
    /// A readiness event for UDP socket `i`.
    pub(super) fn on_udp_event(&mut self, i: usize, readable: bool, writable: bool) {
        self.with_udp(i, |s, areas, ctx| {
            if readable && s.registered.read {
                s.on_readable(areas, ctx);
            }
            if writable && s.registered.write {
                s.on_writable(areas, ctx);
            }
        });
    }

    /// A timer queued for UDP socket `i` at `at` fired.
    pub(super) fn on_udp_timer(&mut self, i: usize, at: Instant) {
        self.with_udp(i, |s, areas, ctx| s.on_timer(at, areas, ctx));
    }

    /// The drain begins: UDP sockets are not read any more; held replies go out now.
    pub(super) fn stop_udp(&mut self) {
        for i in 0..self.udp.sockets.len() {
            self.with_udp(i, |s, areas, ctx| s.stop(areas, ctx));
        }
    }

    /// The drain was cut off: what is still queued is dropped (and counted).
    pub(super) fn abandon_udp(&mut self, why: &str) {
        let mut lost = 0;
        for i in 0..self.udp.sockets.len() {
            lost += self.with_udp(i, |s, _, ctx| s.abandon(ctx));
        }
        if lost > 0 {
            warn!("{why}: {lost} UDP replies not sent");
        }
    }

    /// Run a handler on UDP socket `i`, then queue its timer and bring its interest up to date.
    pub(super) fn with_udp<T>(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut UdpSocket, &mut udp::Areas, &mut udp::Ctx<'_>) -> T,
    ) -> T {
        let delay = self.turn_delay();
        let u = &mut self.udp;
        let sock = &mut u.sockets[i];
        let mut ctx = udp::Ctx {
            mode: self.config.mode,
            delay,
            max_buffer: self.config.max_buffer,
            now: self.now,
            clock: &mut self.clock,
            stats: &mut self.stats,
            guard: &mut u.guard,
            loops: u.loops.as_mut(),
            access: self.config.access.is_active().then_some(&self.access),
            refusals: &mut self.gate.refusals,
            refusal_flush: None,
        };
        let out = f(sock, &mut u.areas, &mut ctx);
        if let Some(at) = ctx.refusal_flush {
            self.timers.add(at, Timer::Refusals);
        }
        if let Some(at) = sock.timer_needed() {
            self.timers.add(at, Timer::Udp { index: i, at });
        }
        let (token, wanted) = (Target::Udp(i).into(), sock.wanted());
        let mut registered = sock.registered;
        let synced = interest::sync(&mut registered, wanted, |old, new| {
            sock.set_interest(self.backend.as_mut(), token, old, new)
        });
        sock.registered = registered;
        if let Err(e) = synced {
            warn!(
                "cannot update poller interest for {}: {}",
                sock.label(),
                crate::error::Plain(&e)
            );
        }
        out
    }
}

impl Udp {
    /// The sockets, in token order.
    pub(super) fn sockets(&self) -> &[UdpSocket] {
        &self.sockets
    }
}
