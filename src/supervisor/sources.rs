//! The per-source table with `--workers` (SPEC §8 + §10): one table for the daemon as a
//! whole, mapped before the first fork, and what a worker's death does to it.
//!
//! The supervisor makes the table and never admits anyone; each worker gets its own handle
//! (`into_worker`), which counts its connections in shares of its own. When the supervisor
//! reaps a worker, however it ended, it drops that worker's shares (exactly the connections
//! it held) and marks what it may have left half-done as abandoned, before the replacement
//! starts: the counts the other workers hold stay as they are. Nothing here waits on a
//! worker (the table has no lock).

use std::time::Instant;

use log::debug;

use super::Supervisor;
use crate::access::{Policy, SourceTable};
use crate::error::Error;
use crate::shared::Region;

/// Map the shared region for `n` workers, and the per-source table when a limit is set.
pub(super) fn map_region(
    n: usize,
    policy: &Policy,
) -> Result<(&'static Region, Option<SourceTable>), Error> {
    let region = Region::map(n, 0).map_err(|e| Error::io("cannot map shared memory", e))?;
    if !policy.limits.any() {
        return Ok((region, None));
    }
    let table = SourceTable::new(policy.limits, Instant::now(), policy.table_size(), n)
        .map_err(|e| Error::io("cannot map the per-source table", e))?;
    Ok((region, Some(table)))
}

impl Supervisor {
    /// Worker `k` was reaped: give back the connections it counted in the per-source table.
    pub(super) fn forget_sources(&mut self, k: usize) {
        if let Some(table) = &self.table {
            table.forget_worker(k);
            debug!("worker {k}'s per-source counts were given back");
        }
    }
}
