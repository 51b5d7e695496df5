//! notes about epoll
//!
//! a) The interest list belongs to the *open file description*, not to the descriptor
//!    number: `close(fd)` only drops the entry when no duplicate (`dup`, `fork`, `SCM_RIGHTS`)
//!    is left, and until then events keep arriving with the old token for a number that may
//!    already name something else. Hence "deregister before close" in the contract, for
//!    shared descriptors. A private one (accepted here, never duplicated) is released by our
//!    close, and the kernel then removes its entry itself (`eventpoll_release` in the file's
//!    final put, done before `close` returns to user space): `deregister_for_close` makes no
//!    system call for it, which saves one `EPOLL_CTL_DEL` per connection.
//! b) EPOLLERR and EPOLLHUP are always reported, even for an entry registered with zero
//!    events. A descriptor that wants nothing is therefore `EPOLL_CTL_DEL`eted, never
//!    `EPOLL_CTL_MOD`ified to 0 (a reset peer would wake every turn).
//! c) Level-triggered (no EPOLLET): the handler may stop reading early for fairness and the
//!    descriptor shows up again on the next wait. No EPOLLONESHOT. EPOLLEXCLUSIVE only for
//!    a listener several worker processes share (`add_exclusive`): without it every
//!    worker's epoll wakes for each connection and all but one find the queue empty (the
//!    thundering herd). It is accepted by EPOLL_CTL_ADD only (MOD fails with EINVAL, DEL
//!    works), and kernels before 4.5 reject it: then the add is retried plain.
//! d) EPOLLRDHUP is not requested: a peer's FIN already makes the socket readable (EOF), and
//!    the portable backends could not report it anyway.
//! e) Kernels before 2.6.9 wanted a non-null event even for `EPOLL_CTL_DEL`; we pass one.
//! f) `epoll_wait` takes milliseconds: timeouts are rounded *up* (`timeout_ms`) so a timer
//!    never fires early. EINTR is handed to the caller as `ErrorKind::Interrupted`.
//! g) A descriptor appears at most once per `epoll_wait`, so no de-duplication is needed;
//!    the event buffer is allocated once and reused (no allocation per wait). More ready
//!    descriptors than it holds are simply reported on the next wait (the kernel rotates the
//!    ready list, so none starves).
//! h) The token travels in `data.u64` and comes back unchanged; we never look at the fd.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::{timeout_ms, Backend, Event, Interest, Sharing, Token};
use crate::sys::cvt;

/// Ready descriptors fetched per `epoll_wait`.
const MAX_EVENTS: usize = 1024;

/// Level-triggered Linux epoll.
pub struct Epoll {
    /// The epoll instance, closed on drop.
    ep: OwnedFd,
    /// Reused by every wait; `MAX_EVENTS` entries.
    buf: Vec<libc::epoll_event>,
    /// Handed over by a reload: a descriptor the caller registers may be in the set
    /// already (a listener, a UDP socket), so an add that finds it there modifies it.
    adopted: bool,
}

impl Epoll {
    /// A fresh close-on-exec epoll instance.
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: plain system call, no pointers.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: `fd` was just returned by epoll_create1 and is owned by nobody else.
        let ep = unsafe { OwnedFd::from_raw_fd(fd) };
        let buf = vec![libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS];
        Ok(Epoll {
            ep,
            buf,
            adopted: false,
        })
    }

    /// The instance a reload handed over (see [`super::adopt_epoll`]).
    pub fn adopt(ep: OwnedFd) -> Epoll {
        let buf = vec![libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS];
        Epoll {
            ep,
            buf,
            adopted: true,
        }
    }
}

fn mask(i: Interest) -> u32 {
    let mut m = 0;
    if i.read {
        m |= libc::EPOLLIN as u32;
    }
    if i.write {
        m |= libc::EPOLLOUT as u32;
    }
    m
}

impl Backend for Epoll {
    fn name(&self) -> &'static str {
        "epoll"
    }

    fn set_interest(
        &mut self,
        fd: RawFd,
        token: Token,
        old: Interest,
        new: Interest,
    ) -> io::Result<()> {
        let op = match (old.is_none(), new.is_none()) {
            (true, _) => libc::EPOLL_CTL_ADD,
            (false, true) => libc::EPOLL_CTL_DEL,
            (false, false) => libc::EPOLL_CTL_MOD,
        };
        let mut ev = libc::epoll_event {
            events: mask(new),
            u64: token.0 as u64,
        };
        // SAFETY: `ev` is a valid, initialised epoll_event that outlives the call; a bad
        // `fd` is reported by the kernel as EBADF.
        match cvt(unsafe { libc::epoll_ctl(self.ep.as_raw_fd(), op, fd, &mut ev) }) {
            Err(e)
                if self.adopted
                    && op == libc::EPOLL_CTL_ADD
                    && e.raw_os_error() == Some(libc::EEXIST) =>
            {
                let modify = libc::EPOLL_CTL_MOD;
                // SAFETY: as above.
                cvt(unsafe { libc::epoll_ctl(self.ep.as_raw_fd(), modify, fd, &mut ev) })?;
                Ok(())
            }
            other => other.map(drop),
        }
    }

    fn handover_fd(&self) -> Option<RawFd> {
        Some(self.ep.as_raw_fd())
    }

    fn add_exclusive(&mut self, fd: RawFd, token: Token, new: Interest) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: mask(new) | libc::EPOLLEXCLUSIVE as u32,
            u64: token.0 as u64,
        };
        let op = libc::EPOLL_CTL_ADD;
        // SAFETY: as in `set_interest`.
        match cvt(unsafe { libc::epoll_ctl(self.ep.as_raw_fd(), op, fd, &mut ev) }) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                self.set_interest(fd, token, Interest::NONE, new)
            }
            // A worker's handed-over instance has its shared listeners in it already, and an
            // exclusive entry cannot be modified: take it out and add it again (level-
            // triggered, so a connection queued meanwhile is reported by the next wait).
            Err(e) if self.adopted && e.raw_os_error() == Some(libc::EEXIST) => {
                let del = libc::EPOLL_CTL_DEL;
                // SAFETY: as above.
                cvt(unsafe { libc::epoll_ctl(self.ep.as_raw_fd(), del, fd, &mut ev) })?;
                // SAFETY: as above.
                cvt(unsafe { libc::epoll_ctl(self.ep.as_raw_fd(), op, fd, &mut ev) }).map(drop)
            }
            other => other.map(drop),
        }
    }

    fn deregister_for_close(
        &mut self,
        fd: RawFd,
        token: Token,
        old: Interest,
        sharing: Sharing,
    ) -> io::Result<()> {
        match sharing {
            // The close that follows drops the entry (note a).
            Sharing::Private => Ok(()),
            Sharing::Shared if old.is_none() => Ok(()),
            Sharing::Shared => self.set_interest(fd, token, old, Interest::NONE),
        }
    }

    fn wait(&mut self, events: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()> {
        events.clear();
        // SAFETY: `buf` holds `buf.len()` initialised entries the kernel may overwrite.
        let n = cvt(unsafe {
            libc::epoll_wait(
                self.ep.as_raw_fd(),
                self.buf.as_mut_ptr(),
                self.buf.len() as libc::c_int,
                timeout_ms(timeout),
            )
        })?;
        const FAIL: u32 = (libc::EPOLLERR | libc::EPOLLHUP) as u32;
        for e in &self.buf[..n as usize] {
            // Copy out of the (packed on x86_64) struct before looking at the fields.
            let (bits, data) = (e.events, e.u64);
            events.extend(Event::ready(
                Token(data as usize),
                bits & libc::EPOLLIN as u32 != 0,
                bits & libc::EPOLLOUT as u32 != 0,
                bits & FAIL != 0,
            ));
        }
        Ok(())
    }
}
