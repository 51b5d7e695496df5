//! Loop detection (SPEC §9): two echo servers on any ports answer each other forever once one
//! forged datagram starts them. The sign is a source whose datagrams are, many times in a row
//! and in quick succession, replies we have just sent it: exactly (a raw echo server sent our
//! reply back) or wrapped as `Echo=><our reply less its \n> at <ctime>\n` (a stamp-mode one).
//! Such a source gets no answer for [`MUTE`], which ends the exchange from our side.
//!
//! Memory is fixed at start, nothing is allocated per datagram:
//! - **Replies sent** ([`Sent`]): a 4-way set-associative table of 64-bit keys, each the
//!   destination's address mixed with a hash of the reply (less its line end), the oldest way of
//!   a set replaced first. It holds the last few thousand replies, so a loop carrying many
//!   datagrams at once (an attacker may forge twenty) is recognised as well as one: a returning
//!   datagram need not be the *last* reply, only a recent one.
//! - **Suspects** ([`Peers`]): a small 4-way table keyed by source address, entered only by a
//!   source whose datagram matched a reply: its run of matches and when the run began, or
//!   until when it is not answered. Any other datagram from it ends the run.
//!
//! A client sending varied payloads never matches; one that repeats the same payload (a health
//! check) matches, but a run needs [`RUN`] matches within [`WINDOW`], so only a source
//! echoing our replies at least 32 times a second is taken for a loop. (A window, not a bound
//! on each gap: on a loaded machine one round trip of a real loop may take long.) The
//! hash is 64 bits, four lanes of multiply-rotate over 32-byte blocks: not cryptographic (a
//! source can only make itself look like a loop), fast enough to run on every datagram.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::warn;

use super::reply::strip_line_end;

/// Matches in a row that make a source a loop.
pub const RUN: u32 = 64;
/// The [`RUN`] matches must come within this time of the run's first.
pub const WINDOW: Duration = Duration::from_secs(2);
/// How long a loop gets no answer.
pub const MUTE: Duration = Duration::from_secs(60);

/// Sets of [`WAYS`] replies remembered (a power of two).
const SENT_SETS: usize = 1024;
/// Sets of [`WAYS`] suspects (a power of two).
const PEER_SETS: usize = 64;
const WAYS: usize = 4;

/// Stamp mode's framing, as a stamp-mode peer wraps our reply.
const PREFIX: &[u8] = b"Echo=>";
const AT: &[u8] = b" at ";
/// `Echo=>` + ` at ` + 24 bytes of ctime + `\n`.
const WRAP: usize = PREFIX.len() + AT.len() + 24 + 1;

/// The detector of one worker.
pub struct Loops {
    sent: Box<Sent>,
    peers: Box<Peers>,
}

/// What [`Loops::check`] found.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Verdict {
    /// Answer it. `key` is what [`Loops::sent_key`] takes once a raw-mode reply (the
    /// datagram itself) went back to the source.
    Answer {
        /// The source's address and the datagram's [`hash`] (less its line end), mixed.
        key: u64,
    },
    /// A loop, or a source still muted for being one: no answer.
    Silent,
}

impl Default for Loops {
    fn default() -> Self {
        Loops::new()
    }
}

impl Loops {
    /// The tables, allocated once.
    pub fn new() -> Loops {
        let free = Peer {
            who: 0,
            run: 0,
            since: Instant::now(),
            muted_until: None,
        };
        Loops {
            sent: Box::new(Sent {
                keys: [[0; WAYS]; SENT_SETS],
                next: [0; SENT_SETS],
            }),
            peers: Box::new(Peers {
                slots: [[free; WAYS]; PEER_SETS],
            }),
        }
    }

    /// A datagram `data` arrived from `from` at `now`: is it one of our replies coming back?
    #[inline]
    pub fn check(&mut self, from: SocketAddr, data: &[u8], now: Instant) -> Verdict {
        let who = addr_hash(from);
        let core = strip_line_end(data);
        let key = key(who, self::hash(core));
        let mut echo = self.sent.contains(key);
        if !echo {
            if let Some(inner) = unwrap_stamp(data) {
                echo = self.sent.contains(self::key(who, self::hash(inner)));
            }
        }
        let peer = self.peers.find(who);
        let Some(p) = peer else {
            if echo {
                self.peers.insert(who, now);
            }
            return Verdict::Answer { key };
        };
        if let Some(until) = p.muted_until {
            if now < until {
                return Verdict::Silent;
            }
            p.muted_until = None;
            p.run = 0;
        }
        if !echo {
            p.run = 0;
            return Verdict::Answer { key };
        }
        if p.run == 0 || now.saturating_duration_since(p.since) > WINDOW {
            (p.run, p.since) = (1, now);
        } else {
            p.run += 1;
        }
        if p.run < RUN {
            return Verdict::Answer { key };
        }
        p.muted_until = Some(now + MUTE);
        warn!(
            "udp: {} echoes our replies back: not answering it for {}s",
            crate::access::fold_socket(from),
            MUTE.as_secs()
        );
        Verdict::Silent
    }

    /// A raw-mode reply went back to the source of a datagram that [`Loops::check`] gave `key`.
    #[inline]
    pub fn sent_key(&mut self, key: u64) {
        self.sent.insert(key);
    }

    /// A reply went to `to`; `hash` is [`hash`] of it less its line end.
    pub fn sent(&mut self, to: SocketAddr, hash: u64) {
        self.sent.insert(key(addr_hash(to), hash));
    }
}

/// The replies sent lately, as keys.
struct Sent {
    keys: [[u64; WAYS]; SENT_SETS],
    /// The way of each set to replace next.
    next: [u8; SENT_SETS],
}

impl Sent {
    fn contains(&self, key: u64) -> bool {
        self.keys[key as usize % SENT_SETS].contains(&key)
    }

    fn insert(&mut self, key: u64) {
        let set = key as usize % SENT_SETS;
        if self.keys[set].contains(&key) {
            return;
        }
        let way = self.next[set] as usize;
        self.keys[set][way] = key;
        self.next[set] = ((way + 1) % WAYS) as u8;
    }
}

/// Sources that sent back one of our replies lately.
struct Peers {
    slots: [[Peer; WAYS]; PEER_SETS],
}

#[derive(Clone, Copy)]
struct Peer {
    /// [`addr_hash`] of the source; 0 = free.
    who: u64,
    /// Matches in a row.
    run: u32,
    /// When the run's first match came.
    since: Instant,
    /// Not answered until then.
    muted_until: Option<Instant>,
}

impl Peers {
    fn set(who: u64) -> usize {
        (who >> 32) as usize % PEER_SETS
    }

    fn find(&mut self, who: u64) -> Option<&mut Peer> {
        self.slots[Self::set(who)].iter_mut().find(|p| p.who == who)
    }

    /// Enter a source with a run of one match. The way replaced: a free one, else the one whose
    /// run began first among those not muted, else the one whose mute ends first.
    fn insert(&mut self, who: u64, now: Instant) {
        let set = &mut self.slots[Self::set(who)];
        let victim = set
            .iter_mut()
            .min_by_key(|p| match (p.who, p.muted_until) {
                (0, _) => (0, None),
                (_, None) => (1, Some(p.since)),
                (_, Some(until)) => (2, Some(until)),
            })
            .expect("a set has ways");
        *victim = Peer {
            who,
            run: 1,
            since: now,
            muted_until: None,
        };
    }
}

/// The source's address and port, hashed; never 0 (a free slot).
fn addr_hash(a: SocketAddr) -> u64 {
    let h = match a {
        SocketAddr::V4(v4) => u64::from(u32::from(*v4.ip())) << 16 | u64::from(v4.port()),
        SocketAddr::V6(v6) => {
            let ip = u128::from(*v6.ip());
            let hi = fmix((ip >> 64) as u64 ^ K[2]);
            hi ^ (ip as u64).rotate_left(16) ^ u64::from(v6.port()) ^ u64::from(v6.scope_id()) << 32
        }
    };
    fmix(h ^ K[3]) | 1
}

/// The key of a reply with hash `hash` to the source with [`addr_hash`] `who`; never 0.
fn key(who: u64, hash: u64) -> u64 {
    fmix(who ^ hash.rotate_left(17).wrapping_mul(K[1])) | 1
}

/// What a stamp-mode echo server makes of a datagram: `Echo=>` + it (less its line end) +
/// ` at ` + 24 bytes of ctime + `\n`. Returns that inner datagram, when `data` has this shape.
fn unwrap_stamp(data: &[u8]) -> Option<&[u8]> {
    let n = data.len();
    if n < WRAP || !data.starts_with(PREFIX) || data[n - 1] != b'\n' {
        return None;
    }
    let at = n - 1 - 24 - AT.len();
    (&data[at..at + AT.len()] == AT).then(|| &data[PREFIX.len()..at])
}

/// The hash of `bytes` (as [`Fold`] over them in one piece).
pub fn hash(bytes: &[u8]) -> u64 {
    let mut f = Fold::new();
    f.write(bytes);
    f.finish()
}

const K: [u64; 4] = [
    0x9e37_79b9_7f4a_7c15,
    0xc2b2_ae3d_27d4_eb4f,
    0x1656_67b1_9e37_79f9,
    0xd6e8_feb8_6659_fd93,
];

/// A streaming 64-bit hash: writing `a` then `b` gives what writing `a ++ b` does, so a stamp
/// reply, sent as pieces, hashes as the one datagram it is on the wire. Four independent
/// lanes of xor-multiply-rotate over 32-byte blocks (the multiplications overlap), the lanes
/// and the length folded together at the end.
pub struct Fold {
    lanes: [u64; 4],
    buf: [u8; 32],
    used: usize,
    len: u64,
}

impl Fold {
    /// An empty hash.
    pub fn new() -> Fold {
        Fold {
            lanes: K,
            buf: [0; 32],
            used: 0,
            len: 0,
        }
    }

    #[inline]
    fn block(lanes: &mut [u64; 4], b: &[u8]) {
        for (i, lane) in lanes.iter_mut().enumerate() {
            let w = u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
            *lane = (*lane ^ w).wrapping_mul(K[i] | 1).rotate_left(29);
        }
    }

    /// Append `bytes`.
    pub fn write(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len() as u64;
        if self.used > 0 {
            let take = (32 - self.used).min(bytes.len());
            self.buf[self.used..self.used + take].copy_from_slice(&bytes[..take]);
            self.used += take;
            bytes = &bytes[take..];
            if self.used < 32 {
                return;
            }
            let buf = self.buf;
            Self::block(&mut self.lanes, &buf);
            self.used = 0;
        }
        let mut blocks = bytes.chunks_exact(32);
        for b in &mut blocks {
            Self::block(&mut self.lanes, b);
        }
        let rest = blocks.remainder();
        self.buf[..rest.len()].copy_from_slice(rest);
        self.used = rest.len();
    }

    /// The hash of everything written.
    pub fn finish(&self) -> u64 {
        let mut lanes = self.lanes;
        if self.used > 0 {
            let mut last = [0u8; 32];
            last[..self.used].copy_from_slice(&self.buf[..self.used]);
            Self::block(&mut lanes, &last);
        }
        // The lanes' products are independent (they overlap in the pipeline); one finaliser.
        let mut h = self.len.wrapping_mul(K[0]);
        for (lane, k) in lanes.iter().zip(K) {
            h ^= (lane ^ k.rotate_left(7))
                .wrapping_mul(k | 1)
                .rotate_left(31);
        }
        fmix(h)
    }
}

impl Default for Fold {
    fn default() -> Self {
        Fold::new()
    }
}

/// A 64-bit finaliser: every input bit affects every output bit.
fn fmix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Send `reply` to `to`, as the socket would after answering.
    fn sent_raw(l: &mut Loops, to: SocketAddr, reply: &[u8]) {
        l.sent(to, hash(strip_line_end(reply)));
    }

    #[test]
    fn the_hash_streams_and_tells_bytes_apart() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 31 % 251) as u8).collect();
        let whole = hash(&data);
        for cuts in [[0, 0], [1, 2], [31, 32], [32, 64], [5, 999], [33, 70]] {
            let mut f = Fold::new();
            f.write(&data[..cuts[0]]);
            f.write(&data[cuts[0]..cuts[1]]);
            f.write(&data[cuts[1]..]);
            assert_eq!(f.finish(), whole, "{cuts:?}");
        }
        let mut other = data.clone();
        other[500] ^= 1;
        assert_ne!(hash(&other), whole);
        assert_ne!(hash(&data[..999]), whole);
        assert_ne!(hash(b""), hash(b"\0"), "the length counts");
        assert_ne!(hash(&[0; 32]), hash(&[0; 33]));
    }

    #[test]
    fn a_raw_echo_loop_is_silenced_after_a_run() {
        let mut l = Loops::new();
        let peer = sa("192.0.2.7:7007");
        let t0 = Instant::now();
        let d = b"forged".to_vec();
        // The first datagram is not one of ours; then the peer keeps returning our reply.
        for i in 0..RUN {
            let now = t0 + Duration::from_micros(i as u64 * 30);
            assert!(
                matches!(l.check(peer, &d, now), Verdict::Answer { .. }),
                "answered {i}"
            );
            sent_raw(&mut l, peer, &d);
        }
        let now = t0 + Duration::from_millis(3);
        assert_eq!(l.check(peer, &d, now), Verdict::Silent);
        // Muted: even new payloads get no answer, until the mute ends.
        assert_eq!(l.check(peer, b"other", now + MUTE / 2), Verdict::Silent);
        assert!(matches!(
            l.check(peer, b"other", now + MUTE),
            Verdict::Answer { .. }
        ));
        // Another source is not affected.
        assert!(matches!(
            l.check(sa("192.0.2.8:7007"), &d, now),
            Verdict::Answer { .. }
        ));
    }

    #[test]
    fn a_loop_slowed_down_by_a_loaded_machine_is_still_caught() {
        // Round trips of 10 ms, every tenth held up for 100 ms by the scheduler.
        let mut l = Loops::new();
        let peer = sa("127.0.0.1:40001");
        let mut now = Instant::now();
        for i in 0..RUN {
            assert!(matches!(l.check(peer, b"x", now), Verdict::Answer { .. }));
            sent_raw(&mut l, peer, b"x");
            now += Duration::from_millis(if i % 10 == 9 { 100 } else { 10 });
        }
        assert_eq!(l.check(peer, b"x", now), Verdict::Silent);
    }

    #[test]
    fn twenty_datagrams_in_flight_are_recognised_too() {
        let mut l = Loops::new();
        let peer = sa("[2001:db8::7]:9");
        let t0 = Instant::now();
        let chains: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 1400]).collect();
        let mut silent_at = None;
        'rounds: for round in 0..10u32 {
            for (k, d) in chains.iter().enumerate() {
                let now = t0 + Duration::from_micros(u64::from(round) * 100 + k as u64);
                match l.check(peer, d, now) {
                    Verdict::Answer { .. } => sent_raw(&mut l, peer, d),
                    Verdict::Silent => {
                        silent_at = Some(round);
                        break 'rounds;
                    }
                }
            }
        }
        // 20 new, then 64 returns: silent in the fourth round.
        assert_eq!(silent_at, Some(4));
    }

    #[test]
    fn a_stamp_loop_is_recognised_through_the_wrapping() {
        // Our stamp reply to `p` is Echo=>p at T\n; a stamp peer sends back
        // Echo=>Echo=>p at T at T2\n, whose payload is our reply less its \n.
        let mut l = Loops::new();
        let peer = sa("127.0.0.2:40000");
        let t0 = Instant::now();
        let time = *b"Sat Dec  5 18:24:00 2026";
        let mut datagram = b"hello\n".to_vec();
        let mut verdicts = Vec::new();
        for i in 0..=RUN {
            let now = t0 + Duration::from_micros(u64::from(i) * 50);
            let v = l.check(peer, &datagram, now);
            verdicts.push(v);
            if v == Verdict::Silent {
                break;
            }
            let payload = strip_line_end(&datagram).to_vec();
            let mut f = Fold::new();
            for piece in [PREFIX, &payload, AT, &time] {
                f.write(piece);
            }
            l.sent(peer, f.finish());
            let ours = [PREFIX, &payload, AT, &time, b"\n"].concat();
            // Alternate between a stamp peer (wraps) and a raw one (returns it as it is).
            datagram = if i % 2 == 0 {
                [PREFIX, strip_line_end(&ours), AT, &time, b"\n"].concat()
            } else {
                ours
            };
        }
        assert_eq!(verdicts.len() as u32, RUN + 1);
        assert_eq!(verdicts.last(), Some(&Verdict::Silent));
    }

    #[test]
    fn varied_payloads_and_slow_repeats_are_never_a_loop() {
        let mut l = Loops::new();
        let fast = sa("10.0.0.1:5000");
        let slow = sa("10.0.0.2:5000");
        let t0 = Instant::now();
        for i in 0..100_000u32 {
            let now = t0 + Duration::from_nanos(u64::from(i) * 100);
            let d = i.to_le_bytes().repeat(16);
            assert!(matches!(l.check(fast, &d, now), Verdict::Answer { .. }));
            sent_raw(&mut l, fast, &d);
        }
        // A health check: the same "ping" once a second, or 25 times a second, for ever.
        for every in [Duration::from_secs(1), Duration::from_millis(40)] {
            let mut l = Loops::new();
            for i in 0..2000u32 {
                let now = t0 + every * i;
                let v = l.check(slow, b"ping", now);
                assert!(matches!(v, Verdict::Answer { .. }), "every {every:?}: {i}");
                sent_raw(&mut l, slow, b"ping");
            }
        }
        // A run broken by one datagram that is not ours starts again.
        let mixed = sa("10.0.0.3:5000");
        for i in 0..(RUN * 4) {
            let now = t0 + Duration::from_micros(u64::from(i));
            let d: &[u8] = if i % (RUN / 2) == 0 { b"new" } else { b"same" };
            let d = if d == b"new" {
                [d, &i.to_le_bytes()].concat()
            } else {
                d.to_vec()
            };
            assert!(
                matches!(l.check(mixed, &d, now), Verdict::Answer { .. }),
                "{i}"
            );
            sent_raw(&mut l, mixed, &d);
        }
    }

    /// The detector's cost per datagram (check + the reply's insert), raw mode, varied
    /// payloads from 64 sources: `cargo test --release --lib loops_cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement: prints ns per datagram"]
    fn loops_cost() {
        let peers: Vec<SocketAddr> = (0..64u16)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], 40_000 + i)))
            .collect();
        for size in [64usize, 1400, 65_507] {
            let mut l = Loops::new();
            let mut data = vec![0u8; size];
            let n: u32 = if size > 10_000 { 20_000 } else { 1_000_000 };
            let now = Instant::now();
            let t0 = cpu_ns();
            for i in 0..n {
                data[..4].copy_from_slice(&i.to_le_bytes());
                let peer = peers[i as usize % peers.len()];
                if let Verdict::Answer { key } = l.check(peer, &data, now) {
                    l.sent_key(key);
                }
            }
            let ns = (cpu_ns() - t0) as f64 / f64::from(n);
            println!("{size} B: {ns:.1} ns of CPU per datagram");
        }
    }

    /// This thread's CPU time (a loaded machine makes wall time meaningless).
    fn cpu_ns() -> u64 {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec, which `t` is.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
        t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
    }
}
