//! `--keepalive DUR` (SPEC §10): a peer that vanished without FIN or RST frees its slot.
//! First probe after DUR of silence, then 3 probes 10 s apart: gone after DUR + 30 s.
//!
//! Set once on each TCP *listener*, not on every accepted connection: Linux copies a
//! listener's SO_KEEPALIVE and TCP_KEEP* settings into each connection it accepts and arms
//! the keepalive timer at once (tcp_create_openreq_child), so a connection costs no extra
//! system call for it (four setsockopt calls per accept otherwise: 15 calls per short
//! connection instead of 11, see BENCHMARKS.md).
//!
//! The copy is made when the kernel creates the connection, so a connection already queued
//! when the option was set lacks it: under socket activation, the one that started us always
//! is. The accept loop gives the option itself ([`apply_to_connection`]) to the connections
//! a listener yields before its first EAGAIN; every later one was created after the option.

use std::io;
use std::os::fd::AsFd;
use std::time::Duration;

use nix::sys::socket::AddressFamily;
use nix::sys::socket::{getsockname, setsockopt, sockopt, SockaddrLike, SockaddrStorage};

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

/// Apply `--keepalive` to a listener (and so to every connection it accepts): on with
/// `Some(idle)`, off with `None` (also on a socket systemd handed over with `KeepAlive=`).
/// Unix-socket listeners are left alone: keepalive is a TCP matter.
pub fn apply_to_listener(fd: &impl AsFd, idle: Option<Duration>) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let addr: SockaddrStorage = getsockname(fd.as_fd().as_raw_fd())?;
    if !matches!(
        addr.family(),
        Some(AddressFamily::Inet | AddressFamily::Inet6)
    ) {
        return Ok(());
    }
    apply_to_connection(fd, idle)
}

/// Apply `--keepalive` to one accepted TCP connection (on with `Some(idle)`, off with
/// `None`), for a connection that may predate its listener's option.
pub fn apply_to_connection(fd: &impl AsFd, idle: Option<Duration>) -> io::Result<()> {
    match idle {
        Some(idle) => enable(fd, idle),
        None => Ok(setsockopt(fd, sockopt::KeepAlive, &false)?),
    }
}

/// Turn keepalive on for a TCP socket.
pub fn enable(fd: &impl AsFd, idle: Duration) -> io::Result<()> {
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

    /// What the listener is given, every connection it accepts has (the kernel copies it).
    #[test]
    fn accepted_connections_inherit_the_listeners_settings() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        apply_to_listener(&l, Some(Duration::from_secs(300))).unwrap();
        let _c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let fd = l.accept().unwrap().0;
        assert!(getsockopt(&fd, sockopt::KeepAlive).unwrap());
        assert_eq!(getsockopt(&fd, sockopt::TcpKeepIdle).unwrap(), 300);
        assert_eq!(getsockopt(&fd, sockopt::TcpKeepInterval).unwrap(), 10);
        assert_eq!(getsockopt(&fd, sockopt::TcpKeepCount).unwrap(), 3);
        apply_to_listener(&l, None).unwrap();
        let _c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        assert!(!getsockopt(&l.accept().unwrap().0, sockopt::KeepAlive).unwrap());
    }

    /// The kernel copies the option at connection creation only: one queued before the
    /// listener got it lacks it until it is given the option itself.
    #[test]
    fn connections_queued_before_the_option_need_it_themselves() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let _c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        apply_to_listener(&l, Some(Duration::from_secs(300))).unwrap();
        let fd = l.accept().unwrap().0;
        assert!(!getsockopt(&fd, sockopt::KeepAlive).unwrap());
        apply_to_connection(&fd, Some(Duration::from_secs(90))).unwrap();
        assert!(getsockopt(&fd, sockopt::KeepAlive).unwrap());
        assert_eq!(getsockopt(&fd, sockopt::TcpKeepIdle).unwrap(), 90);
        apply_to_connection(&fd, None).unwrap();
        assert!(!getsockopt(&fd, sockopt::KeepAlive).unwrap());
    }

    #[test]
    fn unix_listeners_are_left_alone() {
        let dir = std::env::temp_dir().join(format!("echo-mux-ka-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let l = std::os::unix::net::UnixListener::bind(&dir).unwrap();
        apply_to_listener(&l, Some(Duration::from_secs(60))).unwrap();
        let _ = std::fs::remove_file(&dir);
    }
}
