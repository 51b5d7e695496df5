//! The only libc glue outside `reactor/`: byte I/O on raw sockets, accept, descriptor flags,
//! and [`cvt`], which the backends use too.

use std::io;
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

/// `accept4(2)` with SOCK_NONBLOCK | SOCK_CLOEXEC; the peer address is not asked for.
pub fn accept(listener: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: null address pointers are allowed by accept4 and mean "don't report the peer".
    let fd = unsafe {
        libc::accept4(
            listener,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    let fd = cvt(fd)?;
    // SAFETY: accept4 just returned this descriptor to us; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
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
