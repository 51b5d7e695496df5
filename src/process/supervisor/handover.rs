//! The supervisor's part of a reload state (`SUPV`, docs/state-format.md) and the worker's
//! (`WRKR`): what the new image needs to be the same supervisor, or the same worker.
//!
//! The supervisor hands over its worker table (pids, numbers, start times, back-offs,
//! pending replacements), the shared region's and the per-source table's memfds, every
//! listening socket it keeps for its workers, the metrics listener, the per-worker history of
//! the metrics, its reload count and the reload under way. Its children stay its children
//! across the execve (the kernel keeps the parent link), so `waitpid` and SIGCHLD go on; a
//! worker that ended while the supervisor was in its exec is reaped by the new image's first
//! look. systemd's variables go back into the environment for the new image to read again.

use std::time::Instant;

use log::debug;
use nix::unistd::Pid;

use super::life::Life;
use super::reload::Reloading;
use super::{report, Supervisor, Worker};
use crate::error::Error;
use crate::net::listen::group::Endpoints;
use crate::policy::access::SourceTable;
use crate::reload::state::{self, Reader, Writer};
use crate::serve::metrics::Generations;
use crate::shared::{Region, REASONS};

/// The log lines stderr had not taken yet (the same as the serving loop's).
pub(super) const LOGS: state::Tag = *b"LOGS";
/// The supervisor's section.
pub(super) const SUPERVISOR: state::Tag = *b"SUPV";
/// The worker's section.
pub(crate) const WORKER: state::Tag = *b"WRKR";

fn err(e: state::Error) -> String {
    e.to_string()
}

impl Supervisor {
    /// Write the `SUPV` section; `r` is the reload under way (it completes in the new image).
    pub(super) fn save(&self, r: &Reloading, w: &mut Writer) {
        w.section(SUPERVISOR, |w| {
            w.usize(self.workers.len());
            w.u64(self.reloads);
            w.instant(self.started);
            w.instant(self.judged_from);
            w.bool(self.ready_sent);
            w.instant(r.began);
            w.bool(r.again);
            w.usize(r.reloaded);
            w.usize(r.lost);
            for (i, seat) in self.workers.iter().enumerate() {
                w.u32(seat.pid.map_or(0, |p| p.as_raw() as u32));
                w.bool(seat.wedged);
                seat.life.save(w);
                w.opt_instant(seat.respawn_at);
                for (conns, grams) in self.refusals_seen[i] {
                    w.u64(conns);
                    w.u64(grams);
                }
            }
            self.generations.save(w);
            use std::os::fd::AsRawFd;
            w.fd(self.region.fd().as_raw_fd());
            w.bool(self.table.is_some());
            if let Some(t) = &self.table {
                t.save(w);
            }
            self.listeners.save(w);
            w.bool(self.http.is_some());
            if let Some(h) = &self.http {
                h.save(w);
            }
        });
    }
}

/// What the new image's supervisor is made of, read from `SUPV`.
pub(super) struct Adopted {
    pub reloads: u64,
    pub started: Instant,
    pub judged_from: Instant,
    pub ready_sent: bool,
    pub reloading: Reloading,
    pub workers: Vec<Worker>,
    pub refusals_seen: Vec<report::Seen>,
    pub generations: Generations,
    pub region: &'static Region,
    pub table: Option<SourceTable>,
    pub listeners: Endpoints,
    pub http: Option<crate::serve::metrics::Http>,
}

/// Read the `SUPV` section written for `config`'s command line (which a reload keeps).
pub(super) fn adopt(config: &crate::config::Config, r: &mut Reader<'_>) -> Result<Adopted, String> {
    let mut s = r.section(SUPERVISOR).map_err(err)?;
    let n = s.usize().map_err(err)?;
    if n != config.workers {
        return Err(format!(
            "a supervisor of {n} workers handed over to --workers {}",
            config.workers
        ));
    }
    let reloads = s.u64().map_err(err)?;
    let started = s.instant().map_err(err)?;
    let judged_from = s.instant().map_err(err)?;
    let ready_sent = s.bool().map_err(err)?;
    let reloading = Reloading {
        began: s.instant().map_err(err)?,
        again: s.bool().map_err(err)?,
        reloaded: s.usize().map_err(err)?,
        lost: s.usize().map_err(err)?,
        todo: Vec::new(),
        current: None,
    };
    let mut workers = Vec::with_capacity(n);
    let mut refusals_seen = Vec::with_capacity(n);
    for _ in 0..n {
        let pid = s.u32().map_err(err)?;
        let wedged = s.bool().map_err(err)?;
        let life = Life::adopt(&mut s).map_err(err)?;
        let respawn_at = s.opt_instant().map_err(err)?;
        let mut seen: report::Seen = [(0, 0); REASONS];
        for cell in seen.iter_mut() {
            *cell = (s.u64().map_err(err)?, s.u64().map_err(err)?);
        }
        workers.push(Worker {
            pid: (pid != 0).then(|| Pid::from_raw(pid as i32)),
            life,
            wedged,
            respawn_at,
        });
        refusals_seen.push(seen);
    }
    let generations = Generations::adopt(n, &mut s).map_err(err)?;
    let fd = state::adopt(s.fd().map_err(err)?)
        .map_err(|e| format!("shared region: {}", crate::error::Plain(&e)))?;
    let region =
        Region::adopt(fd).map_err(|e| format!("shared region: {}", crate::error::Plain(&e)))?;
    if region.workers() != n {
        return Err(format!(
            "a shared region of {} workers handed over, {n} expected",
            region.workers()
        ));
    }
    let policy = &config.access;
    let table = match s.bool().map_err(err)? {
        true => Some(SourceTable::adopt(
            policy.limits,
            policy.table_size(),
            n,
            &mut s,
        )?),
        false => None,
    };
    let listeners = Endpoints::adopt(n, &mut s)?;
    let http = match s.bool().map_err(err)? {
        true => Some(crate::serve::metrics::Http::adopt(&mut s)?),
        false => None,
    };
    s.done().map_err(err)?;
    debug!("adopted the supervisor's state: {n} workers");
    Ok(Adopted {
        reloads,
        started,
        judged_from,
        ready_sent,
        reloading,
        workers,
        refusals_seen,
        generations,
        region,
        table,
        listeners,
        http,
    })
}

/// The worker's own part, right after the shape section: its number, its supervisor and the
/// shared region. Everything else (listeners, connections, the per-source table, counters) is
/// written by the serving loop as for one process.
#[derive(Clone, Copy)]
pub(crate) struct WorkerShape {
    pub number: usize,
    pub supervisor: Pid,
    pub region: &'static Region,
}

impl WorkerShape {
    /// This worker's seat in the shared region.
    pub(crate) fn seat(&self) -> crate::shared::Seat {
        self.region.seat(self.number)
    }

    /// Write the `WRKR` section.
    pub(crate) fn save(&self, w: &mut Writer) {
        use std::os::fd::AsRawFd;
        w.section(WORKER, |w| {
            w.usize(self.number);
            w.u32(self.supervisor.as_raw() as u32);
            w.fd(self.region.fd().as_raw_fd());
        });
    }

    /// Read the `WRKR` section.
    pub(crate) fn adopt(r: &mut Reader<'_>) -> Result<WorkerShape, String> {
        let mut s = r.section(WORKER).map_err(err)?;
        let number = s.usize().map_err(err)?;
        let supervisor = Pid::from_raw(s.u32().map_err(err)? as i32);
        let fd = state::adopt(s.fd().map_err(err)?)
            .map_err(|e| format!("shared region: {}", crate::error::Plain(&e)))?;
        let region =
            Region::adopt(fd).map_err(|e| format!("shared region: {}", crate::error::Plain(&e)))?;
        if !(1..=region.workers()).contains(&number) {
            return Err(format!(
                "worker {number} of a shared region for {} workers",
                region.workers()
            ));
        }
        s.done().map_err(err)?;
        Ok(WorkerShape {
            number,
            supervisor,
            region,
        })
    }
}

/// An error adopting a state, as the daemon reports it (exit 1).
pub(crate) fn adopt_error(what: String) -> Error {
    Error::io("cannot adopt the reload state", std::io::Error::other(what))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::Counter;
    use std::time::Duration;

    /// A worker's section round-trips: the same number and supervisor, and the region
    /// mapped again from its memfd is the same memory.
    #[test]
    fn a_worker_section_round_trips_onto_the_same_region() {
        let region = Region::map(3, 0).unwrap();
        region.seat(2).slot.add(Counter::Accepted, 5);
        let shape = WorkerShape {
            number: 2,
            supervisor: Pid::from_raw(4242),
            region,
        };
        let mut w = Writer::new();
        state::Shape::Worker.write(&mut w);
        shape.save(&mut w);
        let (bytes, fds) = w.finish();
        assert_eq!(fds, [region.fd().as_raw_fd()]);
        // The new image adopts (and so owns) the descriptor: hand it a copy of ours.
        let copy = region.fd().try_clone_to_owned().unwrap();
        let bytes = with_fd(&bytes, fds[0], copy.as_raw_fd());
        std::mem::forget(copy);
        let mut r = Reader::new(&bytes).unwrap();
        assert_eq!(state::Shape::read(&mut r).unwrap(), state::Shape::Worker);
        let back = WorkerShape::adopt(&mut r).unwrap();
        assert_eq!((back.number, back.supervisor), (2, Pid::from_raw(4242)));
        assert_eq!(back.seat().slot.get(Counter::Accepted), 5);
        back.seat().reload_completed();
        assert_eq!(region.slots()[1].reloads().done, 1, "one set of pages");
    }

    #[test]
    fn a_worker_number_outside_the_region_is_an_error() {
        let region = Region::map(2, 0).unwrap();
        let shape = WorkerShape {
            number: 3,
            supervisor: Pid::from_raw(1),
            region,
        };
        let mut w = Writer::new();
        shape.save(&mut w);
        let (bytes, fds) = w.finish();
        let copy = region.fd().try_clone_to_owned().unwrap();
        let bytes = with_fd(&bytes, fds[0], copy.as_raw_fd());
        std::mem::forget(copy);
        let mut r = Reader::new(&bytes).unwrap();
        let e = WorkerShape::adopt(&mut r).err().unwrap();
        assert!(
            e.contains("worker 3 of a shared region for 2 workers"),
            "{e}"
        );
    }

    /// The back-off and start time, and the per-worker history, come back as they were.
    #[test]
    fn life_and_generations_round_trip() {
        let t = Instant::now();
        let mut life = Life::new(t);
        life.started(t + Duration::from_secs(1));
        let first = life.ended(t + Duration::from_secs(2));
        let mut g = Generations::new(2);
        g.spawned(1);
        g.spawned(2);
        g.spawned(2);
        let mut w = Writer::new();
        life.save(&mut w);
        g.save(&mut w);
        let (bytes, _) = w.finish();
        let mut r = Reader::new(&bytes).unwrap();
        let mut back = Life::adopt(&mut r).unwrap();
        let g2 = Generations::adopt(2, &mut r).unwrap();
        assert!(r.is_empty());
        // The next delay doubles from where the old image left it.
        let mut orig = life;
        let now = t + Duration::from_secs(3);
        assert_eq!(back.ended(now), orig.ended(now));
        assert_eq!(first, Duration::from_millis(100));
        assert_eq!(format!("{g2:?}"), format!("{g:?}"));
        let mut r = Reader::new(&bytes).unwrap();
        Life::adopt(&mut r).unwrap();
        assert!(
            Generations::adopt(3, &mut r).is_err(),
            "a worker count that changed"
        );
    }

    /// `bytes` with the descriptor number `from` replaced by `to` (the state names its
    /// descriptors by number, as the new image finds them).
    fn with_fd(bytes: &[u8], from: i32, to: i32) -> Vec<u8> {
        let (a, b) = ((from as u32).to_le_bytes(), (to as u32).to_le_bytes());
        let mut out = bytes.to_vec();
        let at = out
            .windows(4)
            .rposition(|w| w == a)
            .expect("the descriptor is in the state");
        out[at..at + 4].copy_from_slice(&b);
        out
    }

    use std::os::fd::AsRawFd;
}
