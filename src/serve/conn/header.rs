//! A `--proxy-from` peer's connection before its PROXY header is complete (SPEC §14): its
//! reads go to the parser, never to the echo path; the bytes that came after the header in
//! the same read are the client's first data.

use std::io;
use std::net::SocketAddr;
use std::ops::Range;

use super::{Conn, Ctx, Step};
use crate::policy::proxy::{Invalid, Progress};
use crate::sys;

/// A read while the header is pending takes at least this much, whatever `--max-buffer`
/// leaves room for, so that a header arrives in one read (the specification designs both
/// formats to fit in 536 bytes). Data after the header in that read is answered as usual,
/// so a connection's first read may overshoot `--max-buffer` by this much at most.
const HEADER_READ: usize = 536;

/// What a read of a pending header found.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum HeaderRead {
    /// Not complete yet: wait for more (or for the header's deadline).
    Pending,
    /// Complete: the client it names (`None`: keep the peer's own address), and where the
    /// client's data that came with it lies in the scratch buffer.
    Done {
        source: Option<SocketAddr>,
        rest: Range<usize>,
    },
    /// Refuse the connection, with nothing echoed.
    Refused(Invalid),
}

impl Conn {
    /// From now on, the connection's first bytes must be a PROXY header.
    pub fn expect_header(&mut self) {
        self.header = Some(Box::default());
    }

    /// Is the header still pending?
    pub fn header_pending(&self) -> bool {
        self.header.is_some()
    }

    /// Read once and feed the header parser. Nothing is counted as echo traffic here:
    /// header bytes are not the client's data.
    pub fn read_header(&mut self, scratch: &mut [u8], ctx: &Ctx<'_>) -> HeaderRead {
        let want = self.read_size(ctx).max(HEADER_READ).min(scratch.len());
        let n = loop {
            match sys::recv(&self.fd, &mut scratch[..want]) {
                Ok(0) => return HeaderRead::Refused(Invalid::Missing),
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return HeaderRead::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let e = crate::error::Plain(&e);
                    log::debug!("conn fd {}: read failed: {e}", self.fd());
                    return HeaderRead::Refused(Invalid::Missing);
                }
            }
        };
        let Some(parser) = self.header.as_mut() else {
            return HeaderRead::Refused(Invalid::Malformed);
        };
        match parser.feed(&scratch[..n]) {
            Progress::Incomplete => HeaderRead::Pending,
            Progress::Done(h) => {
                self.header = None;
                // The idle clock starts when the connection is served.
                self.last_active = ctx.now;
                HeaderRead::Done {
                    source: h.source,
                    rest: h.consumed..n,
                }
            }
            Progress::Invalid(why) => HeaderRead::Refused(why),
        }
    }

    /// The client's first bytes, read with its header: answered like any read.
    pub fn first_data(&mut self, data: &[u8], ctx: &mut Ctx<'_>) -> Step {
        if data.is_empty() {
            return Step::Keep;
        }
        let result = self.received(data, ctx);
        self.step(result)
    }
}
