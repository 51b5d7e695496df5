//! The reload state: what an old image hands to the new one through a memfd
//! (docs/state-format.md is the reference for the bytes).
//!
//! A state is a header (magic, format version) and a sequence of sections, each a tag, a
//! length and the bytes its owner wrote. Every number is little-endian. A [`Writer`] takes
//! primitives, descriptors and instants; a [`Reader`] gives them back, checking every
//! length: a truncated state, a section that overruns its parent, an unknown version are
//! all an [`Error`], never a panic. Unknown sections are skipped, so a release may add one
//! without a new version; a change to what a known section holds is a new version, and the
//! reader of a section asks [`Reader::version`] which fields to expect.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// The first eight bytes of every state.
pub const MAGIC: [u8; 8] = *b"EMUXSTAT";

/// The version this build writes.
pub const VERSION: u32 = 2;

/// The oldest version this build reads (the release before reads and writes it).
pub const OLDEST: u32 = 1;

/// Whether this build reads a state of `version`.
pub fn reads(version: u32) -> bool {
    (OLDEST..=VERSION).contains(&version)
}

/// A state that cannot be read. The message names what was wrong and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// Result of reading a state.
pub type Result<T> = std::result::Result<T, Error>;

/// A four-byte section tag (`*b"CONN"`), written as its bytes.
pub type Tag = [u8; 4];

/// `CLOCK_MONOTONIC` in nanoseconds: the clock `Instant` reads on Linux, and one that
/// execve does not reset, so a deadline saved as this is the same moment in the new image.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// A pair of readings of the two clocks, taken together: converts an `Instant` to
/// monotonic nanoseconds and back without relying on `Instant`'s representation.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    instant: Instant,
    mono: u64,
}

impl Clock {
    /// Read both clocks now.
    pub fn now() -> Clock {
        Clock {
            instant: Instant::now(),
            mono: monotonic_ns(),
        }
    }

    /// `at` as monotonic nanoseconds.
    pub fn to_ns(&self, at: Instant) -> u64 {
        if at >= self.instant {
            let ahead = at.duration_since(self.instant).as_nanos() as u64;
            self.mono.saturating_add(ahead)
        } else {
            let behind = self.instant.duration_since(at).as_nanos() as u64;
            self.mono.saturating_sub(behind)
        }
    }

    /// Monotonic nanoseconds `ns` as an `Instant` (clamped to what `Instant` can hold).
    pub fn to_instant(&self, ns: u64) -> Instant {
        if ns >= self.mono {
            let ahead = Duration::from_nanos(ns - self.mono);
            self.instant.checked_add(ahead).unwrap_or(self.instant)
        } else {
            let behind = Duration::from_nanos(self.mono - ns);
            self.instant.checked_sub(behind).unwrap_or(self.instant)
        }
    }
}

/// Builds a state: primitives appended to one buffer, sections nested by length prefix,
/// and a list of the descriptors named in it (the ones a handover must keep open).
pub struct Writer {
    buf: Vec<u8>,
    fds: Vec<RawFd>,
    clock: Clock,
}

impl Default for Writer {
    fn default() -> Self {
        Writer::new()
    }
}

impl Writer {
    /// A state of the current [`VERSION`].
    pub fn new() -> Writer {
        Writer::with_version(VERSION)
    }

    /// A state that claims `version` (tests write older versions with it; the caller then
    /// writes what that version held).
    pub fn with_version(version: u32) -> Writer {
        let mut w = Writer {
            buf: Vec::with_capacity(4096),
            fds: Vec::new(),
            clock: Clock::now(),
        };
        w.buf.extend_from_slice(&MAGIC);
        w.u32(version);
        w
    }

    /// One byte.
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    /// A flag as one byte, 0 or 1.
    pub fn bool(&mut self, v: bool) {
        self.u8(u8::from(v));
    }

    /// Four bytes, little-endian.
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// Eight bytes, little-endian.
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// A length or count (as eight bytes).
    pub fn usize(&mut self, v: usize) {
        self.u64(v as u64);
    }

    /// A length-prefixed byte string.
    pub fn bytes(&mut self, v: &[u8]) {
        self.usize(v.len());
        self.buf.extend_from_slice(v);
    }

    /// A length-prefixed UTF-8 string.
    pub fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }

    /// A descriptor handed over: its number, remembered in [`Writer::fds`].
    pub fn fd(&mut self, fd: RawFd) {
        self.fds.push(fd);
        self.u32(fd as u32);
    }

    /// An instant, as monotonic nanoseconds.
    pub fn instant(&mut self, at: Instant) {
        let ns = self.clock.to_ns(at);
        self.u64(ns);
    }

    /// An optional instant: a flag, then the instant if present.
    pub fn opt_instant(&mut self, at: Option<Instant>) {
        self.bool(at.is_some());
        if let Some(at) = at {
            self.instant(at);
        }
    }

    /// A duration, as nanoseconds.
    pub fn duration(&mut self, d: Duration) {
        self.u64(d.as_nanos().min(u128::from(u64::MAX)) as u64);
    }

    /// An optional socket address: 0 none, 4 IPv4 (4 bytes, port), 6 IPv6 (16 bytes, port,
    /// flow info, scope id).
    pub fn opt_addr(&mut self, addr: Option<SocketAddr>) {
        match addr {
            None => self.u8(0),
            Some(SocketAddr::V4(a)) => {
                self.u8(4);
                self.buf.extend_from_slice(&a.ip().octets());
                self.buf.extend_from_slice(&a.port().to_le_bytes());
            }
            Some(SocketAddr::V6(a)) => {
                self.u8(6);
                self.buf.extend_from_slice(&a.ip().octets());
                self.buf.extend_from_slice(&a.port().to_le_bytes());
                self.u32(a.flowinfo());
                self.u32(a.scope_id());
            }
        }
    }

    /// A section: its tag, its length, then what `body` writes.
    pub fn section(&mut self, tag: Tag, body: impl FnOnce(&mut Writer)) {
        self.buf.extend_from_slice(&tag);
        let at = self.buf.len();
        self.u64(0);
        body(self);
        let len = (self.buf.len() - at - 8) as u64;
        self.buf[at..at + 8].copy_from_slice(&len.to_le_bytes());
    }

    /// The descriptors named so far, in the order written.
    pub fn fds(&self) -> &[RawFd] {
        &self.fds
    }

    /// The bytes so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing but the header was written (never: the header is always there).
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The finished state and the descriptors it names.
    pub fn finish(self) -> (Vec<u8>, Vec<RawFd>) {
        (self.buf, self.fds)
    }
}

/// Reads a state (or one section of it). Cheap to copy: a slice and a position.
#[derive(Clone)]
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    version: u32,
    clock: Clock,
    /// Where this reader is, for messages: "state" or "section CONN".
    what: String,
}

impl<'a> Reader<'a> {
    /// Check the header of `data` and read past it: wrong magic, a version this build
    /// does not read, or fewer bytes than a header are errors.
    pub fn new(data: &'a [u8]) -> Result<Reader<'a>> {
        let mut r = Reader {
            data,
            pos: 0,
            version: 0,
            clock: Clock::now(),
            what: "state".to_string(),
        };
        let magic = r.take(MAGIC.len(), "magic")?;
        if magic != MAGIC {
            return Err(Error(
                "state: not an echo-mux reload state (bad magic)".into(),
            ));
        }
        let version = r.u32()?;
        if !reads(version) {
            return Err(Error(format!(
                "state: format version {version}, this build reads {OLDEST} to {VERSION}"
            )));
        }
        r.version = version;
        Ok(r)
    }

    /// The format version of the state being read.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Whether everything has been read.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        match end {
            Some(end) => {
                let s = &self.data[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(Error(format!(
                "{}: truncated at byte {} reading {field} ({n} bytes wanted, {} left)",
                self.what,
                self.pos,
                self.data.len() - self.pos.min(self.data.len())
            ))),
        }
    }

    fn array<const N: usize>(&mut self, field: &str) -> Result<[u8; N]> {
        let s = self.take(N, field)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>("u8")?[0])
    }

    /// A flag: 0 or 1, anything else is an error.
    pub fn bool(&mut self) -> Result<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(Error(format!("{}: flag byte {v} is not 0 or 1", self.what))),
        }
    }

    /// Four bytes, little-endian.
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array("u32")?))
    }

    /// Eight bytes, little-endian.
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array("u64")?))
    }

    /// A length or count; one larger than the bytes left (at `min_each` bytes an item) is
    /// an error, so a corrupt count never reserves memory it cannot fill.
    pub fn count(&mut self, min_each: usize) -> Result<usize> {
        let n = self.u64()?;
        let left = (self.data.len() - self.pos) as u64;
        if n.saturating_mul(min_each.max(1) as u64) > left {
            return Err(Error(format!(
                "{}: count {n} at byte {} is more than the {left} bytes left hold",
                self.what, self.pos
            )));
        }
        Ok(n as usize)
    }

    /// A length (as written by [`Writer::usize`]).
    pub fn usize(&mut self) -> Result<usize> {
        let n = self.u64()?;
        usize::try_from(n).map_err(|_| Error(format!("{}: length {n} too large", self.what)))
    }

    /// A length-prefixed byte string.
    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.count(1)?;
        self.take(n, "bytes")
    }

    /// A length-prefixed UTF-8 string.
    pub fn str(&mut self) -> Result<&'a str> {
        let b = self.bytes()?;
        std::str::from_utf8(b).map_err(|_| Error(format!("{}: string is not UTF-8", self.what)))
    }

    /// A descriptor number (see [`adopt`] to own it).
    pub fn fd(&mut self) -> Result<RawFd> {
        let n = self.u32()?;
        RawFd::try_from(n).map_err(|_| Error(format!("{}: descriptor {n} out of range", self.what)))
    }

    /// An instant.
    pub fn instant(&mut self) -> Result<Instant> {
        let ns = self.u64()?;
        Ok(self.clock.to_instant(ns))
    }

    /// An optional instant.
    pub fn opt_instant(&mut self) -> Result<Option<Instant>> {
        if self.bool()? {
            Ok(Some(self.instant()?))
        } else {
            Ok(None)
        }
    }

    /// A duration.
    pub fn duration(&mut self) -> Result<Duration> {
        Ok(Duration::from_nanos(self.u64()?))
    }

    /// An optional socket address.
    pub fn opt_addr(&mut self) -> Result<Option<SocketAddr>> {
        match self.u8()? {
            0 => Ok(None),
            4 => {
                let ip: [u8; 4] = self.array("IPv4 address")?;
                let port = u16::from_le_bytes(self.array("port")?);
                Ok(Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port)))
            }
            6 => {
                let ip: [u8; 16] = self.array("IPv6 address")?;
                let port = u16::from_le_bytes(self.array("port")?);
                let flow = self.u32()?;
                let scope = self.u32()?;
                Ok(Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                    Ipv6Addr::from(ip),
                    port,
                    flow,
                    scope,
                ))))
            }
            k => Err(Error(format!("{}: unknown address kind {k}", self.what))),
        }
    }

    /// The next section, whatever its tag, or `None` at the end.
    pub fn next_section(&mut self) -> Result<Option<(Tag, Reader<'a>)>> {
        if self.is_empty() {
            return Ok(None);
        }
        let tag: Tag = self.array("section tag")?;
        let len = self.usize()?;
        let name = String::from_utf8_lossy(&tag).into_owned();
        let body = self
            .take(len, &format!("section {name}"))
            .map_err(|e| Error(format!("{e} (section {name} claims {len} bytes)")))?;
        let inner = Reader {
            data: body,
            pos: 0,
            version: self.version,
            clock: self.clock,
            what: format!("section {name}"),
        };
        Ok(Some((tag, inner)))
    }

    /// The next section, which must be `tag`.
    pub fn section(&mut self, tag: Tag) -> Result<Reader<'a>> {
        match self.next_section()? {
            Some((t, r)) if t == tag => Ok(r),
            Some((t, _)) => Err(Error(format!(
                "{}: section {} where {} was expected",
                self.what,
                String::from_utf8_lossy(&t),
                String::from_utf8_lossy(&tag)
            ))),
            None => Err(Error(format!(
                "{}: section {} missing",
                self.what,
                String::from_utf8_lossy(&tag)
            ))),
        }
    }

    /// Error unless everything in this reader was read (a section longer than its owner
    /// reads is a format mismatch).
    pub fn done(&self) -> Result<()> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(Error(format!(
                "{}: {} bytes left unread",
                self.what,
                self.data.len() - self.pos
            )))
        }
    }
}

/// Own descriptor `fd` that the old image handed over, with close-on-exec set again.
/// Fails if `fd` is not open.
pub fn adopt(fd: RawFd) -> io::Result<OwnedFd> {
    set_cloexec(fd, true)?;
    // SAFETY: the old image handed `fd` over open and owned by nobody else in this process
    // (it is named once in the state); fcntl above proved it is open.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Set or clear FD_CLOEXEC on `fd` (one fcntl: it is the only descriptor flag there is,
/// so there is nothing to read first; with 10,000 connections a reload makes 20,000 of
/// these calls). An `fd` that is not open is an error (EBADF).
pub fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    let flags = if on { libc::FD_CLOEXEC } else { 0 };
    // SAFETY: fcntl on a number that may or may not be open: at worst EBADF.
    crate::sys::cvt(unsafe { libc::fcntl(fd, libc::F_SETFD, flags) })?;
    Ok(())
}

/// An anonymous file holding a state (memfd_create), close-on-exec until the
/// handover clears it.
pub struct Memfd(OwnedFd);

impl Memfd {
    /// A new, empty memfd named `name` (shown in /proc/PID/fd).
    pub fn create(name: &str) -> io::Result<Memfd> {
        let name = std::ffi::CString::new(name)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "memfd name has a NUL"))?;
        // SAFETY: `name` is a valid NUL-terminated string for the call.
        let fd = crate::sys::cvt(unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) })?;
        // SAFETY: memfd_create returned a new descriptor that nothing else owns.
        Ok(Memfd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// A memfd holding `bytes`.
    pub fn with(name: &str, bytes: &[u8]) -> io::Result<Memfd> {
        let m = Memfd::create(name)?;
        let mut off = 0usize;
        while off < bytes.len() {
            let rest = &bytes[off..];
            // SAFETY: `rest` is a readable region of `rest.len()` bytes for the call.
            let n = unsafe {
                libc::pwrite(
                    m.0.as_raw_fd(),
                    rest.as_ptr().cast(),
                    rest.len(),
                    off as libc::off_t,
                )
            };
            match crate::sys::cvt(n) {
                Ok(n) => off += n as usize,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(m)
    }

    /// Read the whole of the file behind `fd` (from offset 0, whatever its position).
    pub fn read_all(fd: &OwnedFd) -> io::Result<Vec<u8>> {
        // SAFETY: an all-zero `stat` is a valid value for fstat to fill.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `st` is writable for the call.
        crate::sys::cvt(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
        let len = st.st_size as usize;
        let mut buf = vec![0u8; len];
        let mut off = 0usize;
        while off < len {
            let rest = &mut buf[off..];
            // SAFETY: `rest` is a writable region of `rest.len()` bytes for the call.
            let n = unsafe {
                libc::pread(
                    fd.as_raw_fd(),
                    rest.as_mut_ptr().cast(),
                    rest.len(),
                    off as libc::off_t,
                )
            };
            match crate::sys::cvt(n) {
                Ok(0) => break,
                Ok(n) => off += n as usize,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        buf.truncate(off);
        Ok(buf)
    }

    /// The descriptor.
    pub fn fd(&self) -> &OwnedFd {
        &self.0
    }

    /// Give up ownership.
    pub fn into_fd(self) -> OwnedFd {
        self.0
    }
}

/// The environment variable that names the state's memfd in the new image.
pub const FD_ENV: &str = "ECHO_MUX_STATE_FD";

/// The state an old image handed over, if this process is the new image of a reload:
/// reads `ECHO_MUX_STATE_FD`, removes it from the environment (so nothing this process
/// starts inherits it), adopts the memfd, reads it whole and closes it. Call it before
/// opening any descriptor. A variable that does not name an open descriptor is an error.
pub fn take_inherited() -> io::Result<Option<Vec<u8>>> {
    let Some(value) = std::env::var_os(FD_ENV) else {
        return Ok(None);
    };
    std::env::remove_var(FD_ENV);
    let fd: RawFd = value
        .to_str()
        .and_then(|v| v.parse().ok())
        .filter(|&fd| fd > 2)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{FD_ENV}={} is not a descriptor number",
                    value.to_string_lossy()
                ),
            )
        })?;
    let memfd = adopt(fd)?;
    Memfd::read_all(&memfd).map(Some)
}

/// The shape of the process that wrote a state, the first section of every state from
/// version 2 on (a version 1 state has none: it was always the one-process daemon).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// The one-process daemon (no `--workers`).
    OneProcess,
    /// A worker of `--workers`: the worker section (`WRKR`) follows, then the same
    /// sections as the one-process daemon's.
    Worker,
    /// The supervisor of `--workers`: the log section, then the supervisor's (`SUPV`).
    Supervisor,
}

/// The tag of the shape section.
pub const SHAPE: Tag = *b"SHPE";

impl Shape {
    /// Write the shape section (always the first section of a state).
    pub fn write(self, w: &mut Writer) {
        w.section(SHAPE, |w| match self {
            Shape::OneProcess => w.u8(0),
            Shape::Worker => w.u8(1),
            Shape::Supervisor => w.u8(2),
        });
    }

    /// Read the shape section; a version 1 state has none and is [`Shape::OneProcess`].
    pub fn read(r: &mut Reader<'_>) -> Result<Shape> {
        if r.version() < 2 {
            return Ok(Shape::OneProcess);
        }
        let mut s = r.section(SHAPE)?;
        let shape = match s.u8()? {
            0 => Shape::OneProcess,
            1 => Shape::Worker,
            2 => Shape::Supervisor,
            k => return Err(Error(format!("section SHPE: unknown process shape {k}"))),
        };
        s.done()?;
        Ok(shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(w: &mut Writer, t: Instant) {
        w.section(*b"ONE ", |w| {
            w.u8(7);
            w.bool(true);
            w.u32(0xdead_beef);
            w.u64(u64::MAX - 1);
            w.bytes(b"hello\0world");
            w.str("caf\u{e9}");
            w.instant(t);
            w.opt_instant(None);
            w.opt_instant(Some(t + Duration::from_millis(1500)));
            w.duration(Duration::from_micros(1234));
            w.opt_addr(None);
            w.opt_addr(Some("10.1.2.3:4567".parse().unwrap()));
            w.opt_addr(Some("[::1]:80".parse().unwrap()));
        });
    }

    #[test]
    fn round_trip_of_every_primitive() {
        let t = Instant::now();
        let mut w = Writer::new();
        sample(&mut w, t);
        w.section(*b"TWO ", |w| w.fd(5));
        let (bytes, fds) = w.finish();
        assert_eq!(fds, vec![5]);
        let mut r = Reader::new(&bytes).unwrap();
        assert_eq!(r.version(), VERSION);
        let mut s = r.section(*b"ONE ").unwrap();
        assert_eq!(s.u8().unwrap(), 7);
        assert!(s.bool().unwrap());
        assert_eq!(s.u32().unwrap(), 0xdead_beef);
        assert_eq!(s.u64().unwrap(), u64::MAX - 1);
        assert_eq!(s.bytes().unwrap(), b"hello\0world");
        assert_eq!(s.str().unwrap(), "caf\u{e9}");
        let back = s.instant().unwrap();
        let off = if back > t { back - t } else { t - back };
        assert!(off < Duration::from_millis(1), "{off:?}");
        assert_eq!(s.opt_instant().unwrap(), None);
        let later = s.opt_instant().unwrap().unwrap();
        assert!(later > back + Duration::from_millis(1499));
        assert_eq!(s.duration().unwrap(), Duration::from_micros(1234));
        assert_eq!(s.opt_addr().unwrap(), None);
        assert_eq!(
            s.opt_addr().unwrap(),
            Some("10.1.2.3:4567".parse().unwrap())
        );
        assert_eq!(s.opt_addr().unwrap(), Some("[::1]:80".parse().unwrap()));
        s.done().unwrap();
        let mut two = r.section(*b"TWO ").unwrap();
        assert_eq!(two.fd().unwrap(), 5);
        assert!(r.next_section().unwrap().is_none());
    }

    #[test]
    fn every_truncation_is_an_error_never_a_panic() {
        let mut w = Writer::new();
        sample(&mut w, Instant::now());
        let (bytes, _) = w.finish();
        for cut in 0..bytes.len() {
            let part = &bytes[..cut];
            let outcome = Reader::new(part).and_then(|mut r| {
                let mut s = r.section(*b"ONE ")?;
                s.u8()?;
                s.bool()?;
                s.u32()?;
                s.u64()?;
                s.bytes()?;
                s.str()?;
                s.instant()?;
                s.opt_instant()?;
                s.opt_instant()?;
                s.duration()?;
                s.opt_addr()?;
                s.opt_addr()?;
                s.opt_addr()?;
                s.done()
            });
            assert!(outcome.is_err(), "a state cut at {cut} bytes was read");
        }
    }

    #[test]
    fn unknown_version_and_bad_magic_are_errors() {
        let (mut bytes, _) = Writer::with_version(99).finish();
        let e = Reader::new(&bytes).err().unwrap();
        assert!(e.0.contains("format version 99"), "{e}");
        bytes[0] = b'X';
        assert!(Reader::new(&bytes).err().unwrap().0.contains("bad magic"));
        let (old, _) = Writer::with_version(OLDEST).finish();
        assert_eq!(Reader::new(&old).unwrap().version(), OLDEST);
        assert!(!reads(0) && !reads(VERSION + 1) && reads(OLDEST) && reads(VERSION));
    }

    #[test]
    fn a_count_larger_than_the_bytes_left_is_an_error() {
        let mut w = Writer::new();
        w.section(*b"BIG ", |w| w.u64(1 << 60));
        let (bytes, _) = w.finish();
        let mut r = Reader::new(&bytes).unwrap();
        let mut s = r.section(*b"BIG ").unwrap();
        assert!(s.count(8).is_err());
        let mut w = Writer::new();
        w.section(*b"BIG ", |w| w.u64(u64::MAX));
        let (bytes, _) = w.finish();
        let mut r = Reader::new(&bytes).unwrap();
        assert!(r.section(*b"BIG ").unwrap().bytes().is_err());
    }

    #[test]
    fn a_section_with_another_tag_or_missing_is_an_error() {
        let mut w = Writer::new();
        w.section(*b"AAAA", |_| {});
        let (bytes, _) = w.finish();
        let mut r = Reader::new(&bytes).unwrap();
        assert!(r.clone().section(*b"BBBB").is_err());
        r.section(*b"AAAA").unwrap().done().unwrap();
        assert!(r.section(*b"AAAA").is_err());
    }

    #[test]
    fn a_version_1_state_has_no_shape_and_is_one_process() {
        // What a version 1 writer wrote: the header, then the owners' sections directly.
        let mut w = Writer::with_version(1);
        w.section(*b"STAT", |w| w.u64(42));
        let (bytes, _) = w.finish();
        let mut r = Reader::new(&bytes).unwrap();
        assert_eq!(Shape::read(&mut r).unwrap(), Shape::OneProcess);
        assert_eq!(r.section(*b"STAT").unwrap().u64().unwrap(), 42);
        // Version 2 wants the shape first.
        let mut w = Writer::new();
        w.section(*b"STAT", |w| w.u64(42));
        let (bytes, _) = w.finish();
        assert!(Shape::read(&mut Reader::new(&bytes).unwrap()).is_err());
        let mut w = Writer::new();
        Shape::OneProcess.write(&mut w);
        let (bytes, _) = w.finish();
        assert_eq!(
            Shape::read(&mut Reader::new(&bytes).unwrap()).unwrap(),
            Shape::OneProcess
        );
    }

    #[test]
    fn memfd_round_trip() {
        let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let m = Memfd::with("echo-mux-test", &data).unwrap();
        assert_eq!(Memfd::read_all(m.fd()).unwrap(), data);
    }

    #[test]
    fn clock_converts_both_ways() {
        let c = Clock::now();
        let t = Instant::now() + Duration::from_secs(2);
        let ns = c.to_ns(t);
        let back = c.to_instant(ns);
        assert!(back.max(t) - back.min(t) < Duration::from_micros(1));
        let past = c.instant - Duration::from_millis(30);
        assert_eq!(c.to_ns(past), c.mono - 30_000_000);
    }
}
