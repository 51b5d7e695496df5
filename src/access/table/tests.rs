use super::*;
use std::collections::HashMap;
use std::time::Duration;

const T0: Duration = Duration::from_secs(10);

fn v4(n: u32) -> SourceKey {
    SourceKey::V4(0x7f00_0000 | n)
}

fn table(max: u32, rate: u32, cap: usize) -> (SourceTable, Instant) {
    let epoch = Instant::now();
    let limits = Limits {
        max_per_source: max,
        rate_per_source: rate,
    };
    (SourceTable::with_cap(limits, epoch, cap), epoch + T0)
}

fn ms(t: Instant, ms: u64) -> Instant {
    t + Duration::from_millis(ms)
}

#[test]
fn max_per_source_counts_open_connections() {
    let (t, now) = table(3, 0, MAX_SOURCES);
    for _ in 0..3 {
        assert_eq!(t.admit(v4(2), now), Verdict::Admitted);
    }
    assert_eq!(t.admit(v4(2), now), Verdict::OverMax);
    assert_eq!(t.admit(v4(2), now), Verdict::OverMax);
    assert_eq!(t.admit(v4(3), now), Verdict::Admitted, "another source");
    t.release(v4(2), now);
    assert_eq!(t.admit(v4(2), now), Verdict::Admitted, "a slot freed");
    assert_eq!(t.admit(v4(2), now), Verdict::OverMax);
    for _ in 0..3 {
        t.release(v4(2), now);
    }
    t.release(v4(3), now);
    assert!(t.is_empty(), "no connection and no bucket: nothing kept");
    t.release(v4(9), now); // a stranger: ignored
}

#[test]
fn a_reset_after_a_death_forgets_counts_and_releases_saturate() {
    // A rate too (1000/s, far from reached) keeps an entry whose count is 0 in the table.
    let (t, now) = table(2, 1000, MAX_SOURCES);
    for _ in 0..2 {
        assert_eq!(t.admit(v4(2), now), Verdict::Admitted);
    }
    assert_eq!(t.admit(v4(3), now), Verdict::Admitted);
    // A pid above pid_max: the holder that "died" was never there; the lock is free.
    assert_eq!(t.reset_after_death(0x7fff_fff2), Some(2), "two forgotten");
    assert!(t.is_empty());
    assert_eq!(t.admit(v4(2), now), Verdict::Admitted);
    // Three releases of connections admitted before (two) and after (one) the reset: the
    // count stops at 0 instead of wrapping, so the source is neither locked out nor freed
    // of its limit.
    for _ in 0..3 {
        t.release(v4(2), now);
    }
    assert_eq!(t.admit(v4(2), now), Verdict::Admitted);
    assert_eq!(t.admit(v4(2), now), Verdict::Admitted);
    assert_eq!(t.admit(v4(2), now), Verdict::OverMax);
}

#[test]
fn bucket_bursts_then_refills_at_the_rate() {
    let (t, now) = table(0, 20, MAX_SOURCES);
    for i in 0..20 {
        assert_eq!(t.admit(v4(2), now), Verdict::Admitted, "burst #{i}");
    }
    assert_eq!(t.admit(v4(2), now), Verdict::OverRate);
    assert_eq!(t.admit(v4(3), now), Verdict::Admitted, "another source");
    assert_eq!(t.admit(v4(2), ms(now, 49)), Verdict::OverRate, "not yet");
    assert_eq!(
        t.admit(v4(2), ms(now, 50)),
        Verdict::Admitted,
        "one token per 50 ms"
    );
    assert_eq!(t.admit(v4(2), ms(now, 50)), Verdict::OverRate);
    // A second later the bucket is full again: a whole burst, no more.
    let later = ms(now, 1100);
    for i in 0..20 {
        assert_eq!(
            t.admit(v4(2), later),
            Verdict::Admitted,
            "second burst #{i}"
        );
    }
    assert_eq!(t.admit(v4(2), later), Verdict::OverRate);
    // Refused attempts cost nothing: a source hammering away still gets N per second.
    for _ in 0..1000 {
        assert_eq!(t.admit(v4(2), later), Verdict::OverRate);
    }
    assert_eq!(t.admit(v4(2), ms(later, 50)), Verdict::Admitted);
}

#[test]
fn both_limits_and_datagrams() {
    let (t, now) = table(2, 3, MAX_SOURCES);
    assert_eq!(t.admit(v4(2), now), Verdict::Admitted);
    assert_eq!(t.admit(v4(2), now), Verdict::Admitted);
    assert_eq!(
        t.admit(v4(2), now),
        Verdict::OverMax,
        "max first: no token spent"
    );
    t.release(v4(2), now);
    assert_eq!(t.admit(v4(2), now), Verdict::Admitted, "third token");
    t.release(v4(2), now);
    assert_eq!(
        t.admit_datagram(v4(2), now),
        Verdict::OverRate,
        "one bucket for both"
    );
    assert_eq!(t.admit_datagram(v4(4), now), Verdict::Admitted);
    let (only_max, now) = table(1, 0, MAX_SOURCES);
    for _ in 0..100 {
        assert_eq!(only_max.admit_datagram(v4(2), now), Verdict::Admitted);
    }
    assert!(
        only_max.is_empty(),
        "datagrams under --max-per-source alone leave nothing"
    );
}

#[test]
fn ipv6_sources_are_their_64() {
    let (t, now) = table(1, 0, MAX_SOURCES);
    let key = |s: &str| SourceKey::of(s.parse().unwrap());
    assert_eq!(t.admit(key("2001:db8:0:1::1"), now), Verdict::Admitted);
    assert_eq!(t.admit(key("2001:db8:0:1::2"), now), Verdict::OverMax);
    assert_eq!(t.admit(key("2001:db8:0:2::1"), now), Verdict::Admitted);
    assert_eq!(t.admit(key("127.0.0.1"), now), Verdict::Admitted);
    assert_eq!(t.admit(key("::ffff:127.0.0.1"), now), Verdict::OverMax);
    // An IPv4 address and an IPv6 /64 with the same 64-bit value are different sources.
    assert_eq!(t.admit(SourceKey::V6(0x7f00_0001), now), Verdict::Admitted);
}

#[test]
fn entries_expire_once_idle_with_a_full_bucket() {
    let (t, now) = table(2, 10, 8); // 16 slots: a few calls sweep them all
    for n in 0..8 {
        assert_eq!(t.admit(v4(n), now), Verdict::Admitted);
    }
    t.admit(v4(0), now); // a second connection from 0
    for n in 1..8 {
        t.release(v4(n), now); // closed, but their buckets are not full yet
    }
    assert_eq!(t.len(), 8, "no connection but a bucket to refill: kept");
    assert_eq!(
        t.admit(v4(100), now),
        Verdict::Full,
        "at the cap: over its rate"
    );
    // Source 0 still has its connections, the others are idle: their buckets fill in 1 s.
    let later = ms(now, 1000);
    assert_eq!(t.admit(v4(1), later), Verdict::Admitted);
    t.release(v4(1), later);
    assert_eq!(t.admit(v4(1), ms(later, 200)), Verdict::Admitted);
    t.release(v4(1), ms(later, 300)); // bucket full again at later+200ms+100ms
    assert!(t.len() < 8, "release removes its own entry once expired");
    for _ in 0..8 {
        t.release(v4(0xdead), later); // sweeps as a side effect
    }
    assert_eq!(t.len(), 1, "only source 0 (two open connections) remains");
    assert_eq!(
        t.admit(v4(0), later),
        Verdict::OverMax,
        "and it kept its count"
    );
    assert_eq!(t.admit(v4(100), later), Verdict::Admitted);
}

#[test]
fn a_full_table_of_expired_sources_makes_room_at_once() {
    let (t, now) = table(0, 5, 1000);
    for n in 0..1000 {
        assert_eq!(t.admit(v4(n), now), Verdict::Admitted);
    }
    assert_eq!(t.admit(v4(5000), now), Verdict::Full);
    // One second later every bucket is full: the next new source is not turned away.
    assert_eq!(t.admit(v4(5000), ms(now, 1000)), Verdict::Admitted);
}

/// SPEC §10: 100,000 distinct sources within a second never make the table grow past
/// 65,536, and the block it lives in is fixed.
#[test]
fn the_cap_holds_under_100_000_sources() {
    let (t, now) = table(0, 1, MAX_SOURCES); // each entry lives 1 s
    let (mut admitted, mut full) = (0, 0);
    for n in 0..100_000u32 {
        let when = now + Duration::from_micros(u64::from(n) * 5); // 0.5 s in all
        match t.admit(SourceKey::V4(0x0a00_0000 + n), when) {
            Verdict::Admitted => admitted += 1,
            Verdict::Full => full += 1,
            other => panic!("source {n}: {other:?}"),
        }
        assert!(t.len() <= MAX_SOURCES);
    }
    assert_eq!((admitted, full), (MAX_SOURCES, 100_000 - MAX_SOURCES));
    // Two seconds on, new sources find room again as the old ones expire.
    let later = ms(now, 2000);
    for n in 0..1000u32 {
        let got = t.admit(SourceKey::V4(0x0b00_0000 + n), later);
        assert_eq!(got, Verdict::Admitted, "new source {n} after expiry");
    }
    assert!(t.len() <= MAX_SOURCES);
    let bytes = SourceTable::region_size(MAX_SOURCES);
    assert_eq!(bytes, 128 + 131_072 * 24);
    println!(
        "per-source table at its cap of {MAX_SOURCES}: {bytes} bytes ({:.2} MiB, {:.0} bytes per source)",
        bytes as f64 / (1 << 20) as f64,
        bytes as f64 / MAX_SOURCES as f64
    );
}

/// Random admits and releases on a small table against a plain map: lookups after the
/// backward-shift removals (wrapping around the end of the array) must find every entry.
#[test]
fn agrees_with_a_model_under_random_churn() {
    let (t, now) = table(4, 0, 64);
    let mut model: HashMap<u32, u32> = HashMap::new();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for step in 0..200_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let n = (x % 97) as u32;
        let open = model.get(&n).copied().unwrap_or(0);
        if x & (1 << 40) == 0 {
            let want = if open >= 4 {
                Verdict::OverMax
            } else if open == 0 && model.len() >= 64 {
                Verdict::Full
            } else {
                Verdict::Admitted
            };
            assert_eq!(t.admit(v4(n), now), want, "step {step}, source {n}");
            if want == Verdict::Admitted {
                *model.entry(n).or_default() += 1;
            }
        } else if open > 0 {
            t.release(v4(n), now);
            if open == 1 {
                model.remove(&n);
            } else {
                model.insert(n, open - 1);
            }
        }
        assert_eq!(t.len(), model.len(), "step {step}");
    }
}

/// The table in a MAP_SHARED region made before a fork: the child's connections count
/// for the parent too (SPEC §10 with --workers).
#[test]
fn limits_hold_across_processes_sharing_the_region() {
    let len = SourceTable::region_size(MAX_SOURCES);
    // SAFETY: a fresh anonymous shared mapping; the test leaks it (never unmapped).
    let region = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(region, libc::MAP_FAILED);
    let limits = Limits {
        max_per_source: 3,
        rate_per_source: 0,
    };
    // SAFETY: the mapping is zero-filled, len bytes, page aligned, and outlives the table.
    let t = unsafe { SourceTable::in_region(region.cast(), len, limits, Instant::now()) }.unwrap();
    let now = Instant::now();
    // SAFETY: the child only calls admit (no allocation, no lock but the table's own) and
    // _exit; it never returns into the test harness.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork failed");
    if child == 0 {
        let t = t.share().expect("a table in a region can be shared");
        let ok =
            t.admit(v4(2), now) == Verdict::Admitted && t.admit(v4(2), now) == Verdict::Admitted;
        // SAFETY: _exit ends the child at once, without the parent's destructors.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child, with a valid pointer for its status.
    let reaped = unsafe { libc::waitpid(child, &mut status, 0) };
    assert_eq!(reaped, child);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child: {status:#x}"
    );
    assert_eq!(t.admit(v4(2), now), Verdict::Admitted, "the third");
    assert_eq!(
        t.admit(v4(2), now),
        Verdict::OverMax,
        "two of them are the child's"
    );
    assert_eq!(t.len(), 1);
    assert!(
        table(1, 0, 10).0.share().is_none(),
        "a table in its own memory is not shared"
    );
}

/// With 10,000 sources in the table: one admit plus one release, in ns. Run with
/// `cargo test --release --lib table::tests::admit_cost -- --ignored --nocapture`.
#[test]
#[ignore = "a benchmark: prints ns per admit + release"]
fn admit_cost() {
    let (t, now) = table(1000, 0, MAX_SOURCES);
    for n in 0..10_000u32 {
        t.admit(SourceKey::V4(0x0a00_0000 + n * 7919), now);
    }
    let rounds = 1_000_000u32;
    let start = Instant::now();
    for i in 0..rounds {
        let source = SourceKey::V4(0x0a00_0000 + (i % 20_000) * 7919); // half present, half new
        if t.admit(source, now) == Verdict::Admitted {
            t.release(source, now);
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / f64::from(rounds);
    println!(
        "{} sources in the table: {ns:.1} ns per admit + release",
        t.len()
    );
}

/// Resident memory of a table filled to its cap, as the kernel counts it (run alone:
/// `cargo test --release --lib table::tests::memory_at_cap -- --ignored --nocapture`).
#[test]
#[ignore = "a measurement: prints the table's resident memory at its cap"]
fn memory_at_cap() {
    let rss = crate::access::rss_kib;
    let before = rss();
    let (t, now) = table(4, 10, MAX_SOURCES);
    let empty = rss();
    for n in 0..MAX_SOURCES as u32 + 1000 {
        t.admit(SourceKey::V4(0x0a00_0000 + n), now);
    }
    let full = rss();
    println!(
        "region {} bytes; RSS +{} KiB when made, +{} KiB with {} sources",
        SourceTable::region_size(MAX_SOURCES),
        empty - before,
        full - before,
        t.len()
    );
}
