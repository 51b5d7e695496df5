//! The readiness seam: one small trait, three hand-written backends chosen at run time.
//!
//! The server never talks to epoll, poll or select directly. It keeps the interest it has
//! registered for each descriptor and asks a [`Backend`] to make the kernel agree
//! ([`Backend::set_interest`]), then waits for readiness ([`Backend::wait`]). Everything that
//! is policy (EINTR, fatal errors, what a connection wants) lives above this seam, in
//! `server/` and `conn/`; the backends only translate.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

#[cfg(target_os = "linux")]
mod epoll;
mod poll;
mod select;

/// Names a registered descriptor; handed back in every [`Event`] for it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Token(pub usize);

/// What we want to hear about a descriptor. [`Interest::NONE`] is a real state: "not registered".
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub struct Interest {
    /// Wake when the descriptor is readable (or a listener has a connection waiting).
    pub read: bool,
    /// Wake when the descriptor is writable.
    pub write: bool,
}

impl Interest {
    /// Not registered at all.
    pub const NONE: Interest = Interest {
        read: false,
        write: false,
    };
    /// Readable only: the resting state of a connection.
    pub const READ: Interest = Interest {
        read: true,
        write: false,
    };
    /// Writable only: output pending while reading is paused.
    pub const WRITE: Interest = Interest {
        read: false,
        write: true,
    };
    /// Output pending while reading goes on (the client reads slower than it sends, but is
    /// still under `--max-buffer`).
    pub const BOTH: Interest = Interest {
        read: true,
        write: true,
    };

    /// True for [`Interest::NONE`].
    pub fn is_none(self) -> bool {
        !self.read && !self.write
    }
}

/// One ready descriptor, as reported by [`Backend::wait`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Event {
    /// The token the descriptor was registered with.
    pub token: Token,
    /// Readable, or an error / hang-up is pending (see "Folding" on [`Backend`]).
    pub readable: bool,
    /// Writable, or an error / hang-up is pending.
    pub writable: bool,
}

impl Event {
    /// The event a backend reports for `token`, with the contract's folding applied: an
    /// error or hang-up (`failed`) counts as readable *and* writable. `None` when nothing
    /// is ready, so the "ready descriptors only" rule needs no check of its own.
    pub(crate) fn ready(
        token: Token,
        readable: bool,
        writable: bool,
        failed: bool,
    ) -> Option<Event> {
        let (readable, writable) = (readable || failed, writable || failed);
        (readable || writable).then_some(Event {
            token,
            readable,
            writable,
        })
    }
}

/// A readiness backend. **This doc comment is the contract** all three implementations keep;
/// `tests/backends.rs` runs the same conformance suite against each of them.
///
/// - **Triggering.** Level-triggered, always (select and poll cannot be anything else). A
///   handler may stop reading early, for fairness, and will be woken again on the next wait.
/// - **Ready descriptors only.** `wait` reports a descriptor only when something is ready for
///   an interest it is registered with (or it has an error / hang-up), at most once per call.
/// - **Folding.** Errors and hang-ups are reported as readable *and* writable, whatever the
///   interest; the handler finds the actual error in its `read` or `write`. (select has no
///   error set: it reports a failed or hung-up descriptor as ready in each direction it is
///   registered for, which leads the handler to the same error.)
/// - **Empty interest means deregistered.** `set_interest(fd, t, old, NONE)` removes the
///   descriptor from the kernel's set: epoll and poll report ERR/HUP even for zero events, so
///   a descriptor that wants nothing must not be registered at all. `NONE → x` adds,
///   `x → NONE` removes, anything else modifies; `old == new` is never passed.
/// - **Deregister before close, unless the kernel does it.** Before closing a registered
///   descriptor the caller calls [`Backend::deregister_for_close`], saying whether the socket
///   is [`Sharing::Private`] or [`Sharing::Shared`]. poll and select keep their own sets, so
///   they always remove it (otherwise poll reports POLLNVAL for it and select fails the whole
///   call with EBADF). epoll keeps its interest list per *open file description* and drops the
///   entry by itself when the last descriptor for it is closed: for a private descriptor
///   (a connection this process accepted and never `dup`ed, sent or forked) the close is that
///   last one, so the `EPOLL_CTL_DEL` would be one system call per connection for nothing. A
///   shared one (a listener inherited from systemd or shared by workers, anything `dup`ed)
///   outlives our close elsewhere, and its entry would go on reporting events under the old
///   token: epoll removes it too. A descriptor is registered under at most one token.
/// - **Timeouts round up** to the backend's resolution (milliseconds for epoll and poll,
///   microseconds for select): `wait` never returns early because of rounding. `None` waits
///   until something is ready.
/// - **Interrupts.** A wait interrupted by a signal returns `Err` of kind
///   `ErrorKind::Interrupted`; the caller treats it as an empty turn. Spurious wake-ups are
///   allowed: handlers treat `WouldBlock` as normal.
/// - **Limits.** A backend that cannot watch a descriptor (select: `fd >= FD_SETSIZE`) refuses
///   it in `set_interest` with an `InvalidInput` error and changes nothing.
/// - **Exclusive adds.** [`Backend::add_exclusive`] adds a descriptor that other processes
///   wait on too (a listener shared by workers), asking that one waiter rather than all be
///   woken when it becomes ready. Only epoll can (EPOLLEXCLUSIVE); the others add normally,
///   and every woken process but one then meets `WouldBlock`, which is normal (above). Such
///   an entry may be removed (`x → NONE`) but never modified.
pub trait Backend {
    /// `epoll`, `poll` or `select`.
    fn name(&self) -> &'static str;

    /// Make the kernel's interest in `fd` equal `new`, given that it was `old` (see the
    /// contract above for what NONE means).
    fn set_interest(
        &mut self,
        fd: RawFd,
        token: Token,
        old: Interest,
        new: Interest,
    ) -> io::Result<()>;

    /// Add `fd` (not registered yet) with interest `new`, waking one of the processes that
    /// wait on it rather than all (see "Exclusive adds"). By default a plain add.
    fn add_exclusive(&mut self, fd: RawFd, token: Token, new: Interest) -> io::Result<()> {
        self.set_interest(fd, token, Interest::NONE, new)
    }

    /// `fd`, registered under `token` with interest `old` (possibly NONE), is about to be
    /// closed: stop reporting it. By default it is removed (`old → NONE`), which poll and
    /// select must always do; epoll leaves a [`Sharing::Private`] descriptor to the close,
    /// which removes its entry without a system call of ours.
    fn deregister_for_close(
        &mut self,
        fd: RawFd,
        token: Token,
        old: Interest,
        _sharing: Sharing,
    ) -> io::Result<()> {
        if old.is_none() {
            return Ok(());
        }
        self.set_interest(fd, token, old, Interest::NONE)
    }

    /// Clear `events`, then fill it with the descriptors that are ready, waiting at most
    /// `timeout` (rounded up) for the first one.
    fn wait(&mut self, events: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()>;

    /// A kernel object holding the registrations that a reload can hand to the new image
    /// (epoll's instance), so that nothing need be registered again there. `None` for a
    /// backend that keeps its registrations in this process's memory (poll, select).
    fn handover_fd(&self) -> Option<RawFd> {
        None
    }
}

/// The epoll instance an earlier image of this process handed over (a reload): its
/// registrations stay as they were; registering a descriptor it already holds updates it.
#[cfg(target_os = "linux")]
pub fn adopt_epoll(fd: std::os::fd::OwnedFd) -> Box<dyn Backend> {
    Box::new(epoll::Epoll::adopt(fd))
}

/// Whether a descriptor is the only reference to its socket (see "Deregister before close" on
/// [`Backend`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Sharing {
    /// Accepted by this process and never duplicated (`dup`, `fork`, `SCM_RIGHTS`): closing it
    /// releases the socket.
    Private,
    /// Other descriptors may refer to the same socket (an inherited or shared listener, a
    /// `dup`): closing ours does not release it.
    Shared,
}

/// Which backend to run, as chosen with `--backend`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum BackendKind {
    /// epoll(7), level-triggered: cost per wake-up grows with ready descriptors, not watched ones.
    Epoll,
    /// POSIX poll over one pollfd array kept in step with registrations.
    Poll,
    /// POSIX select; refuses descriptors >= FD_SETSIZE.
    Select,
    /// epoll on Linux, poll elsewhere.
    Auto,
}

impl BackendKind {
    /// Resolve [`BackendKind::Auto`] for this platform.
    pub fn resolve(self) -> BackendKind {
        match self {
            BackendKind::Auto if cfg!(target_os = "linux") => BackendKind::Epoll,
            BackendKind::Auto => BackendKind::Poll,
            other => other,
        }
    }

    /// The name used on the command line and in log lines.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Epoll => "epoll",
            BackendKind::Poll => "poll",
            BackendKind::Select => "select",
            BackendKind::Auto => "auto",
        }
    }
}

impl std::str::FromStr for BackendKind {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "epoll" => Ok(BackendKind::Epoll),
            "poll" => Ok(BackendKind::Poll),
            "select" => Ok(BackendKind::Select),
            "auto" => Ok(BackendKind::Auto),
            _ => Err(()),
        }
    }
}

/// Create the backend `kind` names (Auto resolved first).
pub fn open(kind: BackendKind) -> io::Result<Box<dyn Backend>> {
    Ok(match kind.resolve() {
        #[cfg(target_os = "linux")]
        BackendKind::Epoll => Box::new(epoll::Epoll::new()?),
        #[cfg(not(target_os = "linux"))]
        BackendKind::Epoll => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "epoll is only available on Linux",
            ))
        }
        BackendKind::Poll => Box::new(poll::Poll::new()),
        BackendKind::Select => Box::new(select::Select::new()),
        BackendKind::Auto => unreachable!("resolve() never returns Auto"),
    })
}

/// Milliseconds for epoll_wait / poll: rounded up, `-1` for "forever", capped at `i32::MAX`.
pub(crate) fn timeout_ms(timeout: Option<Duration>) -> i32 {
    match timeout {
        None => -1,
        Some(d) => {
            let ms = d.as_nanos().div_ceil(1_000_000);
            ms.min(i32::MAX as u128) as i32
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_round_up_to_the_millisecond() {
        assert_eq!(timeout_ms(None), -1);
        assert_eq!(timeout_ms(Some(Duration::ZERO)), 0);
        assert_eq!(timeout_ms(Some(Duration::from_nanos(1))), 1);
        assert_eq!(timeout_ms(Some(Duration::from_micros(1500))), 2);
        assert_eq!(timeout_ms(Some(Duration::from_millis(7))), 7);
        assert_eq!(timeout_ms(Some(Duration::from_secs(1 << 40))), i32::MAX);
    }

    #[test]
    fn failures_fold_into_readable_and_writable() {
        let t = Token(7);
        let ev = |r, w| {
            Some(Event {
                token: t,
                readable: r,
                writable: w,
            })
        };
        assert_eq!(
            Event::ready(t, false, false, false),
            None,
            "nothing ready, no event"
        );
        assert_eq!(Event::ready(t, true, false, false), ev(true, false));
        assert_eq!(Event::ready(t, false, true, false), ev(false, true));
        assert_eq!(Event::ready(t, false, false, true), ev(true, true));
        assert_eq!(Event::ready(t, true, false, true), ev(true, true));
    }

    #[test]
    fn backend_names_round_trip() {
        for k in [
            BackendKind::Epoll,
            BackendKind::Poll,
            BackendKind::Select,
            BackendKind::Auto,
        ] {
            assert_eq!(k.name().parse::<BackendKind>(), Ok(k));
        }
        assert!("kqueue".parse::<BackendKind>().is_err());
    }
}
