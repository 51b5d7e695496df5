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

use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook::SigId;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Request {
    /// SIGTERM or SIGINT: drain (or, the second time, stop at once).
    Terminate(&'static str),
    /// SIGUSR1
    Stats,
    /// SIGHUP: logged and ignored (no configuration file to reload).
    Hangup,
}

/// Handled signals; a signal's bit in the pending word is its index here.
const HANDLED: [(libc::c_int, Request); 4] = [
    (SIGTERM, Request::Terminate("SIGTERM")),
    (SIGINT, Request::Terminate("SIGINT")),
    (SIGUSR1, Request::Stats),
    (SIGHUP, Request::Hangup),
];

/// The installed handlers and their pipe. Dropping it uninstalls them.
pub struct Signals {
    read: UnixStream,
    /// Written by the handlers through its raw descriptor; kept open while they are installed.
    write: UnixStream,
    pending: Arc<AtomicU32>,
    ids: Vec<SigId>,
}

impl Signals {
    /// Install handlers for SIGTERM, SIGINT, SIGUSR1 and SIGHUP.
    pub fn install() -> io::Result<Signals> {
        let (read, write) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        let mut signals = Signals {
            read,
            write,
            pending: Arc::new(AtomicU32::new(0)),
            ids: Vec::new(),
        };
        for (bit, (sig, _)) in HANDLED.iter().enumerate() {
            let pending = Arc::clone(&signals.pending);
            let fd = signals.write.as_raw_fd();
            let action = move || {
                pending.fetch_or(1 << bit, Ordering::SeqCst);
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
            // the Arc keeps alive, and one send(2); it neither allocates nor locks.
            let id = unsafe { signal_hook::low_level::register(*sig, action) }?;
            signals.ids.push(id);
        }
        Ok(signals)
    }

    /// The descriptor to register for reading.
    pub fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// Empty the pipe and return what was signalled since the last call, in a fixed order.
    pub fn take(&mut self) -> Vec<Request> {
        let mut sink = [0u8; 64];
        while matches!(self.read.read(&mut sink), Ok(n) if n > 0) {}
        let pending = self.pending.swap(0, Ordering::SeqCst);
        HANDLED
            .iter()
            .enumerate()
            .filter(|(bit, _)| pending & (1 << bit) != 0)
            .map(|(_, &(_, request))| request)
            .collect()
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        // Before the fields drop: no handler may write to a closed (or reused) descriptor.
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}
