//! Which sockets each process serves. One process: every `--listen` address bound once (or
//! systemd's sockets). The supervisor's (SPEC §8): bound or adopted once, before any fork, and
//! kept open by the supervisor for as long as it serves, so connections queued for a worker
//! that died wait for its replacement instead of being reset.
//!
//! - A TCP or UDP address echo-mux binds itself becomes one SO_REUSEPORT socket per worker:
//!   the kernel spreads connections and senders over the workers by a hash of the peer, with no lock and no
//!   thundering herd. Worker K serves socket K of each group.
//! - An inherited (socket-activated) or unix listener is one socket shared by every worker,
//!   registered exclusively (EPOLLEXCLUSIVE with epoll; poll and select workers all wake and
//!   the losers of the accept race see EAGAIN, silently).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{OwnedFd, RawFd};

use super::activation::activated;
use super::{select_can_watch, Endpoint};
use crate::error::Error;
use crate::net::addr::ListenAddr;

/// What the command line asks to listen on.
pub struct Wanted<'a> {
    /// `--listen` addresses.
    pub listen: &'a [ListenAddr],
    /// `--listen` was given (and is ignored under socket activation, which says so).
    pub given: bool,
    /// `--socket-mode` for unix socket files created here.
    pub socket_mode: Option<u32>,
}

/// One process's sockets: systemd's, or each `--listen` address bound once.
pub fn open(wanted: &Wanted<'_>, inherited: Option<Vec<OwnedFd>>) -> Result<Vec<Endpoint>, Error> {
    match inherited {
        Some(fds) => Ok(activated(fds, wanted.given, wanted.socket_mode)),
        None => wanted
            .listen
            .iter()
            .map(|addr| Endpoint::bind_with(addr, false, wanted.socket_mode))
            .collect(),
    }
}

/// Every listening socket of the daemon, sorted by who serves it.
pub struct Endpoints {
    /// `own[k - 1]`: worker K's socket of each SO_REUSEPORT group.
    own: Vec<Vec<Endpoint>>,
    /// Served by every worker.
    shared: Vec<Endpoint>,
    /// Is one of them a UDP socket? (Kept after [`Endpoints::close`], for the stats line.)
    datagram: bool,
}

impl Endpoints {
    /// Adopt systemd's sockets, or bind `--listen` for `workers` workers. Any failure is
    /// returned before a single worker exists (SPEC §8: errors exit as §2, before any fork).
    pub fn open(
        wanted: &Wanted<'_>,
        workers: usize,
        inherited: Option<Vec<OwnedFd>>,
    ) -> Result<Endpoints, Error> {
        let mut all = Endpoints {
            own: (0..workers).map(|_| Vec::new()).collect(),
            shared: Vec::new(),
            datagram: false,
        };
        if let Some(fds) = inherited {
            for mut l in activated(fds, wanted.given, wanted.socket_mode) {
                l.set_shared();
                all.datagram |= l.is_datagram();
                all.shared.push(l);
            }
            return Ok(all);
        }
        for addr in wanted.listen {
            let (sa, kind): (_, fn(SocketAddr) -> ListenAddr) = match addr {
                ListenAddr::Tcp(sa) => (*sa, ListenAddr::Tcp),
                ListenAddr::Udp(sa) => {
                    all.datagram = true;
                    (*sa, ListenAddr::Udp)
                }
                ListenAddr::Unix(_) => {
                    let mut l = Endpoint::bind_with(addr, false, wanted.socket_mode)?;
                    l.set_shared();
                    all.shared.push(l);
                    continue;
                }
            };
            // TCP and UDP alike: one SO_REUSEPORT socket per worker.
            let bind = |sa, reuseport| Endpoint::bind_with(&kind(sa), reuseport, None);
            let local = |l: &Endpoint| {
                l.local_ip_addr()
                    .ok_or_else(|| io::Error::other("not an IP socket"))
            };
            let group = reuseport_group(sa, workers, bind, local)?;
            for (k, l) in group.into_iter().enumerate() {
                all.own[k].push(l);
            }
        }
        Ok(all)
    }

    /// In a freshly forked worker K: its own sockets and the shared ones. The copies of the
    /// other workers' sockets are closed here (the supervisor keeps its own), and no copy in
    /// a worker will ever remove a socket file: that is the supervisor's job.
    pub fn for_worker(self, k: usize) -> Vec<Endpoint> {
        let mut mine = Vec::new();
        for (i, group) in self.own.into_iter().enumerate() {
            for mut l in group {
                l.disown();
                if i + 1 == k {
                    mine.push(l);
                }
            }
        }
        for mut l in self.shared {
            l.disown();
            mine.push(l);
        }
        mine
    }

    /// With `--backend select`, every worker's descriptors must be below FD_SETSIZE.
    pub fn select_can_watch(&self, signal_pipe: RawFd) -> Result<(), Error> {
        select_can_watch(&self.shared, signal_pipe)?;
        self.own
            .iter()
            .try_for_each(|own| select_can_watch(own, signal_pipe))
    }

    /// Does the daemon serve UDP? (Then the totals line carries the datagram fields.)
    pub fn has_datagram(&self) -> bool {
        self.datagram
    }

    /// The unix socket files the supervisor created.
    pub fn socket_files(&self) -> impl Iterator<Item = &std::path::Path> {
        self.shared.iter().filter_map(Endpoint::socket_file)
    }

    /// How many sockets the supervisor holds.
    pub(crate) fn len(&self) -> usize {
        self.own.iter().map(Vec::len).sum::<usize>() + self.shared.len()
    }

    /// Write every socket for a reload's new image ([`Endpoints::adopt`]): per worker its
    /// own, then the shared ones.
    pub fn save(&self, w: &mut crate::reload::state::Writer) {
        w.usize(self.own.len());
        for own in &self.own {
            w.usize(own.len());
            own.iter().for_each(|l| l.save(w));
        }
        w.usize(self.shared.len());
        self.shared.iter().for_each(|l| l.save(w));
        w.bool(self.datagram);
    }

    /// The sockets an earlier image of the supervisor of `workers` workers saved.
    pub fn adopt(
        workers: usize,
        r: &mut crate::reload::state::Reader<'_>,
    ) -> Result<Endpoints, String> {
        let s = |e: crate::reload::state::Error| e.to_string();
        let n = r.usize().map_err(s)?;
        if n != workers {
            return Err(format!(
                "listeners of {n} workers handed over, {workers} expected"
            ));
        }
        let mut own = Vec::with_capacity(n);
        for _ in 0..n {
            let len = r.count(1).map_err(s)?;
            own.push(
                (0..len)
                    .map(|_| Endpoint::adopt(r))
                    .collect::<Result<_, _>>()?,
            );
        }
        let len = r.count(1).map_err(s)?;
        let shared = (0..len)
            .map(|_| Endpoint::adopt(r))
            .collect::<Result<_, _>>()?;
        let datagram = r.bool().map_err(s)?;
        Ok(Endpoints {
            own,
            shared,
            datagram,
        })
    }

    /// Close every socket (shutdown: new connects are refused) and remove the socket files
    /// the supervisor created.
    pub fn close(&mut self) {
        self.own.iter_mut().for_each(Vec::clear);
        self.shared.clear();
    }
}

/// One socket per worker on the same address, all with SO_REUSEPORT (SPEC §8), for any
/// socket type: `bind(addr, reuseport)` makes one bound socket, `local` reads its address.
///
/// A probe without SO_REUSEPORT is bound first and closed again. It finds the port for
/// `:0`, and it fails with "address already in use" if anything listens there already,
/// even another reuseport group of the same user (a second echo-mux started by mistake),
/// which the group's own binds would silently join and share clients with.
pub fn reuseport_group<T>(
    addr: SocketAddr,
    n: usize,
    bind: impl Fn(SocketAddr, bool) -> Result<T, Error>,
    local: impl Fn(&T) -> io::Result<SocketAddr>,
) -> Result<Vec<T>, Error> {
    let probe = bind(addr, false)?;
    let actual = local(&probe).map_err(|source| Error::Listen {
        addr: addr.to_string(),
        source,
    })?;
    drop(probe);
    (0..n).map(|_| bind(actual, true)).collect()
}
