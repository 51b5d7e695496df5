//! The system-call side of the datagram path: one receive area and one send area per worker,
//! filled and emptied a batch at a time with `recvmmsg(2)` / `sendmmsg(2)`, and the pktinfo
//! control messages that let a wildcard listener answer from the address it was asked on.
//!
//! Notes about the batch calls:
//! - **Slot size.** Every receive slot holds 64 KiB, enough for any UDP payload (65,507 bytes
//!   over IPv4, 65,527 over IPv6), so nothing is ever truncated and no call is spent peeking
//!   at sizes (FIONREAD, MSG_PEEK). The area is 64 × 64 KiB = 4 MiB of *address space*,
//!   allocated zeroed once per worker (calloc → mmap: untouched pages are never resident);
//!   only the pages datagrams actually touch become resident, one page per slot for small
//!   datagrams (256 KiB at 64 B), 4 MiB at most if every slot once held a 64 KiB datagram.
//!   It is shared by all UDP sockets of the worker. Smaller slots would save that worst case
//!   but lose (not answer) large datagrams: a truncated datagram cannot be read again.
//! - **Short batch means drained.** A non-blocking `recvmmsg` returns what is queued, up to
//!   the batch; fewer than asked means the queue was empty, so the caller does not ask again
//!   just to see EAGAIN (that would add a call per datagram at one sender).
//! - **Partial sends.** `sendmmsg` stops at the first datagram that fails and reports how
//!   many went out; the error of that datagram is reported by the next call.
//! - **Fallback.** Where the batch calls are missing (ENOSYS: old kernels, some sandboxes),
//!   the same arrays are walked with `recvmsg` / `sendmsg`, one datagram per call.

use std::io;
use std::marker::PhantomData;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::sys::cvt;

/// Datagrams per system call at most.
pub const BATCH: usize = 64;
/// Bytes per receive slot: any UDP payload fits (see the module notes).
pub const SLOT: usize = 64 * 1024;
/// Control-message space per datagram, in u64 words (alignment for cmsghdr): room for one
/// `in6_pktinfo` (CMSG_SPACE = 40 bytes) with some to spare.
const CTRL_WORDS: usize = 8;
/// Stamp mode's reply around the payload: `Echo=>` payload ` at ` ctime `\n`.
pub const PREFIX: &[u8] = b"Echo=>";
const AT: &[u8] = b" at ";
const NL: &[u8] = b"\n";
/// Bytes a stamp reply adds to its payload (the ctime text is always 24 bytes).
pub const STAMP_EXTRA: usize = PREFIX.len() + AT.len() + CTIME_LEN + NL.len();
const CTIME_LEN: usize = 24;

/// Set once the kernel said ENOSYS to a batch call: use one call per datagram from then on.
static NO_MMSG: AtomicBool = AtomicBool::new(false);

/// The local end of a datagram, from pktinfo: where the reply must come from. Only known on
/// sockets with pktinfo enabled (wildcard listeners).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Local {
    /// IPv4: `ipi_spec_dst`, the local address the kernel would answer from, and `ipi_addr`,
    /// the header's destination (different for a broadcast).
    V4 {
        /// The address to answer from.
        spec_dst: Ipv4Addr,
        /// The destination in the datagram's header.
        header_dst: Ipv4Addr,
    },
    /// IPv6: the destination address and the interface it arrived on (link-local scope).
    V6 {
        /// The address the datagram was sent to.
        addr: Ipv6Addr,
        /// The interface it arrived on.
        ifindex: u32,
    },
}

impl Local {
    /// The destination address in the datagram's header.
    pub fn header_dst(&self) -> IpAddr {
        match *self {
            Local::V4 { header_dst, .. } => IpAddr::V4(header_dst),
            Local::V6 { addr, .. } => IpAddr::V6(addr),
        }
    }

    /// True when the datagram was sent to a broadcast or multicast address (the kernel's
    /// preferred source differs from the header's destination only then, for IPv4).
    pub fn not_unicast(&self) -> bool {
        match *self {
            Local::V4 {
                spec_dst,
                header_dst,
            } => header_dst.is_multicast() || header_dst.is_broadcast() || spec_dst != header_dst,
            Local::V6 { addr, .. } => addr.is_multicast(),
        }
    }
}

/// One received datagram.
pub struct Received<'a> {
    /// The sender (`None` only for an address family we do not speak).
    pub from: Option<SocketAddr>,
    /// Where it was sent to, when pktinfo is on.
    pub local: Option<Local>,
    /// The payload.
    pub data: &'a [u8],
    /// The kernel cut it short (cannot happen with 64 KiB slots; checked anyway).
    pub truncated: bool,
}

/// The receive side: slots, addresses and control space for one batch.
pub struct RecvArea {
    bufs: Box<[u8]>,
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_storage>,
    ctrl: Vec<[u64; CTRL_WORDS]>,
}

impl Default for RecvArea {
    fn default() -> Self {
        RecvArea::new()
    }
}

impl RecvArea {
    /// Allocate the area (address space only: see the module notes).
    pub fn new() -> RecvArea {
        // SAFETY: all-zero is a valid value of these plain C structs.
        let (hdr, name) = unsafe { (zeroed::<libc::mmsghdr>(), zeroed()) };
        let mut area = RecvArea {
            bufs: vec![0u8; BATCH * SLOT].into_boxed_slice(),
            hdrs: vec![hdr; BATCH],
            iovs: Vec::with_capacity(BATCH),
            names: vec![name; BATCH],
            ctrl: vec![[0u64; CTRL_WORDS]; BATCH],
        };
        for slot in area.bufs.chunks_mut(SLOT) {
            area.iovs.push(libc::iovec {
                iov_base: slot.as_mut_ptr().cast(),
                iov_len: SLOT,
            });
        }
        // The pointers below are into heap blocks that never move or shrink for the life of
        // the area, so they stay valid when the area itself moves.
        for i in 0..BATCH {
            let h = &mut area.hdrs[i].msg_hdr;
            h.msg_iov = &mut area.iovs[i];
            h.msg_iovlen = 1;
            h.msg_name = (&mut area.names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_control = area.ctrl[i].as_mut_ptr().cast();
        }
        area
    }

    /// Receive up to a batch of datagrams from the non-blocking socket `fd`: `Ok(n)` with
    /// `n >= 1`, or the error (EAGAIN when nothing was queued).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        for h in &mut self.hdrs {
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_controllen = (CTRL_WORDS * 8) as _;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        if !NO_MMSG.load(Ordering::Relaxed) {
            // SAFETY: `hdrs` holds BATCH headers whose names, iovecs (into `bufs`) and control
            // buffers are valid and writable for their stated lengths for the whole call.
            let n = unsafe {
                libc::recvmmsg(
                    fd,
                    self.hdrs.as_mut_ptr(),
                    BATCH as _,
                    0,
                    std::ptr::null_mut(),
                )
            };
            match cvt(n) {
                Ok(n) => return Ok(n as usize),
                Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => fallback_noted(),
                Err(e) => return Err(e),
            }
        }
        // One recvmsg per datagram; stop at the first that would block.
        for i in 0..BATCH {
            // SAFETY: as above, for one header.
            let r = unsafe { libc::recvmsg(fd, &mut self.hdrs[i].msg_hdr, 0) };
            match cvt(r) {
                Ok(len) => self.hdrs[i].msg_len = len as _,
                Err(e) if i == 0 => return Err(e),
                Err(_) => return Ok(i),
            }
        }
        Ok(BATCH)
    }

    /// Datagram `i` of the last [`RecvArea::recv`] (`i` below what it returned).
    pub fn get(&self, i: usize) -> Received<'_> {
        let h = &self.hdrs[i];
        let len = (h.msg_len as usize).min(SLOT);
        Received {
            from: from_sockaddr(&self.names[i], h.msg_hdr.msg_namelen),
            local: read_pktinfo(&h.msg_hdr),
            data: &self.bufs[i * SLOT..i * SLOT + len],
            truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
        }
    }
}

fn fallback_noted() {
    if !NO_MMSG.swap(true, Ordering::Relaxed) {
        log::warn!("recvmmsg/sendmmsg are not available: one system call per datagram");
    }
}

/// One reply to send: to whom, from which local address (pktinfo), and the payload (in stamp
/// mode the line, which the send area wraps in `Echo=>… at <ctime>\n` without copying it).
#[derive(Clone, Copy, Debug)]
pub struct Reply<'a> {
    /// The peer.
    pub to: SocketAddr,
    /// The address to answer from, on a wildcard listener.
    pub from: Option<Local>,
    /// The bytes (raw mode) or the line (stamp mode).
    pub payload: &'a [u8],
}

/// The send side: headers, gather lists, addresses and control space for one batch.
pub struct SendArea {
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<[libc::iovec; 5]>,
    names: Vec<libc::sockaddr_storage>,
    ctrl: Vec<[u64; CTRL_WORDS]>,
    time: Box<[u8; CTIME_LEN]>,
}

impl Default for SendArea {
    fn default() -> Self {
        // SAFETY: all-zero is a valid value of these plain C structs (null pointers included).
        let (hdr, iov, name) = unsafe {
            (
                zeroed::<libc::mmsghdr>(),
                zeroed::<libc::iovec>(),
                zeroed::<libc::sockaddr_storage>(),
            )
        };
        SendArea {
            hdrs: vec![hdr; BATCH],
            iovs: vec![[iov; 5]; BATCH],
            names: vec![name; BATCH],
            ctrl: vec![[0u64; CTRL_WORDS]; BATCH],
            time: Box::new([b' '; CTIME_LEN]),
        }
    }
}

impl SendArea {
    /// Start a batch of replies; `ctime` (stamp mode) is the time text every reply carries.
    /// The batch borrows the payloads it is given until it is dropped.
    pub fn start<'p>(&mut self, ctime: Option<&str>) -> Outgoing<'_, 'p> {
        let stamp = ctime.is_some();
        if let Some(t) = ctime {
            let t = t.as_bytes();
            let n = t.len().min(CTIME_LEN);
            self.time[..n].copy_from_slice(&t[..n]);
        }
        Outgoing {
            area: self,
            n: 0,
            stamp,
            _payloads: PhantomData,
        }
    }
}

/// A batch being filled; `'p` is the lifetime of the payloads pushed into it.
pub struct Outgoing<'a, 'p> {
    area: &'a mut SendArea,
    n: usize,
    stamp: bool,
    _payloads: PhantomData<&'p [u8]>,
}

impl<'p> Outgoing<'_, 'p> {
    /// Replies in the batch.
    pub fn len(&self) -> usize {
        self.n
    }

    /// True when the batch is full.
    pub fn is_full(&self) -> bool {
        self.n == BATCH
    }

    /// True when nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Add a reply (at most [`BATCH`]).
    pub fn push(&mut self, r: &Reply<'p>) {
        assert!(self.n < BATCH, "a send batch holds {BATCH} replies");
        let (i, a) = (self.n, &mut *self.area);
        let iov = |p: &[u8]| libc::iovec {
            // The kernel only reads from these (sendmsg); the cast is what iovec requires.
            iov_base: p.as_ptr() as *mut libc::c_void,
            iov_len: p.len(),
        };
        let iovlen = if self.stamp {
            a.iovs[i] = [
                iov(PREFIX),
                iov(r.payload),
                iov(AT),
                iov(&a.time[..]),
                iov(NL),
            ];
            5
        } else {
            a.iovs[i][0] = iov(r.payload);
            1
        };
        let namelen = to_sockaddr(r.to, &mut a.names[i]);
        let controllen = match r.from {
            Some(local) => write_pktinfo(local, &mut a.ctrl[i]),
            None => 0,
        };
        let h = &mut a.hdrs[i];
        h.msg_len = 0;
        h.msg_hdr.msg_name = (&mut a.names[i] as *mut libc::sockaddr_storage).cast();
        h.msg_hdr.msg_namelen = namelen;
        h.msg_hdr.msg_iov = a.iovs[i].as_mut_ptr();
        h.msg_hdr.msg_iovlen = iovlen;
        h.msg_hdr.msg_control = if controllen == 0 {
            std::ptr::null_mut()
        } else {
            a.ctrl[i].as_mut_ptr().cast()
        };
        h.msg_hdr.msg_controllen = controllen as _;
        h.msg_hdr.msg_flags = 0;
        self.n += 1;
    }

    /// Send replies `from..len()`: `Ok(k)` when the first `k` of them went out (the error of
    /// the next one, if any, comes with the next call), `Err` when the first failed.
    pub fn send(&mut self, fd: RawFd, from: usize) -> io::Result<usize> {
        let rest = &mut self.area.hdrs[from..self.n];
        if rest.is_empty() {
            return Ok(0);
        }
        if !NO_MMSG.load(Ordering::Relaxed) {
            // SAFETY: every header in `rest` was filled by `push` with pointers to live data:
            // the payloads are borrowed for 'p (this batch cannot outlive them), the rest
            // points into this area, which is borrowed mutably for the batch's life.
            let n = unsafe {
                libc::sendmmsg(fd, rest.as_mut_ptr(), rest.len() as _, libc::MSG_NOSIGNAL)
            };
            match cvt(n) {
                Ok(n) => return Ok(n as usize),
                Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => fallback_noted(),
                Err(e) => return Err(e),
            }
        }
        for (i, h) in rest.iter_mut().enumerate() {
            // SAFETY: as above, for one header.
            let r = unsafe { libc::sendmsg(fd, &h.msg_hdr, libc::MSG_NOSIGNAL) };
            match cvt(r) {
                Ok(len) => h.msg_len = len as _,
                Err(e) if i == 0 => return Err(e),
                Err(_) => return Ok(i),
            }
        }
        Ok(rest.len())
    }

    /// Bytes that reply `i` put on the wire (valid once a send reported it sent).
    pub fn sent_len(&self, i: usize) -> usize {
        self.area.hdrs[i].msg_len as usize
    }
}

/// `sockaddr_storage` → `SocketAddr` (IPv4 and IPv6 only).
fn from_sockaddr(ss: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let ptr = ss as *const libc::sockaddr_storage;
    match libc::c_int::from(ss.ss_family) {
        libc::AF_INET if len as usize >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says it is a sockaddr_in, and the storage is large and
            // aligned enough for any sockaddr.
            let sin = unsafe { &*ptr.cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len as usize >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &*ptr.cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// `SocketAddr` → `sockaddr_storage`; returns the length to pass.
fn to_sockaddr(addr: SocketAddr, ss: &mut libc::sockaddr_storage) -> libc::socklen_t {
    let ptr = ss as *mut libc::sockaddr_storage;
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for a sockaddr_in; an
            // all-zero sockaddr_in is valid before its fields are set.
            let sin = unsafe { &mut *ptr.cast::<libc::sockaddr_in>() };
            *sin = unsafe { zeroed() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &mut *ptr.cast::<libc::sockaddr_in6>() };
            *sin6 = unsafe { zeroed() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// The IP_PKTINFO / IPV6_PKTINFO control message of a received datagram, if any.
fn read_pktinfo(h: &libc::msghdr) -> Option<Local> {
    if h.msg_controllen == 0 {
        return None;
    }
    // SAFETY: `h` is a header the kernel just filled: msg_control/msg_controllen describe
    // the control messages it wrote, which the CMSG_* walk stays within. Payloads are read
    // unaligned, as CMSG_DATA gives no alignment promise for the struct inside.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            let (level, kind) = ((*c).cmsg_level, (*c).cmsg_type);
            if level == libc::IPPROTO_IP && kind == libc::IP_PKTINFO {
                let p: libc::in_pktinfo = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                return Some(Local::V4 {
                    spec_dst: Ipv4Addr::from(u32::from_be(p.ipi_spec_dst.s_addr)),
                    header_dst: Ipv4Addr::from(u32::from_be(p.ipi_addr.s_addr)),
                });
            }
            if level == libc::IPPROTO_IPV6 && kind == libc::IPV6_PKTINFO {
                let p: libc::in6_pktinfo = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                return Some(Local::V6 {
                    addr: Ipv6Addr::from(p.ipi6_addr.s6_addr),
                    ifindex: p.ipi6_ifindex,
                });
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    None
}

/// Write the control message that makes a reply leave from `local`; returns its length.
/// IPv4 sets only the source (`ipi_spec_dst`, interface 0: routing picks the way out);
/// IPv6 also pins the interface it came in on, which link-local addresses need.
fn write_pktinfo(local: Local, buf: &mut [u64; CTRL_WORDS]) -> usize {
    *buf = [0; CTRL_WORDS];
    let (level, kind, len) = match local {
        Local::V4 { .. } => (
            libc::IPPROTO_IP,
            libc::IP_PKTINFO,
            size_of::<libc::in_pktinfo>(),
        ),
        Local::V6 { .. } => (
            libc::IPPROTO_IPV6,
            libc::IPV6_PKTINFO,
            size_of::<libc::in6_pktinfo>(),
        ),
    };
    // SAFETY: CMSG_SPACE/CMSG_LEN are pure arithmetic. The buffer is u64-aligned (as
    // cmsghdr needs) and CTRL_WORDS * 8 = 64 bytes, more than CMSG_SPACE of either pktinfo
    // (32 and 40), so the header and data writes stay inside it.
    unsafe {
        let space = libc::CMSG_SPACE(len as _) as usize;
        debug_assert!(space <= CTRL_WORDS * 8);
        let c = buf.as_mut_ptr().cast::<libc::cmsghdr>();
        (*c).cmsg_level = level;
        (*c).cmsg_type = kind;
        (*c).cmsg_len = libc::CMSG_LEN(len as _) as _;
        let data = libc::CMSG_DATA(c);
        match local {
            Local::V4 { spec_dst, .. } => {
                let p = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(spec_dst).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                std::ptr::write_unaligned(data.cast(), p);
            }
            Local::V6 { addr, ifindex } => {
                let p = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: addr.octets(),
                    },
                    ipi6_ifindex: ifindex,
                };
                std::ptr::write_unaligned(data.cast(), p);
            }
        }
        space
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_through_sockaddr() {
        // SAFETY: all-zero is a valid sockaddr_storage.
        let mut ss: libc::sockaddr_storage = unsafe { zeroed() };
        for a in [
            "127.0.0.1:7",
            "[::1]:50007",
            "[fe80::1%2]:9",
            "[::ffff:10.0.0.1]:1",
        ] {
            let addr: SocketAddr = a.parse().unwrap();
            let len = to_sockaddr(addr, &mut ss);
            assert_eq!(from_sockaddr(&ss, len), Some(addr), "{a}");
        }
        assert_eq!(from_sockaddr(&ss, 4), None, "too short for its family");
    }

    #[test]
    fn broadcast_and_multicast_are_not_unicast() {
        let v4 = |s: [u8; 4], h: [u8; 4]| Local::V4 {
            spec_dst: s.into(),
            header_dst: h.into(),
        };
        assert!(!v4([127, 0, 0, 2], [127, 0, 0, 2]).not_unicast());
        assert!(v4([192, 168, 1, 5], [192, 168, 1, 255]).not_unicast());
        assert!(v4([192, 168, 1, 5], [255, 255, 255, 255]).not_unicast());
        assert!(v4([192, 168, 1, 5], [224, 0, 0, 1]).not_unicast());
        let v6 = |a: &str| Local::V6 {
            addr: a.parse().unwrap(),
            ifindex: 1,
        };
        assert!(!v6("::1").not_unicast());
        assert!(v6("ff02::1").not_unicast());
    }
}
