//! Process plumbing for the supervisor: the fork, a worker's first steps and how a reaped
//! worker ended.

use std::io::{self};

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::unistd::Pid;

use super::handover::WorkerShape;
use crate::config::Config;
use crate::error::Error;
use crate::event::signal::Signals;
use crate::net::listen::Endpoint;
use crate::policy::access::Access;
use crate::process::server;

/// The signals whose handlers change hands at a fork: blocked from just before the fork
/// until the child has installed its own handlers, so a SIGTERM (or a stray signal) sent to
/// a newborn worker is held and then delivered to the worker's handler, never to a copy of
/// the supervisor's.
fn handed_over() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    let mut raw = set.as_ref().to_owned();
    for sig in crate::event::signal::all_handled() {
        // SAFETY: `raw` is a valid, initialised sigset_t; sigaddset only sets a bit (and
        // fails harmlessly with EINVAL for a number it does not know).
        unsafe { libc::sigaddset(&mut raw, sig) };
    }
    // SAFETY: `raw` came from a valid SigSet and was only changed by sigaddset.
    unsafe { SigSet::from_sigset_t_unchecked(raw) }
}

/// Which side of a fork we are on.
pub(super) enum Forked {
    Parent(Pid),
    Child,
}

/// Fork, with the handed-over signals blocked across it. In the child they stay blocked
/// until [`worker_main`] unblocks them; the parent's mask is restored at once.
pub(super) fn fork() -> io::Result<(Forked, SigSet)> {
    let mut old = SigSet::empty();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&handed_over()), Some(&mut old))?;
    // SAFETY: the supervisor is single-threaded (no lock can be held by another thread at
    // the fork), and the child goes on running ordinary Rust code, which is then sound.
    let pid = unsafe { libc::fork() };
    if pid != 0 {
        let restored = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        restored?;
        return Ok((Forked::Parent(Pid::from_raw(pid)), old));
    }
    Ok((Forked::Child, old))
}

/// A worker's first steps, right after the fork: die with the supervisor, and check that it
/// has not died already (it may have, between the fork and the prctl).
///
/// SIGKILL rather than SIGTERM: a supervisor that is killed with SIGKILL (the OOM killer, an
/// operator's `kill -9`) is an emergency, and its workers go the way threads of a killed
/// process would: at once and for certain. SIGTERM would make each worker drain for up to
/// `--shutdown-timeout` with nobody left to reap it or to kill it if it is wedged. A
/// graceful stop is what SIGTERM *to the supervisor* is for.
pub(super) fn become_worker(supervisor: Pid) {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number; no pointers.
    let set = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
    if set != 0 || nix::unistd::getppid() != supervisor {
        // SAFETY: _exit ends this process without running anything of the supervisor's.
        unsafe { libc::_exit(1) };
    }
    // A process group of its own: a terminal's Ctrl-C (sent to the whole foreground group)
    // then reaches the worker once, forwarded by the supervisor, instead of twice (which
    // would end its drain at once, SPEC §5).
    if let Err(e) = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0)) {
        log::debug!("setpgid: {e}");
    }
}

/// A worker's new image after a reload: still the child of `w.supervisor`? (The parent-death
/// signal survives the execve, so a supervisor that died meanwhile has taken us with it; if
/// not, this worker ends as a worker of a dead supervisor does.)
pub(crate) fn rejoin(w: &super::handover::WorkerShape) {
    if nix::unistd::getppid() != w.supervisor {
        // SAFETY: _exit ends this process at once; nothing of it is shared.
        unsafe { libc::_exit(1) };
    }
}

/// What a worker starts with: inherited from the supervisor, everything else let go of.
pub(super) struct WorkerStart {
    pub config: Config,
    /// `--allow`/`--deny` and a handle on the per-source table the workers share.
    pub access: Access,
    pub listeners: Vec<Endpoint>,
    /// Its number, its supervisor and the shared region (also what a reload hands over).
    pub shape: WorkerShape,
    /// The signal mask from before the fork, restored once the worker's handlers are in.
    pub mask: SigSet,
}

/// Run one worker to the end of its drain and exit the process with its code.
pub(super) fn worker_main(start: WorkerStart) -> ! {
    let code = match serve(start) {
        Ok(()) => 0,
        Err(e) => {
            log::error!("{e}");
            e.exit_code()
        }
    };
    crate::logging::finish();
    std::process::exit(code.into())
}

fn serve(start: WorkerStart) -> Result<(), Error> {
    let WorkerStart {
        config,
        access,
        listeners,
        shape,
        mask,
    } = start;
    let signals = Signals::install().map_err(|e| Error::io("cannot install signal handlers", e))?;
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&mask), None)
        .map_err(|e| Error::io("cannot unblock signals", e.into()))?;
    // Built after the fork: an epoll instance is never shared between processes.
    let backend = crate::event::wait::open_backend(config.backend)?;
    let server =
        server::Server::new(backend, config, access, listeners, signals, None)?.worker(shape);
    shape.seat().mark_ready();
    server.run()
}
