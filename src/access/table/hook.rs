//! A test hook (debug builds only): make a worker stop for a while *inside* a table update,
//! so that an integration test can SIGSTOP or SIGKILL it exactly there (SPEC §8: a worker
//! stopped or killed at any instruction, inside shared-memory updates included, must not
//! stall the others, nor change any count but its own).
//!
//! `ECHO_MUX_TEST_TABLE_PAUSE=claim:127.0.0.66` pauses the first update that claims a slot
//! for source 127.0.0.66 (the slot is CLAIMING, not yet published);
//! `ECHO_MUX_TEST_TABLE_PAUSE=count:127.0.0.66` pauses the first admission from it after
//! its own share was raised and before the slot's gate confirmed it. The worker logs
//! `test hook: pausing inside a table update (…)` and sleeps 30 s. The variable is read
//! once; release builds do not look at it.

#[cfg(debug_assertions)]
use std::sync::atomic::{AtomicBool, Ordering};
#[cfg(debug_assertions)]
use std::sync::OnceLock;

/// Where in an update the hook may pause.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Stage {
    Claim,
    Count,
}

#[cfg(debug_assertions)]
fn wanted() -> Option<(Stage, u64)> {
    static WANT: OnceLock<Option<(Stage, u64)>> = OnceLock::new();
    *WANT.get_or_init(|| {
        let v = std::env::var("ECHO_MUX_TEST_TABLE_PAUSE").ok()?;
        let (stage, addr) = v.split_once(':')?;
        let stage = match stage {
            "claim" => Stage::Claim,
            "count" => Stage::Count,
            _ => return None,
        };
        let ip: std::net::IpAddr = addr.parse().ok()?;
        Some((stage, super::probe::encode(super::SourceKey::of(ip))))
    })
}

/// Called at `stage` of an update of `key`: pauses there once if the hook asks for it.
#[cfg(debug_assertions)]
pub(super) fn at(stage: Stage, key: u64) {
    static DONE: AtomicBool = AtomicBool::new(false);
    if wanted() == Some((stage, key)) && !DONE.swap(true, Ordering::Relaxed) {
        log::warn!("test hook: pausing inside a table update ({stage:?})");
        crate::logging::finish();
        std::thread::sleep(std::time::Duration::from_secs(30));
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub(super) fn at(_stage: Stage, _key: u64) {}
