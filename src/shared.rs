//! The memory the supervisor and its workers share (SPEC §8): one `MAP_SHARED` mapping of a
//! memfd, made before the first fork, so every worker inherits the same pages (and a reload's
//! new image maps them again from the descriptor: [`Region::adopt`]).
//!
//! ```text
//!  Header (epoch, worker count)  │ retired ledger │ ledger 1 │ ledger 2 │ … │ ledger N │ extra region
//! ```
//!
//! - **A ledger per worker**, 128-byte aligned: each is written by exactly one process (its
//!   worker; the supervisor only before a fork and after the reap), so no two writers ever
//!   share a cache line (128, not 64: x86's adjacent-line prefetcher pairs lines, as
//!   crossbeam's `CachePadded` assumes).
//! - **Relaxed atomics, single writer.** A counter is bumped with a load and a store, not a
//!   locked read-modify-write: the owner is the only writer, so nothing can be lost, and a
//!   reader in another process sees each counter whole (never torn). No locks anywhere.
//! - **Refusals** per reason (`refusals.rs`): counts and the latest example peer, which the
//!   supervisor turns into SPEC §10's one line per reason a second for the whole daemon.
//! - **Heartbeat**: the owner stores the milliseconds since the region's epoch (a monotonic
//!   `Instant` taken before the fork; CLOCK_MONOTONIC is the same clock in every process).
//! - **Retired**: when the supervisor has reaped a worker, it adds that slot's counts into
//!   `retired` and zeroes the slot for the replacement, so totals include every earlier
//!   generation exactly (a reaped process writes nothing more).
//! - **Extra region**: a page-aligned block of a size fixed at start, for a table several
//!   workers must see (the per-source limits of SPEC §10). It is zeroed memory; what lives
//!   there and how it is locked is up to its owner.
//!
//! The mapping is never unmapped: it lives exactly as long as the process, so the handles
//! here are `&'static`.

mod reason;
mod refusals;
mod reloads;

pub use reason::{Reason, REASONS};
pub use refusals::Refusals;
pub use reloads::Reloads;

use std::io;
use std::mem::{align_of, size_of};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// The counters a worker keeps (SPEC §5 stats line and §8–§10).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(usize)]
pub enum Counter {
    /// Connections open now (a gauge, not a total).
    Open,
    /// Connections accepted and served.
    Accepted,
    /// Connections accepted and closed at once (limits, denied, backend refusals).
    Rejected,
    /// Payload bytes received (TCP, unix and UDP).
    BytesIn,
    /// Payload bytes sent.
    BytesOut,
    /// UDP datagrams received.
    DatagramsIn,
    /// UDP datagrams sent.
    DatagramsOut,
    /// UDP datagrams not answered (loop protection, too big, queue full).
    Dropped,
    /// Refused by `--allow`/`--deny`.
    Denied,
    /// Refused by a per-source limit.
    Limited,
    /// Refused over `--max-clients` (also in `Rejected`).
    MaxClients,
    /// Of `Limited`: a new source refused because its part of the per-source table holds
    /// only sources with open connections (`table full`).
    TableFull,
    /// Refused because the backend cannot watch the descriptor (select's FD_SETSIZE; also
    /// in `Rejected`).
    BackendLimit,
    /// Refused because a `--proxy-from` peer's PROXY header was bad or late (SPEC §14; also
    /// in `Rejected`).
    Proxy,
    /// Of `Dropped`: from a service port or one of our own addresses (loop protection).
    DropLoopPort,
    /// Of `Dropped`: a source found echoing our replies back (loop detection).
    DropLoopDetected,
    /// Of `Dropped`: from or to an address no reply may go to (broadcast, multicast, …).
    DropBadAddress,
    /// Of `Dropped`: truncated, or a reply longer than UDP allows.
    DropOversize,
    /// Of `Dropped`: the socket's reply queue was at `--max-buffer`.
    DropQueueFull,
    /// Of `Dropped`: any other reason (send errors, the drain's deadline, no sender).
    DropOther,
}

/// How many [`Counter`]s there are.
pub const COUNTERS: usize = 20;

impl Counter {
    /// Every counter, in slot order.
    pub const ALL: [Counter; COUNTERS] = [
        Counter::Open,
        Counter::Accepted,
        Counter::Rejected,
        Counter::BytesIn,
        Counter::BytesOut,
        Counter::DatagramsIn,
        Counter::DatagramsOut,
        Counter::Dropped,
        Counter::Denied,
        Counter::Limited,
        Counter::MaxClients,
        Counter::TableFull,
        Counter::BackendLimit,
        Counter::Proxy,
        Counter::DropLoopPort,
        Counter::DropLoopDetected,
        Counter::DropBadAddress,
        Counter::DropOversize,
        Counter::DropQueueFull,
        Counter::DropOther,
    ];
}

/// One worker's counters, heartbeat and readiness. All-zero is the valid initial state.
#[derive(Debug)]
#[repr(C, align(128))]
pub struct Ledger {
    counts: [AtomicU64; COUNTERS],
    /// Milliseconds since the region's epoch at the worker's last loop turn.
    heartbeat: AtomicU64,
    /// 1 once the worker's listeners are registered with its poller.
    ready: AtomicU32,
    /// Refusals per reason (SPEC §10), for the supervisor's one line per reason a second.
    refusals: refusals::Cells,
    /// The worker's reloads (SPEC §13): under way since, completed, refused.
    reloads: reloads::Cells,
}

impl Ledger {
    /// A private slot, for a daemon that shares nothing (one worker): same code path, no
    /// mapping.
    pub fn private() -> &'static Ledger {
        Box::leak(Box::new(Ledger {
            counts: Default::default(),
            heartbeat: AtomicU64::new(0),
            ready: AtomicU32::new(0),
            refusals: Default::default(),
            reloads: Default::default(),
        }))
    }

    /// Add `n` to `c`. **Owner only** (a load and a store: no other process writes here).
    #[inline]
    pub fn add(&self, c: Counter, n: u64) {
        let a = &self.counts[c as usize];
        a.store(a.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Set `c` (for the gauge [`Counter::Open`]). Owner only.
    #[inline]
    pub fn set(&self, c: Counter, v: u64) {
        self.counts[c as usize].store(v, Relaxed);
    }

    /// The current value of `c`, from any process.
    #[inline]
    pub fn get(&self, c: Counter) -> u64 {
        self.counts[c as usize].load(Relaxed)
    }

    /// Count one refusal for `reason` (with `peer` as its latest example). Owner only.
    pub fn refused(
        &self,
        reason: crate::shared::Reason,
        peer: crate::net::addr::Peer,
        datagram: bool,
    ) {
        self.refusals.record(reason, peer, datagram);
    }

    /// The refusals for `reason` since the slot was prepared, from any process.
    pub fn refusals(&self, reason: crate::shared::Reason) -> Refusals {
        self.refusals.read(reason)
    }

    /// Every counter now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot(Counter::ALL.map(|c| self.get(c)))
    }

    /// Has the worker registered its listeners?
    pub fn is_ready(&self) -> bool {
        self.ready.load(Relaxed) == 1
    }

    /// Milliseconds since the epoch at the last recorded loop turn.
    pub fn heartbeat_ms(&self) -> u64 {
        self.heartbeat.load(Relaxed)
    }

    /// The worker's reloads (under way, completed, refused), from any process.
    pub fn reloads(&self) -> Reloads {
        self.reloads.read()
    }

    fn reset(&self, heartbeat_ms: u64) {
        for c in &self.counts {
            c.store(0, Relaxed);
        }
        self.ready.store(0, Relaxed);
        self.heartbeat.store(heartbeat_ms, Relaxed);
        self.refusals.reset();
        self.reloads.reset();
    }
}

/// Counter values read at one moment (each exact; see the module docs).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Snapshot(pub [u64; COUNTERS]);

impl Snapshot {
    /// The value of `c`.
    pub fn get(&self, c: Counter) -> u64 {
        self.0[c as usize]
    }

    /// Add `other`'s counts into this one (a worker number's earlier generations, say).
    pub fn add(&mut self, other: &Snapshot) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a = a.wrapping_add(b);
        }
    }
}

/// What a worker process needs of the region: its number, its slot and the epoch.
#[derive(Clone, Copy, Debug)]
pub struct Seat {
    /// 1..=N; a replacement keeps the number of the worker it replaces.
    pub number: usize,
    /// Written by this worker alone.
    pub slot: &'static Ledger,
    epoch: Instant,
}

impl Seat {
    /// Record a loop turn at `now`.
    #[inline]
    pub fn beat(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.epoch).as_millis() as u64;
        self.slot.heartbeat.store(ms, Relaxed);
    }

    /// The listeners are registered: the supervisor may count this worker as accepting.
    pub fn mark_ready(&self) {
        self.slot.ready.store(1, Relaxed);
    }

    /// This worker begins a reload at `now`: not wedged while its loop stands still.
    pub fn reload_begins(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.epoch).as_millis() as u64;
        self.slot.reloads.begin(ms);
    }

    /// This worker's new image has adopted everything: the reload is complete.
    pub fn reload_completed(&self) {
        self.slot.reloads.completed();
    }

    /// This worker's reload was refused; the old image serves on.
    pub fn reload_refused(&self) {
        self.slot.reloads.refused();
    }
}

#[repr(C, align(128))]
struct Header {
    epoch: Instant,
    workers: usize,
    retired: Ledger,
}

/// The mapped region: header, `workers` slots, and the extra block.
pub struct Region {
    header: &'static Header,
    slots: &'static [Ledger],
    extra: Option<(NonNull<u8>, usize)>,
    /// The memfd mapped (kept open so a reload can hand it over).
    fd: std::os::fd::OwnedFd,
}

const PAGE: usize = 4096;

impl Region {
    /// Map a zeroed shared region for `workers` slots and `extra` more bytes (page-aligned,
    /// rounded up to whole pages; 0 for none). Call it before forking.
    pub fn map(workers: usize, extra: usize) -> io::Result<&'static Region> {
        let slots_at = size_of::<Header>();
        let extra_at = (slots_at + workers * size_of::<Ledger>()).next_multiple_of(PAGE);
        let len = extra_at + extra.next_multiple_of(PAGE);
        // A memfd, not an anonymous mapping: MAP_SHARED makes it survive fork as the *same*
        // pages, and its descriptor lets a reload's new image map them again (SPEC §13).
        let (fd, base) = crate::sys::map_shared_memfd("echo-mux-shared", len, false)?;
        let base = base.as_ptr();
        debug_assert_eq!(base as usize % align_of::<Header>(), 0);
        // SAFETY: the mapping is `len` bytes, page-aligned (so aligned for Header),
        // zero-filled by the kernel, and nobody else can see it yet: the header's plain
        // fields are written here, once, before any other process exists to read them.
        unsafe {
            let header = base.cast::<Header>();
            std::ptr::addr_of_mut!((*header).epoch).write(Instant::now());
            std::ptr::addr_of_mut!((*header).workers).write(workers);
        }
        // SAFETY: as above; the header is written.
        Ok(unsafe { Region::place(fd, base, len, workers, extra > 0) })
    }

    /// The region an earlier image of this process mapped from `fd` (handed over by a
    /// reload): mapped again, header and ledgers as they are.
    pub fn adopt(fd: std::os::fd::OwnedFd) -> io::Result<&'static Region> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
        let len = usize::try_from(crate::sys::file_len(&fd)?)
            .map_err(|_| bad("shared region too large"))?;
        if len < size_of::<Header>() || len % PAGE != 0 {
            return Err(bad("shared region has the wrong size"));
        }
        let base = crate::sys::map_shared_fd(&fd, len, false)?.as_ptr();
        // SAFETY: the mapping is at least a header long, page-aligned; the header was
        // written by the image that made the region and is never written again.
        let workers = unsafe { std::ptr::addr_of!((*base.cast::<Header>()).workers).read() };
        let slots_at = size_of::<Header>();
        let extra_at = workers
            .checked_mul(size_of::<Ledger>())
            .and_then(|n| n.checked_add(slots_at))
            .map(|n| n.next_multiple_of(PAGE))
            .filter(|&n| n <= len)
            .ok_or_else(|| bad("shared region header names more workers than it holds"))?;
        // SAFETY: as above; `extra_at <= len` was checked.
        Ok(unsafe { Region::place(fd, base, len, workers, extra_at < len) })
    }

    /// The handles on a mapping of `len` bytes at `base` whose header is written.
    ///
    /// # Safety
    /// `base` is a page-aligned, `len`-byte mapping that is never unmapped, with a header
    /// naming `workers` and room for their ledgers.
    unsafe fn place(
        fd: std::os::fd::OwnedFd,
        base: *mut u8,
        len: usize,
        workers: usize,
        has_extra: bool,
    ) -> &'static Region {
        let slots_at = size_of::<Header>();
        let extra_at = (slots_at + workers * size_of::<Ledger>()).next_multiple_of(PAGE);
        // SAFETY: per this function's contract: aligned, in bounds, all-zero or written
        // atomics are valid, never unmapped, so the references are good for 'static.
        let (header, slots) = unsafe {
            let slots = std::slice::from_raw_parts(base.add(slots_at).cast::<Ledger>(), workers);
            (&*base.cast::<Header>(), slots)
        };
        // SAFETY: `extra_at < len` whenever there is an extra block, inside the mapping.
        let extra = has_extra
            .then(|| unsafe { (NonNull::new_unchecked(base.add(extra_at)), len - extra_at) });
        Box::leak(Box::new(Region {
            header,
            slots,
            extra,
            fd,
        }))
    }

    /// The memfd behind the mapping, for a reload to hand over (close-on-exec otherwise).
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }

    /// How many worker slots there are.
    pub fn workers(&self) -> usize {
        self.header.workers
    }

    /// Worker `number`'s seat (1-based).
    pub fn seat(&self, number: usize) -> Seat {
        Seat {
            number,
            slot: &self.slots[number - 1],
            epoch: self.header.epoch,
        }
    }

    /// Milliseconds since the epoch, for comparing with heartbeats.
    pub fn now_ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.header.epoch).as_millis() as u64
    }

    /// Prepare slot `number` for a new worker: zeroed, not ready, heartbeat `now` (so a
    /// fresh worker has the full wedge timeout to start). Supervisor only, before the fork.
    pub fn prepare(&self, number: usize, now: Instant) {
        self.slots[number - 1].reset(self.now_ms(now));
    }

    /// Worker `number` was reaped: move its counts (all but the open gauge: its connections
    /// died with it) into the retired totals and zero the slot. Supervisor only.
    pub fn retire(&self, number: usize) {
        let slot = &self.slots[number - 1];
        let retired = &self.header.retired;
        for c in Counter::ALL {
            if c != Counter::Open {
                retired.add(c, slot.get(c));
            }
        }
        slot.reset(0);
    }

    /// Totals over every worker now running and every retired one.
    pub fn totals(&self) -> Snapshot {
        let mut sum = self.header.retired.snapshot();
        for slot in self.slots {
            sum.add(&slot.snapshot());
        }
        sum
    }

    /// Every slot, worker 1 first.
    pub fn slots(&self) -> &'static [Ledger] {
        self.slots
    }

    /// The extra block (start, length), if one was asked for: shared, zero-initialised
    /// memory that other processes write too, so only atomics or a process-shared lock may
    /// touch it.
    pub fn extra(&self) -> Option<(NonNull<u8>, usize)> {
        self.extra
    }
}

#[cfg(test)]
mod tests;
