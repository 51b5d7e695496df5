//! Signals reach the loop through a self-pipe registered with the same backend as every
//! socket, so epoll, poll and select all wake for them.
//!
//! For each signal, signal-hook runs two async-signal-safe actions in registration order:
//! set that signal's flag, then write one byte to the pipe (saving and restoring `errno`).
//! The loop drains the pipe and swaps the flags, so no signal is lost between the two.
//! SIGPIPE is not handled here: the Rust runtime ignores it, and sends use MSG_NOSIGNAL.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook::SigId;

/// What the loop is asked to do.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Request {
    /// SIGTERM or SIGINT: drain (or, the second time, stop at once).
    Terminate(&'static str),
    /// SIGUSR1: log a stats line.
    Stats,
    /// SIGHUP: logged and ignored.
    Hangup,
}

const HANDLED: [(libc::c_int, Request); 4] = [
    (SIGTERM, Request::Terminate("SIGTERM")),
    (SIGINT, Request::Terminate("SIGINT")),
    (SIGUSR1, Request::Stats),
    (SIGHUP, Request::Hangup),
];

/// The installed handlers and the read end of their pipe. Dropping it uninstalls them.
pub struct Signals {
    read: UnixStream,
    flags: Vec<(Arc<AtomicBool>, Request)>,
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
            flags: Vec::new(),
            ids: Vec::new(),
        };
        for (sig, request) in HANDLED {
            let flag = Arc::new(AtomicBool::new(false));
            signals
                .ids
                .push(signal_hook::flag::register(sig, Arc::clone(&flag))?);
            // Each registration owns (and closes on unregister) its own copy of the write end.
            signals.ids.push(signal_hook::low_level::pipe::register(
                sig,
                write.try_clone()?,
            )?);
            signals.flags.push((flag, request));
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
        self.flags
            .iter()
            .filter(|(flag, _)| flag.swap(false, Ordering::SeqCst))
            .map(|&(_, request)| request)
            .collect()
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}
