//! How a connection ended, and the `--log-connections` line that says so (SPEC §10):
//! `closed 192.0.2.7:53412 after 2.31s: in=120 out=120 (peer closed)`. Closing also gives
//! the connection's count back to its source (`--max-per-source`).

use std::fmt;
use std::os::fd::RawFd;

use log::{debug, info};

use super::{Server, Source};
use crate::conn::{Conn, Failure};
use crate::error::Plain;
use crate::refusal::Peer;

/// Why the server closed a connection.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum End {
    /// The client closed its side and everything it sent was answered.
    Done,
    /// A read or write failed (the connection says how: reset or other error).
    Failed,
    /// The poller refused to watch it any more.
    Poller,
    /// `--idle-timeout`.
    Idle,
    /// The drain was cut off: its deadline, a second signal, or `--shutdown-timeout 0`.
    Drain,
}

impl End {
    /// The reason as `--log-connections` names it.
    fn reason(self, failure: Option<Failure>) -> &'static str {
        match (self, failure) {
            (End::Done, _) => "peer closed",
            (End::Failed, Some(Failure::Reset)) => "reset",
            (End::Failed, _) | (End::Poller, _) => "error",
            (End::Idle, _) => "idle timeout",
            (End::Drain, _) => "drain deadline",
        }
    }
}

/// The peer as a closed line shows it: `192.0.2.7:53412`, `[2001:db8::1]:53412`, or for a
/// unix-socket client the path it connected to (`unix:/run/echo.sock`), read back from the
/// connection's own socket, so no per-connection string is kept.
struct Who(Peer, RawFd);

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use nix::sys::socket::{getsockname, UnixAddr};
        match self.0 {
            Peer::Ip(addr) => write!(f, "{addr}"),
            Peer::Unix => match getsockname::<UnixAddr>(self.1)
                .ok()
                .and_then(|a| a.path().map(|p| p.display().to_string()))
            {
                Some(path) => write!(f, "unix:{path}"),
                None => f.write_str("unix:(unnamed)"),
            },
        }
    }
}

impl Server {
    /// Close the connection in `slot` (if still open): take it off the poller, give its source's
    /// count back, and log it.
    pub(super) fn close(&mut self, slot: usize, end: End) {
        let Some(mut conn) = self.conns.remove(slot) else {
            return;
        };
        // Before the close (see the Backend contract): epoll leaves it to the close itself.
        let token = Source::Conn(slot).into();
        if let Err(e) = conn.deregister_for_close(self.backend.as_mut(), token) {
            debug!("deregistering fd {}: {}", conn.fd(), Plain(&e));
        }
        if let Some(source) = conn.source {
            self.access.release(source, self.now);
        }
        self.log_closed(&conn, end);
    }

    fn log_closed(&self, conn: &Conn, end: End) {
        let wanted = if self.config.log_connections {
            log::Level::Info
        } else {
            log::Level::Debug
        };
        if !log::log_enabled!(wanted) {
            return;
        }
        let who = Who(conn.peer, conn.fd());
        let secs = self
            .now
            .saturating_duration_since(conn.opened)
            .as_secs_f64();
        let (bytes_in, bytes_out) = (conn.bytes_in, conn.bytes_out);
        let reason = end.reason(conn.failure);
        if self.config.log_connections {
            info!("closed {who} after {secs:.2}s: in={bytes_in} out={bytes_out} ({reason})");
        } else {
            debug!(
                "conn {} (fd {}) from {who} closed after {secs:.2}s: in={bytes_in} out={bytes_out} ({reason})",
                conn.id,
                conn.fd()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons() {
        assert_eq!(End::Done.reason(None), "peer closed");
        assert_eq!(End::Failed.reason(Some(Failure::Reset)), "reset");
        assert_eq!(End::Failed.reason(Some(Failure::Error)), "error");
        assert_eq!(End::Poller.reason(None), "error");
        assert_eq!(End::Idle.reason(None), "idle timeout");
        assert_eq!(End::Drain.reason(Some(Failure::Reset)), "drain deadline");
    }
}
