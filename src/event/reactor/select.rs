//! notes about select
//!
//! a) An `fd_set` is a fixed bitmap of FD_SETSIZE (1024 on Linux) bits, so select cannot
//!    watch a larger descriptor at all (in C, FD_SET past the end writes out of bounds unless
//!    glibc's fortified macros abort; the `libc` crate's FD_SET bounds-checks and panics).
//!    `set_interest` therefore refuses `fd < 0 || fd >= FD_SETSIZE` with InvalidInput and
//!    changes nothing; the accept path turns that into "select backend limit". Raising
//!    RLIMIT_NOFILE does not help this backend.
//! b) The sets are in/out parameters: the wanted sets are copied into the ready sets before
//!    every call. Linux also rewrites the timeval, so it is rebuilt every call too.
//! c) There is no error or hang-up set (exceptfds means out-of-band data on sockets), so
//!    select cannot fold: a failed or hung-up socket is simply both readable and writable to
//!    it, and is reported in each direction it is registered for. The handler's read or write
//!    then finds the error, which is what folding is for. Nothing is reported for a
//!    descriptor that is not registered, so NONE = deregistered holds trivially.
//! d) The return value counts *bits*: a descriptor ready both ways counts twice. The scan
//!    stops once that many bits have been seen, and never goes past `max_fd`, which is kept
//!    exact on removal so the kernel does not scan dead space either.
//! e) Microsecond timeout, rounded *up* so a timer never fires early; `None` passes a null
//!    timeval (block). EINTR is handed to the caller as `ErrorKind::Interrupted` (select is
//!    never restarted after a signal handler).
//! f) A descriptor closed while still in a set makes the whole call fail with EBADF, not
//!    just that entry: "deregister before close" matters most here.
//! g) Errors mirror epoll's: adding a registered fd is EEXIST, changing an unknown one ENOENT.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use super::{Backend, Event, Interest, Token};
use crate::sys::cvt;

const SETSIZE: usize = libc::FD_SETSIZE;

/// POSIX select; refuses descriptors >= FD_SETSIZE.
pub struct Select {
    want_r: libc::fd_set,
    want_w: libc::fd_set,
    ready_r: libc::fd_set,
    ready_w: libc::fd_set,
    /// Highest registered fd, -1 when none.
    max_fd: RawFd,
    /// `tokens[fd]`: `Some` exactly when `fd` is registered. FD_SETSIZE entries, allocated once.
    tokens: Vec<Option<Token>>,
}

fn empty_set() -> libc::fd_set {
    let mut set = std::mem::MaybeUninit::<libc::fd_set>::uninit();
    // SAFETY: FD_ZERO initialises the whole set through the pointer, after which it is valid.
    unsafe {
        libc::FD_ZERO(set.as_mut_ptr());
        set.assume_init()
    }
}

/// Put `fd` in or out of `set`. The caller has checked `0 <= fd < FD_SETSIZE`.
fn assign(set: &mut libc::fd_set, fd: RawFd, on: bool) {
    debug_assert!(fd >= 0 && (fd as usize) < SETSIZE);
    // SAFETY: `fd` is within the bitmap (checked by `set_interest`), `set` is a valid fd_set.
    unsafe {
        if on {
            libc::FD_SET(fd, set);
        } else {
            libc::FD_CLR(fd, set);
        }
    }
}

/// `fd`'s bit in `set`. The caller guarantees `0 <= fd <= max_fd < FD_SETSIZE`.
fn is_set(set: &libc::fd_set, fd: RawFd) -> bool {
    // SAFETY: as above: in bounds, valid set.
    unsafe { libc::FD_ISSET(fd, set) }
}

impl Select {
    pub fn new() -> Select {
        Select {
            want_r: empty_set(),
            want_w: empty_set(),
            ready_r: empty_set(),
            ready_w: empty_set(),
            max_fd: -1,
            tokens: vec![None; SETSIZE],
        }
    }
}

/// Rounded up to the microsecond; absurdly long timeouts are capped (about 68 years).
fn timeval(d: Duration) -> libc::timeval {
    let mut secs = d.as_secs();
    let mut usecs = d.subsec_nanos().div_ceil(1000);
    if usecs == 1_000_000 {
        secs += 1;
        usecs = 0;
    }
    libc::timeval {
        tv_sec: secs.min(i32::MAX as u64) as libc::time_t,
        tv_usec: usecs as libc::suseconds_t,
    }
}

impl Backend for Select {
    fn name(&self) -> &'static str {
        "select"
    }

    fn set_interest(
        &mut self,
        fd: RawFd,
        token: Token,
        old: Interest,
        new: Interest,
    ) -> io::Result<()> {
        if fd < 0 || fd as usize >= SETSIZE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("select: fd {fd} is outside 0..FD_SETSIZE ({SETSIZE})"),
            ));
        }
        let registered = self.tokens[fd as usize].is_some();
        if old.is_none() && registered {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        if !old.is_none() && !registered {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        assign(&mut self.want_r, fd, new.read);
        assign(&mut self.want_w, fd, new.write);
        if new.is_none() {
            self.tokens[fd as usize] = None;
            while self.max_fd >= 0 && self.tokens[self.max_fd as usize].is_none() {
                self.max_fd -= 1;
            }
        } else {
            self.tokens[fd as usize] = Some(token);
            self.max_fd = self.max_fd.max(fd);
        }
        Ok(())
    }

    fn wait(&mut self, events: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()> {
        events.clear();
        self.ready_r = self.want_r;
        self.ready_w = self.want_w;
        let mut tv = timeout.map(timeval);
        let tvp = tv
            .as_mut()
            .map_or(std::ptr::null_mut(), |t| t as *mut libc::timeval);
        // SAFETY: the sets are valid fd_sets and only bits below `max_fd + 1 <= FD_SETSIZE`
        // are examined; `tvp` is null or points to a live timeval.
        let n = unsafe {
            libc::select(
                self.max_fd + 1,
                &mut self.ready_r,
                &mut self.ready_w,
                std::ptr::null_mut(),
                tvp,
            )
        };
        let n = cvt(n)?;
        let mut left = n as usize;
        let mut fd = 0;
        while left > 0 && fd <= self.max_fd {
            let readable = is_set(&self.ready_r, fd);
            let writable = is_set(&self.ready_w, fd);
            left = left.saturating_sub(readable as usize + writable as usize);
            if readable || writable {
                // select has no error set: a failed socket shows up as readable/writable.
                if let Some(token) = self.tokens[fd as usize] {
                    events.extend(Event::ready(token, readable, writable, false));
                }
            }
            fd += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_round_up_to_the_microsecond() {
        let tv = |d| {
            let t = timeval(d);
            (t.tv_sec as u64, t.tv_usec as u64)
        };
        assert_eq!(tv(Duration::ZERO), (0, 0));
        assert_eq!(tv(Duration::from_nanos(1)), (0, 1));
        assert_eq!(tv(Duration::from_nanos(1_500_001)), (0, 1501));
        assert_eq!(tv(Duration::from_nanos(2_999_999_999)), (3, 0));
        assert_eq!(tv(Duration::from_secs(u64::MAX)).0, i32::MAX as u64);
    }

    #[test]
    fn max_fd_follows_removals_and_refusals_change_nothing() {
        // No system call is made here, so made-up descriptor numbers are fine.
        let mut s = Select::new();
        let top = SETSIZE as RawFd - 1;
        for fd in [3, top, 7] {
            s.set_interest(fd, Token(fd as usize), Interest::NONE, Interest::READ)
                .unwrap();
        }
        assert_eq!(s.max_fd, top);
        for bad in [-1, SETSIZE as RawFd, RawFd::MAX] {
            let err = s
                .set_interest(bad, Token(0), Interest::NONE, Interest::READ)
                .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        }
        assert_eq!(s.max_fd, top);
        s.set_interest(top, Token(0), Interest::READ, Interest::NONE)
            .unwrap();
        assert_eq!(s.max_fd, 7);
        assert!(!is_set(&s.want_r, top));
        s.set_interest(3, Token(3), Interest::READ, Interest::NONE)
            .unwrap();
        assert_eq!(s.max_fd, 7);
        s.set_interest(7, Token(7), Interest::READ, Interest::NONE)
            .unwrap();
        assert_eq!(s.max_fd, -1);
        assert!(s
            .set_interest(7, Token(7), Interest::READ, Interest::NONE)
            .is_err());
    }
}
