//! One pacing rule for every line that must not flood its reader: at most one per period.
//! The refusal log (per reason), systemd's `STATUS=` and the backend-refusal warning all
//! keep one [`Pacer`]; what falls inside the period is counted by its owner and told with
//! the next line (or at [`Pacer::next`], by a timer the owner queues).

use std::time::{Duration, Instant};

use super::timer::later;

/// When the last line went out, and how far apart lines must be.
#[derive(Clone, Copy, Debug)]
pub struct Pacer {
    every: Duration,
    last: Option<Instant>,
}

impl Pacer {
    /// Lines at least `every` apart; the first may go at once.
    pub const fn new(every: Duration) -> Pacer {
        Pacer { every, last: None }
    }

    /// When the next line may go, if that is after `now`; `None`: it may go now.
    pub fn next(&self, now: Instant) -> Option<Instant> {
        let due = later(self.last?, self.every);
        (now < due).then_some(due)
    }

    /// A line went out at `now`.
    pub fn sent(&mut self, now: Instant) {
        self.last = Some(now);
    }

    /// May a line go at `now`? If so, it counts as sent.
    pub fn ready(&mut self, now: Instant) -> bool {
        if self.next(now).is_some() {
            return false;
        }
        self.sent(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period_the_first_at_once() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut p = Pacer::new(Duration::from_secs(1));
        assert_eq!(p.next(t0), None);
        assert!(p.ready(t0));
        assert!(!p.ready(ms(999)));
        assert_eq!(p.next(ms(500)), Some(ms(1000)));
        assert!(p.ready(ms(1000)));
        assert_eq!(p.next(ms(1000)), Some(ms(2000)));
    }
}
