//! SIGHUP in the one-process daemon (SPEC §13): the check, the handover and, in the new
//! image, the adoption. The order of a reload is in docs/state-format.md.
//!
//! ```text
//!  SIGHUP ─► draining? ── yes ─► "reload refused: draining"
//!     │ no; a reload already running? ── yes ─► coalesced into it
//!     ▼
//!  check child (binary at the started path, same arguments, ECHO_MUX_RELOAD_CHECK)
//!     │ its output pipe in the backend; 10 s at most; the loop serves on meanwhile
//!     ├── no / cannot start / too slow ─► "reload refused: REASON", serve on
//!     ▼ yes (within one turn from here)
//!  save every owner ─► memfd ─► CLOEXEC off ─► signals blocked ─► RELOADING=1 ─► execve
//!     │ execve failed: everything undone, "reload refused: cannot execute PATH: …"
//!     ▼
//!  new image: state read, descriptors adopted, handlers, backend, READY=1, "reloaded in …"
//! ```

use std::time::{Duration, Instant};

use log::{debug, error, info};

use super::{Server, Target, Timer};
use crate::error::Plain;
use crate::event::reactor::Interest;
use crate::event::timer::later;
use crate::net::listen::Endpoint;
use crate::reload::check::{Check, Verdict};
use crate::reload::state::{self, Reader, Writer};
use crate::serve::conn::{Conn, Step};

/// While the check's output has ended but its exit is not reaped yet: look again this soon.
const REAP_AGAIN: Duration = Duration::from_millis(5);

/// Section tags of the one-process daemon's state, in the order they are written (after
/// the shape section).
mod tag {
    use crate::reload::state::Tag;
    /// Log lines stderr had not taken yet.
    pub const LOGS: Tag = *b"LOGS";
    /// The loop's own: when the handover began, the next connection id.
    pub const LOOP: Tag = *b"LOOP";
    /// The backend's kernel object, if it has one (epoll), with its registrations.
    pub const BACKEND: Tag = *b"BKND";
    /// Stream listeners, then UDP sockets.
    pub const LISTEN: Tag = *b"LSTN";
    /// The `--metrics` listener, if any.
    pub const HTTP: Tag = *b"HTTP";
    /// The per-source table, if any.
    pub const SOURCES: Tag = *b"SRCS";
    /// The stats counters, the start, the reloads.
    pub const STAT: Tag = *b"STAT";
    /// Each UDP socket's reply queue.
    pub const UDP: Tag = *b"UDPQ";
    /// The connections.
    pub const CONNS: Tag = *b"CONN";
}

/// A reload in progress: the check child, and how many SIGHUPs it stands for.
pub(super) struct Reloading {
    check: Check,
    registered: bool,
    coalesced: u32,
}

impl Server {
    /// SIGHUP: start a reload, unless one is running (coalesced) or the drain has begun.
    pub(super) fn on_hangup(&mut self) {
        if self.draining {
            self.reload_refused_in_slot();
            error!("reload refused: draining");
            return;
        }
        if let Some(r) = self.reloading.as_mut() {
            r.coalesced += 1;
            info!("SIGHUP received: a reload is already in progress; this one joins it");
            return;
        }
        let origin = crate::reload::origin();
        info!(
            "SIGHUP received: reloading; checking {}",
            origin.path.display()
        );
        let check = match Check::start(origin, self.now) {
            Ok(c) => c,
            Err(why) => {
                self.reload_refused_in_slot();
                return error!("reload refused: {why}");
            }
        };
        // With --workers: the supervisor waits, and does not judge this worker wedged.
        if let Some(w) = &self.worker {
            w.seat().reload_begins(self.now);
        }
        let registered = self
            .backend
            .set_interest(
                check.fd(),
                Target::Reload.into(),
                Interest::NONE,
                Interest::READ,
            )
            .map_err(|e| debug!("cannot watch the check's output: {}", Plain(&e)))
            .is_ok();
        let deadline = check.deadline;
        self.reloading = Some(Reloading {
            check,
            registered,
            coalesced: 0,
        });
        self.timers.add(deadline, Timer::Reload);
        if !registered {
            self.timers.add(later(self.now, REAP_AGAIN), Timer::Reload);
        }
    }

    /// The check's output pipe is readable.
    pub(super) fn on_check_output(&mut self) {
        if let Some(r) = self.reloading.as_mut() {
            r.check.on_readable();
        }
        self.check_progress();
    }

    /// `Timer::Reload`: the check's deadline, or a look for its exit.
    pub(super) fn on_reload_timer(&mut self) {
        let Some(r) = self.reloading.as_mut() else {
            return;
        };
        if !r.registered {
            r.check.on_readable();
        }
        if self.now >= r.check.deadline {
            let secs = crate::reload::check::TIMEOUT.as_secs();
            self.cancel_reload();
            self.reload_refused_in_slot();
            error!("reload refused: the check of the new binary did not answer within {secs}s");
            return;
        }
        self.check_progress();
    }

    /// Has the check answered? Yes: hand over now. No: refuse. Not yet: look again soon.
    fn check_progress(&mut self) {
        let Some(r) = self.reloading.as_mut() else {
            return;
        };
        if r.check.output_done() && r.registered {
            let fd = r.check.fd();
            let _ = self.backend.set_interest(
                fd,
                Target::Reload.into(),
                Interest::READ,
                Interest::NONE,
            );
            r.registered = false;
        }
        match r.check.finished() {
            None if r.check.output_done() || !r.registered => {
                self.timers.add(later(self.now, REAP_AGAIN), Timer::Reload);
            }
            None => {}
            Some(verdict) => {
                let r = self.reloading.take().expect("checked above");
                if r.coalesced > 0 {
                    info!(
                        "{} more SIGHUP during this reload: one reload for all",
                        r.coalesced
                    );
                }
                match verdict {
                    Verdict::No(why) => {
                        self.reload_refused_in_slot();
                        error!("reload refused: {why}")
                    }
                    Verdict::Yes(line) => {
                        debug!("check: {line}");
                        self.handover();
                    }
                }
            }
        }
    }

    /// Stop a reload in progress (the drain, SIGQUIT): the check child is killed.
    pub(super) fn cancel_reload(&mut self) {
        if let Some(r) = self.reloading.take() {
            if r.registered {
                let _ = self.backend.set_interest(
                    r.check.fd(),
                    Target::Reload.into(),
                    Interest::READ,
                    Interest::NONE,
                );
            }
            debug!("stopping the reload check (pid {})", r.check.pid());
            r.check.kill();
            self.reload_refused_in_slot();
        }
    }

    /// With --workers: tell the supervisor (through the slot) that this reload will not
    /// complete; the old image serves on.
    fn reload_refused_in_slot(&self) {
        if let Some(w) = &self.worker {
            w.seat().reload_refused();
        }
    }

    /// The check said yes: save everything and execute the new binary. Returns only if the
    /// execve failed, with nothing changed.
    fn handover(&mut self) {
        let began = Instant::now();
        let origin = crate::reload::origin();
        self.status.reloading();
        debug!(
            "handing over {} to {}",
            super::connections(self.conns.open()),
            origin.path.display()
        );
        // No log line between here and the execve: the lines stderr has not taken yet go
        // with the state, and the new image writes them before its own.
        let mut w = Writer::new();
        match &self.worker {
            Some(shape) => {
                state::Shape::Worker.write(&mut w);
                shape.save(&mut w);
            }
            None => state::Shape::OneProcess.write(&mut w),
        }
        w.section(tag::LOGS, |w| w.bytes(&crate::logging::pending()));
        self.save(&mut w, began);
        let (bytes, fds) = w.finish();
        let signals = &self.signals;
        let e = crate::reload::exec::handover(origin, &bytes, &fds, || signals.repost());
        self.status.reload_failed();
        self.reload_refused_in_slot();
        error!(
            "reload refused: cannot execute {}: {}",
            origin.path.display(),
            Plain(&e)
        );
    }

    /// Write every owner's state (the shape section is written by the caller).
    fn save(&self, w: &mut Writer, began: Instant) {
        w.section(tag::LOOP, |w| {
            w.instant(began);
            w.u64(self.conns.next_id());
        });
        w.section(tag::BACKEND, |w| {
            let fd = self.backend.handover_fd();
            w.bool(fd.is_some());
            if let Some(fd) = fd {
                w.fd(fd);
            }
        });
        w.section(tag::LISTEN, |w| {
            let stream: Vec<&Endpoint> = self.listeners.iter().flatten().collect();
            let udp = self.udp.sockets();
            w.usize(stream.len() + udp.len());
            for l in stream {
                l.save(w);
            }
            for s in udp {
                s.endpoint().save(w);
            }
        });
        w.section(tag::HTTP, |w| {
            w.bool(self.http.is_some());
            if let Some(http) = &self.http {
                http.save(w);
            }
        });
        w.section(tag::SOURCES, |w| {
            let table = self.access.table();
            w.bool(table.is_some());
            if let Some(t) = table {
                t.save(w);
            }
        });
        w.section(tag::STAT, |w| self.stats.save(w));
        w.section(tag::UDP, |w| {
            w.usize(self.udp.sockets().len());
            for s in self.udp.sockets() {
                s.save_queue(w);
            }
        });
        w.section(tag::CONNS, |w| {
            w.usize(self.conns.open());
            for (slot, c) in self.conns.live() {
                c.save(slot, w);
            }
        });
    }

    /// In the new image, after [`Server::new`] registered the adopted listeners: take over
    /// the counters, the UDP queues and the connections, each registered and its timers
    /// queued.
    pub fn adopt(&mut self, handed: &mut Handed<'_>) -> Result<(), String> {
        let r = &mut handed.rest;
        let s = |e: state::Error| e.to_string();
        let mut stat = r.section(tag::STAT).map_err(s)?;
        self.stats.restore(&mut stat).map_err(s)?;
        let mut udp = r.section(tag::UDP).map_err(s)?;
        let n = udp.count(8).map_err(s)?;
        if n != self.udp.sockets().len() {
            return Err(format!(
                "{n} UDP queues handed over for {} sockets",
                self.udp.sockets().len()
            ));
        }
        for i in 0..n {
            self.with_udp(i, |sock, _, _| sock.load_queue(&mut udp))?;
        }
        let mut conns = r.section(tag::CONNS).map_err(s)?;
        let n = conns.count(8).map_err(s)?;
        self.conns.set_next_id(handed.next_id);
        for _ in 0..n {
            let (slot, mut conn) = Conn::load(&mut conns).map_err(s)?;
            if !handed.registered {
                conn.forget_registration();
            }
            self.adopt_conn(slot, conn);
        }
        self.conns.adopted();
        Ok(())
    }

    /// One adopted connection: into the slab, registered, its timers queued (a header's
    /// deadline counts from its accept; the idle timer checks the idle clock when it fires).
    fn adopt_conn(&mut self, slot: Option<usize>, conn: Conn) {
        let (id, header, opened) = (conn.id, conn.header_pending(), conn.opened);
        let last_active = conn.idle_since();
        let wanted = slot;
        let slot = self.conns.insert_adopted(slot, conn);
        if wanted != Some(slot) {
            // Not in the slot its token in a handed-over backend names: registered anew
            // (an add that finds it there updates the token).
            if let Some(c) = self.conns.at(slot) {
                c.forget_registration();
            }
        }
        if header {
            let due = later(opened, crate::policy::proxy::TIMEOUT);
            self.timers.add(due, Timer::Header { slot, id });
        } else if let Some(idle) = self.config.idle_timeout {
            let due = later(last_active.unwrap_or(self.now), idle);
            self.timers.add(due, Timer::Idle { slot, id });
        }
        self.with_conn(slot, |_, _, _| Step::Keep);
    }

    /// The handed-over state's summary line, once everything is registered.
    pub fn log_reloaded(&self, handed: &Handed<'_>) {
        let pause = Instant::now().saturating_duration_since(handed.began);
        let queued = self.udp.queued();
        let udp = if self.udp.exists() {
            format!(", {queued} UDP replies queued")
        } else {
            String::new()
        };
        info!(
            "reloaded in {} ms: echo-mux {}, {}{udp} (state {}, reload {})",
            pause.as_millis(),
            crate::version::version(),
            super::connections(self.conns.open()),
            size(handed.size),
            self.stats.reloads()
        );
    }
}

/// `812 B`, `3.4 KiB`, `1.2 MiB`.
fn size(n: usize) -> String {
    match n {
        n if n < 1024 => format!("{n} B"),
        n if n < 1024 * 1024 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{:.1} MiB", n as f64 / (1024.0 * 1024.0)),
    }
}

/// A state handed to this image, read as far as what `lib.rs` needs to build the server;
/// [`Server::adopt`] reads the rest.
pub struct Handed<'a> {
    /// The stream listeners, then the UDP sockets, adopted.
    pub listeners: Vec<Endpoint>,
    /// The `--metrics` responder, if there was one.
    pub http: Option<crate::serve::metrics::Http>,
    /// The per-source table, if there was one, mapped again (a worker's handle for a
    /// worker).
    pub table: Option<crate::policy::access::SourceTable>,
    /// A worker of `--workers`: who it is (its `WRKR` section).
    pub worker: Option<crate::process::supervisor::handover::WorkerShape>,
    /// The old image's epoll instance, if it had one.
    pub epoll: Option<std::os::fd::OwnedFd>,
    /// The server's backend is the handed-over instance: the connections' registrations
    /// in it stand (set by the caller once it chose the backend).
    pub registered: bool,
    began: Instant,
    next_id: u64,
    size: usize,
    rest: Reader<'a>,
}

impl<'a> Handed<'a> {
    /// Read a one-process state up to the connections: logs (queued for stderr at once),
    /// listeners, metrics, the per-source table (for `policy`).
    pub fn read(
        bytes: &'a [u8],
        policy: &crate::policy::access::Policy,
    ) -> Result<Handed<'a>, String> {
        let s = |e: state::Error| e.to_string();
        let mut r = Reader::new(bytes).map_err(s)?;
        let worker = match state::Shape::read(&mut r).map_err(s)? {
            state::Shape::OneProcess => None,
            state::Shape::Worker => Some(crate::process::supervisor::handover::WorkerShape::adopt(
                &mut r,
            )?),
            state::Shape::Supervisor => {
                return Err("a supervisor's state handed to a serving loop".into())
            }
        };
        // Version 1 had no log section; from version 2 it follows the shape.
        if r.version() >= 2 {
            let mut logs = r.section(tag::LOGS).map_err(s)?;
            crate::logging::requeue(logs.bytes().map_err(s)?);
        }
        let mut lp = r.section(tag::LOOP).map_err(s)?;
        let began = lp.instant().map_err(s)?;
        let next_id = lp.u64().map_err(s)?;
        let epoll = if r.version() >= 2 {
            let mut b = r.section(tag::BACKEND).map_err(s)?;
            match b.bool().map_err(s)? {
                true => {
                    let raw = b.fd().map_err(s)?;
                    let fd = state::adopt(raw)
                        .map_err(|e| format!("epoll instance (fd {raw}): {}", Plain(&e)))?;
                    Some(fd)
                }
                false => None,
            }
        } else {
            None
        };
        let mut ls = r.section(tag::LISTEN).map_err(s)?;
        let n = ls.count(4).map_err(s)?;
        let mut listeners = Vec::with_capacity(n);
        for _ in 0..n {
            listeners.push(Endpoint::adopt(&mut ls)?);
        }
        let mut h = r.section(tag::HTTP).map_err(s)?;
        let http = if h.bool().map_err(s)? {
            Some(crate::serve::metrics::Http::adopt(&mut h)?)
        } else {
            None
        };
        let mut t = r.section(tag::SOURCES).map_err(s)?;
        let table = if t.bool().map_err(s)? {
            let (workers, number) = worker.map_or((1, 1), |w| (w.region.workers(), w.number));
            let table = crate::policy::access::SourceTable::adopt(
                policy.limits,
                policy.table_size(),
                workers,
                &mut t,
            )?;
            Some(table.for_worker(number))
        } else {
            None
        };
        let rest = r;
        Ok(Handed {
            listeners,
            http,
            table,
            worker,
            epoll,
            registered: false,
            began,
            next_id,
            size: bytes.len(),
            rest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reload::state::VERSION;

    /// A listening socket saved as an endpoint; the saving copy is forgotten, so that the
    /// adopted one is the descriptor's only owner.
    fn listener(w: &mut Writer) {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let e = Endpoint::inherited(std::os::fd::OwnedFd::from(tcp));
        e.save(w);
        std::mem::forget(e);
    }

    /// What a version 1 writer wrote: no shape, no log lines; the owners' sections.
    fn v1_state() -> Vec<u8> {
        let mut w = Writer::with_version(1);
        w.section(tag::LOOP, |w| {
            w.instant(Instant::now());
            w.u64(41);
        });
        w.section(tag::LISTEN, |w| {
            w.usize(1);
            listener(w);
        });
        w.section(tag::HTTP, |w| w.bool(false));
        w.section(tag::SOURCES, |w| w.bool(false));
        w.section(tag::STAT, |w| w.usize(0));
        w.finish().0
    }

    #[test]
    fn a_version_1_state_is_read() {
        let bytes = v1_state();
        let policy = crate::policy::access::Policy::default();
        let mut handed = Handed::read(&bytes, &policy).unwrap();
        assert_eq!(handed.listeners.len(), 1);
        assert!(handed.http.is_none() && handed.table.is_none());
        assert_eq!(handed.next_id, 41);
        assert_eq!(handed.rest.version(), 1);
        // The server reads on from the counters.
        handed.rest.section(tag::STAT).unwrap();
    }

    #[test]
    fn a_current_state_needs_its_shape_and_log_sections() {
        let mut w = Writer::new();
        state::Shape::OneProcess.write(&mut w);
        w.section(tag::LOGS, |w| w.bytes(b""));
        w.section(tag::LOOP, |w| {
            w.instant(Instant::now());
            w.u64(0);
        });
        w.section(tag::BACKEND, |w| w.bool(false));
        w.section(tag::LISTEN, |w| {
            w.usize(1);
            listener(w);
        });
        w.section(tag::HTTP, |w| w.bool(false));
        w.section(tag::SOURCES, |w| w.bool(false));
        let bytes = w.finish().0;
        let policy = crate::policy::access::Policy::default();
        let handed = Handed::read(&bytes, &policy).unwrap();
        assert_eq!(handed.rest.version(), VERSION);
        // A version 2 state written the version 1 way is refused, not misread.
        let mut w = Writer::new();
        w.section(tag::LOOP, |w| {
            w.instant(Instant::now());
            w.u64(0);
        });
        let bytes = w.finish().0;
        let e = Handed::read(&bytes, &policy).err().unwrap();
        assert!(e.contains("SHPE"), "{e}");
    }
}
