//! Who is served (SPEC §10): `--allow`/`--deny` lists, the per-source limits, keepalive.
//!
//! Checked at accept, before anything is spent on the peer: first the lists ([`rules`], a
//! prefix table), then the per-source limits ([`table`], a fixed block that `--workers`
//! can place in shared memory). Unix-socket peers have no source and are never checked.
//!
//! ```text
//!  accept4 → peer IP ─► Rules::decide ── Deny ──────────────► close, denied += 1
//!                           │ Allow
//!                           ▼
//!                     SourceTable::admit ── over max/rate ──► close, limited += 1
//!                           │ Admitted (the connection keeps its SourceKey)
//!                           ▼
//!                        served … close → SourceTable::release
//! ```

pub mod cidr;
pub mod keepalive;
mod lock;
pub mod rules;
pub mod table;

use std::net::IpAddr;
use std::time::Instant;

pub use cidr::{Cidr, SourceKey};
pub use rules::{Action, Rules};
pub use table::{Limits, SourceTable, Verdict, MAX_SOURCES};

/// Why a connection (or datagram) was refused; [`Refusal::reason`] names it in log lines.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Refusal {
    /// `--allow`/`--deny` said no (counted as `denied`).
    Denied,
    /// `--max-per-source` connections are open already (`limited`).
    MaxPerSource,
    /// `--rate-per-source` used up (`limited`).
    RatePerSource,
    /// The per-source table is at its cap: a new source counts as over its rate (`limited`).
    SourcesFull,
}

impl Refusal {
    /// The reason as log lines show it: `refused 3 connections in the last 1s (denied)`.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Denied => "denied",
            Refusal::MaxPerSource => "max-per-source",
            Refusal::RatePerSource => "rate-per-source",
            Refusal::SourcesFull => "rate-per-source: per-source table full",
        }
    }

    /// Counted as `denied` (else as `limited`)?
    pub fn is_denied(self) -> bool {
        self == Refusal::Denied
    }
}

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

    /// Nothing to check: every peer is served without a lookup.
    pub fn is_open(&self) -> bool {
        self.rules.is_none() && self.table.is_none()
    }

    /// A TCP connection from `peer`: `Ok(Some(source))` when it counts toward
    /// `--max-per-source` (hand the source to [`Access::release`] when it closes).
    pub fn connection(&self, peer: IpAddr, now: Instant) -> Result<Option<SourceKey>, Refusal> {
        self.check_rules(peer)?;
        let Some(table) = &self.table else {
            return Ok(None);
        };
        let source = SourceKey::of(peer);
        verdict(table.admit(source, now))?;
        Ok(table.counts_open().then_some(source))
    }

    /// A datagram from `peer`.
    pub fn datagram(&self, peer: IpAddr, now: Instant) -> Result<(), Refusal> {
        self.check_rules(peer)?;
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

    fn check_rules(&self, peer: IpAddr) -> Result<(), Refusal> {
        match &self.rules {
            Some(rules) if rules.decide(peer) == Action::Deny => Err(Refusal::Denied),
            _ => Ok(()),
        }
    }
}

fn verdict(v: Verdict) -> Result<(), Refusal> {
    match v {
        Verdict::Admitted => Ok(()),
        Verdict::OverMax => Err(Refusal::MaxPerSource),
        Verdict::OverRate => Err(Refusal::RatePerSource),
        Verdict::Full => Err(Refusal::SourcesFull),
    }
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
    fn lists_first_then_limits() {
        let now = Instant::now();
        let a = Access::new(&policy(&["127.0.0.0/8"], &["127.0.0.9"], 1, 0), now);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(a.connection(ip("10.0.0.1"), now), Err(Refusal::Denied));
        assert_eq!(a.connection(ip("127.0.0.9"), now), Err(Refusal::Denied));
        let key = a.connection(ip("127.0.0.2"), now).unwrap();
        assert_eq!(key, Some(SourceKey::V4(0x7f00_0002)));
        assert_eq!(
            a.connection(ip("127.0.0.2"), now),
            Err(Refusal::MaxPerSource)
        );
        assert_eq!(
            a.connection(ip("::ffff:127.0.0.2"), now),
            Err(Refusal::MaxPerSource)
        );
        a.release(key.unwrap(), now);
        assert!(a.connection(ip("127.0.0.2"), now).is_ok());
        assert_eq!(
            a.table().unwrap().len(),
            1,
            "a denied peer never reaches the table"
        );
    }

    #[test]
    fn nothing_set_nothing_checked() {
        let p = policy(&[], &[], 0, 0);
        assert!(!p.is_active());
        let a = Access::new(&p, Instant::now());
        assert!(a.is_open());
        let peer = "192.0.2.1".parse().unwrap();
        assert_eq!(a.connection(peer, Instant::now()), Ok(None));
        assert!(policy(&[], &["::1"], 0, 0).is_active());
        assert!(policy(&[], &[], 0, 5).is_active());
    }

    #[test]
    fn rate_only_connections_hold_no_count() {
        let now = Instant::now();
        let a = Access::new(&policy(&[], &[], 0, 2), now);
        let peer = "192.0.2.1".parse().unwrap();
        assert_eq!(a.connection(peer, now), Ok(None));
        assert_eq!(a.datagram(peer, now), Ok(()));
        assert_eq!(a.datagram(peer, now), Err(Refusal::RatePerSource));
        assert_eq!(a.connection(peer, now), Err(Refusal::RatePerSource));
    }
}
