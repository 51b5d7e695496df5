//! `--proxy-from` (SPEC §14): a trusted peer's connection is accepted "header pending". Its
//! access decision and per-source accounting move from right after `accept4` to right
//! after the header, and are made for the client the header names: the lists, the
//! per-source limits, `--log-connections` and every log line see that client. Until then
//! nothing is echoed and nothing is counted as accepted; a header that is missing,
//! malformed, too long or not complete within [`TIMEOUT`] closes the connection, counted
//! `rejected` with reason `proxy`.
//!
//! ```text
//!  accept4 → peer in --proxy-from? ── no ──► lists, --max-clients, limits (accept.rs)
//!              │ yes: --max-clients only
//!              ▼
//!        header pending ── reads → proxy::Parser ── bad / EOF / 5 s ──► close, proxy
//!              │ done: client (or the balancer, for LOCAL / UNKNOWN)
//!              ▼
//!        lists, limits for the client ── refused ──► close, denied / limited
//!              │ admitted: accepted += 1, the rest of the read is echoed
//!              ▼
//!           served as any connection
//! ```

use std::net::SocketAddr;
use std::ops::Range;

use log::debug;

use super::{Server, Target, Timer};
use crate::event::timer::later;
use crate::net::addr::Peer;
use crate::policy::proxy::TIMEOUT;
use crate::serve::conn::{Ctx, HeaderRead};
use crate::shared::Reason;

impl Server {
    /// A connection just accepted from a trusted peer in `slot`: it waits for its header.
    pub(super) fn await_header(&mut self, slot: usize) {
        let Some(conn) = self.conns.at(slot) else {
            return;
        };
        conn.expect_header();
        let id = conn.id;
        self.timers
            .add(later(self.now, TIMEOUT), Timer::Header { slot, id });
    }

    /// Is the connection in `slot` waiting for its header?
    pub(super) fn header_pending(&mut self, slot: usize) -> bool {
        self.conns.at(slot).is_some_and(|c| c.header_pending())
    }

    /// The connection in `slot` is readable while its header is pending.
    pub(super) fn on_header(&mut self, slot: usize) {
        let delay = self.turn_delay();
        let Some(conn) = self.conns.at(slot) else {
            return;
        };
        let ctx = Ctx {
            mode: self.config.mode,
            delay,
            max_buffer: self.config.max_buffer,
            now: self.now,
            clock: &mut self.clock,
            stats: &mut self.stats,
        };
        match conn.read_header(&mut self.scratch, &ctx) {
            HeaderRead::Pending => {}
            HeaderRead::Refused(why) => self.refuse_header(slot, why.describe()),
            HeaderRead::Done { source, rest } => self.header_done(slot, source, rest),
        }
    }

    /// `Timer::Header` fired: a header still pending has had its time.
    pub(super) fn header_deadline(&mut self, slot: usize, id: u64) {
        if self.conns.get(slot, id).is_some_and(|c| c.header_pending()) {
            self.refuse_header(slot, "header not complete within 5s");
        }
    }

    /// The header named `source` (or kept the peer): decide for that client as accept.rs
    /// decides for a direct one, then answer what came with the header.
    fn header_done(&mut self, slot: usize, source: Option<SocketAddr>, rest: Range<usize>) {
        let Some(conn) = self.conns.at(slot) else {
            return;
        };
        let (balancer, id) = (conn.peer, conn.id);
        // Shown and counted as SPEC §10 says: an IPv4-mapped client as its IPv4 address.
        let folded = source.map(crate::net::addr::fold_socket);
        let peer = folded.map_or(balancer, Peer::Ip);
        debug!("conn {id}: PROXY header from {balancer}: client {peer}");
        let ip = peer.ip();
        if ip.is_some_and(|ip| !self.access.allows(ip)) {
            self.discard(slot);
            return self.refuse(Reason::Denied, peer);
        }
        let ticket = match ip.map(|ip| self.access.admit(ip, self.now)) {
            Some(Err(reason)) => {
                self.discard(slot);
                return self.refuse(reason, peer);
            }
            Some(Ok(ticket)) => ticket,
            None => None,
        };
        let Some(conn) = self.conns.at(slot) else {
            return;
        };
        (conn.peer, conn.source) = (peer, ticket);
        self.stats.accepted();
        if let Some(idle) = self.config.idle_timeout {
            self.timers
                .add(later(self.now, idle), Timer::Idle { slot, id });
        }
        if !rest.is_empty() {
            self.with_conn(slot, |conn, scratch, ctx| {
                conn.first_data(&scratch[rest], ctx)
            });
        }
    }

    /// Close a connection whose header failed, with nothing echoed: `rejected`, reason
    /// `proxy`, in the refusal log under the peer that sent it.
    fn refuse_header(&mut self, slot: usize, why: &str) {
        let Some(conn) = self.conns.at(slot) else {
            return;
        };
        let peer = conn.peer;
        debug!("conn {} from {peer}: refused: PROXY header: {why}", conn.id);
        self.discard(slot);
        self.refuse(Reason::Proxy, peer);
    }

    /// Close a connection that was never served: no count to give back, no closed line.
    fn discard(&mut self, slot: usize) {
        if let Some(mut conn) = self.conns.remove(slot) {
            if let Err(e) =
                conn.deregister_for_close(self.backend.as_mut(), Target::Conn(slot).into())
            {
                debug!(
                    "deregistering fd {}: {}",
                    conn.fd(),
                    crate::error::Plain(&e)
                );
            }
        }
    }
}
