//! The per-source table with `--workers` (SPEC §8 + §10): one table for the daemon as a
//! whole, in the region the supervisor shares with its workers, and what a worker's death
//! does to it.
//!
//! The supervisor builds the table before the first fork and never admits anyone; each
//! worker gets an `Access` over it (`into_worker`). A worker that dies without a clean exit
//! leaves open counts nobody will release, so the supervisor resets the table when it reaps
//! one (README: "A worker that dies with connections open"). It never waits on the table's
//! lock for that: a worker stopped inside the critical section would otherwise hang the
//! supervisor, and with it the wedge check that is to kill that worker.

use std::io;
use std::time::Instant;

use log::{debug, warn};
use nix::unistd::Pid;

use super::life::Ended;
use super::Supervisor;
use crate::access::{Limits, SourceTable, MAX_SOURCES};
use crate::error::Error;
use crate::shared::Region;

/// Map the shared region for `n` workers, with the per-source table in it when a limit is set.
pub(super) fn map_region(
    n: usize,
    limits: Limits,
) -> Result<(&'static Region, Option<SourceTable>), Error> {
    let extra = if limits.any() {
        SourceTable::region_size(MAX_SOURCES)
    } else {
        0
    };
    let region = Region::map(n, extra).map_err(|e| Error::io("cannot map shared memory", e))?;
    let Some((at, len)) = region.extra().filter(|_| limits.any()) else {
        return Ok((region, None));
    };
    // SAFETY: the extra block is fresh, zeroed shared memory of `len` bytes, page aligned and
    // never unmapped; only the table (under its lock) writes it, in every process.
    let table = unsafe { SourceTable::in_region(at.as_ptr(), len, limits, Instant::now()) }
        .map_err(|e| Error::io("cannot place the per-source table", io::Error::other(e)))?;
    Ok((region, Some(table)))
}

impl Supervisor {
    /// A worker that did not end with a clean exit (its drain closes and releases every
    /// connection) may have left open counts in the per-source table that nobody will ever
    /// release, locking its clients' sources out for good: start the table afresh.
    pub(super) fn forget_sources(&mut self, k: usize, pid: Pid, ended: Ended) {
        if self.table.is_none() || ended.is_clean() {
            return;
        }
        self.table_dirty = Some(format!("worker {k} (pid {pid})"));
        self.reset_table(pid.as_raw() as u32);
    }

    /// Reset the per-source table if a dead worker left it dirty. Never waits: when another
    /// (live, perhaps stopped) worker holds the lock, the next check tries again, so the
    /// supervisor's own loop never hangs on a worker's lock.
    pub(super) fn reset_table(&mut self, dead: u32) {
        let (Some(table), Some(who)) = (&self.table, &self.table_dirty) else {
            return;
        };
        match table.reset_after_death(dead) {
            Some(0) => {}
            Some(n) => warn!("{who} left {n} sources in the per-source table; it was reset"),
            None => return debug!("per-source table busy; resetting it at the next check"),
        }
        self.table_dirty = None;
    }
}
