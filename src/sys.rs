//! The only libc glue outside `reactor/`: byte I/O on raw sockets, accept, descriptor flags,
//! and [`cvt`], which the backends use too.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A system call's return value: `-1` (any negative) becomes `io::Error::last_os_error()`.
pub(crate) fn cvt<T: Copy + PartialOrd + Default>(ret: T) -> io::Result<T> {
    if ret < T::default() {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `recv(2)` into `buf`; `Ok(0)` is end of stream.
pub fn recv(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid, writable region of `buf.len()` bytes for the whole call.
    let n = cvt(unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) })?;
    Ok(n as usize)
}

/// `send(2)` with MSG_NOSIGNAL: a vanished peer is EPIPE, never SIGPIPE.
pub fn send(fd: &OwnedFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid, readable region of `buf.len()` bytes for the whole call.
    let n = cvt(unsafe {
        libc::send(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_NOSIGNAL,
        )
    })?;
    Ok(n as usize)
}

/// `accept4(2)` with SOCK_NONBLOCK | SOCK_CLOEXEC. Also the peer's address when it is an IP
/// one (`None` for a unix-socket peer); the kernel fills it in the same call.
pub fn accept(listener: RawFd) -> io::Result<(OwnedFd, Option<SocketAddr>)> {
    // SAFETY: an all-zero sockaddr_storage is a valid value of this plain C struct.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of_val(&storage) as libc::socklen_t;
    // SAFETY: `storage` is writable for `len` bytes, and `len` is the in/out length.
    let fd = unsafe {
        libc::accept4(
            listener,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    let fd = cvt(fd)?;
    // SAFETY: accept4 just returned this descriptor to us; nobody else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok((fd, from_sockaddr(&storage, len)))
}

/// The IP address in `storage` (of which the kernel wrote `len` bytes), if it holds one: the
/// one decoding of a `sockaddr_storage`, for accept4 and for recvmmsg's senders alike.
pub fn from_sockaddr(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let ptr: *const libc::sockaddr_storage = storage;
    let len = len as usize;
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says a sockaddr_in was written, and sockaddr_storage is
            // large and aligned enough for every socket address type.
            let a = unsafe { &*ptr.cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::from((ip, u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*ptr.cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            let port = u16::from_be(a.sin6_port);
            Some(SocketAddrV6::new(ip, port, a.sin6_flowinfo, a.sin6_scope_id).into())
        }
        _ => None,
    }
}

/// Set TCP_NODELAY: an echo is a small reply that must not wait for Nagle.
pub fn set_nodelay(fd: &OwnedFd) -> io::Result<()> {
    nix::sys::socket::setsockopt(fd, nix::sys::socket::sockopt::TcpNoDelay, &true)
        .map_err(io::Error::from)
}

/// Raise the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit. An unlimited
/// hard limit cannot be a soft one for descriptors: the kernel caps it at fs.nr_open.
pub fn raise_nofile_limit() -> io::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let mut target = hard;
    if hard == RLIM_INFINITY {
        target = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1 << 20);
    }
    if soft < target {
        setrlimit(Resource::RLIMIT_NOFILE, target, hard)?;
        return Ok(target);
    }
    Ok(soft)
}

/// The CPUs this process may run on (`sched_getaffinity`), at least 1.
pub fn available_cpus() -> usize {
    // SAFETY: cpu_set_t is plain bits; all-zero is an empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    let got = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    if got == 0 {
        // SAFETY: reads the set filled in above.
        let n = unsafe { libc::CPU_COUNT(&set) };
        return (n as usize).max(1);
    }
    // More CPUs than a cpu_set_t holds (EINVAL), or a filter said no: ask std, which
    // knows the larger sets.
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A new memfd of `len` bytes (sparse: pages cost memory only once touched), close-on-exec,
/// mapped `MAP_SHARED`: the same pages for a process forked after this, and, through the
/// descriptor, for the image a reload executes (SPEC §13). `noreserve` adds MAP_NORESERVE.
pub fn map_shared_memfd(
    name: &str,
    len: usize,
    noreserve: bool,
) -> io::Result<(OwnedFd, std::ptr::NonNull<u8>)> {
    let cname = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "memfd name has a NUL"))?;
    // SAFETY: `cname` is a valid NUL-terminated string for the call.
    let raw = cvt(unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) })?;
    // SAFETY: memfd_create returned a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let size = libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "mapping too large"))?;
    // SAFETY: ftruncate on our own descriptor.
    cvt(unsafe { libc::ftruncate(fd.as_raw_fd(), size) })?;
    let base = map_shared_fd(&fd, len, noreserve)?;
    Ok((fd, base))
}

/// Map `len` bytes of the file behind `fd` (a memfd from [`map_shared_memfd`], perhaps
/// handed over by a reload) `MAP_SHARED`, read and write. The mapping lives until unmapped.
pub fn map_shared_fd(
    fd: &OwnedFd,
    len: usize,
    noreserve: bool,
) -> io::Result<std::ptr::NonNull<u8>> {
    let mut flags = libc::MAP_SHARED;
    if noreserve {
        flags |= libc::MAP_NORESERVE;
    }
    // SAFETY: no fixed address: the kernel picks a range that aliases nothing of ours.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            fd.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    std::ptr::NonNull::new(ptr.cast::<u8>()).ok_or_else(io::Error::last_os_error)
}

/// The size of the file behind `fd`.
pub fn file_len(fd: &OwnedFd) -> io::Result<u64> {
    // SAFETY: an all-zero `stat` is a valid value for fstat to fill.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is writable for the call.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st.st_size as u64)
}

/// `read(2)` into `buf` (a pipe); `Ok(0)` is end of file.
pub fn read_fd(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid, writable region of `buf.len()` bytes for the whole call.
    let n = cvt(unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) })?;
    Ok(n as usize)
}
