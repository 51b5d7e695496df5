//! What the supervisor keeps for the per-worker series: each worker number's earlier
//! generations and its restarts, so a replaced worker's counters carry on under its number
//! instead of starting again from zero (the shared region keeps only one retired sum).

use std::time::Instant;

use super::WorkerView;
use crate::shared::{Counter, Region, Snapshot};
use crate::stats::Totals;

/// Per worker number: the counts of its reaped generations and how often it was restarted.
#[derive(Debug)]
pub struct Generations {
    retired: Vec<Snapshot>,
    spawned: Vec<u64>,
}

impl Generations {
    pub fn new(workers: usize) -> Generations {
        Generations {
            retired: vec![Snapshot::default(); workers],
            spawned: vec![0; workers],
        }
    }

    /// Write every worker number's earlier generations and starts for a reload's new image.
    pub fn save(&self, w: &mut crate::reload::state::Writer) {
        w.usize(self.retired.len());
        for (retired, spawned) in self.retired.iter().zip(&self.spawned) {
            retired.0.iter().for_each(|&c| w.u64(c));
            w.u64(*spawned);
        }
    }

    /// What [`Generations::save`] wrote, for `workers` workers.
    pub fn adopt(
        workers: usize,
        r: &mut crate::reload::state::Reader<'_>,
    ) -> crate::reload::state::Result<Generations> {
        let n = r.usize()?;
        if n != workers {
            return Err(crate::reload::state::Error(format!(
                "generations of {n} workers handed over, {workers} expected"
            )));
        }
        let mut g = Generations::new(workers);
        for i in 0..n {
            for c in g.retired[i].0.iter_mut() {
                *c = r.u64()?;
            }
            g.spawned[i] = r.u64()?;
        }
        Ok(g)
    }

    /// Worker `number` was forked.
    pub fn spawned(&mut self, number: usize) {
        self.spawned[number - 1] += 1;
    }

    /// Worker `number` was reaped: keep its counts under its number, then let the region
    /// move them into the totals' retired sum ([`Region::retire`]).
    pub fn retire(&mut self, region: &Region, number: usize) {
        let mut last = region.slots()[number - 1].snapshot();
        last.0[Counter::Open as usize] = 0;
        self.retired[number - 1].add(&last);
        region.retire(number);
    }

    /// One row per worker number; `pids[i]` is worker i+1's running process.
    pub fn views(&self, region: &Region, pids: &[Option<u32>], now: Instant) -> Vec<WorkerView> {
        let now_ms = region.now_ms(now);
        region
            .slots()
            .iter()
            .enumerate()
            .map(|(i, slot)| {
                let live = slot.snapshot();
                let mut all = self.retired[i];
                all.add(&live);
                let beat = slot.heartbeat_ms();
                WorkerView {
                    number: i + 1,
                    pid: pids.get(i).copied().flatten(),
                    open: live.get(Counter::Open),
                    totals: Totals::from(&all),
                    last_turn: std::time::Duration::from_millis(now_ms.saturating_sub(beat)),
                    restarts: self.spawned[i].saturating_sub(1),
                }
            })
            .collect()
    }
}
