//! The `--allow`/`--deny` table: the longest matching prefix decides, a tie goes to deny; with
//! any allow list, a source that matches nothing is denied, otherwise it is allowed (SPEC §10).
//!
//! The lists are compiled once into what they decide: per address family, the address space
//! cut into ranges that alternate between allow and deny. Only the first address of each
//! range after the first is kept (a sorted `Vec<u32>` for IPv4, `Vec<u128>` for IPv6) plus
//! the decision at address 0, so a lookup is one binary search: the number of cut points at or
//! below the address says, by its parity, which decision applies. Nested, overlapping,
//! adjacent and repeated prefixes cost nothing extra; each prefix adds at most two cut points
//! (8 bytes for IPv4, 32 for IPv6), however the prefixes are mixed.
//!
//! ```text
//!  allow 10.0.0.0/8, deny 10.1.0.0/16, default deny (an allow list is given):
//!  0 ──deny── 10.0.0.0 ──allow── 10.1.0.0 ──deny── 10.2.0.0 ──allow── 11.0.0.0 ──deny──►
//!  first = Deny, cuts = [10.0.0.0, 10.1.0.0, 10.2.0.0, 11.0.0.0]
//! ```

use std::fmt;
use std::net::IpAddr;

use super::cidr::Cidr;
use crate::net::addr::fold;

/// What a rule (or the default) says about a source.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Action {
    /// Serve it.
    Allow,
    /// Close its connections at once, drop its datagrams.
    Deny,
}

impl Action {
    fn other(self) -> Action {
        match self {
            Action::Allow => Action::Deny,
            Action::Deny => Action::Allow,
        }
    }
}

/// An address of one family as an unsigned integer.
trait Word: Copy + Ord + Default {
    /// The last address of the `len`-bit prefix that starts at `self`.
    fn last(self, len: u8) -> Self;
    /// The next address, if there is one.
    fn next(self) -> Option<Self>;
}

impl Word for u32 {
    fn last(self, len: u8) -> u32 {
        self | u32::MAX.checked_shr(u32::from(len)).unwrap_or(0)
    }
    fn next(self) -> Option<u32> {
        self.checked_add(1)
    }
}

impl Word for u128 {
    fn last(self, len: u8) -> u128 {
        self | u128::MAX.checked_shr(u32::from(len)).unwrap_or(0)
    }
    fn next(self) -> Option<u128> {
        self.checked_add(1)
    }
}

/// One prefix as given: its first address, its length and its list.
#[derive(Clone, Copy)]
struct Entry<T> {
    start: T,
    len: u8,
    deny: bool,
}

/// Entries per block of the index: 16 addresses are one cache line for IPv4, four for IPv6.
const FAN: usize = 16;

/// One family's decisions: `first` from address 0, flipping at every address in `cuts`.
///
/// A lookup counts the cuts at or below an address. A binary search over a million cuts
/// would take about 21 dependent steps, most of them cache misses; instead `index` holds
/// every 16th cut, every 16th of those, and so on up to at most 16, and each level is read
/// as one block of 16 whose entries are compared all at once (independent loads, no branch
/// per entry), so a lookup costs one block per level: 6 levels for 2,000,000 cuts.
#[derive(Clone, PartialEq, Eq)]
struct Ranges<T> {
    first: Action,
    cuts: Vec<T>,
    index: Vec<Vec<T>>, // index[0]: every FAN-th cut; index[i + 1]: every FAN-th of index[i]
}

impl<T: Word> Ranges<T> {
    fn decide(&self, addr: T) -> Action {
        match self.count(addr) % 2 {
            0 => self.first,
            _ => self.first.other(),
        }
    }

    /// How many cuts are at or below `addr`.
    fn count(&self, addr: T) -> usize {
        // Top down: `k` is the last entry at or below `addr` in the level above, so in this
        // level it is block `k` that holds the last one (block k's first entry is that entry,
        // the next block's first is above `addr`).
        let mut k = 0;
        for level in self.index.iter().rev().chain(std::iter::once(&self.cuts)) {
            let from = k * FAN;
            let block = &level[from..level.len().min(from + FAN)];
            let below = block.iter().filter(|&&c| c <= addr).count();
            if below == 0 {
                return 0; // only at the top: below the first cut
            }
            k = from + below - 1;
        }
        k + 1
    }

    fn build_index(&mut self) {
        self.index.clear();
        let mut level = &self.cuts;
        while level.len() > FAN {
            let up: Vec<T> = level.iter().step_by(FAN).copied().collect();
            self.index.push(up);
            level = self.index.last().expect("just pushed");
        }
    }

    /// The decision after the last cut.
    fn current(&self) -> Action {
        match self.cuts.len() % 2 {
            0 => self.first,
            _ => self.first.other(),
        }
    }

    /// From `at` on (never before the last mark), the decision is `action`.
    fn mark(&mut self, at: T, action: Action) {
        if self.cuts.last() == Some(&at) {
            // Decided again at the same address (a prefix starts where another ended):
            // undoing the cut there restores the decision before it, the other one.
            if action != self.current() {
                self.cuts.pop();
            }
        } else if at == T::default() {
            self.first = action; // only ever before any cut
        } else if action != self.current() {
            self.cuts.push(at);
        }
    }

    /// Compile `entries` (in any order, repeats allowed) over `fallback`.
    ///
    /// Sorted by first address and then length, prefixes come outermost first, and two
    /// prefixes either nest or do not meet: one sweep with a stack of the prefixes that
    /// enclose the current address (innermost last; at most one per length) marks where each
    /// begins and where the decision of its encloser (or the fallback) resumes after it.
    fn compile(mut entries: Vec<Entry<T>>, fallback: Action) -> Ranges<T> {
        entries.sort_unstable_by_key(|e| (e.start, e.len, e.deny));
        let mut out = Ranges {
            first: fallback,
            cuts: Vec::new(),
            index: Vec::new(),
        };
        let mut open: Vec<(T, Action)> = Vec::new(); // (last address, decision)
        let mut i = 0;
        while i < entries.len() {
            let e = entries[i];
            // The same prefix more than once: sorted allow before deny, so the last says
            // whether any of them denies (a tie goes to deny).
            while i + 1 < entries.len()
                && entries[i + 1].start == e.start
                && entries[i + 1].len == e.len
            {
                i += 1;
            }
            let deny = entries[i].deny;
            i += 1;
            while let Some(&(end, _)) = open.last() {
                if end >= e.start {
                    break; // it encloses this one
                }
                open.pop();
                if let Some(after) = end.next() {
                    out.mark(after, open.last().map_or(fallback, |o| o.1));
                }
            }
            let action = if deny { Action::Deny } else { Action::Allow };
            out.mark(e.start, action);
            open.push((e.start.last(e.len), action));
        }
        while let Some((end, _)) = open.pop() {
            if let Some(after) = end.next() {
                out.mark(after, open.last().map_or(fallback, |o| o.1));
            }
        }
        out.cuts.shrink_to_fit();
        out.build_index();
        out
    }

    fn heap_bytes(&self) -> usize {
        let index: usize = self.index.iter().map(Vec::capacity).sum();
        (self.cuts.capacity() + index) * std::mem::size_of::<T>()
            + self.index.capacity() * std::mem::size_of::<Vec<T>>()
    }
}

/// The prefixes of every list, gathered from the command line and the files before they are
/// compiled into [`Rules`].
#[derive(Default)]
pub struct Lists {
    v4: Vec<Entry<u32>>,
    v6: Vec<Entry<u128>>,
    allow: bool,
    deny: bool,
}

impl Lists {
    /// A list of `action`s is given, even if it turns out to hold no prefix (an empty
    /// `--allow-file` still means "only what is allowed": a truncated file denies, never
    /// opens the daemon to everyone).
    pub fn given(&mut self, action: Action) {
        match action {
            Action::Allow => self.allow = true,
            Action::Deny => self.deny = true,
        }
    }

    /// Add one prefix to the `action` list.
    pub fn add(&mut self, cidr: Cidr, action: Action) {
        self.given(action);
        let deny = action == Action::Deny;
        match cidr {
            Cidr::V4 { addr, len } => self.v4.push(Entry {
                start: addr,
                len,
                deny,
            }),
            Cidr::V6 { addr, len } => self.v6.push(Entry {
                start: addr,
                len,
                deny,
            }),
        }
    }

    /// Nothing added and no list given.
    pub fn is_empty(&self) -> bool {
        !self.allow && !self.deny
    }

    /// Compile; `None` when no list was given at all (everyone is served, nothing to check).
    pub fn build(self) -> Option<Rules> {
        if self.is_empty() {
            return None;
        }
        let fallback = if self.allow {
            Action::Deny
        } else {
            Action::Allow
        };
        Some(Rules {
            v4: Ranges::compile(self.v4, fallback),
            v6: Ranges::compile(self.v6, fallback),
        })
    }
}

/// The compiled access lists.
#[derive(Clone, PartialEq, Eq)]
pub struct Rules {
    v4: Ranges<u32>,
    v6: Ranges<u128>,
}

impl Rules {
    /// Compile `--allow` and `--deny` lists; `None` when both are empty (everyone served).
    pub fn new(allow: &[Cidr], deny: &[Cidr]) -> Option<Rules> {
        let mut lists = Lists::default();
        for &c in allow {
            lists.add(c, Action::Allow);
        }
        for &c in deny {
            lists.add(c, Action::Deny);
        }
        lists.build()
    }

    /// The decision for a peer (IPv4-mapped IPv6 is looked up as IPv4).
    pub fn decide(&self, ip: IpAddr) -> Action {
        match fold(ip) {
            IpAddr::V4(a) => self.v4.decide(u32::from(a)),
            IpAddr::V6(a) => self.v6.decide(u128::from(a)),
        }
    }

    /// Cut points kept (IPv4, IPv6): what a lookup searches.
    pub fn cuts(&self) -> (usize, usize) {
        (self.v4.cuts.len(), self.v6.cuts.len())
    }

    /// Heap bytes the compiled lists hold.
    pub fn heap_bytes(&self) -> usize {
        self.v4.heap_bytes() + self.v6.heap_bytes()
    }
}

impl fmt::Debug for Rules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A million entries are no use in a debug line: the shape is.
        let (v4, v6) = self.cuts();
        write!(
            f,
            "Rules {{ v4: {:?} then {v4} cuts, v6: {:?} then {v6} cuts }}",
            self.v4.first, self.v6.first
        )
    }
}

#[cfg(test)]
mod tests;
