//! Who is served (SPEC §10): `--allow`/`--deny` lists and the per-source limits.
//!
//! Checked at accept, before anything is spent on the peer: first the lists ([`rules`], sorted
//! ranges compiled from the command line and the [`file`]s), then the per-source limits
//! ([`table`], a lock-free block of shared memory that `--workers` share). Unix-socket peers
//! have no source and are never checked.
//!
//! ```text
//!  accept4 → peer IP ─► Access::allows ── no ───────────────► close, denied += 1
//!                           │ yes            (then --max-clients, as before)
//!                           ▼
//!                     Access::admit ───── over max/rate ───► close, limited += 1
//!                           │ Admitted (the connection keeps its Ticket)
//!                           ▼
//!                        served … close → Access::release
//! ```

pub mod cidr;
pub mod file;
pub mod rules;
pub mod table;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::shared::Reason;

pub use cidr::{Cidr, SourceKey};
pub use rules::{Action, Lists, Rules};
pub use table::{Limits, SourceTable, Ticket, Verdict, MAX_SOURCES, MIN_SOURCES};

/// The access policy from the command line.
#[derive(Clone, PartialEq, Eq, Default, Debug)]
pub struct Policy {
    /// `--allow`, `--deny`, `--allow-file` and `--deny-file`, compiled once (workers share
    /// it); `None` when no list is given (everyone is served).
    pub lists: Option<Arc<Rules>>,
    /// `--max-per-source`, `--rate-per-source`.
    pub limits: Limits,
    /// `--source-table`: sources the per-source table has room for (0: [`MIN_SOURCES`]).
    pub source_table: usize,
}

impl Policy {
    /// The size of the per-source table: `--source-table`, or [`MIN_SOURCES`] when unset.
    pub fn table_size(&self) -> usize {
        if self.source_table == 0 {
            MIN_SOURCES
        } else {
            self.source_table
        }
    }
}

impl Policy {
    /// Does anything here apply? (Then the stats line carries `denied=` and `limited=`.)
    pub fn is_active(&self) -> bool {
        self.lists.is_some() || self.limits.any()
    }
}

/// The compiled policy: what the accept path (and the UDP receive path) asks.
pub struct Access {
    rules: Option<Arc<Rules>>,
    table: Option<SourceTable>,
}

impl Access {
    /// Compile `policy` for the one-process daemon, with the per-source table (if a limit is
    /// set) of its own. `epoch` is the table's time origin.
    pub fn new(policy: &Policy, epoch: Instant) -> std::io::Result<Access> {
        let table = match policy.limits.any() {
            true => Some(SourceTable::new(
                policy.limits,
                epoch,
                policy.table_size(),
                1,
            )?),
            false => None,
        };
        Ok(Access::with_table(policy, table))
    }

    /// Compile `policy` around a table the caller placed (e.g. in memory shared by workers).
    pub fn with_table(policy: &Policy, table: Option<SourceTable>) -> Access {
        Access {
            rules: policy.lists.clone(),
            table,
        }
    }

    /// Do the lists let `peer` in? (Checked first: a denied peer never reaches the table.)
    pub fn allows(&self, peer: IpAddr) -> bool {
        self.rules
            .as_ref()
            .is_none_or(|rules| rules.decide(peer) == Action::Allow)
    }

    /// The per-source limits for a new TCP connection from `peer`: `Ok(Some(ticket))` when
    /// it counts toward `--max-per-source` (hand the ticket to [`Access::release`] when it
    /// closes), `Err(reason)` when it is to be closed at once.
    pub fn admit(&self, peer: IpAddr, now: Instant) -> Result<Option<Ticket>, Reason> {
        match &self.table {
            Some(table) => verdict(table.admit(SourceKey::of(peer), now)),
            None => Ok(None),
        }
    }

    /// Lists and limits for a datagram from `peer` (SPEC §10: dropped when refused).
    pub fn datagram(&self, peer: IpAddr, now: Instant) -> Result<(), Reason> {
        if !self.allows(peer) {
            return Err(Reason::Denied);
        }
        match &self.table {
            Some(table) => verdict(table.admit_datagram(SourceKey::of(peer), now)).map(drop),
            None => Ok(()),
        }
    }

    /// A connection admitted with `Ok(Some(ticket))` has closed.
    pub fn release(&self, ticket: Ticket, now: Instant) {
        if let Some(table) = &self.table {
            table.release(ticket, now);
        }
    }

    /// The per-source table, if a limit is set.
    pub fn table(&self) -> Option<&SourceTable> {
        self.table.as_ref()
    }
}

fn verdict(v: Verdict) -> Result<Option<Ticket>, Reason> {
    match v {
        Verdict::Admitted(ticket) => Ok(ticket),
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
        let p = |v: &[&str]| {
            v.iter()
                .map(|s| Cidr::parse(s).unwrap())
                .collect::<Vec<_>>()
        };
        Policy {
            lists: Rules::new(&p(allow), &p(deny)).map(Arc::new),
            limits: Limits {
                max_per_source: max,
                rate_per_source: rate,
            },
            source_table: 0,
        }
    }

    #[test]
    fn lists_then_limits() {
        let now = Instant::now();
        let a = Access::new(&policy(&["127.0.0.0/8"], &["127.0.0.9"], 1, 0), now).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(!a.allows(ip("10.0.0.1")));
        assert!(!a.allows(ip("127.0.0.9")));
        assert!(a.allows(ip("127.0.0.2")));
        assert!(a.allows(ip("::ffff:127.0.0.2")));
        let key = a.admit(ip("127.0.0.2"), now).unwrap();
        assert!(key.is_some(), "counted under --max-per-source");
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
        let a = Access::new(&p, Instant::now()).unwrap();
        assert!(a.table().is_none());
        let peer = "192.0.2.1".parse().unwrap();
        assert!(a.allows(peer));
        assert_eq!(a.admit(peer, Instant::now()), Ok(None));
        assert!(policy(&[], &["::1"], 0, 0).is_active());
        assert!(policy(&[], &[], 0, 5).is_active());
    }

    #[test]
    fn rate_only_connections_hold_no_count() {
        let now = Instant::now();
        let a = Access::new(&policy(&[], &[], 0, 2), now).unwrap();
        let peer = "192.0.2.1".parse().unwrap();
        assert_eq!(a.admit(peer, now), Ok(None));
        // Two buckets (SPEC §10): datagrams do not spend the TCP tokens, nor the reverse.
        assert_eq!(a.datagram(peer, now), Ok(()));
        assert_eq!(a.datagram(peer, now), Ok(()));
        assert_eq!(a.datagram(peer, now), Err(Reason::RatePerSource));
        assert_eq!(a.admit(peer, now), Ok(None));
        assert_eq!(a.admit(peer, now), Err(Reason::RatePerSource));
    }
}
