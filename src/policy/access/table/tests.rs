use super::*;
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::time::Duration;

const T0: Duration = Duration::from_secs(10);

fn v4(n: u32) -> SourceKey {
    SourceKey::V4(0x7f00_0000 | n)
}

fn table_for(max: u32, rate: u32, cap: usize, workers: usize) -> (SourceTable, Instant) {
    let epoch = Instant::now();
    let limits = Limits {
        max_per_source: max,
        rate_per_source: rate,
    };
    let t = SourceTable::new(limits, epoch, cap, workers).expect("mmap");
    (t, epoch + T0)
}

fn table(max: u32, rate: u32, cap: usize) -> (SourceTable, Instant) {
    table_for(max, rate, cap, 1)
}

fn ms(t: Instant, ms: u64) -> Instant {
    t + Duration::from_millis(ms)
}

/// Admitted, with the ticket (which must be there when `--max-per-source` is set).
fn ticket(v: Verdict) -> Ticket {
    match v {
        Verdict::Admitted(Some(t)) => t,
        other => panic!("want a counted admission, got {other:?}"),
    }
}

fn admitted(v: Verdict) -> bool {
    matches!(v, Verdict::Admitted(_))
}

#[test]
fn max_per_source_counts_open_connections() {
    let (t, now) = table(3, 0, MIN_SOURCES);
    let held: Vec<Ticket> = (0..3).map(|_| ticket(t.admit(v4(2), now))).collect();
    assert_eq!(t.admit(v4(2), now), Verdict::OverMax);
    assert_eq!(t.admit(v4(2), now), Verdict::OverMax);
    let other = ticket(t.admit(v4(3), now));
    assert_eq!(t.open(v4(2)), 3);
    t.release(held[0], now);
    let again = ticket(t.admit(v4(2), now));
    assert_eq!(t.admit(v4(2), now), Verdict::OverMax);
    for k in [held[1], held[2], again, other] {
        t.release(k, now);
    }
    assert_eq!((t.open(v4(2)), t.open(v4(3))), (0, 0));
    assert_eq!(t.undecided(), 0);
}

#[test]
fn bucket_bursts_then_refills_at_the_rate() {
    let (t, now) = table(0, 20, MIN_SOURCES);
    for i in 0..20 {
        assert_eq!(t.admit(v4(2), now), Verdict::Admitted(None), "burst #{i}");
    }
    assert_eq!(t.admit(v4(2), now), Verdict::OverRate);
    assert!(admitted(t.admit(v4(3), now)), "another source");
    assert_eq!(t.admit(v4(2), ms(now, 49)), Verdict::OverRate, "not yet");
    assert!(admitted(t.admit(v4(2), ms(now, 50))), "one token per 50 ms");
    assert_eq!(t.admit(v4(2), ms(now, 50)), Verdict::OverRate);
    let later = ms(now, 1100);
    for i in 0..20 {
        assert!(admitted(t.admit(v4(2), later)), "second burst #{i}");
    }
    assert_eq!(t.admit(v4(2), later), Verdict::OverRate);
    // Refused attempts cost nothing: a source hammering away still gets N per second.
    for _ in 0..1000 {
        assert_eq!(t.admit(v4(2), later), Verdict::OverRate);
    }
    assert!(admitted(t.admit(v4(2), ms(later, 50))));
}

/// SPEC §10 (issue 15 item 4): TCP connects and UDP datagrams draw on two buckets, so
/// forged datagrams from a victim's address cannot spend its TCP budget.
#[test]
fn tcp_and_udp_have_buckets_of_their_own() {
    let (t, now) = table(2, 3, MIN_SOURCES);
    for _ in 0..100 {
        t.admit_datagram(v4(2), now);
    }
    assert_eq!(t.admit_datagram(v4(2), now), Verdict::OverRate);
    let a = ticket(t.admit(v4(2), now));
    let b = ticket(t.admit(v4(2), now));
    assert_eq!(
        t.admit(v4(2), now),
        Verdict::OverMax,
        "max first: no token spent"
    );
    t.release(a, now);
    ticket(t.admit(v4(2), now)); // the third TCP token
    t.release(b, now);
    assert_eq!(
        t.admit(v4(2), now),
        Verdict::OverRate,
        "three TCP tokens spent"
    );
    let (only_max, now) = table(1, 0, MIN_SOURCES);
    for _ in 0..100 {
        assert_eq!(only_max.admit_datagram(v4(2), now), Verdict::Admitted(None));
    }
    assert!(
        only_max.is_empty(),
        "datagrams under --max-per-source alone leave nothing"
    );
}

#[test]
fn ipv6_sources_are_their_64() {
    let (t, now) = table(1, 0, MIN_SOURCES);
    let key = |s: &str| SourceKey::of(s.parse().unwrap());
    ticket(t.admit(key("2001:db8:0:1::1"), now));
    assert_eq!(t.admit(key("2001:db8:0:1::2"), now), Verdict::OverMax);
    ticket(t.admit(key("2001:db8:0:2::1"), now));
    ticket(t.admit(key("127.0.0.1"), now));
    assert_eq!(t.admit(key("::ffff:127.0.0.1"), now), Verdict::OverMax);
    // An IPv4 address and an IPv6 /64 with the same 64-bit value are different sources.
    ticket(t.admit(SourceKey::V6(0x7f00_0001), now));
    ticket(t.admit(key("::1"), now));
}

/// SPEC §10: a table of 8 (16 slots, all one window) full of held connections refuses a
/// new source (`table full`); once a source holds nothing, it is evicted to make room.
#[test]
fn held_connections_fill_it_and_idle_sources_make_room() {
    let (t, now) = table(4, 0, 8);
    let held: Vec<Ticket> = (0..16).map(|n| ticket(t.admit(v4(n), now))).collect();
    assert_eq!(t.len(), 16);
    assert_eq!(t.admit(v4(100), now), Verdict::Full);
    assert_eq!(
        t.admit_datagram(v4(100), now),
        Verdict::Admitted(None),
        "no rate: no entry"
    );
    ticket(t.admit(v4(3), now)); // a known source is no new one
    t.release(held[5], now);
    let new = ticket(t.admit(v4(100), now));
    assert_eq!(t.open(v4(5)), 0, "source 5 was evicted");
    assert_eq!(t.admit(v4(101), now), Verdict::Full);
    t.release(new, now);
    ticket(t.admit(v4(101), now));
    assert_eq!(t.open(v4(3)), 2, "held counts are never evicted");
}

/// Eviction takes sources whose buckets are full first, then the least recently seen.
#[test]
fn eviction_order_is_full_buckets_then_least_recently_seen() {
    let (t, now) = table(0, 10, 8);
    for n in 0..16 {
        assert!(admitted(t.admit(v4(n), ms(now, u64::from(n)))));
    }
    // 1 s on, every bucket is full; source 0 was seen last, 1 first after it.
    let later = ms(now, 2000);
    assert!(admitted(t.admit(v4(0), later)));
    assert!(admitted(t.admit(v4(100), later)));
    let present = |n: u32| {
        let key = encode(v4(n));
        (0..t.layout.nslots)
            .any(|i| tag(t.slot(i).state.load(SeqCst)) == LIVE && t.slot(i).key.load(SeqCst) == key)
    };
    assert!(!present(1), "the least recently seen went first");
    assert!(present(0) && present(2) && present(100));
    // Source 2 spends a token (its bucket is not full): 3 is evicted before it.
    let t2 = ms(later, 10);
    assert!(admitted(t.admit(v4(2), t2)));
    assert!(admitted(t.admit(v4(101), t2)));
    assert!(present(2) && !present(3));
}

/// A flood of sources that open nothing never turns a new source away, however small the
/// table: the flood only evicts itself.
#[test]
fn a_flood_of_idle_sources_never_fills_it() {
    let (t, now) = table(2, 5, 64);
    let held = ticket(t.admit(v4(7), now));
    for n in 0..20_000u32 {
        let v = t.admit_datagram(SourceKey::V4(0x0a00_0000 + n), now);
        assert!(admitted(v), "forged source {n}: {v:?}");
    }
    let v = t.admit(v4(8), now);
    assert!(matches!(v, Verdict::Admitted(Some(_))), "{v:?}");
    assert_eq!(t.open(v4(7)), 1, "a source with a connection open stays");
    t.release(held, now);
    assert!(t.len() <= 128);
}

/// Issue 20: a worker's death gives back exactly its own connections.
#[test]
fn a_dead_workers_shares_and_nothing_else_are_given_back() {
    let (t, now) = table_for(2, 0, MIN_SOURCES, 2);
    let (one, two) = (t.for_worker(1), t.for_worker(2));
    let a = ticket(one.admit(v4(50), now));
    ticket(two.admit(v4(50), now));
    ticket(two.admit(v4(51), now));
    assert_eq!(one.admit(v4(50), now), Verdict::OverMax);
    t.forget_worker(2);
    assert_eq!((t.open(v4(50)), t.open(v4(51))), (1, 0));
    let b = ticket(two.admit(v4(50), now));
    assert_eq!(
        one.admit(v4(50), now),
        Verdict::OverMax,
        "worker 1's count stayed"
    );
    one.release(a, now);
    two.release(b, now);
    assert_eq!(t.open(v4(50)), 0);
}

/// What a dead or stopped worker leaves half-done: a claim (withdrawn, by the next worker
/// that needs the slot, at once when its owner is dead), an eviction (given back whole
/// once its owner is dead; until then decided without the table).
#[test]
fn half_done_updates_do_not_block_anyone() {
    let (t, now) = table_for(1, 0, MIN_SOURCES, 2);
    let one = t.for_worker(1);
    let key = encode(v4(9));
    let home = one.window(key).next().unwrap();
    // Worker 2 (alive, say stopped) claimed the home slot for source 9.
    let slot = one.slot(home);
    slot.state.store(word(CLAIMING, 1, 0, 1), SeqCst);
    slot.key.store(key, SeqCst);
    let k = ticket(one.admit(v4(9), now));
    assert_eq!(one.admit(v4(9), now), Verdict::OverMax);
    assert_eq!(t.len(), 1, "one slot for the source, the claim withdrawn");
    // Worker 2 now starts evicting it (with a count open: it would give it back).
    let i = k.slot as usize;
    let s = one.slot(i).state.load(SeqCst);
    let evicting = word(EVICTING, 1, 0, version(s) + 1);
    one.slot(i).state.store(evicting, SeqCst);
    assert_eq!(
        one.admit(v4(9), now),
        Verdict::Admitted(None),
        "decided alone"
    );
    assert_eq!(t.undecided(), 1);
    t.forget_worker(2); // it died there
    assert_eq!(
        one.admit(v4(9), now),
        Verdict::OverMax,
        "restored with its count"
    );
    one.release(k, now);
    ticket(one.admit(v4(9), now));
}

/// Threads as workers hammer admit/release on the same few sources in a small table (with
/// churn that forces evictions): the open count of a source never goes over the limit, and
/// everything ends at zero.
#[test]
fn concurrent_workers_never_exceed_the_limit() {
    const WORKERS: usize = 4;
    const MAX: u32 = 3;
    let (t, now) = table_for(MAX, 0, 8, WORKERS);
    let open: Arc<Vec<AtomicU32>> = Arc::new((0..4).map(|_| AtomicU32::new(0)).collect());
    let over = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (1..=WORKERS)
        .map(|k| {
            let (t, open, over) = (t.for_worker(k), Arc::clone(&open), Arc::clone(&over));
            std::thread::spawn(move || {
                let mut held: Vec<(usize, Ticket)> = Vec::new();
                let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ k as u64;
                for _ in 0..50_000 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let n = (x % 4) as usize;
                    if x & (1 << 40) == 0 || held.len() > 6 {
                        if let Some(pos) = held.iter().position(|(m, _)| *m == n) {
                            let (_, tk) = held.swap_remove(pos);
                            open[n].fetch_sub(1, SeqCst);
                            t.release(tk, now);
                        }
                    } else if let Verdict::Admitted(Some(tk)) = t.admit(v4(n as u32), now) {
                        if open[n].fetch_add(1, SeqCst) >= MAX {
                            over.store(true, SeqCst);
                        }
                        held.push((n, tk));
                    }
                    // Churn: a source that opens nothing, evicting idle ones.
                    let _ = t.admit(v4(1000 + (x % 64) as u32), now).eq(&Verdict::Full);
                    if let Verdict::Admitted(Some(tk)) = t.admit(v4(1000 + (x % 64) as u32), now) {
                        t.release(tk, now);
                    }
                }
                for (n, tk) in held {
                    open[n].fetch_sub(1, SeqCst);
                    t.release(tk, now);
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    assert!(
        !over.load(SeqCst),
        "more than {MAX} open at once from one source"
    );
    for n in 0..4 {
        assert_eq!(t.open(v4(n)), 0, "source {n}");
    }
    println!("undecided admissions: {}", t.undecided());
}

/// The tightest race: four workers, one source, `--max-per-source 1`, admit and release in
/// a loop. Without the gate, two workers reading the sum at once would both admit.
#[test]
fn one_source_one_connection_whatever_the_race() {
    let (t, now) = table_for(1, 0, 64, 4);
    let open = Arc::new(AtomicU32::new(0));
    let over = Arc::new(AtomicU32::new(0));
    let threads: Vec<_> = (1..=4)
        .map(|k| {
            let (t, open, over) = (t.for_worker(k), Arc::clone(&open), Arc::clone(&over));
            std::thread::spawn(move || {
                for _ in 0..200_000 {
                    if let Verdict::Admitted(Some(tk)) = t.admit(v4(1), now) {
                        if open.fetch_add(1, SeqCst) >= 1 {
                            over.fetch_add(1, SeqCst);
                        }
                        std::hint::spin_loop();
                        open.fetch_sub(1, SeqCst);
                        t.release(tk, now);
                    }
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    assert_eq!(over.load(SeqCst), 0, "two connections open at once");
    assert_eq!(t.open(v4(1)), 0);
}

/// The table in its MAP_SHARED mapping: a forked child's connections count for the parent
/// too, and the child's death (it exits holding them) gives back only its own.
#[test]
fn limits_hold_across_processes_and_a_death_gives_back_its_own() {
    let (t, now) = table_for(3, 0, MIN_SOURCES, 2);
    let mine = ticket(t.admit(v4(2), now));
    // SAFETY: the child only admits (atomics on the shared mapping) and _exits; it never
    // returns into the test harness.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork failed");
    if child == 0 {
        let t = t.for_worker(2);
        let ok = admitted(t.admit(v4(2), now)) && admitted(t.admit(v4(2), now));
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
    assert_eq!(
        t.admit(v4(2), now),
        Verdict::OverMax,
        "two of them are the child's"
    );
    t.forget_worker(2);
    assert_eq!(t.open(v4(2)), 1, "mine stays");
    let again = ticket(t.admit(v4(2), now));
    t.release(mine, now);
    t.release(again, now);
    assert_eq!(t.open(v4(2)), 0);
}

/// With 10,000 sources in the table: one admit plus one release, in ns. Run with
/// `cargo test --release --lib table::tests::admit_cost -- --ignored --nocapture`.
#[test]
#[ignore = "a benchmark: prints ns per admit + release"]
fn admit_cost() {
    for (workers, rate) in [(1, 0), (4, 0), (4, 1_000_000)] {
        let (t, now) = table_for(1000, rate, MIN_SOURCES, workers);
        for n in 0..10_000u32 {
            t.admit(SourceKey::V4(0x0a00_0000 + n * 7919), now);
        }
        let rounds = 2_000_000u32;
        let start = Instant::now();
        for i in 0..rounds {
            let source = SourceKey::V4(0x0a00_0000 + (i % 20_000) * 7919); // half present
            if let Verdict::Admitted(Some(k)) = t.admit(source, now) {
                t.release(k, now);
            }
        }
        let ns = start.elapsed().as_nanos() as f64 / f64::from(rounds);
        println!(
            "{workers} workers, rate {rate}, {} sources: {ns:.1} ns per admit + release",
            t.len()
        );
    }
}

/// Address space and resident memory of a table filled to its size (run alone:
/// `cargo test --release --lib table::tests::memory_at_cap -- --ignored --nocapture`).
#[test]
#[ignore = "a measurement: prints the table's memory"]
fn memory_at_cap() {
    let rss = crate::policy::access::rss_kib;
    for workers in [1, 4] {
        let before = rss();
        let (t, now) = table_for(4, 10, MIN_SOURCES, workers);
        let made = rss();
        let mut held = Vec::new();
        for n in 0..MIN_SOURCES as u32 {
            if let Verdict::Admitted(Some(k)) = t.admit(SourceKey::V4(0x0a00_0000 + n), now) {
                held.push(k);
            }
        }
        let full = rss();
        let len = SourceTable::map_len(MIN_SOURCES, workers);
        println!(
            "{workers} workers: mapped {len} bytes ({:.1} per source); RSS +{} KiB when made, +{} KiB with {} sources ({:.1} bytes per source)",
            len as f64 / MIN_SOURCES as f64,
            made - before,
            full - before,
            t.len(),
            (full - before) as f64 * 1024.0 / t.len() as f64
        );
    }
}

#[test]
fn a_table_adopted_from_its_memfd_keeps_every_source() {
    use crate::reload::state::{Reader, Writer};
    use std::os::fd::{AsRawFd, IntoRawFd};
    let (t, now) = table(2, 0, 1024);
    ticket(t.admit(v4(1), now));
    ticket(t.admit(v4(1), now));
    assert_eq!(t.admit(v4(1), now), Verdict::OverMax);
    let mut w = Writer::new();
    t.save(&mut w);
    assert_eq!(w.fds(), &[t.map.fd.as_raw_fd()]);
    // What save wrote, but naming a duplicate, so that the two handles own one each.
    let dup = t.map.fd.try_clone().unwrap().into_raw_fd();
    let mut w = Writer::new();
    w.section(*b"SRCS", |w| {
        w.fd(dup);
        w.usize(t.map.len);
        w.instant(t.epoch);
        w.u64(t.seed[0]);
        w.u64(t.seed[1]);
    });
    let (bytes, _) = w.finish();
    let mut r = Reader::new(&bytes).unwrap();
    let mut s = r.section(*b"SRCS").unwrap();
    let again = SourceTable::adopt(t.limits(), 1024, 1, &mut s).unwrap();
    s.done().unwrap();
    assert_eq!(again.open(v4(1)), 2);
    assert_eq!(
        again.admit(v4(1), now),
        Verdict::OverMax,
        "counts carried over"
    );
    assert!(admitted(again.admit(v4(2), now)));
    assert_eq!(t.open(v4(2)), 1, "one set of pages, two mappings");
    let mut s = Reader::new(&bytes).unwrap().section(*b"SRCS").unwrap();
    assert!(
        SourceTable::adopt(t.limits(), 4096, 1, &mut s).is_err(),
        "another size is refused"
    );
}
