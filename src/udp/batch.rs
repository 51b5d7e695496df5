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
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use super::addr::{from_sockaddr, read_pktinfo, to_sockaddr, write_pktinfo, Local};
use crate::sys::cvt;

/// Datagrams per system call at most.
pub const BATCH: usize = 64;
/// Bytes per receive slot: any UDP payload fits (see the module notes).
pub const SLOT: usize = 64 * 1024;
/// Control-message space per datagram, in u64 words (alignment for cmsghdr): room for one
/// `in6_pktinfo` (CMSG_SPACE = 40 bytes) with some to spare.
pub(super) const CTRL_WORDS: usize = 8;
/// Stamp mode's reply around the payload: `Echo=>` payload ` at ` ctime `\n`.
pub const PREFIX: &[u8] = b"Echo=>";
pub(super) const AT: &[u8] = b" at ";
const NL: &[u8] = b"\n";
/// Bytes a stamp reply adds to its payload (the ctime text is always 24 bytes).
pub const STAMP_EXTRA: usize = PREFIX.len() + AT.len() + CTIME_LEN + NL.len();
pub(super) const CTIME_LEN: usize = 24;

/// Set once the kernel said ENOSYS to a batch call: use one call per datagram from then on.
static NO_MMSG: AtomicBool = AtomicBool::new(false);

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
    /// In raw mode, what loop detection records once this reply is sent (the
    /// [`super::loops::Verdict`] key); 0 when detection is off.
    pub loop_key: u64,
}

impl Reply<'static> {
    /// A placeholder, to fill fixed-size arrays of replies without allocating.
    pub const NONE: Reply<'static> = Reply {
        to: SocketAddr::V4(std::net::SocketAddrV4::new(
            std::net::Ipv4Addr::UNSPECIFIED,
            0,
        )),
        from: None,
        payload: &[],
        loop_key: 0,
    };
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
    /// The time text every reply of this batch carries (stamp mode).
    pub fn time(&self) -> Option<[u8; CTIME_LEN]> {
        self.stamp.then_some(*self.area.time)
    }

    /// Replies in the batch.
    pub fn len(&self) -> usize {
        self.n
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
        #[cfg(test)]
        let rest = match fake::next() {
            Some(fake::Call::Fail(errno)) => return Err(io::Error::from_raw_os_error(errno)),
            Some(fake::Call::SendAtMost(k)) => {
                let k = k.min(rest.len());
                &mut rest[..k]
            }
            None => rest,
        };
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

/// A scripted kernel for the unit tests: what the next `sendmmsg` calls do, since loopback
/// never refuses a datagram (its send buffer is released at once) and EAGAIN, ENOBUFS and
/// per-datagram errors cannot be provoked for real there.
#[cfg(test)]
pub(super) mod fake {
    use std::cell::RefCell;
    use std::collections::VecDeque;

    /// One scripted call.
    #[derive(Clone, Copy, Debug)]
    pub enum Call {
        /// Fail at once with this errno, sending nothing.
        Fail(i32),
        /// Really send, but at most this many (as when the next one would fail).
        SendAtMost(usize),
    }

    thread_local!(static SCRIPT: RefCell<VecDeque<Call>> = RefCell::default());

    /// Script the next calls (then real ones again).
    pub fn script(calls: &[Call]) {
        SCRIPT.with(|s| s.borrow_mut().extend(calls.iter().copied()));
    }

    pub(super) fn next() -> Option<Call> {
        SCRIPT.with(|s| s.borrow_mut().pop_front())
    }
}
