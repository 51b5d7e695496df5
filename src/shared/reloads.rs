//! A worker's reloads, in its slot (SPEC §13 with `--workers`): how the supervisor learns that
//! a worker's reload is under way, has completed or was refused, without a pipe to block on.
//!
//! Three single-writer words, written by the worker alone (the supervisor only zeroes them
//! when it prepares the slot for a new worker):
//! - `since`: the region-epoch milliseconds at which the reload began, 0 when none is under
//!   way. While it is set the supervisor does not judge the worker wedged (its loop stands
//!   still while the new image starts), up to a patience of its own.
//! - `done`: the reload generation, bumped by the *new* image once it has adopted everything.
//! - `failed`: bumped by the old image when its reload was refused (check said no, exec
//!   failed); the old image goes on serving.
//!
//! The supervisor reads `done`/`failed` before it sends SIGHUP and waits for either to move.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The reload words of one slot. All-zero is the valid initial state.
#[derive(Debug, Default)]
#[repr(C)]
pub(super) struct Cells {
    since: AtomicU64,
    done: AtomicU64,
    failed: AtomicU64,
}

/// What a reader sees of one worker's reloads.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Reloads {
    /// Milliseconds since the region's epoch at which the reload under way began.
    pub since_ms: Option<u64>,
    /// Completed reloads of this worker since its slot was prepared.
    pub done: u64,
    /// Refused reloads of this worker since its slot was prepared.
    pub failed: u64,
}

impl Cells {
    /// The worker begins a reload at `now_ms`. Owner only.
    pub(super) fn begin(&self, now_ms: u64) {
        self.since.store(now_ms.max(1), Relaxed);
    }

    /// The new image has adopted everything. Owner only.
    pub(super) fn completed(&self) {
        self.done
            .store(self.done.load(Relaxed).wrapping_add(1), Relaxed);
        self.since.store(0, Relaxed);
    }

    /// The reload was refused; the old image serves on. Owner only.
    pub(super) fn refused(&self) {
        self.failed
            .store(self.failed.load(Relaxed).wrapping_add(1), Relaxed);
        self.since.store(0, Relaxed);
    }

    /// From any process.
    pub(super) fn read(&self) -> Reloads {
        let since = self.since.load(Relaxed);
        Reloads {
            since_ms: (since != 0).then_some(since),
            done: self.done.load(Relaxed),
            failed: self.failed.load(Relaxed),
        }
    }

    pub(super) fn reset(&self) {
        for a in [&self.since, &self.done, &self.failed] {
            a.store(0, Relaxed);
        }
    }
}
