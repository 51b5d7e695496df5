//! A test hook (debug builds only): make a worker stop for a while *inside* a table update,
//! so that an integration test can SIGSTOP or SIGKILL it exactly there (SPEC §8: a worker
//! stopped or killed at any instruction, inside shared-memory updates included, must not
//! stall the others, nor change any count but its own).
//!
//! `ECHO_MUX_TEST_TABLE_PAUSE=claim:127.0.1.0/24@2` pauses worker 2's first update that
//! claims a slot for a source in 127.0.1.0/24 (IPv4 only; a plain address is a /32): the
//! slot is CLAIMING, not yet published. `count:…@2` pauses worker 2's first admission from
//! such a source after its own share was raised and before the slot's gate confirmed it. The worker logs
//! `test hook: pausing inside a table update (…)` and sleeps 30 s. The variable is read
//! once; the pause happens once per daemon; release builds do not look at it.

use std::sync::atomic::AtomicU32;
#[cfg(debug_assertions)]
use std::sync::atomic::Ordering;
#[cfg(debug_assertions)]
use std::sync::OnceLock;

/// Where in an update the hook may pause.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Stage {
    Claim,
    Count,
}

#[cfg(debug_assertions)]
fn wanted() -> Option<(Stage, u64, u64, usize)> {
    static WANT: OnceLock<Option<(Stage, u64, u64, usize)>> = OnceLock::new();
    *WANT.get_or_init(|| {
        let v = std::env::var("ECHO_MUX_TEST_TABLE_PAUSE").ok()?;
        let (stage, rest) = v.split_once(':')?;
        let (addr, worker) = rest.split_once('@')?;
        let stage = match stage {
            "claim" => Stage::Claim,
            "count" => Stage::Count,
            _ => return None,
        };
        let (addr, len) = addr.split_once('/').unwrap_or((addr, "32"));
        let ip: std::net::IpAddr = addr.parse().ok()?;
        let key = super::probe::encode(super::SourceKey::of(ip));
        let mask = u64::MAX << (32 - len.parse::<u32>().ok()?.min(32));
        Some((stage, key & mask, mask, worker.parse().ok()?))
    })
}

/// Called at `stage` of worker `number`'s update of `key`: pauses there if the hook asks for it, once per
/// daemon (`fired` lives in the table's shared memory, so the other workers and the
/// replacement go through).
#[cfg(debug_assertions)]
pub(super) fn at(stage: Stage, key: u64, number: usize, fired: &AtomicU32) {
    let hit =
        wanted().is_some_and(|(s, base, mask, k)| (s, k) == (stage, number) && key & mask == base);
    if hit && fired.swap(1, Ordering::SeqCst) == 0 {
        log::warn!("test hook: pausing inside a table update ({stage:?})");
        crate::logging::finish();
        std::thread::sleep(std::time::Duration::from_secs(30));
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub(super) fn at(_stage: Stage, _key: u64, _number: usize, _fired: &AtomicU32) {}
