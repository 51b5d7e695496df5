//! The slots of the per-source table and the probing over them: plain integers in the
//! caller's block, touched only under the table's lock (see `table.rs` for the layout).

use super::SourceKey;
use crate::access::lock;

pub(super) const EMPTY: u32 = 0;
pub(super) const V4: u32 = 1;
pub(super) const V6: u32 = 2;

#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct Slot {
    pub(super) key: u64,
    /// Theoretical arrival time, ns since the table's epoch; the bucket is full once past.
    pub(super) tat: u64,
    pub(super) open: u32,
    pub(super) kind: u32,
}

#[repr(C)]
pub(super) struct Meta {
    pub(super) live: u32,
    pub(super) cursor: u32,
}

/// The view of the table under its lock.
pub(super) struct Locked<'a> {
    pub(super) _guard: lock::Guard<'a>,
    pub(super) meta: &'a mut Meta,
    pub(super) slots: &'a mut [Slot],
    pub(super) seed: [u64; 2],
}

impl Slot {
    pub(super) const EMPTY: Slot = Slot {
        key: 0,
        tat: 0,
        open: 0,
        kind: EMPTY,
    };

    pub(super) fn expired(&self, now: u64) -> bool {
        self.open == 0 && self.tat <= now
    }
}

impl Locked<'_> {
    /// Forget every source. An empty table is left as it is, so a daemon whose table never
    /// held a source does not make its whole (3 MB, shared) block resident here.
    pub(super) fn reset(&mut self) {
        if self.meta.live > 0 {
            self.slots.fill(Slot::EMPTY);
        }
        *self.meta = Meta { live: 0, cursor: 0 };
    }

    fn home(&self, kind: u32, key: u64) -> usize {
        hash(self.seed, kind, key) as usize & (self.slots.len() - 1)
    }

    /// `Ok(slot)` holding the source, or `Err(the empty slot where it would go)`.
    pub(super) fn find(&self, kind: u32, key: u64) -> Result<usize, usize> {
        let mask = self.slots.len() - 1;
        let mut i = self.home(kind, key);
        loop {
            let s = &self.slots[i];
            if s.kind == EMPTY {
                return Err(i);
            }
            if s.kind == kind && s.key == key {
                return Ok(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// Empty slot `hole`, then move back each later entry of the run that may live there.
    pub(super) fn remove(&mut self, mut hole: usize) {
        let mask = self.slots.len() - 1;
        self.meta.live -= 1;
        let mut j = hole;
        loop {
            self.slots[hole] = Slot::EMPTY;
            loop {
                j = (j + 1) & mask;
                let s = self.slots[j];
                if s.kind == EMPTY {
                    return;
                }
                // The entry at j may fill the hole if its home is not in (hole, j].
                let home = self.home(s.kind, s.key);
                if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(hole) & mask) {
                    break;
                }
            }
            self.slots[hole] = self.slots[j];
            hole = j;
        }
    }

    /// Look at the next few slots and remove expired entries.
    pub(super) fn sweep(&mut self, now: u64, budget: usize) {
        let mask = self.slots.len() - 1;
        let mut at = self.meta.cursor as usize & mask;
        for _ in 0..budget.min(self.slots.len()) {
            let s = self.slots[at];
            if s.kind != EMPTY && s.expired(now) {
                self.remove(at); // may move another entry into `at`: look again next time
            } else {
                at = (at + 1) & mask;
            }
        }
        self.meta.cursor = at as u32;
    }
}

pub(super) fn slots_for(cap: usize) -> usize {
    (cap.max(1) * 2).next_power_of_two()
}

pub(super) fn parts(source: SourceKey) -> (u32, u64) {
    match source {
        SourceKey::V4(a) => (V4, u64::from(a)),
        SourceKey::V6(p) => (V6, p),
    }
}

/// murmur3's 64-bit finaliser with the seed mixed in at both rounds.
fn hash(seed: [u64; 2], kind: u32, key: u64) -> u64 {
    let mut x = key ^ seed[0];
    x = (x ^ (x >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= seed[1] ^ u64::from(kind);
    x = (x ^ (x >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}
