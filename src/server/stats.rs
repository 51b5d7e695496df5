//! The counters behind the SIGUSR1 line (SPEC §5).
//!
//! Every update goes through a small method (`add_in`, `accepted`, …) and every read through
//! [`Stats::snapshot`], so the storage can become a per-worker slot in shared memory
//! (`--workers`, relaxed atomics written only by their owner) without touching a caller.

use std::fmt;
use std::time::{Duration, Instant};

use crate::shared::{Counter, Seat, Slot};

/// This process's counters since it started. They live in a [`Slot`]: a private one, or
/// with `--workers` this worker's slot in the memory its supervisor reads.
#[derive(Debug)]
pub struct Stats {
    slot: &'static Slot,
    seat: Option<Seat>,
    started: Instant,
}

/// The counters at one moment; a supervisor can add up several of them.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Totals {
    /// Not counting refused ones.
    pub accepted: u64,
    /// Connections closed at once: over `--max-clients`, or beyond what the backend can watch.
    pub rejected: u64,
    pub bytes_in: u64,
    /// What the kernel took, not what was produced: held and unsent output is not counted.
    pub bytes_out: u64,
    /// Refused by `--allow`/`--deny` (also in `rejected`).
    pub denied: u64,
    /// Refused by a per-source limit (also in `rejected`).
    pub limited: u64,
    /// UDP datagrams received (their payloads count in `bytes_in`).
    pub datagrams_in: u64,
    /// UDP replies sent (their bytes count in `bytes_out`).
    pub datagrams_out: u64,
    /// UDP datagrams not answered (loop protection, too large, over the cap, send errors,
    /// cut off by the drain deadline).
    pub dropped: u64,
}

impl Stats {
    /// `now` is the uptime's origin.
    pub fn new(now: Instant) -> Stats {
        Stats {
            slot: Slot::private(),
            seat: None,
            started: now,
        }
    }

    /// Counting in worker `seat`'s shared slot, which its supervisor sums.
    pub fn for_worker(seat: Seat, now: Instant) -> Stats {
        Stats {
            slot: seat.slot,
            seat: Some(seat),
            started: now,
        }
    }

    #[inline]
    pub fn add_in(&mut self, n: usize) {
        self.slot.add(Counter::BytesIn, n as u64);
    }

    #[inline]
    pub fn add_out(&mut self, n: usize) {
        self.slot.add(Counter::BytesOut, n as u64);
    }

    /// A datagram of `n` bytes arrived.
    #[inline]
    pub fn datagram_in(&mut self, n: usize) {
        self.slot.add(Counter::DatagramsIn, 1);
        self.slot.add(Counter::BytesIn, n as u64);
    }

    /// A reply of `n` bytes went out.
    #[inline]
    pub fn datagram_out(&mut self, n: usize) {
        self.slot.add(Counter::DatagramsOut, 1);
        self.slot.add(Counter::BytesOut, n as u64);
    }

    /// `n` datagrams were not answered.
    pub fn dropped(&mut self, n: usize) {
        self.slot.add(Counter::Dropped, n as u64);
    }

    pub fn accepted(&mut self) {
        self.slot.add(Counter::Accepted, 1);
    }

    /// A connection was accepted and closed at once.
    pub fn rejected(&mut self) {
        self.slot.add(Counter::Rejected, 1);
    }

    /// End of a loop turn: publish the open count and, in a worker, the heartbeat.
    #[inline]
    pub fn turn(&mut self, open: usize, now: Instant) {
        self.slot.set(Counter::Open, open as u64);
        if let Some(seat) = &self.seat {
            seat.beat(now);
        }
    }

    /// A connection (or datagram) was refused for `reason`: `rejected`, and `denied` or
    /// `limited` as the reason says (SPEC §10).
    pub fn refused(&mut self, reason: crate::refusal::Reason) {
        use crate::refusal::Reason;
        self.rejected();
        match reason {
            Reason::MaxClients => {}
            Reason::Denied => self.denied(),
            Reason::MaxPerSource | Reason::RatePerSource | Reason::SourcesFull => self.limited(),
        }
    }

    /// A connection was refused by the access lists (call [`Stats::rejected`] too).
    pub fn denied(&mut self) {
        self.slot.add(Counter::Denied, 1);
    }

    /// A connection was refused by a per-source limit (call [`Stats::rejected`] too).
    pub fn limited(&mut self) {
        self.slot.add(Counter::Limited, 1);
    }

    pub fn snapshot(&self) -> Totals {
        Totals {
            accepted: self.slot.get(Counter::Accepted),
            rejected: self.slot.get(Counter::Rejected),
            bytes_in: self.slot.get(Counter::BytesIn),
            bytes_out: self.slot.get(Counter::BytesOut),
            denied: self.slot.get(Counter::Denied),
            limited: self.slot.get(Counter::Limited),
            datagrams_in: self.slot.get(Counter::DatagramsIn),
            datagrams_out: self.slot.get(Counter::DatagramsOut),
            dropped: self.slot.get(Counter::Dropped),
        }
    }

    pub fn uptime(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started)
    }

    /// The SIGUSR1 line's fixed part (SPEC §5); callers append the fields that apply.
    pub fn line(&self, backend: &'static str, open: usize, now: Instant) -> Line {
        Line {
            backend,
            open,
            totals: self.snapshot(),
            uptime: self.uptime(now),
            worker: self.seat.map(|s| s.number),
            access: false,
        }
    }
}

/// `stats: backend=epoll open=3 accepted=10 rejected=0 bytes_in=4096 bytes_out=4096 uptime=12s`
/// — the prefix never changes (SPEC §5); more `key=value` fields go after it.
#[derive(Debug)]
pub struct Line {
    backend: &'static str,
    open: usize,
    totals: Totals,
    uptime: Duration,
    /// `worker=K` in a worker of `--workers` (SPEC §8).
    worker: Option<usize>,
    access: bool,
}

impl Line {
    /// Append `denied= limited=` (SPEC §5: when `--allow`/`--deny` or a per-source limit is set).
    pub fn with_access(mut self, shown: bool) -> Line {
        self.access = shown;
        self
    }
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.totals;
        write!(
            f,
            "stats: backend={} open={} accepted={} rejected={} bytes_in={} bytes_out={} uptime={}s",
            self.backend,
            self.open,
            t.accepted,
            t.rejected,
            t.bytes_in,
            t.bytes_out,
            self.uptime.as_secs()
        )?;
        if let Some(k) = self.worker {
            write!(f, " worker={k}")?;
        }
        if self.access {
            write!(f, " denied={} limited={}", t.denied, t.limited)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_keeps_its_fixed_prefix() {
        let t0 = Instant::now();
        let mut s = Stats::new(t0);
        s.accepted();
        s.accepted();
        s.rejected();
        s.add_in(4096);
        s.add_out(4000);
        let line = s.line("poll", 1, t0 + Duration::from_millis(12_500));
        assert_eq!(
            line.to_string(),
            "stats: backend=poll open=1 accepted=2 rejected=1 bytes_in=4096 bytes_out=4000 uptime=12s"
        );
        s.rejected();
        s.denied();
        s.rejected();
        s.limited();
        let line = s.line("poll", 1, t0).with_access(true).to_string();
        assert!(
            line.ends_with(" rejected=3 bytes_in=4096 bytes_out=4000 uptime=0s denied=1 limited=1")
        );
    }
}
