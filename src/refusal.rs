//! Refused connections and dropped datagrams, logged so that a flood of them is one line a
//! second per reason (SPEC §10): `refused 37 connections in the last 1s (max-clients), e.g.
//! from 192.0.2.7`. Datagrams refused for the same reason share that line and its pacing:
//! `refused 37 datagrams …`, or `refused 2 connections and 37 datagrams …` when both came
//! (so a reason never logs more than once a second, whatever the mix).
//!
//! The first refusal after a quiet second is logged at once (count 1); the ones that follow
//! within the second are counted, and [`RefusalLog::flush`] logs them when the second is up.
//! So the lines of one reason are at least a second apart, every refusal is in exactly one
//! line, and each line names one peer it counted.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::timer::later;

/// Lines of one reason are at least this far apart.
pub const EVERY: Duration = Duration::from_secs(1);

/// The other end of an accepted connection.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Peer {
    /// A TCP client.
    Ip(SocketAddr),
    /// A unix-socket client: it has no address worth showing, and no source (SPEC §10).
    Unix,
}

impl Peer {
    /// The source address of SPEC §10: the IP, with an IPv4-mapped IPv6 address as its IPv4
    /// address; `None` for unix-socket peers.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Peer::Ip(a) => Some(a.ip().to_canonical()),
            Peer::Unix => None,
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Ip(a) => write!(f, "{a}"),
            Peer::Unix => f.write_str("a unix-socket client"),
        }
    }
}

/// Why a connection was closed at once; the text in parentheses of the log line.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Reason {
    /// Over `--max-clients`.
    MaxClients,
    /// Denied by `--allow`/`--deny`.
    Denied,
    /// Over `--max-per-source`.
    MaxPerSource,
    /// Over `--rate-per-source`.
    RatePerSource,
    /// A new source while every slot it could use holds a source with connections open
    /// (SPEC §10: `table full`, counted as `limited`).
    SourcesFull,
    /// A `--proxy-from` peer whose PROXY header was missing, malformed, too long or not
    /// complete in time (SPEC §14).
    Proxy,
}

/// How many [`Reason`]s there are.
pub const REASONS: usize = 6;

impl Reason {
    /// Every reason, each at its own index (`reason as usize`).
    pub const ALL: [Reason; REASONS] = [
        Reason::MaxClients,
        Reason::Denied,
        Reason::MaxPerSource,
        Reason::RatePerSource,
        Reason::SourcesFull,
        Reason::Proxy,
    ];

    /// The name in the log line: the option's name, or `denied`.
    pub fn name(self) -> &'static str {
        match self {
            Reason::MaxClients => "max-clients",
            Reason::Denied => "denied",
            Reason::MaxPerSource => "max-per-source",
            Reason::RatePerSource => "rate-per-source",
            Reason::SourcesFull => "table full",
            Reason::Proxy => "proxy",
        }
    }
}

/// Per reason: refusals not yet logged, one peer among them, and when the last line went out.
#[derive(Default, Clone, Copy)]
struct Tally {
    count: u64,
    /// Of `count`, how many were datagrams.
    datagrams: u64,
    example: Option<Peer>,
    logged: Option<Instant>,
    /// A flush is due (the caller was asked to call [`RefusalLog::flush`]).
    flush_due: Option<Instant>,
}

/// The refusal log: one per process, fed at accept time. In a worker of `--workers` it only
/// counts, in the worker's shared slot: the supervisor logs for the whole daemon (SPEC §10).
#[derive(Default)]
pub struct RefusalLog {
    tallies: [Tally; REASONS],
    /// A worker's slot: count there, log nothing.
    shared: Option<&'static crate::shared::Slot>,
}

impl RefusalLog {
    /// A worker's log: refusals are counted in `slot`, for the supervisor to log.
    pub fn to_supervisor(slot: &'static crate::shared::Slot) -> RefusalLog {
        RefusalLog {
            shared: Some(slot),
            ..RefusalLog::default()
        }
    }

    /// Count one refused connection. Logs at once when this reason has been quiet for a
    /// second; otherwise returns when to call [`RefusalLog::flush`] (once per second of
    /// refusals: `None` means a flush is already due or nothing is pending).
    pub fn refused(&mut self, reason: Reason, peer: Peer, now: Instant) -> Option<Instant> {
        if let Some(slot) = self.shared {
            slot.refused(reason, peer, false);
            return None;
        }
        let (line, flush) = self.count(reason, peer, false, now);
        if let Some(line) = line {
            log::info!("{line}");
        }
        flush
    }

    /// Count one dropped datagram from `from`: as [`RefusalLog::refused`] (no allocation
    /// unless a line is due).
    pub fn refused_datagram(
        &mut self,
        reason: Reason,
        from: SocketAddr,
        now: Instant,
    ) -> Option<Instant> {
        if let Some(slot) = self.shared {
            slot.refused(reason, Peer::Ip(from), true);
            return None;
        }
        let (line, flush) = self.count(reason, Peer::Ip(from), true, now);
        if let Some(line) = line {
            log::info!("{line}");
        }
        flush
    }

    /// Log every reason whose second is up; returns the next time to call it, if any.
    pub fn flush(&mut self, now: Instant) -> Option<Instant> {
        let (lines, next) = self.due_lines(now);
        for line in lines {
            log::info!("{line}");
        }
        next
    }

    /// Count `conns` connections and `datagrams` datagrams refused for `reason` elsewhere
    /// (the supervisor, from its workers' slots), logging as [`RefusalLog::refused`] does.
    pub fn refused_many(
        &mut self,
        reason: Reason,
        conns: u64,
        datagrams: u64,
        example: Option<Peer>,
        now: Instant,
    ) -> Option<Instant> {
        if conns + datagrams == 0 {
            return None;
        }
        let (line, flush) = self.count_n(reason, conns, datagrams, example, now);
        if let Some(line) = line {
            log::info!("{line}");
        }
        flush
    }

    fn count(
        &mut self,
        reason: Reason,
        peer: Peer,
        datagram: bool,
        now: Instant,
    ) -> (Option<String>, Option<Instant>) {
        let datagram = u64::from(datagram);
        self.count_n(reason, 1 - datagram, datagram, Some(peer), now)
    }

    fn count_n(
        &mut self,
        reason: Reason,
        conns: u64,
        datagrams: u64,
        example: Option<Peer>,
        now: Instant,
    ) -> (Option<String>, Option<Instant>) {
        let t = &mut self.tallies[reason as usize];
        t.count += conns + datagrams;
        t.datagrams += datagrams;
        if t.example.is_none() {
            t.example = example;
        }
        match t.logged {
            Some(at) if now < later(at, EVERY) => {
                if t.flush_due.is_some() {
                    return (None, None);
                }
                let due = later(at, EVERY);
                t.flush_due = Some(due);
                (None, Some(due))
            }
            _ => {
                // This line also counts what a flush was due to log (a loop turn that came
                // late may see a refusal before the flush timer): that flush is now moot, or
                // a stale one would log the next refusals in a second line at this instant.
                t.flush_due = None;
                (Some(take_line(reason, t, now)), None)
            }
        }
    }

    fn due_lines(&mut self, now: Instant) -> (Vec<String>, Option<Instant>) {
        let (mut lines, mut next) = (Vec::new(), None::<Instant>);
        for (i, t) in self.tallies.iter_mut().enumerate() {
            let Some(due) = t.flush_due else { continue };
            if now < due {
                next = Some(next.map_or(due, |n| n.min(due)));
                continue;
            }
            t.flush_due = None;
            if t.count > 0 {
                lines.push(take_line(Reason::ALL[i], t, now));
            }
        }
        (lines, next)
    }
}

/// The line for what `t` counted; starts a new second.
fn take_line(reason: Reason, t: &mut Tally, now: Instant) -> String {
    let (n, example) = (t.count, t.example.take());
    let (grams, conns) = (t.datagrams, t.count - t.datagrams);
    (t.count, t.datagrams) = (0, 0);
    t.logged = Some(now);
    let plural = |n: u64, one: &str| {
        if n == 1 {
            format!("1 {one}")
        } else {
            format!("{n} {one}s")
        }
    };
    let what = match (conns, grams) {
        (c, 0) => plural(c, "connection"),
        (0, g) => plural(g, "datagram"),
        (c, g) => format!("{} and {}", plural(c, "connection"), plural(g, "datagram")),
    };
    let from = match example {
        Some(Peer::Ip(a)) => a.ip().to_canonical().to_string(),
        Some(Peer::Unix) => "a unix-socket client".to_string(),
        // (A worker stopped while writing its example, SPEC §8; never in one process.)
        None => "an unknown peer".to_string(),
    };
    debug_assert!(n == conns + grams);
    format!(
        "refused {what} in the last {}s ({}), e.g. from {from}",
        EVERY.as_secs(),
        reason.name()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(last: u8) -> Peer {
        Peer::Ip(SocketAddr::from(([192, 0, 2, last], 40000)))
    }

    #[test]
    fn a_flood_is_one_line_a_second_and_every_refusal_is_counted_once() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut log = RefusalLog::default();
        let (line, flush) = log.count(Reason::MaxClients, peer(7), false, t0);
        assert_eq!(
            line.as_deref(),
            Some("refused 1 connection in the last 1s (max-clients), e.g. from 192.0.2.7")
        );
        assert_eq!(flush, None);
        // 36 more within the second: no line, one flush request at t0 + 1s.
        let mut flushes = Vec::new();
        for i in 0..36 {
            let (line, flush) = log.count(Reason::MaxClients, peer(8 + i as u8), false, ms(10 + i));
            assert_eq!(line, None);
            flushes.extend(flush);
        }
        assert_eq!(flushes, vec![ms(1000)]);
        assert_eq!(
            log.due_lines(ms(999)),
            (vec![], Some(ms(1000))),
            "never early"
        );
        let (lines, next) = log.due_lines(ms(1000));
        assert_eq!(
            lines,
            vec!["refused 36 connections in the last 1s (max-clients), e.g. from 192.0.2.8"]
        );
        assert_eq!(next, None);
        // Quiet flush: nothing to say.
        assert_eq!(log.due_lines(ms(5000)), (vec![], None));
        // After a quiet second, the next refusal is logged at once again.
        let (line, _) = log.count(Reason::MaxClients, Peer::Unix, false, ms(5000));
        assert_eq!(
            line.as_deref(),
            Some(
                "refused 1 connection in the last 1s (max-clients), e.g. from a unix-socket client"
            )
        );
    }

    #[test]
    fn a_refusal_before_a_late_flush_takes_its_count_and_the_flush_logs_nothing() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut log = RefusalLog::default();
        assert!(log
            .count(Reason::MaxClients, peer(1), false, t0)
            .0
            .is_some());
        assert_eq!(
            log.count(Reason::MaxClients, peer(2), false, ms(10)).1,
            Some(ms(1000))
        );
        // The loop comes late, at 1.5 s, and sees two refusals before the flush timer.
        let (line, _) = log.count(Reason::MaxClients, peer(3), false, ms(1500));
        assert_eq!(
            line.as_deref(),
            Some("refused 2 connections in the last 1s (max-clients), e.g. from 192.0.2.2")
        );
        let (line, flush) = log.count(Reason::MaxClients, peer(4), false, ms(1500));
        assert_eq!((line, flush), (None, Some(ms(2500))));
        // The stale timer then fires in the same turn: no second line at 1.5 s.
        assert_eq!(log.due_lines(ms(1500)), (vec![], Some(ms(2500))));
        let (lines, _) = log.due_lines(ms(2500));
        assert_eq!(
            lines,
            vec!["refused 1 connection in the last 1s (max-clients), e.g. from 192.0.2.4"]
        );
    }

    #[test]
    fn datagrams_share_the_reasons_line() {
        let t0 = Instant::now();
        let mut log = RefusalLog::default();
        let from: SocketAddr = "192.0.2.7:5000".parse().unwrap();
        let (line, _) = log.count(Reason::RatePerSource, Peer::Ip(from), true, t0);
        assert_eq!(
            line.as_deref(),
            Some("refused 1 datagram in the last 1s (rate-per-source), e.g. from 192.0.2.7")
        );
        for _ in 0..36 {
            assert!(log
                .count(Reason::RatePerSource, Peer::Ip(from), true, t0)
                .0
                .is_none());
        }
        let (lines, _) = log.due_lines(t0 + EVERY);
        assert_eq!(
            lines,
            vec!["refused 36 datagrams in the last 1s (rate-per-source), e.g. from 192.0.2.7"]
        );
        let t1 = t0 + EVERY + Duration::from_millis(1);
        log.count(Reason::Denied, peer(1), false, t1);
        log.count(Reason::Denied, peer(2), false, t1);
        log.count(Reason::Denied, Peer::Ip(from), true, t1);
        log.count(Reason::Denied, Peer::Ip(from), true, t1);
        let (lines, _) = log.due_lines(t1 + EVERY);
        assert_eq!(
            lines,
            vec![
                "refused 1 connection and 2 datagrams in the last 1s (denied), e.g. from 192.0.2.2"
            ]
        );
    }

    #[test]
    fn every_reason_has_its_own_slot() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }

    #[test]
    fn reasons_are_paced_separately() {
        let t0 = Instant::now();
        let mut log = RefusalLog::default();
        assert!(log.count(Reason::Denied, peer(1), false, t0).0.is_some());
        assert!(log
            .count(Reason::RatePerSource, peer(2), false, t0)
            .0
            .is_some());
        assert!(log.count(Reason::Denied, peer(3), false, t0).0.is_none());
        let v6 = "[::ffff:198.51.100.9]:5".parse().unwrap();
        assert!(log
            .count(Reason::MaxPerSource, Peer::Ip(v6), false, t0)
            .0
            .unwrap()
            .ends_with("(max-per-source), e.g. from 198.51.100.9"));
        assert_eq!(Peer::Ip(v6).ip(), Some("198.51.100.9".parse().unwrap()));
        let (lines, _) = log.due_lines(t0 + EVERY);
        assert_eq!(
            lines,
            vec!["refused 1 connection in the last 1s (denied), e.g. from 192.0.2.3"]
        );
    }
}
