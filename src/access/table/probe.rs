//! The memory of the per-source table and the words in it (see `table.rs` for the design).
//!
//! ```text
//!  Header (seed, generations, counters) │ slots: nslots × Slot │ shares of worker 1 │ … │ of worker W
//! ```
//!
//! Everything is an atomic in one `MAP_SHARED` anonymous mapping made before any fork, so
//! every worker (and every replacement) sees the same words. All-zero is the valid initial
//! state, so pages are only made resident as sources land in them.

use std::sync::atomic::{AtomicU32, AtomicU64};

use super::SourceKey;

/// A slot's state word: `version (32) | gen (20) | worker (10) | tag (2)`.
pub(super) const FREE: u64 = 0;
/// Being filled in by (worker, gen): not yet a source anyone may count on.
pub(super) const CLAIMING: u64 = 1;
/// Holds a source.
pub(super) const LIVE: u64 = 2;
/// Being taken from its source by (worker, gen) to make room for another one.
pub(super) const EVICTING: u64 = 3;

const TAG: u64 = 3;
const WORKER_BITS: u32 = 10;
const GEN_BITS: u32 = 20;
const GEN_MASK: u32 = (1 << GEN_BITS) - 1;

pub(super) fn tag(s: u64) -> u64 {
    s & TAG
}

pub(super) fn version(s: u64) -> u32 {
    (s >> 32) as u32
}

/// The (worker index, generation) that owns a CLAIMING or EVICTING word.
pub(super) fn owner(s: u64) -> (usize, u32) {
    let w = ((s >> 2) & ((1 << WORKER_BITS) - 1)) as usize;
    let g = ((s >> (2 + WORKER_BITS)) as u32) & GEN_MASK;
    (w, g)
}

pub(super) fn word(tag: u64, worker: usize, gen: u32, version: u32) -> u64 {
    tag | ((worker as u64) << 2)
        | (u64::from(gen & GEN_MASK) << (2 + WORKER_BITS))
        | (u64::from(version) << 32)
}

/// The most workers a table can name in a state word.
pub(super) const MAX_WORKERS: usize = 1 << WORKER_BITS;

/// One source: 48 bytes.
#[repr(C)]
pub(super) struct Slot {
    pub(super) state: AtomicU64,
    /// The source ([`encode`]); meaningful while the state is CLAIMING, LIVE or EVICTING.
    pub(super) key: AtomicU64,
    /// Bumped by every admission that counted a connection here (the optimistic check of
    /// `--max-per-source` across workers: see `table.rs`).
    pub(super) gate: AtomicU64,
    /// When the source was last seen, ns since the table's epoch (least recently seen is
    /// evicted first).
    pub(super) seen: AtomicU64,
    /// GCRA theoretical arrival times, ns since the epoch: TCP connects, UDP datagrams.
    pub(super) tcp: AtomicU64,
    pub(super) udp: AtomicU64,
}

#[repr(C)]
pub(super) struct Header {
    /// Admissions decided without the table (an update that kept losing races, or a source
    /// held by a stopped worker): served, not counted.
    pub(super) undecided: AtomicU64,
    /// The test hook has paused a worker already (`hook.rs`: once per daemon).
    pub(super) hooked: AtomicU32,
    /// Per worker index: bumped by the supervisor when that worker has died, so that slots
    /// left CLAIMING or EVICTING in its name are known to be abandoned.
    pub(super) gens: [AtomicU32; MAX_WORKERS],
}

pub(super) const PAGE: usize = 4096;

/// Byte offsets of the parts of a table of `nslots` slots for `workers` workers.
#[derive(Clone, Copy, Debug)]
pub(super) struct Layout {
    pub(super) nslots: usize,
    pub(super) workers: usize,
    pub(super) slots_at: usize,
    pub(super) shares_at: usize,
    /// Bytes of one worker's shares, whole pages (so a dead worker's can be dropped).
    pub(super) shares_len: usize,
    pub(super) len: usize,
}

impl Layout {
    pub(super) fn new(cap: usize, workers: usize) -> Layout {
        let nslots = (cap.max(1) * 2).next_power_of_two();
        let slots_at = std::mem::size_of::<Header>().next_multiple_of(PAGE);
        let shares_at = (slots_at + nslots * std::mem::size_of::<Slot>()).next_multiple_of(PAGE);
        let shares_len = (nslots * 4).next_multiple_of(PAGE);
        Layout {
            nslots,
            workers,
            slots_at,
            shares_at,
            shares_len,
            len: shares_at + workers * shares_len,
        }
    }
}

/// A source as one `u64`: an IPv6 /64 as itself, an IPv4 address inside ffff:fffe::/32, a
/// multicast prefix that no packet may carry as its source (the kernel drops such packets),
/// so the two families never meet.
pub(super) fn encode(source: SourceKey) -> u64 {
    match source {
        SourceKey::V4(a) => 0xffff_fffe_0000_0000 | u64::from(a),
        SourceKey::V6(p) => p,
    }
}

/// murmur3's 64-bit finaliser with the seed mixed in at both rounds.
pub(super) fn hash(seed: [u64; 2], key: u64) -> u64 {
    let mut x = key ^ seed[0];
    x = (x ^ (x >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= seed[1];
    x = (x ^ (x >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_words_round_trip() {
        let s = word(EVICTING, 1023, 0x12345, 0xdead_beef);
        assert_eq!(tag(s), EVICTING);
        assert_eq!(owner(s), (1023, 0x12345));
        assert_eq!(version(s), 0xdead_beef);
        assert_eq!(word(FREE, 0, 0, 0), 0, "zeroed memory is a never-used slot");
        assert_eq!(std::mem::size_of::<Slot>(), 48);
    }
}
