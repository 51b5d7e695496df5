//! A connection across a reload (SPEC §13): everything [`Conn`] holds, written for the new
//! image and read back there. The socket itself stays open across the execve.

use std::time::Instant;

use super::{Conn, Failure};
use crate::event::reactor::Interest;
use crate::net::addr::Peer;
use crate::policy::access::Ticket;
use crate::reload::state::{self, Reader, Writer};
use crate::serve::buffer::OutBuf;
use crate::serve::echo::Stamper;

impl Conn {
    /// Write this connection: descriptor, id, unsent output, held input with due times,
    /// the partial stamp line, flags, idle clock, peer and ticket, `--log-connections`
    /// counters and start, and a pending PROXY header with its parser; from version 2 on,
    /// its slot (its token) and what the backend was told, for a backend whose
    /// registrations are handed over too.
    pub fn save(&self, slot: usize, w: &mut Writer) {
        w.fd(self.fd());
        w.usize(slot);
        w.bool(self.registered.read);
        w.bool(self.registered.write);
        w.u64(self.id);
        w.bytes(self.out.as_slice());
        let held: Vec<_> = self.held.chunks().collect();
        w.usize(held.len());
        for (due, bytes, cost) in held {
            w.instant(due);
            w.bytes(bytes);
            w.usize(cost);
        }
        let (partial, continued) = self.stamper.to_parts();
        w.bytes(partial);
        w.bool(continued);
        w.bool(self.read_closed);
        w.bool(self.paused);
        w.instant(self.last_active);
        w.opt_addr(match self.peer {
            Peer::Ip(a) => Some(a),
            Peer::Unix => None,
        });
        w.bool(self.source.is_some());
        if let Some(t) = self.source {
            let (slot, version) = t.to_parts();
            w.u32(slot);
            w.u32(version);
        }
        w.instant(self.opened);
        w.u64(self.bytes_in);
        w.u64(self.bytes_out);
        w.bool(self.header.is_some());
        if let Some(parser) = &self.header {
            parser.save(w);
        }
    }

    /// The connection [`Conn::save`] wrote, its descriptor adopted, and its slot (`None` from
    /// a version 1 state). Its registration is what the old image's backend held (nothing
    /// from a version 1 state): see [`Conn::forget_registration`]. No timer armed.
    pub fn load(r: &mut Reader<'_>) -> state::Result<(Option<usize>, Conn)> {
        let raw = r.fd()?;
        let (slot, registered) = if r.version() >= 2 {
            let slot = r.usize()?;
            let read = r.bool()?;
            let write = r.bool()?;
            (Some(slot), Interest { read, write })
        } else {
            (None, Interest::NONE)
        };
        let id = r.u64()?;
        let mut out = OutBuf::default();
        out.extend(r.bytes()?);
        let mut held = super::held::HeldInput::default();
        for _ in 0..r.count(17)? {
            let due = r.instant()?;
            let bytes = r.bytes()?.to_vec();
            let cost = r.usize()?;
            held.restore(due, bytes, cost);
        }
        let partial = r.bytes()?;
        let stamper = Stamper::from_parts(partial, r.bool()?);
        let read_closed = r.bool()?;
        let paused = r.bool()?;
        let last_active: Instant = r.instant()?;
        let peer = r.opt_addr()?.map_or(Peer::Unix, Peer::Ip);
        let source = if r.bool()? {
            Some(Ticket::from_parts(r.u32()?, r.u32()?))
        } else {
            None
        };
        let opened = r.instant()?;
        let bytes_in = r.u64()?;
        let bytes_out = r.u64()?;
        let header = if r.bool()? {
            Some(Box::new(crate::policy::proxy::Parser::load(r)?))
        } else {
            None
        };
        let fd = state::adopt(raw).map_err(|e| {
            state::Error(format!(
                "connection {id} (fd {raw}): {}",
                crate::error::Plain(&e)
            ))
        })?;
        let conn = Conn {
            fd,
            id,
            out,
            held,
            stamper,
            registered,
            write_blocked: false,
            read_closed,
            paused,
            last_active,
            peer,
            source,
            opened,
            bytes_in,
            bytes_out,
            failure: None::<Failure>,
            header,
        };
        Ok((slot, conn))
    }

    /// The backend this connection is registered with is a new one (not the old image's,
    /// handed over): it is registered with nothing yet.
    pub fn forget_registration(&mut self) {
        self.registered = Interest::NONE;
    }
}
