//! Who is served (SPEC §10): `--allow`/`--deny` lists, the per-source limits, keepalive.
//!
//! Checked at accept, before anything is spent on the peer: first the lists ([`rules`], a
//! prefix table), then the per-source limits ([`table`], a fixed block that `--workers`
//! can place in shared memory). Unix-socket peers have no source and are never checked.
//!
//! ```text
//!  accept4 → peer IP ─► Access::allows ── no ───────────────► close, denied += 1
//!                           │ yes            (then --max-clients, as before)
//!                           ▼
//!                     Access::admit ───── over max/rate ───► close, limited += 1
//!                           │ Admitted (the connection keeps its SourceKey)
//!                           ▼
//!                        served … close → Access::release
//! ```

pub mod cidr;
pub mod keepalive;
mod lock;
pub mod rules;
pub mod table;

use std::net::IpAddr;
use std::time::Instant;

use crate::shared::Reason;

pub use cidr::{Cidr, SourceKey};
pub use rules::{Action, Rules};
pub use table::{Limits, SourceTable, Verdict, MAX_SOURCES};

/// The access policy from the command line.
#[derive(Clone, PartialEq, Eq, Default, Debug)]
pub struct Policy {
    /// `--allow` prefixes.
    pub allow: Vec<Cidr>,
    /// `--deny` prefixes.
    pub deny: Vec<Cidr>,
    /// `--max-per-source`, `--rate-per-source`.
    pub limits: Limits,
}

impl Policy {
    /// Does anything here apply? (Then the stats line carries `denied=` and `limited=`.)
    pub fn is_active(&self) -> bool {
        !self.allow.is_empty() || !self.deny.is_empty() || self.limits.any()
    }
}

/// The compiled policy: what the accept path (and the UDP receive path) asks.
pub struct Access {
    rules: Option<Rules>,
    table: Option<SourceTable>,
}

impl Access {
    /// Compile `policy`, with the per-source table (if a limit is set) in memory of its own.
    /// `epoch` is the table's time origin: take it before any fork.
    pub fn new(policy: &Policy, epoch: Instant) -> Access {
        let table = policy
            .limits
            .any()
            .then(|| SourceTable::new(policy.limits, epoch));
        Access::with_table(policy, table)
    }

    /// Compile `policy` around a table the caller placed (e.g. in memory shared by workers).
    pub fn with_table(policy: &Policy, table: Option<SourceTable>) -> Access {
        Access {
            rules: Rules::new(&policy.allow, &policy.deny),
            table,
        }
    }

    /// With `--workers`: the policy for one worker, sharing this one's per-source table
    /// (which must live in memory the workers share, see [`SourceTable::in_region`]; `None`
    /// when it does not). Call it in the worker after the fork.
    pub fn share(&self) -> Option<Access> {
        let table = match &self.table {
            Some(t) => Some(t.share()?),
            None => None,
        };
        Some(Access {
            rules: self.rules.clone(),
            table,
        })
    }

    /// Do the lists let `peer` in? (Checked first: a denied peer never reaches the table.)
    pub fn allows(&self, peer: IpAddr) -> bool {
        self.rules
            .as_ref()
            .is_none_or(|rules| rules.decide(peer) == Action::Allow)
    }

    /// The per-source limits for a new TCP connection from `peer`: `Ok(Some(source))` when
    /// it counts toward `--max-per-source` (hand the source to [`Access::release`] when it
    /// closes), `Err(reason)` when it is to be closed at once.
    pub fn admit(&self, peer: IpAddr, now: Instant) -> Result<Option<SourceKey>, Reason> {
        let Some(table) = &self.table else {
            return Ok(None);
        };
        let source = SourceKey::of(peer);
        verdict(table.admit(source, now))?;
        Ok(table.counts_open().then_some(source))
    }

    /// Lists and limits for a datagram from `peer` (SPEC §10: dropped when refused).
    pub fn datagram(&self, peer: IpAddr, now: Instant) -> Result<(), Reason> {
        if !self.allows(peer) {
            return Err(Reason::Denied);
        }
        match &self.table {
            Some(table) => verdict(table.admit_datagram(SourceKey::of(peer), now)),
            None => Ok(()),
        }
    }

    /// A connection admitted with `Ok(Some(source))` has closed.
    pub fn release(&self, source: SourceKey, now: Instant) {
        if let Some(table) = &self.table {
            table.release(source, now);
        }
    }

    /// The per-source table, if a limit is set.
    pub fn table(&self) -> Option<&SourceTable> {
        self.table.as_ref()
    }
}

fn verdict(v: Verdict) -> Result<(), Reason> {
    match v {
        Verdict::Admitted => Ok(()),
        Verdict::OverMax => Err(Reason::MaxPerSource),
        Verdict::OverRate => Err(Reason::RatePerSource),
        Verdict::Full => Err(Reason::SourcesFull),
    }
}

/// This process's resident memory in KiB (VmRSS), for the ignored measurement tests of the
/// rules and the source table.
#[cfg(test)]
pub(crate) fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap();
    kib.trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str], deny: &[&str], max: u32, rate: u32) -> Policy {
        let p = |v: &[&str]| v.iter().map(|s| Cidr::parse(s).unwrap()).collect();
        Policy {
            allow: p(allow),
            deny: p(deny),
            limits: Limits {
                max_per_source: max,
                rate_per_source: rate,
            },
        }
    }

    #[test]
    fn lists_then_limits() {
        let now = Instant::now();
        let a = Access::new(&policy(&["127.0.0.0/8"], &["127.0.0.9"], 1, 0), now);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(!a.allows(ip("10.0.0.1")));
        assert!(!a.allows(ip("127.0.0.9")));
        assert!(a.allows(ip("127.0.0.2")));
        assert!(a.allows(ip("::ffff:127.0.0.2")));
        let key = a.admit(ip("127.0.0.2"), now).unwrap();
        assert_eq!(key, Some(SourceKey::V4(0x7f00_0002)));
        assert_eq!(a.admit(ip("127.0.0.2"), now), Err(Reason::MaxPerSource));
        assert_eq!(
            a.admit(ip("::ffff:127.0.0.2"), now),
            Err(Reason::MaxPerSource)
        );
        a.release(key.unwrap(), now);
        assert!(a.admit(ip("127.0.0.2"), now).is_ok());
        assert_eq!(a.datagram(ip("10.0.0.1"), now), Err(Reason::Denied));
    }

    #[test]
    fn nothing_set_nothing_checked() {
        let p = policy(&[], &[], 0, 0);
        assert!(!p.is_active());
        let a = Access::new(&p, Instant::now());
        assert!(a.table().is_none());
        let peer = "192.0.2.1".parse().unwrap();
        assert!(a.allows(peer));
        assert_eq!(a.admit(peer, Instant::now()), Ok(None));
        assert!(policy(&[], &["::1"], 0, 0).is_active());
        assert!(policy(&[], &[], 0, 5).is_active());
    }

    #[test]
    fn a_shared_policy_needs_a_shared_table() {
        let p = policy(&["10.0.0.0/8"], &[], 0, 0);
        let a = Access::new(&p, Instant::now());
        let copy = a
            .share()
            .expect("no table: lists alone can always be copied");
        assert!(!copy.allows("11.0.0.1".parse().unwrap()));
        let limited = Access::new(&policy(&[], &[], 1, 0), Instant::now());
        assert!(
            limited.share().is_none(),
            "a table in private memory cannot be shared"
        );
    }

    #[test]
    fn rate_only_connections_hold_no_count() {
        let now = Instant::now();
        let a = Access::new(&policy(&[], &[], 0, 2), now);
        let peer = "192.0.2.1".parse().unwrap();
        assert_eq!(a.admit(peer, now), Ok(None));
        assert_eq!(a.datagram(peer, now), Ok(()));
        assert_eq!(a.datagram(peer, now), Err(Reason::RatePerSource));
        assert_eq!(a.admit(peer, now), Err(Reason::RatePerSource));
    }
}
