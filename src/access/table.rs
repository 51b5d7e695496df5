//! The per-source table (SPEC §10): per source, its open connections (`--max-per-source`) and
//! a token bucket (`--rate-per-source N`: burst N, refilled at N per second).
//!
//! It lives in one fixed block of memory with no pointers in it, so that with `--workers` the
//! block can be a MAP_SHARED region made before the fork and the limits hold for the daemon as
//! a whole: a lock word, two counters, then a power-of-two array of plain-integer slots.
//! Open addressing with linear probing; a removal shifts the run behind it back (Knuth's
//! algorithm R), so there are no tombstones and a miss ends at the first empty slot. The array
//! has twice as many slots as the table may hold sources, so runs stay short.
//!
//! Bounded: at most [`MAX_SOURCES`] entries. An entry expires once its source has no
//! connection and a full bucket; it is removed at once by the `release` that empties it, and
//! otherwise by a sweep that looks at a few slots per call, so a table filled by a burst of
//! sources empties again by itself. At the cap, a new source is refused as over its rate.
//!
//! Sources choose their addresses, so slots are found with a hash keyed by a random seed
//! drawn at start (a flood cannot aim at one probe run without learning it).
//!
//! The bucket is kept as a single "theoretical arrival time" (GCRA, as in ATM networks and
//! many rate limiters): each admission pushes it one interval (1 s / N) into the future, and
//! a connection is refused when that would put it more than the burst ahead of now. The
//! bucket is full when that time has passed: one `u64` of nanoseconds, exact, no floats.

use std::sync::atomic::AtomicU32;
use std::time::Instant;

use super::cidr::SourceKey;
use super::lock;
use probe::{parts, slots_for, Locked, Meta, Slot};

mod probe;

/// SPEC §10: at most this many sources are tracked at once.
pub const MAX_SOURCES: usize = 65_536;
/// Slots examined for expired entries per call (amortised cleanup).
const SWEEP: usize = 4;
/// Slots examined before a new source is refused because the table is full.
const SWEEP_WHEN_FULL: usize = 1024;
/// The region starts with the lock word on its own cache line, then the counters.
const META_AT: usize = 64;
const SLOTS_AT: usize = 128;

/// `--max-per-source` and `--rate-per-source`; 0 means no limit.
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub struct Limits {
    /// TCP connections open at once from one source.
    pub max_per_source: u32,
    /// New connections (and datagrams) per second from one source; also the burst.
    pub rate_per_source: u32,
}

impl Limits {
    /// Is any per-source limit set?
    pub fn any(&self) -> bool {
        self.max_per_source > 0 || self.rate_per_source > 0
    }
}

/// The outcome of [`SourceTable::admit`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Verdict {
    /// Serve it (and `release` the source when a connection admitted so closes).
    Admitted,
    /// `--max-per-source` connections are open from this source already.
    OverMax,
    /// The source has used its `--rate-per-source` tokens.
    OverRate,
    /// The table holds [`MAX_SOURCES`] other sources: a new one is treated as over its rate.
    Full,
}

/// The per-source table; see the module docs.
pub struct SourceTable {
    base: *mut u8,
    nslots: usize,
    cap: usize,
    limits: Limits,
    interval_ns: u64,
    burst_ns: u64,
    seed: [u64; 2],
    /// Times are nanoseconds since this instant. It is taken before any fork, so every
    /// worker counts from the same one (CLOCK_MONOTONIC is system-wide).
    epoch: Instant,
    /// The heap block behind `base` when the table is not in a caller's region.
    owned: Option<*mut [u64]>,
}

impl SourceTable {
    /// Bytes of memory a table for `cap` sources needs (see [`SourceTable::in_region`]).
    pub fn region_size(cap: usize) -> usize {
        SLOTS_AT + slots_for(cap) * std::mem::size_of::<Slot>()
    }

    /// A table of [`MAX_SOURCES`] in memory of its own (one process). The block is
    /// allocated zeroed, so pages are only touched once sources land in them.
    pub fn new(limits: Limits, epoch: Instant) -> SourceTable {
        SourceTable::with_cap(limits, epoch, MAX_SOURCES)
    }

    /// Like [`SourceTable::new`] for at most `cap` sources.
    pub fn with_cap(limits: Limits, epoch: Instant, cap: usize) -> SourceTable {
        let words = SourceTable::region_size(cap).div_ceil(8);
        let block: *mut [u64] = Box::into_raw(vec![0u64; words].into_boxed_slice());
        let mut table = SourceTable::describe(block.cast(), limits, epoch, cap);
        table.owned = Some(block);
        table
    }

    /// A table of [`MAX_SOURCES`] in a caller's region, e.g. a MAP_SHARED mapping made before
    /// the workers fork. Fails when the region is too small or not 8-byte aligned.
    ///
    /// # Safety
    /// `region` must point to `len` writable, zero-filled bytes (a fresh anonymous mapping
    /// is) that stay mapped while any copy of this table (in any process) is in use, and
    /// that nothing else writes.
    pub unsafe fn in_region(
        region: *mut u8,
        len: usize,
        limits: Limits,
        epoch: Instant,
    ) -> Result<SourceTable, String> {
        let need = SourceTable::region_size(MAX_SOURCES);
        if len < need || region.align_offset(8) != 0 {
            return Err(format!(
                "the per-source table needs {need} bytes, 8-byte aligned"
            ));
        }
        Ok(SourceTable::describe(region, limits, epoch, MAX_SOURCES))
    }

    fn describe(base: *mut u8, limits: Limits, epoch: Instant, cap: usize) -> SourceTable {
        use std::hash::BuildHasher;
        let random = std::collections::hash_map::RandomState::new();
        let n = u64::from(limits.rate_per_source);
        // 0 (no limit) when N is 0; at least 1 ns however large N is.
        let interval_ns = 1_000_000_000u64.checked_div(n).map_or(0, |i| i.max(1));
        SourceTable {
            base,
            nslots: slots_for(cap),
            cap,
            limits,
            interval_ns,
            burst_ns: interval_ns * n.saturating_sub(1),
            seed: [random.hash_one(1u64), random.hash_one(2u64)],
            epoch,
            owned: None,
        }
    }

    /// Another handle on a table that lives in a caller's region (`None` for one in memory of
    /// its own): what a worker forked from the process that made the table uses, so that
    /// every worker, and every replacement, shares the same entries, seed and epoch.
    pub fn share(&self) -> Option<SourceTable> {
        if self.owned.is_some() {
            return None;
        }
        Some(SourceTable {
            base: self.base,
            nslots: self.nslots,
            cap: self.cap,
            limits: self.limits,
            interval_ns: self.interval_ns,
            burst_ns: self.burst_ns,
            seed: self.seed,
            epoch: self.epoch,
            owned: None,
        })
    }

    /// The limits this table enforces.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// A new TCP connection from `source`: may it be served? When admitted with
    /// `--max-per-source` set, it counts as open until [`SourceTable::release`].
    pub fn admit(&self, source: SourceKey, now: Instant) -> Verdict {
        self.take(source, now, self.limits.max_per_source > 0)
    }

    /// A datagram from `source` (only `--rate-per-source` applies).
    pub fn admit_datagram(&self, source: SourceKey, now: Instant) -> Verdict {
        if self.interval_ns == 0 {
            return Verdict::Admitted;
        }
        self.take(source, now, false)
    }

    /// Does an admitted connection hold a count that [`SourceTable::release`] must give back?
    pub fn counts_open(&self) -> bool {
        self.limits.max_per_source > 0
    }

    fn take(&self, source: SourceKey, now: Instant, opens: bool) -> Verdict {
        let now = self.ns(now);
        let mut t = self.lock();
        t.sweep(now, SWEEP);
        let (kind, key) = parts(source);
        let mut found = t.find(kind, key);
        if found.is_err() && t.meta.live as usize >= self.cap {
            // Full, perhaps of sources that have expired since the sweep last passed them:
            // look further (a few microseconds at most) before turning a new source away.
            t.sweep(now, SWEEP_WHEN_FULL);
            found = t.find(kind, key);
        }
        let at = match found {
            Ok(at) => at,
            Err(_) if t.meta.live as usize >= self.cap => return Verdict::Full,
            Err(at) => {
                t.slots[at] = Slot {
                    key,
                    tat: 0,
                    open: 0,
                    kind,
                };
                t.meta.live += 1;
                at
            }
        };
        let slot = &mut t.slots[at];
        if opens && slot.open >= self.limits.max_per_source {
            return Verdict::OverMax;
        }
        if self.interval_ns > 0 {
            let tat = slot.tat.max(now);
            if tat - now > self.burst_ns {
                return Verdict::OverRate;
            }
            slot.tat = tat + self.interval_ns;
        }
        if opens {
            slot.open += 1;
        }
        if slot.expired(now) {
            t.remove(at); // holds nothing (no rate limit, nothing counted)
        }
        Verdict::Admitted
    }

    /// A connection admitted from `source` has closed.
    pub fn release(&self, source: SourceKey, now: Instant) {
        let now = self.ns(now);
        let mut t = self.lock();
        let (kind, key) = parts(source);
        if let Ok(at) = t.find(kind, key) {
            let slot = &mut t.slots[at];
            // Saturating: after a takeover from a dead worker the table starts afresh
            // (lock.rs), and connections admitted before it release counts nobody holds.
            slot.open = slot.open.saturating_sub(1);
            if slot.expired(now) {
                t.remove(at);
            }
        }
        t.sweep(now, SWEEP);
    }

    /// A worker (pid `dead`, already reaped) ended without closing its connections, which
    /// would otherwise count against their sources for ever: start the table afresh, as a
    /// takeover from a holder that died inside the lock does (see README's decisions: the
    /// other workers' open counts are forgotten too, and `release` saturates at 0).
    /// Returns how many sources were forgotten, or `None` when a live worker holds the lock
    /// (try again later; this never waits).
    pub fn reset_after_death(&self, dead: u32) -> Option<usize> {
        let mut t = self.locked(|word| lock::try_lock_after_death(word, dead))?;
        let sources = t.meta.live as usize;
        t.reset();
        Some(sources)
    }

    /// Sources in the table now.
    pub fn len(&self) -> usize {
        self.lock().meta.live as usize
    }

    /// Is the table empty?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn ns(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    fn lock(&self) -> Locked<'_> {
        let locked = self.locked(|word| Some(lock::lock(word)));
        locked.expect("lock::lock always returns a guard")
    }

    fn locked<'a>(
        &'a self,
        take: impl FnOnce(&'a AtomicU32) -> Option<lock::Guard<'a>>,
    ) -> Option<Locked<'a>> {
        // SAFETY: `base` is valid for region_size(cap) bytes, 8-byte aligned, for the
        // table's life (constructors); offset 0 holds the lock word and nothing else.
        let word = unsafe { &*self.base.cast::<AtomicU32>() };
        let guard = take(word)?;
        // SAFETY: the meta line and the slots follow the lock word inside the region; every
        // process and thread touches them only while holding the lock just taken, so these
        // are the only live references until the guard (dropped with them) releases it.
        let (meta, slots) = unsafe {
            (
                &mut *self.base.add(META_AT).cast::<Meta>(),
                std::slice::from_raw_parts_mut(self.base.add(SLOTS_AT).cast::<Slot>(), self.nslots),
            )
        };
        let inherited = guard.inherited;
        let mut t = Locked {
            _guard: guard,
            meta,
            slots,
            seed: self.seed,
        };
        if inherited {
            // A worker died in the middle of an update: start afresh rather than trust it.
            log::warn!("per-source table: a worker died holding its lock; the table was reset");
            t.reset();
        }
        Some(t)
    }
}

impl Drop for SourceTable {
    fn drop(&mut self) {
        if let Some(block) = self.owned.take() {
            // SAFETY: made by Box::into_raw in with_cap and freed only here.
            drop(unsafe { Box::from_raw(block) });
        }
    }
}

#[cfg(test)]
mod tests;
