//! `--keepalive DUR` (SPEC §10): a peer that vanished without FIN or RST frees its slot.
//! First probe after DUR of silence, then 3 probes 10 s apart: gone after DUR + 30 s.

use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;

use nix::sys::socket::{setsockopt, sockopt};

/// Seconds between probes once probing has started.
pub const INTERVAL_SECS: u32 = 10;
/// Unanswered probes before the kernel gives up on the peer.
pub const PROBES: u32 = 3;
/// Linux refuses TCP_KEEPIDLE above this many seconds (MAX_TCP_KEEPIDLE).
pub const MAX_IDLE_SECS: u64 = 32_767;

/// The TCP_KEEPIDLE for `dur`: whole seconds, rounded up, at least 1.
pub fn idle_secs(dur: Duration) -> u32 {
    let secs = dur.as_secs() + u64::from(dur.subsec_nanos() > 0);
    secs.clamp(1, MAX_IDLE_SECS) as u32
}

/// Turn keepalive on for an accepted TCP connection.
pub fn enable(fd: &OwnedFd, idle: Duration) -> io::Result<()> {
    setsockopt(fd, sockopt::KeepAlive, &true)?;
    setsockopt(fd, sockopt::TcpKeepIdle, &idle_secs(idle))?;
    setsockopt(fd, sockopt::TcpKeepInterval, &INTERVAL_SECS)?;
    setsockopt(fd, sockopt::TcpKeepCount, &PROBES)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::getsockopt;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn rounds_up_to_whole_seconds() {
        assert_eq!(idle_secs(Duration::from_millis(250)), 1);
        assert_eq!(idle_secs(Duration::from_millis(1500)), 2);
        assert_eq!(idle_secs(Duration::from_secs(300)), 300);
        assert_eq!(idle_secs(Duration::from_secs(1 << 20)), 32_767);
    }

    #[test]
    fn options_reach_the_socket() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let _c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let fd = OwnedFd::from(l.accept().unwrap().0);
        enable(&fd, Duration::from_secs(300)).unwrap();
        assert!(getsockopt(&fd, sockopt::KeepAlive).unwrap());
        assert_eq!(getsockopt(&fd, sockopt::TcpKeepIdle).unwrap(), 300);
        assert_eq!(getsockopt(&fd, sockopt::TcpKeepInterval).unwrap(), 10);
        assert_eq!(getsockopt(&fd, sockopt::TcpKeepCount).unwrap(), 3);
    }
}
