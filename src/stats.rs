//! The counters behind the SIGUSR1 line (SPEC §5).
//!
//! Every update goes through a small method (`add_in`, `accepted`, …) and every read through
//! [`Stats::snapshot`], so the storage can become a per-worker slot in shared memory
//! (`--workers`, relaxed atomics written only by their owner) without touching a caller.

use std::fmt;
use std::time::{Duration, Instant};

use crate::shared::{Counter, Ledger, Seat, Snapshot};

/// This process's counters since it started. They live in a [`Ledger`]: a private one, or
/// with `--workers` this worker's slot in the memory its supervisor reads.
#[derive(Debug)]
pub struct Stats {
    slot: &'static Ledger,
    seat: Option<Seat>,
    started: Instant,
    /// Reloads (SIGHUP) this process went through (SPEC §13).
    reloads: u64,
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
    /// Of `rejected`: over `--max-clients`.
    pub max_clients: u64,
    /// Of `limited`: a new source refused because the per-source table had no room.
    pub table_full: u64,
    /// Of `rejected`: a descriptor the backend cannot watch (select's FD_SETSIZE).
    pub backend_limit: u64,
    /// Of `rejected`: a `--proxy-from` peer's PROXY header was bad or late.
    pub proxy: u64,
    /// `dropped` by reason, in [`DropReason::ALL`]'s order.
    pub dropped_by: [u64; DropReason::ALL.len()],
}

/// Why a datagram was not answered (the `reason` of the dropped-datagrams metric).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DropReason {
    LoopPort,
    LoopDetected,
    BadAddress,
    Oversize,
    QueueFull,
    Other,
}

impl DropReason {
    /// Every reason, with its counter and its label value.
    pub const ALL: [(DropReason, Counter, &'static str); 6] = [
        (DropReason::LoopPort, Counter::DropLoopPort, "loop-port"),
        (
            DropReason::LoopDetected,
            Counter::DropLoopDetected,
            "loop-detected",
        ),
        (
            DropReason::BadAddress,
            Counter::DropBadAddress,
            "bad-address",
        ),
        (DropReason::Oversize, Counter::DropOversize, "oversize"),
        (DropReason::QueueFull, Counter::DropQueueFull, "queue-full"),
        (DropReason::Other, Counter::DropOther, "other"),
    ];
}

impl From<&Snapshot> for Totals {
    fn from(s: &Snapshot) -> Totals {
        Totals {
            accepted: s.get(Counter::Accepted),
            rejected: s.get(Counter::Rejected),
            bytes_in: s.get(Counter::BytesIn),
            bytes_out: s.get(Counter::BytesOut),
            denied: s.get(Counter::Denied),
            limited: s.get(Counter::Limited),
            datagrams_in: s.get(Counter::DatagramsIn),
            datagrams_out: s.get(Counter::DatagramsOut),
            dropped: s.get(Counter::Dropped),
            max_clients: s.get(Counter::MaxClients),
            table_full: s.get(Counter::TableFull),
            backend_limit: s.get(Counter::BackendLimit),
            proxy: s.get(Counter::Proxy),
            dropped_by: DropReason::ALL.map(|(_, c, _)| s.get(c)),
        }
    }
}

impl Stats {
    /// `now` is the uptime's origin.
    pub fn new(now: Instant) -> Stats {
        Stats {
            slot: Ledger::private(),
            seat: None,
            started: now,
            reloads: 0,
        }
    }

    /// Counting in worker `seat`'s shared slot, which its supervisor sums.
    pub fn for_worker(seat: Seat, now: Instant) -> Stats {
        Stats {
            slot: seat.slot,
            seat: Some(seat),
            started: now,
            reloads: 0,
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

    /// `n` datagrams were not answered (reason `other`).
    pub fn dropped(&mut self, n: usize) {
        self.dropped_because(DropReason::Other, n);
    }

    /// `n` datagrams were not answered, for `reason`.
    pub fn dropped_because(&mut self, reason: DropReason, n: usize) {
        self.slot.add(Counter::Dropped, n as u64);
        self.slot.add(DropReason::ALL[reason as usize].1, n as u64);
    }

    pub fn accepted(&mut self) {
        self.slot.add(Counter::Accepted, 1);
    }

    /// A connection was accepted and closed at once because the backend cannot watch it.
    pub fn rejected(&mut self) {
        self.slot.add(Counter::Rejected, 1);
        self.slot.add(Counter::BackendLimit, 1);
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
    pub fn refused(&mut self, reason: crate::shared::Reason) {
        use crate::shared::Reason;
        self.slot.add(Counter::Rejected, 1);
        match reason {
            Reason::MaxClients => self.slot.add(Counter::MaxClients, 1),
            Reason::Proxy => self.slot.add(Counter::Proxy, 1),
            Reason::Denied => self.denied(),
            Reason::MaxPerSource | Reason::RatePerSource => self.limited(),
            Reason::SourcesFull => {
                self.limited();
                self.slot.add(Counter::TableFull, 1);
            }
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
        Totals::from(&self.slot.snapshot())
    }

    /// Reloads since the start.
    pub fn reloads(&self) -> u64 {
        self.reloads
    }

    /// Write the counters, the start and the reloads so far, for a reload's new image. The
    /// open gauge is not written: the new image counts its connections itself.
    pub fn save(&self, w: &mut crate::reload::state::Writer) {
        let snap = self.slot.snapshot();
        w.usize(Counter::ALL.len());
        for c in Counter::ALL {
            w.u64(snap.get(c));
        }
        w.instant(self.started);
        w.u64(self.reloads);
    }

    /// Take over what [`Stats::save`] wrote, and count this reload: the counters go on
    /// from where they were. A state from a release with fewer counters leaves the rest
    /// at zero; one with more is an error.
    pub fn restore(
        &mut self,
        r: &mut crate::reload::state::Reader<'_>,
    ) -> crate::reload::state::Result<()> {
        let n = r.count(8)?;
        if n > Counter::ALL.len() {
            return Err(crate::reload::state::Error(format!(
                "section STAT: {n} counters, this build knows {}",
                Counter::ALL.len()
            )));
        }
        for c in &Counter::ALL[..n] {
            let v = r.u64()?;
            if *c != Counter::Open {
                self.slot.set(*c, v);
            }
        }
        self.started = r.instant()?;
        self.reloads = r.u64()? + 1;
        Ok(())
    }

    pub fn uptime(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started)
    }

    /// This process's SIGUSR1 line (SPEC §5), with `worker=K` in a worker; callers add the
    /// access and UDP fields where they apply.
    pub fn line(&self, backend: &'static str, open: usize, now: Instant) -> Line {
        let mut line = Line::new(backend, open as u64, self.snapshot(), self.uptime(now));
        line.worker = self.seat.map(|s| s.number);
        line.reloads = self.reloads;
        line
    }
}

/// `stats: backend=epoll open=3 accepted=10 rejected=0 bytes_in=4096 bytes_out=4096 uptime=12s`
/// — the prefix never changes (SPEC §5); more `key=value` fields go after it.
/// The one place the line is written, for a process's own counters and for the
/// supervisor's totals alike.
#[derive(Debug)]
pub struct Line {
    backend: &'static str,
    open: u64,
    totals: Totals,
    uptime: Duration,
    /// `workers=N` in the supervisor's totals line (SPEC §8).
    workers: Option<usize>,
    /// `worker=K` in a worker of `--workers` (SPEC §8).
    worker: Option<usize>,
    access: bool,
    udp: bool,
    /// `reloads=N` last, once there has been one (SPEC §13).
    reloads: u64,
}

impl Line {
    /// The fixed part: backend, open, the counters, uptime.
    pub fn new(backend: &'static str, open: u64, totals: Totals, uptime: Duration) -> Line {
        Line {
            backend,
            open,
            totals,
            uptime,
            workers: None,
            worker: None,
            access: false,
            udp: false,
            reloads: 0,
        }
    }

    /// Append `workers=N` (the supervisor's totals line).
    pub fn with_workers(mut self, n: usize) -> Line {
        self.workers = Some(n);
        self
    }

    /// Append `denied= limited=` (SPEC §5: when `--allow`/`--deny` or a per-source limit is set).
    pub fn with_access(mut self, shown: bool) -> Line {
        self.access = shown;
        self
    }

    /// Append `datagrams_in= datagrams_out= dropped=` (SPEC §5: when a UDP listener exists).
    pub fn with_udp(mut self, shown: bool) -> Line {
        self.udp = shown;
        self
    }

    /// `reloads=N` (the supervisor's count of the daemon's reloads; 0 leaves it out).
    pub fn with_reloads(mut self, n: u64) -> Line {
        self.reloads = n;
        self
    }
}

/// The fields in SPEC §5's order: the fixed prefix, then `workers=`, `worker=`,
/// `denied= limited=`, `datagrams_in= datagrams_out= dropped=`.
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
        if let Some(n) = self.workers {
            write!(f, " workers={n}")?;
        }
        if let Some(k) = self.worker {
            write!(f, " worker={k}")?;
        }
        if self.access {
            write!(f, " denied={} limited={}", t.denied, t.limited)?;
        }
        if self.udp {
            let (i, o, d) = (t.datagrams_in, t.datagrams_out, t.dropped);
            write!(f, " datagrams_in={i} datagrams_out={o} dropped={d}")?;
        }
        if self.reloads > 0 {
            write!(f, " reloads={}", self.reloads)?;
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

    /// Every refusal and drop is counted once under its reason, and the reasons add up to
    /// the stats line's `rejected` and `dropped`.
    #[test]
    fn reasons_add_up_to_rejected_and_dropped() {
        use crate::shared::Reason;
        let mut s = Stats::new(Instant::now());
        for r in [
            Reason::MaxClients,
            Reason::Denied,
            Reason::RatePerSource,
            Reason::SourcesFull,
            Reason::Proxy,
        ] {
            s.refused(r);
        }
        s.rejected();
        s.dropped(2);
        s.dropped_because(DropReason::LoopPort, 1);
        s.dropped_because(DropReason::QueueFull, 3);
        s.dropped_because(DropReason::LoopDetected, 4);
        let t = s.snapshot();
        assert_eq!(t.rejected, 6);
        assert_eq!(
            t.max_clients + t.denied + t.limited + t.backend_limit + t.proxy,
            6
        );
        assert_eq!((t.limited, t.table_full), (2, 1));
        assert_eq!(t.dropped, 10);
        assert_eq!(t.dropped_by, [1, 4, 0, 0, 3, 2]);
    }

    #[test]
    fn counters_and_reloads_go_on_across_a_save_and_restore() {
        use crate::reload::state::{Reader, Writer};
        let t0 = Instant::now();
        // A worker's seat, so that the two Stats do not share the private ledger.
        let region = crate::shared::Region::map(2, 0).unwrap();
        let mut s = Stats::for_worker(region.seat(1), t0);
        s.accepted();
        s.add_in(10);
        let mut w = Writer::new();
        s.save(&mut w);
        let (bytes, _) = w.finish();
        let mut again = Stats::for_worker(region.seat(2), t0 + Duration::from_secs(5));
        again.restore(&mut Reader::new(&bytes).unwrap()).unwrap();
        assert_eq!(again.snapshot().accepted, 1);
        assert_eq!(again.snapshot().bytes_in, 10);
        assert_eq!(again.reloads(), 1);
        let line = again
            .line("poll", 0, t0 + Duration::from_millis(3500))
            .to_string();
        assert!(line.ends_with(" uptime=3s worker=2 reloads=1"), "{line}");
    }

    /// Every optional field, in SPEC §5's order, as the supervisor's totals line shows them.
    #[test]
    fn optional_fields_follow_the_spec_order() {
        let t = Totals {
            denied: 1,
            limited: 2,
            datagrams_in: 3,
            datagrams_out: 4,
            dropped: 5,
            ..Totals::default()
        };
        let line = Line::new("epoll", 0, t, Duration::from_secs(7))
            .with_workers(2)
            .with_access(true)
            .with_udp(true)
            .to_string();
        assert!(line.ends_with(
            " uptime=7s workers=2 denied=1 limited=2 datagrams_in=3 datagrams_out=4 dropped=5"
        ));
    }
}
