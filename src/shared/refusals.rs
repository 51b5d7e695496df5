//! Refusals per reason in a worker's slot (SPEC §10 with `--workers`): the worker counts,
//! the supervisor alone logs the once-a-second line for the whole daemon.
//!
//! Per reason: connections and datagrams refused (single-writer counters, like the rest of
//! the slot) and the latest refused peer as an example. The example is four words and a
//! family, so it is guarded by a seqlock: the owner makes the sequence odd, writes, makes it
//! even again; a reader retries a few times when it saw an odd or changed sequence and
//! otherwise goes without this example. A worker stopped or killed in the middle of a write
//! leaves the sequence odd: the supervisor then never waits, it just has no example from it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use super::{Reason, REASONS};
use crate::net::addr::Peer;

const NONE: u32 = 0;
const UNIX: u32 = 1;
const V4: u32 = 4;
const V6: u32 = 6;

/// One reason's refusals in one worker's slot. All-zero is the valid initial state.
#[derive(Debug, Default)]
#[repr(C)]
pub(super) struct Cell {
    conns: AtomicU64,
    datagrams: AtomicU64,
    seq: AtomicU32,
    family: AtomicU32,
    addr: [AtomicU32; 4],
}

/// What a reader sees of one reason in one slot.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Refusals {
    /// Connections refused since the slot was prepared.
    pub conns: u64,
    /// Datagrams refused since the slot was prepared.
    pub datagrams: u64,
    /// The latest refused peer, if it could be read whole.
    pub example: Option<Peer>,
}

/// Every reason's cell, at the reason's index.
#[derive(Debug, Default)]
#[repr(C)]
pub(super) struct Cells([Cell; REASONS]);

impl Cells {
    /// Count one refusal of `peer` for `reason`. **Owner only.**
    pub(super) fn record(&self, reason: Reason, peer: Peer, datagram: bool) {
        let c = &self.0[reason as usize];
        let (family, words) = encode(peer);
        let seq = c.seq.load(Ordering::Relaxed);
        c.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        c.family.store(family, Ordering::Relaxed);
        for (a, w) in c.addr.iter().zip(words) {
            a.store(w, Ordering::Relaxed);
        }
        c.seq.store(seq.wrapping_add(2), Ordering::Release);
        let n = if datagram { &c.datagrams } else { &c.conns };
        n.store(n.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    }

    /// `reason`'s counts and latest example, from any process; never waits.
    pub(super) fn read(&self, reason: Reason) -> Refusals {
        let c = &self.0[reason as usize];
        let conns = c.conns.load(Ordering::Relaxed);
        let datagrams = c.datagrams.load(Ordering::Relaxed);
        let mut example = None;
        for _ in 0..4 {
            let before = c.seq.load(Ordering::Acquire);
            if before % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let family = c.family.load(Ordering::Relaxed);
            let words = c.addr.each_ref().map(|a| a.load(Ordering::Relaxed));
            fence(Ordering::Acquire);
            if c.seq.load(Ordering::Relaxed) == before {
                example = decode(family, words);
                break;
            }
        }
        Refusals {
            conns,
            datagrams,
            example,
        }
    }

    /// Back to all-zero (supervisor only, while no worker owns the slot).
    pub(super) fn reset(&self) {
        for c in &self.0 {
            c.conns.store(0, Ordering::Relaxed);
            c.datagrams.store(0, Ordering::Relaxed);
            c.seq.store(0, Ordering::Relaxed);
            c.family.store(NONE, Ordering::Relaxed);
            for a in &c.addr {
                a.store(0, Ordering::Relaxed);
            }
        }
    }
}

fn encode(peer: Peer) -> (u32, [u32; 4]) {
    match peer.ip() {
        None => (UNIX, [0; 4]),
        Some(IpAddr::V4(a)) => (V4, [u32::from(a), 0, 0, 0]),
        Some(IpAddr::V6(a)) => {
            let b = a.octets();
            let w = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
            (V6, [w(0), w(4), w(8), w(12)])
        }
    }
}

fn decode(family: u32, w: [u32; 4]) -> Option<Peer> {
    let ip = match family {
        UNIX => return Some(Peer::Unix),
        V4 => IpAddr::V4(Ipv4Addr::from(w[0])),
        V6 => {
            let mut b = [0u8; 16];
            for (i, word) in w.iter().enumerate() {
                b[4 * i..4 * i + 4].copy_from_slice(&word.to_be_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(Peer::Ip(SocketAddr::new(ip, 0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_the_latest_example_per_reason() {
        let cells = Cells::default();
        assert_eq!(cells.read(Reason::Denied), Refusals::default());
        let v4: SocketAddr = "192.0.2.7:4000".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::9]:4000".parse().unwrap();
        cells.record(Reason::Denied, Peer::Ip(v4), false);
        cells.record(Reason::Denied, Peer::Ip(v4), true);
        cells.record(Reason::MaxClients, Peer::Unix, false);
        let d = cells.read(Reason::Denied);
        assert_eq!((d.conns, d.datagrams), (1, 1));
        assert_eq!(d.example.and_then(|p| p.ip()), Some(v4.ip()));
        cells.record(Reason::Denied, Peer::Ip(v6), false);
        let d = cells.read(Reason::Denied);
        assert_eq!(
            (d.conns, d.example.and_then(|p| p.ip())),
            (2, Some(v6.ip()))
        );
        assert_eq!(cells.read(Reason::MaxClients).example, Some(Peer::Unix));
        cells.reset();
        assert_eq!(cells.read(Reason::Denied), Refusals::default());
    }

    #[test]
    fn a_writer_stopped_mid_example_costs_the_example_only() {
        let cells = Cells::default();
        let v4: SocketAddr = "192.0.2.7:4000".parse().unwrap();
        cells.record(Reason::Denied, Peer::Ip(v4), false);
        // As if the owner had stopped between the two sequence stores.
        cells.0[Reason::Denied as usize]
            .seq
            .fetch_add(1, Ordering::Relaxed);
        let d = cells.read(Reason::Denied);
        assert_eq!((d.conns, d.example), (1, None));
    }
}
