//! Signals reach the loop through a self-pipe registered with the same backend as every
//! socket, so epoll, poll and select all wake for them.
//!
//! Each handler does two async-signal-safe things: set its signal's bit in one shared atomic
//! word, then send one byte into the pipe (signal-hook-registry saves and restores `errno`
//! around it). The loop drains the pipe, then swaps the word to zero, so a signal arriving
//! between the two is never lost: its bit is seen now, or its byte wakes the next turn.
//! SIGPIPE is not handled here: the Rust runtime ignores it, and sends use MSG_NOSIGNAL.
//!
//! Two descriptors in all (the pipe's two ends); every handler writes to the same write end,
//! which lives exactly as long as the handlers do (see `Drop`).
//!
//! Besides the signals with a job (TERM, INT, USR1, HUP, QUIT), every catchable signal whose
//! default action would end or stop the process and that the kernel does not send for a
//! fault is handled the same way and reported once per process (SPEC §5): a stray `kill`
//! costs one info line, never the daemon. SIGTTOU and SIGTTIN are then left to the kernel
//! to ignore (see `install`).

use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1};
use signal_hook::SigId;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Request {
    /// SIGTERM or SIGINT: drain (or, the second time, stop at once).
    Terminate(&'static str),
    /// SIGUSR1
    Stats,
    /// SIGHUP: reload in place (SPEC §13); with `--workers`, every worker in turn.
    Hangup,
    /// SIGQUIT: immediate shutdown (SPEC §5): close everything, log it, exit 0.
    Quit,
    /// A stray signal (SPEC §5), the first time this process gets it: log one info line and
    /// go on. Later ones of the same signal are not reported.
    Stray(&'static str),
    /// SIGCHLD, for a process that asked for it ([`Signals::watch_children`]): reap.
    Children,
}

/// SIGCHLD's bit in the pending word, above every bit of [`handled`].
const CHILDREN: u64 = 1 << 63;

/// The catchable signals whose default action would end or stop the process, that the
/// kernel does not send for a fault, and that have no job of their own (SPEC §5): ignored,
/// with one info line the first time each arrives. The real-time signals are added to these
/// at run time (their numbers come from the C library). Faults (SEGV, BUS, FPE, ILL, ABRT,
/// TRAP, SYS) keep their default action; SIGPIPE is ignored by the Rust runtime.
const STRAY: [(libc::c_int, &str); 12] = [
    (libc::SIGUSR2, "SIGUSR2"),
    (libc::SIGALRM, "SIGALRM"),
    (libc::SIGVTALRM, "SIGVTALRM"),
    (libc::SIGPROF, "SIGPROF"),
    (libc::SIGIO, "SIGIO"),
    (libc::SIGPWR, "SIGPWR"),
    (libc::SIGXCPU, "SIGXCPU"),
    (libc::SIGXFSZ, "SIGXFSZ"),
    (libc::SIGSTKFLT, "SIGSTKFLT"),
    (libc::SIGTSTP, "SIGTSTP"),
    (libc::SIGTTIN, "SIGTTIN"),
    (libc::SIGTTOU, "SIGTTOU"),
];

/// Every handled signal with its request; a signal's bit in the pending word is its index.
fn handled() -> &'static [(libc::c_int, Request)] {
    static ALL: OnceLock<Vec<(libc::c_int, Request)>> = OnceLock::new();
    ALL.get_or_init(|| {
        let mut all = vec![
            (SIGTERM, Request::Terminate("SIGTERM")),
            (SIGINT, Request::Terminate("SIGINT")),
            (SIGUSR1, Request::Stats),
            (SIGHUP, Request::Hangup),
            (SIGQUIT, Request::Quit),
        ];
        all.extend(STRAY.map(|(sig, name)| (sig, Request::Stray(name))));
        for sig in libc::SIGRTMIN()..=libc::SIGRTMAX() {
            let name: &'static str = Box::leak(name(sig).into_boxed_str());
            all.push((sig, Request::Stray(name)));
        }
        assert!(
            all.len() < 64,
            "one bit per signal in a u64, the last for SIGCHLD"
        );
        all
    })
}

/// Every signal [`Signals::install`] handles: what must be blocked across a fork while the
/// handlers change hands.
pub fn all_handled() -> impl Iterator<Item = libc::c_int> {
    handled().iter().map(|&(sig, _)| sig)
}

/// The one info line for a stray signal's first arrival (SPEC §5).
pub fn stray_line(name: &str) -> String {
    format!("{name} received and ignored (logged the first time only)")
}

/// A signal's name: `SIGKILL`, `SIGRTMIN+6` for a real-time one, `signal 99` otherwise.
pub fn name(sig: libc::c_int) -> String {
    let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    if (min..=max).contains(&sig) {
        return format!("SIGRTMIN+{}", sig - min);
    }
    match nix::sys::signal::Signal::try_from(sig) {
        Ok(s) => s.as_str().to_string(),
        Err(_) => format!("signal {sig}"),
    }
}

/// The installed handlers and their pipe. Dropping it uninstalls them.
pub struct Signals {
    read: UnixStream,
    /// Written by the handlers through its raw descriptor; kept open while they are installed.
    write: UnixStream,
    pending: Arc<AtomicU64>,
    /// The stray signals already reported (one info line each, SPEC §5).
    seen: u64,
    ids: Vec<SigId>,
}

impl Signals {
    /// Install handlers for SIGTERM, SIGINT, SIGUSR1, SIGHUP, SIGQUIT and the stray signals.
    pub fn install() -> io::Result<Signals> {
        let (read, write) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        let mut signals = Signals {
            read,
            write,
            pending: Arc::new(AtomicU64::new(0)),
            seen: 0,
            ids: Vec::new(),
        };
        for (bit, &(sig, _)) in handled().iter().enumerate() {
            let pending = Arc::clone(&signals.pending);
            let fd = signals.write.as_raw_fd();
            // A background process writing to a terminal with `stty tostop` gets SIGTTOU
            // (reading, SIGTTIN), and the write is restarted after the handler: caught, the
            // signal would come back on every log write for ever. Ignored, the write goes
            // through (SPEC §8: never stop on terminal signals). So the first one is
            // reported and from then on the kernel ignores them.
            let to_ignore = sig == libc::SIGTTOU || sig == libc::SIGTTIN;
            let action = move || {
                pending.fetch_or(1 << bit, Ordering::SeqCst);
                if to_ignore {
                    // SAFETY: sigaction(2) is async-signal-safe; `ign` is a valid, fully
                    // initialised sigaction (SIG_IGN, empty mask, no flags).
                    unsafe {
                        let mut ign: libc::sigaction = std::mem::zeroed();
                        ign.sa_sigaction = libc::SIG_IGN;
                        libc::sigaction(sig, &ign, std::ptr::null_mut());
                    }
                }
                // SAFETY: send(2) is async-signal-safe and reads one byte of a static. `fd`
                // is open: `Drop` unregisters this action before the write end is closed.
                // A full pipe (EAGAIN) is fine: the loop is woken already.
                unsafe {
                    libc::send(
                        fd,
                        b"!".as_ptr().cast(),
                        1,
                        libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                    )
                };
            };
            // SAFETY: the action is async-signal-safe: one atomic read-modify-write on memory
            // the Arc keeps alive, sigaction(2) and send(2); it neither allocates nor locks.
            let id = unsafe { signal_hook::low_level::register(sig, action) }?;
            signals.ids.push(id);
        }
        Ok(signals)
    }

    /// Also wake the loop for SIGCHLD, through the same pipe: [`Signals::take`] then returns
    /// [`Request::Children`] (nginx's way: one more flag, not a second pipe).
    pub fn watch_children(&mut self) -> io::Result<()> {
        let pending = Arc::clone(&self.pending);
        let fd = self.write.as_raw_fd();
        let action = move || {
            pending.fetch_or(CHILDREN, Ordering::SeqCst);
            // SAFETY: as in `install`: send(2) is async-signal-safe, `fd` stays open until
            // `Drop` has unregistered this action, and a full pipe means the loop is woken.
            unsafe {
                libc::send(
                    fd,
                    b"!".as_ptr().cast(),
                    1,
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
        };
        // SAFETY: the action is async-signal-safe: one atomic read-modify-write on memory
        // the Arc keeps alive and send(2); it neither allocates nor locks.
        let id = unsafe { signal_hook::low_level::register(libc::SIGCHLD, action) }?;
        self.ids.push(id);
        Ok(())
    }

    /// The descriptor to register for reading.
    pub fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// Empty the pipe and return what was signalled since the last call, in a fixed order.
    /// A stray signal is returned the first time only.
    pub fn take(&mut self) -> Vec<Request> {
        let mut sink = [0u8; 64];
        while matches!(self.read.read(&mut sink), Ok(n) if n > 0) {}
        let pending = self.pending.swap(0, Ordering::SeqCst);
        let mut requests = first_times(pending, &mut self.seen);
        if pending & CHILDREN != 0 {
            requests.push(Request::Children);
        }
        requests
    }

    /// A reload's last step before its execve, with the handled signals blocked: a signal
    /// whose handler ran since the loop last took its requests would die with this image.
    /// Send each such signal to this process again: blocked, it stays pending across the
    /// execve and reaches the new image's handlers once they are installed and unblocked
    /// (or these ones again, if the execve fails).
    pub fn repost(&self) {
        let pending = self.pending.swap(0, Ordering::SeqCst);
        let me = std::process::id() as libc::pid_t;
        let mut again: Vec<libc::c_int> = handled()
            .iter()
            .enumerate()
            .filter(|&(bit, _)| pending & (1 << bit) != 0)
            .map(|(_, &(sig, _))| sig)
            .collect();
        if pending & CHILDREN != 0 {
            again.push(libc::SIGCHLD);
        }
        for sig in again {
            // SAFETY: kill(2) of our own pid with a valid signal number.
            unsafe { libc::kill(me, sig) };
        }
    }
}

/// The requests in `pending`, leaving out the stray signals already in `seen` (and adding
/// the new ones to it).
fn first_times(pending: u64, seen: &mut u64) -> Vec<Request> {
    let fresh = pending & !(*seen & stray_bits());
    *seen |= pending & stray_bits();
    requests(fresh)
}

/// The bits of the stray signals in a pending word.
fn stray_bits() -> u64 {
    let mut bits = 0;
    for (bit, (_, request)) in handled().iter().enumerate() {
        if matches!(request, Request::Stray(_)) {
            bits |= 1 << bit;
        }
    }
    bits
}

/// The requests in a pending word. SIGTERM and SIGINT in the same word are one stop request,
/// as two of the same signal are (the kernel merges those): otherwise a service manager's
/// SIGTERM and a terminal's SIGINT arriving together would start the drain and end it at once.
fn requests(pending: u64) -> Vec<Request> {
    let mut out: Vec<Request> = Vec::new();
    for (bit, &(_, request)) in handled().iter().enumerate() {
        if pending & (1 << bit) == 0 {
            continue;
        }
        match (request, out.first_mut()) {
            (Request::Terminate(_), Some(first @ Request::Terminate(_))) => {
                *first = Request::Terminate("SIGTERM and SIGINT");
            }
            _ => out.push(request),
        }
    }
    out
}

impl Drop for Signals {
    fn drop(&mut self) {
        // Before the fields drop: no handler may write to a closed (or reused) descriptor.
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_stop_signals_in_one_word_are_one_request() {
        assert_eq!(
            requests(0b1111),
            vec![
                Request::Terminate("SIGTERM and SIGINT"),
                Request::Stats,
                Request::Hangup
            ]
        );
        assert_eq!(requests(0b0010), vec![Request::Terminate("SIGINT")]);
        assert_eq!(
            requests(0b0101),
            vec![Request::Terminate("SIGTERM"), Request::Stats]
        );
        assert_eq!(requests(0), vec![]);
    }

    #[test]
    fn a_stray_signal_is_reported_the_first_time_only() {
        let bit = |sig| 1u64 << handled().iter().position(|&(s, _)| s == sig).unwrap();
        let (usr2, rt, quit) = (bit(libc::SIGUSR2), bit(libc::SIGRTMIN() + 6), bit(SIGQUIT));
        let mut seen = 0;
        assert_eq!(
            first_times(usr2 | rt, &mut seen),
            vec![Request::Stray("SIGUSR2"), Request::Stray("SIGRTMIN+6")]
        );
        assert_eq!(first_times(usr2 | rt, &mut seen), vec![]);
        // SIGQUIT and the others are never filtered.
        assert_eq!(first_times(quit | usr2, &mut seen), vec![Request::Quit]);
        assert_eq!(first_times(quit, &mut seen), vec![Request::Quit]);
        assert_eq!(first_times(bit(SIGUSR1), &mut seen), vec![Request::Stats]);
    }

    #[test]
    fn every_catchable_non_fault_signal_that_would_kill_is_handled() {
        let all: Vec<libc::c_int> = all_handled().collect();
        for sig in (1..=libc::SIGRTMAX()).filter(|s| !(32..libc::SIGRTMIN()).contains(s)) {
            let keeps_default = [
                libc::SIGKILL,
                libc::SIGSTOP,
                libc::SIGSEGV,
                libc::SIGBUS,
                libc::SIGFPE,
                libc::SIGILL,
                libc::SIGABRT,
                libc::SIGTRAP,
                libc::SIGSYS,
                // Harmless by default, or handled elsewhere.
                libc::SIGPIPE,
                libc::SIGCHLD,
                libc::SIGCONT,
                libc::SIGURG,
                libc::SIGWINCH,
            ];
            assert_eq!(
                all.contains(&sig),
                !keeps_default.contains(&sig),
                "{}",
                name(sig)
            );
        }
    }

    #[test]
    fn signal_names() {
        assert_eq!(name(libc::SIGKILL), "SIGKILL");
        assert_eq!(name(libc::SIGRTMIN()), "SIGRTMIN+0");
        assert_eq!(name(libc::SIGRTMIN() + 6), "SIGRTMIN+6");
        assert_eq!(name(64), format!("SIGRTMIN+{}", 64 - libc::SIGRTMIN()));
    }
}
