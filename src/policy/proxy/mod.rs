//! The PROXY protocol (SPEC §14; HAProxy's specification, v1 text and v2 binary): who a
//! load balancer says the client is.
//!
//! Only peers in `--proxy-from` are asked for a header ([`Trusted`]); from anyone else a
//! PROXY header is data like any other and is echoed. A trusted connection starts with a
//! [`Parser`] (boxed, only while the header is pending) that is fed whatever each read
//! brings, however TCP split it, until it says:
//! - [`Progress::Incomplete`]: feed it more;
//! - [`Progress::Done`]: the header is complete; its [`Header::source`] is the client
//!   (`None` for v2 `LOCAL`, v1 `UNKNOWN` and v2 `UNSPEC`: keep the balancer's address), and
//!   [`Header::consumed`] bytes of this feed were header, the rest is the client's data;
//! - [`Progress::Invalid`]: close the connection with nothing echoed.
//!
//! Sans-IO and incremental: the parser never reads a socket and never allocates; it keeps at
//! most [`V1_MAX`] bytes (a v1 line, or a v2 fixed part plus its address block) and skips
//! v2 TLVs by counting them. Every limit is checked the moment the byte that breaks it
//! arrives, so a bad header is refused as soon as it can be (the specification asks for
//! that), and a slow one is the caller's timer's business (SPEC §14: 5 s).
//!
//! Why not the `ppp` crate: it parses a complete header from one contiguous slice, so a
//! caller must keep every byte of a pending header (a v2 header may announce 65,535 bytes)
//! and hand the whole prefix again after every segment; it validates TLVs that the
//! specification says a receiver may skip; and it sets no bound on the v2 length. Its v2
//! builder and v1 writer are an independent implementation, so the tests use them
//! (dev-dependency) to check that what they write parses back here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::policy::access::{Action, Cidr, Rules};

#[cfg(test)]
mod tests;

/// The longest v1 line, CRLF included (the specification's worst case, `PROXY UNKNOWN`
/// with two full IPv6 addresses and ports); a line without CRLF by then is refused.
pub const V1_MAX: usize = 107;
/// The longest v2 header accepted, fixed part and TLVs included. The specification bounds
/// it only by its 16-bit length field and designs headers to fit in 536 bytes; TLVs may
/// take more, so this follows nginx (`NGX_PROXY_PROTOCOL_MAX_HEADER`): beyond 4 KiB a
/// header is refused. Nothing past the address block is kept, so the bound costs no memory.
pub const V2_MAX: usize = 4096;
/// A header not complete this long after the connection was accepted is refused.
pub const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The v2 signature: 12 bytes that no text protocol starts with.
const V2_SIG: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The v1 prefix: `PROXY` and one space.
const V1_SIG: &[u8; 6] = b"PROXY ";
/// The v2 fixed part: signature, version and command, family and protocol, length.
const V2_FIXED: usize = 16;
/// The v2 address block of TCP over IPv6, the longest one that is kept.
const V2_ADDR_MAX: usize = 36;

/// Why a header was refused (for the debug line; the refusal log says `proxy` for all).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Invalid {
    /// The peer closed, or the connection failed, before the header was complete.
    Missing,
    /// Neither the v1 nor the v2 signature (a client speaking without a header, say).
    Signature,
    /// Over [`V1_MAX`] (v1) or [`V2_MAX`] (v2).
    TooLong,
    /// Not the grammar: a v1 field, a lone CR or LF, a v2 version, command, family or
    /// protocol the specification does not assign.
    Malformed,
    /// An address family that cannot describe the relayed TCP connection: a v1 `TCP4` with
    /// an IPv6 address (or `TCP6` with IPv4), a v2 datagram protocol on this stream, a v2
    /// address block shorter than its family needs.
    Family,
}

impl Invalid {
    /// What the debug line says.
    pub fn describe(self) -> &'static str {
        match self {
            Invalid::Missing => "closed before the header was complete",
            Invalid::Signature => "no PROXY signature",
            Invalid::TooLong => "header longer than the specification allows",
            Invalid::Malformed => "malformed header",
            Invalid::Family => "address family does not match a TCP connection",
        }
    }
}

/// A complete header.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Header {
    /// The client, or `None` to keep the peer's own address (v2 `LOCAL`: the balancer's
    /// health checks; v1 `UNKNOWN`; v2 `UNSPEC` and `AF_UNIX` families, which the
    /// specification lets a receiver treat so).
    pub source: Option<SocketAddr>,
    /// The whole header's length in bytes.
    pub len: usize,
    /// How many bytes of the last [`Parser::feed`] belonged to the header; the rest of
    /// that input is the client's data.
    pub consumed: usize,
}

/// What [`Parser::feed`] found.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Progress {
    /// Not complete yet: feed more (all of this input belonged to the header).
    Incomplete,
    /// Complete.
    Done(Header),
    /// Refused; the parser stays so.
    Invalid(Invalid),
}

/// Which format the first bytes chose.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Unknown,
    V1,
    V2 {
        /// The whole header: 16 + the length field.
        total: u16,
        /// Address bytes to keep after the fixed part (0, 12 or 36).
        keep: u8,
        /// The address family that `keep` bytes describe (1 = IPv4, 2 = IPv6, 0 = none).
        family: u8,
    },
    Finished,
}

/// The incremental parser; see the module docs. Its size is fixed (no heap, ever).
#[derive(Clone, Debug)]
pub struct Parser {
    /// The v1 line so far, or the v2 fixed part and the address block.
    buf: [u8; V1_MAX],
    /// Bytes of the header seen so far (kept or skipped).
    seen: u16,
    kind: Kind,
}

impl Default for Parser {
    fn default() -> Parser {
        Parser {
            buf: [0; V1_MAX],
            seen: 0,
            kind: Kind::Unknown,
        }
    }
}

impl Parser {
    /// A parser at the first byte of a connection.
    pub fn new() -> Parser {
        Parser::default()
    }

    /// Feed the next bytes of the connection. Call again only after `Incomplete`.
    pub fn feed(&mut self, input: &[u8]) -> Progress {
        let mut at = 0;
        while at < input.len() {
            if let Kind::V2 { total, keep, .. } = self.kind {
                // Past the fixed part: keep the address block, count the rest (TLVs).
                let seen = usize::from(self.seen);
                let kept = V2_FIXED + usize::from(keep);
                let room = usize::from(total) - seen;
                let take = room.min(input.len() - at);
                if seen < kept {
                    let n = take.min(kept - seen);
                    self.buf[seen..seen + n].copy_from_slice(&input[at..at + n]);
                }
                // `take` <= room <= V2_MAX: fits in u16.
                self.seen += take as u16;
                at += take;
                if self.seen == total {
                    return self.done(at);
                }
                continue;
            }
            let b = input[at];
            at += 1;
            match self.byte(b) {
                Progress::Incomplete => {}
                Progress::Done(h) => return Progress::Done(Header { consumed: at, ..h }),
                bad => return bad,
            }
        }
        match self.kind {
            Kind::Finished => Progress::Invalid(Invalid::Malformed),
            _ => Progress::Incomplete,
        }
    }

    /// One byte of the signature, a v1 line or the v2 fixed part.
    fn byte(&mut self, b: u8) -> Progress {
        if self.kind == Kind::Finished {
            return Progress::Invalid(Invalid::Malformed);
        }
        let i = usize::from(self.seen);
        self.buf[i] = b;
        self.seen += 1;
        if self.kind == Kind::Unknown {
            let fits = match self.buf[0] {
                b'P' => i >= V1_SIG.len() || V1_SIG[i] == b,
                b'\r' => match i {
                    0..=11 => V2_SIG[i] == b,
                    // The version nibble: 2, the only one the specification defines.
                    12 => b >> 4 == 2,
                    _ => true,
                },
                _ => false,
            };
            if !fits {
                return self.fail(Invalid::Signature);
            }
            if self.buf[0] == b'P' && i + 1 == V1_SIG.len() {
                self.kind = Kind::V1;
            }
            if self.buf[0] == b'\r' && i + 1 == V2_FIXED {
                return self.v2_fixed();
            }
            return Progress::Incomplete;
        }
        // v1: everything up to CRLF, CR only right before LF.
        let prev = self.buf[i - 1];
        if b == b'\n' {
            if prev != b'\r' {
                return self.fail(Invalid::Malformed);
            }
            return match v1_line(&self.buf[V1_SIG.len()..i - 1]) {
                Ok(source) => {
                    self.kind = Kind::Finished;
                    Progress::Done(Header {
                        source,
                        len: i + 1,
                        consumed: 0,
                    })
                }
                Err(why) => self.fail(why),
            };
        }
        if prev == b'\r' {
            return self.fail(Invalid::Malformed);
        }
        if i + 1 == V1_MAX {
            return self.fail(Invalid::TooLong);
        }
        Progress::Incomplete
    }

    /// The 16-byte v2 fixed part is in: check it, learn the length and what to keep.
    fn v2_fixed(&mut self) -> Progress {
        let command = self.buf[12] & 0x0f;
        let (family, protocol) = (self.buf[13] >> 4, self.buf[13] & 0x0f);
        let len = usize::from(u16::from_be_bytes([self.buf[14], self.buf[15]]));
        if V2_FIXED + len > V2_MAX {
            return self.fail(Invalid::TooLong);
        }
        let (keep, family) = match command {
            // LOCAL: the balancer's own connection (health checks); the family is ignored
            // and the block skipped, whatever it holds.
            0x0 => (0, 0),
            0x1 => {
                if family > 3 || protocol > 2 {
                    return self.fail(Invalid::Malformed);
                }
                // The forwarded connection is a datagram flow: not what reached this
                // stream socket.
                if protocol == 2 {
                    return self.fail(Invalid::Family);
                }
                let need = match (family, protocol) {
                    (1, 1) => 12,
                    (2, 1) => 36,
                    (3, 1) => 216,
                    _ => 0,
                };
                if len < need {
                    return self.fail(Invalid::Family);
                }
                match family {
                    1 | 2 if protocol == 1 => (need as u8, family),
                    // UNSPEC, or AF_UNIX (no IP to count): the specification's fallback is
                    // to use the real connection's endpoints.
                    _ => (0, 0),
                }
            }
            _ => return self.fail(Invalid::Malformed),
        };
        debug_assert!(usize::from(keep) <= V2_ADDR_MAX);
        self.kind = Kind::V2 {
            total: (V2_FIXED + len) as u16,
            keep,
            family,
        };
        if len == 0 {
            return self.done(0);
        }
        Progress::Incomplete
    }

    /// The v2 header is complete; `consumed` bytes of this feed were header.
    fn done(&mut self, consumed: usize) -> Progress {
        let Kind::V2 { total, family, .. } = self.kind else {
            return self.fail(Invalid::Malformed);
        };
        let b = &self.buf;
        let port = |at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
        let source = match family {
            1 => {
                let ip = Ipv4Addr::new(b[16], b[17], b[18], b[19]);
                Some(SocketAddr::new(IpAddr::V4(ip), port(24)))
            }
            2 => {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&b[16..32]);
                Some(SocketAddr::new(
                    IpAddr::V6(Ipv6Addr::from(octets)),
                    port(48),
                ))
            }
            _ => None,
        };
        self.kind = Kind::Finished;
        Progress::Done(Header {
            source,
            len: usize::from(total),
            consumed,
        })
    }

    fn fail(&mut self, why: Invalid) -> Progress {
        self.kind = Kind::Finished;
        Progress::Invalid(why)
    }
}

/// A v1 line after `PROXY ` and before CRLF: `UNKNOWN[ anything]`, or `TCP4`/`TCP6` and
/// exactly four fields, each separated by one space.
fn v1_line(line: &[u8]) -> Result<Option<SocketAddr>, Invalid> {
    if line == b"UNKNOWN" || line.starts_with(b"UNKNOWN ") {
        return Ok(None);
    }
    let mut fields = line.split(|&c| c == b' ');
    let protocol = fields.next().unwrap_or_default();
    let v6 = match protocol {
        b"TCP4" => false,
        b"TCP6" => true,
        _ => return Err(Invalid::Malformed),
    };
    let (Some(src), Some(dst), Some(sport), Some(dport), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(Invalid::Malformed);
    };
    let source = v1_addr(src, v6)?;
    v1_addr(dst, v6)?;
    let port = v1_port(sport)?;
    v1_port(dport)?;
    Ok(Some(SocketAddr::new(source, port)))
}

/// An address of the family the line named: the other family is a contradiction
/// ([`Invalid::Family`]), anything else malformed.
fn v1_addr(field: &[u8], v6: bool) -> Result<IpAddr, Invalid> {
    let text = std::str::from_utf8(field).map_err(|_| Invalid::Malformed)?;
    match (text.parse::<IpAddr>(), v6) {
        (Ok(ip @ IpAddr::V4(_)), false) | (Ok(ip @ IpAddr::V6(_)), true) => Ok(ip),
        (Ok(_), _) => Err(Invalid::Family),
        (Err(_), _) => Err(Invalid::Malformed),
    }
}

/// A port: 0..=65535 in decimal, no leading zero (the specification forbids them).
fn v1_port(field: &[u8]) -> Result<u16, Invalid> {
    let digits = !field.is_empty() && field.len() <= 5 && field.iter().all(u8::is_ascii_digit);
    if !digits || (field.len() > 1 && field[0] == b'0') {
        return Err(Invalid::Malformed);
    }
    let n = field
        .iter()
        .fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'));
    u16::try_from(n).map_err(|_| Invalid::Malformed)
}

/// `--proxy-from`: the peers whose connections must begin with a PROXY header.
#[derive(Clone, Debug, Default)]
pub struct Trusted(Option<Rules>);

impl Trusted {
    /// From the `--proxy-from` prefixes (none: nobody is trusted, and nothing is checked).
    pub fn new(from: &[Cidr]) -> Trusted {
        Trusted(Rules::new(from, &[]))
    }

    /// Must a connection from `peer` begin with a header?
    pub fn trusts(&self, peer: IpAddr) -> bool {
        self.0
            .as_ref()
            .is_some_and(|rules| rules.decide(peer) == Action::Allow)
    }
}

impl Parser {
    /// Write a parser in the middle of a header, for a reload's new image.
    pub fn save(&self, w: &mut crate::reload::state::Writer) {
        w.bytes(&self.buf);
        w.u32(u32::from(self.seen));
        match self.kind {
            Kind::Unknown => w.u8(0),
            Kind::V1 => w.u8(1),
            Kind::V2 {
                total,
                keep,
                family,
            } => {
                w.u8(2);
                w.u32(u32::from(total));
                w.u8(keep);
                w.u8(family);
            }
            Kind::Finished => w.u8(3),
        }
    }

    /// A parser [`Parser::save`] wrote: it goes on where it was.
    pub fn load(r: &mut crate::reload::state::Reader<'_>) -> crate::reload::state::Result<Parser> {
        use crate::reload::state::Error;
        let bytes = r.bytes()?;
        let mut buf = [0u8; V1_MAX];
        if bytes.len() != V1_MAX {
            return Err(Error(format!("PROXY parser of {} bytes", bytes.len())));
        }
        buf.copy_from_slice(bytes);
        let seen = u16::try_from(r.u32()?).map_err(|_| Error("PROXY parser position".into()))?;
        let kind = match r.u8()? {
            0 => Kind::Unknown,
            1 => Kind::V1,
            2 => Kind::V2 {
                total: u16::try_from(r.u32()?).map_err(|_| Error("PROXY parser length".into()))?,
                keep: r.u8()?,
                family: r.u8()?,
            },
            3 => Kind::Finished,
            k => return Err(Error(format!("PROXY parser state {k}"))),
        };
        Ok(Parser { buf, seen, kind })
    }
}
