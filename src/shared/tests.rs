//! The shared region: layout, exact totals across generations, and a real fork.

use super::*;

#[test]
fn slots_are_cache_line_sized_and_aligned() {
    assert_eq!(align_of::<Ledger>(), 128);
    assert_eq!(size_of::<Ledger>() % 128, 0);
    let r = Region::map(3, 0).unwrap();
    for s in r.slots() {
        assert_eq!(s as *const Ledger as usize % 128, 0);
    }
    assert!(r.extra().is_none());
}

#[test]
fn totals_include_retired_generations_exactly() {
    let r = Region::map(2, 0).unwrap();
    let (a, b) = (r.seat(1), r.seat(2));
    a.slot.add(Counter::Accepted, 5);
    a.slot.add(Counter::BytesIn, 100);
    a.slot.set(Counter::Open, 2);
    b.slot.add(Counter::Accepted, 1);
    assert_eq!(r.totals().get(Counter::Accepted), 6);
    assert_eq!(r.totals().get(Counter::Open), 2);
    r.retire(1);
    assert_eq!(a.slot.get(Counter::Accepted), 0);
    assert_eq!(r.totals().get(Counter::Accepted), 6, "retired counts stay");
    assert_eq!(
        r.totals().get(Counter::Open),
        0,
        "a dead worker holds nothing open"
    );
    a.slot.add(Counter::Accepted, 2);
    assert_eq!(r.totals().get(Counter::Accepted), 8);
    assert_eq!(r.totals().get(Counter::BytesIn), 100);
}

#[test]
fn a_forked_child_writes_where_the_parent_reads() {
    let r = Region::map(1, 10_000).unwrap();
    let seat = r.seat(1);
    let (extra, len) = r.extra().unwrap();
    assert_eq!(extra.as_ptr() as usize % PAGE, 0);
    assert!(len >= 10_000);
    // SAFETY: fork in a test: the child only stores to the mapping and calls _exit
    // (async-signal-safe), so the test harness's other threads are never touched there.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        seat.slot.add(Counter::BytesOut, 42);
        seat.mark_ready();
        // SAFETY: `extra` points at `len` >= 1 mapped bytes.
        unsafe { extra.as_ptr().write(7) };
        // SAFETY: _exit ends the child without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert_eq!(seat.slot.get(Counter::BytesOut), 42);
    assert!(seat.slot.is_ready());
    // SAFETY: the child has exited; the byte is initialised shared memory.
    assert_eq!(unsafe { extra.as_ptr().read() }, 7);
}

#[test]
fn heartbeats_are_milliseconds_since_the_epoch() {
    let r = Region::map(1, 0).unwrap();
    let now = Instant::now() + std::time::Duration::from_secs(3);
    r.prepare(1, now);
    assert!(r.slots()[0].heartbeat_ms() >= 3000);
    r.seat(1).beat(now + std::time::Duration::from_millis(1500));
    assert!(r.slots()[0].heartbeat_ms() >= 4500);
}

#[test]
fn a_worker_reload_is_seen_begun_then_completed_or_refused() {
    let r = Region::map(2, 0).unwrap();
    let now = Instant::now();
    r.prepare(1, now);
    let seat = r.seat(1);
    assert_eq!(seat.slot.reloads(), Reloads::default());
    seat.reload_begins(now + std::time::Duration::from_millis(2500));
    let begun = seat.slot.reloads();
    assert!(begun.since_ms.unwrap() >= 2500, "{begun:?}");
    seat.reload_completed();
    assert_eq!(
        seat.slot.reloads(),
        Reloads {
            since_ms: None,
            done: 1,
            failed: 0
        }
    );
    seat.reload_begins(now);
    assert!(
        seat.slot.reloads().since_ms.is_some(),
        "the epoch's own millisecond still reads as under way"
    );
    seat.reload_refused();
    assert_eq!(
        seat.slot.reloads(),
        Reloads {
            since_ms: None,
            done: 1,
            failed: 1
        }
    );
    assert_eq!(
        r.slots()[1].reloads(),
        Reloads::default(),
        "slot 2 untouched"
    );
    r.prepare(1, now);
    assert_eq!(
        seat.slot.reloads(),
        Reloads::default(),
        "a new worker starts at 0"
    );
}

#[test]
fn a_region_adopted_from_its_memfd_is_the_same_memory() {
    let r = Region::map(3, 10_000).unwrap();
    r.seat(2).slot.add(Counter::Accepted, 7);
    r.header.retired.add(Counter::BytesIn, 11);
    let fd = r.fd().try_clone_to_owned().unwrap();
    let again = Region::adopt(fd).unwrap();
    assert_eq!(again.workers(), 3);
    assert_eq!(again.header.epoch, r.header.epoch);
    assert_eq!(again.totals().get(Counter::Accepted), 7);
    assert_eq!(again.totals().get(Counter::BytesIn), 11);
    assert_eq!(again.extra().unwrap().1, r.extra().unwrap().1);
    again.seat(1).slot.add(Counter::Accepted, 1);
    assert_eq!(
        r.totals().get(Counter::Accepted),
        8,
        "one set of pages, two mappings"
    );
}
