//! The deadline queue: a binary heap of `(when, seq, what)` with lazy cancellation.
//!
//! Entries are never removed early. When one pops, the server checks that it still applies
//! (the connection still exists under the same id; an idle timer re-arms if there was traffic
//! since) — Redis's lazy delete, at O(log n). `seq` keeps equal deadlines in insertion order.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// `now + dur`, saturating: a deadline too far away to represent becomes "about a century
/// from now" instead of a panic (`Instant + Duration` panics on overflow).
pub fn later(now: Instant, dur: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(dur)
        .or_else(|| now.checked_add(CENTURY))
        .unwrap_or(now)
}

struct Entry<T> {
    at: Instant,
    seq: u64,
    what: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Deadlines carrying a `T` that says what to do when they pass.
pub struct Timers<T> {
    heap: BinaryHeap<Reverse<Entry<T>>>,
    seq: u64,
}

impl<T> Default for Timers<T> {
    fn default() -> Self {
        Timers {
            heap: BinaryHeap::new(),
            seq: 0,
        }
    }
}

impl<T> Timers<T> {
    /// Fire `what` at `at` (or at the first turn after it).
    pub fn add(&mut self, at: Instant, what: T) {
        self.seq += 1;
        self.heap.push(Reverse(Entry {
            at,
            seq: self.seq,
            what,
        }));
    }

    /// How long the poller may sleep: until the nearest deadline, `None` when there is none.
    pub fn timeout(&self, now: Instant) -> Option<Duration> {
        self.heap
            .peek()
            .map(|Reverse(e)| e.at.saturating_duration_since(now))
    }

    /// Take the earliest entry whose deadline is at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<T> {
        match self.heap.peek() {
            Some(Reverse(e)) if e.at <= now => self.heap.pop().map(|Reverse(e)| e.what),
            _ => None,
        }
    }

    /// Drop every entry for which `keep` is false (O(n); for compacting cancelled entries).
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        self.heap.retain(|Reverse(e)| keep(&e.what));
    }

    /// Entries queued (cancelled ones included until they pop).
    pub fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_deadline_order_then_insertion_order() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut t = Timers::default();
        assert_eq!(t.timeout(t0), None);
        t.add(t0 + ms(30), "c");
        t.add(t0 + ms(10), "a");
        t.add(t0 + ms(20), "b1");
        t.add(t0 + ms(20), "b2");
        assert_eq!(t.timeout(t0), Some(ms(10)));
        assert_eq!(t.pop_due(t0 + ms(9)), None, "nothing fires early");
        assert_eq!(t.pop_due(t0 + ms(25)), Some("a"));
        assert_eq!(t.pop_due(t0 + ms(25)), Some("b1"));
        assert_eq!(t.pop_due(t0 + ms(25)), Some("b2"));
        assert_eq!(t.pop_due(t0 + ms(25)), None);
        assert_eq!(t.timeout(t0 + ms(25)), Some(ms(5)));
        assert_eq!(
            t.timeout(t0 + ms(40)),
            Some(Duration::ZERO),
            "overdue means wait 0"
        );
        assert_eq!(t.len(), 1);
        assert_eq!(t.pop_due(t0 + ms(40)), Some("c"));
        assert_eq!(t.len(), 0);
        for w in ["x", "y", "x"] {
            t.add(t0, w);
        }
        t.retain(|w| *w != "x");
        assert_eq!((t.len(), t.pop_due(t0)), (1, Some("y")));
    }

    #[test]
    fn later_saturates() {
        let t0 = Instant::now();
        assert_eq!(
            later(t0, Duration::from_secs(1)),
            t0 + Duration::from_secs(1)
        );
        assert!(later(t0, Duration::MAX) > later(t0, Duration::from_secs(1 << 30)));
    }
}
