//! The handover itself: the state into a memfd, close-on-exec cleared on everything handed
//! over, the catchable signals blocked (the mask survives execve: a signal that arrives
//! meanwhile waits for the new image's handlers instead of killing the process by its
//! default action), then execve of the binary at the path the process started from, with
//! the same arguments and `ECHO_MUX_STATE_FD` added to the environment.
//!
//! If execve returns, it failed, and everything is put back as it was: close-on-exec set
//! again, the signals unblocked, the memfd closed. Nothing was torn down before it.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use super::state::{self, Memfd};
use super::Origin;

/// Execute `origin` with `bytes` as its state and `fds` kept open. `blocked` runs once the
/// signals are blocked, right before the execve (to post again the signals this image's
/// handlers took since the loop last looked). Returns only on failure, with every change
/// undone.
pub fn handover(origin: &Origin, bytes: &[u8], fds: &[RawFd], blocked: impl FnOnce()) -> io::Error {
    let memfd = match Memfd::with("echo-mux-state", bytes) {
        Ok(m) => m,
        Err(e) => return e,
    };
    let cstr = |b: &[u8]| {
        CString::new(b).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte"))
    };
    let prepared = (|| -> io::Result<(CString, Vec<CString>, Vec<CString>)> {
        let path = cstr(origin.path.as_os_str().as_bytes())?;
        let argv = origin
            .args
            .iter()
            .map(|a| cstr(a.as_bytes()))
            .collect::<io::Result<Vec<_>>>()?;
        let mut envp = Vec::new();
        for (k, v) in std::env::vars_os() {
            if k == state::FD_ENV || k == super::check::ENV {
                continue;
            }
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            envp.push(cstr(&kv)?);
        }
        let fd = memfd.fd().as_raw_fd();
        envp.push(cstr(format!("{}={fd}", state::FD_ENV).as_bytes())?);
        Ok((path, argv, envp))
    })();
    let (path, argv, envp) = match prepared {
        Ok(p) => p,
        Err(e) => return e,
    };
    let mut kept: Vec<RawFd> = fds.to_vec();
    kept.push(memfd.fd().as_raw_fd());
    let mut cleared = Vec::with_capacity(kept.len());
    for &fd in &kept {
        if let Err(e) = state::set_cloexec(fd, false) {
            restore(&cleared);
            return e;
        }
        cleared.push(fd);
    }
    let old_mask = block_signals();
    blocked();
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut envp_p: Vec<*const libc::c_char> = envp.iter().map(|a| a.as_ptr()).collect();
    envp_p.push(std::ptr::null());
    // SAFETY: `path`, every argv and envp string and both arrays are valid and
    // NUL-terminated (arrays by a null pointer) for the call; execve returns only on failure.
    unsafe { libc::execve(path.as_ptr(), argv_p.as_ptr(), envp_p.as_ptr()) };
    let e = io::Error::last_os_error();
    set_mask(&old_mask);
    restore(&cleared);
    drop(memfd);
    e
}

/// Set close-on-exec again on what was cleared.
fn restore(fds: &[RawFd]) {
    for &fd in fds {
        let _ = state::set_cloexec(fd, true);
    }
}

/// The signals the daemon handles, as a set.
fn handled_set() -> libc::sigset_t {
    // SAFETY: an all-zero sigset_t is a valid value for sigemptyset to initialise.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; sigaddset with a valid signal number.
    unsafe {
        libc::sigemptyset(&mut set);
        for sig in crate::event::signal::all_handled() {
            libc::sigaddset(&mut set, sig);
        }
        libc::sigaddset(&mut set, libc::SIGCHLD);
    }
    set
}

/// Block the handled signals; returns the mask before.
fn block_signals() -> libc::sigset_t {
    let set = handled_set();
    // SAFETY: as above.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid sets for the call; the process is single-threaded here.
    unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old) };
    old
}

fn set_mask(mask: &libc::sigset_t) {
    // SAFETY: a mask sigprocmask returned earlier.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, mask, std::ptr::null_mut()) };
}

/// In the new image, once its handlers are installed: unblock what the old image blocked
/// before its execve. A signal that arrived in between is delivered now, to the handlers.
/// (A process started normally has nothing blocked; this changes nothing for it.)
pub fn unblock_signals() {
    let set = handled_set();
    // SAFETY: a valid set for the call.
    unsafe { libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
}
