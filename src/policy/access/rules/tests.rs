use super::*;
use crate::policy::access::cidr::mask;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Instant;

fn rules(allow: &[&str], deny: &[&str]) -> Rules {
    let p = |v: &[&str]| {
        v.iter()
            .map(|s| Cidr::parse(s).unwrap())
            .collect::<Vec<_>>()
    };
    Rules::new(&p(allow), &p(deny)).expect("some rules")
}

fn decide(r: &Rules, ip: &str) -> Action {
    r.decide(ip.parse().unwrap())
}

#[test]
fn no_rules_no_table() {
    assert!(Rules::new(&[], &[]).is_none());
    assert!(Lists::default().build().is_none());
}

#[test]
fn longest_prefix_wins_either_way() {
    let r = rules(&["10.0.0.0/8", "10.1.2.0/24"], &["10.1.0.0/16"]);
    assert_eq!(decide(&r, "10.9.9.9"), Action::Allow); // /8
    assert_eq!(decide(&r, "10.1.9.9"), Action::Deny); // /16 beats /8
    assert_eq!(decide(&r, "10.1.2.3"), Action::Allow); // /24 beats /16
    assert_eq!(decide(&r, "11.0.0.1"), Action::Deny); // allow-list: default deny
}

#[test]
fn a_tie_goes_to_deny_in_any_order() {
    let r = rules(&["192.0.2.0/24"], &["192.0.2.0/24"]);
    assert_eq!(decide(&r, "192.0.2.7"), Action::Deny);
    let r = rules(&["192.0.2.7", "192.0.2.7/32"], &["192.0.2.7"]);
    assert_eq!(decide(&r, "192.0.2.7"), Action::Deny);
}

#[test]
fn defaults() {
    let deny_only = rules(&[], &["192.0.2.0/24", "2001:db8::/32"]);
    assert_eq!(decide(&deny_only, "198.51.100.1"), Action::Allow);
    assert_eq!(decide(&deny_only, "2001:db9::1"), Action::Allow);
    assert_eq!(decide(&deny_only, "2001:db8:5::1"), Action::Deny);
    let allow_only = rules(&["127.0.0.0/8"], &[]);
    assert_eq!(decide(&allow_only, "127.0.0.2"), Action::Allow);
    assert_eq!(decide(&allow_only, "::1"), Action::Deny); // other family: no match
    let everyone_but = rules(&["0.0.0.0/0"], &["127.0.0.3"]);
    assert_eq!(decide(&everyone_but, "127.0.0.2"), Action::Allow);
    assert_eq!(decide(&everyone_but, "127.0.0.3"), Action::Deny);
}

#[test]
fn a_list_given_empty_still_sets_the_default() {
    let mut only_given = Lists::default();
    only_given.given(Action::Allow);
    let r = only_given.build().expect("an allow list was given");
    assert_eq!(decide(&r, "127.0.0.1"), Action::Deny);
    assert_eq!(decide(&r, "::1"), Action::Deny);
    let mut deny = Lists::default();
    deny.given(Action::Deny);
    let r = deny.build().expect("a deny list was given");
    assert_eq!(decide(&r, "127.0.0.1"), Action::Allow);
}

#[test]
fn mapped_peers_match_ipv4_rules() {
    let r = rules(&["192.0.2.0/24"], &["::/0"]);
    assert_eq!(decide(&r, "::ffff:192.0.2.9"), Action::Allow);
    assert_eq!(decide(&r, "2001:db8::1"), Action::Deny);
    let r = rules(&["::ffff:10.0.0.0/104"], &[]);
    assert_eq!(decide(&r, "10.2.3.4"), Action::Allow);
}

#[test]
fn ipv6_prefixes() {
    let r = rules(
        &["2001:db8::/32", "[2001:db8:dead::]/48"],
        &["2001:db8::/33"],
    );
    assert_eq!(decide(&r, "2001:db8::1"), Action::Deny); // /33 beats /32
    assert_eq!(decide(&r, "2001:db8:8000::1"), Action::Allow); // outside the /33
    assert_eq!(decide(&r, "2001:db8:dead::1"), Action::Allow);
    assert_eq!(decide(&r, "2001:db9::1"), Action::Deny);
}

#[test]
fn the_ends_of_the_address_space() {
    let r = rules(&["255.255.255.255", "0.0.0.0"], &["::/0"]);
    assert_eq!(decide(&r, "255.255.255.255"), Action::Allow);
    assert_eq!(decide(&r, "255.255.255.254"), Action::Deny);
    assert_eq!(decide(&r, "0.0.0.0"), Action::Allow);
    assert_eq!(decide(&r, "0.0.0.1"), Action::Deny);
    let r = rules(
        &["ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::/0"],
        &["::/1"],
    );
    assert_eq!(
        decide(&r, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        Action::Allow
    );
    assert_eq!(decide(&r, "8000::"), Action::Allow);
    assert_eq!(decide(&r, "7fff::"), Action::Deny);
    assert_eq!(decide(&r, "::2"), Action::Deny);
}

#[test]
fn adjacent_and_nested_prefixes_merge() {
    // 256 adjacent /32s are one range: two cuts, as one /24 would be.
    let allow: Vec<Cidr> = (0..256u32)
        .map(|i| Cidr::V4 {
            addr: 0x0a00_0000 + i,
            len: 32,
        })
        .collect();
    let r = Rules::new(&allow, &[]).unwrap();
    assert_eq!(r.cuts(), (2, 0));
    assert_eq!(r, rules(&["10.0.0.0/24"], &[]));
    // An allowed /32 inside an allowed /8 changes nothing.
    assert_eq!(rules(&["10.0.0.0/8", "10.1.2.3"], &[]).cuts(), (2, 0));
    // A denied /32 inside it splits it: four cuts.
    assert_eq!(rules(&["10.0.0.0/8"], &["10.1.2.3"]).cuts(), (4, 0));
    // Each /32 costs at most two cuts, however the prefixes lie.
    assert_eq!(rules(&["10.0.0.1", "10.0.0.3"], &[]).cuts(), (4, 0));
}

/// The longest match by a scan of every prefix: the definition the compiled table must agree
/// with.
struct Naive {
    allow: Vec<Cidr>,
    deny: Vec<Cidr>,
}

impl Naive {
    fn decide(&self, ip: IpAddr) -> Action {
        let (a, bits, v4) = match fold(ip) {
            IpAddr::V4(a) => (u128::from(u32::from(a)), 32, true),
            IpAddr::V6(a) => (u128::from(a), 128, false),
        };
        let mut best: Option<(u8, bool)> = None; // (length, deny)
        let lists = [(&self.allow, false), (&self.deny, true)];
        for (list, deny) in lists {
            for c in list {
                let (addr, len) = match (*c, v4) {
                    (Cidr::V4 { addr, len }, true) => (u128::from(addr), len),
                    (Cidr::V6 { addr, len }, false) => (addr, len),
                    _ => continue,
                };
                if a & mask(len, bits) == addr && best.is_none_or(|b| (len, deny) > b) {
                    best = Some((len, deny));
                }
            }
        }
        match best {
            Some((_, true)) => Action::Deny,
            Some((_, false)) => Action::Allow,
            None if self.allow.is_empty() => Action::Allow,
            None => Action::Deny,
        }
    }
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn wide(&mut self) -> u128 {
        (u128::from(self.next()) << 64) | u128::from(self.next())
    }
}

/// A random prefix in a small corner of the space (so that prefixes nest, overlap, touch and
/// repeat), now and then a short one over everything.
fn random_cidr(rng: &mut XorShift) -> Cidr {
    let r = rng.next();
    let corner = [0x0a00_0000u32, 0x7f00_0000, 0xffff_ff00, 0][(r % 4) as usize];
    if r & 0x30 == 0 {
        let v4 = corner ^ (rng.next() as u32 & 0xff);
        let len = if rng.next().is_multiple_of(10) {
            (rng.next() % 25) as u8
        } else {
            24 + (rng.next() % 9) as u8
        };
        Cidr::V4 {
            addr: v4 & mask(len, 32) as u32,
            len,
        }
    } else {
        let top = [0x2001_0db8u128 << 96, u128::MAX << 16, 0][(r % 3) as usize];
        let v6 = top ^ (rng.wide() & 0xff);
        let len = if rng.next().is_multiple_of(10) {
            (rng.next() % 121) as u8
        } else {
            120 + (rng.next() % 9) as u8
        };
        let addr = v6 & mask(len, 128);
        if addr >> 32 == 0xffff {
            return Cidr::V6 { addr: 0, len: 0 }; // would parse as IPv4: keep IPv6 apart
        }
        Cidr::V6 { addr, len }
    }
}

/// Addresses near the prefixes: their first and last, one either side, and random ones in
/// the same corners (and IPv4 ones also in their mapped IPv6 form).
fn probes(rng: &mut XorShift, cidrs: &[Cidr]) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for c in cidrs {
        match *c {
            Cidr::V4 { addr, len } => {
                let last = addr.last(len);
                for a in [addr.wrapping_sub(1), addr, last, last.wrapping_add(1)] {
                    out.push(IpAddr::V4(Ipv4Addr::from(a)));
                    out.push(IpAddr::V6(Ipv4Addr::from(a).to_ipv6_mapped()));
                }
            }
            Cidr::V6 { addr, len } => {
                let last = addr.last(len);
                for a in [addr.wrapping_sub(1), addr, last, last.wrapping_add(1)] {
                    out.push(IpAddr::V6(Ipv6Addr::from(a)));
                }
            }
        }
    }
    for _ in 0..200 {
        out.push(IpAddr::V4(Ipv4Addr::from(
            0x0a00_0000 ^ (rng.next() as u32 & 0x1ff),
        )));
        out.push(IpAddr::V6(Ipv6Addr::from(
            (0x2001_0db8u128 << 96) ^ (rng.wide() & 0x1ff),
        )));
    }
    out
}

#[test]
fn agrees_with_a_scan_of_every_prefix_on_random_lists() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for round in 0..400 {
        let n_allow = (rng.next() % 40) as usize;
        let n_deny = (rng.next() % 40) as usize;
        let allow: Vec<Cidr> = (0..n_allow).map(|_| random_cidr(&mut rng)).collect();
        let deny: Vec<Cidr> = (0..n_deny).map(|_| random_cidr(&mut rng)).collect();
        let naive = Naive {
            allow: allow.clone(),
            deny: deny.clone(),
        };
        let Some(r) = Rules::new(&allow, &deny) else {
            assert!(allow.is_empty() && deny.is_empty());
            continue;
        };
        let all: Vec<Cidr> = allow.iter().chain(&deny).copied().collect();
        for ip in probes(&mut rng, &all) {
            assert_eq!(
                r.decide(ip),
                naive.decide(ip),
                "round {round}: {ip} with allow {allow:?} deny {deny:?}"
            );
        }
        let (v4, v6) = r.cuts();
        assert!(v4 + v6 <= 2 * all.len(), "at most two cuts per prefix");
    }
}

#[test]
fn the_index_counts_as_a_binary_search_would() {
    let mut rng = XorShift(0x1234_5678_9abc_def1);
    for n in [0usize, 1, 15, 16, 17, 255, 256, 257, 4097, 70_000] {
        let allow = workload(&mut rng, n, false, true);
        let deny = workload(&mut rng, n / 3, false, false);
        let Some(r) = Rules::new(&allow, &deny) else {
            assert_eq!(n, 0);
            continue;
        };
        let cuts = &r.v4.cuts;
        let mut addrs: Vec<u32> = (0..2000).map(|_| rng.next() as u32).collect();
        for &c in cuts.iter().step_by(7) {
            addrs.extend([c.wrapping_sub(1), c, c.wrapping_add(1)]);
        }
        addrs.extend([0, u32::MAX]);
        for a in addrs {
            assert_eq!(
                r.v4.count(a),
                cuts.partition_point(|&c| c <= a),
                "{n}: {a:#x}"
            );
        }
        let levels = r.v4.index.len();
        assert!(
            r.v4.index.last().is_none_or(|top| top.len() <= FAN),
            "{levels}"
        );
    }
}

/// Random prefixes and addresses for the measurements below.
fn workload(rng: &mut XorShift, n: usize, v6: bool, mixed: bool) -> Vec<Cidr> {
    (0..n)
        .map(|_| {
            if v6 {
                let len = if mixed {
                    [48u8, 64, 64, 128, 128][(rng.next() % 5) as usize]
                } else {
                    128
                };
                Cidr::V6 {
                    addr: ((0x2001u128 << 112) | (rng.wide() >> 16)) & mask(len, 128),
                    len,
                }
            } else {
                let len = if mixed {
                    [32u8, 32, 30, 28, 24][(rng.next() % 5) as usize]
                } else {
                    32
                };
                Cidr::V4 {
                    addr: (rng.next() as u32) & mask(len, 32) as u32,
                    len,
                }
            }
        })
        .collect()
}

/// An address inside `c` (a hit).
fn inside(rng: &mut XorShift, c: &Cidr) -> IpAddr {
    match *c {
        Cidr::V4 { addr, len } => {
            let host = (rng.next() as u32) & !(mask(len, 32) as u32);
            IpAddr::V4(Ipv4Addr::from(addr | host))
        }
        Cidr::V6 { addr, len } => {
            let host = rng.wide() & !mask(len, 128);
            IpAddr::V6(Ipv6Addr::from(addr | host))
        }
    }
}

/// Build time, bytes per entry and ns per lookup at 10³, 10⁵ and 10⁶ entries: random /32s
/// (/128s) and mixed prefixes, IPv4 and IPv6, hits and misses. Run it alone, in release:
/// `cargo test --release --lib rules::tests::lookup_cost -- --ignored --nocapture`.
#[test]
#[ignore = "a benchmark: prints build time, bytes per entry and ns per lookup"]
fn lookup_cost() {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    println!("entries    family  prefixes  build ms  bytes/entry  hit ns  miss ns");
    for n in [1_000usize, 100_000, 1_000_000] {
        for (v6, mixed) in [(false, false), (false, true), (true, false), (true, true)] {
            let allow = workload(&mut rng, n, v6, mixed);
            let t = Instant::now();
            let r = Rules::new(&allow, &[]).unwrap();
            let build = t.elapsed();
            let bytes = r.heap_bytes() as f64 / n as f64;
            const PROBES: usize = 1_000_000;
            let hits: Vec<IpAddr> = (0..PROBES)
                .map(|_| {
                    let c = allow[(rng.next() % n as u64) as usize];
                    inside(&mut rng, &c)
                })
                .collect();
            let misses: Vec<IpAddr> = (0..PROBES)
                .map(|_| match v6 {
                    false => IpAddr::V4(Ipv4Addr::from(rng.next() as u32)),
                    true => IpAddr::V6(Ipv6Addr::from((0x2001u128 << 112) | (rng.wide() >> 16))),
                })
                .collect();
            let time = |ips: &[IpAddr]| {
                let t = Instant::now();
                let allowed = ips
                    .iter()
                    .filter(|ip| r.decide(std::hint::black_box(**ip)) == Action::Allow)
                    .count();
                (t.elapsed().as_nanos() as f64 / ips.len() as f64, allowed)
            };
            let (hit_ns, hit_allowed) = time(&hits);
            let (miss_ns, miss_allowed) = time(&misses);
            assert_eq!(hit_allowed, PROBES, "every hit is allowed");
            println!(
                "{n:>9}  {}    {}  {:>8.1}  {bytes:>11.1}  {hit_ns:>6.1}  {miss_ns:>7.1}   ({} of the misses were in a prefix)",
                if v6 { "IPv6" } else { "IPv4" },
                if mixed { "mixed   " } else if v6 { "/128    " } else { "/32     " },
                build.as_secs_f64() * 1e3,
                miss_allowed,
            );
        }
    }
}
