//! notes about poll
//!
//! a) POLLERR, POLLHUP and POLLNVAL are always reported, whatever `events` asks for (even 0),
//!    so a descriptor that wants nothing is removed from the array, not left in it with
//!    `events = 0` (a reset peer would wake every turn).
//! b) POLLNVAL means the descriptor was closed before it was deregistered: a caller bug,
//!    hence `debug_assert!`; in release builds it is folded like an error so the handler's
//!    read or write fails and the connection is closed.
//! c) The `pollfd` array is kept in step with registrations instead of being rebuilt for
//!    every wait: add pushes, remove swap-removes and fixes the moved entry's slot in the
//!    reverse index (fd → slot). The kernel overwrites every `revents`, so nothing is reset.
//! d) `poll` returns the number of entries with non-zero `revents`: the scan stops once
//!    that many have been seen. The cost is still O(registered) per call, in the kernel.
//! e) Millisecond timeout, rounded *up* (`timeout_ms`) so a timer never fires early. EINTR is
//!    handed to the caller as `ErrorKind::Interrupted` (poll is never restarted).
//! f) POLLRDHUP (Linux only) is not used: a FIN already makes the socket readable (EOF).
//!    POLLPRI is not requested either; out-of-band data is not part of an echo.
//! g) A negative fd in a pollfd is silently ignored by the kernel; we refuse it instead
//!    (InvalidInput), since it could never become ready.
//! h) Errors mirror epoll's: adding a registered fd is EEXIST, changing an unknown one
//!    ENOENT, so a bookkeeping bug above the seam looks the same on every backend.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use super::{timeout_ms, Backend, Event, Interest, Token};
use crate::sys::cvt;

/// Marks an fd with no slot in the reverse index.
const ABSENT: u32 = u32::MAX;

/// POSIX poll over one pollfd array kept in step with registrations.
pub struct Poll {
    /// What the kernel gets, dense.
    fds: Vec<libc::pollfd>,
    /// `tokens[i]` names `fds[i]`.
    tokens: Vec<Token>,
    /// Reverse index: `slot[fd]` is the index of `fd` in `fds`, or `ABSENT`. Grows only when a
    /// higher fd than ever before is registered.
    slot: Vec<u32>,
}

impl Poll {
    pub fn new() -> Poll {
        Poll {
            fds: Vec::new(),
            tokens: Vec::new(),
            slot: Vec::new(),
        }
    }

    fn slot_of(&self, fd: RawFd) -> Option<usize> {
        match self.slot.get(fd as usize) {
            Some(&s) if s != ABSENT => Some(s as usize),
            _ => None,
        }
    }
}

fn mask(i: Interest) -> libc::c_short {
    let mut m = 0;
    if i.read {
        m |= libc::POLLIN;
    }
    if i.write {
        m |= libc::POLLOUT;
    }
    m
}

fn os_err(code: libc::c_int) -> io::Error {
    io::Error::from_raw_os_error(code)
}

impl Backend for Poll {
    fn name(&self) -> &'static str {
        "poll"
    }

    fn set_interest(
        &mut self,
        fd: RawFd,
        token: Token,
        old: Interest,
        new: Interest,
    ) -> io::Result<()> {
        if fd < 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "poll: negative file descriptor",
            ));
        }
        let have = self.slot_of(fd);
        match (old.is_none(), new.is_none(), have) {
            (true, _, Some(_)) => Err(os_err(libc::EEXIST)),
            (true, _, None) => {
                let i = fd as usize;
                if i >= self.slot.len() {
                    self.slot.resize(i + 1, ABSENT);
                }
                self.slot[i] = self.fds.len() as u32;
                self.fds.push(libc::pollfd {
                    fd,
                    events: mask(new),
                    revents: 0,
                });
                self.tokens.push(token);
                Ok(())
            }
            (false, _, None) => Err(os_err(libc::ENOENT)),
            (false, true, Some(s)) => {
                self.fds.swap_remove(s);
                self.tokens.swap_remove(s);
                if let Some(moved) = self.fds.get(s) {
                    self.slot[moved.fd as usize] = s as u32;
                }
                self.slot[fd as usize] = ABSENT;
                Ok(())
            }
            (false, false, Some(s)) => {
                self.fds[s].events = mask(new);
                self.tokens[s] = token;
                Ok(())
            }
        }
    }

    fn wait(&mut self, events: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()> {
        events.clear();
        // SAFETY: `fds` holds `fds.len()` initialised pollfds; the kernel writes `revents` only.
        let n = cvt(unsafe {
            libc::poll(
                self.fds.as_mut_ptr(),
                self.fds.len() as libc::nfds_t,
                timeout_ms(timeout),
            )
        })?;
        let mut left = n as usize;
        for (p, &token) in self.fds.iter().zip(&self.tokens) {
            if left == 0 {
                break;
            }
            let r = p.revents;
            if r == 0 {
                continue;
            }
            left -= 1;
            debug_assert!(
                r & libc::POLLNVAL == 0,
                "poll: fd {} was closed before it was deregistered",
                p.fd
            );
            events.extend(Event::ready(
                token,
                r & libc::POLLIN != 0,
                r & libc::POLLOUT != 0,
                r & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0,
            ));
        }
        Ok(())
    }
}
