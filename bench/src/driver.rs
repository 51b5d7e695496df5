//! The timed loop every load shares: warmup, measured phase, --max-requests, the live progress
//! line, and the counters a run reports. A load (stream connections, UDP sockets) only reacts
//! to readiness events and reports what it saw to the [`Meter`].

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use polling::{Events, Poller};

use crate::args::Config;
use echo_mux::error::Plain;

/// What a load does when the driver hands it an event or a moment.
pub trait Load {
    /// The poller its sockets are registered with.
    fn poller(&self) -> &Poller;
    /// Issues the first messages.
    fn start(&mut self, m: &mut Meter, now: Instant);
    /// Reacts to one readiness event for `key`.
    fn on_event(&mut self, m: &mut Meter, key: usize, readable: bool, writable: bool);
    /// The next moment the load needs [`Load::on_time`] (a reply deadline), if any.
    fn next_deadline(&self) -> Option<Instant> {
        None
    }
    /// Called after every wake-up with the current time.
    fn on_time(&mut self, _m: &mut Meter, _now: Instant) {}
    /// Whether the load can still make progress (false: the server closed everything).
    fn alive(&self) -> bool;
    /// Why the run stopped when [`Load::alive`] turned false.
    fn dead_reason(&self) -> &'static str {
        "every connection was closed by the server"
    }
    /// Messages sent and still waiting for their echo.
    fn unanswered(&self) -> u64;
}

/// Errors by kind (the report prints each).
#[derive(Default)]
pub struct Errors {
    /// Messages whose echo differed from what was sent, or bytes nobody asked for.
    pub mismatches: u64,
    /// Active connections closed or reset by the server, or sockets that failed.
    pub closed: u64,
    /// Idle connections closed by the server, or idle connections that received data.
    pub idle_closed: u64,
    /// Datagrams with no reply within the reply timeout (UDP).
    pub lost: u64,
    /// Replies that came after their datagram was counted lost (UDP; not an error).
    pub late: u64,
}

impl Errors {
    pub fn total(&self) -> u64 {
        self.mismatches + self.closed + self.idle_closed + self.lost
    }
}

/// Counters of the phase in progress, reset when the warmup ends.
pub struct Meter {
    /// The measured phase has begun.
    pub measuring: bool,
    max_requests: Option<u64>,
    /// Requests answered correctly in this phase.
    requests: u64,
    /// Requests issued in the measured phase (for --max-requests).
    issued: u64,
    /// Requests of the measured phase that are over: answered, wrong or lost.
    settled: u64,
    /// Round-trip latency of the measured requests, in nanoseconds.
    hist: Histogram<u64>,
    pub errors: Errors,
    first_error: Option<String>,
}

impl Meter {
    fn new(cfg: &Config) -> Result<Self, String> {
        let hist = Histogram::new_with_bounds(1, 3_600_000_000_000, 3)
            .map_err(|e| format!("cannot create histogram: {e}"))?;
        Ok(Meter {
            measuring: false,
            max_requests: cfg.max_requests,
            requests: 0,
            issued: 0,
            settled: 0,
            hist,
            errors: Errors::default(),
            first_error: None,
        })
    }

    fn start_measuring(&mut self) {
        self.measuring = true;
        self.requests = 0;
        self.issued = 0;
        self.settled = 0;
        self.hist.reset();
    }

    /// How many of `want` new messages may be issued now (--max-requests), counted as issued.
    pub fn allowance(&mut self, want: usize) -> usize {
        let n = match self.max_requests {
            Some(max) if self.measuring => {
                max.saturating_sub(self.issued).min(want as u64) as usize
            }
            _ => want,
        };
        if self.measuring {
            self.issued += n as u64;
        }
        n
    }

    /// A request sent at `sent` came back right at `now`.
    pub fn answered(&mut self, sent: Instant, now: Instant) {
        self.requests += 1;
        if self.measuring {
            self.settled += 1;
            let ns = now.duration_since(sent).as_nanos();
            self.hist
                .saturating_record(u64::try_from(ns).unwrap_or(u64::MAX));
        }
    }

    /// Keeps `what` if it is the first error of the run (built only then).
    pub fn note_error(&mut self, what: impl FnOnce() -> String) {
        if self.first_error.is_none() {
            self.first_error = Some(what());
        }
    }

    /// A request is over without a right answer (wrong echo, or lost): it counts toward
    /// --max-requests, so that a run with errors still ends after N requests.
    pub fn settled_badly(&mut self) {
        if self.measuring {
            self.settled += 1;
        }
    }

    fn reached_max(&self) -> bool {
        self.measuring && self.max_requests.is_some_and(|n| self.settled >= n)
    }
}

/// What a run measured.
pub struct Outcome {
    /// Requests answered (and checked) in the measured phase.
    pub requests: u64,
    /// Length of the measured phase.
    pub elapsed: Duration,
    /// Round-trip latency of those requests, in nanoseconds.
    pub hist: Histogram<u64>,
    pub errors: Errors,
    /// The first error seen, in words.
    pub first_error: Option<String>,
    /// Why the run ended before its time, if it did.
    pub early_stop: Option<String>,
    /// Requests still waiting for their echo when the run ended.
    pub unanswered: u64,
    /// The CPU time (user + system) the --server-pid process used during the measured phase;
    /// `None` without --server-pid or when /proc/PID/stat could not be read.
    pub server_cpu: Option<Duration>,
}

impl Outcome {
    pub fn errors(&self) -> u64 {
        self.errors.total()
    }
}

/// The run's milestones.
struct Clock {
    t0: Instant,
    warm_end: Instant,
    end: Instant,
    measure_start: Instant,
}

impl Clock {
    fn new(cfg: &Config) -> Self {
        let t0 = Instant::now();
        let warm_end = t0 + cfg.warmup;
        Clock {
            t0,
            warm_end,
            end: warm_end + cfg.duration,
            measure_start: t0,
        }
    }

    /// Ends the warmup when its time has come.
    fn advance(&mut self, now: Instant, m: &mut Meter) -> bool {
        if m.measuring || now < self.warm_end {
            return false;
        }
        m.start_measuring();
        self.measure_start = now;
        true
    }

    /// The latest moment the next wait may end.
    fn wake(&self, m: &Meter) -> Instant {
        if m.measuring {
            self.end
        } else {
            self.warm_end
        }
    }
}

/// The live progress line on stderr (a terminal only), redrawn every 0.5 s.
struct Progress {
    next: Instant,
    last: (Instant, u64),
}

const TICK: Duration = Duration::from_millis(500);

impl Progress {
    fn new(t0: Instant) -> Self {
        Progress {
            next: t0 + TICK,
            last: (t0, 0),
        }
    }

    /// The rate restarts with the measured phase.
    fn restart(&mut self, now: Instant) {
        self.last = (now, 0);
    }

    fn draw(&mut self, now: Instant, clock: &Clock, m: &Meter) {
        if now < self.next {
            return;
        }
        let (t, r) = self.last;
        let rate = (m.requests - r) as f64 / (now - t).as_secs_f64();
        let phase = if m.measuring { "run   " } else { "warmup" };
        eprint!(
            "\r\x1b[2K{phase} {:6.1}s  {:>10.0} req/s  errors {}",
            (now - clock.t0).as_secs_f64(),
            rate,
            m.errors.total()
        );
        self.last = (now, m.requests);
        self.next = now + TICK;
    }

    fn clear(&self) {
        eprint!("\r\x1b[2K");
    }
}

/// Runs `load` for the configured warmup and duration (or --max-requests) and returns what
/// the measured phase saw. `Err` is a one-line reason (the poller failed).
pub fn drive(load: &mut impl Load, cfg: &Config) -> Result<Outcome, String> {
    let mut meter = Meter::new(cfg)?;
    let mut events = Events::with_capacity(NonZeroUsize::new(1024).expect("nonzero"));
    let mut clock = Clock::new(cfg);
    let mut progress = cfg.progress.then(|| Progress::new(clock.t0));
    // The server's CPU time when the measured phase began.
    let mut cpu_start = None;
    if cfg.warmup.is_zero() {
        meter.measuring = true;
        cpu_start = cfg.server_pid.and_then(process_cpu);
    }
    load.start(&mut meter, clock.t0);

    let mut now = clock.t0;
    let early_stop = loop {
        if now >= clock.end {
            break None;
        }
        if clock.advance(now, &mut meter) {
            cpu_start = cfg.server_pid.and_then(process_cpu);
            if let Some(p) = progress.as_mut() {
                p.restart(now);
            }
        }
        if meter.reached_max() {
            break None;
        }
        if !load.alive() {
            break Some(load.dead_reason().to_string());
        }
        let mut wake = clock.wake(&meter);
        if let Some(p) = &progress {
            wake = wake.min(p.next);
        }
        if let Some(d) = load.next_deadline() {
            wake = wake.min(d);
        }
        events.clear();
        load.poller()
            .wait(&mut events, Some(wake.saturating_duration_since(now)))
            .map_err(|e| format!("poller wait failed: {}", Plain(&e)))?;
        for ev in events.iter() {
            load.on_event(&mut meter, ev.key, ev.readable, ev.writable);
        }
        now = Instant::now();
        load.on_time(&mut meter, now);
        if let Some(p) = progress.as_mut() {
            p.draw(now, &clock, &meter);
        }
    };
    if let Some(p) = &progress {
        p.clear();
    }
    let cpu_end = cfg.server_pid.and_then(process_cpu);
    let mut out = outcome(meter, &clock, early_stop, load.unanswered());
    if let (Some(a), Some(b)) = (cpu_start, cpu_end) {
        out.server_cpu = Some(b.saturating_sub(a));
    }
    Ok(out)
}

/// The CPU time (user + system) process `pid` has used so far, from /proc/PID/stat (in clock
/// ticks, 10 ms on most systems); `None` if it cannot be read.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = stat_cpu_ticks(&stat)?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??;
    (hz > 0).then(|| Duration::from_secs_f64(ticks as f64 / hz as f64))
}

/// utime + stime (fields 14 and 15) of a /proc/PID/stat line. The command name (field 2) is
/// in parentheses and may hold spaces and parentheses itself: fields are counted after the
/// last ')'.
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11); // rest starts at field 3
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn outcome(m: Meter, clock: &Clock, early_stop: Option<String>, unanswered: u64) -> Outcome {
    let (requests, elapsed) = if m.measuring {
        (
            m.requests,
            Instant::now().min(clock.end) - clock.measure_start,
        )
    } else {
        (0, Duration::ZERO)
    };
    Outcome {
        requests,
        elapsed,
        hist: m.hist,
        errors: m.errors,
        first_error: m.first_error,
        early_stop,
        unanswered,
        server_cpu: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_from_a_stat_line() {
        let line = "4242 (echo (mux) x) S 1 4242 4242 0 -1 4194560 120 0 0 0 37 15 0 0 20 0 1 0";
        assert_eq!(stat_cpu_ticks(line), Some(52));
        assert_eq!(stat_cpu_ticks("4242 (x) S 1"), None);
        let me = process_cpu(std::process::id()).expect("our own /proc/PID/stat");
        assert!(me < Duration::from_secs(3600));
    }
}
