//! `--metrics` (SPEC §12): a small HTTP/1.1 responder for `GET /metrics` (the Prometheus text
//! format) and `GET /status` (one JSON object), served on the loop that owns the counters:
//! the one-process daemon's own loop, or with `--workers` the supervisor's (workers never
//! render text for it; the supervisor reads their shared slots).
//!
//! It is one more kind of connection on the reactor, with its own limits, since the
//! listener is attack surface next to the echo service:
//! - at most [`MAX_EXCHANGES`] connections at once; a new one beyond that sheds the one that
//!   has waited longest for a request (a slowloris costs its victims nothing but this table);
//! - a request head of at most 8 KiB (431), complete within 5 s of the wait's start (408);
//! - an answer is rendered only once a complete GET arrives, from a [`View`] the owning loop
//!   builds on demand: nothing is computed per echo event.
//!
//! The owner gives it a block of tokens (`base` for the listener, `base + 1 + i` for
//! connection `i`) and forwards their events; each of [`Http::on_event`] and
//! [`Http::on_timer`] returns when to call `on_timer` next.

use std::os::fd::OwnedFd;
use std::time::Instant;

use log::{debug, info, warn};

use crate::error::{Error, Plain};
use crate::event::interest;
use crate::event::reactor::{Backend, Interest, Token};
use crate::net::addr::ListenAddr;
use crate::net::listen::Endpoint;

mod exchange;
mod render;
mod workers;

pub use render::{View, WorkerView};
pub use workers::Generations;

use exchange::{Exchange, Page, Step};

/// Metrics connections open at once; the oldest waiter is shed for a new one beyond this.
pub const MAX_EXCHANGES: usize = 64;
/// Tokens an owner reserves for [`Http`]: the listener and every connection.
pub const TOKENS: usize = 1 + MAX_EXCHANGES;
/// Connections accepted per listener event, so a flood cannot hold the loop.
const ACCEPT_BURST: usize = 16;

/// Split the socket named `metrics` (`FileDescriptorName=metrics`) from the inherited echo
/// listeners. Only a metrics socket inherited: the echo listeners come from `--listen`.
pub fn split_inherited(
    named: Option<Vec<(OwnedFd, String)>>,
) -> (Option<Vec<OwnedFd>>, Option<OwnedFd>) {
    let Some(named) = named else {
        return (None, None);
    };
    let (mut echo, mut metrics) = (Vec::with_capacity(named.len()), None);
    for (fd, name) in named {
        if name == "metrics" && metrics.is_none() {
            metrics = Some(fd);
        } else {
            echo.push(fd);
        }
    }
    ((!echo.is_empty()).then_some(echo), metrics)
}

/// The metrics listener, if any: the inherited `metrics` socket (then `--metrics` is
/// ignored, as `--listen` is), or `--metrics ADDR` bound now.
pub fn open(
    addr: Option<&ListenAddr>,
    socket_mode: Option<u32>,
    inherited: Option<OwnedFd>,
) -> Result<Option<Http>, Error> {
    let listener = match (inherited, addr) {
        (Some(fd), _) => Endpoint::inherited(fd),
        (None, Some(addr)) => Endpoint::bind_with(addr, false, socket_mode)?,
        (None, None) => return Ok(None),
    };
    Ok(Some(Http::new(listener)))
}

/// The metrics listener and its connections.
pub struct Http {
    listener: Endpoint,
    base: usize,
    exchanges: Vec<Option<Exchange>>,
    /// The earliest deadline a timer was asked for and has not fired yet.
    armed: Option<Instant>,
    /// When the daemon started, in seconds since the Unix epoch.
    start_time: f64,
}

impl Http {
    /// Take `listener` (bound for `--metrics` or handed in as `metrics` by systemd).
    pub fn new(listener: Endpoint) -> Http {
        Http {
            listener,
            base: 0,
            exchanges: (0..MAX_EXCHANGES).map(|_| None).collect(),
            armed: None,
            start_time: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        }
    }

    /// Register the listener under tokens from `base` on, and log where it listens.
    pub fn register(&mut self, backend: &mut dyn Backend, base: usize) -> Result<(), Error> {
        self.base = base;
        backend
            .set_interest(
                self.listener.fd(),
                Token(base),
                Interest::NONE,
                Interest::READ,
            )
            .map_err(|source| Error::Listen {
                addr: self.listener.label().to_string(),
                source,
            })?;
        if crate::reload::adopted() {
            debug!("metrics on {} (handed over)", self.listener.label());
        } else {
            info!(
                "metrics on {}: GET /metrics, /status",
                self.listener.label()
            );
        }
        Ok(())
    }

    /// Is `token` one of ours?
    /// Write the listener and the start time for a reload's new image. Exchanges in
    /// flight are not handed over: their connections close with the old image.
    pub fn save(&self, w: &mut crate::reload::state::Writer) {
        self.listener.save(w);
        w.u64(self.start_time.to_bits());
    }

    /// The responder [`Http::save`] wrote, its listener adopted; not registered yet.
    pub fn adopt(r: &mut crate::reload::state::Reader<'_>) -> Result<Http, String> {
        let listener = Endpoint::adopt(r)?;
        let start_time = f64::from_bits(r.u64().map_err(|e| e.to_string())?);
        let mut http = Http::new(listener);
        http.start_time = start_time;
        Ok(http)
    }

    pub fn owns(&self, token: Token) -> bool {
        (self.base..self.base + TOKENS).contains(&token.0)
    }

    /// A forked worker's copy: never remove the socket file the supervisor owns.
    pub fn disown(&mut self) {
        self.listener.disown();
    }

    /// An event for one of our tokens. `view` is called only to answer a complete request.
    /// Returns when the owner should call [`Http::on_timer`] next, unless a timer it already
    /// set covers that.
    pub fn on_event(
        &mut self,
        backend: &mut dyn Backend,
        token: Token,
        now: Instant,
        view: &mut dyn FnMut() -> View,
    ) -> Option<Instant> {
        self.handle(backend, token, now, view);
        self.timer_wanted()
    }

    fn handle(
        &mut self,
        backend: &mut dyn Backend,
        token: Token,
        now: Instant,
        view: &mut dyn FnMut() -> View,
    ) {
        let i = token.0 - self.base;
        if i == 0 {
            return self.accept(backend, now);
        }
        let i = i - 1;
        let Some(x) = self.exchanges[i].as_mut() else {
            return;
        };
        let start_time = self.start_time;
        let mut page = |p: Page| {
            let v = View {
                start_time,
                pid: std::process::id(),
                ..view()
            };
            render::answer(p, &v)
        };
        let step = x.on_event(now, &mut page);
        self.settle(backend, i, step);
    }

    /// Time passed: answer 408 or close what is past its deadline. Returns when to call it
    /// next, as [`Http::on_event`] does.
    pub fn on_timer(&mut self, backend: &mut dyn Backend, now: Instant) -> Option<Instant> {
        if self.armed.is_some_and(|a| a <= now) {
            self.armed = None;
        }
        for i in 0..MAX_EXCHANGES {
            let Some(x) = self.exchanges[i].as_mut() else {
                continue;
            };
            if x.deadline() <= now {
                let step = x.on_deadline(now);
                self.settle(backend, i, step);
            }
        }
        self.timer_wanted()
    }

    /// When the owner should call [`Http::on_timer`] next, if no timer it already set for an
    /// earlier time covers it (timers are lazy: a stale one firing finds nothing to do).
    fn timer_wanted(&mut self) -> Option<Instant> {
        let next = self
            .exchanges
            .iter()
            .flatten()
            .map(Exchange::deadline)
            .min()?;
        if self.armed.is_some_and(|a| a <= next) {
            return None;
        }
        self.armed = Some(next);
        Some(next)
    }

    fn accept(&mut self, backend: &mut dyn Backend, now: Instant) {
        for _ in 0..ACCEPT_BURST {
            let fd = match crate::sys::accept(self.listener.fd()) {
                Ok((fd, _)) => fd,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    // EMFILE and friends: the connection waits in the backlog; echo clients
                    // matter more than a scrape, so no pause machinery here.
                    return debug!("metrics: accept: {}", Plain(&e));
                }
            };
            let i = match self.exchanges.iter().position(Option::is_none) {
                Some(i) => i,
                None => {
                    let victim = self.victim();
                    debug!("metrics: {MAX_EXCHANGES} connections open: shedding the oldest");
                    self.close(backend, victim);
                    victim
                }
            };
            let mut x = Exchange::new(fd, now);
            let token = Token(self.base + 1 + i);
            if let Err(e) = backend.set_interest(x.fd(), token, Interest::NONE, Interest::READ) {
                warn!("metrics: cannot watch a connection: {}", Plain(&e));
                continue;
            }
            x.registered = Interest::READ;
            self.exchanges[i] = Some(x);
        }
    }

    /// The connection to shed for a new one: the one that has waited longest for a request,
    /// sparing those with an answer on its way when there is any other.
    fn victim(&self) -> usize {
        let key = |(_, x): &(usize, &Exchange)| (x.is_writing(), x.since);
        self.exchanges
            .iter()
            .enumerate()
            .filter_map(|(i, x)| x.as_ref().map(|x| (i, x)))
            .min_by_key(key)
            .map_or(0, |(i, _)| i)
    }

    /// After a handler: close, or bring the poller's interest up to date.
    fn settle(&mut self, backend: &mut dyn Backend, i: usize, step: Step) {
        let Some(x) = self.exchanges[i].as_mut() else {
            return;
        };
        if step == Step::Close {
            return self.close(backend, i);
        }
        let (token, fd, wanted) = (Token(self.base + 1 + i), x.fd(), x.wanted());
        let synced = interest::sync(&mut x.registered, wanted, |old, new| {
            backend.set_interest(fd, token, old, new)
        });
        if let Err(e) = synced {
            debug!("metrics: poller: {}", Plain(&e));
            self.close(backend, i);
        }
    }

    /// Deregister, then close (the contract's order).
    fn close(&mut self, backend: &mut dyn Backend, i: usize) {
        if let Some(x) = self.exchanges[i].take() {
            if !x.registered.is_none() {
                let token = Token(self.base + 1 + i);
                let _ = backend.set_interest(x.fd(), token, x.registered, Interest::NONE);
            }
        }
    }
}
