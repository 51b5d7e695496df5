//! The `--allow`/`--deny` table: the longest matching prefix decides, a tie goes to deny; with
//! any `--allow`, a source that matches nothing is denied, otherwise it is allowed (SPEC §10).
//!
//! One hash set per prefix length in use, longest first: a lookup costs at most one probe per
//! distinct length (33 for IPv4, 129 for IPv6, in practice a handful), however many rules
//! there are. A trie would cost a pointer chase per bit instead; lists are written by
//! operators and tend to use few lengths (/32, /24, /16, /8), which is this layout's best case.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;

use super::cidr::{mask, Cidr};
use crate::net::addr::fold;

/// What a rule (or the default) says about a source.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Action {
    /// Serve it.
    Allow,
    /// Close its connections at once, drop its datagrams.
    Deny,
}

/// Keys are prefixes from the command line (trusted), so a plain multiplicative hash is
/// enough: a peer can only look up, never insert, and so cannot build collision chains.
#[derive(Default)]
struct PrefixHasher(u64);

impl Hasher for PrefixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn write_u128(&mut self, v: u128) {
        self.write_u64(v as u64);
        self.write_u64((v >> 64) as u64);
    }
}

type Set = HashMap<u128, Action, BuildHasherDefault<PrefixHasher>>;

/// One address family's prefixes, grouped by length, longest first.
#[derive(Default, Clone, Debug)]
struct Family {
    by_len: Vec<(u8, u128, Set)>, // (length, its mask, the prefixes of that length)
}

impl Family {
    fn add(&mut self, addr: u128, len: u8, bits: u8, action: Action) {
        let at = match self.by_len.binary_search_by(|(l, ..)| len.cmp(l)) {
            Ok(i) => i,
            Err(i) => {
                self.by_len
                    .insert(i, (len, mask(len, bits), Set::default()));
                i
            }
        };
        let slot = self.by_len[at].2.entry(addr).or_insert(action);
        if action == Action::Deny {
            *slot = Action::Deny; // the same prefix allowed and denied: a tie goes to deny
        }
    }

    fn lookup(&self, addr: u128) -> Option<Action> {
        self.by_len
            .iter()
            .find_map(|(_, m, set)| set.get(&(addr & m)).copied())
    }
}

/// The compiled access lists.
#[derive(Default, Clone, Debug)]
pub struct Rules {
    v4: Family,
    v6: Family,
    fallback: Option<Action>,
}

impl Rules {
    /// Compile `--allow` and `--deny` lists; `None` when both are empty (everyone served).
    pub fn new(allow: &[Cidr], deny: &[Cidr]) -> Option<Rules> {
        if allow.is_empty() && deny.is_empty() {
            return None;
        }
        let mut rules = Rules::default();
        let tagged = allow.iter().map(|c| (c, Action::Allow));
        for (cidr, action) in tagged.chain(deny.iter().map(|c| (c, Action::Deny))) {
            match *cidr {
                Cidr::V4 { addr, len } => rules.v4.add(u128::from(addr), len, 32, action),
                Cidr::V6 { addr, len } => rules.v6.add(addr, len, 128, action),
            }
        }
        rules.fallback = Some(if allow.is_empty() {
            Action::Allow
        } else {
            Action::Deny
        });
        Some(rules)
    }

    /// The decision for a peer (IPv4-mapped IPv6 is looked up as IPv4).
    pub fn decide(&self, ip: IpAddr) -> Action {
        let hit = match fold(ip) {
            IpAddr::V4(a) => self.v4.lookup(u128::from(u32::from(a))),
            IpAddr::V6(a) => self.v6.lookup(u128::from(a)),
        };
        hit.or(self.fallback).unwrap_or(Action::Allow)
    }

    /// Distinct prefix lengths in use (IPv4, IPv6): the most probes one lookup costs.
    pub fn lengths(&self) -> (usize, usize) {
        (self.v4.by_len.len(), self.v6.by_len.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    /// 10,000 entries over four lengths, looked up from random addresses. Run with
    /// `cargo test --release --lib rules::tests::lookup_cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "a benchmark: prints ns per lookup"]
    fn lookup_cost() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut allow = Vec::new();
        for i in 0..10_000 {
            let len = [32u8, 24, 16, 28][i % 4];
            let addr = (next() as u32) & mask(len, 32) as u32;
            allow.push(Cidr::V4 { addr, len });
        }
        let rss = crate::policy::access::rss_kib;
        let before = rss();
        let r = Rules::new(&allow, &[Cidr::parse("10.0.0.0/8").unwrap()]).unwrap();
        println!("10,000 rules: RSS +{} KiB", rss() - before);
        let probes: Vec<IpAddr> = (0..1_000_000)
            .map(|_| IpAddr::from((next() as u32).to_be_bytes()))
            .collect();
        let t = Instant::now();
        let allowed = probes
            .iter()
            .filter(|ip| r.decide(**ip) == Action::Allow)
            .count();
        let ns = t.elapsed().as_nanos() as f64 / probes.len() as f64;
        println!(
            "10,000 rules, {:?} lengths: {ns:.1} ns per lookup ({allowed} of {} allowed)",
            r.lengths(),
            probes.len()
        );
        // For contrast, what a linear scan for the longest match would cost.
        let t = Instant::now();
        let mut scanned = 0;
        for ip in &probes[..10_000] {
            let IpAddr::V4(a) = ip else { continue };
            let a = u32::from(*a);
            let best = allow
                .iter()
                .filter_map(|c| match *c {
                    Cidr::V4 { addr, len } if a & mask(len, 32) as u32 == addr => Some(len),
                    _ => None,
                })
                .max();
            scanned += usize::from(best.is_some());
        }
        let ns = t.elapsed().as_nanos() as f64 / 10_000.0;
        println!("a linear scan of the same list: {ns:.0} ns per lookup ({scanned} matched)");
    }
}
