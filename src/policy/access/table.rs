//! The per-source table (SPEC §10): per source, the connections open from it
//! (`--max-per-source`) and two token buckets (`--rate-per-source N`: TCP connects and UDP
//! datagrams, burst N each, refilled at N per second), for the daemon as a whole.
//!
//! **No lock** (SPEC §8: no worker's loop ever waits on another process). The table is one
//! `MAP_SHARED` mapping of a memfd made before any fork (a reload hands the memfd over) (`probe.rs` has the layout); every
//! operation is a bounded number of loads and compare-and-swaps, so a worker stopped or
//! killed at any instruction holds up nobody:
//!
//! - **Slots.** Open addressing over a power-of-two array of `2 × --source-table` slots; a
//!   source lives within [`WINDOW`] slots of its home (a hash keyed by a seed drawn at start,
//!   so a flood of chosen addresses cannot aim at one window). A slot's state word is FREE
//!   (never used: a lookup stops there; or used before), CLAIMING (being filled in by worker
//!   k), LIVE or EVICTING (being taken from its source by worker k), with a version bumped
//!   on every change, so a reader checks state, key, state again (a seqlock) and never
//!   mistakes a reused slot for its source.
//! - **Buckets.** Each bucket is a GCRA "theoretical arrival time" (as in ATM networks and
//!   many rate limiters) in one `u64` of nanoseconds, moved by compare-and-swap: each
//!   admission pushes it one interval (1 s / N) into the future, and an attempt is refused
//!   when that would put it more than the burst ahead of now. Full when that time has passed.
//! - **Open counts are per-worker shares**: `shares[w][slot]`, written by worker w alone. The
//!   `--max-per-source` check sums a slot's shares over the workers. So that two workers
//!   cannot both admit the Nth connection, each admission reads the slot's `gate`, sums,
//!   raises its own share and then moves the gate on by compare-and-swap; if another
//!   admission moved it first, it lowers its share and looks again. A worker that dies,
//!   however it dies, holds exactly its own shares: the supervisor drops them
//!   ([`SourceTable::forget_worker`]) and nothing else changes (no reset, ever).
//! - **Claiming.** A new source takes the first free slot of its window (CAS FREE →
//!   CLAIMING), writes its key, then looks through the window for another claim of the same
//!   source made at the same moment by another worker: an earlier one wins (the later one
//!   withdraws, or is withdrawn by the earlier one's owner), so a source never has two live
//!   slots. Only then is the slot published LIVE.
//! - **Eviction.** With no free slot in the window, the least recently seen LIVE slot whose
//!   shares sum to 0 (one whose buckets are full first) is taken (LIVE → EVICTING, the sum
//!   checked again, then CLAIMING for the new source). An admission that raised a share
//!   there checks the state word afterwards and withdraws if it changed. No such slot: the
//!   new source is refused ([`Verdict::Full`], `table full`).
//! - **Stopped and dead workers.** A CLAIMING or EVICTING word names its worker and that
//!   worker's generation; the supervisor bumps the generation when it reaps a worker, after
//!   which anyone may undo what the dead worker left half-done. A claim by a live worker
//!   that does not finish within a few microseconds (it may be stopped) is withdrawn by the
//!   next worker that needs the slot. A source whose slot a stopped worker is evicting, or an
//!   admission that keeps losing races ([`ATTEMPTS`]), is decided without the table: served,
//!   not counted, and counted in [`SourceTable::undecided`].
//!
//! The size is a budget of slots, not a count of sources kept: there is no global counter
//! (that would be one more word every worker writes). Memory: see [`SourceTable::map_len`].

use std::hint::spin_loop;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Instant;

use super::cidr::SourceKey;
use hook::Stage;
use probe::{
    encode, owner, tag, version, word, Header, Layout, Slot, CLAIMING, EVICTING, FREE, LIVE,
};

mod hook;
mod probe;

/// SPEC §10: the table holds at least this many sources by default.
pub const MIN_SOURCES: usize = 65_536;
/// `--source-table` at most (2^24 sources: 1.5 GiB of slots, mapped lazily).
pub const MAX_SOURCES: usize = 1 << 24;
/// Slots a source may live in, from its home on.
pub const WINDOW: usize = 32;
/// Tries of a whole admission before it is decided without the table.
pub const ATTEMPTS: usize = 8;
/// Spins while another worker's claim of the same source finishes, before taking it over.
const SPINS: usize = 2000;

/// `--max-per-source` and `--rate-per-source`; 0 means no limit.
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub struct Limits {
    /// TCP connections open at once from one source.
    pub max_per_source: u32,
    /// New connections per second from one source, and datagrams per second from one
    /// source (two buckets); also the burst.
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
    /// Serve it; with a ticket, hand it to [`SourceTable::release`] when it closes.
    Admitted(Option<Ticket>),
    /// `--max-per-source` connections are open from this source already.
    OverMax,
    /// The source has used its `--rate-per-source` tokens.
    OverRate,
    /// Every slot this new source could use holds a source with connections open.
    Full,
}

/// An admitted connection's count: the slot whose share it raised (no lookup at release).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Ticket {
    slot: u32,
    version: u32,
}

impl Ticket {
    /// The ticket as two numbers, for a reload's state.
    pub fn to_parts(self) -> (u32, u32) {
        (self.slot, self.version)
    }

    /// A ticket [`Ticket::to_parts`] gave (from the same table, handed over).
    pub fn from_parts(slot: u32, version: u32) -> Ticket {
        Ticket { slot, version }
    }
}

/// The mapping; unmapped when the last handle in this process goes.
struct Map {
    base: NonNull<u8>,
    len: usize,
    /// The memfd mapped, kept open so a reload can hand it over (SPEC §13).
    fd: std::os::fd::OwnedFd,
}

// SAFETY: the mapping is only touched through atomics (see the module docs), from any thread.
unsafe impl Send for Map {}
// SAFETY: as above: every shared access is an atomic operation.
unsafe impl Sync for Map {}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly what mmap returned; no reference outlives the
        // handles, and this is the last one.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// One worker's handle on the per-source table; see the module docs.
#[derive(Clone)]
pub struct SourceTable {
    map: Arc<Map>,
    layout: Layout,
    /// 0-based index of the worker using this handle (its shares).
    me: usize,
    limits: Limits,
    interval_ns: u64,
    burst_ns: u64,
    seed: [u64; 2],
    /// Times are nanoseconds since this instant, taken before any fork (CLOCK_MONOTONIC is
    /// system-wide), so every worker counts from the same one.
    epoch: Instant,
}

/// A claim in progress: the slot and the state word it holds.
struct Claim {
    at: usize,
    word: u64,
}

enum Found {
    Live(usize, u32),
    /// Decide without the table this time.
    Undecided,
    Full,
}

impl SourceTable {
    /// Bytes the table for `cap` sources and `workers` workers maps (address space; pages
    /// become resident only as sources land in them): 96 bytes of slots per source, plus 8
    /// bytes of shares per source and worker.
    pub fn map_len(cap: usize, workers: usize) -> usize {
        Layout::new(cap, workers).len
    }

    /// A table for at most `cap` sources, shared by `workers` workers (1 for the one-process
    /// daemon), in a fresh `MAP_SHARED` mapping: a process forked after this shares it. The
    /// handle returned is worker 1's; [`SourceTable::for_worker`] gives the others.
    pub fn new(
        limits: Limits,
        epoch: Instant,
        cap: usize,
        workers: usize,
    ) -> std::io::Result<SourceTable> {
        let workers = workers.clamp(1, probe::MAX_WORKERS);
        let layout = Layout::new(cap.clamp(1, MAX_SOURCES), workers);
        // A memfd mapped MAP_SHARED: a later fork shares the same pages, and a reload's new
        // image maps them again from the descriptor; MAP_NORESERVE (and a sparse file)
        // because most of it is never touched.
        let (fd, base) = crate::sys::map_shared_memfd("echo-mux-sources", layout.len, true)?;
        use std::hash::BuildHasher;
        let random = std::collections::hash_map::RandomState::new();
        let n = u64::from(limits.rate_per_source);
        // 0 (no limit) when N is 0; at least 1 ns however large N is.
        let interval_ns = 1_000_000_000u64.checked_div(n).map_or(0, |i| i.max(1));
        Ok(SourceTable {
            map: Arc::new(Map {
                base,
                len: layout.len,
                fd,
            }),
            layout,
            me: 0,
            limits,
            interval_ns,
            burst_ns: interval_ns * n.saturating_sub(1),
            seed: [random.hash_one(1u64), random.hash_one(2u64)],
            epoch,
        })
    }

    /// Write what a reload's new image needs to map this table again
    /// ([`SourceTable::adopt`]): the memfd, the time origin and the hash seed.
    pub fn save(&self, w: &mut crate::reload::state::Writer) {
        use std::os::fd::AsRawFd;
        w.fd(self.map.fd.as_raw_fd());
        w.usize(self.map.len);
        w.instant(self.epoch);
        w.u64(self.seed[0]);
        w.u64(self.seed[1]);
    }

    /// The table an earlier image saved with [`SourceTable::save`], for the same `limits`,
    /// `cap` and `workers` (the command line does not change across a reload): the same
    /// pages, origin and seed, so every source, count and bucket carries on. The handle is
    /// worker 1's.
    pub fn adopt(
        limits: Limits,
        cap: usize,
        workers: usize,
        r: &mut crate::reload::state::Reader<'_>,
    ) -> Result<SourceTable, String> {
        let workers = workers.clamp(1, probe::MAX_WORKERS);
        let layout = Layout::new(cap.clamp(1, MAX_SOURCES), workers);
        let fd = r.fd().map_err(|e| e.to_string())?;
        let len = r.usize().map_err(|e| e.to_string())?;
        let epoch = r.instant().map_err(|e| e.to_string())?;
        let seed = [
            r.u64().map_err(|e| e.to_string())?,
            r.u64().map_err(|e| e.to_string())?,
        ];
        if len != layout.len {
            return Err(format!(
                "per-source table of {len} bytes handed over, {} expected",
                layout.len
            ));
        }
        let fd = crate::reload::state::adopt(fd)
            .map_err(|e| format!("per-source table: {}", crate::error::Plain(&e)))?;
        let base = crate::sys::map_shared_fd(&fd, len, true).map_err(|e| {
            format!(
                "cannot map the per-source table: {}",
                crate::error::Plain(&e)
            )
        })?;
        let n = u64::from(limits.rate_per_source);
        let interval_ns = 1_000_000_000u64.checked_div(n).map_or(0, |i| i.max(1));
        Ok(SourceTable {
            map: Arc::new(Map { base, len, fd }),
            layout,
            me: 0,
            limits,
            interval_ns,
            burst_ns: interval_ns * n.saturating_sub(1),
            seed,
            epoch,
        })
    }

    /// The handle of worker `number` (1-based, as SPEC §8 numbers them).
    pub fn for_worker(&self, number: usize) -> SourceTable {
        assert!(
            (1..=self.layout.workers).contains(&number),
            "worker {number}"
        );
        SourceTable {
            me: number - 1,
            ..self.clone()
        }
    }

    /// The limits this table enforces.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Does an admitted connection hold a count that [`SourceTable::release`] must give back?
    pub fn counts_open(&self) -> bool {
        self.limits.max_per_source > 0
    }

    /// A new TCP connection from `source`: may it be served? Admitted with a ticket when
    /// `--max-per-source` is set: it counts as open until [`SourceTable::release`].
    pub fn admit(&self, source: SourceKey, now: Instant) -> Verdict {
        self.enter(source, now, Door::Connect)
    }

    /// A datagram from `source` (only `--rate-per-source` applies, from the UDP bucket).
    pub fn admit_datagram(&self, source: SourceKey, now: Instant) -> Verdict {
        if self.interval_ns == 0 {
            return Verdict::Admitted(None);
        }
        self.enter(source, now, Door::Datagram)
    }

    /// Admission through `door`: find or claim the source's slot, count a connection (with
    /// `--max-per-source`), take a token from the door's bucket, and check that the slot was
    /// not evicted meanwhile. A few lost races in a row leave the decision to the caller's
    /// side: served uncounted, and counted as `undecided`.
    fn enter(&self, source: SourceKey, now: Instant, door: Door) -> Verdict {
        let key = encode(source);
        let now = self.ns(now);
        let counts = door == Door::Connect && self.counts_open();
        for _ in 0..ATTEMPTS {
            let (at, ver) = match self.find_or_claim(key, now) {
                Found::Live(at, ver) => (at, ver),
                Found::Full => return Verdict::Full,
                Found::Undecided => break,
            };
            let slot = self.slot(at);
            slot.seen.store(now, SeqCst);
            let counted = if counts {
                match self.reserve(at, key) {
                    Some(true) => true,
                    Some(false) => return Verdict::OverMax,
                    None => continue,
                }
            } else {
                false
            };
            let bucket = match door {
                Door::Connect => &slot.tcp,
                Door::Datagram => &slot.udp,
            };
            if !take(bucket, now, self.interval_ns, self.burst_ns) {
                if counted {
                    self.lower(at);
                }
                return Verdict::OverRate;
            }
            if slot.state.load(SeqCst) != word(LIVE, 0, 0, ver) {
                // Evicted under us: what we raised there is not this source's.
                if counted {
                    self.lower(at);
                }
                continue;
            }
            let ticket = counted.then_some(Ticket {
                slot: at as u32,
                version: ver,
            });
            return Verdict::Admitted(ticket);
        }
        self.header().undecided.fetch_add(1, SeqCst);
        log::debug!("per-source table: an admission decided without it (contention)");
        Verdict::Admitted(None)
    }

    /// A connection admitted with `ticket` has closed: lower this worker's share.
    pub fn release(&self, ticket: Ticket, now: Instant) {
        let at = ticket.slot as usize;
        let slot = self.slot(at);
        debug_assert!(
            version(slot.state.load(SeqCst)) >= ticket.version,
            "a slot with open counts is never reused"
        );
        slot.seen.store(self.ns(now), SeqCst);
        self.lower(at);
    }

    /// Worker `number` (1-based) has been reaped: give back exactly the connections it held
    /// (its shares), and mark what it may have left half-done (a CLAIMING or EVICTING slot)
    /// as abandoned. Supervisor only, after the reap and before the replacement starts.
    pub fn forget_worker(&self, number: usize) {
        let w = number - 1;
        self.header().gens[w].fetch_add(1, SeqCst);
        let at = self.layout.shares_at + w * self.layout.shares_len;
        // SAFETY: the range is whole pages inside the mapping (Layout), holding worker w's
        // shares alone; MADV_REMOVE frees them, and they read as zero from then on. Nobody
        // writes them now: their only writer has been reaped.
        let removed = unsafe {
            libc::madvise(
                self.map.base.as_ptr().add(at).cast(),
                self.layout.shares_len,
                libc::MADV_REMOVE,
            )
        };
        if removed != 0 {
            // Not a shmem mapping after all: zero them one by one.
            for s in self.shares(w) {
                if s.load(SeqCst) != 0 {
                    s.store(0, SeqCst);
                }
            }
        }
    }

    /// Admissions decided without the table so far (see the module docs).
    pub fn undecided(&self) -> u64 {
        self.header().undecided.load(SeqCst)
    }

    /// LIVE slots now (a scan of the whole table: for tests and measurements).
    pub fn len(&self) -> usize {
        (0..self.layout.nslots)
            .filter(|&i| tag(self.slot(i).state.load(SeqCst)) == LIVE)
            .count()
    }

    /// Is no source in the table?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Connections counted open from `source` over every worker.
    pub fn open(&self, source: SourceKey) -> u32 {
        let key = encode(source);
        self.window(key)
            .find(|&i| {
                let s = self.slot(i).state.load(SeqCst);
                tag(s) == LIVE && self.slot(i).key.load(SeqCst) == key
            })
            .map_or(0, |i| self.sum(i))
    }

    // ---- the parts ----

    fn ns(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    fn header(&self) -> &Header {
        // SAFETY: the header is at offset 0 of the mapping, which lives as long as `map`;
        // all-zero is a valid Header (atomics) and it is only accessed atomically.
        unsafe { &*self.map.base.as_ptr().cast::<Header>() }
    }

    fn slot(&self, i: usize) -> &Slot {
        debug_assert!(i < self.layout.nslots);
        // SAFETY: slot i lies inside the mapping (Layout: nslots slots at slots_at, 8-byte
        // aligned as the mapping is page aligned); all-zero is valid; accessed atomically.
        unsafe {
            &*self
                .map
                .base
                .as_ptr()
                .add(self.layout.slots_at + i * std::mem::size_of::<Slot>())
                .cast::<Slot>()
        }
    }

    fn shares(&self, w: usize) -> &[AtomicU32] {
        debug_assert!(w < self.layout.workers);
        // SAFETY: worker w's shares lie inside the mapping (Layout), 4-byte aligned; zero is
        // a valid AtomicU32; accessed atomically.
        unsafe {
            std::slice::from_raw_parts(
                self.map
                    .base
                    .as_ptr()
                    .add(self.layout.shares_at + w * self.layout.shares_len)
                    .cast::<AtomicU32>(),
                self.layout.nslots,
            )
        }
    }

    fn my_gen(&self) -> u32 {
        self.header().gens[self.me].load(SeqCst)
    }

    /// Was the CLAIMING/EVICTING word `s` left by a worker that has since died?
    fn abandoned(&self, s: u64) -> bool {
        let (w, g) = owner(s);
        w >= self.layout.workers || (self.header().gens[w].load(SeqCst) & 0xf_ffff) != g
    }

    fn window(&self, key: u64) -> impl Iterator<Item = usize> {
        let mask = self.layout.nslots - 1;
        let home = probe::hash(self.seed, key) as usize & mask;
        (0..WINDOW.min(self.layout.nslots)).map(move |d| (home + d) & mask)
    }

    /// Shares of slot `at` over every worker.
    fn sum(&self, at: usize) -> u32 {
        (0..self.layout.workers)
            .map(|w| self.shares(w)[at].load(SeqCst))
            .fold(0u32, u32::saturating_add)
    }

    fn lower(&self, at: usize) {
        let own = &self.shares(self.me)[at];
        own.store(own.load(SeqCst).saturating_sub(1), SeqCst);
    }

    /// Count one more connection at slot `at` if the sum allows: `Some(true)` counted,
    /// `Some(false)` at the limit, `None` when other admissions kept winning the gate.
    fn reserve(&self, at: usize, key: u64) -> Option<bool> {
        let slot = self.slot(at);
        let own = &self.shares(self.me)[at];
        for _ in 0..ATTEMPTS {
            let gate = slot.gate.load(SeqCst);
            if self.sum(at) >= self.limits.max_per_source {
                return Some(false);
            }
            own.store(own.load(SeqCst) + 1, SeqCst);
            hook::at(Stage::Count, key, self.me + 1, &self.header().hooked);
            if slot
                .gate
                .compare_exchange(gate, gate.wrapping_add(1), SeqCst, SeqCst)
                .is_ok()
            {
                return Some(true);
            }
            own.store(own.load(SeqCst) - 1, SeqCst);
            spin_loop();
        }
        None
    }

    /// The LIVE slot of `key`, claimed afresh if it has none.
    fn find_or_claim(&self, key: u64, now: u64) -> Found {
        for _ in 0..ATTEMPTS {
            let mut free = None;
            let mut busy = None;
            for i in self.window(key) {
                let slot = self.slot(i);
                let s = slot.state.load(SeqCst);
                if tag(s) == FREE {
                    free = free.or(Some((i, s)));
                    if version(s) == 0 {
                        break; // never used: the source is not further on
                    }
                    continue;
                }
                let k = slot.key.load(SeqCst);
                if slot.state.load(SeqCst) != s {
                    busy = Some((i, None)); // changed while read: look again
                    break;
                }
                if k != key {
                    continue;
                }
                match tag(s) {
                    LIVE => return Found::Live(i, version(s)),
                    _ => {
                        busy = Some((i, Some(s)));
                        break;
                    }
                }
            }
            match busy {
                Some((_, None)) => continue,
                Some((i, Some(s))) => {
                    if !self.settle(i, s) {
                        return Found::Undecided;
                    }
                    continue;
                }
                None => {}
            }
            let target = match free {
                Some(f) => Some(f),
                None => self.victim(key, now),
            };
            let Some((at, s)) = target else {
                return Found::Full;
            };
            if let Some(found) = self.claim(at, s, key, now) {
                return found;
            }
        }
        Found::Undecided
    }

    /// Another worker is claiming or evicting slot `i` of our source (word `s`): wait a
    /// moment for it to finish; a claim that does not is withdrawn, one left by a dead
    /// worker undone. False when the slot stays held by a live worker that may be stopped.
    fn settle(&self, i: usize, s: u64) -> bool {
        let state = &self.slot(i).state;
        if tag(s) == CLAIMING && self.abandoned(s) {
            let _ = state.compare_exchange(s, word(FREE, 0, 0, version(s) + 1), SeqCst, SeqCst);
            return true;
        }
        for _ in 0..SPINS {
            if state.load(SeqCst) != s {
                return true;
            }
            spin_loop();
        }
        match tag(s) {
            // A claim holds no count: withdrawing it costs its owner a retry, nothing more.
            CLAIMING => {
                let _ = state.compare_exchange(s, word(FREE, 0, 0, version(s) + 1), SeqCst, SeqCst);
                true
            }
            // An eviction left by a dead worker: the source is still whole, give it back.
            EVICTING if self.abandoned(s) => {
                let _ = state.compare_exchange(s, word(LIVE, 0, 0, version(s) + 1), SeqCst, SeqCst);
                true
            }
            _ => false,
        }
    }

    /// The slot to evict from the window of `key`: LIVE, no connection open, buckets full
    /// first, then the least recently seen. Abandoned claims are free slots.
    fn victim(&self, key: u64, now: u64) -> Option<(usize, u64)> {
        let mut best: Option<((bool, u64), usize, u64)> = None;
        for i in self.window(key) {
            let slot = self.slot(i);
            let s = slot.state.load(SeqCst);
            match tag(s) {
                // An abandoned claim is as good as a free slot.
                CLAIMING if self.abandoned(s) => return Some((i, s)),
                // An eviction a dead worker left: give the source back (it may be chosen by
                // the next look).
                EVICTING if self.abandoned(s) => {
                    let live = word(LIVE, 0, 0, version(s) + 1);
                    let _ = slot.state.compare_exchange(s, live, SeqCst, SeqCst);
                }
                LIVE if self.sum(i) == 0 => {
                    let full = slot.tcp.load(SeqCst) <= now && slot.udp.load(SeqCst) <= now;
                    let rank = (!full, slot.seen.load(SeqCst));
                    if best.is_none_or(|(r, _, _)| rank < r) {
                        best = Some((rank, i, s));
                    }
                }
                _ => {}
            }
        }
        best.map(|(_, i, s)| (i, s))
    }

    /// Try to take slot `at` (state word `s`: FREE, or LIVE to evict) for `key`. `None`
    /// when the slot was taken meanwhile (look again).
    fn claim(&self, at: usize, s: u64, key: u64, now: u64) -> Option<Found> {
        let slot = self.slot(at);
        let gen = self.my_gen();
        let mut ver = version(s);
        if tag(s) == LIVE {
            let evicting = word(EVICTING, self.me, gen, ver + 1);
            slot.state
                .compare_exchange(s, evicting, SeqCst, SeqCst)
                .ok()?;
            ver += 1;
            if self.sum(at) != 0 {
                // An admission raised a share since the choice: the source stays.
                let _ = slot.state.compare_exchange(
                    evicting,
                    word(LIVE, 0, 0, ver + 1),
                    SeqCst,
                    SeqCst,
                );
                return None;
            }
            let claim = word(CLAIMING, self.me, gen, ver + 1);
            slot.state
                .compare_exchange(evicting, claim, SeqCst, SeqCst)
                .ok()?;
            ver += 1;
        } else {
            let claim = word(CLAIMING, self.me, gen, ver + 1);
            slot.state.compare_exchange(s, claim, SeqCst, SeqCst).ok()?;
            ver += 1;
        }
        let claim = Claim {
            at,
            word: word(CLAIMING, self.me, gen, ver),
        };
        slot.key.store(key, SeqCst);
        slot.tcp.store(0, SeqCst);
        slot.udp.store(0, SeqCst);
        slot.seen.store(now, SeqCst);
        hook::at(Stage::Claim, key, self.me + 1, &self.header().hooked);
        if !self.unique(&claim, key) {
            self.withdraw(&claim);
            return None;
        }
        let live = word(LIVE, 0, 0, ver + 1);
        slot.state
            .compare_exchange(claim.word, live, SeqCst, SeqCst)
            .ok()?;
        Some(Found::Live(at, ver + 1))
    }

    /// Is `claim` the only slot of `key` in its window? A LIVE or EVICTING slot of the same
    /// source, or an earlier claim of it, wins (false); a later claim is withdrawn.
    fn unique(&self, claim: &Claim, key: u64) -> bool {
        let mut seen_mine = false;
        for i in self.window(key) {
            if i == claim.at {
                seen_mine = true;
                continue;
            }
            let slot = self.slot(i);
            if slot.key.load(SeqCst) != key {
                continue;
            }
            let s = slot.state.load(SeqCst);
            match tag(s) {
                FREE => {}
                CLAIMING if seen_mine => {
                    let freed = word(FREE, 0, 0, version(s) + 1);
                    let _ = slot.state.compare_exchange(s, freed, SeqCst, SeqCst);
                }
                _ => return false,
            }
        }
        true
    }

    fn withdraw(&self, claim: &Claim) {
        let freed = word(FREE, 0, 0, version(claim.word) + 1);
        let state = &self.slot(claim.at).state;
        let _ = state.compare_exchange(claim.word, freed, SeqCst, SeqCst);
    }
}

/// Which of a source's two buckets an admission draws on (forged datagrams must not spend
/// a client's connects).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Door {
    Connect,
    Datagram,
}

/// GCRA: take a token from the bucket whose theoretical arrival time is in `tat`.
fn take(tat: &AtomicU64, now: u64, interval: u64, burst: u64) -> bool {
    if interval == 0 {
        return true;
    }
    let mut cur = tat.load(SeqCst);
    loop {
        let t = cur.max(now);
        if t - now > burst {
            return false;
        }
        match tat.compare_exchange_weak(cur, t + interval, SeqCst, SeqCst) {
            Ok(_) => return true,
            Err(seen) => cur = seen,
        }
    }
}

#[cfg(test)]
mod tests;
