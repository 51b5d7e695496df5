//! Loop protection (SPEC §9; the echo/chargen storm, CVE-1999-0103): datagrams that must not
//! be answered, and the pacing of the log lines about them.
//!
//! A spoofed datagram "from" another echo-like service (or from ourselves) would otherwise
//! start a ping-pong that never ends: echo answers chargen answers echo… So no answer goes to
//! the well-known ports of the services that answer anything (0, 7 echo, 13 daytime,
//! 19 chargen, 37 time), nor to a port one of our own UDP listeners uses (on any address: the
//! same service on another host), nor to a source that
//! cannot be a unicast peer. A datagram sent to a multicast or the limited broadcast address
//! is not answered either (the Fraggle amplification), where pktinfo tells us (wildcard
//! listeners); a reply to a subnet broadcast would leave from that address, which the kernel
//! refuses.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use log::{debug, info};

use super::addr::Local;
use crate::access::{fold, fold_socket};

/// Source ports that never get an answer.
pub const LOOP_PORTS: [u16; 5] = [0, 7, 13, 19, 37];
/// The info line about unanswered datagrams comes at most this often.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// Why a datagram is not answered.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Refusal {
    /// From a port of a service that answers anything.
    Port(u16),
    /// From a port one of our own listeners uses (on any address).
    Ours,
    /// From an address no reply can go to (unspecified, multicast, broadcast).
    BadSource,
    /// Sent to a broadcast or multicast address.
    NotUnicast,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Port(p) => write!(f, "source port {p}"),
            Refusal::Ours => f.write_str("the port of one of our own listeners"),
            Refusal::BadSource => f.write_str("not a unicast source"),
            Refusal::NotUnicast => f.write_str("sent to a broadcast or multicast address"),
        }
    }
}

/// Our UDP listeners' ports, and the log pacing.
#[derive(Default, Debug)]
pub struct Guard {
    own: Vec<u16>,
    logged: Option<Instant>,
    unlogged: u64,
}

impl Guard {
    /// A guard for a daemon whose UDP sockets are bound to `own`.
    pub fn new(own: impl IntoIterator<Item = SocketAddr>) -> Guard {
        Guard {
            own: own.into_iter().map(|a| a.port()).collect(),
            ..Guard::default()
        }
    }

    /// Why a datagram from `from` (sent to `local`, when known) must not be answered.
    pub fn check(&self, from: SocketAddr, local: Option<Local>) -> Option<Refusal> {
        let ip = fold(from.ip());
        if LOOP_PORTS.contains(&from.port()) {
            return Some(Refusal::Port(from.port()));
        }
        let bad_source = match ip {
            IpAddr::V4(v4) => v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast(),
            IpAddr::V6(v6) => v6.is_unspecified() || v6.is_multicast(),
        };
        if bad_source {
            return Some(Refusal::BadSource);
        }
        if local.is_some_and(|l| l.not_unicast()) {
            return Some(Refusal::NotUnicast);
        }
        // One of our own listeners' ports, whatever the address (FreeBSD inetd's check_loop):
        // the same service on another host, or ourselves on another of our addresses, would
        // answer our reply, and two such daemons would ping-pong forever.
        let ours = self.own.contains(&from.port());
        ours.then_some(Refusal::Ours)
    }

    /// Log a refused datagram: at debug every time, at info at most once a second with the
    /// number refused since the last such line.
    pub fn note(&mut self, from: SocketAddr, why: Refusal, now: Instant) {
        let from = fold_socket(from);
        debug!("udp: not answering {from}: {why}");
        self.unlogged += 1;
        if self.logged.is_some_and(|t| now < t + LOG_EVERY) {
            return;
        }
        let n = self.unlogged;
        let what = if n == 1 {
            "1 datagram".to_string()
        } else {
            format!("{n} datagrams")
        };
        info!("loop protection: not answering {what}, e.g. from {from} ({why})");
        self.logged = Some(now);
        self.unlogged = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn service_ports_and_bad_sources_are_refused() {
        let g = Guard::new([sa("127.0.0.1:5000")]);
        for p in LOOP_PORTS {
            let from = SocketAddr::new([10, 0, 0, 1].into(), p);
            assert_eq!(g.check(from, None), Some(Refusal::Port(p)));
        }
        assert_eq!(
            g.check(sa("[::ffff:10.0.0.1]:19"), None),
            Some(Refusal::Port(19))
        );
        assert_eq!(g.check(sa("10.0.0.1:8"), None), None);
        assert_eq!(g.check(sa("10.0.0.1:40000"), None), None);
        assert_eq!(g.check(sa("0.0.0.0:4000"), None), Some(Refusal::BadSource));
        assert_eq!(
            g.check(sa("255.255.255.255:4000"), None),
            Some(Refusal::BadSource)
        );
        assert_eq!(
            g.check(sa("[ff02::1]:4000"), None),
            Some(Refusal::BadSource)
        );
    }

    #[test]
    fn our_own_ports_are_refused_on_any_address() {
        let g = Guard::new([sa("127.0.0.1:5000"), sa("0.0.0.0:6000"), sa("[::]:7000")]);
        assert_eq!(g.check(sa("127.0.0.1:5000"), None), Some(Refusal::Ours));
        assert_eq!(
            g.check(sa("[::ffff:127.0.0.1]:5000"), None),
            Some(Refusal::Ours)
        );
        // Another host's service on our port (FreeBSD inetd's check_loop).
        assert_eq!(g.check(sa("127.0.0.2:5000"), None), Some(Refusal::Ours));
        assert_eq!(g.check(sa("192.0.2.7:6000"), None), Some(Refusal::Ours));
        assert_eq!(g.check(sa("[2001:db8::1]:7000"), None), Some(Refusal::Ours));
        assert_eq!(g.check(sa("192.0.2.7:7000"), None), Some(Refusal::Ours));
        let to = |ip: [u8; 4]| Local::V4(ip.into());
        assert_eq!(
            g.check(sa("192.0.2.7:6000"), Some(to([192, 0, 2, 8]))),
            Some(Refusal::Ours)
        );
        assert_eq!(
            g.check(sa("192.0.2.7:6001"), Some(to([192, 0, 2, 7]))),
            None
        );
        assert_eq!(g.check(sa("127.0.0.1:5001"), None), None);
    }

    #[test]
    fn broadcast_destinations_are_refused() {
        let g = Guard::new([sa("0.0.0.0:6000")]);
        let bcast = Local::V4([255, 255, 255, 255].into());
        assert_eq!(
            g.check(sa("192.168.1.9:4000"), Some(bcast)),
            Some(Refusal::NotUnicast)
        );
    }

    #[test]
    fn info_lines_are_paced() {
        let mut g = Guard::default();
        let t0 = Instant::now();
        g.note(sa("10.0.0.1:7"), Refusal::Port(7), t0);
        assert_eq!((g.logged, g.unlogged), (Some(t0), 0), "the first is logged");
        for i in 1..5 {
            g.note(
                sa("10.0.0.1:7"),
                Refusal::Port(7),
                t0 + Duration::from_millis(i),
            );
        }
        assert_eq!(g.unlogged, 4, "counted, not logged, within the second");
        let t1 = t0 + LOG_EVERY;
        g.note(sa("10.0.0.1:7"), Refusal::Port(7), t1);
        assert_eq!((g.logged, g.unlogged), (Some(t1), 0));
    }
}
